"""The national store's calls from several processes at once (part of ``python -m tools.bench national-index``).

The national service is deployed as a few processes behind a load balancer, sharing one PostgreSQL
(``docs/operations.md`` §14), not as one process with 32 threads: each process has its own GIL. This
module measures that shape: ``processes`` spawned processes, each with its own store (its own pool)
and ``in_flight / processes`` threads, run the same lookup or claim as
:mod:`tools.bench.national_index` at the same moment (a barrier), for ``seconds``; latencies of all
processes are pooled for p50/p99.

Claims use a region code of this run (``3302NN``, random per run; the one-process claims use ``3301NN``)
so that a schema kept from an earlier run (``--schema``) still gets new residents, not the "already
claimed" path.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import time
from typing import Any, Callable

__all__ = ["in_processes"]


def _operation(kind: str, store: Any, residents: int, region: str, first: int) -> tuple[Callable[[int], object],
                                                                                         list[int]]:
    from .national_index import _claim_op, _lookup_op

    if kind == "lookup":
        rng = random.Random(first)
        return _lookup_op(store), [rng.randrange(1, residents + 1) for _ in range(400_000)]
    return _claim_op(store, region), list(range(first, first + 400_000))


def _child(kind: str, url: str, residents: int, threads: int, seconds: float, region: str, first: int,
           barrier: Any, results: Any) -> None:
    from national.store import open_postgres_store

    from .national_index import PARTITIONS, _timed

    store = open_postgres_store(url, partitions=PARTITIONS, pool_size=threads)
    try:
        op, inputs = _operation(kind, store, residents, region, first)
        _timed(op, inputs[:2000], threads, 1.0)  # open and warm the pool
        barrier.wait(timeout=300)
        results.put(_timed(op, inputs[2000:], threads, seconds))
    finally:
        store.close()


def in_processes(kind: str, *, url: str, residents: int, in_flight: int, processes: int,
                 seconds: float) -> list[float]:
    """Latencies (ms) of ``kind`` ("lookup" or "claim") with ``in_flight`` threads spread over ``processes``."""
    if in_flight % processes:
        raise ValueError("in_flight must be a multiple of processes")
    ctx = mp.get_context("spawn")  # a clean interpreter each: no inherited pool, threads or sockets
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    region = f"3302{random.randrange(10, 100)}"  # not the one-process claims' 3301NN
    children = [ctx.Process(target=_child, args=(kind, url, residents, in_flight // processes, seconds, region,
                                                 1 + p * 1_000_000, barrier, results))
                for p in range(processes)]
    for child in children:
        child.start()
    latencies: list[float] = []
    received, deadline = 0, time.monotonic() + seconds + 600
    try:
        while received < processes:
            try:
                latencies.extend(results.get(timeout=1.0))
                received += 1
            except queue.Empty:
                failed = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise RuntimeError(f"a {kind} process failed (exit codes {failed}) or did not answer") from None
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    return latencies
