"""Revoke -> rejected at an online terminal with nothing typed: the benchmark's chain, two revocations.

Four real processes (issuer in network push mode, the national publisher over
34 provinces, an HTTP mirror, ``healthcode-verifier run`` syncing in the
background), every interval divided by 20 (``tools/bench/revocation_latency.py``).
Each revocation must reach the terminal within the scaled intervals plus a
margin for the processes' work on a loaded machine, and the terminal's polls
must stay within their byte budgets (1 kB with nothing new, 10 kB with a
revocation).
"""

from __future__ import annotations

import io

from tools.bench import revocation_latency


def test_two_revocations_reach_a_syncing_terminal_within_the_scaled_intervals():
    report = revocation_latency.run(rounds=2, scale=20.0, out=io.StringIO())
    scaled = report["scaled"]
    bound = max(scaled["issuer_settle"], scaled["issuer_min_interval"]) + scaled["batch_window"] \
        + scaled["sync_interval"]
    assert len(report["totals"]) == 2
    assert max(report["totals"]) <= bound + 5.0, (report["totals"], bound)  # 5 s for the work, on 2 busy CPUs
    assert report["changed_bytes"] and max(report["changed_bytes"]) <= 10_000
    assert report["idle_bytes"] and max(report["idle_bytes"]) <= 1000
