"""Benchmarks: ``python -m sim.bench <name> [--json]``.

Each benchmark is a module in this package with ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> dict``; the result dict has a ``"rows"`` list of flat dicts that is printed as a
table, or the whole dict as JSON with ``--json``. Figures come from simulation (cycle counts,
hardware counters) or tool reports, never from wall-clock asserts in tests.
"""

BENCHES = {
    "simspeed": "sim.bench.simspeed",
    "systolic": "sim.bench.systolic",
    "requant": "sim.bench.requant",
    "build": "sim.bench.build",
    "binary": "sim.bench.binary",
    "core": "sim.bench.core",
    "link": "sim.bench.link",
    "memory": "sim.bench.memory",
    "network": "sim.bench.network",
    "faults": "sim.bench.faults",
    "soak": "sim.bench.soak",
}
