"""Host-side encoding of a binary layer for `BinaryEngine`, defined once for driver, tests, bench.

Inputs are the packed rows of `sim.reference.pack_bits` (uint8, element k at bit k % 8 of byte
k // 8); every function returns stream payloads (dicts) in the engine's layouts, or decodes its
result payloads back into arrays shaped like `sim.reference.binary_dense` /
`threshold_activation` outputs.
"""

import numpy as np

from .engine import clamp_thresholds

__all__ = ["fold_counts", "layer_descriptor", "activation_beats", "weight_writes",
           "threshold_writes", "decode_results"]


def _row_integer(packed_row):
    """A packed row as the little-endian integer whose bit k is element k."""
    return int.from_bytes(np.ascontiguousarray(packed_row, dtype=np.uint8).tobytes(), "little")


def _beats(packed_row, k, width):
    value = _row_integer(packed_row) & ((1 << k) - 1)
    return [(value >> (beat * width)) & ((1 << width) - 1) for beat in range(-(-k // width))]


def fold_counts(k, n, *, width, lanes):
    """(beats per vector ``ceil(k/width)``, neuron folds ``ceil(n/lanes)``)."""
    return -(-k // width), -(-n // lanes)


def layer_descriptor(k, n, *, lanes):
    """The `layer` payload for a layer of `n` neurons over `k`-bit vectors."""
    return {"k": k, "neuron_folds": -(-n // lanes)}


def activation_beats(a_packed, k, *, width):
    """`activations` payloads for every row of `a_packed` [M, ceil(k/8)], row after row."""
    payloads = []
    for row in np.asarray(a_packed):
        beats = _beats(row, k, width)
        payloads += [{"bits": bits, "last": int(index == len(beats) - 1)}
                     for index, bits in enumerate(beats)]
    return payloads


def weight_writes(w_packed, k, *, width, lanes):
    """`weights` payloads for `w_packed` [N, ceil(k/8)] (one packed row per neuron)."""
    folds = -(-k // width)
    payloads = []
    for neuron, row in enumerate(np.asarray(w_packed)):
        neuron_fold, lane = divmod(neuron, lanes)
        payloads += [{"address": neuron_fold * folds + beat, "lane": lane, "bits": bits}
                     for beat, bits in enumerate(_beats(row, k, width))]
    return payloads


def threshold_writes(thresholds, ascending, k, *, lanes):
    """`thresholds` payloads for per-neuron `thresholds` and `ascending` flags (clamped to k)."""
    payloads = []
    for neuron, (threshold, rising) in enumerate(zip(clamp_thresholds(thresholds, k), ascending)):
        neuron_fold, lane = divmod(neuron, lanes)
        payloads.append({"neuron_fold": neuron_fold, "lane": lane, "threshold": threshold,
                         "ascending": int(bool(rising))})
    return payloads


def decode_results(results, n, *, lanes):
    """(dots int32 [M, n], activations int8 +1/-1 [M, n]) from `results` payloads in order.

    `results` are the engine's result payloads (views or dicts with ``dots``, ``bits``,
    ``last``); lanes beyond `n` in the last neuron fold are dropped.
    """
    neuron_folds = -(-n // lanes)
    if len(results) % neuron_folds:
        raise ValueError(f"{len(results)} result transfers are not a whole number of vectors "
                         f"of {neuron_folds} neuron folds")
    vectors = len(results) // neuron_folds
    dots = np.zeros((vectors, neuron_folds * lanes), dtype=np.int32)
    signs = np.zeros((vectors, neuron_folds * lanes), dtype=np.int8)
    for index, result in enumerate(results):
        vector, neuron_fold = divmod(index, neuron_folds)
        if bool(result["last"]) != (neuron_fold == neuron_folds - 1):
            raise ValueError(f"result {index} has last={result['last']} but is neuron fold "
                             f"{neuron_fold} of {neuron_folds}")
        for lane in range(lanes):
            column = neuron_fold * lanes + lane
            dots[vector, column] = result["dots"][lane]
            signs[vector, column] = 1 if (int(result["bits"]) >> lane) & 1 else -1
    return dots[:, :n], signs[:, :n]
