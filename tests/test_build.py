"""`python -m hw.build`: argument and budget errors (no tool runs), report handling, the bring-up
design in simulation, the placement-seed runs with a stand-in nextpnr, and two real builds (slow):
the 12F preset and the default 85F SoC, which must meet timing."""

import json
import random
import sys

import pytest

import hw.build
from hw.build import main, parse_nextpnr_report, slow_endpoints
from hw.soc.bringup import REPLY_LENGTH, REQUEST_BYTE, BringUp
from memory_helpers import assert_rejected
from sim.harness import run


@pytest.fixture
def no_tools(monkeypatch):
    """Fail the test if any tool would be started."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tool was started")
    monkeypatch.setattr(hw.build, "_run_jobs", refuse)
    monkeypatch.setattr(hw.build.subprocess, "run", refuse)
    monkeypatch.setattr(hw.build.subprocess, "Popen", refuse)


# The 16x16 candidate (140 DSP PEs + 116 fabric, 4 requant lanes) with the 85F preset's 16,384
# scratchpad rows and half its accumulator.
SIXTEEN_BY_SIXTEEN = ["--board", "ulx3s", "--rows", "16", "--cols", "16", "--dsp-pes", "140",
                      "--requant-lanes", "4", "--accumulator-rows", "1024"]


@pytest.mark.parametrize("argv, message", [
    (["--board", "vesa"], "Unknown board 'vesa'; supported boards are ulx3s"),
    (["--board", "ulx3s", "--device", "100F"], "Unknown device '100F' for board ulx3s"),
    (["--board", "ulx3s", "--clock", "107.3"],
     "nearest reachable frequencies are 107.143 MHz or 108.333 MHz"),
    (["--board", "ulx3s", "--clock", "10"],
     "at least 4 clock cycles per bit (at most 2500000 baud)"),
    (["--board", "ulx3s", "--baud", "6000000"], "above what ulx3s's USB UART supports"),
    (["--board", "ulx3s", "--rows", "16", "--cols", "16"],
     "MULT18X18D: needs 264, LFE5U-85F has 156 (over by 108"),
    (["--board", "ulx3s", "--device", "12F", "--rows", "32", "--cols", "32", "--multiplier",
      "lut"], "LUT4 (estimate): needs"),
    (["--board", "ulx3s", "--device", "12F", "--design", "soc"],
     "(soc design) does not fit LFE5U-12F"),
    (["--board", "ulx3s", "--rows", "0"], "rows must be in 1..32, not 0"),
    (["--board", "ulx3s", "--binary-width", "48"], "binary_width must be a power of two"),
    (["--board", "ulx3s", "--seed-minutes", "0"], "--seed-minutes must be positive, not 0"),
    (["--board", "ulx3s", "--dataflow", "output_stationary"],
     "The 'soc' design cannot be built as asked: The accelerator core, and so the SoC, runs "
     "dataflow 'weight_stationary' only, not 'output_stationary'"),
    (["--board", "ulx3s", "--device", "25F", "--design", "soc", "--dataflow",
      "output_stationary"], "and the engines' self-test (python -m hw.build --design bringup)"),
    (["--board", "ulx3s", "--seed-minutes", "nan"], "--seed-minutes must be positive, not nan"),
    (["--board", "ulx3s", "--clock", "nan"], "--clock must be a positive, finite number of MHz, "
                                             "not nan"),
    (["--board", "ulx3s", "--clock", "inf"], "--clock must be a positive, finite number of MHz, "
                                             "not inf"),
    (["--board", "ulx3s", "--clock", "-100"], "--clock must be a positive, finite number of MHz, "
                                              "not -100"),
    (["--board", "ulx3s", "--seed", "1", "-1"], "--seed takes integers in 0..2147483647 "
                                                "(nextpnr's range), not -1"),
    (["--board", "ulx3s", "--seed", "2147483648"], "--seed takes integers in 0..2147483647"),
    (["--board", "ulx3s", "--seed", "3", "3"], "--seed names 3 more than once"),
    (["--board", "ulx3s", "--rows", "-1"], "Invalid configuration (--rows -1): "
                                           "AcceleratorConfig.rows must be in 1..32, not -1"),
    (["--board", "ulx3s", "--cols", "100"], "Invalid configuration (--cols 100): "
                                            "AcceleratorConfig.cols must be in 1..32, not 100"),
    (["--board", "ulx3s", "--rows", "16", "--cols", "16", "--dsp-pes", "150"],
     "MULT18X18D: needs 158, LFE5U-85F has 156 (over by 2; "),
    (["--board", "ulx3s", "--multiplier", "mixed"],
     "Invalid configuration (--multiplier mixed): AcceleratorConfig.multiplier='mixed' needs "
     "dsp_pes"),
    (["--board", "ulx3s", "--multiplier", "lut", "--dsp-pes", "4"],
     "--dsp-pes is for --multiplier mixed, not --multiplier lut"),
    (["--board", "ulx3s", "--dsp-pes", "144"], "dsp_pes must be in 1..143"),
    (["--board", "ulx3s", "--parameter-rows", "100"],
     "Invalid configuration (--parameter-rows 100): AcceleratorConfig.parameter_rows must be a "
     "power of two in 16..65536, not 100"),
    (SIXTEEN_BY_SIXTEEN, "DP16KD: needs 216, LFE5U-85F has 208 (over by 8; scratchpad 128 + "
                         "accumulator 30 + binary 32 + binary_thresholds 8 + parameters 4 + "
                         "binary_results 12 + link_staging 2"),
    (["--board", "ulx3s", "--device", "12F", "--rows", "4", "--cols", "4", "--dsp-pes", "8",
      "--clock", "200"],
     "the LUT multiplier's two pipeline stages were measured to meet (over by 50.00 MHz"),
])
def test_errors_before_any_tool(no_tools, capsys, tmp_path, argv, message):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["--board", "ulx3s", "--dataflow", "diagonal"],
    ["--board", "ulx3s", "--rows", "twelve"],
    ["--board", "ulx3s", "--seed", "1.5"],
    ["--board", "ulx3s", "--clock", "fast"],
    ["--board", "ulx3s", "--dsp-pes", "most"],
    ["--device", "85F"],
])
def test_argument_errors(no_tools, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_board_alone_picks_85f_and_says_so(no_tools, capsys, tmp_path):
    assert main(["--board", "ulx3s", "--report-only", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "No --device given: building for ulx3s 85F (LFE5U-85F)" in captured.out
    assert "No --design given: building the 'soc' design, 85F's default" in captured.out
    assert "12x12 " in captured.out and " dsp array" in captured.out
    assert "no previous build" in captured.err


def test_dsp_pes_auto_fills_the_dsps_left(no_tools, capsys, tmp_path):
    # 16-lane scratchpad rows take 64 DP16KD per 8,192 rows: the preset's 16,384 do not fit
    # beside a 16x16 array's accumulator.
    argv = ["--board", "ulx3s", "--rows", "16", "--cols", "16", "--dsp-pes", "auto",
            "--scratchpad-rows", "8192"]
    assert main(argv + ["--report-only", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert ("--dsp-pes auto: 148 of 256 PEs on a MULT18X18D (LFE5U-85F has 156, 8 for the "
            "requantizer): multiplier 'mixed'") in captured.out
    assert "16x16 weight_stationary mixed array (148 DSP PEs)" in captured.out
    assert "no previous build" in captured.err


def test_smaller_parameter_and_binary_result_memories_fit_a_16x16(no_tools, capsys, tmp_path):
    """The 16x16 with the 12x12's 16,384 scratchpad rows fits once the parameter and binary
    result memories give up the 8 blocks it is over by (the case above)."""
    argv = SIXTEEN_BY_SIXTEEN + ["--parameter-rows", "512", "--binary-result-rows", "256"]
    assert main(argv + ["--report-only", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "156 MULT18X18D of 156, 208 DP16KD of 208" in captured.out
    assert "no previous build" in captured.err


def test_bringup_keeps_output_stationary(no_tools, capsys, tmp_path):
    """The self-test drives the array alone, which runs either dataflow bit-exactly."""
    argv = ["--board", "ulx3s", "--device", "12F", "--dataflow", "output_stationary"]
    assert main(argv + ["--report-only", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "design bringup: 4x6 output_stationary dsp array" in captured.out
    assert "no previous build" in captured.err


@pytest.mark.parametrize("below_a_file, message", [
    ((), "is a file, not a folder"),
    (("build",), "cannot write into it (Not a directory)"),
])
def test_an_unusable_out_folder_is_refused_before_elaborating(no_tools, monkeypatch, capsys,
                                                              tmp_path, below_a_file, message):
    def refuse(*args, **kwargs):
        raise AssertionError("elaborated")
    monkeypatch.setattr(hw.build, "BoardTop", refuse)
    (tmp_path / "file").write_text("")
    out = tmp_path.joinpath("file", *below_a_file)
    assert main(["--board", "ulx3s", "--device", "12F", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"--out {out}" in error and message in error


def test_a_new_out_folder_is_created_and_probed_before_elaborating(no_tools, monkeypatch,
                                                                   tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("elaborated")
    monkeypatch.setattr(hw.build, "BoardTop", refuse)
    out = tmp_path / "a" / "b"
    with pytest.raises(AssertionError, match="elaborated"):
        main(["--board", "ulx3s", "--device", "12F", "--out", str(out)])
    assert list(out.iterdir()) == []


def test_report_only_creates_no_out_folder(no_tools, capsys, tmp_path):
    out = tmp_path / "a"
    assert main(["--board", "ulx3s", "--device", "12F", "--report-only",
                 "--out", str(out)]) == 2
    assert "no previous build" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name, text", [
    ("nextpnr-report.json", '{"utilization": {"TRELLIS_COMB": '),
    ("nextpnr-report.json", '{"fmax": {}}'),
    ("nextpnr-report.json", "[1, 2]"),
    ("report.json", "not json"),
])
def test_report_only_refuses_a_corrupt_report(no_tools, capsys, tmp_path, name, text):
    (tmp_path / "nextpnr-report.json").write_text(json.dumps(nextpnr_report(131.5, 100.01)))
    (tmp_path / name).write_text(text)
    assert main(["--board", "ulx3s", "--device", "85F", "--report-only",
                 "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / name}" in error and "rebuild" in error


def nextpnr_report(fmax_mhz, constraint_mhz, luts=20_000):
    return {
        "fmax": {"$glbnet$clock.sync_pll_clk": {"achieved": fmax_mhz,
                                                "constraint": constraint_mhz}},
        "utilization": {
            "TRELLIS_COMB": {"used": luts, "available": 83640},
            "TRELLIS_FF": {"used": 30_000, "available": 83640},
            "MULT18X18D": {"used": 152, "available": 156},
            "DP16KD": {"used": 40, "available": 208},
            "EHXPLLL": {"used": 1, "available": 4},
            "DCCA": {"used": 2, "available": 56},
        },
    }


def detailed_timings(arrivals):
    """nextpnr's ``detailed_net_timings``: one net per (driver, cell, port, arrival ns)."""
    return [{"driver": driver, "port": "Q", "net": f"{driver}_net", "event": "posedge clk",
             "sources": [], "endpoints": [{"cell": cell, "port": port, "event": "posedge clk",
                                           "delay": [arrival / 2, arrival]}]}
            for driver, cell, port, arrival in arrivals]


