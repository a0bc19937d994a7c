"""IssueCode of this checkout against IssueCode of another checkout, with the bare echo, in one run.

``python -m tools.bench issuer-compare --tree DIR [--rounds 5] [--seconds 3] [--concurrency 32]``

``DIR`` is another checkout of this project, e.g. an older commit's
``git archive <commit> | tar -x -C DIR``; its ``python -m issuer serve`` runs
with this interpreter (so the same grpcio, cryptography and SQLite) in its
own workspace (its own database, keys, 1,000 residents). Three servers, each
in its own process over TLS: the bare grpc.aio echo (``tools.bench.issuer``),
this checkout's issuer, the other's; one client drives each in turn, rounds
interleaved with the order reversed every other round, so a slow minute of a
shared machine falls on all three. The report gives, per contender, the
throughput ratio to the echo of the same round and the server's CPU per call
(all threads, and its event-loop thread): whether IssueCode's own cost
changed between the two trees, apart from the machine's load that day.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import pathlib
import platform
import random
import statistics
import sys
import tempfile

import grpc

from .issuer import ECHO_METHOD, _Contender, _interleaved

__all__ = ["run"]


async def _bench(workspaces, ports: list[int], pids: list[int], names: list[str], *, rounds: int,
                 seconds: float, concurrency: int, residents: int) -> list[_Contender]:
    from issuer.api import health_codes_pb2, health_codes_pb2_grpc

    from .crashloop_workspace import register_residents, resident_ids

    here, other = workspaces
    async with here.channel(ports[0]) as echo_channel, here.channel(ports[1]) as a, other.channel(ports[2]) as b:
        rng = random.Random(7)
        keys = itertools.count()
        run_id = os.urandom(4).hex()

        async def issuer(channel, workspace):
            mids = await register_residents(channel, workspace.metadata, resident_ids(residents))
            stub, metadata = health_codes_pb2_grpc.HealthCodesStub(channel), workspace.metadata

            def call():
                request = health_codes_pb2.IssueCodeRequest(main_index_id=rng.choice(mids),
                                                            idempotency_key=f"cmp-{run_id}-{next(keys):09d}")
                return stub.IssueCode(request, metadata=metadata, timeout=10)
            return call, mids[0]

        call_a, first = await issuer(a, here)
        call_b, _ = await issuer(b, other)
        echo = echo_channel.unary_unary(ECHO_METHOD)
        payload = health_codes_pb2.IssueCodeRequest(  # the size of an IssueCode request, as tools.bench.issuer
            main_index_id=first, idempotency_key=f"cmp-{run_id}-{0:09d}").SerializeToString()

        def echo_call():
            return echo(payload, metadata=here.metadata, timeout=10)

        contenders = [_Contender(names[0], echo_call, pids[0]), _Contender(names[1], call_a, pids[1]),
                      _Contender(names[2], call_b, pids[2])]
        await _interleaved(contenders, rounds=rounds, seconds=seconds, concurrency=concurrency, warmup=1.0)
    return contenders


def run(*, tree: str = "", rounds: int = 5, seconds: float = 3.0, concurrency: int = 32, residents: int = 1000,
        out=sys.stdout, **_ignored) -> list[_Contender] | None:
    """Start the three servers, measure, print the Markdown report; None (and a line saying so) without ``tree``."""
    from .crashloop_workspace import ROOT, ServerProcess, Workspace

    if not tree:
        print("issuer-compare: skipped (needs --tree DIR, another checkout to compare with)", file=out)
        return None
    other_root = pathlib.Path(tree).resolve()
    if not (other_root / "issuer" / "__main__.py").is_file():
        raise SystemExit(f"issuer-compare: {other_root} is not a checkout of this project (no issuer/__main__.py)")
    with tempfile.TemporaryDirectory(prefix="healthcode-bench-cmp-") as tmp:
        now = dt.datetime.now(dt.timezone.utc)
        here = Workspace.create(pathlib.Path(tmp) / "here", now=now)
        other = Workspace.create(pathlib.Path(tmp) / "other", now=now)
        servers: list[ServerProcess] = []
        try:
            servers.append(ServerProcess.spawn(
                [sys.executable, "-m", "tools.bench.issuer", "echo-server", "--tls-cert", str(here.tls_cert),
                 "--tls-key", str(here.tls_key)], here.directory / "echo.log", ca_pem=here.ca_pem))
            servers.append(ServerProcess.issuer(here, log_name="issuer.log"))
            servers.append(ServerProcess.issuer(other, log_name="issuer.log", root=other_root))
            names = ["bare grpc.aio echo", f"IssueCode, this tree ({ROOT.name})", f"IssueCode, {other_root}"]
            contenders = asyncio.run(_bench(
                (here, other), [s.port for s in servers], [s.pid for s in servers], names, rounds=rounds,
                seconds=seconds, concurrency=concurrency, residents=residents))
            for server in servers:
                server.terminate()
        finally:
            for server in servers:
                server.close()
    _report(contenders, out=out, rounds=rounds, seconds=seconds, concurrency=concurrency)
    return contenders


def _report(contenders: list[_Contender], *, out, rounds: int, seconds: float, concurrency: int) -> None:
    echo = contenders[0]
    print(f"# IssueCode, this tree against another  ({platform.python_implementation()} "
          f"{platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs, {rounds} interleaved "
          f"rounds of {seconds:g} s, {concurrency} calls in flight, load average "
          f"{os.getloadavg()[0]:.1f} at the end)\n", file=out)

    def per_call(c: _Contender, attribute: str) -> float:
        return 1e6 * sum(getattr(r, attribute) for r in c.rounds) / max(1, sum(r.calls for r in c.rounds))

    echo_cpu = per_call(echo, "server_cpu")
    print("| contender | calls/s per round | ratio to the echo, median (min-max) | p99 ms | server µs/call "
          "(per round) | event-loop µs/call | server µs/call / echo's |", file=out)
    print("|---|---|---|---:|---|---:|---:|", file=out)
    for c in contenders:
        ratios = [a.rate / b.rate for a, b in zip(c.rounds, echo.rounds)]
        rounds_cpu = ", ".join(f"{1e6 * r.server_cpu / max(1, r.calls):.0f}" for r in c.rounds)
        print(f"| {c.name} | {', '.join(f'{r.rate:,.0f}' for r in c.rounds)} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {1000 * c.pooled(0.99):.1f} | "
              f"{per_call(c, 'server_cpu'):.0f} ({rounds_cpu}) | {per_call(c, 'server_loop_cpu'):.0f} | "
              f"{per_call(c, 'server_cpu') / echo_cpu:.2f} |", file=out)
    errors = sum(r.errors for c in contenders for r in c.rounds)
    if errors:
        print(f"\n{errors} calls failed (not counted).", file=out)
