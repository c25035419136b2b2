"""Soak over a serial line: the digits demo in a loop through a relay that damages the bytes.

::

    driver --uart://PTY_A-- relay (flips, drops, inserts bytes) --PTY_B-- python -m sim.serve --pty

The simulated SoC is served on a pseudo-terminal by ``python -m sim.serve --pty`` (a process of
its own; ``--backend``, ``--line``), and the driver talks to it over ``uart://`` (pyserial) on a
second pty whose other end is the relay: a thread that copies the bytes both ways and, for each
byte with probability ``--rate``, flips one of its bits, drops it or inserts a random byte
before it (one insert in three a sync or escape byte). The driver runs the digits demo's
networks (`sw.demo.MODELS`, trained once) in turn on batches of ``--batch`` test images for
``--seconds`` of wall time, every batch through `Accelerator.run` (weights, inputs, commands
and outputs all cross the line each time) and every output compared with the reference
(`sw.model.run_reference`). A batch whose call raises a `LinkError` is run again, as an
application would, up to `MAX_ATTEMPTS` times.

Reported: inferences (images), batches, faults injected by direction and kind, the device's
link counters at the end (frames answered OK, frames refused -- each met by the driver's retry
-- and bytes skipped outside frames), link errors that reached the application and the batches
that completed after one (errors recovered), batches that never completed (lost), images right
and wrong, and the wall time.
"""

import os
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections import Counter

import numpy as np

__all__ = ["DESCRIPTION", "add_arguments", "run", "Relay"]

DESCRIPTION = ("soak over a serial line: the digits demo in a loop, driver on uart:// through a "
               "byte-damaging relay to sim.serve --pty; every output checked")

MAX_ATTEMPTS = 20               # runs of one batch before the bench counts it lost
FAULTS = ("flip", "drop", "insert")
DIRECTIONS = ("to_device", "from_device")
_SERVER_START_SECONDS = 600     # the first serve of a design compiles its CXXRTL model
_POLL_SECONDS = 0.05


class Relay(threading.Thread):
    """Copies bytes between a new pty (`host_path`, for the driver) and the pty at
    `device_path`, damaging each byte with probability `rate` (`FAULTS`, counted in
    `injected` by (direction, kind)). Stops when `stop()` is called."""

    def __init__(self, device_path, *, rate, rng):
        super().__init__(name="soak-relay", daemon=True)
        self.rate, self.rng = rate, rng
        self.injected = Counter()
        self.bytes = Counter()
        self._host, self._host_slave = os.openpty()
        tty.setraw(self._host_slave)        # the driver's end: bytes pass unchanged
        self.host_path = os.ttyname(self._host_slave)
        self._device = os.open(device_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._device)
        self._stopping = threading.Event()

    def stop(self):
        self._stopping.set()
        self.join(timeout=10)
        for fd in (self._host, self._host_slave, self._device):
            os.close(fd)

    def run(self):
        routes = {self._host: (self._device, "to_device"),
                  self._device: (self._host, "from_device")}
        while not self._stopping.is_set():
            readable, _, _ = select.select(list(routes), [], [], _POLL_SECONDS)
            for source in readable:
                target, direction = routes[source]
                try:
                    data = os.read(source, 4096)
                except OSError:         # the other end is not open right now
                    continue
                self.bytes[direction] += len(data)
                _write_all(target, self._damage(data, direction))

    def _damage(self, data, direction):
        out = bytearray()
        for byte in data:
            if self.rng.random() >= self.rate:
                out.append(byte)
                continue
            kind = self.rng.choice(FAULTS)
            self.injected[direction, kind] += 1
            if kind == "flip":
                out.append(byte ^ 1 << self.rng.randrange(8))
            elif kind == "insert":
                out.append(self.rng.choice([0xA5, 0x5A, 0xC3, self.rng.getrandbits(8)]))
                out.append(byte)
        return bytes(out)


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def add_arguments(parser):
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="wall-clock seconds of inferences (default 60)")
    parser.add_argument("--rate", type=float, default=1e-4,
                        help="probability that the relay damages a byte, either way "
                             "(default 0.0001)")
    parser.add_argument("--batch", type=int, default=8, help="images per call (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-timeout", type=float, default=1.0,
                        help="seconds the driver waits for each reply (the uart:// timeout "
                             "option; default 1.0: the served simulation answers a long read "
                             "far slower than a board, the driver's own 0.1 s is for boards)")
    parser.add_argument("--backend", choices=("cxxrtl", "pysim"), default="cxxrtl",
                        help="the served simulator (default cxxrtl)")
    parser.add_argument("--line", choices=("bytes", "uart"), default="bytes",
                        help="the served SoC's own line: its byte streams (default) or its "
                             "UART pins")


