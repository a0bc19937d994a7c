"""Shared helpers of the store contract tests (test_store_contract*.py, test_store_sqlite.py).

The ``store`` fixture opens the store of the ``backend`` fixture (``conftest.py``):
a new SQLite file, or the module's PostgreSQL schema emptied (``store_backends.py``).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

import healthcode as hc
from issuer.documents import canonical_form, make_resident_id, parse_document
from issuer.model import Channel
from issuer.privacy import IdentifierVault
from issuer.store import (
    CodeRecord,
    IdentifierRecord,
    ResidentRecord,
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
