"""FPGA build figures (utilization, Fmax, peak GOPS, time per stage) from `hw.build` reports.

``python -m sim.bench build`` tabulates every ``build/*/report.json`` (or the folders given with
``--out``); ``--run`` first builds ``--board``/``--device`` with `hw.build` (slow: yosys and
nextpnr run, minutes for an 85F).
"""

import json
from pathlib import Path

from hw import build as board_build

DESCRIPTION = "FPGA build figures from hw.build reports (optionally running the build)"


def add_arguments(parser):
    parser.add_argument("--out", type=Path, action="append",
                        help="build folder(s) holding report.json (default: build/*)")
    parser.add_argument("--run", action="store_true", help="run python -m hw.build first")
    parser.add_argument("--board", default="ulx3s")
    parser.add_argument("--device", help="device variant for --run (default: the board's)")


def _row(report):
    utilization = report["utilization"]
    row = {"board": f"{report['board']}-{report['variant']}",
           "array": f"{report['config']['rows']}x{report['config']['cols']}",
           "dataflow": report["config"]["dataflow"], "mult": report["config"]["multiplier"]}
    for name in ("LUT4", "FF", "MULT18X18D", "DP16KD"):
        if name in utilization:
            row[name] = f"{utilization[name]['used']}/{utilization[name]['available']}"
    row["target_MHz"] = report["target_clock_mhz"]
    row["fmax_MHz"] = report["system_fmax_mhz"]
    row["peak_GOPS"] = report["peak_int8_gops_at_fmax"]
    row["seed"] = report.get("nextpnr_seed")
    for stage, seconds in report["stage_seconds"].items():
        row[f"{stage}_s"] = seconds
    row["passed"] = report["passed"]
    return row


def run(args):
    if args.run:
        argv = ["--board", args.board] + (["--device", args.device] if args.device else [])
        if args.out:
            argv += ["--out", str(args.out[0])]
        board_build.main(argv)
    folders = args.out or sorted(path.parent for path in Path("build").glob("*/report.json"))
    reports = [json.loads((folder / "report.json").read_text()) for folder in folders
               if (folder / "report.json").exists()]
    notes = [f"{folder}: no report.json" for folder in folders
             if not (folder / "report.json").exists()]
    return {"rows": [_row(report) for report in reports], "reports": reports,
            "notes": notes or ["Figures from nextpnr --report via python -m hw.build."]}