def test_parse_nextpnr_report(tmp_path):
    path = tmp_path / "report.json"
    report = nextpnr_report(131.5, 105)
    report["detailed_net_timings"] = detailed_timings([
        ("a_TRELLIS_FF_Q", "store.column_TRELLIS_FF_Q_3", "DI", 10.5),
        ("b_TRELLIS_FF_Q", "store.column_TRELLIS_FF_Q_3", "DI", 11.25),    # the worst counts
        ("c_TRELLIS_FF_Q", "store.column_TRELLIS_FF_Q_4", "M", 9.75),
        ("d_TRELLIS_FF_Q", "line.storage.0.9$DPRAM_COMB3", "WRE", 9.0),
    ])
    path.write_text(json.dumps(report))
    utilization, fmax, endpoints = parse_nextpnr_report(path)
    assert utilization["LUT4"] == {"used": 20_000, "available": 83640}
    assert utilization["MULT18X18D"] == {"used": 152, "available": 156}
    assert set(utilization) == {"LUT4", "FF", "MULT18X18D", "DP16KD", "EHXPLLL"}
    assert fmax == {"$glbnet$clock.sync_pll_clk": {"achieved_mhz": 131.5, "constraint_mhz": 105}}
    assert endpoints == {("store.column_TRELLIS_FF_Q_3", "DI"): 11.25,
                         ("store.column_TRELLIS_FF_Q_4", "M"): 9.75,
                         ("line.storage.0.9$DPRAM_COMB3", "WRE"): 9.0}
    # Registers of one signal are one group; only arrivals past the period count.
    assert slow_endpoints(endpoints, 9.5) == [
        {"signal": "store.column", "arrival_ns": 11.25, "endpoints": 2}]
    assert slow_endpoints(endpoints, 8.0)[1] == {"signal": "line.storage", "arrival_ns": 9.0,
                                                 "endpoints": 1}
    assert slow_endpoints(endpoints, 12.0) == []


