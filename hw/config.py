"""One description of a generated accelerator.

`AcceleratorConfig` is the single source of truth for everything that is decided at generation
time: the INT8 array shape and dataflow, how multipliers are mapped, the requant lanes, the on-chip
buffer sizes, the binary engine's SIMD width and lanes, and the target clock. Hardware modules take
explicit numbers derived from it (never the whole object), board presets in `boards/` produce it
from a device's resource budget, and the generated design reports it back in read-only registers.

Every field is checked in `__post_init__`; a bad value raises `TypeError`/`ValueError` naming the
field, the value and the allowed range, before anything is elaborated.
"""

from dataclasses import dataclass, fields, replace, asdict
from fractions import Fraction

from hw.soc.uart import MIN_DIVISOR

__all__ = ["AcceleratorConfig", "DATAFLOWS", "MULTIPLIERS", "PE_MULTIPLIERS", "PRESETS", "preset",
           "dsp_pe_count", "BINARY_MAX_FOLDS", "BINARY_MAX_NEURON_FOLDS"]


DATAFLOWS = ("weight_stationary", "output_stationary")
# How an array maps its multipliers, and what one PE's multiplier is.
MULTIPLIERS = ("dsp", "lut", "mixed")
PE_MULTIPLIERS = ("dsp", "lut")

# The binary engine's weight memory holds BINARY_MAX_FOLDS beats of every neuron of up to
# BINARY_MAX_NEURON_FOLDS neuron folds: K up to 16 * width, N up to 32 * lanes (512 rows, one
# DP16KD deep at 36 bits). AcceleratorConfig has no field for these yet.
BINARY_MAX_FOLDS = 16
BINARY_MAX_NEURON_FOLDS = 32

_ARRAY_SIDE = range(1, 33)
_BINARY_WIDTHS = tuple(1 << n for n in range(3, 13))      # 8 .. 4096 bits per cycle
_BINARY_LANES = range(1, 257)
_CLOCK_MHZ = (10.0, 300.0)
_UART_BAUD = (9600, 12_000_000)


def _is_power_of_two(value):
    return value > 0 and value & (value - 1) == 0


def dsp_pe_count(multiplier, dsp_pes, rows, cols, *, owner=""):
    """How many PEs of a `rows` x `cols` array have a MULT18X18D: all for ``"dsp"``, none for
    ``"lut"``, `dsp_pes` (1..rows*cols-1) for ``"mixed"``. `dsp_pes` is None unless mixed.
    Raises `TypeError`/`ValueError` naming the value (`owner` prefixes the parameter names)."""
    pes = rows * cols
    if multiplier not in MULTIPLIERS:
        raise ValueError(f"{owner}multiplier must be one of {MULTIPLIERS}, not {multiplier!r}")
    if multiplier != "mixed":
        if dsp_pes is not None:
            raise ValueError(f"{owner}dsp_pes is for multiplier='mixed' only; "
                             f"multiplier={multiplier!r} puts "
                             f"{'every' if multiplier == 'dsp' else 'no'} PE on a MULT18X18D, "
                             f"so leave dsp_pes None, not {dsp_pes!r}")
        return pes if multiplier == "dsp" else 0
    if pes < 2:
        raise ValueError(f"{owner}multiplier='mixed' needs at least 2 PEs, not a {rows}x{cols} "
                         f"array; use 'dsp' or 'lut'")
    if dsp_pes is None:
        raise ValueError(f"{owner}multiplier='mixed' needs dsp_pes, how many of the {pes} PEs "
                         f"get a MULT18X18D (1..{pes - 1})")
    if not isinstance(dsp_pes, int) or isinstance(dsp_pes, bool):
        raise TypeError(f"{owner}dsp_pes must be an integer in 1..{pes - 1}, not {dsp_pes!r}")
    if not 1 <= dsp_pes < pes:
        raise ValueError(f"{owner}dsp_pes must be in 1..{pes - 1} for a mixed {rows}x{cols} array "
                         f"(0 is multiplier='lut', {pes} is 'dsp'), not {dsp_pes}")
    return dsp_pes


