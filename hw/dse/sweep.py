"""Run a sweep's points on Dask: a `LocalCluster` of one single-threaded worker process per core
(by default), or an existing scheduler.

Each point is one task (`hw.dse.point.run_point`), submitted at once; the scheduler hands a worker
one point at a time (``worker-saturation`` 1.0), so a worker's nextpnr seeds run on its own core.
A point whose task raises is recorded as ``error`` with the exception, one whose worker dies
(killed, out of memory) as ``lost`` -- the local scheduler does not retry it
(``allowed-failures`` 0), so only that point is lost -- and the sweep goes on. An existing
scheduler keeps its own settings; its workers need this project importable and the same paths
for the output and cache folders.
"""

import time

__all__ = ["SchedulerError", "connect", "run_tasks", "PROGRESS_SECONDS"]

# How often a line says which points are still running when none has finished.
PROGRESS_SECONDS = 60.0
_LOCAL_CONFIG = {"distributed.scheduler.allowed-failures": 0,
                 "distributed.scheduler.worker-saturation": 1.0}


class SchedulerError(RuntimeError):
    """The scheduler given with ``--scheduler`` cannot be reached."""


def connect(scheduler, *, workers, timeout):
    """A ``(client, cluster)`` pair: on `scheduler` (``tcp://HOST:PORT``; cluster None), or on a
    new `LocalCluster` of `workers` single-threaded processes. `SchedulerError` when `scheduler`
    does not answer within `timeout` seconds."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return Client(scheduler, timeout=timeout), None
        except (OSError, TimeoutError, ValueError) as error:
            raise SchedulerError(f"--scheduler {scheduler}: cannot reach the scheduler "
                                 f"({error})") from None
    with dask.config.set(_LOCAL_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster


def _failure_row(task, error):
    from distributed.scheduler import KilledWorker

    if isinstance(error, KilledWorker):
        return {"name": task["name"], "status": "lost",
                "problems": "the worker building it died (KilledWorker)"}
    return {"name": task["name"], "status": "error",
            "problems": f"{type(error).__name__}: {error}"}


def run_tasks(client, function, tasks, *, say):
    """Run `function(task)` for each of `tasks` on `client`; returns the rows in task order, a
    failed task's row holding its name, ``status`` (``error`` or ``lost``) and ``problems``."""
    from distributed import wait

    started = time.monotonic()
    futures = {client.submit(function, task, pure=False, key=f"dse-{task['name']}-{started}"):
               task for task in tasks}
    rows, pending = {}, set(futures)
    while pending:
        try:
            done, pending = wait(pending, timeout=PROGRESS_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            say(f"[{time.monotonic() - started:7.1f}s] still running or waiting: "
                + ", ".join(futures[future]["name"] for future in pending))
            continue
        elapsed = time.monotonic() - started
        for future in done:
            task = futures[future]
            error = future.exception()
            row = future.result() if error is None else _failure_row(task, error)
            rows[task["name"]] = row
            say(f"[{elapsed:7.1f}s] {len(rows)}/{len(tasks)} {task['name']}: {row['status']}"
                + (" (cached)" if row.get("cached") else
                   f" in {row['build_seconds']:.0f} s" if "build_seconds" in row else "")
                + (f", Fmax {row['fmax_mhz']:.2f} MHz" if row.get("fmax_mhz") else "")
                + (f" -- {row['problems']}" if row.get("problems") else ""))
    return [rows[task["name"]] for task in tasks]
