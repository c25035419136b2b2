import argparse
import importlib
import json
import sys

from ecpnn.package_data import reports_damaged_install

from . import BENCHES


def format_table(rows):
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_format_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _format_cell(value):
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


@reports_damaged_install
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sim.bench",
                                     description="Simulation benchmarks of the accelerator.")
    subparsers = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    modules = {}
    for name, module_name in BENCHES.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sub = subparsers.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        sub.add_argument("--json", action="store_true", help="emit the full result as JSON")
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    result = modules[args.bench].run(args)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(format_table(result["rows"]))
        for line in result.get("notes", []):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