def _start_server(args, log):
    """``python -m sim.serve --pty`` for the run (and a margin); (process, pty path)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "sim.serve", "--pty", "--backend", args.backend, "--line",
         args.line, "--seconds", str(args.seconds + _SERVER_START_SECONDS)],
        stdout=subprocess.PIPE, stderr=log, text=True)
    ready, _, _ = select.select([server.stdout], [], [], _SERVER_START_SECONDS)
    path = server.stdout.readline().strip() if ready else ""
    if not path.startswith("/dev/"):
        server.kill()
        server.wait()
        log.seek(0)
        raise RuntimeError(f"python -m sim.serve --pty did not announce its pty within "
                           f"{_SERVER_START_SECONDS} s; it said: {log.read()[-2000:]}")
    return server, path


def _attempt(operation, tally, messages):
    """`operation()` until it returns, as an application retries; None after `MAX_ATTEMPTS`
    link errors (each counted by type in `tally`, the last message of each type kept in
    `messages`)."""
    from sw.driver.errors import LinkError
    for _ in range(MAX_ATTEMPTS):
        try:
            return operation()
        except LinkError as error:
            tally[f"error_{type(error).__name__}"] += 1
            tally["link_errors"] += 1
            messages[type(error).__name__] = str(error)
    return None


def run(args):
    from sw.demo import MODELS
    from sw.driver import Accelerator
    from sw.model import run_reference
    if not (args.seconds > 0 and args.reply_timeout > 0 and 0 <= args.rate < 1 and
            args.batch >= 1):
        raise ValueError(f"--seconds and --reply-timeout must be positive, --rate in [0, 1) and "
                         f"--batch at least 1, not {args.seconds}, {args.reply_timeout}, "
                         f"{args.rate}, {args.batch}")
    trained = {name: train(seed=args.seed) for name, train in MODELS.items()}
    tally, per_model, messages = Counter(), {name: Counter() for name in trained}, {}
    with tempfile.TemporaryFile("w+") as log:
        server, device_path = _start_server(args, log)
        relay = Relay(device_path, rate=args.rate, rng=random.Random(args.seed))
        relay.start()
        started = time.monotonic()
        device = None
        try:
            url = f"uart://{relay.host_path}?timeout={args.reply_timeout}"
            device = _attempt(lambda: Accelerator.open(url), tally, messages)
            if device is None:
                raise RuntimeError(f"could not open the device in {MAX_ATTEMPTS} attempts "
                                   f"through the relay: {dict(tally)}")
            _soak(device, trained, run_reference, args, tally, per_model, messages,
                  deadline=started + args.seconds)
            link = _attempt(device.link_status, tally, messages) or {}
        finally:
            wall = time.monotonic() - started
            if device is not None:
                device.close()
            relay.stop()
            server.terminate()
            server.wait(timeout=30)
    return _report(args, tally, per_model, messages, link, relay, wall)


def _soak(device, trained, run_reference, args, tally, per_model, messages, *, deadline):
    names = list(trained)
    batch_index = 0
    while time.monotonic() < deadline:
        name = names[batch_index % len(names)]
        model = trained[name]
        start = (batch_index // len(names) * args.batch) % (len(model.x_test) - args.batch + 1)
        x = model.x_test[start:start + args.batch]
        batch_index += 1
        errors_before = tally["link_errors"]
        got = _attempt(lambda: device.run(model.model, x), tally, messages)
        counts = per_model[name]
        counts["batches"] += 1
        if got is None:
            counts["lost"] += 1
            continue
        if tally["link_errors"] != errors_before:
            counts["recovered"] += 1
        expected = run_reference(model.model, x)
        wrong = (int(np.sum(np.any(got != expected, axis=1))) if got.shape == expected.shape
                 else len(x))
        counts["images"] += len(x)
        counts["wrong"] += wrong
        counts["right"] += len(x) - wrong


def _report(args, tally, per_model, messages, link, relay, wall):
    rows = [{"model": name, **{key: counts[key] for key in
                               ("batches", "images", "right", "wrong", "recovered", "lost")}}
            for name, counts in per_model.items()]
    totals = Counter()
    for counts in per_model.values():
        totals.update(counts)
    rows.append({"model": "all", **{key: totals[key] for key in rows[0] if key != "model"}})
    faults = {f"{direction}_{kind}": relay.injected[direction, kind]
              for direction in DIRECTIONS for kind in FAULTS}
    summary = {
        "inferences": totals["images"], "batches": totals["batches"],
        "right": totals["right"], "wrong": totals["wrong"], "lost": totals["lost"],
        "faults": sum(relay.injected.values()), **faults,
        "bytes_to_device": relay.bytes["to_device"],
        "bytes_from_device": relay.bytes["from_device"],
        "device_frames_ok": link.get("FRAMES_OK"), "device_frames_bad": link.get("FRAMES_BAD"),
        "device_bytes_discarded": link.get("BYTES_DISCARDED"),
        "link_errors": tally["link_errors"], "errors_recovered": totals["recovered"],
        "errors_by_type": {key[len("error_"):]: value for key, value in tally.items()
                           if key.startswith("error_")},
        "last_error_messages": messages,
        "wall_seconds": wall,
    }
    return {
        "rows": rows,
        "summary": summary,
        "notes": [
            f"{wall:.0f} s wall: {summary['inferences']} inferences in {summary['batches']} "
            f"batches of {args.batch} (digits demo models in turn), reply timeout "
            f"{args.reply_timeout} s, sim.serve --pty "
            f"--backend {args.backend} --line {args.line}, relay damage rate {args.rate} per "
            f"byte, seed {args.seed}.",
            f"faults {summary['faults']} ({', '.join(f'{k} {v}' for k, v in faults.items())}) "
            f"in {summary['bytes_to_device']} bytes to and {summary['bytes_from_device']} "
            f"from the device; the device answered {summary['device_frames_ok']} frames OK "
            f"and refused {summary['device_frames_bad']} (a retry follows each), and skipped "
            f"{summary['device_bytes_discarded']} bytes outside frames.",
            f"link errors raised {summary['link_errors']} ({summary['errors_by_type']}); "
            f"batches recovered after one {summary['errors_recovered']}, lost "
            f"{summary['lost']}; images right {summary['right']}, wrong {summary['wrong']}.",
            *(f"last {name}: {message}" for name, message in messages.items()),
        ],
    }
