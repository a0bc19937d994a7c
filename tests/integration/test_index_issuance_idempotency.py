"""CodeIssuer over a real SQLite file: idempotent issuance (concurrent, after a restart, a merge or
a cancelled caller) and a kill -9 durability test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import healthcode as hc
from issuer.errors import Conflict
from issuer.model import RevocationReason
from .index_issuance_support import NOW, SEED, keyring, rid, run, signer
from .index_issuance_support import path  # noqa: F401 - fixtures


ROOT = pathlib.Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- idempotency


def test_concurrent_identical_requests_get_one_code(path):  # noqa: F811 - the imported fixture
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        codes = await asyncio.gather(*(
            w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="request-1", now=NOW)
            for _ in range(100)
        ))
        assert len({c for c in codes}) == 1 and codes[0].ref.serial == 0
        again = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="request-1", now=NOW)
        assert again == codes[0]
        # the key is the caller's: another caller's same key is another request
        other = await w.issuer.issue_code(caller="other-app", main_index_id=mid, idempotency_key="request-1", now=NOW)
        assert other.ref.serial == 1
        assert len(w.store.codes_of(mid)) == 2

    run(path, body)


def test_same_key_for_another_resident_is_a_conflict(path):  # noqa: F811 - the imported fixture
    async def body(w):
        a = await w.index.register_resident(rid(1), now=NOW)
        b = await w.index.register_resident(rid(2), now=NOW)
        first = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=a, idempotency_key="key-0001",
                                                          now=NOW))
        await asyncio.sleep(0)
        with pytest.raises(Conflict):  # while the first is in flight
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        await first
        with pytest.raises(Conflict):  # after it committed
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        with pytest.raises(Conflict):  # and for another kind of request
            await w.issuer.renew_code(caller="app", ref=(await first).ref, idempotency_key="key-0001", now=NOW)
        assert w.store.codes_of(b) == []
        return a

    a = run(path, body)

    async def after_restart(w):
        b = await w.index.find_resident(rid(2))
        with pytest.raises(Conflict):
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        c = await w.issuer.issue_code(caller="app", main_index_id=a, idempotency_key="fresh-key", now=NOW)
        assert c.ref.serial == 1  # the refused retry's serial was handed out again

    run(path, after_restart)


def test_retry_after_restart_returns_the_original(path):  # noqa: F811 - the imported fixture
    async def first(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        return await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="once-key", now=NOW)

    original = run(path, first)

    async def retry(w):
        later = NOW + dt.timedelta(minutes=5)
        again = await w.issuer.issue_code(caller="app", main_index_id=original.main_index_id,
                                          idempotency_key="once-key", now=later)
        fresh = await w.issuer.issue_code(caller="app", main_index_id=original.main_index_id,
                                          idempotency_key=None, now=later)
        return again, fresh

    again, fresh = run(path, retry)
    assert again == original
    assert fresh.ref.serial == 1  # the retry's tentative serial was not lost


def test_retry_after_merge_returns_the_original(path):  # noqa: F811 - the imported fixture
    async def body(w):
        a = await w.index.register_resident(rid(1), now=NOW)
        b = await w.index.register_resident(rid(2), now=NOW)
        original = await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        await w.index.merge_residents(survivor=a, merged=b, now=NOW)
        again = await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        assert again.ref == original.ref and again.revocation_reason is RevocationReason.MERGED

    run(path, body)


def test_a_caller_that_gives_up_does_not_lose_its_code(path):  # noqa: F811 - the imported fixture
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer will wait behind this lock
        task = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="key-0001",
                                                         now=NOW))
        await asyncio.sleep(0.1)
        task.cancel()  # e.g. the client's deadline passed
        with pytest.raises(asyncio.CancelledError):
            await task
        retry = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="key-0001",
                                                          now=NOW))
        await asyncio.sleep(0.1)
        blocker.execute("COMMIT")
        blocker.close()
        code = await retry
        assert code.ref.serial == 0 and len(w.store.codes_of(mid)) == 1

    run(path, body)


def test_cancelled_callers_neither_lose_nor_leak_serials(path):  # noqa: F811 - the imported fixture
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        first = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        # (a) a plain issuance whose caller gives up: the code is still committed
        plain = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None,
                                                          now=NOW))
        # (b) a renewal refused after its caller gave up: the code it renews is revoked just before it
        revoke = asyncio.ensure_future(w.issuer.revoke_code(ref=first.ref, reason=RevocationReason.FRAUD, now=NOW))
        renew = asyncio.ensure_future(w.issuer.renew_code(caller="app", ref=first.ref, idempotency_key=None, now=NOW))
        deadline = time.monotonic() + 10
        allocator = w.issuer._allocators[first.ref.kid]
        while allocator.next != 3:  # (a) and (b) hold serials 1 and 2, queued behind the lock
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        plain.cancel()
        renew.cancel()
        blocker.execute("COMMIT")
        blocker.close()
        await revoke
        for task in (plain, renew):
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.1)  # the writer resolves the refused renewal; its serial comes back
        later = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        serials = sorted(r.serial for r in w.store.codes_of(mid))
        assert serials == [0, 1, 2] and later.ref.serial == 2

    run(path, body)


# --------------------------------------------------------------------------- kill -9 durability

CHILD = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    import healthcode as hc
    from issuer.issuance import CodeIssuer
    from issuer.store import SQLiteStore

    path, seed, mids, first_key = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
    now = dt.datetime.fromisoformat(sys.argv[5])
    store = SQLiteStore(path)
    signer = hc.SoftwareSigner(hc.signing_key_from_private_bytes(hc.Algorithm.EDDSA, seed))
    issuer = CodeIssuer(store=store, province="33", signer=signer)
    keys = iter(range(first_key, 10**9))

    async def worker():
        for n in keys:
            code = await issuer.issue_code(caller="app", main_index_id=mids[n % len(mids)],
                                           idempotency_key=f"k{n:07d}", now=now)
            sys.stdout.write(f"{code.ref.serial} k{n:07d}\\n")
            sys.stdout.flush()

    async def main():
        await asyncio.gather(*(worker() for _ in range(32)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_issuance(tmp_path, path):  # noqa: F811 - the imported fixture
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    s = signer()
    ring = keyring(s)

    async def setup(w):
        return [await w.index.register_resident(rid(i), now=NOW) for i in range(5)]

    mids = run(path, setup)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acknowledged: dict[int, str] = {}
    first_key = 0
    for cycle in range(3):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), SEED.hex(), ",".join(mids), str(first_key), NOW.isoformat()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        lines = []
        deadline = time.monotonic() + 60
        while len(lines) < 400 + 100 * cycle and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        child.send_signal(signal.SIGKILL)  # mid-stream: writes are queued and in flight
        rest, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()
        lines += rest.splitlines(keepends=True)
        assert len(lines) >= 400, err.decode()
        for line in lines:
            if not line.endswith(b"\n"):
                continue  # cut off by the kill: not acknowledged to the reader
            serial, key = line.decode().split()
            assert int(serial) not in acknowledged, "a serial was acknowledged twice"
            acknowledged[int(serial)] = key
        first_key += 100_000

        # every acknowledged code is stored, verifies, and is what a retry returns
        async def check(w):
            stored = {}
            for mid in mids:
                for r in w.store.codes_of(mid):
                    assert r.serial not in stored
                    stored[r.serial] = r
            for serial, key in acknowledged.items():
                record = stored[serial]
                assert record.idempotency_key == key
                assert hc.verify(record.text, ring, now=NOW).serial == serial
            sample = list(acknowledged.items())[-50:]
            for serial, key in sample:
                n = int(key[1:])
                again = await w.issuer.issue_code(caller="app", main_index_id=mids[n % len(mids)],
                                                  idempotency_key=key, now=NOW)
                assert again.ref.serial == serial and again.text == stored[serial].text
            fresh = await w.issuer.issue_code(caller="app", main_index_id=mids[0], idempotency_key=None, now=NOW)
            assert fresh.ref.serial not in stored
            return len(stored)

        total = run(path, check, signer_=s)
        assert total >= len(acknowledged)
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT count(*), count(DISTINCT serial) FROM codes").fetchone()
    assert rows[0] == rows[1]
