"""Benchmarks: ``python -m tools.bench [core] [--rounds N] [--seconds S]``.

Each prints a Markdown report; copy it into ``docs/benchmarks.md`` with the
command that produced it.
"""

from __future__ import annotations

import argparse

from . import core

BENCHES = {"core": core.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    parser.add_argument("which", nargs="*", choices=[*BENCHES, []], default=[], help="benchmarks to run (all by default)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per contender per round")
    args = parser.parse_args(argv)
    for name in args.which or list(BENCHES):
        BENCHES[name](rounds=args.rounds, seconds=args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
