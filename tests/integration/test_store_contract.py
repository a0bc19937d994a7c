"""The store contract (:class:`issuer.store.base.Store`), run on every store: SQLite and PostgreSQL.

Each test gets a fresh database from the ``backend`` fixture (``conftest.py``):
a new SQLite file, or this module's PostgreSQL schema emptied (see ``store_backends.py``;
PostgreSQL tests skip when the server is unreachable, and fail under CI=true).
What only one store has (PRAGMAs, migrations' shapes, search_path, reconnects)
is tested in ``test_store_sqlite.py`` and ``test_store_postgres.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import time
from concurrent.futures import wait

import pytest

import healthcode as hc
from issuer.documents import DocumentType, canonical_form, make_resident_id, parse_document
from issuer.errors import AlreadyExists, Conflict, NotFound, Unavailable
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import Channel, CodeRef, RevocationReason
from issuer.privacy import IdentifierVault, SealedValueError
from issuer.store import (
    ChallengeRecord,
    ChallengeRefused,
    ChallengeUse,
    CodeNotRenewable,
    CodeRecord,
    DuplicateIdempotencyKey,
    DuplicateIdentifier,
    DuplicateSerial,
    IdentifierRecord,
    ResidentMerged,
    ResidentNotFound,
    ResidentRecord,
    SchemaTooNew,
    StoreClosed,
    StoreInUse,
    StoreOverloaded,
    WriteFailed,
)

NOW = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
VAULT = IdentifierVault(blind_index_key=b"i" * 32, encryption_key=b"e" * 32)
KID = b"kid-0001"
MID_A = hc.main_index_id_from_bytes(bytes([1]) * 16)
MID_B = hc.main_index_id_from_bytes(bytes([2]) * 16)


@pytest.fixture
def store(backend):
    s = backend.open()
    yield s
    s.close()


def resident(mid: str = MID_A) -> ResidentRecord:
    return ResidentRecord(main_index_id=mid, created_at=NOW)


def code(serial: int, mid: str = MID_A, *, key: str | None = None, caller: str = "app", kid: bytes = KID,
         expires: dt.datetime | None = None, channel: Channel = Channel.STATIC) -> CodeRecord:
    return CodeRecord(
        province="33",
        kid=kid,
        serial=serial,
        main_index_id=mid,
        issued_at=NOW,
        expires_at=expires or NOW + dt.timedelta(days=7),
        text=f"EHC1:TEST{serial}",
        caller=caller,
        idempotency_key=key,
        request_fingerprint=None if key is None else b"f" * 16,
        channel=channel,
    )


def identifier(number_seq: int, mid: str = MID_A, *, primary: bool = True) -> IdentifierRecord:
    doc = parse_document("resident_id", make_resident_id("330102", dt.date(1990, 1, 1), number_seq), today=TODAY)
    bi = VAULT.blind_index(canonical_form(doc))
    return IdentifierRecord(bi, doc.type.value, VAULT.seal(canonical_form(doc), aad=bi), mid, primary, NOW)


def wait_for_queue(store, size: int, timeout: float = 10.0) -> None:
    """Wait until exactly ``size`` writes wait in the store's queue (the writer took the rest)."""
    deadline = time.monotonic() + timeout
    while store._writer.queued() != size:
        assert time.monotonic() < deadline, "the writer did not pick up its queue"
        time.sleep(0.005)
    time.sleep(0.05)  # and is now blocked on the lock


# --------------------------------------------------------------------------- schema


def test_reopen_is_idempotent_and_keeps_data(backend):
    with backend.open() as s:
        s.create_resident(resident(), [identifier(1)]).result()
        s.submit_code(code(0)).result()
    schema = backend.schema_dump()
    for _ in range(2):
        with backend.open() as s:
            assert s.schema_version == backend.migrations == backend.schema_version()
            assert s.get_code(CodeRef("33", KID, 0)).text == "EHC1:TEST0"
            assert s.get_resident(MID_A).active
    assert backend.schema_dump() == schema


def test_a_newer_schema_is_refused(backend):
    backend.open().close()
    backend.set_schema_version(backend.migrations + 1)
    with pytest.raises(SchemaTooNew):
        backend.open()


