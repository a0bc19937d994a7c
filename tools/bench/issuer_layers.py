"""Where an IssueCode's server time goes: the same load against servers built up layer by layer.

``python -m tools.bench issuer-layers [--rounds 3] [--seconds 2] [--concurrency 32]``

Every contender is a grpc.aio server over TLS in its own child process, driven
by this process exactly like ``python -m tools.bench issuer`` drives its two
(one channel, N calls in flight, the IssueCode request's bytes and header):

* ``echo``: the bare echo of ``tools.bench.issuer`` (raw bytes, no protobuf);
* ``echo + GIL release``: the echo calling ``time.sleep(0)`` once a call, which
  does nothing but release and retake the interpreter lock;
* ``echo + sign``: the echo signing one code (``healthcode.sign_code``, ES256);
* ``issuer, canned``: the real ``IssuerServer`` (admission, logs, metrics,
  validation, protobuf), its code issuer replaced by one that returns a fixed
  code at once: no signature, no store;
* ``issuer, canned code + work``: the same plus ~28 µs of pure Python arithmetic a call
  (what a signature costs in CPU, without releasing the interpreter lock);
* ``issuer, sign only``: the same, signing each code, no store;
* ``issuer``: the real server on its real SQLite store (as ``tools.bench issuer``).

The report ends with what one signature costs the ``echo + sign`` server in
thread CPU time: in a tight loop in the same process before it serves, and per
call while serving (the same work, run between gRPC's).

Rates drift with the machine's load: read the ratios within a round and the
CPU per call, not absolute rates. This is a diagnostic, not a target.
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
import signal
import statistics
import sys
import tempfile
import time

import grpc

import healthcode as hc
from issuer.model import CodeRef, IssuedCode, RevocationReason

from ._measure import percentile
from .issuer import ECHO_SERVICE, _closed_loop

__all__ = ["run", "LAYERS"]

_SIGN_COST = "sign_cost"  # the echo + sign server's last log line: what one signature cost it

#: name -> (label, kind, mode)
LAYERS = {
    "echo": ("echo", "echo", "plain"),
    "release": ("echo + GIL release (time.sleep(0))", "echo", "release"),
    "sign": ("echo + sign (ES256 code)", "echo", "sign"),
    "canned": ("issuer, canned code (no sign, no store)", "issuer", "canned"),
    "burn": ("issuer, canned code + 28 µs of pure Python work", "issuer", "burn"),
    "signonly": ("issuer, sign only (no store)", "issuer", "sign"),
    "real": ("issuer (SQLite store)", "issuer", "real"),
}


# --------------------------------------------------------------------------- the servers (child processes)


async def _serve_echo(mode: str, cert: pathlib.Path, key: pathlib.Path) -> None:
    """``tools.bench.issuer``'s bare echo, doing ``mode``'s work in each call ("plain": none)."""
    import healthcode as hc
    from healthcode.model import main_index_id_from_bytes

    from .issuer import _serve_echo as serve_bare_echo

    signer = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256))
    mid = main_index_id_from_bytes(os.urandom(16))
    serials = itertools.count()

    def sign() -> None:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        hc.sign_code(hc.CodeClaims(hc.ProvinceCode("33"), mid, next(serials), now, now + dt.timedelta(days=7)), signer)

    spent = [0, 0]  # thread CPU ns in sign() while serving, calls

    def timed_sign() -> None:
        start = time.thread_time_ns()
        sign()
        spent[0] += time.thread_time_ns() - start
        spent[1] += 1

    isolated = None
    if mode == "sign":  # the same signature in a tight loop, in this process, before serving
        for _ in range(500):
            sign()
        start, rounds = time.thread_time_ns(), 2000
        for _ in range(rounds):
            sign()
        isolated = (time.thread_time_ns() - start) / rounds / 1000
    work = {"plain": None, "release": lambda: time.sleep(0), "sign": timed_sign}[mode]
    await serve_bare_echo("127.0.0.1:0", cert, key, before_reply=work)
    if isolated is not None and spent[1]:
        print(json.dumps({"event": _SIGN_COST, "isolated_us": isolated, "served_us": spent[0] / spent[1] / 1000,
                          "calls": spent[1]}), file=sys.stderr, flush=True)


class StandInCodes:
    """The code issuer's ``issue_code`` without a store, for the issuer layers: mode ``canned``
    returns a canned text, ``burn`` the same after a signature's worth of CPU, ``sign`` a signed
    code. The bench drives IssueCode only; the other operations raise NotImplementedError."""

    def __init__(self, mode: str, province: str, signer: hc.Signer) -> None:
        self._mode = mode
        self._province = province
        self._signer = signer
        self._serials = itertools.count()

    async def issue_code(self, *, caller: str, main_index_id: str, idempotency_key: str | None, now: dt.datetime,
                         replace_live: bool = False) -> IssuedCode:
        """What ``CodeIssuer.issue_code`` returns, minus the store (``replace_live`` is moot without one)."""
        iat = now.replace(microsecond=0)
        exp = iat + dt.timedelta(days=7)
        serial = next(self._serials)
        if self._mode in ("canned", "burn"):
            if self._mode == "burn":  # the CPU of a signature, holding the interpreter lock throughout
                _burn()
            text = "EHC1:" + "X" * 205
        else:
            claims = hc.CodeClaims(hc.ProvinceCode(self._province), hc.MainIndexId(main_index_id), serial, iat, exp)
            text = hc.sign_code(claims, self._signer)
        return IssuedCode(CodeRef(self._province, bytes(self._signer.kid), serial), main_index_id, iat, exp, text)

    async def renew_code(self, *, caller: str, ref: CodeRef, idempotency_key: str | None, now: dt.datetime,
                         text: str | None = None) -> IssuedCode:
        raise NotImplementedError(_ISSUE_ONLY)

    async def revoke_code(self, *, ref: CodeRef, reason: RevocationReason, now: dt.datetime,
                          text: str | None = None) -> IssuedCode:
        raise NotImplementedError(_ISSUE_ONLY)

    async def revoke_resident_codes(self, *, main_index_id: str, reason: RevocationReason, now: dt.datetime) -> int:
        raise NotImplementedError(_ISSUE_ONLY)

    async def get_code(self, ref: CodeRef, *, text: str | None = None) -> IssuedCode:
        raise NotImplementedError(_ISSUE_ONLY)

    def ref_from_text(self, text: str) -> CodeRef:
        raise NotImplementedError(_ISSUE_ONLY)


_ISSUE_ONLY = "the issuer-layers stand-in serves IssueCode only"


async def _serve_issuer(mode: str, flags: list[str]) -> None:
    from issuer import app
    from issuer.__main__ import serve
    from issuer.config import load_config

    params = serve.make_context("serve", flags).params  # the serve command's own flag parsing
    params.pop("config_file"), params.pop("code_validity_hours")
    config = load_config(None, params)
    if config.signing_key is None:  # the workspace's serve flags name one
        raise SystemExit("issuer-layers: the issuer needs a --signing-key")
    signer = app.load_signer_pem(pathlib.Path(config.signing_key).read_bytes(), None)
    index, codes, close = app.build_domain(
        config, signer=signer, vault_secret=app.parse_vault_secret(pathlib.Path(config.vault_key).read_bytes()))
    server = await app.IssuerServer.start(
        app.server_options(config), index=index,
        codes=codes if mode == "real" else StandInCodes(mode, config.province, signer))
    try:
        print(json.dumps({"event": "listening", "port": server.port}), file=sys.stderr, flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await server.shutdown()
    finally:
        close()


def _burn() -> int:
    total = 0
    for i in range(900):
        total += i
    return total


def _server_main(argv: list[str]) -> int:
    kind, mode, *rest = argv
    if kind == "echo":
        asyncio.run(_serve_echo(mode, pathlib.Path(rest[0]), pathlib.Path(rest[1])))
    else:
        from issuer.logs import configure_logging

        configure_logging("INFO")
        asyncio.run(_serve_issuer(mode, rest))
    return 0


# --------------------------------------------------------------------------- the benchmark


def run(*, rounds: int = 3, seconds: float = 2.0, concurrency: int = 32, residents: int = 300, out=sys.stdout,
        **_ignored) -> dict[str, list]:
    """Start every layer's server, measure them interleaved, print the Markdown report."""
    from issuer.api import health_codes_pb2, health_codes_pb2_grpc

    from .crashloop_workspace import ServerProcess, Workspace, register_residents, resident_ids

    results: dict[str, list] = {name: [] for name in LAYERS}
    with tempfile.TemporaryDirectory(prefix="healthcode-bench-layers-") as tmp:
        workspace = Workspace.create(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc))
        servers = {}
        try:
            for name, (_, kind, mode) in LAYERS.items():
                args = [str(workspace.tls_cert), str(workspace.tls_key)] if kind == "echo" else [
                    *_with_database(workspace.serve_flags, workspace.directory / f"{name}.db"),
                    "--listen", "127.0.0.1:0"]
                servers[name] = ServerProcess.spawn(
                    [sys.executable, "-m", "tools.bench.issuer_layers", "serve", kind, mode, *args],
                    workspace.directory / f"{name}.log", ca_pem=workspace.ca_pem)

            async def drive() -> None:
                metadata = workspace.metadata
                calls = {}
                channels = []
                rng = random.Random(7)
                keys = itertools.count()
                run_id = os.urandom(4).hex()
                for name, (_, kind, _mode) in LAYERS.items():
                    channel = workspace.channel(servers[name].port)
                    channels.append(channel)
                    if kind == "echo":
                        payload = health_codes_pb2.IssueCodeRequest(
                            main_index_id="A" * 26, idempotency_key=f"bench-{run_id}-000000000").SerializeToString()
                        echo = channel.unary_unary(f"/{ECHO_SERVICE}/Echo")
                        calls[name] = lambda echo=echo, payload=payload: echo(payload, metadata=metadata, timeout=10)
                    else:
                        mids = await register_residents(channel, metadata, resident_ids(residents))
                        stub = health_codes_pb2_grpc.HealthCodesStub(channel)
                        calls[name] = lambda stub=stub, mids=mids: stub.IssueCode(health_codes_pb2.IssueCodeRequest(
                            main_index_id=rng.choice(mids), idempotency_key=f"bench-{run_id}-{next(keys):09d}"),
                            metadata=metadata, timeout=10)
                try:
                    for name, call in calls.items():  # warm-up
                        await _closed_loop(call, concurrency=concurrency, seconds=0.5, server_pid=servers[name].pid)
                    for index in range(rounds):
                        order = list(calls) if index % 2 == 0 else list(reversed(calls))
                        for name in order:
                            results[name].append(await _closed_loop(
                                calls[name], concurrency=concurrency, seconds=seconds, server_pid=servers[name].pid))
                finally:
                    for channel in channels:
                        await channel.close()

            asyncio.run(drive())
            for server in servers.values():
                server.terminate()
            sign_cost = _read_sign_cost(workspace.directory / "sign.log") if "sign" in servers else None
        finally:
            for server in servers.values():
                server.close()
    _report(results, out=out, rounds=rounds, seconds=seconds, concurrency=concurrency, sign_cost=sign_cost)
    return results


