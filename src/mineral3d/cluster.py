"""Where the work of a volume step runs: this process, or a dask cluster.

A *scheduler* is one of

- ``None`` or ``"threads"``: this process (numpy/torch use every core through threads);
- ``"synchronous"``: this process, one task at a time (debugging);
- ``"processes"``: dask's local process pool (for numpy steps that hold the GIL);
- the address of a running ``dask.distributed`` scheduler (``"tcp://host:8786"``, e.g.
  started by ``dask-jobqueue`` on an HPC system), or a ``distributed.Client``.

:func:`open_scheduler` turns the CLI's ``--scheduler``/``--workers`` into one of these
(``--workers N`` starts a ``LocalCluster`` of N single-threaded worker processes on
loopback); :func:`compute` runs dask tasks on it; :func:`client_of` gives the
``distributed.Client`` when there is one (steps that hand out blocks one by one, with
progress, use it; without one they run in this process).
"""

from __future__ import annotations

import contextlib

from mineral3d.errors import ParameterError

LOCAL = (None, "threads", "synchronous", "processes")


@contextlib.contextmanager
def open_scheduler(scheduler: str | None = None, workers: int | None = None):
    """Context giving what :func:`compute` takes; a LocalCluster lives as long as the context."""
    if workers is None:
        if isinstance(scheduler, str) and scheduler not in LOCAL and "://" not in scheduler:
            raise ParameterError("scheduler", f"{scheduler!r} is neither threads, processes, synchronous nor a "
                                            "scheduler address like tcp://host:8786")
        if isinstance(scheduler, str) and "://" in scheduler:
            from distributed import Client

            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise ParameterError("scheduler", f"cannot reach the dask scheduler at {scheduler} "
                                                f"({str(exc).splitlines()[0]})") from None
            with client:
                yield client
            return
        yield scheduler or "threads"
        return
    if workers < 1:
        raise ParameterError("workers", f"must be at least 1, got {workers}")
    if scheduler not in (None, "processes"):
        raise ParameterError("workers", "starts a local cluster: do not combine it with a scheduler")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def client_of(scheduler):
    """The ``distributed.Client`` behind ``scheduler`` (an address connects one), or None."""
    if scheduler in LOCAL:
        return None
    if isinstance(scheduler, str):
        from distributed import Client

        return Client(scheduler)
    return scheduler


def map_ordered(fn, arg_tuples, client=None):
    """``fn(*args)`` for each tuple, results yielded in order: here, or on ``client``'s workers.

    On a cluster every task is submitted at once (results wait on the workers) and each
    result is fetched when its turn comes, so this process holds one result at a time.
    """
    if client is None:
        for args in arg_tuples:
            yield fn(*args)
        return
    futures = [client.submit(fn, *args, pure=False) for args in arg_tuples]
    for i, fut in enumerate(futures):
        yield fut.result()
        futures[i] = None  # release it on the workers
        fut.release()


def compute(tasks, scheduler=None):
    """``dask.compute(*tasks)`` on ``scheduler`` (see the module docstring)."""
    import dask

    if scheduler in LOCAL:
        return dask.compute(*tasks, scheduler=scheduler or "threads")
    if isinstance(scheduler, str):
        from distributed import Client

        with Client(scheduler) as client:
            return dask.compute(*tasks, scheduler=client)
    return dask.compute(*tasks, scheduler=scheduler)
