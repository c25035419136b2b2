"""The import layers of ARCHITECTURE.md, checked on the source (every import statement, at module
level or inside a function, and `importlib.import_module` of a literal name):

* `hw` (the gateware) imports nothing from `sim`, `sw` or `boards`;
* `sim` (reference models, harness, simulators, simulated devices) imports nothing from `sw`;
* no two packages import each other.

Entry-point tools (`ENTRY_POINTS`) sit on top of the layers and may import anything; they do not
count for these rules. `check_layers` is tested on synthetic import graphs too, so a violation
is known to fail the suite.
"""

import ast
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ecpnn", "hw", "sim", "sw", "boards")
FORBIDDEN = {"hw": ("sim", "sw", "boards"), "sim": ("sw",)}
# Entry points (with their submodules) and why each may import from above its package.
ENTRY_POINTS = {
    "hw.build": "python -m hw.build turns a board variant's preset (boards) into a bitstream",
    "hw.dse": "python -m hw.dse sweeps hw.build over boards' budgets and runs sim.bench on the "
              "points",
    "sim.bench": "python -m sim.bench measures the gateware through the host driver and the "
                 "compiler (sw), networks on boards' presets",
}


def _is_entry_point(module):
    return any(module == name or module.startswith(name + ".") for name in ENTRY_POINTS)


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_imports(source, module, *, is_package=False):
    """[(imported module, line)] of every import in `source`, the text of `module`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    imports = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imports += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            imports.append((name, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            imports.append((node.args[0].value, node.lineno))
    return sorted(imports, key=lambda item: item[1])


def import_graph(root=ROOT):
    """{module: [(imported module, line)]} of every module of `PACKAGES` under `root`."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            graph[module_name(path, root)] = module_imports(
                path.read_text(), module_name(path, root), is_package=path.name == "__init__.py")
    return graph


def check_layers(graph):
    """Every violation of the layer rules in `graph` ({module: [(imported, line)]}), one line
    each naming the module, the import and its line."""
    violations = []
    edges = defaultdict(list)       # (package, package) -> ["module imports name (line n)"]
    for module, imports in sorted(graph.items()):
        if _is_entry_point(module):
            continue
        package = module.split(".")[0]
        for imported, line in imports:
            target = imported.split(".")[0]
            if target not in PACKAGES or target == package:
                continue
            where = f"{module} imports {imported} (line {line})"
            if target in FORBIDDEN.get(package, ()):
                violations.append(f"{where}: {package} must not import {target}")
            edges[package, target].append(where)
    for (first, second), wheres in sorted(edges.items()):
        if first < second and (second, first) in edges:
            violations.append(f"packages {first} and {second} import each other: {wheres[0]}; "
                              f"{edges[second, first][0]}")
    return violations


def test_the_source_keeps_its_layers():
    graph = import_graph()
    assert {"hw.config", "sim.soc", "sw.driver.sim", "boards.budget"} <= set(graph)
    violations = check_layers(graph)
    assert not violations, "\n".join(violations)


def test_every_entry_point_exists():
    graph = import_graph()
    for name in ENTRY_POINTS:
        assert name in graph, f"ENTRY_POINTS names {name}, which is not a module"


@pytest.mark.parametrize("graph, expected", [
    ({"hw.core.core": [("sim.reference", 12)]},
     ["hw.core.core imports sim.reference (line 12): hw must not import sim"]),
    ({"hw.soc.top": [("boards.catalog", 3)], "hw.config": [("sw.graph", 4)]},
     ["hw.config imports sw.graph (line 4): hw must not import sw",
      "hw.soc.top imports boards.catalog (line 3): hw must not import boards"]),
    ({"sim.harness": [("sw.driver.errors", 7)]},
     ["sim.harness imports sw.driver.errors (line 7): sim must not import sw"]),
    ({"sw.graph": [("boards.catalog", 1)], "boards.budget": [("sw.ops", 2)]},
     ["packages boards and sw import each other: boards.budget imports sw.ops (line 2); "
      "sw.graph imports boards.catalog (line 1)"]),
    # Entry points may import anything, and their imports make no cycle.
    ({"hw.build": [("boards.catalog", 1)], "hw.dse.point": [("sim.bench.core", 2)],
      "sim.bench.network": [("sw.graph", 3)], "sw.graph": [("sim.reference", 4)]}, []),
    # Imports within a package and of other distributions are not layer edges.
    ({"hw.soc.soc": [("hw.core", 1), ("amaranth.hdl", 2)], "sim.soc": [("hw.soc.soc", 3)]}, []),
], ids=["hw-sim", "hw-boards-sw", "sim-sw", "mutual", "entry-points", "allowed"])
def test_check_layers_names_each_violation(graph, expected):
    assert check_layers(graph) == expected


def test_imports_are_found_wherever_they_are_written():
    source = textwrap.dedent("""
        import numpy as np
        from .engine import clamp
        from .. import reference

        def build():
            from sw.driver import sim
            return importlib.import_module("boards.catalog")
    """)
    assert module_imports(source, "hw.binary.packer") == [
        ("numpy", 2), ("hw.binary.engine", 3), ("hw", 4), ("sw.driver", 7),
        ("boards.catalog", 8)]
    assert module_imports("from .engine import clamp", "hw.binary", is_package=True) == [
        ("hw.binary.engine", 1)]
