"""The accelerator core: on-chip buffers, a command queue and decoupled units running whole layers.

::

    host link bus --+-- control window --> command queue (FIFO) --> dispatcher (program order)
                    |                      status, error, counters      |  validate, scoreboard
                    |                                   +---------------+------------+
                    |                                   v               v            v
                    +-- scratchpad window ------> Scratchpad <---- ComputeUnit   BinaryUnit
                    |   (row-combining writes)     ^    |  (read)      |            |
                    |                              |    +--------------+------------+
                    |            StoreUnit, BinaryUnit (write)     v            v
                    +-- accumulator window --> AccumulatorMemory x2 <- write/acc  binary results
                    +-- parameters window ---> requant parameters  |                 ^
                    +-- binary_weights/thresholds -> BinaryEngine   |   binary_results window
                                                   StoreUnit <- drain

Buffers (sizes from the config): the int8 `Scratchpad` (``scratchpad_rows`` rows of
``row_bytes = max(R, C)`` lanes) in two banks (the top row-address bit), each one DP16KD-style
read port: the compute unit reads weight rows and activation rows as two independent streams, so
with weights in one bank and activations in the other the next tile's weights load while the
current tile computes (in the same bank they take turns; activations first). Then the int32
accumulator, two `AccumulatorMemory` halves of ``accumulator_rows / 2`` rows of C lanes (the
top row-address bit selects one; each has its own accumulate and drain ports), the requant
parameter memory (``parameter_rows`` entries), the binary engine's weight/threshold memories and
the binary result memory (``binary_result_rows`` rows). The engine's weight memory
(``binary_weight_depth`` rows) and threshold memory (as deep) hold several binary layers side by
side (each BINARY command names its weight and threshold base).

Decoupling and ordering. The dispatcher takes commands in program order and hands each to its
unit, which then runs on its own; the next command can go to another unit at once. The
accumulator halves are scoreboarded (``computing[h]``, ``storing[h]``): a GEMM/CONV writing half
h waits until no earlier REQUANT_STORE still reads h (WAR), and a REQUANT_STORE of half h waits
until no earlier GEMM/CONV still writes it (RAW). So the store of one half overlaps the compute
of the other (ping-pong) and a store never reads a tile being computed. A GEMM/CONV is retired
per half, when its last result row has landed there, and one on the other half is handed to the
compute unit as soon as the unit takes it (while the previous one still streams): its set-up,
first weights and rows run behind the previous command's, whose drain it hides. Two on the same
half run one after the other. Scratchpad dependencies
(a layer reading what the previous layer's store wrote, the host reading results) are ordered by
FENCE, which waits for every unit to be idle; the binary unit shares the scratchpad read port
with the compute unit, so the two never run at the same time. The scratchpad's write port takes
the host's row commits first, then the store unit's rows, then the binary unit's packed
threshold bits (a binary layer's output written as the next binary layer's input rows); one
BINARY command starts only after the previous one has written its last row, so binary layers
chain without a FENCE.

Errors. Each command is validated before dispatch (unknown opcode, rows past the scratchpad,
accumulator half, parameter or result memory, zero/out-of-range counts). A failing command is
skipped -- nothing is written anywhere -- and counts as completed; the first error since the last
clear is kept in ``error_code``, ``error_index`` (0-based index of the command since reset) and
``error_opcode`` (an error in the cycle of a clear is kept: the clear never hides one).

Dataflow. The core drives a weight-stationary array and refuses any other dataflow at
construction (`check_core_dataflow`), so every core runs every command. Its memory system is built
for that dataflow: a scratchpad row is one pixel's channels (a row of A), which is what on-chip
im2col produces and what a weight-stationary array consumes, one row per cycle, from one bank,
while a tile's R weight rows load from the other and stay for all M rows. An output-stationary
array consumes a *column* of A per beat (one element from each of R rows) together with a row of
W, for every output tile again: both operands streamed per tile, and A read R rows at a time or
stored transposed, which im2col does not produce. On the array alone neither dataflow is ahead
on every layer: weight-stationary zero-pads K to the array's rows, output-stationary M, and the
shape decides (`python -m sim.bench systolic --gemm MxKxN`; figures in the README's status
table). Output-stationary remains available for the array alone (`hw.systolic.SystolicArray`,
`python -m sim.bench systolic --dataflow output_stationary`) and the engines' self-test
(`python -m hw.build --design bringup`).

Bus windows (32-bit words; see `Core.windows`): ``control`` (registers, `hw.core.isa.REGISTERS`
and `COUNTERS`), ``scratchpad`` (row r, word i at ``r*scratchpad_stride + i``, byte b of the row
= lane b; a row is written when its last word is written, so the host writes whole rows),
``accumulator`` (read-only, row r lane c at ``r*accumulator_stride + c``), ``parameters``
(write-only, entry e: ``4e`` bias, ``4e+1`` multiplier M0, ``4e+2`` right shift 0..31 -- writing
the shift stores the entry), ``binary_weights`` (write-only, engine address a, lane l, word i at
``(a*lanes_stride + l)*weight_word_stride + i``, the beat is stored with its last word),
``binary_thresholds`` (write-only, threshold row f, lane l at ``f*lanes_stride + l``: bits 0..
the threshold (two's complement), bit 31 ascending) and ``binary_results`` (read-only, row r: words
``0..lanes-1`` dots, stored at their real width and sign-extended, then the threshold bits, 32
per word, at ``r*result_stride``).
Every window follows the target contract of `hw.soc.bridge`: read data `TARGET_READ_LATENCY`
cycles after the read, from a register. Scratchpad and accumulator rows come from their
registered read ports (3 cycles, then the bank/half mux and two registered word multiplexer
levels); other memory read data is registered before its lane/word multiplexers. A write takes
effect at once, except that a binary weight beat is stored with its last word, and a scratchpad
row and a command (into the queue) the cycle after their last word.

Latency/throughput: see `hw.core.units`. Dispatch takes fetch + validation products + one cycle
to register the checked sums + one to register every compare + one to combine each check's
compares + one to decide (a failing command then takes one more to report its error) + one to
register the offer to the unit + the offer's cycle, plus waiting for its unit (the handshake has
a state of its own, apart from the checks; a unit's ready is registered, so a unit that just fell
idle takes its next command a cycle later): the products of the command's sizes (row counts of
every buffer it touches) are formed on one shift-and-add `hw.memory.sequential_multiplier.
SequentialMultiplier` (the array and the requantizer need every DSP block), 3 + ceil(bits/2)
cycles per product of the command's opcode (its narrower operand's bits) and one cycle per
other product (15 products in all): about 53 cycles for a small conv, 23 for a FENCE, at most
about 75. The performance-counter events are registered before they are counted, so the
counters trail the units by one cycle, and retirements are registered once more before they are
added up, so ``completed`` trails them by two (timing: no unit's control logic feeds an adder in
the same cycle).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from hw.config import dsp_pe_count
from hw.memory.accumulator import AccumulatorMemory
from hw.memory.scratchpad import Scratchpad
from hw.pipeline import SkidBuffer, delayed
from hw.soc.bridge import Bus, Window, WindowKind, memory_read_data, register_read_data
from hw.synthesis import UNDEFINED_ON_COLLISION

from hw.memory.im2col import conv_command_layout
from hw.memory.sequential_multiplier import (SequentialMultiplier, multiply_by_constant,
                                             sequence_products)
from .isa import (ADDRESS_BITS, COMMAND_LAYOUT, COMMAND_WORDS, CONTROL_WORDS, COUNTERS,
                  COUNTERS_BASE, REGISTERS, ErrorCode, Opcode)
from .units import BinaryUnit, ComputeUnit, StoreUnit, binary_result_layout, parameter_layout

__all__ = ["Core", "CoreGeometry", "CORE_DATAFLOW", "check_core_dataflow", "core_from_config",
           "geometry_from_config", "scratchpad_stride_words"]

CORE_DATAFLOW = "weight_stationary"


def check_core_dataflow(dataflow):
    """Raise `ValueError` unless the core -- so the SoC around it -- can run `dataflow`: it runs
    `CORE_DATAFLOW` only (see the module docstring)."""
    if dataflow != CORE_DATAFLOW:
        raise ValueError(
            f"The accelerator core, and so the SoC, runs dataflow {CORE_DATAFLOW!r} only, not "
            f"{dataflow!r}: its on-chip im2col and weight streaming feed a weight-stationary "
            f"array. Output-stationary remains available for the array alone "
            f"(hw.systolic.SystolicArray; python -m sim.bench systolic --dataflow "
            f"output_stationary) and the engines' self-test (python -m hw.build --design bringup)")


def scratchpad_stride_words(row_bytes):
    """Words between consecutive scratchpad rows in the bus window (a power of two)."""
    return _pow2_at_least(-(-row_bytes // 4))


def _pow2_at_least(value):
    return 1 << max(0, (value - 1).bit_length())


def _check_int(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Core {name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"Core {name} must be in {low}..{high}, not {value}")
    return value


def _check_power_of_two(name, value, low, high):
    _check_int(name, value, low, high)
    if value & (value - 1):
        raise ValueError(f"Core {name} must be a power of two in {low}..{high}, not {value}")
    return value


class CoreGeometry:
    """The checked sizes of a core and the buffer geometry derived from them (row strides, bus
    window sizes): everything the host needs to lay data out, without building any hardware.
    `Core` is built on it; the driver uses it alone.

    Parameters (keyword-only)
    -------------------------
    rows, cols : int                 array shape, 1..32
    dataflow : str                   `CORE_DATAFLOW` ("weight_stationary"), the only one it runs
    multiplier : str                 as `hw.config.AcceleratorConfig`
    dsp_pes : int or None            as `hw.config.AcceleratorConfig` (``"mixed"`` only)
    requant_lanes : int              1..cols
    scratchpad_rows : int            power of two, 16..65536
    accumulator_rows : int           power of two, 16..65536 (two halves)
    binary_width, binary_lanes : int binary engine SIMD width (<= 8*max(rows, cols)) and lanes
    binary_max_k, binary_max_n : int longest binary vector / most neurons of a binary layer
    parameter_rows : int             requant parameter entries (power of two, >= cols)
    binary_result_rows : int         binary result rows (power of two)
    queue_depth : int                commands the queue holds, 2..256
    max_pool_width : int             widest raster the 2x2 max-pool accepts, 2..1023
    """

    SCRATCHPAD_BANKS = 2        # A (or im2col) and W read in the same cycle

    def __init__(self, *, rows, cols, dataflow, multiplier, requant_lanes, scratchpad_rows,
                 accumulator_rows, binary_width, binary_lanes, binary_max_k, binary_max_n,
                 parameter_rows, binary_result_rows, queue_depth, max_pool_width, dsp_pes=None):
        self.rows = _check_int("rows", rows, 1, 32)
        self.cols = _check_int("cols", cols, 1, 32)
        check_core_dataflow(dataflow)
        dsp_pe_count(multiplier, dsp_pes, self.rows, self.cols, owner="Core ")
        self.dataflow, self.multiplier, self.dsp_pes = dataflow, multiplier, dsp_pes
        self.requant_lanes = _check_int("requant_lanes", requant_lanes, 1, cols)
        self.scratchpad_rows = _check_power_of_two("scratchpad_rows", scratchpad_rows, 16, 1 << 16)
        self.accumulator_rows = _check_power_of_two("accumulator_rows", accumulator_rows, 16,
                                                    1 << 16)
        self.row_bytes = max(rows, cols)
        self.binary_width = _check_power_of_two("binary_width", binary_width, 8,
                                                8 * self.row_bytes if self.row_bytes >= 1 else 8)
        self.binary_lanes = _check_int("binary_lanes", binary_lanes, 1, 256)
        self.binary_max_k = _check_int("binary_max_k", binary_max_k, 1, 1 << 15)
        self.binary_max_n = _check_int("binary_max_n", binary_max_n, 1, 1 << 12)
        self.parameter_rows = _check_power_of_two("parameter_rows", parameter_rows,
                                                  _pow2_at_least(cols), 1 << 16)
        self.binary_result_rows = _check_power_of_two("binary_result_rows", binary_result_rows,
                                                      2, 1 << 16)
        self.queue_depth = _check_int("queue_depth", queue_depth, 2, 256)
        self.max_pool_width = _check_int("max_pool_width", max_pool_width, 2, 1023)

        self.scratchpad_stride = scratchpad_stride_words(self.row_bytes)
        self.accumulator_stride = _pow2_at_least(cols)
        self.binary_max_neuron_folds = -(-binary_max_n // binary_lanes)
        self.binary_weight_depth = (-(-binary_max_k // binary_width)
                                    * self.binary_max_neuron_folds)
        # As deep as the weights (`hw.binary.engine`): the thresholds of every set of layers
        # whose weights fit side by side fit too.
        self.binary_threshold_depth = self.binary_weight_depth
        self.lanes_stride = _pow2_at_least(binary_lanes)
        self.weight_word_stride = _pow2_at_least(-(-binary_width // 32))
        self.result_bit_words = -(-binary_lanes // 32)
        self.result_stride = _pow2_at_least(binary_lanes + self.result_bit_words)

        self.window_words = {
            "control": CONTROL_WORDS,
            "scratchpad": scratchpad_rows * self.scratchpad_stride,
            "accumulator": accumulator_rows * self.accumulator_stride,
            "parameters": 4 * parameter_rows,
            "binary_weights": (_pow2_at_least(self.binary_weight_depth) * self.lanes_stride
                               * self.weight_word_stride),
            "binary_thresholds": (_pow2_at_least(self.binary_threshold_depth)
                                  * self.lanes_stride),
            "binary_results": binary_result_rows * self.result_stride,
        }

    def windows(self, base):
        """`hw.soc.bridge.Window`s of every bus port, each aligned to its size, from `base`."""
        kinds = {"control": (WindowKind.REGISTERS, True), "accumulator": (WindowKind.MEMORY, False),
                 "binary_results": (WindowKind.MEMORY, False)}
        result = []
        address = base
        for name, words in self.window_words.items():
            size = 4 * words
            address = -(-address // size) * size
            kind, writable = kinds.get(name, (WindowKind.MEMORY, True))
            result.append(Window(name, address, size, kind, writable))
            address += size
        return result


class Core(CoreGeometry, wiring.Component):
    """Buffers + command queue + compute/store/binary units (see module docstring).

    Parameters (keyword-only): those of `CoreGeometry`. One bus port per window.
    """

    def __init__(self, **parameters):
        CoreGeometry.__init__(self, **parameters)
        wiring.Component.__init__(self, {
            name: In(Bus(address_width=max(1, (words - 1).bit_length())))
            for name, words in self.window_words.items()
        })

    # Elaboration ---------------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols

        m.submodules.scratchpad = scratchpad = Scratchpad(
            row_bytes=self.row_bytes, depth=self.scratchpad_rows, banks=self.SCRATCHPAD_BANKS)
        # One AccumulatorMemory per half: compute writes one while the store drains the other,
        # each on its own read-modify-write and drain ports (a shared drain port would take
        # cycles away from the accumulate path whenever a store overlaps compute).
        half_rows = self.accumulator_rows // 2
        half_bits = (half_rows - 1).bit_length()
        halves = [AccumulatorMemory(cols=cols, depth=half_rows) for _ in range(2)]
        for index, half in enumerate(halves):
            m.submodules[f"accumulator_{index}"] = half
        # The host writes the parameters and reads the binary results through its windows while
        # the core reads and writes the other ports: a row both touch in one cycle is a row the
        # host was not to change (or read) before the command using it ended, so the value a
        # collision gives is never used and yosys needs no read-first emulation (`hw.synthesis`).
        m.submodules.parameters = parameters = Memory(shape=parameter_layout,
                                                      depth=self.parameter_rows, init=[],
                                                      attrs=UNDEFINED_ON_COLLISION)
        parameter_write = parameters.write_port()
        parameter_read = parameters.read_port()
        result_shape = binary_result_layout(self.binary_lanes, self.binary_max_k)
        m.submodules.binary_results = binary_results = Memory(
            shape=result_shape, depth=self.binary_result_rows, init=[],
            attrs=UNDEFINED_ON_COLLISION)
        result_write = binary_results.write_port()
        result_read = binary_results.read_port()
        m.submodules.queue = queue = SyncFIFOBuffered(width=COMMAND_LAYOUT.size,
                                                      depth=self.queue_depth)

        m.submodules.store = store = StoreUnit(
            cols=cols, requant_lanes=self.requant_lanes, row_bytes=self.row_bytes,
            accumulator_rows=self.accumulator_rows, max_pool_width=self.max_pool_width)
        m.submodules.binary = binary = BinaryUnit(
            width=self.binary_width, lanes=self.binary_lanes, max_k=self.binary_max_k,
            max_n=self.binary_max_n, row_bytes=self.row_bytes,
            result_rows=self.binary_result_rows)
        m.submodules.compute = compute = ComputeUnit(
            rows=rows, cols=cols, multiplier=self.multiplier, dsp_pes=self.dsp_pes,
            row_bytes=self.row_bytes,
            accumulator_rows=self.accumulator_rows)
        # The array's rows reach the halves through a skid buffer: a half's `write.ready` (low
        # the cycle after a drain read) then stops at the buffer's registers instead of running
        # through the array's result FIFO into the compute unit's tag FIFO, across the die.
        m.submodules.accumulator_write = acc_write = SkidBuffer(
            compute.acc_write.payload.shape())
        wiring.connect(m, compute.acc_write, acc_write.i)
        compute_busy = (compute.busy | acc_write.o.valid | ~halves[0].idle | ~halves[1].idle)
        write_half = acc_write.o.payload.addr[half_bits]
        # A GEMM/CONV is done when its last row is written, not just accepted: its final row
        # (`end`) entering half h, then that half's pipeline empty (`compute_landed`).
        last_row_taken = acc_write.o.valid & acc_write.o.ready & acc_write.o.payload.end
        compute_landed = [(last_row_taken & (write_half == index), half.idle)
                          for index, half in enumerate(halves)]
        for index, half in enumerate(halves):
            m.d.comb += [
                half.write.payload.addr.eq(acc_write.o.payload.addr[:half_bits]),
                half.write.payload.data.eq(acc_write.o.payload.data),
                half.write.payload.accumulate.eq(acc_write.o.payload.accumulate),
                half.write.valid.eq(acc_write.o.valid & (write_half == index)),
            ]
        m.d.comb += acc_write.o.ready.eq(
            Mux(write_half, halves[1].write.ready, halves[0].write.ready))

        # Memory windows --------------------------------------------------------------------------
        host_sp_read, host_sp_row, host_sp_commit = self._scratchpad_window(m, scratchpad)
        host_acc_read, host_acc_half = self._accumulator_window(m, halves, half_bits)
        self._parameter_window(m, parameter_write)
        self._binary_windows(m, binary, result_read)

        # Scratchpad read ports, one per bank (the top row-address bit), by priority: the host,
        # then the activation side (compute or binary, never both at once), then compute's
        # weights. A port's address and enable come from the requests (flip-flops and credit
        # counts), never from the blocked answers derived from them (timing: the address
        # registers of both banks).
        bank_bits = scratchpad.bank_addr_width
        activation_clients = [compute, binary]
        activation_request = Signal()
        activation_addr = Signal(ADDRESS_BITS)
        m.d.comb += [activation_request.eq(Cat(client.sp_request
                                               for client in activation_clients).any()),
                     activation_addr.eq(binary.sp_addr)]
        with m.If(compute.sp_request):
            m.d.comb += activation_addr.eq(compute.sp_addr)
        requests = [(host_sp_read, host_sp_row), (activation_request, activation_addr),
                    (compute.weight_request, compute.weight_addr)]
        host_reads = []
        for bank, port in enumerate(scratchpad.read):
            wants = [enable & (address[bank_bits] == bank) for enable, address in requests]
            host_reads.append(wants[0])
            # The lowest priority's address is the default: with no request it goes unused.
            m.d.comb += [port.addr.eq(requests[-1][1][:bank_bits]), port.en.eq(Cat(wants).any())]
            for position in reversed(range(len(requests) - 1)):
                with m.If(wants[position]):
                    m.d.comb += port.addr.eq(requests[position][1][:bank_bits])
        for client in activation_clients:
            read_bank = delayed(m, client.sp_addr[bank_bits], Scratchpad.READ_LATENCY,
                                name=f"{client.__class__.__name__.lower()}_read_bank")
            m.d.comb += [
                client.sp_data.eq(Mux(read_bank, scratchpad.read[1].data,
                                      scratchpad.read[0].data)),
                client.sp_blocked.eq(Mux(client.sp_addr[bank_bits], host_reads[1], host_reads[0])),
            ]
        weight_bank = compute.weight_addr[bank_bits]
        weight_read_bank = delayed(m, weight_bank, Scratchpad.READ_LATENCY,
                                   name="weight_read_bank")
        m.d.comb += [
            compute.weight_data.eq(Mux(weight_read_bank, scratchpad.read[1].data,
                                       scratchpad.read[0].data)),
            # Only compute's own activation reads compete with its weights: the binary unit
            # never runs alongside compute (and leaving it out keeps its read logic off the
            # weight path).
            compute.weight_blocked.eq(Mux(weight_bank, host_reads[1], host_reads[0]) |
                                      (compute.sp_request &
                                       (compute.sp_addr[bank_bits] == weight_bank))),
        ]
        # Scratchpad write port, by priority: the host's row commit, the store unit, the binary
        # unit's packer. Both blocked answers come from flip-flops (the commit, the store's
        # write register: it writes whenever it holds a row and the host does not).
        m.d.comb += [store.sp_blocked.eq(host_sp_commit),
                     binary.sp_write_blocked.eq(host_sp_commit | store.sp_en)]
        with m.If(store.sp_en):
            m.d.comb += [scratchpad.write.addr.eq(store.sp_addr),
                         scratchpad.write.data.eq(store.sp_data),
                         scratchpad.write.en.eq(1)]
        with m.Elif(binary.sp_write_en):
            m.d.comb += [scratchpad.write.addr.eq(binary.sp_write_addr),
                         scratchpad.write.data.eq(binary.sp_write_data),
                         scratchpad.write.en.eq(1)]
        # Accumulator drain ports: the host, else the store unit.
        store_half = store.drain_addr[half_bits]
        store_read_half = delayed(m, store_half, AccumulatorMemory.DRAIN_LATENCY,
                                  name="store_read_half")
        m.d.comb += store.drain_blocked.eq(host_acc_read & (host_acc_half == store_half))
        for index, half in enumerate(halves):
            with m.If(~(host_acc_read & (host_acc_half == index)) & (store_half == index)):
                m.d.comb += [half.drain.addr.eq(store.drain_addr[:half_bits]),
                             half.drain.en.eq(store.drain_en)]
        m.d.comb += [
            store.drain_data.eq(Mux(store_read_half, halves[1].drain.data,
                                    halves[0].drain.data)),
            parameter_read.addr.eq(store.param_addr),
            store.param_data.eq(parameter_read.data),
            result_write.addr.eq(binary.result_addr),
            result_write.data.eq(binary.result_data),
            result_write.en.eq(binary.result_en),
        ]

        # Command queue, dispatcher, status, counters ---------------------------------------------
        self._dispatcher(m, queue, compute, compute_busy, compute_landed, store, binary)
        return m

    def _scratchpad_window(self, m, scratchpad):
        bus = self.scratchpad
        word_bits = (self.scratchpad_stride - 1).bit_length()
        words_per_row = -(-self.row_bytes // 4)
        word = bus.address[:word_bits]
        row = bus.address[word_bits:]
        staged = [Signal(32, name=f"scratchpad_staged_{index}") for index in range(words_per_row)]
        # The row is committed the cycle after its last word arrives, from registers only, so
        # the store unit's `sp_blocked` is a flip-flop (timing: it steers the requantizer's
        # ready chain).
        commit = Signal()
        commit_row = Signal.like(row, name="scratchpad_commit_row")
        with m.If(bus.write):
            with m.Switch(word):
                for index in range(words_per_row):
                    with m.Case(index):
                        m.d.sync += staged[index].eq(bus.write_data)
        m.d.sync += [commit.eq(bus.write & (word == words_per_row - 1)), commit_row.eq(row)]
        with m.If(commit):
            m.d.comb += [
                scratchpad.write.addr.eq(commit_row),
                scratchpad.write.data.eq(Cat(*staged)[:8 * self.row_bytes]),
                scratchpad.write.en.eq(1),
            ]
        # The read ports are driven by the core's arbitration (the host first).
        read_bank = delayed(m, row[scratchpad.bank_addr_width], Scratchpad.READ_LATENCY,
                            name="host_read_bank")
        memory_read_data(m, bus, word=word, row_latency=Scratchpad.READ_LATENCY,
                         row=Mux(read_bank, scratchpad.read[1].data.as_value(),
                                 scratchpad.read[0].data.as_value()))
        return bus.read, row, commit

    def _accumulator_window(self, m, halves, half_bits):
        bus = self.accumulator
        lane_bits = (self.accumulator_stride - 1).bit_length()
        lane = bus.address[:lane_bits]
        row = bus.address[lane_bits:]
        half_select = row[half_bits]
        read_half = delayed(m, half_select, AccumulatorMemory.DRAIN_LATENCY, name="host_read_half")
        for index, half in enumerate(halves):
            with m.If(bus.read & (half_select == index)):
                m.d.comb += [half.drain.addr.eq(row[:half_bits]), half.drain.en.eq(1)]
        memory_read_data(m, bus, word=lane, row_latency=AccumulatorMemory.DRAIN_LATENCY,
                         row=Mux(read_half, halves[1].drain.data.as_value(),
                                 halves[0].drain.data.as_value()))
        return bus.read, half_select

    def _parameter_window(self, m, write_port):
        bus = self.parameters
        entry = Signal(parameter_layout)
        with m.If(bus.write):
            with m.Switch(bus.address[:2]):
                with m.Case(0):
                    m.d.sync += entry.bias.eq(bus.write_data)
                with m.Case(1):
                    m.d.sync += entry.multiplier.eq(bus.write_data)
        stored = Signal(parameter_layout)
        m.d.comb += [
            stored.bias.eq(entry.bias),
            stored.multiplier.eq(entry.multiplier),
            stored.shift.eq(bus.write_data),
            write_port.addr.eq(bus.address[2:]),
            write_port.data.eq(stored),
            write_port.en.eq(bus.write & (bus.address[:2] == 2)),
        ]

    def _binary_windows(self, m, binary, result_read):
        width, lanes = self.binary_width, self.binary_lanes
        lane_bits = (self.lanes_stride - 1).bit_length()

        bus = self.binary_weights
        word_bits = (self.weight_word_stride - 1).bit_length()
        words = -(-width // 32)
        word = bus.address[:word_bits]
        lane = bus.address[word_bits:word_bits + lane_bits]
        address = bus.address[word_bits + lane_bits:]
        staged = [Signal(32, name=f"weight_staged_{index}") for index in range(words)]
        with m.If(bus.write):
            with m.Switch(word):
                for index in range(words):
                    with m.Case(index):
                        m.d.sync += staged[index].eq(bus.write_data)
        m.d.comb += [
            binary.weights.payload.address.eq(address),
            binary.weights.payload.lane.eq(lane),
            binary.weights.payload.bits.eq(Cat(*staged[:-1], bus.write_data)[:width]),
            binary.weights.valid.eq(bus.write & (word == words - 1) & (lane < lanes) &
                                    (address < self.binary_weight_depth)),
        ]

        bus = self.binary_thresholds
        lane = bus.address[:lane_bits]
        fold = bus.address[lane_bits:]
        threshold_width = len(binary.thresholds.payload.threshold)
        m.d.comb += [
            binary.thresholds.payload.neuron_fold.eq(fold),
            binary.thresholds.payload.lane.eq(lane),
            binary.thresholds.payload.threshold.eq(bus.write_data[:threshold_width]),
            binary.thresholds.payload.ascending.eq(bus.write_data[31]),
            binary.thresholds.valid.eq(bus.write & (lane < lanes) &
                                       (fold < self.binary_threshold_depth)),
        ]

        # A window row: the dots sign-extended to 32 bits each (wires only), then the threshold
        # bits, so word i of the window row is bits 32i.. of it.
        bus = self.binary_results
        word_bits = (self.result_stride - 1).bit_length()
        stored = result_read.data
        row = Cat(*(Cat(dot, dot[-1].replicate(32 - len(dot)))
                    for dot in (Value.cast(stored.dots[lane]) for lane in range(lanes))),
                  stored.bits)
        m.d.comb += [result_read.addr.eq(bus.address[word_bits:]), result_read.en.eq(bus.read)]
        memory_read_data(m, bus, word=bus.address[:word_bits], row=row)

    def _dispatcher(self, m, queue, compute, compute_busy, compute_landed, store, binary):
        rows, cols = self.rows, self.cols
        bus = self.control
        half_rows = self.accumulator_rows // 2
        half_bits = (half_rows - 1).bit_length()

        # Pushing commands ------------------------------------------------------------------------
        # Every word is staged and the push is registered: the queue and the overflow error are
        # written the cycle after the command's last word, from flip-flops only (timing: the
        # bus decoder is far from the queue).
        staged = [Signal(32, name=f"command_staged_{index}") for index in range(COMMAND_WORDS)]
        push = Signal()
        with m.If(bus.write):
            with m.Switch(bus.address):
                for index in range(COMMAND_WORDS):
                    with m.Case(index):
                        m.d.sync += staged[index].eq(bus.write_data)
        m.d.sync += push.eq(bus.write & (bus.address == COMMAND_WORDS - 1))
        # `pushed` counts the commands the queue took, so `completed == pushed` means idle
        # (an overflowing command is dropped: it is never completed).
        pushed = Signal(32)
        m.d.comb += [queue.w_data.eq(Cat(*staged)[:COMMAND_LAYOUT.size]), queue.w_en.eq(push)]
        with m.If(push & queue.w_rdy):
            m.d.sync += pushed.eq(pushed + 1)

        # Status ----------------------------------------------------------------------------------
        completed = Signal(32)
        error_code = Signal(ErrorCode)
        error_index = Signal(32)
        error_opcode = Signal(4)
        new_error = Signal(ErrorCode)
        new_error_index = Signal(32)
        new_error_opcode = Signal(4)

        # Fetch and validate ----------------------------------------------------------------------
        # The command and what is decoded from it (opcode flags, the compute unit's view) are
        # registered together when it leaves the queue, so the checks and the dispatch start
        # from flip-flops (timing: the opcode decode and the GEMM/CONV selection were in front
        # of the dispatch handshake).
        command = Signal(COMMAND_LAYOUT)
        index = Signal(32)
        fetched = Signal(32)
        head = COMMAND_LAYOUT(queue.r_data)
        head_opcode = head.opcode.as_value()
        opcode = command.opcode.as_value()
        is_gemm, is_conv, is_store, is_binary, is_fence = decoded = [
            Signal(name=f"is_{name}") for name in ("gemm", "conv", "store", "binary", "fence")]
        decode = [flag.eq(head_opcode == code.value) for flag, code in zip(decoded, (
            Opcode.GEMM, Opcode.CONV, Opcode.REQUANT_STORE, Opcode.BINARY, Opcode.FENCE))]

        layer = Signal(conv_command_layout())      # GEMM and CONV, as the compute unit sees them
        head_layer = Signal(conv_command_layout())
        gemm, conv = head.args.gemm, head.args.conv
        with m.If(head_opcode == Opcode.GEMM.value):
            m.d.comb += [head_layer[name].eq(value) for name, value in (
                ("a_base", gemm.a_base), ("w_base", gemm.w_base), ("acc_base", gemm.acc_base),
                ("accumulate", gemm.accumulate), ("in_h", gemm.m), ("in_w", 1),
                ("cin_blocks", gemm.k_blocks), ("cin_last", gemm.k_last), ("kh", 1), ("kw", 1),
                ("stride", 1), ("out_w", 1), ("ho_count", gemm.m), ("n_blocks", gemm.n_blocks),
                ("n_last", gemm.n_last))]
        with m.Else():
            for name in ("a_base", "w_base", "acc_base", "accumulate", "in_h", "in_w",
                         "cin_blocks", "cin_last", "kh", "kw", "stride", "pad_top", "pad_left",
                         "zero_point", "out_w", "ho_start", "ho_count", "n_blocks", "n_last"):
                m.d.comb += head_layer[name].eq(conv[name])
        store_args = command.args.store
        binary_args = command.args.binary

        # Products of the command's sizes, on one shift-and-add multiplier (no DSP block) while
        # the command is held: only those of its opcode, 3 + ceil(bits(b)/2) cycles each. Each
        # is exact (as wide as its operands together), so a huge command cannot wrap into range.
        compute_command = is_gemm | is_conv
        width_log2 = self.binary_width.bit_length() - 1
        # Registered at fetch with the command, so no operand of the products is an adder.
        binary_folds = Signal(len(binary_args.k) + 1 - width_log2)
        pool = store_args.pool
        steps = []

        def product(name, a, b, condition):
            target = Signal(len(a) + len(b), name=name)
            steps.append((target, a, b, condition))
            return target

        image = product("image", layer.in_h, layer.in_w, compute_command)
        a_rows = product("a_rows", image, layer.cin_blocks, compute_command)
        kernel = product("kernel", layer.kh, layer.kw, compute_command)
        kernel_chunks = product("kernel_chunks", kernel, layer.cin_blocks, compute_command)
        w_tiles = product("w_tiles", kernel_chunks, layer.n_blocks, compute_command)
        pixels = product("pixels", layer.ho_count, layer.out_w, compute_command)
        acc_rows = product("acc_rows", pixels, layer.n_blocks, compute_command)
        store_pixels = product("store_pixels", store_args.height, store_args.width, is_store)
        store_acc_rows = product("store_acc_rows", store_pixels, store_args.n_blocks, is_store)
        pooled = product("pooled", Mux(pool, store_args.height >> 1, store_args.height),
                         Mux(pool, store_args.width >> 1, store_args.width), is_store)
        pooled_rows = product("pooled_rows", pooled, store_args.out_stride, is_store)
        binary_a_rows = product("binary_a_rows", binary_args.vectors, binary_folds, is_binary)
        binary_out_rows = product("binary_out_rows", binary_args.vectors,
                                  binary_args.neuron_folds, is_binary)
        binary_w_rows = product("binary_w_rows", binary_folds, binary_args.neuron_folds,
                                is_binary)
        binary_sp_rows = product("binary_sp_rows", binary_args.vectors, binary_args.out_stride,
                                 is_binary)
        m.submodules.multiplier = multiplier = SequentialMultiplier(
            a_width=max(len(a) for _, a, _, _ in steps),
            b_width=max(len(b) for _, _, b, _ in steps),
            product_width=max(len(target) for target, _, _, _ in steps), bits_per_cycle=2)
        fetch = Signal()
        _, products_done = sequence_products(m, multiplier, steps, start=fetch)
        w_rows = multiply_by_constant(w_tiles, rows)

        # The sums the range checks compare are registered in the SUM state, so no check is an
        # add and a compare in one cycle (each exact, at the natural width of its terms' sum).
        sums = []

        def registered_sum(name, *terms):
            value = sum(terms[1:], terms[0])
            target = Signal(value.shape(), name=name)
            sums.append(target.eq(value))
            return target

        a_end = registered_sum("a_end", layer.a_base, a_rows)
        w_end = registered_sum("w_end", layer.w_base, w_rows)
        acc_end = registered_sum("acc_end", layer.acc_base[:half_bits], acc_rows)
        store_acc_end = registered_sum("store_acc_end", store_args.acc_base[:half_bits],
                                       store_acc_rows)
        param_end = registered_sum("param_end", store_args.param_base,
                                   multiply_by_constant(store_args.n_blocks, cols))
        # The last row written, out_base + (pooled - 1) * out_stride + n_blocks - 1, is past the
        # scratchpad when out_base + pooled * out_stride + n_blocks > rows + out_stride (no
        # subtraction in front of the product: pooled may be 0, which BAD_SHAPE refuses first).
        out_end = registered_sum("out_end", store_args.out_base, store_args.n_blocks,
                                 pooled_rows)
        out_limit = registered_sum("out_limit", store_args.out_stride, self.scratchpad_rows)
        binary_a_end = registered_sum("binary_a_end", binary_args.a_base, binary_a_rows)
        binary_result_end = registered_sum("binary_result_end", binary_args.result_base,
                                           binary_out_rows)
        binary_sp_end = registered_sum("binary_sp_end", binary_args.out_base, binary_sp_rows)
        binary_w_end = registered_sum("binary_w_end", binary_args.w_base, binary_w_rows)
        binary_t_end = registered_sum("binary_t_end", binary_args.t_base,
                                      binary_args.neuron_folds)
        # ceil(N / width) scratchpad rows per vector: N + width - 1, its low bits dropped.
        binary_n_rounded = registered_sum(
            "binary_n_rounded", multiply_by_constant(binary_args.neuron_folds - 1,
                                                     self.binary_lanes),
            binary_args.last_lanes, self.binary_width - 1)
        binary_out_beats = binary_n_rounded[width_log2:]

        checks = []         # (guard, terms, code): the first whose guard and a term hold

        def fail(guard, code, *terms):
            checks.append((guard, terms, code))

        fail(~(is_gemm | is_conv | is_store | is_binary | is_fence), ErrorCode.UNKNOWN_OPCODE,
             Const(1))
        fail(compute_command, ErrorCode.BAD_SHAPE,
             layer.in_h == 0, layer.in_w == 0, layer.cin_blocks == 0, layer.kh == 0,
             layer.kw == 0, layer.stride == 0, layer.out_w == 0, layer.ho_count == 0,
             layer.n_blocks == 0, layer.cin_last == 0, layer.cin_last > rows,
             layer.n_last == 0, layer.n_last > cols)
        fail(compute_command, ErrorCode.SCRATCHPAD_RANGE,
             a_end > self.scratchpad_rows, w_end > self.scratchpad_rows)
        fail(compute_command, ErrorCode.ACCUMULATOR_RANGE,
             layer.acc_base >= self.accumulator_rows, acc_end > half_rows)
        fail(is_store, ErrorCode.BAD_SHAPE,
             store_args.height == 0, store_args.width == 0, store_args.n_blocks == 0,
             store_args.act_min.as_signed() > store_args.act_max.as_signed(),
             store_args.pool & ((store_args.height < 2) | (store_args.width < 2) |
                                (store_args.width > self.max_pool_width)))
        fail(is_store, ErrorCode.ACCUMULATOR_RANGE,
             store_args.acc_base >= self.accumulator_rows, store_acc_end > half_rows)
        fail(is_store, ErrorCode.PARAMETER_RANGE, param_end > self.parameter_rows)
        fail(is_store, ErrorCode.SCRATCHPAD_RANGE, out_end > out_limit)
        to_results, to_scratchpad = binary_args.to_results, binary_args.to_scratchpad
        fail(is_binary, ErrorCode.BAD_SHAPE,
             binary_args.k == 0, binary_args.k > self.binary_max_k, binary_args.vectors == 0,
             binary_args.neuron_folds == 0,
             binary_args.neuron_folds > self.binary_max_neuron_folds,
             binary_args.last_lanes == 0, binary_args.last_lanes > self.binary_lanes,
             ~to_results & ~to_scratchpad,
             to_scratchpad & (binary_args.out_stride < binary_out_beats))
        fail(is_binary, ErrorCode.SCRATCHPAD_RANGE, binary_a_end > self.scratchpad_rows,
             to_scratchpad & (binary_sp_end > self.scratchpad_rows))
        fail(is_binary, ErrorCode.RESULT_RANGE,
             to_results & (binary_result_end > self.binary_result_rows))
        fail(is_binary, ErrorCode.BINARY_WEIGHT_RANGE,
             binary_w_end > self.binary_weight_depth, binary_t_end > self.binary_threshold_depth)
        # Every compare is registered in the CHECK state, each check's guard and terms are
        # combined into `failed` in COMBINE and prioritized from flip-flops in DECIDE (the first
        # failure's code is registered there and kept in REJECT): neither the range arithmetic,
        # the OR of a check's terms, the priority chain nor the error registers meet another.
        terms = [Signal(len(check_terms), name=f"check_{position}_terms")
                 for position, (_, check_terms, _) in enumerate(checks)]
        failed = Signal(len(checks))
        rejected_error = Signal(ErrorCode)
        for position, (_, _, code) in enumerate(checks):
            with (m.If if position == 0 else m.Elif)(failed[position]):
                m.d.sync += rejected_error.eq(code)

        # Scoreboard and unit state ---------------------------------------------------------------
        # A GEMM/CONV is tracked per accumulator half, from its offer until its last row has
        # landed (`computing`; `finishing` once that row is in the half's pipeline), so the next
        # one, on the other half, is offered as soon as the unit takes it (when the previous
        # one's last beat has left the generator) and its set-up overlaps that one's drain.
        computing = Signal(2)
        finishing = Signal(2)
        storing = Signal(2)
        store_half = Signal()
        store_active = Signal()
        binary_active = Signal()
        compute_done = Signal(2)
        for half, (last_row_taken, idle) in enumerate(compute_landed):
            m.d.comb += compute_done[half].eq(finishing[half] & idle)
            with m.If(last_row_taken):
                m.d.sync += finishing[half].eq(1)
        store_done = store_active & ~store.busy
        binary_done = binary_active & ~binary.busy
        layer_half = layer.acc_base[half_bits]
        store_args_half = store_args.acc_base[half_bits]

        # A unit's command ready, registered. Only an accepted command lowers a unit's ready, so
        # the registered value, cleared by an offer (which is always taken), never claims a
        # ready the unit does not have; it lags a rising ready by one cycle.
        compute_ready, store_ready, binary_ready = (
            Signal(name=f"{name}_ready") for name in ("compute", "store", "binary"))
        for ready, unit in ((compute_ready, compute), (store_ready, store),
                            (binary_ready, binary)):
            m.d.sync += ready.eq(unit.command.ready & ~unit.command.valid)

        offer_conditions = {
            "store": is_store & store_ready & ~store_active &
                     ~computing.bit_select(store_args_half, 1),
            "binary": is_binary & binary_ready & ~binary_active & ~computing.any(),
            "fence": is_fence & ~computing.any() & ~store_active & ~binary_active,
            "compute": compute_command & compute_ready & ~computing.bit_select(layer_half, 1) &
                       ~binary_active & ~storing.bit_select(layer_half, 1),
        }
        offers = {name: Signal(name=f"offer_{name}") for name in offer_conditions}
        skip = Signal()
        fence_done = offers["fence"]
        waiting = Signal()
        dispatched = Signal()
        dispatcher_idle = Signal()

        m.d.comb += [
            compute.command.payload.eq(layer),
            store.command.payload.acc_base.eq(store_args.acc_base),
            binary.command.payload.eq(binary_args),
        ]
        for name in ("height", "width", "n_blocks", "param_base", "out_base", "out_stride",
                     "rounding", "zero_point", "act_min", "act_max", "pool"):
            m.d.comb += store.command.payload[name].eq(store_args[name])

        with m.FSM():
            with m.State("FETCH"):
                m.d.comb += dispatcher_idle.eq(~queue.r_rdy)
                m.d.comb += queue.r_en.eq(1)
                with m.If(queue.r_rdy):
                    m.d.comb += fetch.eq(1)
                    m.d.sync += [command.eq(queue.r_data), layer.eq(head_layer), *decode,
                                 index.eq(fetched), fetched.eq(fetched + 1),
                                 binary_folds.eq((head.args.binary.k + (self.binary_width - 1))
                                                 >> width_log2)]
                    m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                with m.If(products_done):
                    m.next = "SUM"
            with m.State("SUM"):
                m.d.sync += sums
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [registered.eq(Cat(*check_terms))
                             for registered, (_, check_terms, _) in zip(terms, checks)]
                m.next = "COMBINE"
            with m.State("COMBINE"):
                m.d.sync += failed.eq(Cat(guard & registered.any()
                                          for registered, (guard, _, _) in zip(terms, checks)))
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(failed.any()):
                    m.next = "REJECT"
                with m.Else():
                    m.next = "DISPATCH"
            with m.State("REJECT"):
                # The first failed check's code was registered in DECIDE (timing: the priority
                # chain over `failed` and the error registers are a cycle apart).
                m.d.comb += [skip.eq(1), new_error.eq(rejected_error), new_error_index.eq(index),
                             new_error_opcode.eq(opcode)]
                m.next = "FETCH"
            with m.State("DISPATCH"):
                # A state of its own, so the handshakes with the units start from flip-flops
                # and never meet the error checks. A command is offered only to a unit whose
                # registered ready is high, so the offer is the handshake. The offer is
                # registered too (a unit's valid is a flip-flop): everything it waits for only
                # turns in its favour until it is taken (a ready or a scoreboard entry falls
                # only by a dispatch), so what held when it was decided still holds.
                m.d.comb += waiting.eq(1)
                with m.If(Cat(*offers.values()).any()):
                    m.d.comb += dispatched.eq(1)
                    m.d.sync += [offer.eq(0) for offer in offers.values()]
                    m.next = "FETCH"
                with m.Else():
                    m.d.sync += [offers[name].eq(condition)
                                 for name, condition in offer_conditions.items()]

        # An offer is taken in its cycle; the unit's scoreboard entry is set with it.
        m.d.comb += compute.command.valid.eq(offers["compute"])
        with m.If(offers["compute"]):
            m.d.sync += computing.bit_select(layer_half, 1).eq(1)
        m.d.comb += [store.command.valid.eq(offers["store"]),
                     binary.command.valid.eq(offers["binary"])]
        with m.If(offers["store"]):
            m.d.sync += [store_active.eq(1), store_half.eq(store_args_half),
                         storing.bit_select(store_args_half, 1).eq(1)]
        with m.If(offers["binary"]):
            m.d.sync += binary_active.eq(1)

        # Completion (a unit's busy falls, a half's GEMM/CONV lands) frees its scoreboard entry.
        # A unit or half that finishes in the cycle it is dispatched again cannot happen:
        # dispatch waits for its entry to clear.
        for half in range(2):
            with m.If(compute_done[half]):
                m.d.sync += [computing[half].eq(0), finishing[half].eq(0)]
        with m.If(store_done):
            m.d.sync += [store_active.eq(0), storing.bit_select(store_half, 1).eq(0)]
        with m.If(binary_done):
            m.d.sync += binary_active.eq(0)
        # Registered before they are added up (timing: a unit's busy comes from far away).
        retired = Signal(6)
        m.d.sync += retired.eq(Cat(compute_done, store_done, binary_done, skip, fence_done))
        retiring = Signal(3)
        m.d.comb += retiring.eq(sum(retired))

        # A failed check is registered before it is kept (timing: the decision logic reaches
        # only these flip-flops, not the enables of the error registers); it is kept in the
        # cycle `completed` counts the failed command. An overflow (from flip-flops) is kept at
        # once, so a host that reads the error right after its push sees it.
        reported_error = Signal(ErrorCode)
        reported_index = Signal(32)
        reported_opcode = Signal(4)
        m.d.sync += [reported_error.eq(new_error), reported_index.eq(new_error_index),
                     reported_opcode.eq(new_error_opcode)]
        kept_error = Signal(ErrorCode)
        kept_index = Signal(32)
        kept_opcode = Signal(4)
        overflow = push & ~queue.w_rdy
        with m.If(overflow):
            m.d.comb += [kept_error.eq(ErrorCode.QUEUE_OVERFLOW), kept_index.eq(pushed),
                         kept_opcode.eq(staged[0][:4])]
        with m.Else():
            m.d.comb += [kept_error.eq(reported_error), kept_index.eq(reported_index),
                         kept_opcode.eq(reported_opcode)]
        # A clear takes the error of its own cycle, if any, as the new first one: an error that
        # arrives while the host clears the last one is kept, never lost.
        clear_error = bus.write & (bus.address == REGISTERS["error_code"])
        with m.If(clear_error | (error_code == ErrorCode.NONE)):
            m.d.sync += error_code.eq(kept_error)
            with m.If(kept_error != ErrorCode.NONE):
                m.d.sync += [error_index.eq(kept_index), error_opcode.eq(kept_opcode)]

        # Performance counters --------------------------------------------------------------------
        busy_bits = Cat(compute_busy, store.busy, binary.busy, ~dispatcher_idle)
        events = {
            "cycles": 1,
            "active_cycles": busy_bits.any(),
            "compute_busy": compute_busy,
            "compute_stall": compute_busy & ~compute.issued,
            "store_busy": store.busy,
            "store_stall": store.busy & ~store.drain_en & ~store.sp_en,
            "binary_busy": binary.busy,
            "binary_stall": binary.busy & ~binary.beats,
            "dispatch_stall": waiting & ~dispatched,
            "macs": compute.macs,
            "binary_ops": binary.ops,
            "commands_retired": retiring,
        }
        # Registered: the clear reaches all 64-bit counters from one flip-flop.
        counter_clear = Signal()
        m.d.sync += counter_clear.eq(bus.write & (bus.address == REGISTERS["counter_clear"]))
        counters, registered_events = {}, {}
        for name in COUNTERS:
            counter = Signal(64, name=f"counter_{name}")
            event = Signal(Value.cast(events[name]).shape(), name=f"event_{name}")
            counters[name], registered_events[name] = counter, event
            m.d.sync += event.eq(events[name])
            with m.If(counter_clear):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + event)
        m.d.sync += completed.eq(completed + registered_events["commands_retired"])

        # Register reads (the bus target latency: address, then value registered) ---------------
        readable = {
            REGISTERS["queue_free"]: self.queue_depth - queue.level,
            REGISTERS["completed"]: completed,
            REGISTERS["error_code"]: error_code,
            REGISTERS["error_index"]: error_index,
            REGISTERS["error_opcode"]: error_opcode,
            REGISTERS["busy"]: busy_bits,
            REGISTERS["pushed"]: pushed,
        }
        for position, name in enumerate(COUNTERS):
            readable[COUNTERS_BASE + 2 * position] = counters[name][:32]
            readable[COUNTERS_BASE + 2 * position + 1] = counters[name][32:]
        register_read_data(m, bus, readable)


_CONFIG_PARAMETERS = ("rows", "cols", "dataflow", "multiplier", "dsp_pes", "requant_lanes",
                      "scratchpad_rows", "accumulator_rows", "binary_width", "binary_lanes",
                      "binary_max_k", "binary_max_n", "parameter_rows", "binary_result_rows",
                      "queue_depth", "max_pool_width")


def core_from_config(config):
    """A `Core` with the array shape, buffer, engine and queue sizes of an `AcceleratorConfig`."""
    return Core(**{name: getattr(config, name) for name in _CONFIG_PARAMETERS})


def geometry_from_config(config):
    """The `CoreGeometry` of `core_from_config(config)`, without the hardware."""
    return CoreGeometry(**{name: getattr(config, name) for name in _CONFIG_PARAMETERS})
