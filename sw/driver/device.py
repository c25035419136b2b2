"""`Accelerator`: a connected ecpnn device -- its config, registers and memories, and the layer API.

::

    with Accelerator.open("uart:///dev/ttyUSB0?baud=3000000") as accelerator:
        print(accelerator.config)                   # read from its CONFIG_*, CORE_* registers
        y = accelerator.matmul(a, w, bias, multiplier=m0, shift=shift)      # int8 [M, N]
        scores = accelerator.run(model, x)          # a whole sw.model.QuantizedModel
        network = accelerator.load(graph)           # weights written once (sw.compiler)
        y = network(x)                              # only inputs and outputs cross the link
        print(accelerator.perf_counters())          # the core's hardware counters

On connect the driver reads the identification registers and refuses (`DeviceMismatch`) a device
whose magic or protocol version it does not know, so it never carries constants that can
disagree with the bitstream: the config, the max payload, every window's base and the core's
sizes all come from the device; the buffer geometry (row strides, lanes) is the one
`hw.core.geometry_from_config` gives for them, the command encoding is `hw.core.isa`, the tensor
layouts `sw.compiler.layout`.

How a network runs: `load` compiles a graph (`sw.compiler.compile_graph`: one lowering per node
kind, weights resident in the scratchpad's upper bank and the parameter memory, activations in
its lower bank by liveness, host steps where the device has no operation) or takes a compiled
`sw.compiler.Program`, writes the resident weights and parameters once and returns a
`LoadedProgram`; calling that with a batch writes only the inputs, pushes the commands, polls
until ``completed`` equals ``pushed`` and reads only the outputs back (`sw.driver.loaded`).
`matmul`, `matmul_int32` (a `sw.ops.DenseInt32`: the raw accumulators), `conv2d`,
`binary_dense` and `run` are one-node (or chain) programs. What cannot be split to fit (one
output block's weights, one sample's activations) is rejected with a `sw.compiler.DoesNotFit`
(a `ValueError`) naming the node, what it needs and what the device has. A command the core refuses raises
`CommandError` naming the command and the error code.

Every input is checked (shape, dtype, range) before anything is sent: `TypeError` for a wrong
dtype, `ValueError` for a wrong shape or value.

The core's state is read from the device whenever the driver cannot know it: on open, after any
error (of the link, a refused command, a wait that timed out) and after a register write it did
not make itself (`write_registers`), the driver reads ``pushed``, ``completed``, ``queue_free``
and ``busy`` and waits until the core has finished every command it took (``completed ==
pushed``), so a layer left running by a host program that was killed, or by a call that failed
on the link, can neither overwrite the new layer's inputs nor be taken for its commands; an
error such a layer left is cleared. In between the driver knows the state, because it made every
change itself: after a wait that saw ``completed == pushed`` and no error the queue is empty, and
each command it writes adds one to ``pushed``. So over a slow line a layer costs no status read
before its commands, and its wait polls only ``completed`` and ``error_code`` against the pushed
count it knows (the whole status is read when an error shows). Commands are numbered from the
device's ``pushed``, and a command whose write raised a link error is looked up there (the reply
may be lost with the command taken). Every wait -- for the core to finish, for a queue slot -- is
bounded by ``command_timeout`` seconds of the link's clock (simulated time on ``sim://``) and
raises `CoreTimeout` with the status it reads then. One host drives a device: another host's
commands are seen only on open or after an error. There is no core reset: every command the
core accepts finishes in bounded time (invalid ones are skipped at dispatch), so waiting is
enough, and a reset would add a fan-out to every flip-flop of the core for no case the driver
can reach.
"""

import numpy as np

from hw.core import geometry_from_config
from hw.core.isa import COMMAND_REGISTER, COUNTERS, COUNTERS_BASE, REGISTERS, ErrorCode, decode
from hw.soc import protocol
from sim import reference
from sw.compiler import MAX_BATCH, DeviceGeometry, Program, compile_graph
from sw.compiler.layout import rows_to_words, words_to_rows
from sw.driver.errors import (CommandError, CoreTimeout, DeviceError, DeviceMismatch, LinkError,
                              ProtocolError)
from sw.driver.link import open_link
from sw.driver.loaded import LoadedProgram
from sw.driver.transport import Closable
from sw.graph import GraphBuilder
from sw.ops import BinaryDense, Conv2D, Dense, DenseInt32

