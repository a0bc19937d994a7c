"""The issuer benchmarks' shared schedule (``tools.bench.issuer._interleaved``): a warm-up of each
contender, then rounds in alternating order, each round recorded on its contender. Real closed loops of
a trivial call, briefly (a wrapper notes whose loop starts)."""

from __future__ import annotations

import asyncio
import os

from tools.bench import issuer as bench


def test_each_contender_warms_up_then_the_order_alternates_every_round(monkeypatch) -> None:
    turns: list[tuple[str, float]] = []  # (whose closed loop, how long), in the order they ran
    real = bench._closed_loop

    async def noted(call, *, concurrency, seconds, server_pid):
        turns.append((call.__name__, seconds))
        return await real(call, concurrency=concurrency, seconds=seconds, server_pid=server_pid)

    monkeypatch.setattr(bench, "_closed_loop", noted)

    async def a() -> None:
        await asyncio.sleep(0)

    async def b() -> None:
        await asyncio.sleep(0)

    first, second = bench._Contender("a", a, os.getpid()), bench._Contender("b", b, os.getpid())
    asyncio.run(bench._interleaved([first, second], rounds=3, seconds=0.02, concurrency=2, warmup=0.01))
    assert turns == [("a", 0.01), ("b", 0.01),  # warm-up, not recorded
                     ("a", 0.02), ("b", 0.02), ("b", 0.02), ("a", 0.02), ("a", 0.02), ("b", 0.02)]
    assert len(first.rounds) == len(second.rounds) == 3
    assert all(r.calls > 0 and r.errors == 0 for r in first.rounds + second.rounds)
