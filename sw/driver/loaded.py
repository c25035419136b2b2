"""`LoadedProgram`: a `sw.compiler.Program` whose resident images are on the device, callable
with batches.

A call checks the inputs against the program's, splits the batch into rounds of at most
``program.batch`` samples and runs the program's steps for each round: only the inputs (and what
host steps hand back to the device) are written, the commands are pushed, host steps run their
op's `sim.reference` kernel, and only the outputs (and what host steps need) are read back. A
round with fewer samples than the program's batch writes and reads only its own samples and
skips the commands of the others (per image for convolutions, per vector chunk for a binary
output layer, per band of rows for a DenseInt32 whose batch is taller than an accumulator
half; a GEMM's rows and a hidden binary layer's vectors are otherwise the whole batch, computed
on stale rows nobody reads).

`LoadedProgram.profile` runs the same way and also reads the core's performance counters per
node (cycles, useful MACs, utilization) and counts the link bytes each node's steps move.
"""

import numpy as np

from sim.reference import INT32_MAX, INT32_MIN, pack_bits
from sw.compiler.layout import (accumulator_values, activation_rows, binary_activation_rows,
                                binary_from_rows, binary_results, fold_columns, output_from_rows)

__all__ = ["LoadedProgram"]

_RANGES = {"int8": (-128, 127), "int32": (INT32_MIN, INT32_MAX), "binary": (-1, 1)}
_WORD = 4
_COUNTERS = ("active_cycles", "macs", "binary_ops", "compute_busy", "store_busy")
_COUNTED = (*_COUNTERS, "bytes_in", "bytes_out")