@pytest.mark.parametrize("fmax_mhz, status", [(131.5, 0), (99.25, 1)])
def test_report_only_judges_timing(no_tools, capsys, tmp_path, fmax_mhz, status):
    # nextpnr states the constraint through a rounded period, slightly off the target clock.
    (tmp_path / "nextpnr-report.json").write_text(json.dumps(nextpnr_report(fmax_mhz, 100.01)))
    assert main(["--board", "ulx3s", "--device", "85F", "--report-only",
                 "--out", str(tmp_path)]) == status
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["device"] == "LFE5U-85F"
    assert report["config"]["rows"] == 12 and report["target_clock_mhz"] == 100
    assert report["system_fmax_mhz"] == fmax_mhz
    assert report["peak_int8_gops_at_fmax"] == pytest.approx(2 * 144 * fmax_mhz / 1e3)
    assert report["timing_met"] is (status == 0)
    assert report["passed"] is (status == 0)
    assert report["slow_endpoints"] == [] and report["nextpnr_seed"] is None
    assert report["nextpnr_seeds"] == {}
    output = capsys.readouterr().out
    assert ("PASS" if status == 0 else "timing not met") in output
    assert "MULT18X18D" in output


@pytest.mark.parametrize("luts, status", [(12_000, 0), (12_500, 1)])
def test_12f_is_judged_against_its_own_budget(no_tools, capsys, tmp_path, luts, status):
    # nextpnr places a 12F on the 25F's die and reports the die's 24,288 LUTs as available.
    nextpnr = nextpnr_report(131.5, 105.01, luts=luts)
    nextpnr["utilization"]["TRELLIS_COMB"]["available"] = 24_288
    nextpnr["utilization"].update({"TRELLIS_FF": {"used": 9_000, "available": 24_288},
                                   "MULT18X18D": {"used": 28, "available": 28},
                                   "DP16KD": {"used": 20, "available": 56}})
    (tmp_path / "nextpnr-report.json").write_text(json.dumps(nextpnr))
    assert main(["--board", "ulx3s", "--device", "12F", "--report-only",
                 "--out", str(tmp_path)]) == status
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["utilization"]["LUT4"] == {"used": luts, "available": 12_096,
                                             "die_available": 24_288}
    assert report["utilization"]["DP16KD"]["available"] == 32
    assert report["fits"] is (status == 0)
    if status:
        assert f"does not fit: LUT4 {luts} > 12096 on LFE5U-12F" in capsys.readouterr().out


