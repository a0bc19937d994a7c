"""IssueCode over Connect JSON (HTTP/1.1) against IssueCode over gRPC, on one issuer, in this run.

``python -m tools.bench http-api [--rounds 5] [--seconds 3] [--concurrency 32]``

One real issuer (``python -m issuer serve --http-listen 127.0.0.1:0``, as the
``issuer`` benchmark runs it: TLS, API key, rate limiter, a JSON log line per
RPC, the real SQLite store with WAL and ``synchronous=FULL``, group commit) in
its own process serves both transports from the same handlers, so both
contenders have the same durability, the same store and the same server CPU.
One client process (this one) drives both with the same design: one asyncio
loop, N calls kept in flight (closed loop), each an IssueCode with a fresh
idempotency key to a random one of the residents registered beforehand.

* **gRPC**: one grpc.aio channel (HTTP/2, TLS), N concurrent calls.
* **Connect JSON**: N keep-alive HTTP/1.1 TLS connections (HTTP/1.1 carries one
  request at a time per connection), each a minimal client on asyncio streams
  (``POST`` with ``Content-Type: application/json``, the response's
  ``Content-Length`` read, the JSON parsed), so the client's own cost stays
  small and visible in the CPU table.

Rounds are interleaved (gRPC, Connect, then reversed) and each ratio is taken
within a round; medians are the headline. The target (issue 16): Connect JSON
at least 0.8x the gRPC rate, p99 reported for both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import pathlib
import platform
import random
import ssl
import statistics
import sys
import tempfile
from typing import Awaitable

import grpc

from .issuer import _Contender, _cpu_rows, _interleaved, _latency_rows

__all__ = ["run", "ConnectJsonPool"]

ISSUE_PATH = "/healthcode.issuer.v1.HealthCodes/IssueCode"


class ConnectJsonPool:
    """N keep-alive HTTP/1.1 connections for Connect JSON unary calls; a call takes a free connection."""

    def __init__(self, port: int, ca_pem: bytes, authorization: str, size: int) -> None:
        self._port = port
        self._context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        self._head = (f"POST {ISSUE_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Content-Type: application/json\r\nConnect-Protocol-Version: 1\r\n"
                      f"Connect-Timeout-Ms: 10000\r\nAuthorization: {authorization}\r\n").encode()
        self._size = size
        self._free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._all: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        for _ in range(self._size):
            self._free.put_nowait(await self._connect())

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        for writer in self._all:
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self._port, ssl=self._context)
        self._all.append(writer)
        return reader, writer

    async def call(self, body: bytes) -> dict:
        """POST ``body``; the parsed JSON answer. Raises :class:`ConnectFailed` on a non-200 answer.

        A connection the server closed while idle (keep-alive timeout) is replaced and the request
        sent again on the new one, as browsers do (nothing was read of the request on the old one)."""
        reader, writer = await self._free.get()
        for attempt in (0, 1):
            try:
                writer.write(self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                if attempt:
                    raise
                reader, writer = await self._connect()
            except BaseException:
                writer.close()
                raise
        try:
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            data = await reader.readexactly(length)
        except BaseException:
            writer.close()  # a broken connection is not reused
            raise
        self._free.put_nowait((reader, writer))
        if status != 200:
            raise ConnectFailed(status, data)
        return json.loads(data)


class ConnectFailed(grpc.aio.AioRpcError):
    """A non-200 Connect answer. An ``AioRpcError`` only because that is what the shared closed loop
    (``tools.bench.issuer._closed_loop``) counts as an error and goes on."""

    def __init__(self, status: int, body: bytes) -> None:
        Exception.__init__(self, f"HTTP {status}: {body[:200]!r}")


async def _bench(workspace, grpc_port: int, http_port: int, server_pid: int, *, rounds: int, seconds: float,
                 concurrency: int, residents: int, warmup: float) -> dict[str, _Contender]:
    from issuer.api import health_codes_pb2, health_codes_pb2_grpc

    from .crashloop_workspace import register_residents, resident_ids

    metadata = workspace.metadata
    async with workspace.channel(grpc_port) as channel:
        mids = await register_residents(channel, metadata, resident_ids(residents))
        stub = health_codes_pb2_grpc.HealthCodesStub(channel)
        pool = ConnectJsonPool(http_port, workspace.ca_pem, metadata[0][1], concurrency)
        await pool.open()
        rng = random.Random(16)
        keys = itertools.count()
        run_id = os.urandom(4).hex()
        IssueCodeRequest = health_codes_pb2.IssueCodeRequest

        def over_grpc() -> Awaitable[object]:
            request = IssueCodeRequest(main_index_id=rng.choice(mids),
                                       idempotency_key=f"bench-{run_id}-{next(keys):09d}")
            return stub.IssueCode(request, metadata=metadata, timeout=10)

        async def over_connect() -> object:
            body = b'{"mainIndexId":"%s","idempotencyKey":"bench-%s-%09d"}' % (
                rng.choice(mids).encode(), run_id.encode(), next(keys))
            answer = await pool.call(body)
            if not answer["code"]["codeText"].startswith("EHC1:"):
                raise ConnectFailed(200, b"no code text")
            return answer

        contenders = {
            "grpc": _Contender("IssueCode over gRPC", over_grpc, server_pid),
            "connect": _Contender("IssueCode over Connect JSON", over_connect, server_pid),
        }
        try:
            await _interleaved(contenders.values(), rounds=rounds, seconds=seconds, concurrency=concurrency,
                               warmup=warmup)
        finally:
            await pool.close()
    return contenders


def _http_port(log_path: pathlib.Path) -> int:
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "listening" and entry.get("http_port"):
            return int(entry["http_port"])
    raise RuntimeError("the issuer did not report an HTTP port")


def run(*, rounds: int = 5, seconds: float = 3.0, concurrency: int = 32, residents: int = 1000,
        warmup: float = 1.0, out=sys.stdout, **_ignored) -> dict[str, _Contender]:
    """Start the issuer, measure both transports, print the Markdown report; return the measurements."""
    from .crashloop_workspace import ServerProcess, Workspace

    with tempfile.TemporaryDirectory(prefix="healthcode-bench-http-") as tmp:
        workspace = Workspace.create(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc))
        server = None
        try:
            server = ServerProcess.issuer(workspace, log_name="issuer.log",
                                          extra_flags=("--http-listen", "127.0.0.1:0"))
            contenders = asyncio.run(_bench(
                workspace, server.port, _http_port(server.log_path), server.pid, rounds=rounds, seconds=seconds,
                concurrency=concurrency, residents=residents, warmup=warmup))
            server.terminate()
        finally:
            if server is not None:
                server.close()
    _report(contenders, out=out, rounds=rounds, seconds=seconds, concurrency=concurrency, residents=residents)
    return contenders


def _report(contenders: dict[str, _Contender], *, out, rounds: int, seconds: float, concurrency: int,
            residents: int) -> None:
    import connectrpc
    import uvicorn

    g, c = contenders["grpc"], contenders["connect"]
    print(f"# IssueCode over Connect JSON against gRPC  ({platform.python_implementation()} "
          f"{platform.python_version()}, grpcio {grpc.__version__}, connectrpc {connectrpc.__version__}, "
          f"uvicorn {uvicorn.__version__}, {os.cpu_count()} CPUs, {rounds} interleaved rounds of {seconds:g} s, "
          f"{concurrency} calls in flight)\n", file=out)
    print("One issuer process serves both (TLS, API key, JSON log per RPC, SQLite WAL synchronous=FULL, group "
          f"commit; {residents} residents registered beforehand; every call a fresh idempotency key). gRPC: one "
          f"channel. Connect JSON: {concurrency} keep-alive HTTP/1.1 TLS connections.\n", file=out)
    ratios = [b / a for a, b in zip(g.rates, c.rates)]
    print("## Throughput per round (calls/s)\n", file=out)
    print(f"| round | {g.name} | {c.name} | ratio |", file=out)
    print("|---:|---:|---:|---:|", file=out)
    for i in range(rounds):
        print(f"| {i + 1} | {g.rates[i]:,.0f} | {c.rates[i]:,.0f} | {ratios[i]:.2f} |", file=out)
    print(f"| **median** | **{statistics.median(g.rates):,.0f}** | **{statistics.median(c.rates):,.0f}** | "
          f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) |", file=out)

    print(f"\n## Latency ({concurrency} in flight; ms, all rounds pooled)\n", file=out)
    print("| contender | p50 | p90 | p99 | max | p99 per round (min-max) | errors |", file=out)
    print("|---|---:|---:|---:|---:|---|---:|", file=out)
    _latency_rows((g, c), out)

    print("\n## CPU per call (all rounds; % of one core)\n", file=out)
    print("| contender | server µs/call | server CPU | server event-loop thread µs/call | event-loop busy | "
          "client µs/call | client CPU |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|", file=out)
    _cpu_rows((g, c), out)

    ratio = statistics.median(ratios)
    print("\n## Target\n", file=out)
    print("| target | measured | met |", file=out)
    print("|---|---:|---|", file=out)
    print(f"| IssueCode over Connect JSON >= 0.8x over gRPC | {ratio:.2f}x | {'yes' if ratio >= 0.8 else 'NO'} |",
          file=out)
    print(f"| p99 reported for both | gRPC {g.pooled(0.99) * 1000:.1f} ms, Connect {c.pooled(0.99) * 1000:.1f} ms "
          "| yes |", file=out)