def test_new_migrations_apply_in_order_once(backend, monkeypatch):
    from issuer.store import schema
    from issuer.store.schema import Migration

    original = schema.MIGRATIONS
    backend.open().close()
    added = (
        Migration("notes", ("CREATE TABLE notes (id {serial} NOT NULL PRIMARY KEY, body {text}){table_options}",)),
        Migration("notes_author", ("ALTER TABLE notes ADD COLUMN author {text}",)),  # fails if applied twice
    )
    monkeypatch.setattr(schema, "MIGRATIONS", original + added)
    with backend.open() as s:
        assert s.schema_version == len(original) + 2 == backend.schema_version()
    with backend.open():
        pass
    assert backend.columns("notes") == ["id", "body", "author"]


def test_a_failing_migration_leaves_the_previous_version(backend, monkeypatch):
    from issuer.store import schema
    from issuer.store.schema import Migration

    original = schema.MIGRATIONS
    backend.open().close()
    broken = Migration("broken", ("CREATE TABLE half_done (id {serial})", "CREATE TABLE half_done (id {serial})"))
    monkeypatch.setattr(schema, "MIGRATIONS", original + (broken,))
    with pytest.raises(backend.driver_error):
        backend.open()
    assert backend.schema_version() == len(original)
    assert backend.columns("half_done") == []  # DDL is transactional: it went with the failed step


def test_a_database_that_has_the_revoked_index_at_version_1_migrates(backend, monkeypatch):
    # The first PostgreSQL schema created the revoked-codes index in its initial migration;
    # the shared migrations add it as the second (IF NOT EXISTS).
    from issuer.store import schema as store_schema

    original = store_schema.MIGRATIONS
    monkeypatch.setattr(store_schema, "MIGRATIONS", original[:2])  # the software of that time
    backend.open().close()
    schema = backend.schema_dump()
    backend.set_schema_version(1)
    with backend.open() as s:
        assert s.schema_version == 2 == backend.schema_version()
    assert backend.schema_dump() == schema
    monkeypatch.setattr(store_schema, "MIGRATIONS", original)
    with backend.open() as s:  # and on to today's
        assert s.schema_version == len(original) == backend.schema_version()


def test_concurrent_opens_migrate_once_and_one_holds_the_lease(backend):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(backend.open())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert len(stores) >= 1 and len(stores) + len(errors) == 4
    assert all(isinstance(e, StoreInUse) for e in errors), errors
    assert backend.schema_version() == backend.migrations


# --------------------------------------------------------------------------- the writer lease


def test_a_second_store_on_one_database_is_refused_until_the_first_closes(backend):
    first = backend.open()
    try:
        with pytest.raises(StoreInUse) as info:
            backend.open()
        assert info.value.reason == "store_in_use" and isinstance(info.value, Unavailable)
        first.create_resident(resident(), [identifier(1)]).result(timeout=10)
        first.submit_code(code(0)).result(timeout=10)  # the holder writes on, untouched by the refusal
    finally:
        first.close()
    with backend.open() as second:  # released by close
        assert second.next_serial("33", KID) == 1


_HOLD_STORE = """
import sys, time
from issuer.store import open_store
store = open_store(sys.argv[1])
print("open", flush=True)
time.sleep(120)
"""


