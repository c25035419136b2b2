"""Bias + requantization: rows of int32 accumulators in, rows of int8 activations out.

For every output channel ``c`` of a row, bit-exact with `sim.reference.requantize`::

    biased = wrap_int32(acc[c] + bias[c])
    scaled = round(biased * M0[c] / 2^(31 + shift[c]))      # two TFLite rounding forms, below
    out[c] = clamp(scaled + zero_point, act_min, act_max)

``wrap_int32``: the bias add is a 32-bit two's-complement add that wraps on overflow (an int32
accumulator plus an int32 bias stays in range for every K the array supports; if a caller breaks
that, the output is that of ``requantize`` applied to the wrapped sum). ``shift`` here is the
*right* shift 0..31, i.e. ``-shift`` of TFLite/`sim.reference`. ``M0`` is any 31-bit unsigned
value (``QuantizeMultiplier`` produces 0 or [2^30, 2^31)).

Rounding modes (`Rounding`, chosen per layer through ``settings.rounding``):

* ``DOUBLE`` (TFLite CONV_2D, gemmlowp): ``RoundingDivideByPOT(SRDHM(biased, M0), shift)``.
* ``SINGLE`` (TFLite FULLY_CONNECTED): ``(biased * M0 + 2^(30 + shift)) >> (31 + shift)``.

Both are computed from ``t = (biased * M0) >> 30``: SRDHM is exactly ``(t + 1) >> 1`` (its
asymmetric nudge with truncating division is round-half-up), so with ``v = t + t[0]`` in DOUBLE
mode and ``v = t`` in SINGLE mode both become ``(v >> (shift + 1)) + round_up``, where
``round_up`` is the bit just below the cut; DOUBLE additionally rounds negative exact ties down
(half away from zero), i.e. ``round_up`` also needs ``v >= 0`` or a nonzero bit further below.

Structure: an accepted row is first captured whole in an input register, before any logic, so
that whatever drives ``i`` (in practice a block RAM read port without an output register: the
array's result FIFO, the accumulator memory's drain port) only drives flip-flops and its slow
clock-to-out never meets a channel mux (it costs ``32 * channels + 1`` flip-flops and a cycle).
``lanes`` identical lanes are time-shared over the ``channels`` of the held row. A row is issued
in ``steps = ceil(channels / lanes)`` consecutive cycles; in step ``s`` lane ``l`` handles channel
``s * lanes + l`` (lanes past the last channel compute a discarded value). Each lane is a
14-stage pipeline that never stalls; no stage is deeper than one ~32-bit add or compare or a 4:1
mux level, and the 32x31-bit product is split into four partial products of at most 18x18 bits
(one ``MULT18X18D`` each, with the DSP's own input and output registers: `hw.systolic.pe`)::

    stage  0  select channel, read parameters     1  acc + bias
        2, 3  4 partial products (DSP)            4  the products in fabric registers
           5  two partial sums                    6  product >> 30 (47-bit add)
           7  DOUBLE: + t[0]                      8  >> 8*(shift//8), sticky bits
           9  >> shift%8, sticky bits            10  round-up bit + zero point
          11  + quotient                         12  compare with act_min, act_max
          13  select the clamped value

Results of the steps of a row are collected in a shift register and the complete row is written
to an output FIFO. Back-pressure never stops the pipeline: a row is only started when the FIFO is
guaranteed to have room for it (credit counter over rows started but not yet read), and the FIFO
is deep enough to keep the unit at full rate when ``o.ready`` stays high.

Throughput: one row per ``steps`` cycles (every cycle when ``lanes == channels``), gaps on ``i``
and stalls on ``o`` permitting: the input register takes the next row in the cycle the last step
of the held one is issued. Latency: ``latency = steps + 16`` cycles from a row's transfer on ``i``
to ``o.valid`` for that row, when it need not wait for the input register or an output FIFO
credit (an idle unit takes a row at once: ``i.ready`` is high while the input register is
empty)::

    cycle   0         1        2       ..  steps                ..  steps+14        steps+16
    i       transfer                       next row's transfer
    held              step 0   step 1      last step
    lanes             issue ----------------------- 14 stages -------> last step result
    o                                                                  FIFO write      o.valid

Interfaces:

* ``i``: stream of ``{"data": ArrayLayout(signed(32), channels), "last": 1}``; ``i.ready``
  depends on registers only (not on ``i.valid``), ``last`` is passed through to the output row.
* ``o``: stream of ``{"data": ArrayLayout(signed(8), channels), "last": 1}``.
* ``params``: stream (``ready`` is always high) of ``{"channel", "bias", "multiplier", "shift"}``, one channel
  per cycle, stored in per-lane memories. Load while ``busy`` is low; indices >= ``channels`` are
  ignored. Parameters survive reset.
* ``settings``: per-layer ``{"rounding", "zero_point", "act_min", "act_max"}`` (int8 values,
  ``act_min <= act_max``), plain signals that must stay constant while ``busy`` is high.
* ``busy``: a row is held in the input register (waiting or being issued), is in the pipeline
  or waits in the output FIFO.

Synchronous reset drops every row in flight (also one that is half issued) and leaves the unit
ready for a new row. Only the input register's valid bit, the step counter, the credit counter,
the valid bits beside the lanes and the FIFO pointers are reset: every datapath register is
qualified by a valid bit, which keeps reset nets off the wide datapath.
"""

