"""`Program`: a compiled graph -- what the driver writes once, and what it does per batch.

A program runs in *rounds* of up to `batch` samples. Per round the driver executes `steps` in
order; each `Step` serves one node (the table attributes its link bytes to it):

=================  ============================================================================
kind               what the driver does
=================  ============================================================================
write              host value of ``tensor`` -> scratchpad rows from ``base_row`` (``layout``
                   "int8": pixel-major, ``block`` channels per row; "int8_columns": the same
                   after `sw.compiler.layout.fold_columns` with ``fold`` = (kw, pad_left,
                   pad_right, zero_point); "binary": packed bits, ``width`` per row, as a hidden
                   binary layer writes them), for the round's samples only
read               scratchpad rows -> host value of ``tensor`` ("int8" or "binary" layouts)
image              ``data`` (32-bit words) -> window ``window`` at word ``word`` (weights or
                   parameters written per round: they are not resident)
commands           push ``data`` (one command per row, `hw.core.isa` words); the driver waits for
                   them to retire before its next write or read (so a run of command steps ends
                   without a FENCE: the wait is the fence)
read_accumulators  the accumulator rows from ``acc_base`` a GEMM tile left (``blocks`` column
                   blocks of ``rows`` rows, block-major) + the bias in ``data`` -> rows
                   ``first:first+rows`` and columns ``low:high`` of int32 ``tensor`` (``units``
                   columns); OverflowError when a sum leaves int32
read_binary        binary result rows of ``vectors`` vectors from ``vector`` on, ``folds`` folds ->
                   columns ``low:high`` of ``tensor`` (``output`` "dots": a binary output layer;
                   "signs": a hidden layer whose bits cannot stay on chip)
host               ``op`` (an `sw.ops` operation) on the host values of ``inputs`` -> ``output``
=================  ============================================================================

`resident` are the images written once at load. `placements` say where each node runs and why.
`save`/`load` keep a program in one ``.npz`` file: a JSON header plus its arrays.
"""

import json
from dataclasses import dataclass, fields

import numpy as np

from hw.core.isa import COMMAND_WORDS
from sw import ops

__all__ = ["Step", "Placement", "Program", "text_table"]

_FORMAT = "ecpnn-program-2"


@dataclass(frozen=True, eq=False)
class Step:
    """One action of a round (see the module docstring): `kind`, the `node` it serves, its
    JSON-able `args` (an `sw.ops` operation for host steps), `data` (words) where it has some,
    and the link bytes it moves for a full round (`bytes_in` to the device, `bytes_out` back)."""

    kind: str
    node: str
    args: dict
    data: np.ndarray = None
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class Placement:
    """Where node `node` (`op` kind) runs: `where` "device" or "host", and `reason`; its output
    `shape` per sample and `macs` per sample."""

    node: str
    op: str
    where: str
    reason: str
    shape: tuple
    macs: int