def test_program_refuses_a_failed_build(no_tools, capsys, tmp_path):
    (tmp_path / "nextpnr-report.json").write_text(json.dumps(nextpnr_report(80, 100.01)))
    assert main(["--board", "ulx3s", "--report-only", "--program", "--out", str(tmp_path)]) == 1
    assert "Not programming" in capsys.readouterr().err


# Placement seeds side by side --------------------------------------------------------------------

FAKE_NEXTPNR = """#!{python}
import json, pathlib, sys, time
args = sys.argv[1:]
def option(name):
    return args[args.index(name) + 1]
seed = option("--seed")
run = json.loads(pathlib.Path(option("--json")).read_text())[seed]
print("Info: Running Static placer...", flush=True)
marks = pathlib.Path(option("--json")).resolve().parent
(marks / ("started-" + seed)).touch()
for other in run.get("after", ()):          # wait until those seeds have started
    deadline = time.monotonic() + 60
    while not (marks / f"started-{{other}}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
time.sleep(run["seconds"])
if run.get("error"):
    print("ERROR: " + run["error"], flush=True)
    sys.exit(1)
report = {{"fmax": {{"clk": {{"achieved": run["fmax"], "constraint": 100.0}}}},
          "utilization": {{}}}}
pathlib.Path(option("--report")).write_text(json.dumps(report))
pathlib.Path(option("--textcfg")).write_text("placed with seed " + seed)
"""