def test_the_lease_is_cross_process_and_dies_with_its_holder(backend):
    target = str(backend.path) if backend.name == "sqlite" else backend.schema.url
    child = subprocess.Popen([sys.executable, "-c", _HOLD_STORE, target], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(StoreInUse):
            backend.open()
    finally:
        child.kill()  # SIGKILL: no close, no cleanup
        child.wait(timeout=10)
        child.stdout.close()
    deadline = time.monotonic() + 10  # PostgreSQL ends the session once it sees the socket closed
    while True:
        try:
            store = backend.open()
            break
        except StoreInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    store.close()


# --------------------------------------------------------------------------- privacy at rest


def _forms(number: str) -> list[bytes]:
    digits = "".join(ch for ch in number if ch.isdigit())
    forms = [number, digits, number[:17], number[6:14] + number[14:17], number.lower()]
    out = []
    for form in forms:
        if len(form) < 8:  # e.g. a passport's "birth date" slice: 3 characters turn up by chance in code texts
            continue
        out += [form.encode("ascii"), form.encode("utf-16-le"), form.encode("utf-16-be")]
    return out


def test_database_reveals_no_document_number(backend):
    numbers = {
        "resident_id": make_resident_id("330102", dt.date(1987, 6, 5), 431),
        "residence_permit_hmt": make_resident_id("810000", dt.date(1992, 3, 4), 17),
        "passport": "E12345678",
        "travel_permit_hk_mo": "H12345678",
    }
    docs = {
        t: parse_document(t, n, country="CHN" if t == "passport" else None, today=TODAY) for t, n in numbers.items()
    }

    async def scenario(s):
        index = ResidentIndex(store=s, vault=VAULT)
        issuer = CodeIssuer(store=s, province="33", signer=hc.SoftwareSigner(hc.generate_signing_key()))
        mid = await index.register_resident(docs["resident_id"], [docs["passport"]], now=NOW)
        other = await index.register_resident(docs["residence_permit_hmt"], now=NOW)
        await index.link_identifier(mid, docs["travel_permit_hk_mo"], now=NOW)
        await index.merge_residents(survivor=mid, merged=other, now=NOW)
        for _ in range(5):
            await issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        assert await index.find_resident(docs["residence_permit_hmt"]) == mid

    s = backend.open()
    asyncio.run(scenario(s))
    while_open = backend.stored_bytes()  # SQLite: a copy taken while the server runs, WAL included
    s.close()
    after_close = backend.stored_bytes()
    for blob in (while_open, after_close):
        assert len(blob) > 2048
        for number in numbers.values():
            for form in _forms(number):
                assert form not in blob
        for doc in docs.values():
            assert canonical_form(doc) not in blob


def test_identifier_rows_hold_only_blind_index_and_sealed_value(backend):
    doc = parse_document("resident_id", make_resident_id("110101", dt.date(2001, 2, 3), 9), today=TODAY)

    async def register(s):
        return await ResidentIndex(store=s, vault=VAULT).register_resident(doc, now=NOW)

    with backend.open() as s:
        mid = asyncio.run(register(s))
    rows = backend.query("SELECT blind_index, doc_type, sealed, main_index_id, is_primary FROM identifiers")
    assert len(rows) == 1
    bi, doc_type, sealed, row_mid, primary = rows[0]
    assert type(bi) is bytes and type(sealed) is bytes  # BLOB / BYTEA, never text
    assert bi == VAULT.blind_index(canonical_form(doc)) and doc_type == "resident_id" and primary == 1
    assert row_mid == mid and VAULT.open(sealed, aad=bi) == canonical_form(doc)
    # tampering with the stored sealed value is detected
    tampered = bytearray(sealed)
    tampered[-5] ^= 0x20
    backend.execute("UPDATE identifiers SET sealed = ?", (bytes(tampered),))
    stored = backend.query("SELECT sealed FROM identifiers")[0][0]
    with pytest.raises(SealedValueError):
        VAULT.open(stored, aad=bi)


def test_blind_index_is_stable_across_reopen_and_useless_with_another_key(backend):
    doc = parse_document("passport", "X1234567", country="USA", today=TODAY)

    async def register(s):
        return await ResidentIndex(store=s, vault=VAULT).register_resident(doc, now=NOW)

    async def find(s, vault):
        return await ResidentIndex(store=s, vault=vault).find_resident(doc)

    with backend.open() as s:
        mid = asyncio.run(register(s))
    with backend.open() as s:
        same_keys = IdentifierVault(blind_index_key=b"i" * 32, encryption_key=b"e" * 32)
        assert asyncio.run(find(s, same_keys)) == mid
        other = IdentifierVault(blind_index_key=b"j" * 32, encryption_key=b"e" * 32)
        with pytest.raises(NotFound):
            asyncio.run(find(s, other))


# --------------------------------------------------------------------------- group commit


def test_group_commit_batches_concurrent_submissions(store, backend):
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


def test_queued_writes_commit_in_one_batch(store, backend):
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


def test_a_bad_row_fails_alone(store, backend):
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


def test_a_bad_renewal_in_a_batch_fails_alone(store, backend):
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


def test_submitted_futures_cannot_be_cancelled(store):
    store.create_resident(resident(), []).result()
    f = store.submit_code(code(0))
    assert not f.cancel()
    assert f.result(timeout=10) is None


# --------------------------------------------------------------------------- serials, residents, codes


def test_next_serial_never_goes_back(store, backend):
    assert store.next_serial("33", KID) == 0
    store.create_resident(resident(), []).result()
    for serial in range(5):
        store.submit_code(code(serial)).result()
    assert store.next_serial("33", KID) == 5
    assert store.next_serial("33", b"other-kid") == 0
    assert store.next_serial("44", KID) == 0
    backend.execute("DELETE FROM codes")  # e.g. a future purge of expired codes
    assert store.next_serial("33", KID) == 5


def test_a_refused_code_takes_no_serial(store):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="k")).result()
    with pytest.raises(DuplicateIdempotencyKey):
        store.submit_code(code(1, key="k")).result()
    with pytest.raises(ResidentNotFound):
        store.submit_code(code(1, MID_B)).result()
    assert store.next_serial("33", KID) == 1  # RowRejected: serial 1 may be handed out again
    store.submit_code(code(1)).result()
    assert store.next_serial("33", KID) == 2


