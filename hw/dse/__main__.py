"""``python -m hw.dse``: see `hw.dse`."""

import argparse
import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

from boards import variant
from hw import build
from hw.dse.pareto import pareto_front, plot, throughput
from hw.dse.point import ROW_FIELDS, cache_directory, run_point
from hw.dse.space import (FIELDS, SPEC_KEYS, SpaceError, parse_values, points, point_name, prune,
                          read_spec)
from hw.dse.sweep import SchedulerError, connect, run_tasks
from sim.bench.__main__ import format_table
from sim.bench.core import LAYERS

# Columns of the terminal's tables (the files hold every column).
_SHOWN = ("name", "status", "LUT4", "FF", "DSP", "EBR", "fmax_mhz", "peak_gops_at_target",
          "build_seconds", "cached")


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m hw.dse",
        description="Design-space exploration: build every combination of the given ranges "
                    "(a,b,c or start:stop:step) on Dask and show the Pareto front of "
                    "throughput against LUT4.")
    parser.add_argument("--spec", type=Path, metavar="FILE",
                        help="TOML or JSON file with ranges (keys: the field options without "
                             "dashes, with underscores) and board, seeds, seed_minutes, bench")
    parser.add_argument("--board", help="board name (default: ulx3s)")
    for field, (option, kind) in FIELDS.items():
        parser.add_argument(option, dest=field, metavar="RANGE",
                            help=f"{field} values" + (f" ({', '.join(kind)})"
                                                      if isinstance(kind, tuple) else ""))
    parser.add_argument("--seeds", metavar="RANGE",
                        help="nextpnr seeds per point, tried one after another on the point's "
                             "core until one meets timing (default: "
                             f"{','.join(map(str, build.DEFAULT_SEEDS))})")
    parser.add_argument("--seed-minutes", type=float,
                        help=f"time limit per seed (default: {build.DEFAULT_SEED_MINUTES:g})")
    parser.add_argument("--bench", metavar="LAYERS",
                        help="core bench layer set run on each passing point: comma-separated "
                             f"layers of sim.bench.core ({', '.join(LAYERS)}), all, or none "
                             "(default: none; needs the CXXRTL backend, minutes per point)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="an existing Dask scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="LocalCluster worker processes, one thread each (default: one "
                             "per core)")
    parser.add_argument("--connect-seconds", type=float, default=10.0,
                        help="how long to try to reach --scheduler (default: 10)")
    parser.add_argument("--out", type=Path, default=Path("build/dse"),
                        help="folder of the builds and results.csv / results.json "
                             "(default: build/dse)")
    parser.add_argument("--cache", type=Path,
                        help=f"result cache folder (default: {cache_directory()})")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw throughput against LUT4 and device, front marked "
                             "(needs matplotlib: pip install 'ecpnn[dse]')")
    return parser


def _settings(args):
    """``(board, {field: values}, seeds, seed_minutes, bench layers)`` from the command line and
    the spec file."""
    spec = read_spec(args.spec) if args.spec else {}
    given = {key: getattr(args, key) for key in [*FIELDS, *SPEC_KEYS]
             if getattr(args, key) is not None}
    twice = sorted(set(spec) & set(given))
    if twice:
        raise SpaceError(f"{', '.join(twice)} given both on the command line and in {args.spec}")
    settings = {**spec, **given}
    board = settings.get("board", "ulx3s")
    try:
        variant(board)
    except ValueError as error:
        raise SpaceError(str(error)) from None
    ranges = {field: parse_values(field, settings[field], board=board)
              for field in FIELDS if field in settings}
    seeds = (parse_values("seeds", settings["seeds"]) if "seeds" in settings
             else build.DEFAULT_SEEDS)
    try:
        seed_minutes = float(settings.get("seed_minutes", build.DEFAULT_SEED_MINUTES))
    except ValueError:
        raise SpaceError(f"seed_minutes must be a number, not {settings['seed_minutes']!r}") \
            from None
    bench = _bench_layers(settings.get("bench", "none"))
    if args.workers < 1:
        raise SpaceError(f"--workers must be at least 1, not {args.workers}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SpaceError("--plot needs matplotlib: pip install 'ecpnn[dse]'")
    return board, ranges, tuple(seeds), seed_minutes, bench


def _bench_layers(text):
    """The layer names of ``--bench`` (empty for none); `SpaceError` on an unknown layer or
    without the CXXRTL backend."""
    if text == "none":
        return ()
    layers = LAYERS if text == "all" else tuple(name.strip() for name in text.split(","))
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise SpaceError(f"--bench: unknown layer {', '.join(map(repr, unknown))}; the layers "
                         f"are {', '.join(LAYERS)} (or all, none)")
    from sim import cxxrtl
    if not cxxrtl.available():
        raise SpaceError(f"--bench needs the CXXRTL backend: {cxxrtl.unavailable_reason()}")
    return layers


def _write_results(rows, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    columns = list(ROW_FIELDS) + sorted({key for row in rows for key in row} - set(ROW_FIELDS))
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        board, ranges, seeds, seed_minutes, bench = _settings(args)
        kept, pruned = prune(board, points(ranges), seeds=seeds, seed_minutes=seed_minutes)
        varying = [field for field, values in ranges.items() if len(values) > 1]
        for point, reason in pruned:
            print(f"pruned {point_name(point, varying)}: {reason}")
        if not kept:
            raise SpaceError(f"every one of the {len(pruned)} points is refused (above)")
        client, cluster = connect(args.scheduler, workers=args.workers,
                                  timeout=args.connect_seconds)
    except (SpaceError, SchedulerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cache = args.cache or cache_directory()
    tasks = [{"name": point_name(point, varying), "argv": argv, "out": str(args.out.resolve()),
              "cache": str(cache.resolve()), "bench": list(bench)} for point, argv in kept]
    print(f"{len(tasks)} points to run ({len(pruned)} pruned) on "
          f"{args.scheduler or f'a LocalCluster of {args.workers} workers'}; builds in "
          f"{args.out}, cache {cache}")
    try:
        rows = run_tasks(client, run_point, tasks, say=print)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    rows += [{"name": point_name(point, varying), "status": "pruned", "problems": reason}
             for point, reason in pruned]
    _write_results(rows, args.out)
    print(format_table([{column: row.get(column) for column in _SHOWN} for row in rows]))
    front = pareto_front(rows)
    if front:
        unit = throughput(front[0])[1]
        print(f"Pareto front ({unit} against LUT4):")
        print(format_table([{"name": row["name"], "LUT4": row["LUT4"], unit: throughput(row)[0],
                             "device": row["device"]} for row in front]))
    else:
        print("Pareto front: no point passed")
    if args.plot:
        plot(rows, front, args.plot, device_order=list(variant(board)[0].variants))
        print(f"Plot: {args.plot}")
    print(f"Results: {args.out / 'results.csv'}, {args.out / 'results.json'}")
    return 1 if any(row["status"] in ("error", "lost") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
