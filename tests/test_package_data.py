"""Files shipped beside the code (`ecpnn.package_data`) and the version: a missing file is one clear
error naming it and the reinstall, from the lookup, from the CXXRTL build and from a command;
``python -m hw.build --version`` prints the package's version. Nothing here deletes a real file:
the lookups are pointed at names that do not exist. (The installed wheel is checked by
``.ci/wheel-check``.)"""

import gc

import pytest
from amaranth.hdl import Module, Signal

import ecpnn
from ecpnn.package_data import MissingPackageData, package_file, reports_damaged_install
from hw.build import main as build_main
from sim import cxxrtl
from sim.cxxrtl import toolchain
from sw import demo

REINSTALL = "pip install --force-reinstall ecpnn"


def test_the_harness_is_found_as_package_data():
    harness = package_file("sim.cxxrtl", "harness.cc")
    # The C entry points the ctypes front end binds are defined there.
    assert "ecpnn_sim_create" in harness.read_text()


def test_a_missing_file_names_itself_and_the_reinstall():
    with pytest.raises(MissingPackageData) as info:
        package_file("sim.cxxrtl", "no-such-harness.cc")
    message = str(info.value)
    assert message.startswith("sim/cxxrtl/no-such-harness.cc is missing from the installed ecpnn")
    assert REINSTALL in message
    assert isinstance(info.value, FileNotFoundError)


def test_a_command_reports_a_damaged_install_in_one_line(capsys):
    @reports_damaged_install
    def main(argv=None):
        package_file("boards", "no-such-board.json")

    assert main() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith("error: boards/no-such-board.json is missing")


def test_other_errors_pass_through_the_wrapper():
    @reports_damaged_install
    def main(argv=None):
        raise FileNotFoundError("some user file")

    with pytest.raises(FileNotFoundError, match="some user file"):
        main()


needs_cxxrtl = pytest.mark.skipif(not cxxrtl.available(), reason=str(cxxrtl.unavailable_reason()))


# The build looks for its harness before it elaborates the design, so these designs are never
# elaborated and warn when collected: the tests collect them under a filter, instead of leaving
# the warning to whichever later test the garbage collector happens to run in.
@needs_cxxrtl
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cxxrtl_build_without_its_harness(monkeypatch, tmp_path):
    monkeypatch.setattr(toolchain, "_HARNESS", "deleted-harness.cc")
    module = Module()
    count = Signal(4)
    module.d.sync += count.eq(count + 1)
    with pytest.raises(MissingPackageData, match="sim/cxxrtl/deleted-harness.cc is missing"):
        toolchain.build(module, ports=[count], cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    del module
    gc.collect()


@needs_cxxrtl
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_demo_on_a_damaged_install_exits_with_the_message(monkeypatch, capsys):
    monkeypatch.setattr(toolchain, "_HARNESS", "deleted-harness.cc")
    assert demo.main(["--device", "sim://tiny?backend=cxxrtl", "--limit", "1"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: sim/cxxrtl/deleted-harness.cc is missing") and REINSTALL in error
    gc.collect()


def test_build_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        build_main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"ecpnn {ecpnn.__version__}\n"
