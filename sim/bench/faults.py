"""Fault campaign: the driver against the SoC through a line that breaks frames on purpose.

The SoC (tiny preset, compiled CXXRTL model by default; ``--line uart``, the default: the real
UART line at the pins, host UART PHY -> SoC UART PHY -> frame engine, 10 bit times a byte;
``--line bytes``: the same SoC fed a byte per cycle at its byte streams, about 20 times fewer
cycles per frame for long campaigns) carries mixed traffic -- bulk writes and reads of the
scratchpad, register writes and reads, command pushes, whole layers (``matmul_int32``) -- while a
relay between the driver's `FrameLink` and the transport (`FaultyLine`) injects, on a fraction
``--rate`` of the request frames, one fault of `FAULTS`: a flipped bit, a dropped or inserted
byte, a truncated frame, garbage holding sync bytes, an earlier frame replayed before this one,
a lost request, a lost reply, or a flipped or dropped reply byte. One layer in `RECONNECT_EVERY`
is cut off by a reconnect: the host session dies after pushing its commands and a new
`FrameLink` and `Accelerator` open the same device mid-layer and run it again.

Every operation is checked against a model of what must have happened: scratchpad reads against
the bytes written (a mismatch that a second read confirms is a corrupted write), register reads
against the last value written, each command push against the core's ``pushed`` count (one more
per push that succeeded: none is a dropped write, two a duplicated one; a push that raised must
have gone in at most once), and every layer result against `sim.reference.gemm`. An operation
that raises a `LinkError` is retried by the bench (as an application would), up to
`MAX_ATTEMPTS` times; an operation that still fails, or that runs longer than ``--hang``
simulated seconds, is a hang.

Reported: frames (request frames the driver sent, retries included), faults injected, faults
detected (the link did not accept the faulted attempt: it retried it or gave up), faults masked
(the link accepted the attempt's answer: a replayed earlier frame answered before the current
one), recovered operations (met a fault and completed correctly), corrupted writes, duplicated
writes, hangs, wrong results and the mean recovery time (simulated time from an operation's
first fault to its correct completion).

Speed (measured on the tiny SoC's compiled model): on the UART line a byte takes 40 cycles
(divisor 4, 10 bits) and a frame of this mix about 3,100 simulated cycles (945k cycles for 306
frames); the model runs about 125,000 cycles per CPU second whether stepped alone or through
`CxxrtlBackend`'s 256-cycle calls (122,885 vs 123,160), so the Python side is not the limit and
the campaign carries about 40 frames per CPU second: 10^5 frames are about 45 CPU minutes
(``--line bytes`` needs about 20 times fewer cycles per frame).
"""

import random
import sys
import time
from collections import Counter, deque

import numpy as np

from hw.config import preset
from hw.core.isa import COMMAND_REGISTER, Opcode as CoreOpcode, encode
from hw.soc.protocol import REQUEST_SYNC, REPLY_SYNC, ESCAPE, register_address
from sim import reference
from sim.soc import LINES, parse_divisor
from sw.driver.device import Accelerator
from sw.driver.errors import LinkError
from sw.driver.link import FrameLink
from sw.driver.sim import SimTransport
from sw.driver.transport import ByteTransport

__all__ = ["DESCRIPTION", "add_arguments", "run", "FaultyLine", "FAULTS"]

DESCRIPTION = ("fault campaign: mixed traffic and whole layers through a line that flips, drops, "
               "inserts, truncates, replays and loses frames; integrity vs a model")

FAULTS = ("flip", "drop", "insert", "truncate", "sync_garbage", "replay", "lost_request",
          "lost_reply", "reply_flip", "reply_drop")
_REPLY_FAULTS = ("lost_reply", "reply_flip", "reply_drop")
MAX_ATTEMPTS = 20               # an application's retries of one operation before it gives up
RECONNECT_EVERY = 5             # one layer in this many is cut off by a reconnect
MAX_PAYLOAD = 256
# Scratchpad bytes the bulk traffic uses: the layers (m <= 6, k, n <= 8 on the 4x4 tiny core)
# use rows 0..31 (activations) and 128..159 (weights), bytes [0, 128) and [512, 640).
TRAFFIC_REGIONS = ((128, 512), (640, 1024))
SCRATCHPAD = 0x0100_0000
SCRATCH = register_address("SCRATCH")
FENCE = encode(CoreOpcode.FENCE)
OPERATIONS = {"write": 35, "read": 20, "register": 10, "push": 10, "layer": 25}


