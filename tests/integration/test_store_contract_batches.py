"""The store contract's group commit, run on every store (SQLite and PostgreSQL; see test_store_contract.py)."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest

from issuer.errors import Unavailable
from issuer.model import CodeRef, RevocationReason
from issuer.store import (
    CodeNotRenewable,
    DuplicateIdempotencyKey,
    DuplicateSerial,
    ResidentNotFound,
    StoreClosed,
    StoreOverloaded,
)
from .store_contract_support import KID, MID_A, MID_B, code, resident, wait_for_queue
from .store_contract_support import store  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- group commit


def test_group_commit_batches_concurrent_submissions(store, backend):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    before = store.write_stats()
    futures = []
    lock = threading.Lock()

    def submitter(start):
        for serial in range(start, 1000, 8):
            f = store.submit_code(code(serial))
            with lock:
                futures.append(f)

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done, not_done = wait(futures, timeout=60)
    assert not not_done and all(f.exception() is None for f in done)
    after = store.write_stats()
    assert after.codes - before.codes == 1000
    assert after.batches - before.batches < 1000  # fewer transactions than codes
    store.close()
    with backend.open() as again:
        assert sorted(r.serial for r in again.codes_of(MID_A)) == list(range(1000))
        assert again.next_serial("33", KID) == 1000


def test_queued_writes_commit_in_one_batch(store, backend):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    with backend.write_lock_held():
        first = store.submit_code(code(0))
        wait_for_queue(store, 0)  # the writer has taken the first and waits for the lock
        rest = [store.submit_code(code(serial)) for serial in range(1, 301)]
        before = store.write_stats()
    assert all(f.result(timeout=30) is None for f in [first] + rest)
    after = store.write_stats()
    assert after.batches - before.batches <= 3
    assert after.largest_batch >= 250


def test_a_bad_row_fails_alone(store, backend):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="retry-me")).result()
    with backend.write_lock_held():
        blocker = store.submit_code(code(1))
        wait_for_queue(store, 0)
        good = [store.submit_code(code(serial)) for serial in range(2, 50)]
        dup_key = store.submit_code(code(50, key="retry-me"))  # a racing idempotent retry
        dup_serial = store.submit_code(code(3))
        unknown = store.submit_code(code(51, MID_B))
        more = [store.submit_code(code(serial)) for serial in range(52, 60)]
    assert blocker.result(timeout=30) is None
    assert all(f.result(timeout=30) is None for f in good + more)
    with pytest.raises(DuplicateIdempotencyKey):
        dup_key.result()
    with pytest.raises(DuplicateSerial):
        dup_serial.result()
    with pytest.raises(ResidentNotFound):
        unknown.result()
    assert store.write_stats().fallbacks >= 1
    serials = [r.serial for r in store.codes_of(MID_A)]
    assert serials == [0, 1] + list(range(2, 50)) + list(range(52, 60))
    assert store.next_serial("33", KID) == 60


def test_a_bad_renewal_in_a_batch_fails_alone(store, backend):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.submit_code(code(0)).result()
    store.submit_code(code(1, MID_B)).result()
    with backend.write_lock_held():
        blocker = store.submit_code(code(2))
        wait_for_queue(store, 0)
        renewal = store.submit_code(code(3), supersedes=CodeRef("33", KID, 0))
        foreign = store.submit_code(code(4), supersedes=CodeRef("33", KID, 1))  # MID_B's code
        dup_serial = store.submit_code(code(2))
        plain = [store.submit_code(code(serial)) for serial in range(5, 10)]
    assert blocker.result(timeout=30) is None and renewal.result(timeout=30) is None
    assert all(f.result(timeout=30) is None for f in plain)
    with pytest.raises(CodeNotRenewable):
        foreign.result()
    with pytest.raises(DuplicateSerial):
        dup_serial.result()
    assert store.get_code(CodeRef("33", KID, 0)).revocation_reason is RevocationReason.SUPERSEDED
    assert store.get_code(CodeRef("33", KID, 1)).revoked_at is None
    assert store.get_code(CodeRef("33", KID, 4)) is None
    assert [r.serial for r in store.codes_of(MID_A)] == [0, 2, 3, 5, 6, 7, 8, 9]


def test_close_drains_the_queue_then_refuses(backend):
    s = backend.open()
    s.create_resident(resident(), [])
    futures = [s.submit_code(code(serial)) for serial in range(300)]
    s.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(StoreClosed) as info:
        s.submit_code(code(300))
    assert isinstance(info.value, Unavailable)
    with pytest.raises(StoreClosed):
        s.get_resident(MID_A)
    with backend.open() as again:
        assert len(again.codes_of(MID_A)) == 300


def test_a_full_queue_pushes_back(backend):
    with backend.open(max_queued=5) as s:
        s.create_resident(resident(), []).result()
        with backend.write_lock_held():
            first = s.submit_code(code(0))
            wait_for_queue(s, 0)  # taken by the writer, which waits for the lock
            queued = [s.submit_code(code(serial)) for serial in range(1, 6)]
            with pytest.raises(StoreOverloaded) as info:
                s.submit_code(code(6))
            assert isinstance(info.value, Unavailable)
        assert all(f.result(timeout=30) is None for f in [first] + queued)
        s.submit_code(code(6)).result(timeout=30)


def test_submitted_futures_cannot_be_cancelled(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    f = store.submit_code(code(0))
    assert not f.cancel()
    assert f.result(timeout=10) is None