def test_idempotency_keys_are_unique_per_caller(store):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="same")).result()
    store.submit_code(code(1, key="same", caller="batch")).result()  # another caller: its own key space
    store.submit_code(code(2)).result()
    store.submit_code(code(3)).result()  # codes without a key never collide
    assert store.find_code_by_idempotency_key("app", "same").serial == 0
    assert store.find_code_by_idempotency_key("batch", "same").serial == 1
    assert store.find_code_by_idempotency_key("app", "other") is None
    assert store.find_code_by_idempotency_key("app", "same").request_fingerprint == b"f" * 16


def test_records_round_trip(store):
    linked = identifier(1)
    store.create_resident(resident(), [linked]).result()
    record = code(7, key="round-trip")
    store.submit_code(record).result()
    assert store.get_code(record.ref) == record
    assert store.codes_of(MID_A) == [record]
    stored = store.get_resident(MID_A)
    assert stored == resident() and stored.created_at.tzinfo is not None and stored.created_at == NOW
    assert store.find_identifier(linked.blind_index) == linked and store.identifiers_of(MID_A) == [linked]
    assert store.get_resident(MID_B) is None and store.find_identifier(b"\x00" * 32) is None


def test_identifiers_are_unique_and_name_their_position(store):
    store.create_resident(resident(MID_A), [identifier(1), identifier(2, primary=False)]).result()
    with pytest.raises(DuplicateIdentifier) as info:
        store.create_resident(resident(MID_B), [identifier(3, MID_B), identifier(2, MID_B, primary=False)]).result()
    assert info.value.position == 1 and isinstance(info.value, AlreadyExists)
    assert store.get_resident(MID_B) is None  # nothing of the failed registration stayed
    assert store.find_identifier(identifier(3).blind_index) is None
    assert store.add_identifier(identifier(2, primary=False)).result() is False  # same resident: no-op
    with pytest.raises(ResidentNotFound):
        store.add_identifier(identifier(4, MID_B, primary=False)).result()
    kinds = [(r.doc_type, r.primary) for r in store.identifiers_of(MID_A)]
    assert kinds == [("resident_id", True), ("resident_id", False)]
    assert DocumentType(kinds[0][0]) is DocumentType.RESIDENT_ID


def test_merge_revokes_live_codes_and_moves_identifiers(store):
    store.create_resident(resident(MID_A), [identifier(1, MID_A)]).result()
    store.create_resident(resident(MID_B), [identifier(2, MID_B)]).result()
    store.submit_code(code(0, MID_B)).result()
    store.submit_code(code(1, MID_B, expires=NOW - dt.timedelta(seconds=1))).result()  # expired: left alone
    store.submit_code(code(2, MID_B)).result()
    store.revoke_code(CodeRef("33", KID, 2), reason=RevocationReason.LOST_DEVICE, at=NOW).result()
    store.submit_code(code(3, MID_A)).result()
    assert store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result() == 1
    by_serial = {r.serial: r for r in store.codes_of(MID_B)}
    assert by_serial[0].revocation_reason is RevocationReason.MERGED and by_serial[0].revoked_at == NOW
    assert by_serial[1].revoked_at is None
    assert by_serial[2].revocation_reason is RevocationReason.LOST_DEVICE
    assert store.get_code(CodeRef("33", KID, 3)).revoked_at is None
    assert {r.main_index_id for r in store.identifiers_of(MID_A)} == {MID_A}
    assert len(store.identifiers_of(MID_A)) == 2 and store.identifiers_of(MID_B) == []
    assert store.get_resident(MID_B).merged_into == MID_A
    assert not store.known_active(MID_B)
    with pytest.raises(ResidentMerged):
        store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result()
    with pytest.raises(ResidentMerged):
        store.submit_code(code(4, MID_B)).result()
    with pytest.raises(ResidentMerged):
        store.add_identifier(identifier(5, MID_B, primary=False)).result()
    with pytest.raises(Conflict):
        store.merge_residents(survivor=MID_A, merged=MID_A, at=NOW).result()


