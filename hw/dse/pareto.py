"""The Pareto front of a sweep (most throughput for the fewest LUT4) and its plot.

Only points that passed (fit and met timing at their target clock) are on the front: a bitstream
runs at its target clock, so a point's throughput is its inferences/s on the bench's layer set at
that clock, or, without a bench, its peak INT8 GOPS at that clock.
"""

__all__ = ["throughput", "pareto_front", "plot"]


def throughput(row):
    """``(figure, unit)`` of `row`: inferences/s when benched, else peak GOPS at the target."""
    if row.get("inferences_per_s") is not None:
        return row["inferences_per_s"], "inferences/s"
    return row.get("peak_gops_at_target"), "peak INT8 GOPS"


def pareto_front(rows):
    """The passed rows no other passed row beats on both throughput (higher) and LUT4 (fewer),
    by increasing LUT4."""
    passed = [row for row in rows if row.get("status") == "pass" and row.get("LUT4") is not None]

    def dominated(row):
        return any(throughput(other)[0] >= throughput(row)[0] and other["LUT4"] <= row["LUT4"]
                   and (throughput(other)[0], other["LUT4"]) != (throughput(row)[0], row["LUT4"])
                   for other in passed)
    return sorted((row for row in passed if not dominated(row)),
                  key=lambda row: (row["LUT4"], -throughput(row)[0]))


def plot(rows, front, path, *, device_order):
    """Write `path` (PNG): throughput against LUT4 (front marked, failed points crossed) and
    against device (in `device_order`)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    built = [row for row in rows if row.get("LUT4") is not None and throughput(row)[0]]
    unit = throughput(front[0])[1] if front else "peak INT8 GOPS"
    figure, (by_luts, by_device) = pyplot.subplots(1, 2, figsize=(12, 5))
    for status, marker in (("pass", "o"), ("fail", "x")):
        chosen = [row for row in built if (row["status"] == "pass") == (status == "pass")]
        by_luts.scatter([row["LUT4"] for row in chosen], [throughput(row)[0] for row in chosen],
                        marker=marker, label=status)
        devices = [device_order.index(row["device"]) for row in chosen]
        by_device.scatter(devices, [throughput(row)[0] for row in chosen], marker=marker,
                          label=status)
    by_luts.step([row["LUT4"] for row in front], [throughput(row)[0] for row in front],
                 where="post", color="black", label="Pareto front")
    for row in front:
        by_luts.annotate(row["name"], (row["LUT4"], throughput(row)[0]), fontsize=7)
    by_luts.set(xlabel="LUT4", ylabel=unit, title="Throughput against LUT4")
    by_device.set(xlabel="device", ylabel=unit, title="Throughput against device",
                  xticks=range(len(device_order)), xticklabels=device_order)
    for axes in (by_luts, by_device):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
