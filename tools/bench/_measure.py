"""Measurement helpers shared by the benchmarks.

The machine is shared and noisy, so absolute times drift: every benchmark runs
its contenders *interleaved*, round after round, and reports each contender's
rate as a ratio to a baseline measured in the same round. The median over the
rounds is the headline figure; the spread is printed next to it.

:func:`rate` counts the calling thread's CPU time, not wall time: another job
taking the core for a moment then does not count against whichever contender
happened to be running (the contenders are single-threaded and CPU-bound).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

#: One contender: an operation and the inputs it cycles over. Each contender's inputs have
#: their own type, which a mapping of several cannot state: hence ``Any``.
Contender = tuple[Callable[[Any], object], Sequence[Any]]


@dataclass(frozen=True)
class Series:
    """Rates (operations per second) of one contender, one per round."""

    name: str
    rates: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def ratio_to(self, baseline: "Series") -> tuple[float, float, float]:
        """(median, min, max) of the per-round ratio of this rate to the baseline's."""
        ratios = [a / b for a, b in zip(self.rates, baseline.rates)]
        return statistics.median(ratios), min(ratios), max(ratios)


def rate(operation: Callable[[T], object], inputs: Sequence[T], *, seconds: float) -> float:
    """Run ``operation`` over ``inputs`` (cycling) for about ``seconds`` of this thread's
    CPU time; return operations per CPU second."""
    gc.collect()
    count = 0
    n = len(inputs)
    clock = time.thread_time
    start = clock()
    deadline = start + seconds
    while True:
        for item in inputs:
            operation(item)
        count += n
        now = clock()
        if now >= deadline:
            return count / (now - start)


def interleaved(
    contenders: Mapping[str, Contender],
    *,
    rounds: int,
    seconds: float,
) -> dict[str, Series]:
    """Measure every contender once per round, in turn, for ``rounds`` rounds."""
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(rounds):
        names = list(contenders)
        if round_index % 2:  # alternate the order so no contender always runs first
            names.reverse()
        for name in names:
            operation, inputs = contenders[name]
            results[name].append(rate(operation, inputs, seconds=seconds))
    return {name: Series(name, tuple(rates)) for name, rates in results.items()}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def best_time(operation: Callable[[], object], *, repeat: int = 7, number: int = 50) -> float:
    """The best of ``repeat`` means of ``number`` calls, in seconds (for latency-style figures)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            operation()
        best = min(best, (time.perf_counter() - start) / number)
    return best
