"""The design space of a sweep: value ranges per field, read from the command line or a spec file,
their product as points, and the points `hw.build.resolve` refuses (budget, clock, config
checks), each with its reason.

A range is ``a,b,c`` (a list) or ``start:stop:step`` (numbers, `stop` included). Every problem with
the ranges themselves -- an empty range, a value given twice, a field given both on the command
line and in the spec file, an unknown field, device or value -- raises `SpaceError` naming it,
before anything is built.
"""

import json
import tomllib
from decimal import Decimal, InvalidOperation
from itertools import product
from pathlib import Path

from boards import variant
from hw import build
from hw.config import DATAFLOWS, MULTIPLIERS
from hw.soc.top import DESIGNS

__all__ = ["SpaceError", "FIELDS", "SPEC_KEYS", "parse_values", "read_spec", "points",
           "point_name", "build_argv", "prune"]


class SpaceError(ValueError):
    """A sweep's ranges or spec file are unusable; the message names the field and the value."""


# Sweep fields -> (hw.build option, what a value is: int, float or the allowed names).
FIELDS = {
    "device": ("--device", None),           # checked against the board's variants
    "design": ("--design", tuple(sorted(DESIGNS))),
    "rows": ("--rows", int),
    "cols": ("--cols", int),
    "dataflow": ("--dataflow", DATAFLOWS),
    "multiplier": ("--multiplier", MULTIPLIERS),
    "requant_lanes": ("--requant-lanes", int),
    "binary_width": ("--binary-width", int),
    "binary_lanes": ("--binary-lanes", int),
    "clock": ("--clock", float),
    "baud": ("--baud", int),
}
# Placement seeds: a range like a field's, but not a point's coordinate.
_SEEDS = {"seeds": ("--seeds", int)}
# Keys of a spec file besides the fields: the same as the command line's options.
SPEC_KEYS = ("board", "seeds", "seed_minutes", "bench")


def _number(field, kind, text):
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise SpaceError(f"--{field}: {text.strip()!r} is not a number") from None
    if kind is int:
        if value != value.to_integral_value():
            raise SpaceError(f"--{field}: {text.strip()!r} is not an integer")
        return int(value)
    return value


def _range(field, kind, text):
    parts = text.split(":")
    if len(parts) != 3:
        raise SpaceError(f"--{field} {text!r}: a range is start:stop:step")
    start, stop, step = (_number(field, kind, part) for part in parts)
    if step <= 0:
        raise SpaceError(f"--{field} {text!r}: the step must be positive")
    if start > stop:
        raise SpaceError(f"--{field} {text!r}: the range is empty (start {start} > stop {stop})")
    count = int((stop - start) / step) + 1
    return [start + index * step for index in range(count)]


def parse_values(field, text, *, board="ulx3s"):
    """The values of `field` in the range `text` (``a,b,c`` or ``start:stop:step``), in order;
    `SpaceError` on an empty range, a repeated or malformed value, an unknown device."""
    if field not in FIELDS and field not in _SEEDS:
        raise SpaceError(f"Unknown field {field!r}; the fields are {', '.join(FIELDS)}")
    _, kind = {**FIELDS, **_SEEDS}[field]
    text = str(text)
    if not text.strip():
        raise SpaceError(f"--{field}: empty range")
    if kind in (int, float) and ":" in text:
        values = _range(field, kind, text)
    else:
        items = text.split(",")
        if any(not item.strip() for item in items):
            raise SpaceError(f"--{field} {text!r}: empty value in the list")
        if kind in (int, float):
            values = [_number(field, kind, item) for item in items]
        else:
            values = [item.strip() for item in items]
    if kind is float:
        values = [float(value) for value in values]
    elif field == "device":
        for value in values:
            try:
                variant(board, value)
            except ValueError as error:
                raise SpaceError(f"--device: {error}") from None
    elif kind not in (int, float):
        for value in values:
            if value not in kind:
                raise SpaceError(f"--{field}: {value!r} is not one of {', '.join(kind)}")
    repeated = sorted({str(value) for value in values if values.count(value) > 1})
    if repeated:
        raise SpaceError(f"--{field} {text!r}: {', '.join(repeated)} given more than once")
    return tuple(values)


def read_spec(path):
    """The keys of a TOML (``.toml``) or JSON spec file: fields (a list or a range string each)
    and `SPEC_KEYS`; `SpaceError` on an unreadable file or an unknown key."""
    path = Path(path)
    try:
        text = path.read_text()
        spec = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as error:
        raise SpaceError(f"Spec file {path}: {error}") from None
    if not isinstance(spec, dict):
        raise SpaceError(f"Spec file {path}: expected a table of fields, not {type(spec).__name__}")
    unknown = sorted(set(spec) - set(FIELDS) - set(SPEC_KEYS))
    if unknown:
        raise SpaceError(f"Spec file {path}: unknown field {', '.join(map(repr, unknown))}; "
                         f"known are {', '.join([*FIELDS, *SPEC_KEYS])}")
    return {key: ",".join(map(str, value)) if isinstance(value, list) else value
            for key, value in spec.items()}


def points(ranges):
    """Every combination of the `ranges` (``{field: values}``), as ``{field: value}`` dicts."""
    fields = [field for field in FIELDS if field in ranges]
    return [dict(zip(fields, values)) for values in product(*(ranges[f] for f in fields))]


def point_name(point, varying):
    """A short folder name for `point`, unique among points that differ only in the `varying`
    fields: its device and those, ``12F_rows4_cols6_clock125``."""
    parts = []
    for field, value in point.items():
        if field != "device" and field not in varying:
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(str(value) if field == "device" else f"{field}{value}")
    return "_".join(parts) or "preset"


def build_argv(board, point, *, seeds, seed_minutes):
    """The ``python -m hw.build`` arguments that build `point`."""
    argv = ["--board", board]
    for field, value in point.items():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        argv += [FIELDS[field][0], str(value)]
    return argv + ["--seed", *map(str, seeds), "--seed-minutes", f"{seed_minutes:g}"]


def prune(board, candidates, *, seeds, seed_minutes):
    """``(kept, pruned)``: the `candidates` `hw.build.resolve` accepts, as ``(point, argv)``, and
    the ones it refuses, as ``(point, reason)``."""
    kept, pruned = [], []
    for point in candidates:
        argv = build_argv(board, point, seeds=seeds, seed_minutes=seed_minutes)
        try:
            build.resolve(build.parse_args(argv), say=lambda message: None)
        except build.BuildError as error:
            pruned.append((point, " ".join(str(error).split())))
        else:
            kept.append((point, argv))
    return kept, pruned
