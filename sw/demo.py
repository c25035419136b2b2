"""The digits demo: train three small networks, run them on the (simulated) accelerator.

``python -m sw.demo [--device URL] [--limit N]`` trains the `sw.digits` models (INT8 MLP, INT8
CNN, binary MLP), compiles each into a program (`Accelerator.load`: weights written once, rounds
of as many test images as the buffers hold), runs it on the test split and prints, per model:
the program's table (where each node runs, MACs, link bytes), accuracy on the device next to
the NumPy reference's (`sw.model.run_reference`),
whether the device's outputs equal the reference's image for image (they must: the exit status
is 1 otherwise), the device cycles per inference from the hardware counters (``active_cycles``:
a command queued or executing; ``cycles``: everything, including waiting for the link), the
payload bytes per inference over the link and the wall time.

The default device is the compiled simulation of the tiny preset's 4x4 array with buffers big
enough to hold a batch (the first run compiles the model, a minute or two; it is cached).
"""

import argparse
import sys
import time

import numpy as np

from ecpnn.package_data import reports_damaged_install
from sw import digits
from sw.driver import Accelerator
from sw.model import run_reference

__all__ = ["DEFAULT_DEVICE", "MODELS", "run_demo", "main"]

DEFAULT_DEVICE = ("sim://tiny?backend=cxxrtl&scratchpad_rows=4096&accumulator_rows=512"
                  "&binary_result_rows=4096")
MODELS = {"int8_mlp": digits.train_int8_mlp, "int8_cnn": digits.train_int8_cnn,
          "binary_mlp": digits.train_binary_mlp}


def run_demo(device, *, limit=None, models=tuple(MODELS), seed=0, print_=print):
    """Run each model on `device` (an open `Accelerator`); returns a list of result dicts."""
    results = []
    for name in models:
        trained = MODELS[name](seed=seed)
        x, labels = trained.x_test, trained.y_test
        if limit is not None:
            x, labels = x[:limit], labels[:limit]
        expected = run_reference(trained.model, x)
        network = device.load(trained.model, max_batch=len(x))
        print_(network.program.table())
        device.clear_perf_counters()
        started = time.perf_counter()
        got = network(x)
        wall = time.perf_counter() - started
        link = network.program.link_bytes().values()
        counters = device.perf_counters()
        identical = got.shape == expected.shape and bool(np.array_equal(got, expected))
        result = {
            "model": name, "images": len(labels),
            "device_accuracy": float(np.mean(np.argmax(got, axis=1) == labels)),
            "reference_accuracy": float(np.mean(np.argmax(expected, axis=1) == labels)),
            "identical": identical,
            "mismatched_images": int(np.sum(np.any(got != expected, axis=1)))
            if got.shape == expected.shape else len(labels),
            "active_cycles_per_inference": counters["active_cycles"] / len(labels),
            "cycles_per_inference": counters["cycles"] / len(labels),
            "macs": counters["macs"], "binary_ops": counters["binary_ops"],
            "link_bytes_per_inference": sum(map(sum, link)) / network.program.batch,
            "wall_seconds": wall,
        }
        results.append(result)
        print_(f"{name:<11} {result['images']} images: device {result['device_accuracy']:6.2%}  "
               f"reference {result['reference_accuracy']:6.2%}  identical "
               f"{'yes' if identical else 'NO (%d images differ)' % result['mismatched_images']}"
               f"  {result['active_cycles_per_inference']:,.0f} active cycles/inference "
               f"({result['cycles_per_inference']:,.0f} with the link)  "
               f"{result['link_bytes_per_inference']:,.0f} link bytes/inference  "
               f"wall {wall:.1f} s")
    return results


@reports_damaged_install
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sw.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help=f"device URL (default {DEFAULT_DEVICE})")
    parser.add_argument("--limit", type=int, default=None,
                        help="run only the first N test images (default: all)")
    parser.add_argument("--model", action="append", choices=list(MODELS), dest="models",
                        help="run this model (repeatable; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be a positive number of images, not {args.limit}")
    started = time.perf_counter()
    with Accelerator.open(args.device) as device:
        print(f"device {args.device}: {device.config.rows}x{device.config.cols} array, "
              f"binary {device.config.binary_width}b x {device.config.binary_lanes} lanes "
              f"(connected in {time.perf_counter() - started:.1f} s)")
        results = run_demo(device, limit=args.limit, models=args.models or tuple(MODELS),
                           seed=args.seed)
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    if not all(result["identical"] for result in results):
        print("FAILED: the device's outputs differ from the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