from amaranth.hdl import C, Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.pipeline import delayed
from hw.systolic.pe import Multiplier

__all__ = ["Rounding", "Requantizer", "PIPELINE_STAGES", "MAX_CHANNELS"]


PIPELINE_STAGES = 14
MAX_CHANNELS = 1024

# Cycles from a row's completed write into the buffered output FIFO to its `o.valid`.
_FIFO_LATENCY = 2


class Rounding(enum.Enum, shape=1):
    """Per-layer rounding form; the names match `sim.reference.ROUNDING_MODES` in upper case."""
    DOUBLE = 0      # TFLite CONV_2D: gemmlowp SRDHM then RoundingDivideByPOT
    SINGLE = 1      # TFLite FULLY_CONNECTED: one round-half-up of acc * M0 / 2^(31 + shift)


_DSP_OPERAND_BITS = 17      # unsigned operand half that fits a signed 18-bit MULT18X18D port


def _check_count(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, not {value}")


def _bits_below(value, amount, limit):
    """Whether any of ``value[k]`` for ``k < amount`` (``amount <= limit``) is set."""
    return Cat(value[k] & (amount > k) for k in range(limit)).any()


class Requantizer(wiring.Component):
    """Pipelined per-channel bias + TFLite requantization of int32 rows to int8 rows.

    Parameters
    ----------
    channels : int
        Channels per row, 1..1024.
    lanes : int
        Lanes time-shared over the channels, 1..channels; a row takes ``ceil(channels / lanes)``
        cycles.

    Attributes
    ----------
    steps : int
        Cycles per row, ``ceil(channels / lanes)``.
    latency : int
        Cycles from a row's transfer on ``i`` to ``o.valid`` for it (see the module docstring).
    fifo_depth : int
        Rows the output FIFO holds (and at most rows in the unit at once).
    """

    def __init__(self, *, channels, lanes):
        _check_count("channels", channels, 1, MAX_CHANNELS)
        if not isinstance(lanes, int) or isinstance(lanes, bool):
            raise TypeError(f"lanes must be an integer, not {lanes!r}")
        if not 1 <= lanes <= channels:
            raise ValueError(f"lanes must be in 1..channels={channels}, not {lanes}")
        self.channels = channels
        self.lanes = lanes
        self.steps = -(-channels // lanes)
        issue_latency = self.steps - 1 + PIPELINE_STAGES + _FIFO_LATENCY
        self.latency = 1 + issue_latency        # the input register
        # Rows started but not yet read, in steady state at full rate: a credit returns
        # `issue_latency` cycles after the row's first step, plus one cycle for the registered
        # credit count.
        self.fifo_depth = -(-(issue_latency + 1) // self.steps)

        self.parameter_layout = data.StructLayout({
            "bias": signed(32),
            "multiplier": unsigned(31),
            "shift": range(32),
        })
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(32), channels),
                "last": 1,
            }))),
            "o": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(8), channels),
                "last": 1,
            }))),
            "params": In(stream.Signature(data.StructLayout({
                "channel": range(channels),
                **self.parameter_layout.members,
            }))),
            "settings": In(data.StructLayout({
                "rounding": Rounding,
                "zero_point": signed(8),
                "act_min": signed(8),
                "act_max": signed(8),
            })),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()

        # Input register: the source of `i` drives flip-flops only (module docstring). Its data
        # is loaded whenever it may take a row, valid or not, so that its clock enable does not
        # depend on `i.valid`; `held_valid` qualifies it.
        held = Signal(self.i.payload.shape(), reset_less=True)
        held_valid = Signal()
        with m.If(self.i.ready):
            m.d.sync += [held.eq(self.i.payload), held_valid.eq(self.i.valid)]

        # Issue: walk the steps of the held row; a new row needs a free FIFO credit.
        step = Signal(range(self.steps))
        rows_in_unit = Signal(range(self.fifo_depth + 1))
        first_step = step == 0
        last_step = step == self.steps - 1
        may_issue = ~first_step | (rows_in_unit < self.fifo_depth)
        issue = held_valid & may_issue
        m.d.comb += self.i.ready.eq(~held_valid | (issue & last_step))
        with m.If(issue):
            m.d.sync += step.eq(Mux(last_step, 0, step + 1))

        row_started = issue & first_step
        row_read = self.o.valid & self.o.ready
        m.d.sync += rows_in_unit.eq(rows_in_unit + row_started - row_read)
        # A row part-way through its steps is still held, so `held_valid` covers it.
        m.d.comb += self.busy.eq(held_valid | (rows_in_unit != 0))

        # Row bookkeeping travels beside the lanes, one register per stage.
        control_layout = data.StructLayout({"valid": 1, "row_end": 1, "last": 1})
        control = Signal(control_layout)
        m.d.comb += [
            control.valid.eq(issue),
            control.row_end.eq(last_step),
            control.last.eq(held.last),
        ]
        for stage in range(PIPELINE_STAGES):
            delayed = Signal(control_layout, name=f"control_{stage}")
            m.d.sync += delayed.eq(control)
            control = delayed

        m.d.comb += self.params.ready.eq(1)

        lane_results = []
        for lane in range(self.lanes):
            parameters = Memory(shape=self.parameter_layout, depth=self.steps, init=[])
            m.submodules[f"parameters_{lane}"] = parameters
            self._load_parameters(m, parameters.write_port(), lane)
            read = parameters.read_port()
            m.d.comb += read.addr.eq(step)

            accumulator = Signal(signed(32), name=f"accumulator_{lane}", reset_less=True)
            with m.Switch(step):
                for index in range(self.steps):
                    channel = index * self.lanes + lane
                    if channel < self.channels:
                        with m.Case(index):
                            m.d.sync += accumulator.eq(held.data[channel])
            lane_results.append(self._lane(m, lane, accumulator, read.data))

        self._collect_rows(m, control, lane_results)
        return m

    def _load_parameters(self, m, write, lane):
        """Channel ``c`` lives in lane ``c % lanes`` at address ``c // lanes``."""
        m.d.comb += [write.data[name].eq(self.params.payload[name])
                     for name in self.parameter_layout.members]
        with m.Switch(self.params.payload.channel):
            for channel in range(lane, self.channels, self.lanes):
                with m.Case(channel):
                    m.d.comb += [
                        write.addr.eq(channel // self.lanes),
                        write.en.eq(self.params.valid),
                    ]

    def _lane(self, m, lane, accumulator, parameters):
        """One lane's stages 1..11; returns the int8 result register (valid with `control`)."""
        def stage(name, shape):
            return Signal(shape, name=f"{name}_{lane}", reset_less=True)

        settings = self.settings
        double = settings.rounding == Rounding.DOUBLE

        # 1: bias add (wraps at 32 bits, see module docstring).
        biased = stage("biased", signed(32))
        multiplier = stage("multiplier", unsigned(31))
        shift_1 = stage("shift_1", range(32))
        m.d.sync += [
            biased.eq((accumulator + parameters.bias)[:32].as_signed()),
            multiplier.eq(parameters.multiplier),
            shift_1.eq(parameters.shift),
        ]

        # 2, 3: biased * multiplier as four partial products, each on one MULT18X18D with its
        # input and output registers (`hw.systolic.pe.Multiplier`).
        split = _DSP_OPERAND_BITS
        operands = {"low": biased[:split], "high": biased[split:].as_signed()}
        factors = {"low": multiplier[:split], "high": multiplier[split:]}
        partial = {}
        for operand_half, operand in operands.items():
            for factor_half, factor in factors.items():
                name = f"{operand_half}_{factor_half}"
                product = Multiplier(mapping="dsp", a_shape=operand.shape(),
                                     b_shape=factor.shape())
                m.submodules[f"{name}_{lane}"] = product
                m.d.comb += [product.a.eq(operand), product.b.eq(factor)]
                partial[name] = product.product
        # 4: each partial product is registered in the fabric as it leaves its DSP block, so the
        # adders start from flip-flops placed beside them, not from the DSP column (timing).
        for name, product in partial.items():
            partial[name] = stage(f"{name}_fabric", product.shape())
            m.d.sync += partial[name].eq(product)
        low_low, low_high = partial["low_low"], partial["low_high"]
        high_low, high_high = partial["high_low"], partial["high_high"]
        shift_2 = delayed(m, shift_1, Multiplier.LATENCY + 1, name=f"shift_2_{lane}",
                          reset_less=True)

        # 5, 6: the product's bits from 2^17 up; bits below 2^17 come from low_low alone and
        # carry into nothing, so they are dropped.
        sum_low = stage("sum_low", unsigned(32))
        sum_high = stage("sum_high", signed(47))
        shift_3 = stage("shift_3", range(32))
        m.d.sync += [
            sum_low.eq(low_low[split:] + low_high),
            sum_high.eq(high_low + (high_high << split)),
            shift_3.eq(shift_2),
        ]
        product_upper = stage("product_upper", signed(47))     # (biased * multiplier) >> 17
        shift_4 = stage("shift_4", range(32))
        m.d.sync += [
            product_upper.eq(sum_low + sum_high),
            shift_4.eq(shift_3),
        ]

        # 7: t = product >> 30; DOUBLE's first rounding (SRDHM) makes v = 2 * ((t + 1) >> 1).
        truncated = product_upper[30 - split:].as_signed()
        scaled = stage("scaled", signed(33))
        shift_5 = stage("shift_5", range(32))
        m.d.sync += [
            scaled.eq(truncated + (double & truncated[0])),
            shift_5.eq(shift_4),
        ]

        # 8, 9: w = v >> shift in two mux levels, remembering whether nonzero bits fell off.
        coarse_amount = Cat(C(0, 3), shift_5[3:])
        coarse = stage("coarse", signed(33))
        coarse_sticky = stage("coarse_sticky", 1)
        fine_amount = stage("fine_amount", 3)
        m.d.sync += [
            coarse.eq(scaled >> coarse_amount),
            coarse_sticky.eq(_bits_below(scaled, coarse_amount, 24)),
            fine_amount.eq(shift_5[:3]),
        ]
        shifted = stage("shifted", signed(33))
        sticky = stage("sticky", 1)
        m.d.sync += [
            shifted.eq(coarse >> fine_amount),
            sticky.eq(coarse_sticky | _bits_below(coarse, fine_amount, 7)),
        ]

        # 10: the cut is one bit further down (v is twice the rounded value); shifted[0] is the
        # half bit. SINGLE rounds ties up, DOUBLE rounds them away from zero.
        round_up = shifted[0] & (~double | ~shifted[-1] | sticky)
        quotient = stage("quotient", signed(32))
        offset = stage("offset", signed(9))
        m.d.sync += [
            quotient.eq(shifted.shift_right(1)),
            offset.eq(settings.zero_point + round_up),
        ]

        # 11, 12, 13: zero point, then the fused activation bounds (compare, then select).
        with_zero_point = stage("with_zero_point", signed(34))
        m.d.sync += with_zero_point.eq(quotient + offset)
        below = stage("below", 1)
        above = stage("above", 1)
        low_byte = stage("low_byte", signed(8))
        m.d.sync += [
            below.eq(with_zero_point < settings.act_min),
            above.eq(with_zero_point > settings.act_max),
            low_byte.eq(with_zero_point[:8]),
        ]
        result = stage("result", signed(8))
        m.d.sync += result.eq(Mux(below, settings.act_min, Mux(above, settings.act_max, low_byte)))
        return result

    def _collect_rows(self, m, control, lane_results):
        """Gather the steps of a row (earlier steps in a shift register) into the output FIFO."""
        m.submodules.output_fifo = fifo = SyncFIFOBuffered(
            width=Shape.cast(self.o.payload.shape()).width, depth=self.fifo_depth)

        earlier_steps = [Signal(signed(8), name=f"collected_{index}", reset_less=True)
                         for index in range(self.lanes * (self.steps - 1))]
        with m.If(control.valid & ~control.row_end):
            m.d.sync += Cat(earlier_steps).eq(Cat(*earlier_steps[self.lanes:], *lane_results))

        row = Signal(self.o.payload.shape())
        m.d.comb += [
            row.data.eq(Cat(*earlier_steps, *lane_results)[:8 * self.channels]),
            row.last.eq(control.last),
            fifo.w_data.eq(row),
            fifo.w_en.eq(control.valid & control.row_end),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