class Hang(Exception):
    """An operation ran past the campaign's time limit."""


class Reconnect(Exception):
    """The host session dies here (a killed host program)."""


class FaultyLine(ByteTransport):
    """A `ByteTransport` relay that injects one fault of `FAULTS` into a fraction `rate` of the
    request frames written through it (or into their replies), and counts what happened.

    The bench tells it when an operation starts (`start_operation`: the hang watchdog and the
    recovery clock); the link tells it how each exchange ended (`ObservedLink`)."""

    def __init__(self, inner, *, rng, rate, hang_seconds):
        self.inner = inner
        self.rng = rng
        self.rate = rate
        self.hang_seconds = hang_seconds
        self.frames = 0
        self.injected, self.detected, self.masked = Counter(), Counter(), Counter()
        self._recent = deque(maxlen=3)      # earlier request frames, for replays
        self._open_fault = None             # (kind, frame bytes) of the last attempt if faulted
        self._reply_fault = None
        self.operation_start = self.first_fault = None

    # What the bench tells -------------------------------------------------------------------

    def start_operation(self):
        self.operation_start, self.first_fault = self.inner.now(), None

    def exchange_ended(self, *, accepted):
        """The link accepted the last attempt's answer, or gave up on the exchange: a fault still
        open (in the last attempt) was masked, or detected."""
        self._settle(detected=not accepted)

    # ByteTransport ----------------------------------------------------------------------------

    def write(self, data):
        self._watchdog()
        data = bytes(data)
        if self._open_fault is not None:
            self._settle(detected=data == self._open_fault[1])      # the same frame: a retry
        self.frames += 1
        kind = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
        self._reply_fault = kind if kind in _REPLY_FAULTS else None
        if kind is not None:
            self.injected[kind] += 1
            self._open_fault = (kind, data)
            if self.first_fault is None:
                self.first_fault = self.inner.now()
        if kind != "lost_request":
            self.inner.write(self._corrupt(data, kind))
        self._recent.append(data)

    def read(self, count, timeout):
        self._watchdog()
        data = self.inner.read(count, timeout)
        if self._reply_fault == "lost_reply":
            return b""
        if self._reply_fault and data:
            position = self.rng.randrange(len(data))
            if self._reply_fault == "reply_flip":
                data = _flip(data, position, self.rng)
            else:
                data = data[:position] + data[position + 1:]
            self._reply_fault = None
        return data

    def discard_input(self):
        self.inner.discard_input()

    def reply_timeout(self, byte_count):
        return self.inner.reply_timeout(byte_count)

    def now(self):
        return self.inner.now()

    def close(self):
        self.inner.close()

    # Internals --------------------------------------------------------------------------------

    def _settle(self, *, detected):
        if self._open_fault is not None:
            (self.detected if detected else self.masked)[self._open_fault[0]] += 1
            self._open_fault = None

    def _watchdog(self):
        if self.operation_start is not None and \
                self.inner.now() - self.operation_start > self.hang_seconds:
            raise Hang(f"an operation ran past {self.hang_seconds} simulated seconds")

    def _corrupt(self, frame, kind):
        rng = self.rng
        position = rng.randrange(len(frame))
        if kind == "flip":
            return _flip(frame, position, rng)
        if kind == "drop":
            return frame[:position] + frame[position + 1:]
        if kind == "insert":
            return frame[:position] + bytes([rng.getrandbits(8)]) + frame[position:]
        if kind == "truncate":
            return frame[:position]
        if kind == "sync_garbage":
            garbage = bytes(rng.choice([REQUEST_SYNC, REPLY_SYNC, ESCAPE, rng.getrandbits(8)])
                            for _ in range(rng.randrange(1, 12)))
            return frame[:position] + garbage + frame[position:]
        if kind == "replay" and self._recent:
            return rng.choice(self._recent) + frame
        return frame


def _flip(data, position, rng):
    return data[:position] + bytes([data[position] ^ 1 << rng.randrange(8)]) + data[position + 1:]


class ObservedLink(FrameLink):
    """A `FrameLink` that tells its `FaultyLine` how each exchange ended."""

    def _exchange(self, request):
        try:
            answer = super()._exchange(request)
        except LinkError:
            self.transport.exchange_ended(accepted=False)
            raise
        self.transport.exchange_ended(accepted=True)
        return answer


