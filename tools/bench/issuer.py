"""IssueCode throughput and latency against a bare grpc.aio echo server, on this machine, in this run.

``python -m tools.bench issuer [--rounds 5] [--seconds 3] [--concurrency 32]``

Two servers run, each in its own child process, both over TLS with the same
throwaway server certificate (``issuer.tls``):

* **the issuer**: ``python -m issuer serve`` as configured for production:
  API key authentication, the per-caller rate limiter (set high: one client
  here is the whole load), JSON log line per RPC (INFO, to a file), Prometheus
  metrics, the real SQLite store with WAL and ``synchronous=FULL``: an
  IssueCode is answered only after its group-commit transaction is fsync'd.
* **the bare echo** (``python -m tools.bench.issuer echo-server``): a grpc.aio
  server with one generic unary handler on raw bytes (no protobuf, no
  interceptors, no auth, no logging) that returns the request. It is the
  ceiling a grpc.aio server in Python reaches on this machine: transport, TLS,
  HTTP/2 and the asyncio servicer dispatch, nothing else. The client sends it
  the same bytes an IssueCode call carries (the serialized request and the
  ``authorization`` header), so TLS and HTTP/2 do the same work on the way in.

One client process (this one) drives both with the same design: one asyncio
event loop, one channel, N calls kept in flight (closed loop). On 2 cores this
gives the server one core and the client the other; a second client process
would compete with the server for a core and lower the server's own numbers.
The report includes CPU time per call of server and client, so which side
limits each contender is visible rather than guessed.

Rounds are interleaved (echo, issue, issue without key, echo, ...; the order
alternates) and every ratio is taken within a round; medians are the headline.
Residents are registered through the API before the timed rounds; each call
issues to a random one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import os
import pathlib
import platform
import random
import resource
import signal
import statistics
import sys
import tempfile
import time
from typing import Awaitable, Callable, Iterable

import grpc

from ._measure import percentile

__all__ = ["run", "ECHO_METHOD"]

ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the bare echo server (child process)


async def _serve_echo(listen: str, cert: pathlib.Path, key: pathlib.Path, *,
                      before_reply: Callable[[], object] | None = None) -> None:
    """The bare echo until SIGTERM/SIGINT; ``before_reply()``, if given, runs in each call
    (``tools.bench.issuer_layers`` adds work to the echo that way)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    if before_reply is None:
        async def echo(request: bytes, context) -> bytes:
            return request
    else:
        async def echo(request: bytes, context) -> bytes:
            before_reply()
            return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),
    ))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port(listen, credentials)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    print(json.dumps({"event": "listening", "port": port}), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def _echo_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.issuer echo-server")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--tls-cert", type=pathlib.Path, required=True)
    parser.add_argument("--tls-key", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve_echo(args.listen, args.tls_cert, args.tls_key))
    return 0


# --------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Round:
    calls: int
    seconds: float
    latencies: list[float]
    errors: int
    server_cpu: float  # seconds of CPU the server process used (all threads)
    server_loop_cpu: float  # of which its main thread (the asyncio event loop)
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def _process_cpu(pid: int, *, thread: int | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of its thread ``thread``."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _closed_loop(call: Callable[[], Awaitable[object]], *, concurrency: int, seconds: float,
                       server_pid: int) -> Round:
    """Keep ``concurrency`` calls in flight for ``seconds``; count the calls that finished inside."""
    latencies: list[float] = []
    errors = 0
    loop_time = time.perf_counter
    end = 0.0  # set just before the workers start

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = loop_time()
            if t0 >= end:
                return
            try:
                await call()
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            t1 = loop_time()
            if t1 <= end:
                latencies.append(t1 - t0)

    server_cpu, loop_cpu, client_cpu = (_process_cpu(server_pid), _process_cpu(server_pid, thread=server_pid),
                                        _own_cpu())
    start = loop_time()
    end = start + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = min(loop_time(), end) - start
    return Round(len(latencies), elapsed, latencies, errors, _process_cpu(server_pid) - server_cpu,
                 _process_cpu(server_pid, thread=server_pid) - loop_cpu, _own_cpu() - client_cpu)