NEXTPNR_ARGV = ["nextpnr-ecp5", "--report", "nextpnr-report.json", "--log", "top.tim", "--json",
                "top.json", "--lpf", "top.lpf", "--textcfg", "top.config"]


def place_and_route(tmp_path, monkeypatch, runs, *, parallel=None, time_limit=None):
    """`hw.build._place_and_route` with a stand-in nextpnr that behaves per seed as `runs` says
    (seconds to take, then the Fmax it reports or an error); `parallel` runs at a time (None:
    every seed at once), each stopped after `time_limit` seconds (None: no limit)."""
    tool = tmp_path / "fake-nextpnr"
    tool.write_text(FAKE_NEXTPNR.format(python=sys.executable))
    tool.chmod(0o755)
    monkeypatch.setenv("NEXTPNR_ECP5", str(tool))
    (tmp_path / "top.json").write_text(json.dumps({str(seed): run for seed, run in runs.items()}))
    said = []
    result = hw.build._place_and_route(NEXTPNR_ARGV, tuple(runs), tmp_path, 100.0,
                                       verbose=False, say=said.append,
                                       parallel=parallel or len(runs), time_limit=time_limit)
    return result, said


def test_the_first_seed_to_meet_timing_stops_the_others(tmp_path, monkeypatch):
    (returncode, seconds, kept, outcomes), said = place_and_route(tmp_path, monkeypatch, {
        1: {"seconds": 600, "fmax": 101.0},      # would pass, but its router takes too long
        2: {"seconds": 0.0, "fmax": 104.0, "after": (1, 3)},  # meets timing first
        3: {"seconds": 600, "fmax": 120.0},      # would be better, but is stopped
    })
    assert (returncode, kept) == (0, 2)
    assert outcomes == {1: "stopped", 2: 104.0, 3: "stopped"}
    assert seconds < 60
    assert (tmp_path / "top.config").read_text() == "placed with seed 2"
    assert json.loads((tmp_path / "nextpnr-report.json").read_text())["fmax"]["clk"][
        "achieved"] == 104.0
    for other in (1, 3):
        assert any(f"[nextpnr:{other}" in line and "stopped: nextpnr:2 met timing" in line
                   for line in said)
    assert any(line.startswith("[nextpnr:1 ") and "Static placer" in line for line in said)