def _blocks(size, block):
    return -(-size // block)


class LoadedProgram:
    """Call with one array (a program with one input) or {input name: array}, each
    [B, *shape]; returns the output array, or a tuple in the program's output order."""

    def __init__(self, accelerator, program, generation):
        self.accelerator, self.program, self._generation = accelerator, program, generation

    def __repr__(self):
        return (f"<LoadedProgram {len(self.program.placements)} nodes, rounds of "
                f"{self.program.batch} on {self.accelerator.url}>")

    def _inputs(self, inputs):
        """({input name: checked array}, batch size) of a call's `inputs`."""
        if self.accelerator._generation != self._generation:
            raise RuntimeError("another program (or a layer call) has used the device's memories "
                               "since this one was loaded: load it again")
        expected = self.program.inputs
        if not isinstance(inputs, dict):
            if len(expected) != 1:
                raise TypeError(f"the program has inputs {tuple(expected)}: pass a dict of "
                                f"arrays")
            inputs = {next(iter(expected)): inputs}
        if set(inputs) != set(expected):
            raise ValueError(f"inputs must be exactly {tuple(expected)}, not {tuple(inputs)}")
        values = {}
        for name, (shape, dtype) in expected.items():
            x = np.asarray(inputs[name])
            if x.dtype.kind not in "iu":
                raise TypeError(f"input {name!r} must be an integer array ({dtype}), not dtype "
                                f"{x.dtype}")
            if x.ndim != len(shape) + 1 or x.shape[1:] != tuple(shape) or not len(x):
                raise ValueError(f"input {name!r} must have shape [B, "
                                 f"{', '.join(map(str, shape))}] with B >= 1, not {x.shape}")
            low, high = _RANGES[dtype]
            if x.min() < low or x.max() > high or (dtype == "binary" and np.any(x == 0)):
                what = "+1/-1" if dtype == "binary" else f"{dtype} values in [{low}, {high}]"
                raise ValueError(f"input {name!r} must hold {what}, found [{x.min()}, "
                                 f"{x.max()}]")
            values[name] = x.astype(np.int32 if dtype == "int32" else np.int8)
        batches = {len(value) for value in values.values()}
        if len(batches) > 1:
            raise ValueError(f"inputs must share one batch size, not {sorted(batches)}")
        return values, batches.pop()

    def __call__(self, inputs):
        return self._run(*self._inputs(inputs), None)

    def profile(self, inputs):
        """Run like a call, reading the core's performance counters per node (it clears them):
        returns ``(outputs, rows)``, one row per node in the graph's order:

        node, op, where ("device" / "host"), samples; cycles: the core's ``active_cycles``
        while the node's commands ran; macs: useful multiply-accumulates from the ``macs``
        counter (a BinaryDense's XNOR-popcount MACs: ``binary_ops / 2``; a host node: the op's
        MACs, computed on the host); peak_macs_per_cycle: R*C for the array, width*lanes for
        the binary engine; utilization = macs / (peak_macs_per_cycle * cycles) (None without
        cycles); compute_busy, store_busy: those counters; bytes_in, bytes_out: the payload
        bytes the node's steps moved over the link (frames and polling not included).

        The core finishes each node's commands before the next node's start (the counters of
        one node are read alone), so a node's last store does not overlap the next node's
        compute as it can in a plain call."""
        totals = {placement.node: dict.fromkeys(_COUNTED, 0)
                  for placement in self.program.placements}
        values, samples = self._inputs(inputs)
        outputs = self._run(values, samples, totals)
        return outputs, self._profile_rows(totals, samples)

    def _run(self, values, samples, totals):
        self.accelerator._drain("a loaded program")
        rounds = []
        for start in range(0, samples, self.program.batch):
            chunk = {name: value[start:start + self.program.batch]
                     for name, value in values.items()}
            rounds.append(self._round(chunk, min(self.program.batch, samples - start), totals))
        outputs = tuple(np.concatenate([result[name] for result in rounds])
                        for name in self.program.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _round(self, values, samples, totals):
        """One round; with `totals` ({node: counts}), each node's commands run alone between a
        counter clear and a counter read, and every step's link bytes are added to its node."""
        device, pending = self.accelerator, None       # the node whose commands are in flight
        for step in self.program.steps:
            if step.kind == "commands":
                if step.args.get("sample", 0) >= samples:
                    continue        # commands for samples this round does not have
                if totals is not None and pending != step.node:
                    self._settle(pending, totals)
                    device.clear_perf_counters()
                device._push(step.data.tolist())
                pending, moved = step.node, (step.data.size * _WORD, 0)
            else:
                self._settle(pending, totals)
                pending = None
                moved = getattr(self, f"_{step.kind}")(step.args, step.data, values, samples)
            if totals is not None:
                totals[step.node]["bytes_in"] += moved[0]
                totals[step.node]["bytes_out"] += moved[1]
        self._settle(pending, totals)
        return values

    def _settle(self, node, totals):
        """Wait for the commands in flight (of `node`, None: none); add the counters to
        `node`'s totals when profiling."""
        if node is None:
            return
        self.accelerator._finish()
        if totals is not None:
            counters = self.accelerator.perf_counters()
            for name in _COUNTERS:
                totals[node][name] += counters[name]

    def _profile_rows(self, totals, samples):
        core, rows = self.accelerator.core, []
        for placement in self.program.placements:
            counts = totals[placement.node]
            binary = placement.op == "BinaryDense"
            peak = core.binary_width * core.binary_lanes if binary else core.rows * core.cols
            if placement.where == "host":
                macs = placement.macs * samples
            else:
                macs = counts["binary_ops"] // 2 if binary else counts["macs"]
            cycles = counts["active_cycles"]
            rows.append({
                "node": placement.node, "op": placement.op, "where": placement.where,
                "samples": samples, "cycles": cycles, "macs": macs,
                "peak_macs_per_cycle": peak,
                "utilization": macs / (peak * cycles) if cycles else None,
                "compute_busy": counts["compute_busy"], "store_busy": counts["store_busy"],
                "bytes_in": counts["bytes_in"], "bytes_out": counts["bytes_out"]})
        return rows

    def _write(self, args, data, values, samples):
        device = self.accelerator
        value = values[args["tensor"]][:samples]
        if args["layout"] == "binary":
            rows = binary_activation_rows(pack_bits(value.reshape(samples, -1)),
                                          int(np.prod(args["shape"])), width=args["width"],
                                          row_bytes=device.core.row_bytes)
        else:
            if args["layout"] == "int8_columns":
                kw, pad_left, pad_right, zero_point = args["fold"]
                value = fold_columns(value, kw=kw, pad_left=pad_left, pad_right=pad_right,
                                     zero_point=zero_point)
            channels = value.shape[-1]
            rows = activation_rows(value.reshape(-1, 1, channels), rows=args["block"],
                                   row_bytes=device.core.row_bytes)
        device._write_rows(args["base_row"], rows)
        return rows.shape[0] * device.core.scratchpad_stride * _WORD, 0

    def _read(self, args, data, values, samples):
        shape = args["shape"]
        if args["layout"] == "binary":
            bits, width = int(np.prod(shape)), args["width"]
            rows = self.accelerator._read_rows(args["base_row"], samples * _blocks(bits, width))
            value = binary_from_rows(rows, bits, width=width)
        else:
            block = args["block"]
            pixels, blocks = samples * int(np.prod(shape[:-1])), _blocks(shape[-1], block)
            rows = self.accelerator._read_rows(args["base_row"], pixels * blocks)
            value = output_from_rows(rows, pixels=pixels, channels=shape[-1], cols=block,
                                     stride=blocks)
        values[args["tensor"]] = value.reshape(samples, *shape)
        return 0, rows.shape[0] * self.accelerator.core.scratchpad_stride * _WORD

    def _image(self, args, data, values, samples):
        self.accelerator._write_words(args["window"], args["word"], data)
        return data.size * _WORD, 0

    def _read_accumulators(self, args, data, values, samples):
        """A GEMM tile's accumulators plus the bias (`data`) -> its rows and columns of the
        int32 tensor; only the rows of the round's samples are read."""
        device = self.accelerator
        stride, first, band_rows = device.core.accumulator_stride, args["first"], args["rows"]
        rows = min(band_rows, samples - first)
        if rows <= 0:
            return 0, 0
        words = device._read_words("accumulator", args["acc_base"] * stride,
                                   ((args["blocks"] - 1) * band_rows + rows) * stride)
        low, high = args["low"], args["high"]
        sums = accumulator_values(words, rows=rows, band_rows=band_rows, blocks=args["blocks"],
                                  cols=device.core.cols, stride=stride)[:, :high - low]
        sums = sums + data.astype(np.int64)
        if sums.min() < INT32_MIN or sums.max() > INT32_MAX:
            raise OverflowError(f"tensor {args['tensor']!r}: a sum with the bias leaves int32: "
                                f"columns {low}:{high} hold [{sums.min()}, {sums.max()}], "
                                f"int32 [{INT32_MIN}, {INT32_MAX}]")
        if args["tensor"] not in values:
            values[args["tensor"]] = np.zeros((samples, args["units"]), np.int32)
        values[args["tensor"]][first:first + rows, low:high] = sums
        return 0, words.size * _WORD

    def _read_binary(self, args, data, values, samples):
        device = self.accelerator
        core = device.core
        vectors = min(args["vectors"], samples - args["vector"])
        if vectors <= 0:
            return 0, 0
        words = device._read_words("binary_results", 0,
                                   vectors * args["folds"] * core.result_stride)
        dots, signs = binary_results(words, vectors=vectors, folds=args["folds"],
                                     lanes=core.binary_lanes, result_stride=core.result_stride,
                                     result_bit_words=core.result_bit_words)
        result = dots if args["output"] == "dots" else signs
        if args["vector"] == 0 and args["low"] == 0:
            values[args["tensor"]] = np.zeros((samples, args["units"]), result.dtype)
        first, low, high = args["vector"], args["low"], args["high"]
        values[args["tensor"]][first:first + vectors, low:high] = result[:, :high - low]
        return 0, words.size * _WORD

    def _host(self, args, data, values, samples):
        values[args["output"]] = args["op"].run(*(values[name] for name in args["inputs"]))
        return 0, 0
