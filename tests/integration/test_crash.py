"""The crash test: kill -9 the real issuer process during concurrent issuance, restart, lose nothing.

``python -m issuer serve`` runs as a child process on 127.0.0.1 (TLS from
``issuer.tls``, an API key, a SQLite file on disk). A grpc.aio client keeps 48
IssueCode calls in flight (half with idempotency keys, some retrying keys
already answered) and records every acknowledged response; the server gets
SIGKILL mid-stream; it restarts on the same database, and then:

* every acknowledged code is stored under its ref with the acknowledged text
  (the file, opened read-only), GetCodeStatus returns it, and it verifies
  with ``healthcode.verify`` against the server's public key;
* no (province, kid, serial) carries two acknowledged codes; none is stored twice;
* every keyed request, retried with the same key, returns its original code;
  a request the kill cut off returns what its first attempt committed, if
  anything, else a new code, and the same code when retried again.

The harness lives in ``tools/bench/crashloop.py`` and, for the server's files
and process, ``tools/bench/crashloop_workspace.py`` (the 20-cycle crash loop
benchmark runs the same cycle).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import signal
import subprocess
import sys

import grpc
import pytest

from issuer.api import health_codes_pb2, health_codes_pb2_grpc
from tools.bench.crashloop import check_after_restart, issue_until_killed, stored_codes
from tools.bench.crashloop_workspace import ServerProcess, Workspace, register_residents, resident_ids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RESIDENTS = 64
CONCURRENCY = 48
KILL_AFTER = 2.0  # seconds of load before SIGKILL


async def _register(workspace: Workspace, port: int) -> list[str]:
    async with workspace.channel(port) as channel:
        return await register_residents(channel, workspace.metadata, resident_ids(RESIDENTS))


async def _drive(workspace: Workspace, server: ServerProcess, mids: list[str]):
    async with workspace.channel(server.port) as channel:
        return await issue_until_killed(
            channel, workspace.metadata, mids, kill=server.kill, kill_after=KILL_AFTER,
            concurrency=CONCURRENCY, key_prefix="crash", rng=random.Random(20240611), timeout=30,
        )


async def _check(workspace: Workspace, port: int, load):
    async with workspace.channel(port) as channel:
        return await check_after_restart(workspace, channel, load, now=dt.datetime.now(dt.timezone.utc))


async def _fresh_codes(workspace: Workspace, port: int, mids: list[str], count: int):
    async with workspace.channel(port) as channel:
        stub = health_codes_pb2_grpc.HealthCodesStub(channel)
        replies = await asyncio.gather(*(
            stub.IssueCode(health_codes_pb2.IssueCodeRequest(main_index_id=mids[i % len(mids)]),
                           metadata=workspace.metadata, timeout=10)
            for i in range(count)
        ))
    return [(r.code.ref.province, bytes(r.code.ref.kid), r.code.ref.serial) for r in replies]


def test_kill_9_during_concurrent_issuance_loses_nothing(tmp_path):
    workspace = Workspace.create(tmp_path, now=dt.datetime.now(dt.timezone.utc))
    server = ServerProcess.issuer(workspace)
    try:
        mids = asyncio.run(_register(workspace, server.port))
        assert len(mids) == RESIDENTS

        # load, and SIGKILL mid-stream
        load = asyncio.run(_drive(workspace, server, mids))
        assert server.wait() == -signal.SIGKILL
        assert not load.errors_before_kill, load.errors_before_kill
        assert len(load.acks) >= 200, "too little load to mean anything"
        assert sum(load.errors_after_kill.values()) > 0, "the kill cut off no call: it was not mid-stream"
        assert load.cut_off, "no keyed request was cut off by the kill"
        assert load.live_retries > 0 and load.live_retry_mismatches == 0

        # restart on the same file and check everything acknowledged
        server = ServerProcess.issuer(workspace, log_name="server-restarted.log")
        report = asyncio.run(_check(workspace, server.port, load))
        assert report.lost == [], f"{len(report.lost)} acknowledged codes lost"
        assert report.status_mismatches == [], f"{len(report.status_mismatches)} codes not answered as acknowledged"
        assert report.unverifiable == [], f"{len(report.unverifiable)} acknowledged codes do not verify"
        assert report.duplicate_refs_acked == 0
        assert report.duplicate_refs_stored == 0
        assert not report.retry_errors, report.retry_errors
        assert report.retry_mismatches == [], "idempotent retries returned another code"
        assert report.cut_off_committed + report.cut_off_new == len(load.cut_off)
        assert report.retries == len({a.key for a in load.acks if a.key}) + 2 * len(load.cut_off)

        # new codes after the restart take serials no acknowledged code holds
        acked_refs = {a.ref for a in load.acks + report.new_acks}
        fresh = asyncio.run(_fresh_codes(workspace, server.port, mids, 50))
        assert len(set(fresh)) == 50 and not set(fresh) & acked_refs
        by_ref, _, stored_twice = stored_codes(workspace.database)
        assert stored_twice == 0
        assert all(ref in by_ref for ref in fresh)

        assert server.terminate() == 0
    finally:
        server.close()


def test_spawned_server_requires_an_api_key_and_close_kills_it(tmp_path):
    """The harness runs the server as configured for production (callers authenticate), and
    ``close()`` in a ``finally`` leaves no process behind."""
    workspace = Workspace.create(tmp_path, now=dt.datetime.now(dt.timezone.utc))
    server = ServerProcess.issuer(workspace)
    try:
        with grpc.secure_channel(f"127.0.0.1:{server.port}",
                                 grpc.ssl_channel_credentials(workspace.ca_pem)) as channel:
            stub = health_codes_pb2_grpc.HealthCodesStub(channel)
            with pytest.raises(grpc.RpcError) as e:  # no API key: refused, the server is the real one
                stub.IssueCode(health_codes_pb2.IssueCodeRequest(main_index_id="x"), timeout=5)
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.close()
    assert server.process.poll() == -signal.SIGKILL


def test_a_second_server_on_the_same_database_refuses_to_start(tmp_path):
    """Serials are allocated in the issuer's memory: a second issuer on the same file is refused
    at start (the store's writer lease), and the first serves on; the lease dies with a kill -9
    (the crash test above restarts on the same file)."""
    workspace = Workspace.create(tmp_path, now=dt.datetime.now(dt.timezone.utc))
    server = ServerProcess.issuer(workspace)
    try:
        second = subprocess.run([sys.executable, "-m", "issuer", "serve", *workspace.serve_flags,
                                 "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert "cannot serve: another issuer holds the database issuer.db" in second.stderr
        assert "Traceback" not in second.stderr
        mids = asyncio.run(_register(workspace, server.port))  # the first one writes on
        assert len(mids) == RESIDENTS
    finally:
        server.close()
