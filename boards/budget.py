"""Resource estimate of a generated accelerator, checked against a device before any tool runs.

DSPs are exact: one MULT18X18D per PE with ``multiplier="dsp"`` (``dsp_pes`` of them with
``"mixed"``) plus `REQUANT_DSPS_PER_LANE` per requant lane (hw.systolic.requant splits its
32x31-bit product into four 18x18 partial products). `fit_multipliers` resolves "as many DSP PEs
as the device allows" (``hw.build --dsp-pes auto``).
Block RAMs are counted per memory as the cheapest DP16KD arrangement (16384x1 .. 512x36), except
the scratchpad, whose banks are sliced one block wide (`hw.memory.scratchpad.block_rams`). LUT4s
are an estimate from per-unit costs calibrated on nextpnr reports of real builds (see
`LUT_COST`); nextpnr's own report after the build is the authority, this only stops hopeless
configurations early.

An array with fabric multipliers is also held to the clock they were measured to meet
(`LUT_MULTIPLIER_MAX_MHZ`): their pipeline depth is fixed by the DSP PE's latency, so a faster
clock cannot be met by adding stages.
"""

import math
from dataclasses import dataclass

from hw.binary.engine import threshold_shape
from hw.memory.scratchpad import DP16KD_SHAPES, block_rams as scratchpad_block_rams
from hw.soc.bringup import BINARY_MAX_FOLDS, BINARY_MAX_NEURON_FOLDS

__all__ = ["ResourceEstimate", "BudgetError", "estimate_resources", "check_budget",
           "fit_multipliers", "ebr_blocks", "REQUANT_DSPS_PER_LANE", "LUT_COST",
           "LUT_MULTIPLIER_FFS", "LUT_MULTIPLIER_MAX_MHZ"]

REQUANT_DSPS_PER_LANE = 4

# LUT4 per unit (TRELLIS_COMB, which also counts carry cells). The engine costs and "fixed" are
# scaled so the sum matches the ULX3S-85F bring-up build: 12x12 output-stationary DSP array, 2
# requant lanes, binary 64x16 -> 24,361 LUT4 (nextpnr). The full SoC replaces "fixed" by the core
# and link ("soc_fixed" + "soc_per_column" per array column: accumulator read-modify-write,
# row-wide buffers and windows), fitted to two SoC builds: ULX3S-85F preset (12 columns) 33,935
# LUT4 (nextpnr) and ULX3S-12F preset (6 columns) 15,667 (synth_ecp5). The split between units
# is a first guess.
LUT_COST = {
    "pe_dsp": 100,              # accumulator adder, result register and drain chain, forwarding
    # Extra for an 8x8 signed product in fabric (hw.systolic.lut_multiplier), measured: ULX3S 12F
    # self-test, 4x4 weight-stationary array at 125 MHz, nextpnr: all-LUT 5,634 LUT4 against
    # all-DSP 3,057 (2,577 / 16 PEs = 161.1), 8 of 16 on DSPs 4,373 (164.5 per fabric PE).
    "pe_lut_multiplier": 161,
    "requant_lane": 650,
    "binary_bit": 3.5,          # XNOR/mask and popcount tree per input bit per lane
    "binary_lane": 120,         # beat accumulator, threshold compare, output FIFO share
    "fixed": 3000,              # bring-up: UART, LFSR stimulus / signature, reset and clocking
    "soc_fixed": 10650,         # SoC: frame engine, CSRs, dispatcher, im2col, units, counters
    "soc_per_column": 175,
}
# Flip-flops of one `hw.systolic.lut_multiplier.LutMultiplier` (the MULT18X18D keeps its registers
# inside the DSP): four 10-bit stage registers and the 16-bit product; the builds of LUT_COST
# measured 4,241 and 3,793 FF against 3,345, 56 per fabric PE in both.
LUT_MULTIPLIER_FFS = 56
# The fastest clock the LUT multiplier's two stages were measured to meet in an array: the 4x4
# all-LUT build of LUT_COST at --clock 150, worst arrival 6.10 ns at its stage registers and
# 5.60 ns at its product (the period is 6.67 ns; the build missed 150 MHz elsewhere, 133.73 MHz
# in the binary engine). Checked by `check_budget` for arrays with any fabric multiplier.
LUT_MULTIPLIER_MAX_MHZ = 150.0

DESIGN_NAMES = ("bringup", "soc")       # hw.soc.top.DESIGNS


