"""Serve the simulated SoC on a pseudo-terminal: ``python -m sim.serve --pty``.

Prints the pty's path; then ``uart:///dev/pts/N`` (the driver, with the whole layer API: the SoC
includes the accelerator core), pyserial or a terminal talks to the simulated gateware byte for
byte. ``--backend cxxrtl`` serves the compiled model instead of pysim. The simulation runs while
bytes are in flight and otherwise advances slowly (so the device's truncation timeout still
fires); the server stops by itself after ``--seconds`` of wall-clock time (or on Ctrl-C).
"""

import argparse
import math
import os
import select
import sys
import time
import tty

from ecpnn.package_data import reports_damaged_install
from hw.config import PRESETS, preset
from sim.soc import BACKENDS, LINES, SimulatedSoC, parse_divisor

__all__ = ["serve_pty", "main"]

_IDLE_POLL = 0.01           # seconds between simulation steps while the host is silent


def serve_pty(device, *, seconds, announce):
    """Relay between a new pty and `device` (a `sim.soc.SimulatedSoC`) for `seconds`."""
    master, slave = os.openpty()
    tty.setraw(slave)       # bytes pass unchanged: no echo, no line editing, no CR/LF mapping
    announce(os.ttyname(slave))
    backend = device.backend
    received = backend.received()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], _IDLE_POLL)
            if readable:
                try:
                    data = os.read(master, 4096)
                except OSError:     # no client has the pty open right now
                    data = b""
                backend.push(data)
            # Run until the host's bytes are in and the device has been quiet for a frame
            # timeout -- or a short step when idle, so that simulated time keeps moving.
            step = device.frame_timeout if backend.pending() or readable else 64
            before = len(received)
            backend.run(step + math.ceil(backend.pending() * 2 * device.cycles_per_byte),
                        lambda: False)
            while len(received) != before:
                before = len(received)
                backend.run(device.frame_timeout, lambda: False)
            if received:
                os.write(master, bytes(received))
                received.clear()
    finally:
        os.close(master)
        os.close(slave)


@reports_damaged_install
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--pty", action="store_true", required=True,
                        help="serve on a new pseudo-terminal (the only mode)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--line", default="bytes", choices=LINES,
                        help="simulate the byte streams or the UART pins")
    parser.add_argument("--divisor", type=parse_divisor, default=4,
                        help="cycles per bit with --line uart, whole or a fraction such as 13/3")
    parser.add_argument("--backend", default="pysim", choices=sorted(BACKENDS),
                        help="simulator (default pysim; cxxrtl compiles the SoC once, cached)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="stop after this many seconds (default 60)")
    args = parser.parse_args(argv)
    device = SimulatedSoC(config=preset(args.preset), line=args.line, divisor=args.divisor,
                          backend=args.backend)

    def announce(path):
        print(path, flush=True)
        print(f"serving the simulated {args.preset} SoC for {args.seconds:g} s: "
              f"uart://{path}", file=sys.stderr, flush=True)

    try:
        serve_pty(device, seconds=args.seconds, announce=announce)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