__all__ = ["Accelerator"]

_WORD = protocol.WORD_BYTES
_LINK_REGISTERS = protocol.ID_REGISTERS[:protocol.ID_REGISTERS.index("BYTES_DISCARDED") + 1]
# The core's status registers, read as one block (counter_clear, write-only, reads 0).
_STATUS_REGISTERS = ("queue_free", "completed", "error_code", "error_index", "error_opcode",
                     "busy", "counter_clear", "pushed")
assert [REGISTERS[name] for name in _STATUS_REGISTERS] == list(
    range(REGISTERS["queue_free"], REGISTERS["queue_free"] + len(_STATUS_REGISTERS)))
# What a wait for the core polls, as one read.
assert REGISTERS["error_code"] == REGISTERS["completed"] + 1
DEFAULT_COMMAND_TIMEOUT = 10.0      # seconds for the core to finish a layer (or free a slot)
_WORD_MASK = 0xFFFF_FFFF


# Input checking ----------------------------------------------------------------------------------

def _int_array(name, value, dtype, ndim):
    """`value` as an array of `dtype`; TypeError for a non-integer or wrong dtype, ValueError for
    a wrong rank or a value outside the dtype."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array ({np.dtype(dtype).name}), "
                        f"not dtype {array.dtype}")
    if array.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimension(s), not shape {array.shape}")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{name} must hold {np.dtype(dtype).name} values in "
                         f"[{info.min}, {info.max}], found [{array.min()}, {array.max()}]")
    if 0 in array.shape:
        raise ValueError(f"{name} must not be empty, not shape {array.shape}")
    return array.astype(dtype)


def _per_channel(name, value, channels, low, high):
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or an integer array, not dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(channels, array)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one per output channel), "
                         f"not {array.shape}")
    if array.min() < low or array.max() > high:
        raise ValueError(f"{name} must hold values in [{low}, {high}], "
                         f"found [{array.min()}, {array.max()}]")
    return array.astype(np.int64)


def _int_in(name, value, low, high):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], not {value}")
    return int(value)


def _requant(channels, bias, multiplier, shift, output_zero_point, act_min, act_max, rounding):
    """Checked requant parameters of a layer with `channels` outputs."""
    bias = (np.zeros(channels, np.int64) if bias is None else
            _per_channel("bias", bias, channels, -2**31, 2**31 - 1))
    multiplier = _per_channel("multiplier", multiplier, channels, 0, 2**31 - 1)
    if np.any((multiplier != 0) & (multiplier < 2**30)):
        raise ValueError("multiplier must be M0 in [2^30, 2^31) (or 0) per channel, as "
                         "sim.reference.quantize_multiplier gives")
    shift = _per_channel("shift", shift, channels, -31, 0)
    if rounding not in reference.ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {reference.ROUNDING_MODES}, not {rounding!r}")
    output_zero_point = _int_in("output_zero_point", output_zero_point, -128, 127)
    act_min = _int_in("act_min", act_min, -128, 127)
    act_max = _int_in("act_max", act_max, act_min, 127)
    return dict(bias=bias, multiplier=multiplier, shift=shift, rounding=rounding,
                output_zero_point=output_zero_point, act_min=act_min, act_max=act_max)


def _stride(value):
    """One stride for both axes (an int or an equal pair): the core's CONV takes one."""
    pair = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value, value)
    stride = _int_in("stride", pair[0], 1, 7)
    if _int_in("stride", pair[1], 1, 7) != stride:
        raise ValueError(f"conv2d: the core takes one stride for both axes, not {value!r}")
    return stride


def _padding(value):
    """(top, bottom, left, right) from an int, (ph, pw), ((top, bottom), (left, right)) or a
    4-tuple, as `sim.reference.conv2d` takes it."""
    if isinstance(value, (tuple, list)) and len(value) == 4:
        pads = tuple(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in value):
        pads = (*value[0], *value[1])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pads = (value[0], value[0], value[1], value[1])
    else:
        pads = (value,) * 4
    return tuple(_int_in("padding", pad, 0, 15) for pad in pads)