def started_at(said, label):
    """Seconds at which the stand-in run `label` printed its first line."""
    return min(float(line.split()[1].rstrip("s]")) for line in said
               if line.startswith(f"[{label} "))


def test_seeds_beyond_the_core_count_wait_their_turn(tmp_path, monkeypatch):
    (returncode, _, kept, outcomes), said = place_and_route(tmp_path, monkeypatch, {
        1: {"seconds": 2.0, "fmax": 96.0},       # long enough for seed 2 to start under load
        2: {"seconds": 600, "fmax": 97.0},       # still running when seed 3 meets timing
        3: {"seconds": 0.0, "fmax": 101.0},      # starts when seed 1 ends
        4: {"seconds": 600, "fmax": 130.0},      # never started
    }, parallel=2)
    assert (returncode, kept) == (0, 3)
    assert outcomes == {1: 96.0, 2: "stopped", 3: 101.0, 4: "stopped"}
    assert started_at(said, "nextpnr:3") >= 2.0 > started_at(said, "nextpnr:2")
    assert not any(line.startswith("[nextpnr:4 ") and "Info" in line for line in said)
    assert not (tmp_path / "seed-4" / "nextpnr.log").exists()
    assert (tmp_path / "top.config").read_text() == "placed with seed 3"


def test_a_seed_over_the_time_limit_is_stopped_and_the_next_one_starts(tmp_path, monkeypatch):
    (returncode, seconds, kept, outcomes), said = place_and_route(tmp_path, monkeypatch, {
        1: {"seconds": 600, "fmax": 130.0},      # a router that does not converge
        2: {"seconds": 0.0, "fmax": 101.0},      # starts when seed 1 is stopped
    }, parallel=1, time_limit=1.0)
    assert (returncode, kept) == (0, 2)
    assert outcomes == {1: hw.build.TIMED_OUT, 2: 101.0}
    assert started_at(said, "nextpnr:2") >= 1.0
    assert seconds < 60
    assert any(line.startswith("[nextpnr:1 ") and "stopped: still running after" in line
               for line in said)


def test_every_seed_over_the_time_limit_fails_the_stage(tmp_path, monkeypatch):
    (returncode, _, kept, outcomes), _ = place_and_route(tmp_path, monkeypatch, {
        1: {"seconds": 600, "fmax": 130.0},
        2: {"seconds": 600, "fmax": 120.0},
    }, time_limit=0.5)
    assert (returncode, kept) == (hw.build.TIMED_OUT, 1)
    assert outcomes == {1: hw.build.TIMED_OUT, 2: hw.build.TIMED_OUT}


@pytest.fixture
def timed_out_flow(tmp_path, monkeypatch):
    """A stand-in yosys that does nothing and a place and route whose seeds 1 and 2 both time
    out; returns the `time_limit` of each place-and-route call."""
    yosys = tmp_path / "fake-yosys"
    yosys.write_text(f"#!{sys.executable}\n")
    yosys.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(yosys))
    calls = []

    def place_and_route(*args, **kwargs):
        calls.append(kwargs["time_limit"])
        return hw.build.TIMED_OUT, 1.0, 1, {1: hw.build.TIMED_OUT, 2: hw.build.TIMED_OUT}

    monkeypatch.setattr(hw.build, "_place_and_route", place_and_route)
    return calls


def test_the_netlist_carries_no_source_locations(tmp_path, timed_out_flow):
    """Source paths and line numbers would make yosys's naming, and so a seed's result, depend on
    the checkout."""
    out = tmp_path / "build"
    main(["--board", "ulx3s", "--device", "12F", "--out", str(out)])
    netlist = (out / "top.il").read_text()
    assert "attribute \\generator \"Amaranth\"" in netlist
    assert "attribute \\src" not in netlist


