"""`LoadedProgram`: a `sw.compiler.Program` whose resident images are on the device, callable
with batches.

A call checks the inputs against the program's, splits the batch into rounds of at most
``program.batch`` samples and runs the program's steps for each round: only the inputs (and what
host steps hand back to the device) are written, the commands are pushed, host steps run their
op's `sim.reference` kernel, and only the outputs (and what host steps need) are read back. A
round with fewer samples than the program's batch writes and reads only its own samples and
skips the commands of the others (per image for convolutions, per vector chunk for a binary
output layer; a GEMM's rows and a hidden binary layer's vectors are the whole batch, computed
on stale rows nobody reads).
"""

import numpy as np

from sim.reference import pack_bits
from sw.compiler.layout import (activation_rows, binary_activation_rows, binary_from_rows,
                                binary_results, output_from_rows)

__all__ = ["LoadedProgram"]

_RANGES = {"int8": (-128, 127), "int32": (-2**31, 2**31 - 1), "binary": (-1, 1)}


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
        if self.accelerator._generation != self._generation:
            raise RuntimeError("another program (or a layer call) has used the device's memories "
                               "since this one was loaded: load it again")
        values, samples = self._inputs(inputs)
        rounds = []
        for start in range(0, samples, self.program.batch):
            chunk = {name: value[start:start + self.program.batch]
                     for name, value in values.items()}
            rounds.append(self._round(chunk, min(self.program.batch, samples - start)))
        outputs = tuple(np.concatenate([result[name] for result in rounds])
                        for name in self.program.outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def _round(self, values, samples):
        device, pending = self.accelerator, False
        for step in self.program.steps:
            if step.kind == "commands":
                if step.args.get("sample", 0) >= samples:
                    continue        # commands for samples this round does not have
                device._push(step.data.tolist())
                pending = True
                continue
            if pending:
                device._finish()
                pending = False
            getattr(self, f"_{step.kind}")(step.args, step.data, values, samples)
        if pending:
            device._finish()
        return values

    def _write(self, args, data, values, samples):
        device = self.accelerator
        value = values[args["tensor"]][:samples]
        if args["layout"] == "binary":
            rows = binary_activation_rows(pack_bits(value.reshape(samples, -1)),
                                          int(np.prod(args["shape"])), width=args["width"],
                                          row_bytes=device.core.row_bytes)
        else:
            channels = args["shape"][-1]
            rows = activation_rows(value.reshape(-1, 1, channels), rows=args["block"],
                                   row_bytes=device.core.row_bytes)
        device._write_rows(args["base_row"], rows)

    def _read(self, args, data, values, samples):
        shape = args["shape"]
        if args["layout"] == "binary":
            bits, width = int(np.prod(shape)), args["width"]
            rows = self.accelerator._read_rows(args["base_row"], samples * _blocks(bits, width))
            values[args["tensor"]] = binary_from_rows(rows, bits, width=width).reshape(
                samples, *shape)
            return
        block = args["block"]
        pixels, blocks = samples * int(np.prod(shape[:-1])), _blocks(shape[-1], block)
        rows = self.accelerator._read_rows(args["base_row"], pixels * blocks)
        values[args["tensor"]] = output_from_rows(
            rows, pixels=pixels, channels=shape[-1], cols=block,
            stride=blocks).reshape(samples, *shape)

    def _image(self, args, data, values, samples):
        self.accelerator._write_words(args["window"], args["word"], data)

    def _read_binary(self, args, data, values, samples):
        device = self.accelerator
        core = device.core
        vectors = min(args["vectors"], samples - args["vector"])
        if vectors <= 0:
            return
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

    def _host(self, args, data, values, samples):
        values[args["output"]] = args["op"].run(*(values[name] for name in args["inputs"]))
