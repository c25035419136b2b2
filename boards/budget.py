"""Resource estimate of a generated accelerator, checked against a device before any tool runs.

DSPs are exact: one MULT18X18D per PE with ``multiplier="dsp"`` plus `REQUANT_DSPS_PER_LANE` per
requant lane (hw.systolic.requant splits its 32x31-bit product into four 18x18 partial products).
Block RAMs are counted per memory as the cheapest DP16KD arrangement (16384x1 .. 512x36). LUT4s are
an estimate from per-unit costs calibrated on nextpnr reports of real builds (see `LUT_COST`);
nextpnr's own report after the build is the authority, this only stops hopeless configurations
early.
"""

import math
from dataclasses import dataclass

__all__ = ["ResourceEstimate", "BudgetError", "estimate_resources", "check_budget",
           "ebr_blocks", "REQUANT_DSPS_PER_LANE", "BINARY_MAX_FOLDS", "BINARY_MAX_NEURON_FOLDS",
           "LUT_COST"]

REQUANT_DSPS_PER_LANE = 4

# The binary engine's weight memory holds BINARY_MAX_FOLDS beats of every neuron of up to
# BINARY_MAX_NEURON_FOLDS neuron folds: K up to 16 * width, N up to 32 * lanes (512 rows, one
# DP16KD deep at 36 bits). AcceleratorConfig has no field for these yet.
BINARY_MAX_FOLDS = 16
BINARY_MAX_NEURON_FOLDS = 32

# DP16KD aspect ratios (depth, width); 512x36 is the pseudo-dual-port mode.
_EBR_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

# LUT4 per unit (TRELLIS_COMB, which also counts carry cells), scaled so the sum matches the one
# full build measured so far: ULX3S-85F bring-up, 12x12 output-stationary DSP array, 2 requant
# lanes, binary 64x16 -> 24,361 LUT4 (nextpnr). The split between units is a first guess.
LUT_COST = {
    "pe_dsp": 100,              # accumulator adder, result register and drain chain, forwarding
    "pe_lut_multiplier": 90,    # extra for an 8x8 signed product in fabric
    "requant_lane": 650,
    "binary_bit": 3.5,          # XNOR/mask and popcount tree per input bit per lane
    "binary_lane": 120,         # beat accumulator, threshold compare, output FIFO share
    "fixed": 3000,              # UART, control, LFSR stimulus / signature, reset and clocking
}


def ebr_blocks(depth, width):
    """DP16KD blocks for a `depth` x `width`-bit memory, in the cheapest aspect ratio."""
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in _EBR_SHAPES)


@dataclass(frozen=True)
class ResourceEstimate:
    luts: int
    dsps: int
    ebrs: int
    detail: dict        # per-unit breakdown, for reports


class BudgetError(ValueError):
    """A configuration does not fit its device; the message lists every resource over budget."""


def estimate_resources(config):
    """`ResourceEstimate` of the accelerator `config` (an `hw.config.AcceleratorConfig`)."""
    pes = config.rows * config.cols
    array_dsps = pes if config.multiplier == "dsp" else 0
    requant_dsps = REQUANT_DSPS_PER_LANE * config.requant_lanes

    scratchpad_ebrs = ebr_blocks(config.scratchpad_rows, 8 * max(config.rows, config.cols))
    accumulator_ebrs = ebr_blocks(config.accumulator_rows, 32 * config.cols)
    binary_ebrs = ebr_blocks(BINARY_MAX_FOLDS * BINARY_MAX_NEURON_FOLDS,
                             config.binary_width * config.binary_lanes)

    pe_luts = LUT_COST["pe_dsp"] + (LUT_COST["pe_lut_multiplier"] if config.multiplier == "lut"
                                    else 0)
    array_luts = pes * pe_luts
    requant_luts = config.requant_lanes * LUT_COST["requant_lane"]
    binary_luts = config.binary_lanes * (config.binary_width * LUT_COST["binary_bit"]
                                         + LUT_COST["binary_lane"])
    detail = {
        "array": {"luts": array_luts, "dsps": array_dsps},
        "requant": {"luts": requant_luts, "dsps": requant_dsps},
        "binary": {"luts": round(binary_luts), "ebrs": binary_ebrs},
        "scratchpad": {"ebrs": scratchpad_ebrs},
        "accumulator": {"ebrs": accumulator_ebrs},
        "fixed": {"luts": LUT_COST["fixed"]},
    }
    return ResourceEstimate(
        luts=round(array_luts + requant_luts + binary_luts + LUT_COST["fixed"]),
        dsps=array_dsps + requant_dsps,
        ebrs=scratchpad_ebrs + accumulator_ebrs + binary_ebrs,
        detail=detail,
    )


def check_budget(config, device):
    """Raise `BudgetError` naming every resource of `device` that `config` exceeds, and by how
    much; return the `ResourceEstimate` when it fits."""
    estimate = estimate_resources(config)
    over = []
    for label, used, available, hint in (
        ("MULT18X18D", estimate.dsps, device.dsps,
         f"{config.rows}x{config.cols} array ({estimate.detail['array']['dsps']}) + "
         f"{config.requant_lanes} requant lanes x {REQUANT_DSPS_PER_LANE}; use a smaller array, "
         f"fewer requant lanes or multiplier='lut'"),
        ("DP16KD", estimate.ebrs, device.ebrs,
         f"scratchpad {estimate.detail['scratchpad']['ebrs']} + accumulator "
         f"{estimate.detail['accumulator']['ebrs']} + binary weights "
         f"{estimate.detail['binary']['ebrs']}; reduce scratchpad_rows/accumulator_rows or "
         f"binary_width*binary_lanes"),
        ("LUT4 (estimate)", estimate.luts, device.luts,
         "reduce the array, binary_width*binary_lanes or requant_lanes"),
    ):
        if used > available:
            over.append(f"{label}: needs {used}, {device.name} has {available} "
                        f"(over by {used - available}; {hint})")
    if over:
        raise BudgetError(f"Configuration does not fit {device.name}:\n  " + "\n  ".join(over))
    return estimate