@dataclass(frozen=True)
class AcceleratorConfig:
    """A generated accelerator.

    Parameters
    ----------
    rows, cols : int
        INT8 systolic array shape, 1..32 each. ``rows`` is the side the reduction (K) runs along
        in the weight-stationary dataflow and the number of output rows per tile in the
        output-stationary one; ``cols`` is the number of output channels computed at once.
    dataflow : str
        ``"weight_stationary"`` or ``"output_stationary"``, fixed at generation time.
    multiplier : str
        ``"dsp"`` instantiates one ECP5 ``MULT18X18D`` per PE with its own input/output registers;
        ``"lut"`` builds the product in fabric (`hw.systolic.lut_multiplier`), for arrays larger
        than the DSP budget; ``"mixed"`` gives ``dsp_pes`` PEs a MULT18X18D and the rest the
        fabric multiplier (same latency, so the array runs alike).
    dsp_pes : int or None
        With ``multiplier="mixed"``, how many PEs have a MULT18X18D (1..rows*cols-1): the first
        ones in column-major order, whole columns from column 0 then the top of the next
        (`hw.systolic.array`); None otherwise. `boards.budget` finds the largest count a device
        allows.
    requant_lanes : int
        Bias + requantization lanes, time-shared over the ``cols`` outputs of a row (1..cols).
    scratchpad_rows : int
        Depth of the int8 scratchpad, in rows of ``max(rows, cols)`` bytes (power of two).
    accumulator_rows : int
        Depth of the int32 accumulator memory, in rows of ``cols`` words (power of two).
    binary_width : int
        Bits the XNOR-popcount engine consumes per cycle per lane (SIMD), power of two 8..4096.
    binary_lanes : int
        Output channels the binary engine computes in parallel (PE), 1..256.
    clock_mhz : float
        Target system clock in MHz.
    uart_baud : int
        Host link line rate in baud; the clock needs at least 4 cycles per bit, and need not be a
        multiple of it.
    """

    rows: int = 8
    cols: int = 8
    dataflow: str = "weight_stationary"
    multiplier: str = "dsp"
    dsp_pes: int | None = None
    requant_lanes: int = 2
    scratchpad_rows: int = 4096
    accumulator_rows: int = 1024
    binary_width: int = 64
    binary_lanes: int = 8
    clock_mhz: float = 105.0
    uart_baud: int = 3_000_000

    def __post_init__(self):
        for name in ("rows", "cols", "requant_lanes", "scratchpad_rows", "accumulator_rows",
                     "binary_width", "binary_lanes", "uart_baud"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"AcceleratorConfig.{name} must be an integer, not {value!r}")
        if not isinstance(self.clock_mhz, (int, float)) or isinstance(self.clock_mhz, bool):
            raise TypeError(f"AcceleratorConfig.clock_mhz must be a number, not {self.clock_mhz!r}")

        for name in ("rows", "cols"):
            value = getattr(self, name)
            if value not in _ARRAY_SIDE:
                raise ValueError(f"AcceleratorConfig.{name} must be in 1..32, not {value}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"AcceleratorConfig.dataflow must be one of {DATAFLOWS}, "
                             f"not {self.dataflow!r}")
        dsp_pe_count(self.multiplier, self.dsp_pes, self.rows, self.cols,
                     owner="AcceleratorConfig.")
        if not 1 <= self.requant_lanes <= self.cols:
            raise ValueError(f"AcceleratorConfig.requant_lanes must be in 1..cols={self.cols}, "
                             f"not {self.requant_lanes}")
        for name, low, high in (("scratchpad_rows", 16, 1 << 20), ("accumulator_rows", 16, 1 << 20)):
            value = getattr(self, name)
            if not (_is_power_of_two(value) and low <= value <= high):
                raise ValueError(f"AcceleratorConfig.{name} must be a power of two in "
                                 f"{low}..{high}, not {value}")
        if self.binary_width not in _BINARY_WIDTHS:
            raise ValueError(f"AcceleratorConfig.binary_width must be a power of two in "
                             f"{_BINARY_WIDTHS[0]}..{_BINARY_WIDTHS[-1]}, not {self.binary_width}")
        if self.binary_lanes not in _BINARY_LANES:
            raise ValueError(f"AcceleratorConfig.binary_lanes must be in 1..256, "
                             f"not {self.binary_lanes}")
        if not _CLOCK_MHZ[0] <= self.clock_mhz <= _CLOCK_MHZ[1]:
            raise ValueError(f"AcceleratorConfig.clock_mhz must be in {_CLOCK_MHZ[0]:g}.."
                             f"{_CLOCK_MHZ[1]:g} MHz, not {self.clock_mhz}")
        if not _UART_BAUD[0] <= self.uart_baud <= _UART_BAUD[1]:
            raise ValueError(f"AcceleratorConfig.uart_baud must be in {_UART_BAUD[0]}.."
                             f"{_UART_BAUD[1]}, not {self.uart_baud}")
        if self.uart_divisor < MIN_DIVISOR:
            raise ValueError(f"AcceleratorConfig: uart_baud={self.uart_baud} is too fast for a "
                             f"{self.clock_mhz} MHz clock: the UART needs at least {MIN_DIVISOR} "
                             f"clock cycles per bit (at most {self.clock_hz // MIN_DIVISOR} baud)")

    # Derived values ------------------------------------------------------------------------------

    @property
    def clock_hz(self):
        return round(self.clock_mhz * 1e6)

    @property
    def uart_divisor(self):
        """System clock cycles per UART bit, exact (a `fractions.Fraction` when the clock is not
        a multiple of the baud rate: `hw.soc.uart.UARTPhy` times fractional bits exactly)."""
        divisor = Fraction(self.clock_hz, self.uart_baud)
        return divisor.numerator if divisor.denominator == 1 else divisor

    @property
    def macs_per_cycle(self):
        return self.rows * self.cols

    @property
    def dsp_count(self):
        """MULT18X18D blocks the array uses (one INT8 product per DSP)."""
        return dsp_pe_count(self.multiplier, self.dsp_pes, self.rows, self.cols)

    @property
    def peak_int8_gops(self):
        """2 ops (multiply + add) per MAC per cycle at the target clock."""
        return 2 * self.macs_per_cycle * self.clock_mhz / 1e3

    @property
    def binary_macs_per_cycle(self):
        return self.binary_width * self.binary_lanes

    @property
    def peak_binary_gops(self):
        return 2 * self.binary_macs_per_cycle * self.clock_mhz / 1e3

    def replace(self, **changes):
        """A copy with some fields changed (and validated again)."""
        return replace(self, **changes)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown AcceleratorConfig fields {unknown}; known are {sorted(known)}")
        return cls(**values)


PRESETS = {
    # Small enough for fast unit tests in the Python simulator.
    "tiny": AcceleratorConfig(rows=4, cols=4, requant_lanes=2, scratchpad_rows=256,
                              accumulator_rows=64, binary_width=32, binary_lanes=4),
    # The ULX3S-85F default: 12x12 INT8 array on 144 of the 156 MULT18X18D.
    "default": AcceleratorConfig(rows=12, cols=12, requant_lanes=2, binary_width=64,
                                 binary_lanes=16),
}


def preset(name):
    """A named preset; raises `ValueError` listing the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}; known presets are {sorted(PRESETS)}") from None