@pytest.mark.parametrize("minutes, time_limit", [("0.5", 30.0), ("inf", None)])
def test_the_build_passes_its_seed_time_limit_and_names_a_timed_out_seed(
        tmp_path, capsys, timed_out_flow, minutes, time_limit):
    calls = timed_out_flow
    out = tmp_path / "build"
    assert main(["--board", "ulx3s", "--device", "12F", "--seed", "1", "2", "--seed-minutes",
                 minutes, "--out", str(out)]) == 1
    assert calls == [time_limit]
    output = capsys.readouterr().out
    assert "Seeds (system Fmax): 1 timed out, 2 timed out; kept seed 1" in output
    assert "Result: FAIL (nextpnr failed: seed 1 timed out (--seed-minutes))" in output
    assert json.loads((out / "report.json").read_text())["nextpnr_seeds"] == {
        "1": "timed out", "2": "timed out"}


def test_without_a_passing_seed_the_fastest_is_kept(tmp_path, monkeypatch):
    (returncode, _, kept, outcomes), _ = place_and_route(tmp_path, monkeypatch, {
        1: {"seconds": 0.0, "error": "Failed to route"},
        2: {"seconds": 0.0, "fmax": 91.0},
        3: {"seconds": 0.0, "fmax": 95.5},
    })
    assert (returncode, kept) == (0, 3)
    assert outcomes == {1: "failed", 2: 91.0, 3: 95.5}
    assert "ERROR: Failed to route" in (tmp_path / "seed-1" / "nextpnr.log").read_text()


def test_every_seed_failing_reports_the_first_failure(tmp_path, monkeypatch):
    (returncode, _, kept, outcomes), _ = place_and_route(tmp_path, monkeypatch, {
        4: {"seconds": 0.0, "error": "Failed to place"},
        5: {"seconds": 0.0, "error": "Failed to route"},
    })
    assert returncode == 1 and kept == 4
    assert outcomes == {4: "failed", 5: "failed"}
    assert "ERROR: Failed to place" in (tmp_path / "nextpnr.log").read_text()


# Bring-up design in simulation ------------------------------------------------------------------

DIVISOR = 4


