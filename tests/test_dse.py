"""`python -m hw.dse`: bad ranges and an unreachable scheduler stopped before any build, and sweeps
on a real two-worker `LocalCluster` with stand-in tools (yosys, nextpnr, ecppack) whose result per
point is set by the test: the rows equal `run_point` run one by one in this process, a failing
point and a worker killed mid-build are reported as such while the sweep goes on, and a second run
takes every point from the cache."""

import csv
import json
import sys

import pytest

from boards.catalog import variant
from hw.dse.__main__ import main
from hw.dse.pareto import pareto_front
import sim.bench.core
from hw.dse.point import run_point

# Per point (by build folder name): the Fmax, the clock constraint nextpnr states and the LUT4 it
# reports, an error, or (the first time) killing the Dask worker that runs it: the tool's parent
# process.
STAND_IN_NEXTPNR = """#!{python}
import json, os, pathlib, signal, sys
args = sys.argv[1:]
def option(name):
    return args[args.index(name) + 1]
name = pathlib.Path.cwd().parent.name
with open({log!r}, "a") as log:
    log.write("nextpnr " + name + "\\n")
run = json.loads({runs!r})[name]
marker = pathlib.Path({log!r} + "." + name)
if run.get("kill_once") and not marker.exists():
    marker.write_text("killed")
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(1)
if run.get("error"):
    print("ERROR: " + run["error"], flush=True)
    sys.exit(1)
report = {{"fmax": {{"clk": {{"achieved": run["fmax"], "constraint": run["clock"]}}}},
          "utilization": {{"TRELLIS_COMB": {{"used": run["luts"], "available": 24288}},
                          "TRELLIS_FF": {{"used": run["luts"] // 2, "available": 24288}},
                          "MULT18X18D": {{"used": 5, "available": 28}},
                          "DP16KD": {{"used": 7, "available": 56}}}}}}
pathlib.Path(option("--report")).write_text(json.dumps(report))
pathlib.Path(option("--textcfg")).write_text("config")
"""
# yosys and ecppack: record the call and write what the next stage reads.
STAND_IN_TOOL = """#!{python}
import pathlib
with open({log!r}, "a") as log:
    log.write("{tool} " + pathlib.Path.cwd().name + "\\n")
pathlib.Path("{output}").write_text("{{}}")
"""