def ebr_blocks(depth, width, *, write_groups=1):
    """DP16KD blocks for a `depth` x `width`-bit memory, in the cheapest aspect ratio.

    With `write_groups` > 1 each row is that many groups of `width` bits, each written on its own
    (an Amaranth write port with ``granularity``). A DP16KD's byte enables are 9 bits apiece
    (``w // 9`` in the 9-bit and wider ratios), and yosys gives each group whole bytes: the
    binary engine's 16 lanes of 64 weight bits take 2 blocks per lane, 32 in all, not the 29 of
    1,024 bits packed (the 85F build's netlist). The narrower ratios have no byte enable: each
    group takes its own blocks."""
    def blocks(rows, bits):
        if write_groups == 1:
            return math.ceil(depth / rows) * math.ceil(width / bits)
        if bits >= 9:
            return math.ceil(depth / rows) * math.ceil(
                write_groups * math.ceil(width / 9) / (bits // 9))
        return math.ceil(depth / rows) * write_groups * math.ceil(width / bits)
    return min(blocks(rows, bits) for rows, bits in DP16KD_SHAPES)


# The config field that sizes each memory of `estimate_resources` that has one of its own (the
# binary engine's memories are sized by its width and lanes), for the hint of an overflow.
_MEMORY_SIZE_FIELDS = {"scratchpad": "scratchpad_rows", "accumulator": "accumulator_rows",
                       "binary_results": "binary_result_rows", "parameters": "parameter_rows"}


@dataclass(frozen=True)
class ResourceEstimate:
    luts: int
    dsps: int
    ebrs: int
    detail: dict        # per-unit breakdown, for reports


class BudgetError(ValueError):
    """A configuration does not fit its device; the message lists every resource over budget."""


def _soc_memory_ebrs(config):
    """DP16KD blocks of the SoC's block-RAM memories (hw.core.Core and the frame engine)."""
    from hw.core import geometry_from_config
    from hw.core.units import binary_result_layout, parameter_layout
    from hw.soc.protocol import MAX_PAYLOAD, WORD_BYTES

    geometry = geometry_from_config(config)
    return {
        "scratchpad": scratchpad_block_rams(row_bytes=geometry.row_bytes,
                                            depth=geometry.scratchpad_rows,
                                            banks=geometry.SCRATCHPAD_BANKS),
        "accumulator": 2 * ebr_blocks(geometry.accumulator_rows // 2, 32 * geometry.cols),
        "binary": ebr_blocks(geometry.binary_weight_depth, geometry.binary_width,
                             write_groups=geometry.binary_lanes),
        "binary_thresholds": ebr_blocks(
            geometry.binary_threshold_depth, threshold_shape(geometry.binary_max_k).width + 1,
            write_groups=geometry.binary_lanes),
        "parameters": ebr_blocks(geometry.parameter_rows, parameter_layout.size),
        "binary_results": ebr_blocks(geometry.binary_result_rows,
                                     binary_result_layout(geometry.binary_lanes,
                                                          geometry.binary_max_k).size),
        "link_staging": ebr_blocks(MAX_PAYLOAD // WORD_BYTES, 32),
    }


def _lut_pes(config):
    return config.rows * config.cols - config.dsp_count


def estimate_resources(config, design="soc"):
    """`ResourceEstimate` of the accelerator `config` (an `hw.config.AcceleratorConfig`) built as
    `design` (``"soc"``: the full SoC; ``"bringup"``: the engines' self-test)."""
    if design not in DESIGN_NAMES:
        raise ValueError(f"design must be one of {DESIGN_NAMES}, not {design!r}")
    pes = config.rows * config.cols
    array_dsps = config.dsp_count
    requant_dsps = REQUANT_DSPS_PER_LANE * config.requant_lanes

    if design == "soc":
        memories = _soc_memory_ebrs(config)
        fixed_luts = LUT_COST["soc_fixed"] + LUT_COST["soc_per_column"] * config.cols
    else:
        memories = {
            "scratchpad": ebr_blocks(config.scratchpad_rows, 8 * max(config.rows, config.cols)),
            "accumulator": ebr_blocks(config.accumulator_rows, 32 * config.cols),
            "binary": ebr_blocks(BINARY_MAX_FOLDS * BINARY_MAX_NEURON_FOLDS,
                                 config.binary_width, write_groups=config.binary_lanes),
            "binary_thresholds": ebr_blocks(
                BINARY_MAX_FOLDS * BINARY_MAX_NEURON_FOLDS,
                threshold_shape(BINARY_MAX_FOLDS * config.binary_width).width + 1,
                write_groups=config.binary_lanes),
        }
        fixed_luts = LUT_COST["fixed"]

    array_luts = pes * LUT_COST["pe_dsp"] + _lut_pes(config) * LUT_COST["pe_lut_multiplier"]
    requant_luts = config.requant_lanes * LUT_COST["requant_lane"]
    binary_luts = config.binary_lanes * (config.binary_width * LUT_COST["binary_bit"]
                                         + LUT_COST["binary_lane"])
    detail = {
        "array": {"luts": array_luts, "dsps": array_dsps,
                  "lut_multiplier_ffs": _lut_pes(config) * LUT_MULTIPLIER_FFS},
        "requant": {"luts": requant_luts, "dsps": requant_dsps},
        "binary": {"luts": round(binary_luts)},
        "fixed": {"luts": fixed_luts},
        "memories": {"ebrs": memories},
    }
    return ResourceEstimate(
        luts=round(array_luts + requant_luts + binary_luts + fixed_luts),
        dsps=array_dsps + requant_dsps,
        ebrs=sum(memories.values()),
        detail=detail,
    )


def _with_dsp_pes(config, count):
    """`config` with `count` of its PEs on a MULT18X18D (0..rows*cols), as the mapping that says
    so: ``"lut"``, ``"mixed"`` or ``"dsp"``."""
    pes = config.rows * config.cols
    if count >= pes:
        return config.replace(multiplier="dsp", dsp_pes=None)
    if count <= 0:
        return config.replace(multiplier="lut", dsp_pes=None)
    return config.replace(multiplier="mixed", dsp_pes=count)


def _dsp_pes_allowed(config, device):
    """The most array PEs `device`'s MULT18X18D leave room for beside the requantizer's."""
    return max(0, device.dsps - REQUANT_DSPS_PER_LANE * config.requant_lanes)


def fit_multipliers(config, device):
    """`config` with as many PEs on a MULT18X18D as `device` has DSPs for after the requantizer's
    (all: ``"dsp"``; none: ``"lut"``; else ``"mixed"`` with that ``dsp_pes``)."""
    return _with_dsp_pes(config, _dsp_pes_allowed(config, device))


def _fewest_dsp_pes_for_luts(config, device, design):
    """The fewest DSP PEs with which the LUT4 estimate fits `device`, or None if even all do not
    (each PE moved to the fabric adds ``LUT_COST["pe_lut_multiplier"]``)."""
    pes = config.rows * config.cols
    spare = device.luts - estimate_resources(_with_dsp_pes(config, pes), design).luts
    if spare < 0:
        return None
    return max(0, pes - int(spare // LUT_COST["pe_lut_multiplier"]))


def _split_hint(config, device, design):
    """Which multiplier splits fit the DSPs and the LUT4s, in words."""
    pes = config.rows * config.cols
    most = min(_dsp_pes_allowed(config, device), pes)
    fewest = _fewest_dsp_pes_for_luts(config, device, design)
    if fewest is None:
        return "no multiplier split fits the LUT4s"
    if fewest > most:
        return (f"no multiplier split fits: the LUT4s need {fewest} or more DSP PEs, the "
                f"MULT18X18D allow {most} at most")
    return (f"{fewest}..{most} DSP PEs fit: dsp_pes with multiplier='mixed', 0 is 'lut', "
            f"{pes} is 'dsp'")


def _clock_problem(config):
    """The clock line of `check_budget`, or None: fabric multipliers are pipelined for at most
    `LUT_MULTIPLIER_MAX_MHZ`."""
    if _lut_pes(config) == 0 or config.clock_mhz <= LUT_MULTIPLIER_MAX_MHZ:
        return None
    return (f"clock: {config.clock_mhz:g} MHz is over the {LUT_MULTIPLIER_MAX_MHZ:g} MHz the LUT "
            f"multiplier's two pipeline stages were measured to meet (over by "
            f"{config.clock_mhz - LUT_MULTIPLIER_MAX_MHZ:.2f} MHz; its latency is fixed by the "
            f"DSP PE's, so more stages cannot be added); use a clock <= "
            f"{LUT_MULTIPLIER_MAX_MHZ:g} MHz or put every PE on a MULT18X18D (multiplier='dsp')")


def check_budget(config, device, design="soc"):
    """Raise `BudgetError` naming every resource of `device` that `config` built as `design`
    exceeds, and by how much; return the `ResourceEstimate` when it fits."""
    estimate = estimate_resources(config, design)
    memories = estimate.detail["memories"]["ebrs"]
    split = _split_hint(config, device, design)
    over = []
    for label, used, available, hint in (
        ("MULT18X18D", estimate.dsps, device.dsps,
         f"{config.rows}x{config.cols} array ({estimate.detail['array']['dsps']}) + "
         f"{config.requant_lanes} requant lanes x {REQUANT_DSPS_PER_LANE}; use a smaller array, "
         f"fewer requant lanes or fewer DSP PEs ({split})"),
        ("DP16KD", estimate.ebrs, device.ebrs,
         " + ".join(f"{name} {blocks}" for name, blocks in memories.items())
         + "; reduce " + ", ".join(field for name, field in _MEMORY_SIZE_FIELDS.items()
                                   if name in memories)
         + " or binary_width*binary_lanes"),
        ("LUT4 (estimate)", estimate.luts, device.luts,
         "reduce the array, binary_width*binary_lanes or requant_lanes"
         + ("" if config.dsp_count == config.rows * config.cols else
            f", or put more PEs on a MULT18X18D ({split})")),
    ):
        if used > available:
            over.append(f"{label}: needs {used}, {device.name} has {available} "
                        f"(over by {used - available}; {hint})")
    clock = _clock_problem(config)
    if clock:
        over.append(clock)
    if over:
        raise BudgetError(f"Configuration ({design} design) does not fit {device.name}:\n  "
                          + "\n  ".join(over))
    return estimate