def _read_sign_cost(log: pathlib.Path) -> dict | None:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == _SIGN_COST:
            return event
    return None


def _with_database(flags: tuple[str, ...], database: pathlib.Path) -> list[str]:
    replaced = list(flags)
    replaced[replaced.index("--database") + 1] = str(database)
    return replaced


def _report(results: dict[str, list], *, out, rounds: int, seconds: float, concurrency: int,
            sign_cost: dict | None = None) -> None:
    print(f"# IssueCode's server time, layer by layer  ({platform.python_implementation()} "
          f"{platform.python_version()}, grpcio {grpc.__version__}, {os.cpu_count()} CPUs, {rounds} interleaved "
          f"rounds of {seconds:g} s, {concurrency} calls in flight)\n", file=out)
    print("| layer | median calls/s | ratio to echo (median of rounds) | server µs/call (all threads) | "
          "event-loop thread µs/call | client µs/call | p99 ms |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|", file=out)
    echo = results["echo"]
    for name, rs in results.items():
        calls = sum(r.calls for r in rs) or 1
        ratio = statistics.median(r.rate / e.rate for r, e in zip(rs, echo))
        p99 = percentile([x for r in rs for x in r.latencies], 0.99) * 1000
        print(f"| {LAYERS[name][0]} | {statistics.median(r.rate for r in rs):,.0f} | {ratio:.2f} | "
              f"{sum(r.server_cpu for r in rs) / calls * 1e6:,.0f} | "
              f"{sum(r.server_loop_cpu for r in rs) / calls * 1e6:,.0f} | "
              f"{sum(r.client_cpu for r in rs) / calls * 1e6:,.0f} | {p99:.1f} |", file=out)
    if sign_cost is not None:
        print(f"\nOne ES256 `sign_code` in the echo + sign server, thread CPU: {sign_cost['isolated_us']:.1f} µs "
              f"in a tight loop before serving, {sign_cost['served_us']:.1f} µs per call while serving "
              f"({sign_cost['calls']:,} calls): {sign_cost['served_us'] / sign_cost['isolated_us']:.2f}x.", file=out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_server_main(sys.argv[2:]))
    sys.exit("usage: python -m tools.bench issuer-layers")