def frame_levels(byte):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def decode(samples, divisor):
    """Bytes on a sampled line, sampled mid-bit (an independent 8N1 model)."""
    result, cycle = [], 0
    while cycle < len(samples):
        if samples[cycle]:
            cycle += 1
            continue
        if cycle + 10 * divisor > len(samples):
            break
        bits = [samples[cycle + index * divisor + divisor // 2] for index in range(10)]
        assert bits[9] == 1, "stop bit"
        result.append(sum(bit << i for i, bit in enumerate(bits[1:9])))
        cycle += 10 * divisor
    return result


@pytest.mark.parametrize("dataflow, multiplier", [("output_stationary", "dsp"),
                                                  ("weight_stationary", "lut")])
def test_bringup_echoes_and_reports_a_changing_signature(dataflow, multiplier):
    design = BringUp(rows=2, cols=3, dataflow=dataflow, multiplier=multiplier, requant_lanes=1,
                     binary_width=8, binary_lanes=2, binary_max_k=32, binary_max_n=4,
                     uart_divisor=DIVISOR, heartbeat_cycles=40, led_count=8)
    echo = [random.Random(7).randrange(256) for _ in range(3)]
    echo = [byte for byte in echo if byte != REQUEST_BYTE]
    sent = echo + [REQUEST_BYTE]
    line_time = 10 * DIVISOR
    total = (len(sent) + 2) * line_time + REPLY_LENGTH * 2 * line_time + 100
    samples, leds = [], []

    async def host(ctx):
        for byte in sent + [None, REQUEST_BYTE]:
            levels = frame_levels(byte) if byte is not None else [1] * 40
            for level in levels:
                ctx.set(design.rxd, level)
                for _ in range(DIVISOR):
                    await ctx.tick()

    async def monitor(ctx):
        for _ in range(total):
            samples.append(ctx.get(design.txd))
            leds.append(ctx.get(design.leds))
            await ctx.tick()

    run(design, host, monitor, name=f"bringup_{dataflow}")
    received = decode(samples, DIVISOR)
    assert received[:len(echo)] == echo
    first, second = (received[len(echo):len(echo) + REPLY_LENGTH],
                     received[len(echo) + REPLY_LENGTH:])
    assert len(first) == len(second) == REPLY_LENGTH
    assert first[0] == second[0] == 0, "status: no link or framing errors"
    assert first[1:] != second[1:], "the engines keep changing the signature"
    heartbeat = [value & 1 for value in leds]
    assert 0 < sum(heartbeat) < len(heartbeat)


# One real build ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_preset_build_on_12f_fits(tmp_path, capsys):
    """The 12F preset as a user builds it: its default design, timed at the preset clock."""
    out = tmp_path / "build"
    status = main(["--board", "ulx3s", "--device", "12F", "--out", str(out)])
    output = capsys.readouterr().out
    assert status == 0, output
    report = json.loads((out / "report.json").read_text())
    assert (report["variant"], report["design"]) == ("12F", "bringup")
    assert report["passed"] and report["timing_met"] and report["fits"]
    assert report["system_fmax_mhz"] >= report["target_clock_mhz"]
    utilization = report["utilization"]
    assert utilization["LUT4"]["used"] <= utilization["LUT4"]["available"] == 12_096
    assert utilization["DP16KD"]["used"] <= utilization["DP16KD"]["available"] == 32
    assert utilization["MULT18X18D"]["used"] == 4 * 6 + 4
    assert (out / "top.bit").stat().st_size > 0
    assert set(report["stage_seconds"]) == {"elaborate", "yosys", "nextpnr", "ecppack"}
    assert report["nextpnr_seed"] in (1, 2)
    assert report["nextpnr_seeds"][str(report["nextpnr_seed"])] == report["system_fmax_mhz"]
    assert "[yosys" in output and "[nextpnr" in output and "Result: PASS" in output


@pytest.mark.slow
def test_default_build_on_85f_meets_timing(tmp_path, capsys):
    """The main job as a user runs it: `--board ulx3s` alone builds the full SoC on the 85F, and
    it must fit and meet timing at the preset clock (nextpnr's own report)."""
    out = tmp_path / "build"
    status = main(["--board", "ulx3s", "--out", str(out)])
    output = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert status == 0, output
    assert (report["variant"], report["design"]) == ("85F", "soc")
    assert report["passed"] and report["timing_met"] and report["fits"]
    assert report["system_fmax_mhz"] >= report["target_clock_mhz"]
    config = report["config"]
    assert (config["rows"], config["cols"]) == (12, 12)
    assert report["peak_int8_gops_at_fmax"] == pytest.approx(
        2 * 144 * report["system_fmax_mhz"] / 1e3)
    assert report["utilization"]["MULT18X18D"]["used"] == 144 + 4 * config["requant_lanes"]
    assert (out / "top.bit").stat().st_size > 0
    assert "Result: PASS" in output


BRINGUP_ARGS = dict(rows=2, cols=2, dataflow="output_stationary", multiplier="dsp",
                    requant_lanes=1, binary_width=8, binary_lanes=2, binary_max_k=32,
                    binary_max_n=4, uart_divisor=4, heartbeat_cycles=10, led_count=8)


@pytest.mark.parametrize("change, error, message", [
    ({"dataflow": "diagonal"}, ValueError, "dataflow must be one of"),
    ({"multiplier": "dsp48"}, ValueError, "multiplier must be one of"),
    ({"heartbeat_cycles": 0}, ValueError, "heartbeat_cycles must be >= 1, not 0"),
    ({"led_count": 2}, ValueError, "led_count must be in 3..64, not 2"),
    ({"led_count": 8.0}, TypeError, "led_count must be an integer"),
    ({"uart_divisor": 2}, ValueError, "divisor must be at least 4"),
])
def test_bringup_rejects_bad_parameters(change, error, message):
    # The half-built engine that refused (UARTPhy for uart_divisor) is created in hw.soc.bringup.
    assert_rejected(error, message, BringUp, **{**BRINGUP_ARGS, **change})
