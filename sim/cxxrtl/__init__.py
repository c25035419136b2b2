"""Compiled simulation backend: yosys CXXRTL, driven from Python through ctypes.

Amaranth's Python simulator runs an 8x8 array at a few thousand cycles per second; the compiled
model of the same design runs orders of magnitude faster (``python -m sim.bench simspeed``), which
whole-network and long-link runs need. Typical use::

    from sim.cxxrtl import CxxrtlSimulator, available

    with CxxrtlSimulator(dut) as sim:                  # dut: a wiring.Component
        sim.reset()
        sim.set("o__ready", 1)
        out = sim.run_stream("i", payloads, "o", count=len(payloads), gap_probability=0.3)

`available()` says whether g++ and yosys are present; when they are not, use `sim.harness` (pysim).
"""

from .toolchain import (BackendUnavailable, BuildError, Model, Port, available, build, cache_directory,
                    unavailable_reason)
from .simulator import CxxrtlSimulator, SimulationTimeout, StreamRun

__all__ = ["CxxrtlSimulator", "SimulationTimeout", "StreamRun", "BackendUnavailable", "BuildError",
           "Model", "Port", "available", "build", "cache_directory", "unavailable_reason"]