# --------------------------------------------------------------------------- the benchmark


@dataclasses.dataclass
class _Contender:
    name: str
    call: Callable[[], Awaitable[object]]
    server_pid: int
    rounds: list[Round] = dataclasses.field(default_factory=list)
    sweep: dict[int, Round] = dataclasses.field(default_factory=dict)

    @property
    def rates(self) -> list[float]:
        return [r.rate for r in self.rounds]

    def pooled(self, fraction: float) -> float:
        return percentile([x for r in self.rounds for x in r.latencies], fraction)


async def _interleaved(contenders: Iterable[_Contender], *, rounds: int, seconds: float, concurrency: int,
                       warmup: float) -> None:
    """Warm each contender up for ``warmup`` s (connections, caches, allocator: not timed), then
    ``rounds`` rounds of each in turn, the order reversed every other round (no contender always
    goes first); each round is appended to its contender's ``rounds``."""
    forward = list(contenders)
    for c in forward:
        await _closed_loop(c.call, concurrency=concurrency, seconds=warmup, server_pid=c.server_pid)
    for index in range(rounds):
        for c in (forward if index % 2 == 0 else forward[::-1]):
            c.rounds.append(await _closed_loop(c.call, concurrency=concurrency, seconds=seconds,
                                               server_pid=c.server_pid))


async def _bench(workspace, issuer_port: int, issuer_pid: int, echo_port: int, echo_pid: int, *, rounds: int,
                 seconds: float, concurrency: int, residents: int, warmup: float,
                 sweep: tuple[int, ...]) -> dict[str, _Contender]:
    from issuer.api import health_codes_pb2, health_codes_pb2_grpc

    from .crashloop_workspace import register_residents, resident_ids

    metadata = workspace.metadata
    async with workspace.channel(issuer_port) as issuer_channel, workspace.channel(echo_port) as echo_channel:
        mids = await register_residents(issuer_channel, metadata, resident_ids(residents))
        stub = health_codes_pb2_grpc.HealthCodesStub(issuer_channel)
        echo = echo_channel.unary_unary(ECHO_METHOD)  # bytes in, bytes out
        rng = random.Random(7)
        keys = itertools.count()
        run_id = os.urandom(4).hex()
        # the echo carries what an IssueCode call carries: a request of the same size, the same header
        payload = health_codes_pb2.IssueCodeRequest(
            main_index_id=mids[0], idempotency_key=f"bench-{run_id}-{0:09d}").SerializeToString()
        IssueCodeRequest = health_codes_pb2.IssueCodeRequest

        def echo_call():
            return echo(payload, metadata=metadata, timeout=10)

        def issue_keyed():
            request = IssueCodeRequest(main_index_id=rng.choice(mids),
                                       idempotency_key=f"bench-{run_id}-{next(keys):09d}")
            return stub.IssueCode(request, metadata=metadata, timeout=10)

        def issue_plain():
            return stub.IssueCode(IssueCodeRequest(main_index_id=rng.choice(mids)), metadata=metadata, timeout=10)

        contenders = {
            "echo": _Contender("bare grpc.aio echo", echo_call, echo_pid),
            "keyed": _Contender("IssueCode, idempotency key", issue_keyed, issuer_pid),
            "plain": _Contender("IssueCode, no key", issue_plain, issuer_pid),
        }
        await _interleaved(contenders.values(), rounds=rounds, seconds=seconds, concurrency=concurrency,
                           warmup=warmup)
        # latency against load: one more echo/issue pair at other numbers of calls in flight
        for level in sweep:
            for name in ("echo", "keyed"):
                c = contenders[name]
                c.sweep[level] = await _closed_loop(c.call, concurrency=level, seconds=seconds,
                                                    server_pid=c.server_pid)
    return contenders