RUNS = {
    "12F_rows1_cols1": {"fmax": 131.25, "clock": 105.01, "luts": 4100},    # passes
    "12F_rows1_cols2": {"fmax": 97.5, "clock": 105.01, "luts": 4300},      # misses timing
    "12F_rows2_cols1": {"error": "Failed to route"},                       # nextpnr fails
    "12F_rows2_cols2": {"kill_once": True, "fmax": 140.0, "clock": 105.01, "luts": 4500},
}
SMALL = ["--device", "12F", "--binary-width", "8", "--binary-lanes", "1", "--seeds", "1"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Stand-in tools on the environment (inherited by the cluster's workers); yields the folder
    and the log of tool calls."""
    folder = tmp_path_factory.mktemp("dse")
    log = folder / "tools.log"
    tools = {"NEXTPNR_ECP5": STAND_IN_NEXTPNR.format(python=sys.executable, log=str(log),
                                                     runs=json.dumps(RUNS)),
             "YOSYS": STAND_IN_TOOL.format(python=sys.executable, log=str(log), tool="yosys",
                                           output="top.json"),
             "ECPPACK": STAND_IN_TOOL.format(python=sys.executable, log=str(log), tool="ecppack",
                                             output="top.bit")}
    with pytest.MonkeyPatch.context() as patch:
        for variable, text in tools.items():
            path = folder / variable.lower()
            path.write_text(text)
            path.chmod(0o755)
            patch.setenv(variable, str(path))
        yield folder, log


def sweep(folder, *options):
    return main([*SMALL, *options, "--workers", "2", "--out", str(folder / "out"),
                 "--cache", str(folder / "cache")])


def rows_of(folder):
    return {row["name"]: row for row in json.loads((folder / "out" / "results.json").read_text())}


def without_times(row):
    return {key: value for key, value in row.items() if key not in ("build_seconds", "cached")}


@pytest.fixture(scope="module")
def first_sweep(flow):
    folder, log = flow
    status = sweep(folder, "--rows", "1,2", "--cols", "1,2,40")
    return status, rows_of(folder), log.read_text().splitlines()


def test_a_sweep_reports_every_point_and_goes_on_past_failures(first_sweep, flow):
    status, rows, calls = first_sweep
    assert status == 1          # a point was lost
    assert {name: row["status"] for name, row in rows.items()} == {
        "12F_rows1_cols1": "pass", "12F_rows1_cols2": "fail", "12F_rows2_cols1": "fail",
        "12F_rows2_cols2": "lost", "12F_rows1_cols40": "pruned", "12F_rows2_cols40": "pruned"}
    passed = rows["12F_rows1_cols1"]
    assert (passed["LUT4"], passed["FF"], passed["DSP"], passed["EBR"]) == (4100, 2050, 5, 7)
    assert passed["fmax_mhz"] == 131.25 and passed["clock_mhz"] == 105
    assert passed["peak_gops_at_target"] == pytest.approx(2 * 1 * 1 * 105 / 1e3)
    assert passed["peak_gops_at_fmax"] == pytest.approx(2 * 1 * 1 * 131.25 / 1e3)
    assert (passed["seed"], passed["cached"]) == (1, False)
    assert "timing not met on clk: 97.50 MHz < 105.01 MHz" in rows["12F_rows1_cols2"]["problems"]
    assert "nextpnr failed: ERROR: Failed to route" in rows["12F_rows2_cols1"]["problems"]
    assert rows["12F_rows2_cols2"]["problems"] == "the worker building it died (KilledWorker)"
    assert "cols must be in 1..32, not 40" in rows["12F_rows1_cols40"]["problems"]
    built = [f"12F_rows{r}_cols{c}" for r in (1, 2) for c in (1, 2)]
    assert sorted(calls) == sorted([f"{tool} {name}" for name in built
                                    for tool in ("yosys", "nextpnr")]
                                   + ["ecppack 12F_rows1_cols1", "ecppack 12F_rows1_cols2"])
    with open(flow[0] / "out" / "results.csv") as file:
        assert {row["name"]: row["status"] for row in csv.DictReader(file)} == {
            name: row["status"] for name, row in rows.items()}
    assert [row["name"] for row in pareto_front(list(rows.values()))] == ["12F_rows1_cols1"]


def test_an_existing_scheduler_runs_the_sweep(first_sweep, flow, capsys):
    from distributed import LocalCluster

    folder, log = flow
    calls = log.read_text()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        assert sweep(folder, "--rows", "1", "--cols", "1,2", "--scheduler",
                     cluster.scheduler_address) == 0
    assert log.read_text() == calls, "both points come from the cache"
    assert f"on {cluster.scheduler_address}" in capsys.readouterr().out
    rows = rows_of(folder)
    assert {name: row["status"] for name, row in rows.items()} == {"12F_cols1": "pass",
                                                                   "12F_cols2": "fail"}
    assert all(row["cached"] for row in rows.values())


def point_task(folder, rows, cols, bench=()):
    """`run_point`'s task for the point of the sweeps above called 12F_rows<rows>_cols<cols>."""
    argv = ["--board", "ulx3s", "--device", "12F", "--rows", str(rows), "--cols", str(cols),
            "--binary-width", "8", "--binary-lanes", "1", "--seed", "1", "--seed-minutes", "30"]
    return {"name": f"12F_rows{rows}_cols{cols}", "argv": argv, "out": str(folder / "out"),
            "cache": str(folder / "cache"), "bench": list(bench)}


def test_the_sweep_equals_the_points_run_one_by_one(first_sweep, flow, tmp_path):
    _, rows, _ = first_sweep
    for shape in ((1, 1), (1, 2), (2, 1)):
        alone = run_point(point_task(tmp_path, *shape))
        assert without_times(alone) == without_times(rows[alone["name"]])


def test_a_passing_point_runs_the_bench_on_its_core(flow, tmp_path, monkeypatch):
    benched = []

    def bench_core(config, wanted):
        benched.append((config, wanted))
        return [{"layer": "gemm_64x576x64", "active_cycles": 3000, "utilization": 0.75,
                 "bit_exact": True},
                {"layer": "binary_256x256", "active_cycles": 500, "utilization": 0.5,
                 "bit_exact": True}]

    monkeypatch.setattr(sim.bench.core, "bench_core", bench_core)
    row = run_point(point_task(tmp_path, 1, 1, ["gemm_64x576x64", "binary_256x256"]))
    [(config, wanted)] = benched
    assert (config.rows, config.cols, config.multiplier) == (1, 1, "lut")
    # The bench runs on the point's own memories (the 12F preset's), streaming what does not fit.
    assert config.scratchpad_rows == variant("ulx3s", "12F")[2].preset.scratchpad_rows
    assert wanted == {"gemm_64x576x64", "binary_256x256"}
    assert row["inferences_per_s"] == pytest.approx(105e6 / 3500)
    assert row["bench_cycles"] == 3500 and row["bench_bit_exact"]
    assert (row["gemm_64x576x64_utilization"], row["binary_256x256_utilization"]) == (0.75, 0.5)
    assert pareto_front([row])[0]["inferences_per_s"] == row["inferences_per_s"]
    assert run_point(point_task(tmp_path, 1, 2, ["binary_256x256"])).keys().isdisjoint(
        {"inferences_per_s", "bench_cycles"}), "a point that misses timing is not benched"
    assert len(benched) == 1


def test_a_second_run_builds_only_the_lost_point(first_sweep, flow, capsys):
    folder, log = flow
    calls = log.read_text().splitlines()
    plot = folder / "front.png"
    assert sweep(folder, "--rows", "1,2", "--cols", "1,2,40", "--plot", str(plot)) == 0
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = rows_of(folder)
    assert log.read_text().splitlines()[len(calls):] == [
        f"{tool} 12F_rows2_cols2" for tool in ("yosys", "nextpnr", "ecppack")]
    assert {name: row["cached"] for name, row in rows.items() if "cached" in row} == {
        "12F_rows1_cols1": True, "12F_rows1_cols2": True, "12F_rows2_cols1": True,
        "12F_rows2_cols2": False}
    assert rows["12F_rows2_cols2"]["status"] == "pass"
    for name in ("12F_rows1_cols1", "12F_rows1_cols2", "12F_rows2_cols1"):
        assert without_times(rows[name]) == without_times(first_sweep[1][name])
    output = capsys.readouterr().out
    assert "12F_rows1_cols1: pass (cached)" in output
    assert [row["name"] for row in pareto_front(list(rows.values()))] == [
        "12F_rows1_cols1", "12F_rows2_cols2"]


@pytest.mark.parametrize("argv, message", [
    (["--rows", ""], "--rows: empty range"),
    (["--rows", "4,,6"], "--rows '4,,6': empty value in the list"),
    (["--rows", "8:4:2"], "the range is empty (start 8 > stop 4)"),
    (["--rows", "4:8:0"], "the step must be positive"),
    (["--cols", "4,6,4"], "--cols '4,6,4': 4 given more than once"),
    (["--rows", "four"], "--rows: 'four' is not a number"),
    (["--rows", "2.5"], "--rows: '2.5' is not an integer"),
    (["--device", "12F,100F"], "Unknown device '100F' for board ulx3s"),
    (["--dataflow", "diagonal"], "'diagonal' is not one of weight_stationary, output_stationary"),
    (["--board", "vesa"], "Unknown board 'vesa'"),
    (["--bench", "gemm_64x576x64,resnet"], "--bench: unknown layer 'resnet'"),
    (["--rows", "40", "--clock", "107.3"], "every one of the 1 points is refused"),
    (["--rows", "2", "--scheduler", "tcp://127.0.0.1:1", "--connect-seconds", "0.5"],
     "--scheduler tcp://127.0.0.1:1: cannot reach the scheduler"),
])
def test_bad_input_stops_before_any_build(tmp_path, capsys, argv, message):
    assert main(["--device", "12F", *argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unknown_option_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--device", "12F", "--colums", "4", "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "unrecognized arguments: --colums 4" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    ({"rows": [2, 4], "colums": [4]}, "unknown field 'colums'"),
    ({"rows": "2:4:1", "seed_minutes": "soon"}, "seed_minutes must be a number, not 'soon'"),
    ({"cols": [4]}, "cols given both on the command line and in"),
])
def test_bad_spec_files(tmp_path, capsys, spec, message):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(spec))
    assert main(["--spec", str(path), "--cols", "2", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_a_toml_spec_gives_the_ranges(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text('device = ["12F"]\nrows = "30:32:2"\ncols = [32]\nmultiplier = ["dsp"]\n')
    assert main(["--spec", str(path), "--out", str(tmp_path / "out")]) == 2
    output = capsys.readouterr()
    assert "pruned 12F_rows30: Configuration (bringup design) does not fit LFE5U-12F: " \
           "MULT18X18D: needs 964" in output.out
    assert "pruned 12F_rows32" in output.out
    assert "every one of the 2 points is refused" in output.err
