"""CSR block: identification, generated config, link status and counters, scratch and control.

Two bus targets, one per register window of `hw.soc.protocol`:

* ``identity`` (read-only, `protocol.ID_REGISTERS` at `protocol.CSR_BASE`): MAGIC, VERSION,
  MAX_PAYLOAD, the scratchpad window, every AcceleratorConfig field (CONFIG_*), then the live
  link registers STATUS, LAST_ERROR, FRAMES_OK, FRAMES_BAD, BYTES_DISCARDED, LAST_SEQ (the
  frame engine's, `protocol` module docstring), then (constant
  again) the bases of the core's windows and the core's sizes (CORE_*).
* ``control`` (read-write, `protocol.CONTROL_REGISTERS` at `protocol.CONTROL_BASE`): SCRATCH and
  CONTROL (write `CONTROL_CLEAR_ERRORS` to clear STATUS, LAST_ERROR and the counters; reads 0).

The core's queue, error status and performance counters are not here: the core serves them in
its own register window at `protocol.CORE_CONTROL_BASE` (`hw.core.isa.REGISTERS`, `COUNTERS`).

The constant registers are given as numbers (the SoC derives them from its config), so the
block does not depend on the config type. Counters wrap at 2^32. The frame that clears the
counters is itself counted once its reply is sent.

Timing: the `hw.soc.bridge` target contract -- read data `TARGET_READ_LATENCY` (5) cycles after
the strobe (address registered, then the selected register, then copies of it:
`register_read_data`), so a live register is sampled the cycle after the read; writes take
effect at the next edge; link events are counted in the cycle they pulse.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hw.soc.bridge import Bus, register_read_data
from hw.soc.protocol import (CONTROL_CLEAR_ERRORS, CONTROL_REGISTERS, ID_REGISTERS, STATUS_ERROR,
                             Status)

__all__ = ["CsrBlock", "LIVE_REGISTERS", "CONSTANT_REGISTERS"]

LIVE_REGISTERS = ("STATUS", "LAST_ERROR", "FRAMES_OK", "FRAMES_BAD", "BYTES_DISCARDED",
                  "LAST_SEQ")
CONSTANT_REGISTERS = tuple(name for name in ID_REGISTERS if name not in LIVE_REGISTERS)


def _address_width(registers):
    return max(1, (len(registers) - 1).bit_length())


class CsrBlock(wiring.Component):
    """The link's registers.

    Parameters
    ----------
    constants : dict
        Value of every register in `CONSTANT_REGISTERS` (name -> integer in 0..2^32-1).

    Ports
    -----
    identity : In(Bus), control : In(Bus)
        The two register windows.
    frame_done, frame_status, byte_discarded, last_seq : In
        Link events and state from the `FrameEngine`.
    """

    def __init__(self, *, constants):
        if not isinstance(constants, dict):
            raise TypeError(f"constants must be a dict of register name -> value, "
                            f"not {constants!r}")
        missing = sorted(set(CONSTANT_REGISTERS) - set(constants))
        unknown = sorted(set(constants) - set(CONSTANT_REGISTERS))
        if missing or unknown:
            raise ValueError(f"constants must give exactly the registers {CONSTANT_REGISTERS}; "
                             f"missing {missing}, unknown {unknown}")
        for name, value in constants.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 32:
                raise ValueError(f"Register {name} must be an integer in 0..2^32-1, "
                                 f"not {value!r}")
        self.constants = dict(constants)
        super().__init__({
            "identity": In(Bus(address_width=_address_width(ID_REGISTERS))),
            "control": In(Bus(address_width=_address_width(CONTROL_REGISTERS))),
            "frame_done": In(1),
            "frame_status": In(Status),
            "byte_discarded": In(1),
            "last_seq": In(8),
        })

    def elaborate(self, platform):
        m = Module()
        live = {name: Signal(32, name=name.lower()) for name in LIVE_REGISTERS
                if name != "LAST_SEQ"}
        scratch = Signal(32)

        clear = Signal()
        m.d.comb += clear.eq(self.control.write
                             & (self.control.address == CONTROL_REGISTERS.index("CONTROL"))
                             & (self.control.write_data & CONTROL_CLEAR_ERRORS).any())
        with m.If(clear):
            m.d.sync += [register.eq(0) for register in live.values()]
        with m.Else():
            with m.If(self.frame_done):
                with m.If(self.frame_status == Status.OK):
                    m.d.sync += live["FRAMES_OK"].eq(live["FRAMES_OK"] + 1)
                with m.Else():
                    m.d.sync += [live["FRAMES_BAD"].eq(live["FRAMES_BAD"] + 1),
                                 live["LAST_ERROR"].eq(self.frame_status),
                                 live["STATUS"].eq(live["STATUS"] | STATUS_ERROR)]
            with m.If(self.byte_discarded):
                m.d.sync += live["BYTES_DISCARDED"].eq(live["BYTES_DISCARDED"] + 1)

        values = {**self.constants, **live, "LAST_SEQ": self.last_seq}
        register_read_data(m, self.identity, {index: values[name]
                                              for index, name in enumerate(ID_REGISTERS)})

        with m.If(self.control.write
                  & (self.control.address == CONTROL_REGISTERS.index("SCRATCH"))):
            m.d.sync += scratch.eq(self.control.write_data)
        register_read_data(m, self.control,
                           {CONTROL_REGISTERS.index("SCRATCH"): scratch})   # CONTROL reads 0
        return m