class Campaign:
    """The traffic, the model of what the device must hold, and the tallies."""

    def __init__(self, line, rng, command_timeout):
        self.line, self.rng, self.command_timeout = line, rng, command_timeout
        self.tally = Counter()
        self.recovery_times = []
        self._connect()
        self.memory = bytearray(self._attempt(lambda: self.device.bulk_read(SCRATCHPAD, 1024)))
        self.scratch = self._attempt(lambda: self.device.read_register("SCRATCH"))

    def _connect(self):
        def open_():
            self.device = Accelerator(ObservedLink(self.line),
                                      command_timeout=self.command_timeout)
        self._attempt(open_)

    def _attempt(self, operation):
        """Run `operation` until it returns (an application's retries); a hang if it never
        does within `MAX_ATTEMPTS` or the line's time limit."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return operation()
            except LinkError:
                pass
        raise Hang(f"{MAX_ATTEMPTS} attempts failed")

    def step(self):
        kind = self.rng.choices(list(OPERATIONS), weights=list(OPERATIONS.values()))[0]
        self.line.start_operation()
        try:
            getattr(self, f"_{kind}")()
        except Hang:
            self.tally["hangs"] += 1
            self.line.operation_start = None
            self._connect()         # start afresh, as a user would
            return
        self.tally["operations"] += 1
        if self.line.first_fault is not None:
            self.tally["recovered"] += 1
            self.recovery_times.append(self.line.now() - self.line.first_fault)

    # Operations -----------------------------------------------------------------------------

    def _region(self, max_bytes):
        low, high = self.rng.choice(TRAFFIC_REGIONS)
        size = 4 * self.rng.randrange(1, max_bytes // 4 + 1)
        start = low + 4 * self.rng.randrange((high - low - size) // 4 + 1)
        return start, size

    def _write(self):
        start, size = self._region(MAX_PAYLOAD)
        data = self.rng.randbytes(size)
        self._attempt(lambda: self.device.bulk_write(SCRATCHPAD + start, data))
        self.memory[start:start + size] = data

    def _read(self):
        start, size = self._region(MAX_PAYLOAD)
        expected = bytes(self.memory[start:start + size])
        if self._attempt(lambda: self.device.bulk_read(SCRATCHPAD + start, size)) != expected:
            again = self._attempt(lambda: self.device.bulk_read(SCRATCHPAD + start, size))
            self.tally["corrupted_writes" if again != expected else "wrong_results"] += 1
            self.memory[start:start + size] = again     # count each corruption once

    def _register(self):
        value = self.rng.getrandbits(32)
        self._attempt(lambda: self.device.write_register("SCRATCH", value))
        if self._attempt(lambda: self.device.read_register("SCRATCH")) != value:
            self.tally["corrupted_writes"] += 1

    def _pushed(self):
        return self._attempt(lambda: self.device.core_status()["pushed"])

    def _push(self):
        address = self.device.windows["core_control"] + 4 * COMMAND_REGISTER
        before = self._pushed()
        for _ in range(MAX_ATTEMPTS):
            try:
                self.device.write_registers(address, FENCE)
                succeeded = True
            except LinkError:
                succeeded = False
            went_in = (self._pushed() - before) & 0xFFFF_FFFF
            if went_in > 1:
                self.tally["duplicated_writes"] += 1
            if succeeded and went_in == 0:
                self.tally["corrupted_writes"] += 1         # answered OK, not applied
            if went_in or succeeded:
                return
        raise Hang(f"{MAX_ATTEMPTS} pushes failed")

    def _layer(self):
        rng = self.rng
        m, k, n = rng.randrange(1, 7), rng.randrange(1, 9), rng.randrange(1, 9)
        a = np.array([[rng.randrange(-128, 128) for _ in range(k)] for _ in range(m)], np.int8)
        w = np.array([[rng.randrange(-128, 128) for _ in range(n)] for _ in range(k)], np.int8)
        if rng.randrange(RECONNECT_EVERY) == 0:
            self._die_mid_layer(a, w)
            self._connect()
            self.tally["reconnects"] += 1
        result = self._attempt(lambda: self.device.matmul_int32(a, w))
        self.tally["layers"] += 1
        if not np.array_equal(result, reference.gemm(a, w)):
            self.tally["wrong_results"] += 1

    def _die_mid_layer(self, a, w):
        push = self.device._push

        def push_and_die(commands):
            push(commands)
            raise Reconnect

        self.device._push = push_and_die
        try:
            self.device.matmul_int32(a, w)
        except (Reconnect, LinkError):
            pass


def add_arguments(parser):
    parser.add_argument("--frames", type=int, default=100_000,
                        help="run until the driver has sent this many request frames "
                             "(default 100000)")
    parser.add_argument("--rate", type=float, default=0.05,
                        help="fraction of request frames that meet a fault (default 0.05)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--divisor", type=parse_divisor, default=4,
                        help="simulated cycles per UART bit (default 4)")
    parser.add_argument("--backend", choices=("cxxrtl", "pysim"), default="cxxrtl")
    parser.add_argument("--line", choices=LINES, default="uart",
                        help="uart: the serial pins (default); bytes: the byte streams")
    parser.add_argument("--progress", type=int, default=10_000,
                        help="print the tallies to stderr every this many frames")
    parser.add_argument("--hang", type=float, default=0.5,
                        help="simulated seconds after which an operation counts as hung "
                             "(default 0.5)")


def run(args):
    config = preset("tiny")
    inner = SimTransport(config=config, line=args.line, divisor=args.divisor,
                         backend=args.backend, max_payload=MAX_PAYLOAD)
    line = FaultyLine(inner, rng=random.Random(args.seed + 1), rate=args.rate,
                      hang_seconds=args.hang)
    wall = time.monotonic()
    campaign = Campaign(line, random.Random(args.seed), command_timeout=args.hang / 5)
    next_report = args.progress
    while line.frames < args.frames:
        campaign.step()
        if line.frames >= next_report:
            next_report += args.progress
            print(f"{line.frames} frames, {sum(line.injected.values())} faults, "
                  f"{dict(campaign.tally)}, {time.monotonic() - wall:.0f} s", file=sys.stderr,
                  flush=True)
    wall = time.monotonic() - wall
    line.close()
    tally = campaign.tally
    times = campaign.recovery_times
    rows = [{"fault": kind, "injected": line.injected[kind], "detected": line.detected[kind],
             "masked": line.masked[kind]} for kind in FAULTS]
    rows.append({"fault": "all", "injected": sum(line.injected.values()),
                 "detected": sum(line.detected.values()), "masked": sum(line.masked.values())})
    summary = {
        "frames": line.frames, "faults": sum(line.injected.values()),
        "faults_detected": sum(line.detected.values()),
        "faults_masked": sum(line.masked.values()),
        "operations": tally["operations"], "layers": tally["layers"],
        "reconnects": tally["reconnects"], "recovered": tally["recovered"],
        "corrupted_writes": tally["corrupted_writes"],
        "duplicated_writes": tally["duplicated_writes"], "hangs": tally["hangs"],
        "wrong_results": tally["wrong_results"],
        "mean_recovery_us": 1e6 * sum(times) / len(times) if times else 0.0,
        "max_recovery_us": 1e6 * max(times) if times else 0.0,
        "simulated_seconds": inner.now(), "wall_seconds": wall,
    }
    return {
        "rows": rows,
        "summary": summary,
        "notes": [
            f"{summary['frames']} request frames ({args.backend}, tiny SoC, "
            + (f"UART pins at divisor {args.divisor}" if args.line == "uart" else "byte streams")
            + f", fault rate {args.rate}, seed {args.seed}): "
            f"{summary['operations']} operations, {summary['layers']} layers, "
            f"{summary['reconnects']} reconnects mid-layer.",
            f"faults {summary['faults']}: detected {summary['faults_detected']}, masked "
            f"{summary['faults_masked']}; operations recovered {summary['recovered']}.",
            f"corrupted writes {summary['corrupted_writes']}, duplicated writes "
            f"{summary['duplicated_writes']}, hangs {summary['hangs']}, wrong results "
            f"{summary['wrong_results']}.",
            f"recovery time: mean {summary['mean_recovery_us']:.1f} us, max "
            f"{summary['max_recovery_us']:.1f} us simulated "
            f"({config.clock_mhz:g} MHz clock); {summary['simulated_seconds']:.3f} s simulated "
            f"in {wall:.0f} s wall.",
        ],
    }
