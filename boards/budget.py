"""Resource estimate of a generated accelerator, checked against a device before any tool runs.

DSPs are exact: one MULT18X18D per PE with ``multiplier="dsp"`` plus `REQUANT_DSPS_PER_LANE` per
requant lane (hw.systolic.requant splits its 32x31-bit product into four 18x18 partial products).
Block RAMs are counted per memory as the cheapest DP16KD arrangement (16384x1 .. 512x36), except
the scratchpad, whose banks are sliced one block wide (`hw.memory.scratchpad.block_rams`). LUT4s
are an estimate from per-unit costs calibrated on nextpnr reports of real builds (see
`LUT_COST`); nextpnr's own report after the build is the authority, this only stops hopeless
configurations early.
"""

import math
from dataclasses import dataclass

from hw.binary.engine import threshold_shape
from hw.memory.scratchpad import DP16KD_SHAPES, block_rams as scratchpad_block_rams
from hw.soc.bringup import BINARY_MAX_FOLDS, BINARY_MAX_NEURON_FOLDS

__all__ = ["ResourceEstimate", "BudgetError", "estimate_resources", "check_budget",
           "ebr_blocks", "REQUANT_DSPS_PER_LANE", "LUT_COST"]

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
    "pe_lut_multiplier": 90,    # extra for an 8x8 signed product in fabric
    "requant_lane": 650,
    "binary_bit": 3.5,          # XNOR/mask and popcount tree per input bit per lane
    "binary_lane": 120,         # beat accumulator, threshold compare, output FIFO share
    "fixed": 3000,              # bring-up: UART, LFSR stimulus / signature, reset and clocking
    "soc_fixed": 10650,         # SoC: frame engine, CSRs, dispatcher, im2col, units, counters
    "soc_per_column": 175,
}

DESIGN_NAMES = ("bringup", "soc")       # hw.soc.top.DESIGNS


def ebr_blocks(depth, width):
    """DP16KD blocks for a `depth` x `width`-bit memory, in the cheapest aspect ratio."""
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in DP16KD_SHAPES)


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
        "binary": ebr_blocks(geometry.binary_weight_depth,
                             geometry.binary_width * geometry.binary_lanes),
        "binary_thresholds": ebr_blocks(
            geometry.binary_threshold_depth,
            geometry.binary_lanes * (threshold_shape(geometry.binary_max_k).width + 1)),
        "parameters": ebr_blocks(geometry.parameter_rows, parameter_layout.size),
        "binary_results": ebr_blocks(geometry.binary_result_rows,
                                     binary_result_layout(geometry.binary_lanes,
                                                          geometry.binary_max_k).size),
        "link_staging": ebr_blocks(MAX_PAYLOAD // WORD_BYTES, 32),
    }


def estimate_resources(config, design="soc"):
    """`ResourceEstimate` of the accelerator `config` (an `hw.config.AcceleratorConfig`) built as
    `design` (``"soc"``: the full SoC; ``"bringup"``: the engines' self-test)."""
    if design not in DESIGN_NAMES:
        raise ValueError(f"design must be one of {DESIGN_NAMES}, not {design!r}")
    pes = config.rows * config.cols
    array_dsps = pes if config.multiplier == "dsp" else 0
    requant_dsps = REQUANT_DSPS_PER_LANE * config.requant_lanes

    if design == "soc":
        memories = _soc_memory_ebrs(config)
        fixed_luts = LUT_COST["soc_fixed"] + LUT_COST["soc_per_column"] * config.cols
    else:
        memories = {
            "scratchpad": ebr_blocks(config.scratchpad_rows, 8 * max(config.rows, config.cols)),
            "accumulator": ebr_blocks(config.accumulator_rows, 32 * config.cols),
            "binary": ebr_blocks(BINARY_MAX_FOLDS * BINARY_MAX_NEURON_FOLDS,
                                 config.binary_width * config.binary_lanes),
            "binary_thresholds": ebr_blocks(
                BINARY_MAX_FOLDS * BINARY_MAX_NEURON_FOLDS,
                config.binary_lanes * (threshold_shape(BINARY_MAX_FOLDS
                                                       * config.binary_width).width + 1)),
        }
        fixed_luts = LUT_COST["fixed"]

    pe_luts = LUT_COST["pe_dsp"] + (LUT_COST["pe_lut_multiplier"] if config.multiplier == "lut"
                                    else 0)
    array_luts = pes * pe_luts
    requant_luts = config.requant_lanes * LUT_COST["requant_lane"]
    binary_luts = config.binary_lanes * (config.binary_width * LUT_COST["binary_bit"]
                                         + LUT_COST["binary_lane"])
    detail = {
        "array": {"luts": array_luts, "dsps": array_dsps},
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


def check_budget(config, device, design="soc"):
    """Raise `BudgetError` naming every resource of `device` that `config` built as `design`
    exceeds, and by how much; return the `ResourceEstimate` when it fits."""
    estimate = estimate_resources(config, design)
    memories = estimate.detail["memories"]["ebrs"]
    over = []
    for label, used, available, hint in (
        ("MULT18X18D", estimate.dsps, device.dsps,
         f"{config.rows}x{config.cols} array ({estimate.detail['array']['dsps']}) + "
         f"{config.requant_lanes} requant lanes x {REQUANT_DSPS_PER_LANE}; use a smaller array, "
         f"fewer requant lanes or multiplier='lut'"),
        ("DP16KD", estimate.ebrs, device.ebrs,
         " + ".join(f"{name} {blocks}" for name, blocks in memories.items())
         + "; reduce scratchpad_rows/accumulator_rows or binary_width*binary_lanes"),
        ("LUT4 (estimate)", estimate.luts, device.luts,
         "reduce the array, binary_width*binary_lanes or requant_lanes"),
    ):
        if used > available:
            over.append(f"{label}: needs {used}, {device.name} has {available} "
                        f"(over by {used - available}; {hint})")
    if over:
        raise BudgetError(f"Configuration ({design} design) does not fit {device.name}:\n  "
                          + "\n  ".join(over))
    return estimate
