"""The store contract (:class:`issuer.store.base.Store`), run on every store: SQLite and PostgreSQL.

Each test gets a fresh database from the ``backend`` fixture (``conftest.py``):
a new SQLite file, or this module's PostgreSQL schema emptied (see ``store_backends.py``;
PostgreSQL tests skip when the server is unreachable, and fail under CI=true).
What only one store has (PRAGMAs, migrations' shapes, search_path, reconnects)
is tested in ``test_store_sqlite.py`` and ``test_store_postgres.py``.

This module: the schema, the writer lease and privacy at rest. Group commit is
in ``test_store_contract_batches.py``; serials, residents, codes, channels and
challenges in ``test_store_contract_records.py``; shared helpers in
``store_contract_support.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import time

import pytest

import healthcode as hc
from issuer.documents import canonical_form, make_resident_id, parse_document
from issuer.errors import NotFound, Unavailable
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import CodeRef
from issuer.privacy import IdentifierVault, SealedValueError
from issuer.store import (
    SchemaTooNew,
    StoreInUse,
)
from .store_contract_support import KID, MID_A, NOW, TODAY, VAULT, code, identifier, resident
from .store_contract_support import store  # noqa: F401 - fixtures


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
