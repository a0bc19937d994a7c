"""Benchmarks: ``python -m tools.bench [NAME ...] [--rounds N] [--seconds S] [--cycles C]``.

Each prints a Markdown report; copy it into ``docs/benchmarks.md`` with the
command that produced it.

* ``core``: verify/sign/QR of the pure core against raw primitives (default 7 rounds of 1 s);
* ``issuer``: IssueCode throughput and latency against a bare grpc.aio echo server, both
  over TLS in their own processes (default 5 rounds of 3 s, 32 calls in flight);
* ``issuer-layers``: the same load against servers built up layer by layer (echo, echo + a GIL
  release, echo + signing, the issuer with a canned code, signing only, the real store): where
  an IssueCode's server time goes (default 3 rounds of 2 s);
* ``issuer-compare --tree DIR``: IssueCode of this checkout against IssueCode of another one (an
  older commit's ``git archive``) and the echo, interleaved in one run: did a change cost per call;
* ``crashloop``: kill -9 cycles of the real issuer under concurrent issuance, counting lost
  and duplicated acknowledged issuances (default 20 cycles);
* ``trust``: trust sync of 34 provinces from a mirror directory: refresh bytes after one
  province rotated, first-sync time against a read+parse baseline, metadata sizes (7 rounds);
* ``revocation``: 10 million revoked among 1.4 billion issued: state size against the bound, a
  day's deltas, build/load time and memory, the lookup's cost in a verification (7 rounds of 1 s);
* ``revocation-latency``: revoke -> rejected at an online terminal with real processes (issuer,
  publisher, mirror, terminal), intervals scaled down: median and worst of 24 revocations against the
  scaled intervals, the defaults' formula, and the terminal's bytes per poll (``--rounds N``);
* ``verifier``: ``healthcode-verifier run`` from text input against the core verify loop, and the
  verifier process's memory with the national revocation state loaded (7 rounds of 1 s);
* ``key-recovery``: P-256 public-key recovery from a signature (the alternative that would fit a
  presentation in a V11 QR) against one ES256 verify (5 rounds of 0.5 s);
* ``national-registration``: RegisterResident with the national claim against a province-only issuer,
  side by side on real processes (default 5 rounds of 200 registrations each);
* ``national-partition``: two provinces register the same people while the national service is down;
  surviving IDs, lost registrations, revoked losing codes, reconciliation time (default 1,000 people);
* ``http-api``: IssueCode over Connect JSON (HTTP/1.1) against over gRPC, one issuer serving both, same
  load and durability (default 5 rounds of 3 s, 32 calls in flight);
* ``national-index``: the national index on PostgreSQL with 10 million synthetic residents: claim and
  lookup p50/p99 at 32 in flight against a trivial indexed lookup, a short gRPC run, bytes per resident
  and the projection to 1.4 billion (``--residents N``; default 10,000,000, 10 s per operation; the store's
  calls also from ``--processes`` processes, default 4);
* ``publisher``: the national trust publisher (its own process) with 34 provinces pushing over mTLS: all at
  once as fast as it goes, then the 1/min rate scaled; its process CPU per push and per publication against
  one Ed25519 snapshot signature (default 5 rounds, 30 s scaled);
* ``presentation``: a live code judged at the terminal (verify_presentation + replay cache) against a
  raw P-256 verify, and the CPU time to produce one presentation (7 rounds of 1 s);
* ``web-wallet``: the phone web wallet in headless Chromium against the real issuer: first-load bytes
  (compressed, as served), time to the code offline against first paint, enrolment online (7 rounds).
"""

from __future__ import annotations

import argparse
from typing import Callable

from . import (core, crashloop, http_api, issuer, issuer_compare, issuer_layers, key_recovery, national, national_index,
               presentation, revocation, revocation_latency, trust, verifier, web_wallet)
from . import publisher as publisher_bench

#: Each benchmark's ``run``: keyword options only, each with its own set (hence ``...``).
BENCHES: dict[str, Callable[..., object]] = {
    "core": core.run, "issuer": issuer.run, "issuer-layers": issuer_layers.run, "crashloop": crashloop.run,
    "issuer-compare": issuer_compare.run,
    "trust": trust.run, "revocation": revocation.run, "revocation-latency": revocation_latency.run,
    "verifier": verifier.run,
    "key-recovery": key_recovery.run, "presentation": presentation.run, "http-api": http_api.run,
    "national-registration": national.run_registration, "national-partition": national.run_partition,
    "publisher": publisher_bench.run,
    "national-index": national_index.run, "web-wallet": web_wallet.run}
#: Per-benchmark defaults for the options not given on the command line.
DEFAULTS: dict[str, dict[str, float | str | bool]] = {
    "core": {"rounds": 7, "seconds": 1.0},
    "issuer": {"rounds": 5, "seconds": 3.0, "concurrency": 32},
    "issuer-layers": {"rounds": 3, "seconds": 2.0, "concurrency": 32},
    "issuer-compare": {"rounds": 5, "seconds": 3.0, "concurrency": 32, "tree": ""},
    "crashloop": {"cycles": 20, "concurrency": 48},
    "trust": {"rounds": 7},
    "revocation": {"rounds": 7, "seconds": 1.0},
    "revocation-latency": {"rounds": 24},
    "verifier": {"rounds": 7, "seconds": 1.0},
    "key-recovery": {"rounds": 5, "seconds": 0.5},
    "presentation": {"rounds": 7, "seconds": 1.0},
    "http-api": {"rounds": 5, "seconds": 3.0, "concurrency": 32},
    "national-registration": {"rounds": 5, "cycles": 200},
    "national-partition": {"cycles": 1000, "concurrency": 16},
    "publisher": {"rounds": 5, "seconds": 30.0, "concurrency": 34},
    "national-index": {"residents": 10_000_000, "concurrency": 32, "seconds": 10.0, "schema": "",
                       "drop_schema": False, "processes": 4},
    "web-wallet": {"rounds": 7},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=[*BENCHES, []], default=[],
                        help="benchmarks to run (all by default)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (core: 7, issuer: 5)")
    parser.add_argument("--seconds", type=float, help="seconds per contender per round (core: 1, issuer: 3)")
    parser.add_argument("--concurrency", type=int, help="calls in flight (issuer: 32, crashloop: 48)")
    parser.add_argument("--cycles", type=int,
                        help="kill -9 cycles (crashloop: 20); registrations per round (national-registration: 200); "
                        "people (national-partition: 1000)")
    parser.add_argument("--residents", type=int, help="synthetic residents loaded (national-index: 10,000,000)")
    parser.add_argument("--schema", help="national-index: load into (or reuse the load kept in) this PostgreSQL "
                        "schema and keep it")
    parser.add_argument("--tree", help="issuer-compare: another checkout of this project (e.g. an older commit's "
                        "git archive) whose issuer runs against this one's")
    parser.add_argument("--processes", type=int, help="national-index: also run the store's calls at --concurrency "
                        "spread over this many processes (4; 0: not)")
    parser.add_argument("--drop-schema", action="store_true", default=None,
                        help="national-index with --schema: drop the schema at the end")
    args = parser.parse_args(argv)
    given = {name: value for name, value in vars(args).items() if name != "which" and value is not None}
    for name in args.which or list(BENCHES):
        options = {key: given.get(key, default) for key, default in DEFAULTS[name].items()}
        BENCHES[name](**options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