def test_renewal_supersedes_atomically(store):
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.submit_code(code(0)).result()
    store.submit_code(code(1), supersedes=CodeRef("33", KID, 0)).result()
    old = store.get_code(CodeRef("33", KID, 0))
    assert old.revocation_reason is RevocationReason.SUPERSEDED
    with pytest.raises(CodeNotRenewable):  # already superseded
        store.submit_code(code(2), supersedes=CodeRef("33", KID, 0)).result()
    with pytest.raises(CodeNotRenewable):  # someone else's code
        store.submit_code(code(3, MID_B), supersedes=CodeRef("33", KID, 1)).result()
    assert store.get_code(CodeRef("33", KID, 2)) is None and store.get_code(CodeRef("33", KID, 3)) is None
    assert store.get_code(CodeRef("33", KID, 1)).revoked_at is None
    assert store.next_serial("33", KID) == 2


def test_revoke_keeps_the_first_reason_and_time(store):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    first = store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.FRAUD, at=NOW).result()
    later = NOW + dt.timedelta(hours=1)
    second = store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.OTHER, at=later).result()
    assert first == second and second.revocation_reason is RevocationReason.FRAUD and second.revoked_at == NOW
    assert store.revoke_code(CodeRef("33", KID, 9), reason=RevocationReason.FRAUD, at=NOW).result() is None


def test_revoke_resident_codes_revokes_only_live_ones(store):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    store.submit_code(code(1, expires=NOW)).result()  # expires exactly now: not live
    store.submit_code(code(2)).result()
    store.revoke_code(CodeRef("33", KID, 2), reason=RevocationReason.FRAUD, at=NOW).result()
    at = NOW + dt.timedelta(microseconds=999_999)  # stored to the second
    assert store.revoke_resident_codes(MID_A, reason=RevocationReason.DECEASED, at=at).result() == 1
    assert store.get_code(CodeRef("33", KID, 0)).revoked_at == NOW
    assert store.revoke_resident_codes(MID_A, reason=RevocationReason.DECEASED, at=at).result() == 0


def test_serials_past_64_bit_signed_name_no_code_and_fail_only_their_own_row(store):
    # Refs may name serials up to 2**64 - 1; both databases keep 64-bit signed integers.
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    huge = CodeRef("33", KID, 2**64 - 1)
    assert store.get_code(huge) is None
    assert store.revoke_code(huge, reason=RevocationReason.FRAUD, at=NOW).result() is None
    batch = [store.submit_code(code(2**63)), store.submit_code(code(1))]
    with pytest.raises(WriteFailed):  # a value the database cannot hold fails its own row only
        batch[0].result()
    batch[1].result()
    assert store.get_code(CodeRef("33", KID, 1)) is not None


# --------------------------------------------------------------------------- channels and challenges (issue 13)

PHONE = Channel.PHONE
CHALLENGE = bytes(range(32))


def live(store, mid: str = MID_A) -> list[tuple[int, Channel]]:
    return [(r.serial, r.channel) for r in store.codes_of(mid) if r.revoked_at is None]


def test_replacing_a_channel_supersedes_only_that_residents_live_codes_of_that_channel(store):
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.submit_code(code(0)).result()  # static
    store.submit_code(code(1, channel=PHONE)).result()
    store.submit_code(code(2, MID_B)).result()  # another resident's static
    store.submit_code(code(3, expires=NOW)).result()  # expired: left alone
    store.submit_code(code(4), replace_channel=True).result()
    assert live(store) == [(1, PHONE), (3, Channel.STATIC), (4, Channel.STATIC)]
    assert store.get_code(CodeRef("33", KID, 0)).revocation_reason is RevocationReason.SUPERSEDED
    store.submit_code(code(5, channel=PHONE), replace_channel=True).result()
    assert live(store) == [(3, Channel.STATIC), (4, Channel.STATIC), (5, PHONE)]
    assert live(store, MID_B) == [(2, Channel.STATIC)]
    assert store.get_code(CodeRef("33", KID, 5)).channel is PHONE  # the channel is stored