def run(*, rounds: int = 5, seconds: float = 3.0, concurrency: int = 32, residents: int = 1000,
        warmup: float = 1.0, sweep: tuple[int, ...] = (8, 16, 64), out=sys.stdout,
        **_ignored) -> dict[str, _Contender]:
    """Start both servers, measure, print the Markdown report; return the measurements."""
    from .crashloop_workspace import ServerProcess, Workspace

    with tempfile.TemporaryDirectory(prefix="healthcode-bench-issuer-") as tmp:
        workspace = Workspace.create(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc))
        issuer = echo = None
        try:
            issuer = ServerProcess.issuer(workspace, log_name="issuer.log")
            echo = ServerProcess.spawn(
                [sys.executable, "-m", "tools.bench.issuer", "echo-server", "--tls-cert", str(workspace.tls_cert),
                 "--tls-key", str(workspace.tls_key)],
                workspace.directory / "echo.log", ca_pem=workspace.ca_pem)
            contenders = asyncio.run(_bench(
                workspace, issuer.port, issuer.pid, echo.port, echo.pid, rounds=rounds, seconds=seconds,
                concurrency=concurrency, residents=residents, warmup=warmup,
                sweep=tuple(level for level in sweep if level != concurrency)))
            issuer.terminate()
            echo.terminate()
        finally:
            for server in (issuer, echo):
                if server is not None:
                    server.close()
        _report(contenders, out=out, rounds=rounds, seconds=seconds, concurrency=concurrency, residents=residents)
    return contenders


def _latency_rows(contenders: Iterable[_Contender], out) -> None:
    """A latency table's rows, one a contender: p50, p90, p99 and max of all rounds pooled (ms), the range of
    the rounds' p99s, the errors."""
    for c in contenders:
        p99s = [percentile(r.latencies, 0.99) * 1000 for r in c.rounds]
        print(f"| {c.name} | {c.pooled(0.5) * 1000:.2f} | {c.pooled(0.9) * 1000:.2f} | {c.pooled(0.99) * 1000:.2f} | "
              f"{c.pooled(1.0) * 1000:.1f} | {min(p99s):.1f}-{max(p99s):.1f} | "
              f"{sum(r.errors for r in c.rounds)} |", file=out)


def _cpu_rows(contenders: Iterable[_Contender], out) -> None:
    """A CPU table's rows, one a contender, over all rounds: the server's CPU per call and share of a core (all
    threads, then its event-loop thread), the client's."""
    for c in contenders:
        calls = sum(r.calls for r in c.rounds) or 1
        wall = sum(r.seconds for r in c.rounds)
        server, client = sum(r.server_cpu for r in c.rounds), sum(r.client_cpu for r in c.rounds)
        loop_cpu = sum(r.server_loop_cpu for r in c.rounds)
        print(f"| {c.name} | {server / calls * 1e6:,.0f} | {server / wall:.0%} | {loop_cpu / calls * 1e6:,.0f} | "
              f"{loop_cpu / wall:.0%} | {client / calls * 1e6:,.0f} | {client / wall:.0%} |", file=out)