def _blocks(size, block):
    return -(-size // block)


class Accelerator(Closable):
    """A connected device. Use `Accelerator.open(url)` (also a context manager).

    Attributes read from the device: `config` (`hw.config.AcceleratorConfig`, the core's sizes
    `protocol.CORE_SIZES` included), `max_payload`, `version`, `windows` (window name -> byte
    base), and `core` (the `hw.core.CoreGeometry` of that config: buffer geometry only).
    `command_timeout`: seconds (of the link's clock) any wait for the core may take.
    """

    _generation = 0         # bumped by every load: earlier loaded programs are stale

    def __init__(self, link, *, url="<link>", command_timeout=DEFAULT_COMMAND_TIMEOUT):
        if not isinstance(command_timeout, (int, float)) or not command_timeout > 0:
            raise ValueError(f"command_timeout must be a positive number of seconds, "
                             f"not {command_timeout!r}")
        self.link = link
        self.url = url
        self.command_timeout = command_timeout
        identity = dict(zip(_LINK_REGISTERS, link.read_registers(protocol.CSR_BASE,
                                                                 len(_LINK_REGISTERS))))
        if identity["MAGIC"] != protocol.MAGIC:
            raise DeviceMismatch(
                f"{url} is not an ecpnn accelerator: MAGIC reads {identity['MAGIC']:#010x}, "
                f"expected {protocol.MAGIC:#010x}. Is the right bitstream loaded and the right "
                f"port selected?")
        major, minor = identity["VERSION"] >> 16, identity["VERSION"] & 0xFFFF
        if major != protocol.VERSION_MAJOR or minor < protocol.VERSION_MINOR:
            raise DeviceMismatch(
                f"{url} speaks protocol {major}.{minor}, this driver needs "
                f"{protocol.VERSION_MAJOR}.{protocol.VERSION_MINOR} or a later minor version: "
                f"use the driver that matches the bitstream, or rebuild the bitstream from this "
                f"checkout (python -m hw.build)")
        self.version = (major, minor)
        rest = protocol.ID_REGISTERS[len(_LINK_REGISTERS):]
        identity.update(zip(rest, link.read_registers(
            protocol.register_address(rest[0]), len(rest))))
        try:
            self.config = protocol.decode_config(identity)
            self.core = geometry_from_config(self.config)
        except (ValueError, TypeError) as error:
            raise DeviceMismatch(f"{url} reports a config this driver cannot read: {error}") \
                from None
        self.max_payload = identity["MAX_PAYLOAD"]
        self.scratchpad_base = identity["SCRATCHPAD_BASE"]
        self.scratchpad_bytes = identity["SCRATCHPAD_BYTES"]
        self.windows = {"core_control": identity["CORE_CONTROL_BASE"],
                        **{name: identity[f"{name.upper()}_BASE"]
                           for name in protocol.CORE_MEMORY_WINDOWS}}
        self._commands = {}         # command index (the device's pushed) -> words, this layer
        self._forget_core_state()
        self._drain("open")

    @classmethod
    def open(cls, url, **options):
        """Connect to `url`; `options` as for the constructor (`command_timeout`)."""
        link = open_link(url)
        try:
            return cls(link, url=url, **options)
        except BaseException:
            link.close()
            raise

    def _release(self):
        self.link.close()

    # Link-level access ---------------------------------------------------------------------------

    def read_register(self, name):
        return self.read_registers(protocol.register_address(name), 1)[0]

    def write_register(self, name, value):
        self.write_registers(protocol.register_address(name), [value])

    def read_registers(self, address, count):
        return self._on_link(self.link.read_registers, address, count)

    def write_registers(self, address, values):
        """Write registers; a write the driver does not make itself may change the core (a
        command pushed, an error cleared), so the core's state is read again before it is
        relied on."""
        self._forget_core_state()
        self._on_link(self.link.write_registers, address, values)

    def bulk_read(self, address, length):
        return self._on_link(self.link.bulk_read, address, length)

    def bulk_write(self, address, data):
        self._on_link(self.link.bulk_write, address, data)

    def _on_link(self, operation, *args):
        """`operation(*args)` of the link; after any error the core's state is read again."""
        try:
            return operation(*args)
        except BaseException:
            self._forget_core_state()
            raise

    def link_status(self):
        """The live link registers (STATUS, LAST_ERROR as a `Status`, frame and byte counters)."""
        names = _LINK_REGISTERS[_LINK_REGISTERS.index("STATUS"):]
        values = dict(zip(names, self.read_registers(protocol.register_address("STATUS"),
                                                     len(names))))
        values["LAST_ERROR"] = protocol.Status(values["LAST_ERROR"])
        return values

    def clear_errors(self):
        self.write_register("CONTROL", protocol.CONTROL_CLEAR_ERRORS)

    # Core registers and counters -----------------------------------------------------------------

    def _core_address(self, word):
        return self.windows["core_control"] + _WORD * word

    def _write_core_register(self, name, value):
        """A write of the driver's own (an error or counter clear): the core's state stays
        known."""
        self._on_link(self.link.write_registers, self._core_address(REGISTERS[name]), [value])

    def _core_status(self):
        values = self.read_registers(self._core_address(REGISTERS["queue_free"]),
                                     len(_STATUS_REGISTERS))
        status = dict(zip(_STATUS_REGISTERS, values))
        del status["counter_clear"]
        return status

    def core_status(self):
        """The core's queue and error registers (`hw.core.isa.REGISTERS`), error_code as an
        `ErrorCode`."""
        status = self._core_status()
        status["error_code"] = ErrorCode(status["error_code"])
        return status

    def perf_counters(self):
        """The core's performance counters (`hw.core.isa.COUNTERS`: cycles, active_cycles,
        busy/stall cycles per unit, macs, binary_ops, commands_retired), 64-bit each."""
        words = self.read_registers(self._core_address(COUNTERS_BASE), 2 * len(COUNTERS))
        return {name: words[2 * index] | words[2 * index + 1] << 32
                for index, name in enumerate(COUNTERS)}

    def clear_perf_counters(self):
        self._write_core_register("counter_clear", 1)

    # Commands ------------------------------------------------------------------------------------

    def _completion(self, pushed):
        """What a wait for known commands polls: ``completed`` and ``error_code``, read in one
        request, beside `pushed`, the device's pushed count the driver knows."""
        completed, error_code = self.read_registers(self._core_address(REGISTERS["completed"]), 2)
        return {"completed": completed, "error_code": error_code, "pushed": pushed}

    def _wait_for(self, condition, what, poll=None):
        """Poll the core's status (`_core_status`, or `poll()`) until `condition(status)`;
        `CoreTimeout` after `command_timeout` seconds of the link's clock, naming the last
        status seen."""
        start = self.link.now()
        while True:
            status = (poll or self._core_status)()
            if condition(status):
                return status
            waited = self.link.now() - start
            if waited > self.command_timeout:
                self._forget_core_state()
                listed = ", ".join(f"{name} {value}" for name, value in status.items())
                if "busy" in status:
                    listed += " (busy bits: compute, store, binary, dispatcher)"
                raise CoreTimeout(f"{what}: the core did not get there in {waited:.3g} s "
                                  f"(command_timeout {self.command_timeout:g} s); it reads "
                                  f"{listed}", state=status)

    def _forget_core_state(self):
        """Read the core's state before relying on it again (after an error, or a register
        write the driver did not make)."""
        self._queue, self._idle = None, False

    def _know_idle(self, pushed):
        """The core has retired every command (``completed == pushed``) with no error left:
        its queue is empty and the next command is number `pushed`."""
        self._commands = {}
        self._queue, self._idle = (pushed, self.config.queue_depth), True

    def _drain(self, what):
        """Make sure the core has finished every command it took (``completed == pushed``) and
        no error an earlier layer left is pending: the core is ours, idle and clean. Read from
        the device unless the driver saw it so and has not touched it since."""
        if self._idle:
            return
        status = self._wait_for(lambda status: status["completed"] == status["pushed"],
                                f"{what}: waiting for earlier commands to finish")
        if status["error_code"]:
            self._write_core_register("error_code", 0)
        self._know_idle(status["pushed"])

    def _push(self, commands):
        """Write `commands` into the core's queue, numbered from the core's ``pushed`` count
        (read unless known), waiting for a free slot when the queue is full."""
        if self._queue is None:
            status = self._core_status()
            self._queue = (status["pushed"], status["queue_free"])
        (index, free), self._idle = self._queue, False
        for words in commands:
            if free == 0:
                free = self._wait_for(lambda status: status["queue_free"] > 0,
                                      f"pushing command #{index}")["queue_free"]
            self._commands[index] = words
            self._queue = None          # unknown until the write is answered
            self._write_command(index, words)
            index, free = (index + 1) & _WORD_MASK, free - 1
            self._queue = (index, free)

    def _write_command(self, index, words):
        """Write command `index` (the device's pushed count before it) into the queue. If the
        link fails on the way the command may still have gone in with its reply lost: the
        core's ``pushed`` says, and a command that did not go in is written once more."""
        address = self._core_address(COMMAND_REGISTER)
        try:
            self._on_link(self.link.write_registers, address, words)
            return
        except DeviceError:
            raise                       # refused: it did not go in
        except LinkError as error:
            failure = error
        try:
            pushed = self._core_status()["pushed"]
        except LinkError:
            raise failure from None     # the next layer's drain will sort the core out
        if pushed == (index + 1) & _WORD_MASK:
            return
        if pushed != index:
            raise ProtocolError(f"Pushing command #{index}: the core's pushed count moved to "
                                f"{pushed} (another host?)") from failure
        self._on_link(self.link.write_registers, address, words)

    def _finish(self):
        """Wait until every pushed command has retired; raise `CommandError` for a refused one.

        With the pushed count known (the driver pushed every command since it last read it)
        the wait polls only ``completed`` and ``error_code``; an error, or an unknown count,
        waits on the whole status for ``completed == pushed``."""
        what = "waiting for the layer's commands"
        if self._queue is not None:
            pushed = self._queue[0]
            polled = self._wait_for(lambda status: status["completed"] == pushed
                                    or status["error_code"], what,
                                    lambda: self._completion(pushed))
            if not polled["error_code"]:
                self._know_idle(pushed)
                return
        status = self._wait_for(lambda status: status["completed"] == status["pushed"], what)
        if not status["error_code"]:
            self._know_idle(status["pushed"])
            return
        commands = self._commands
        self._forget_core_state()
        self._write_core_register("error_code", 0)
        code = ErrorCode(status["error_code"])
        words = commands.get(status["error_index"])
        if words is None:
            command, fields = f"opcode {status['error_opcode']}", {}
        else:
            opcode, fields = decode(words)
            command = getattr(opcode, "name", f"opcode {opcode}")
        raise CommandError(f"The core refused command #{status['error_index']} ({command} "
                           f"{fields}): {code.name}", command=command, code=code,
                           index=status["error_index"])

    # Buffers -------------------------------------------------------------------------------------

    def _write_rows(self, base_row, rows):
        stride = self.core.scratchpad_stride
        data = np.asarray(rows_to_words(rows, stride=stride), "<u4").tobytes()
        self.bulk_write(self.windows["scratchpad"] + _WORD * stride * base_row, data)

    def _read_rows(self, base_row, count):
        stride = self.core.scratchpad_stride
        data = self.bulk_read(self.windows["scratchpad"] + _WORD * stride * base_row,
                              _WORD * stride * count)
        return words_to_rows(np.frombuffer(data, "<u4"), row_bytes=self.core.row_bytes,
                             stride=stride)

    def _write_words(self, window, word, values):
        self.bulk_write(self.windows[window] + _WORD * word,
                        np.asarray(values, np.int64).astype("<u4").tobytes())

    def _read_words(self, window, word, count):
        return np.frombuffer(self.bulk_read(self.windows[window] + _WORD * word, _WORD * count),
                             "<u4")

    # Programs ------------------------------------------------------------------------------------

    @property
    def geometry(self):
        """The `sw.compiler.DeviceGeometry` of this device (what programs are compiled for)."""
        return DeviceGeometry(self.config)

    def compile(self, graph, *, batch=None, max_batch=MAX_BATCH):
        """`sw.compiler.compile_graph` of `graph` (a `sw.graph.Graph` or a model with one) for
        this device."""
        return compile_graph(graph, self.geometry, batch=batch, max_batch=max_batch)

    def load(self, program, *, batch=None, max_batch=MAX_BATCH):
        """Write a program's resident weights and parameters once; returns the `LoadedProgram`
        to call with batches.

        program : a `sw.compiler.Program`, or a graph / model (compiled here with `batch` and
        `max_batch`). A program compiled for another device configuration raises
        `DeviceMismatch` before anything is written. Loading invalidates the programs loaded
        before (they share the device's memories); a load that fails part way leaves no
        program loaded and the device ready for the next load."""
        if not isinstance(program, Program):
            program = self.compile(program, batch=batch, max_batch=max_batch)
        elif batch is not None:
            raise ValueError("batch is fixed when a program is compiled; pass a graph to "
                             "compile it with another batch")
        differences = DeviceGeometry.from_description(program.device).differences(self.geometry)
        if differences:
            raise DeviceMismatch(f"the program was compiled for another device configuration "
                                 f"(program != {self.url}: {'; '.join(differences)}); compile "
                                 f"it again for this device")
        self._drain("load")
        self._generation += 1
        for step in program.resident:
            self._write_words(step.args["window"], step.args["word"], step.data)
        return LoadedProgram(self, program, self._generation)

    # INT8 layers ---------------------------------------------------------------------------------

    def matmul(self, a, w, bias=None, *, multiplier, shift, output_zero_point=0, act_min=-128,
               act_max=127, rounding="double"):
        """``requantize(gemm(a, w, bias), ...)`` on the device: a int8 [M, K], w int8 [K, N],
        bias int32 [N] or None; multiplier (M0) and shift (<= 0) per output channel (or one for
        all); returns int8 [M, N], bit-exact with `sim.reference`. A one-node program (`load`):
        the rows of `a` are its samples."""
        a = _int_array("a", a, np.int8, 2)
        w = _int_array("w", w, np.int8, 2)
        if a.shape[1] != w.shape[0]:
            raise ValueError(f"matmul: a is [M, K] = {list(a.shape)} but w is [K, N] = "
                             f"{list(w.shape)}: K differs")
        requant = _requant(w.shape[1], bias, multiplier, shift, output_zero_point, act_min,
                           act_max, rounding)
        builder = GraphBuilder()
        builder.input("a", (w.shape[0],), zero_point=0)
        output = builder.node("matmul", Dense(weights=w, **_op_requant(requant)), ["a"])
        return self._run_once(builder.build([output]), a)

    def _run_once(self, graph, x):
        """Load `graph` and run it on `x`, in as few rounds as fit, of equal size where they
        can be (a short last round would still compute a whole one)."""
        program = self.compile(graph, max_batch=min(len(x), MAX_BATCH))
        rounds = _blocks(len(x), program.batch)
        if len(x) % program.batch:
            program = self.compile(graph, batch=_blocks(len(x), rounds))
        return self.load(program)(x)

    def matmul_int32(self, a, w, bias=None):
        """``gemm(a, w, bias)`` on the device, the raw int32 accumulators: a int8 [M, K], w int8
        [K, N], bias int32 [N] or None (added on the host as the accumulators are read). A
        one-node program (`sw.ops.DenseInt32`, `load`): the rows of `a` are its samples.
        Raises OverflowError if a result leaves int32, like `sim.reference.gemm`."""
        a = _int_array("a", a, np.int8, 2)
        w = _int_array("w", w, np.int8, 2)
        if a.shape[1] != w.shape[0]:
            raise ValueError(f"matmul_int32: a is [M, K] = {list(a.shape)} but w is [K, N] = "
                             f"{list(w.shape)}: K differs")
        bias = (np.zeros(w.shape[1], np.int64) if bias is None
                else _per_channel("bias", bias, w.shape[1], -2**31, 2**31 - 1))
        builder = GraphBuilder()
        builder.input("a", (w.shape[0],), zero_point=0)
        output = builder.node("matmul_int32", DenseInt32(weights=w, bias=bias.astype(np.int32)),
                              ["a"])
        return self._run_once(builder.build([output]), a)

    def conv2d(self, x, w, bias=None, *, stride=1, padding=0, input_zero_point=0, multiplier,
               shift, output_zero_point=0, act_min=-128, act_max=127, rounding="double",
               pool=False):
        """``requantize(conv2d(x, w, bias, stride, padding, input_zero_point), ...)`` on the
        device, then an optional 2x2 max-pool: x int8 NHWC [B, H, W, Cin] or [H, W, Cin], w
        int8 HWIO; padding as `sim.reference.conv2d` takes it (filled with the input zero
        point, smaller than the kernel on every side); the im2col expansion happens on chip.
        Returns int8 NHWC (unbatched for an unbatched x), bit-exact with `sim.reference`. A
        one-node program (`load`)."""
        x = _int_array("x", x, np.int8, (3, 4))
        w = _int_array("w", w, np.int8, 4)
        batched = x.ndim == 4
        images = x if batched else x[np.newaxis]
        if images.shape[3] != w.shape[2]:
            raise ValueError(f"conv2d: x has {images.shape[3]} channels but w (HWIO "
                             f"{list(w.shape)}) expects {w.shape[2]}")
        stride = _stride(stride)
        padding = _padding(padding)
        zero_point = _int_in("input_zero_point", input_zero_point, -128, 127)
        if not isinstance(pool, bool):
            raise TypeError(f"pool must be a bool, not {pool!r}")
        requant = _requant(w.shape[3], bias, multiplier, shift, output_zero_point, act_min,
                           act_max, rounding)
        builder = GraphBuilder()
        builder.input("x", images.shape[1:], zero_point=zero_point)
        output = builder.node("conv2d", Conv2D(
            weights=w, stride=(stride, stride), padding=padding, input_zero_point=zero_point,
            pool=pool, **_op_requant(requant)), ["x"])
        y = self._run_once(builder.build([output]), images)
        return y if batched else y[0]

    # Binary layers -------------------------------------------------------------------------------

    def binary_dense(self, a_bits, w_bits, k, thresholds=None, ascending=None):
        """W1A1 dense on the XNOR-popcount engine: a_bits uint8 [M, ceil(k/8)] and w_bits uint8
        [N, ceil(k/8)] packed as `sim.reference.pack_bits`; returns the int32 dots
        ``k - 2*popcount(a XOR w)`` [M, N], or with thresholds (int [N]) and ascending (bool [N])
        the +1/-1 int8 activations `sim.reference.threshold_activation` gives. A one-node
        program (`load`)."""
        k = _int_in("k", k, 1, self.core.binary_max_k)
        packed_bytes = _blocks(k, 8)
        a_bits = _int_array("a_bits", a_bits, np.uint8, 2)
        w_bits = _int_array("w_bits", w_bits, np.uint8, 2)
        for name, array in (("a_bits", a_bits), ("w_bits", w_bits)):
            if array.shape[1] != packed_bytes:
                raise ValueError(f"{name} must have {packed_bytes} bytes per row for k={k}, "
                                 f"not shape {array.shape}")
        n = w_bits.shape[0]
        if (thresholds is None) != (ascending is None):
            raise ValueError("thresholds and ascending must both be given or both be None")
        if thresholds is not None:
            thresholds = _per_channel("thresholds", thresholds, n, -2**31, 2**31 - 1)
            ascending = np.asarray(ascending)
            if ascending.dtype != bool or ascending.shape != (n,):
                raise ValueError(f"ascending must be a bool array of shape ({n},), not "
                                 f"{ascending.dtype} {ascending.shape}")
        builder = GraphBuilder()
        builder.input("a", (k,), "binary")
        output = builder.node("binary_dense", BinaryDense.from_packed(
            w_bits, k, thresholds=thresholds, ascending=ascending), ["a"])
        return self._run_once(builder.build([output]), reference.unpack_bits(a_bits, k))

    # Models --------------------------------------------------------------------------------------

    def run(self, model, x):
        """Run `model` (a `sw.model.QuantizedModel`) on the device: compiled and loaded
        (`load`), then called on `x`.

        x: [M, *model.input_shape] int8 (INT8 models) or +1/-1 int8 (binary models; uint8
        packed bits [M, ceil(K/8)] accepted). Returns the last layer's output, equal to
        `sw.model.run_reference` (int8, or the int32 dots of a binary model's last layer)."""
        from sw.model import QuantizedModel
        if not isinstance(model, QuantizedModel):
            raise TypeError(f"model must be a sw.model.QuantizedModel, not {type(model).__name__}")
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError(f"x must be an integer array, not dtype {x.dtype}; quantize floats "
                            f"with model.quantize_input")
        if model.is_binary and x.dtype == np.uint8:
            k = model.input_shape[0]
            if x.ndim != 2 or x.shape[1] != _blocks(k, 8):
                raise ValueError(f"packed input must have shape [M, {_blocks(k, 8)}], "
                                 f"not {x.shape}")
            x = reference.unpack_bits(x, k)
        if x.ndim != len(model.input_shape) + 1 or x.shape[1:] != model.input_shape:
            raise ValueError(f"x must have shape [M, {', '.join(map(str, model.input_shape))}], "
                             f"not {x.shape}")
        return self._run_once(model.graph, x)


def _op_requant(requant):
    """`_requant`'s checked parameters as `sw.ops` requantization fields."""
    return dict(bias=requant["bias"].astype(np.int32), multiplier=requant["multiplier"],
                shift=requant["shift"], output_zero_point=requant["output_zero_point"],
                act_min=requant["act_min"], act_max=requant["act_max"],
                rounding=requant["rounding"])