def test_two_replacements_of_one_channel_in_one_batch_leave_the_later_one_live(store, backend):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    with backend.write_lock_held():
        blocker = store.submit_code(code(1, MID_A, channel=PHONE))
        wait_for_queue(store, 0)
        first = store.submit_code(code(2), replace_channel=True)
        second = store.submit_code(code(3), replace_channel=True)
    assert blocker.result(timeout=30) is None and first.result(timeout=30) is None and second.result() is None
    assert live(store) == [(1, PHONE), (3, Channel.STATIC)]


def test_a_refused_replacement_revokes_nothing(store):
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="k-1")).result()
    with pytest.raises(DuplicateIdempotencyKey):
        store.submit_code(code(1, key="k-1"), replace_channel=True).result()
    assert live(store) == [(0, Channel.STATIC)]


def challenge(mid: str = MID_A, *, caller: str = "app", expires: dt.datetime | None = None,
              value: bytes = CHALLENGE) -> ChallengeRecord:
    return ChallengeRecord(value, mid, caller, NOW, expires or NOW + dt.timedelta(minutes=5))


def test_a_challenge_is_consumed_with_its_code_once(store):
    store.create_resident(resident(), []).result()
    store.create_challenge(challenge()).result()
    assert store.get_challenge(CHALLENGE).used_at is None
    use = ChallengeUse(CHALLENGE, MID_A, "app")
    store.submit_code(code(0, channel=PHONE), replace_channel=True, challenge=use).result()
    assert store.get_challenge(CHALLENGE).used_at == NOW
    with pytest.raises(ChallengeRefused) as refused:  # reused: nothing stored
        store.submit_code(code(1, channel=PHONE), replace_channel=True, challenge=use).result()
    assert refused.value.violations[0].field == "challenge"
    assert live(store) == [(0, PHONE)] and store.get_code(CodeRef("33", KID, 1)) is None


@pytest.mark.parametrize("use, at", [
    pytest.param(ChallengeUse(CHALLENGE, MID_B, "app"), NOW, id="other_resident"),
    pytest.param(ChallengeUse(CHALLENGE, MID_A, "other-app"), NOW, id="other_caller"),
    pytest.param(ChallengeUse(bytes(32), MID_A, "app"), NOW, id="unknown"),
    pytest.param(ChallengeUse(CHALLENGE, MID_A, "app"), NOW + dt.timedelta(minutes=5), id="expired"),
])
def test_an_unusable_challenge_refuses_its_code_and_stays_unused(store, use, at):
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.create_challenge(challenge()).result()
    record = CodeRecord("33", KID, 0, use.main_index_id, at, at + dt.timedelta(days=7), "EHC1:T", use.caller,
                        channel=PHONE)
    with pytest.raises(ChallengeRefused):
        store.submit_code(record, replace_channel=True, challenge=use).result()
    assert store.get_code(CodeRef("33", KID, 0)) is None and store.get_challenge(CHALLENGE).used_at is None
    assert store.consume_challenge(use, at=at).result() is False


def test_consume_challenge_spends_it_once_and_challenges_survive_a_reopen(backend):
    with backend.open() as s:
        s.create_resident(resident(), []).result()
        s.create_challenge(challenge()).result()
    with backend.open() as s:
        use = ChallengeUse(CHALLENGE, MID_A, "app")
        assert s.consume_challenge(use, at=NOW).result() is True
    with backend.open() as s:
        assert s.consume_challenge(use, at=NOW).result() is False
        assert s.get_challenge(CHALLENGE).used_at == NOW


def test_challenges_need_an_unmerged_resident_and_expired_ones_are_forgotten(store):
    with pytest.raises(ResidentNotFound):
        store.create_challenge(challenge()).result()
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.create_challenge(challenge(expires=NOW + dt.timedelta(seconds=1))).result()
    later = ChallengeRecord(bytes(32), MID_A, "app", NOW + dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=6))
    store.create_challenge(later).result()
    assert store.get_challenge(CHALLENGE) is None and store.get_challenge(bytes(32)) is not None
    store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result()
    with pytest.raises(ResidentMerged):
        store.create_challenge(challenge(MID_B, value=b"m" * 32)).result()