def _report(contenders: dict[str, _Contender], *, out, rounds: int, seconds: float, concurrency: int,
            residents: int) -> None:
    echo, keyed, plain = contenders["echo"], contenders["keyed"], contenders["plain"]
    print(f"# IssueCode against a bare grpc.aio echo  ({platform.python_implementation()} "
          f"{platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs, {rounds} interleaved "
          f"rounds of {seconds:g} s, {concurrency} calls in flight)\n", file=out)
    print("Both servers in their own process over TLS; one grpc.aio client process (one channel, "
          f"{concurrency} calls in flight) drives both. IssueCode: real server, API key, JSON log per RPC, "
          f"metrics, SQLite WAL synchronous=FULL (group commit), {residents} residents registered beforehand. "
          "Echo: generic bytes handler, no interceptors.\n", file=out)

    def ratios(c: _Contender) -> list[float]:
        return [a / b for a, b in zip(c.rates, echo.rates)]

    print("## Throughput per round (calls/s) and ratio to the echo of the same round\n", file=out)
    print(f"| round | {echo.name} | {keyed.name} | ratio | {plain.name} | ratio |", file=out)
    print("|---:|---:|---:|---:|---:|---:|", file=out)
    for i in range(rounds):
        e, k, p = echo.rates[i], keyed.rates[i], plain.rates[i]
        print(f"| {i + 1} | {e:,.0f} | {k:,.0f} | {k / e:.2f} | {p:,.0f} | {p / e:.2f} |", file=out)
    rk, rp = ratios(keyed), ratios(plain)
    print(f"| **median** | **{statistics.median(echo.rates):,.0f}** | **{statistics.median(keyed.rates):,.0f}** | "
          f"**{statistics.median(rk):.2f}** ({min(rk):.2f}-{max(rk):.2f}) | "
          f"**{statistics.median(plain.rates):,.0f}** | **{statistics.median(rp):.2f}** "
          f"({min(rp):.2f}-{max(rp):.2f}) |", file=out)

    print(f"\n## Latency at that load ({concurrency} in flight; ms, all rounds pooled; per-round p99 range)\n",
          file=out)
    print("| contender | p50 | p90 | p99 | max | p99 per round (min-max) | errors |", file=out)
    print("|---|---:|---:|---:|---:|---|---:|", file=out)
    _latency_rows((echo, keyed, plain), out)

    print("\n## CPU per call (all rounds; % of one core; the server's event loop is one thread)\n", file=out)
    print("| contender | server µs/call (all threads) | server CPU | server event-loop thread µs/call | "
          "event-loop thread busy | client µs/call | client CPU |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|", file=out)
    _cpu_rows((echo, keyed, plain), out)

    if keyed.sweep:
        print(f"\n## Load against latency (one round of {seconds:g} s per level, after the interleaved rounds)\n",
              file=out)
        print(f"| calls in flight | echo calls/s | {keyed.name} calls/s | ratio | IssueCode p50 ms | "
              "IssueCode p99 ms |", file=out)
        print("|---:|---:|---:|---:|---:|---:|", file=out)
        levels = sorted({concurrency, *keyed.sweep})
        for level in levels:
            if level == concurrency:
                e, k, ratio = statistics.median(echo.rates), statistics.median(keyed.rates), statistics.median(rk)
                lat = [x for r in keyed.rounds for x in r.latencies]
                note = " (the rounds above, medians)"
            else:
                e, k = echo.sweep[level].rate, keyed.sweep[level].rate
                ratio = k / e
                lat = keyed.sweep[level].latencies
                note = ""
            print(f"| {level}{note} | {e:,.0f} | {k:,.0f} | {ratio:.2f} | {percentile(lat, 0.5) * 1000:.1f} | "
                  f"{percentile(lat, 0.99) * 1000:.1f} |", file=out)

    ratio = statistics.median(rk)
    p99 = keyed.pooled(0.99) * 1000
    print("\n## Targets\n", file=out)
    print("| target | measured | met |", file=out)
    print("|---|---:|---|", file=out)
    print(f"| IssueCode throughput >= 0.6x the bare echo | {ratio:.2f}x | {'yes' if ratio >= 0.6 else 'NO'} |",
          file=out)
    print(f"| IssueCode p99 < 50 ms at that load | {p99:.1f} ms | {'yes' if p99 < 50 else 'NO'} |", file=out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["echo-server"]:
        sys.exit(_echo_main(sys.argv[2:]))
    sys.exit("usage: python -m tools.bench.issuer echo-server --tls-cert PEM --tls-key PEM "
             "(the benchmark itself: python -m tools.bench issuer)")