@dataclass(frozen=True, eq=False)
class Program:
    """device : `DeviceGeometry.describe()` of the target; batch : samples per round;
    inputs / outputs : {tensor name: (shape, dtype)} of the graph's inputs / outputs (in order);
    resident : image `Step` s written at load; steps : the `Step` s of a round;
    placements : one `Placement` per node, in the graph's order."""

    device: dict
    batch: int
    inputs: dict
    outputs: dict
    resident: tuple
    steps: tuple
    placements: tuple

    def link_bytes(self):
        """{node: [bytes in, bytes out]} over the link for one full round (payload bytes)."""
        totals = {placement.node: [0, 0] for placement in self.placements}
        for step in self.steps:
            totals[step.node][0] += step.bytes_in
            totals[step.node][1] += step.bytes_out
        return totals

    def load_bytes(self):
        """Payload bytes written once at load: the resident weights and parameters."""
        return sum(step.bytes_in for step in self.resident)

    def table(self):
        """The placements as a text table: node, op, where (reason), output shape, MACs per
        sample, link bytes in/out per round of `batch` samples; then the totals."""
        link = self.link_bytes()
        header = ("node", "op", "where", "shape", "MACs", "link in", "link out")
        rows = [(p.node, p.op, f"{p.where}: {p.reason}", "x".join(map(str, p.shape)),
                 f"{p.macs:,}", f"{link[p.node][0]:,}", f"{link[p.node][1]:,}")
                for p in self.placements]
        load = self.load_bytes()
        total_in = sum(value[0] for value in link.values())
        total_out = sum(value[1] for value in link.values())
        lines = text_table(header, rows, rule=True)
        lines.append(f"per round of {self.batch} samples: {total_in:,} bytes in, "
                     f"{total_out:,} bytes out ({(total_in + total_out) / self.batch:,.1f} per "
                     f"sample); at load (resident weights and parameters): {load:,} bytes in")
        return "\n".join(lines)

    # One file ------------------------------------------------------------------------------------

    def save(self, path):
        """Write the program to `path` (an ``.npz``: a JSON header and the arrays it names)."""
        arrays = []
        header = {"format": _FORMAT, "device": self.device, "batch": self.batch,
                  "inputs": _encode(self.inputs, arrays), "outputs": _encode(self.outputs, arrays),
                  "resident": [_encode_step(step, arrays) for step in self.resident],
                  "steps": [_encode_step(step, arrays) for step in self.steps],
                  "placements": [_encode(vars(p), arrays) for p in self.placements]}
        blobs = {f"a{index}": array for index, array in enumerate(arrays)}
        blobs["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        with open(path, "wb") as file:
            np.savez_compressed(file, **blobs)

    @classmethod
    def load(cls, path):
        """The program `save` wrote to `path`; ValueError for a file that is not one."""
        try:
            with np.load(path, allow_pickle=False) as blobs:
                arrays = {name: blobs[name] for name in blobs.files}
            header = json.loads(arrays.pop("header").tobytes())
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a saved ecpnn program: {error}") from None
        if header.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a saved ecpnn program (format "
                             f"{header.get('format')!r}, expected {_FORMAT!r})")
        return cls(device=header["device"], batch=header["batch"],
                   inputs=_tensor_specs(_decode(header["inputs"], arrays)),
                   outputs=_tensor_specs(_decode(header["outputs"], arrays)),
                   resident=tuple(_decode_step(step, arrays) for step in header["resident"]),
                   steps=tuple(_decode_step(step, arrays) for step in header["steps"]),
                   placements=tuple(Placement(**{**_decode(p, arrays),
                                                 "shape": tuple(p["shape"])})
                                    for p in header["placements"]))


def text_table(header, rows, *, rule=False):
    """Lines of a left-aligned text table of `header` and `rows` (tuples of strings), columns two
    spaces apart, with a rule of dashes under the header if `rule`."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    if rule:
        lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _tensor_specs(specs):
    return {name: (tuple(shape), dtype) for name, (shape, dtype) in specs.items()}


_OPERATIONS = {kind.__name__: kind for kind in ops.OPERATIONS}


def _encode(value, arrays):
    """JSON-able form of `value`; arrays go to `arrays` (referenced by index), operations as
    their kind and fields."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"__array__": len(arrays) - 1}
    if isinstance(value, ops.OPERATIONS):
        return {"__op__": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), arrays)
                           for f in fields(value)}}
    if isinstance(value, dict):
        return {str(key): _encode(item, arrays) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(item, arrays) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _decode(value, arrays):
    if isinstance(value, dict) and "__array__" in value:
        return arrays[f"a{value['__array__']}"]
    if isinstance(value, dict) and "__op__" in value:
        return _OPERATIONS[value["__op__"]](**_decode(value["fields"], arrays))
    if isinstance(value, dict):
        return {key: _decode(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_decode(item, arrays) for item in value)
    return value


def _encode_step(step, arrays):
    return {"kind": step.kind, "node": step.node, "args": _encode(step.args, arrays),
            "data": None if step.data is None else _encode(step.data, arrays),
            "bytes_in": step.bytes_in, "bytes_out": step.bytes_out}


def _decode_step(step, arrays):
    data = None if step["data"] is None else _decode(step["data"], arrays)
    if step["kind"] == "commands":
        data = data.reshape(-1, COMMAND_WORDS)
    return Step(kind=step["kind"], node=step["node"], args=_decode(step["args"], arrays),
                data=data, bytes_in=step["bytes_in"], bytes_out=step["bytes_out"])
