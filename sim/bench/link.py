"""Host link throughput: payload bytes per second of bulk writes and reads vs the UART line rate.

Runs the driver's `FrameLink` against the SoC simulated at the serial pins (host-side UART PHY ->
SoC UART PHY -> frame engine -> scratchpad and back), so every byte costs its 10 bit times.
Efficiency = payload bytes / (simulated cycles / cycles per byte): a ratio of bytes to bit times,
the same at any divisor, so a small divisor keeps the Python simulation short, and the same for
any array size, so the default is the small ``tiny`` preset. The host answers instantly (no USB
latency); the figures are what the gateware and the protocol allow.

The scratchpad window holds row r at ``r * stride`` words; bytes past a row's lanes in its stride
slot are not stored, so the bench writes zeros there and expects zeros back.
"""

import random

from hw.config import preset, PRESETS
from hw.soc.protocol import REPLY_OVERHEAD, REQUEST_OVERHEAD
from hw.soc.uart import FRAME_BITS
from sim.soc import parse_divisor
from sw.driver.device import Accelerator
from sw.driver.link import FrameLink
from sw.driver.sim import SimTransport

DESCRIPTION = "bulk write/read payload throughput vs UART line rate (SoC simulated at the pins)"


def add_arguments(parser):
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--divisor", type=parse_divisor, default=4,
                        help="simulated cycles per UART bit, whole or a fraction such as 13/3 "
                             "(default 4)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024],
                        help="transfer sizes in bytes (multiples of 4; default 256 1024, what "
                             "the tiny scratchpad window holds)")


def run(args):
    config = preset(args.preset)
    transport = SimTransport(config=config, line="uart", divisor=args.divisor)
    link = FrameLink(transport)
    device = transport.device
    row_bytes = max(config.rows, config.cols)
    slot_bytes = 4 * Accelerator(link).core.scratchpad_stride    # geometry the device reports
    window_bytes = config.scratchpad_rows * slot_bytes
    rng = random.Random(0)
    rows = []
    for size in args.sizes:
        if size > window_bytes:
            raise SystemExit(f"--sizes: {size} bytes exceed the {args.preset} scratchpad "
                             f"({window_bytes} bytes)")
        data = bytes(rng.getrandbits(8) if index % slot_bytes < row_bytes else 0
                     for index in range(size))
        address = 0x0100_0000
        for operation in ("bulk_write", "bulk_read"):
            start = device.cycles
            if operation == "bulk_write":
                link.bulk_write(address, data)
            else:
                assert link.bulk_read(address, size) == data, "read-back mismatch"
            cycles = device.cycles - start
            line_bytes = cycles / float(device.cycles_per_byte)
            efficiency = size / line_bytes
            frames = -(-size // link.max_payload)
            rows.append({
                "operation": operation,
                "bytes": size,
                "frames": frames,
                "cycles": cycles,
                "byte_times": round(line_bytes, 1),
                "efficiency": efficiency,
                f"B/s @ {config.uart_baud} baud": efficiency * config.uart_baud / FRAME_BITS,
            })
    link.close()
    return {
        "rows": rows,
        "notes": [
            f"UART simulated at the pins with divisor {args.divisor} "
            f"({float(FRAME_BITS * args.divisor):g} "
            f"cycles per byte); efficiency = payload bytes / byte times on the line, the same at "
            f"the real divisor ({float(config.uart_divisor):g} for {config.clock_mhz:g} MHz / "
            f"{config.uart_baud} baud).",
            f"Frame overhead: request {REQUEST_OVERHEAD} B + reply {REPLY_OVERHEAD} B, max payload "
            f"{link.max_payload} B per frame; stop-and-wait with an instant host.",
        ],
    }
