"""The store, written once in SQL over a small connection protocol; a dialect supplies the rest.

:class:`SQLStore` is the whole :class:`~issuer.store.base.Store`: every read,
every write's transaction body (merge revokes live codes, renewal supersedes,
``_require_active``), the record mappers, serial allocation, the code batches
the :class:`~issuer.store.writer.GroupCommitWriter` commits, and the resident
cache. Statements use ``?`` placeholders.

A :class:`Dialect` is what differs between SQLite (:mod:`issuer.store.sqlite`)
and PostgreSQL (:mod:`issuer.store.postgres`): connecting and the writer lease,
transactions, the placeholder style, time adapters, column types, the bulk
code insertion, and the mapping of driver errors to the store's own errors.

:class:`SQLRevocationSource` is the read side of the revocation publisher
(:class:`~issuer.store.base.RevocationSource`), written once too.

Reads and writes follow :mod:`issuer.store.base`: reads block, writes return
futures resolved after the commit is durable.
"""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Callable, Generic, Literal, Mapping, Protocol, Sequence, TypeVar

from ..errors import Conflict, IssuerError
from ..model import ELSEWHERE, Channel, CodeRef, NationalState, RevocationReason
from .base import (
    DEFAULT_BATCH_CAP,
    DEFAULT_MAX_QUEUED,
    DEFAULT_RESIDENT_CACHE,
    ChallengeRefused,
    ChallengeUse,
    CodeNotRenewable,
    CodeRecord,
    DuplicateIdempotencyKey,
    DuplicateIdentifier,
    DuplicateSerial,
    IdentifierRecord,
    ResidentMerged,
    ResidentMoved,
    ResidentNotFound,
    ResidentRecord,
    Store,
    WriteFailed,
    WriterStats,
)
from .challenges import WalletStatements
from .national import NationalStatements
from .schema import migrate
from .writer import DEFAULT_COMMIT_LINGER, CodeItem, GroupCommitWriter, Outcome

__all__ = ["SQLStore", "SQLRevocationSource", "Dialect", "Connection", "Cursor", "Refusal", "MAX_SERIAL"]

#: Serials are 64-bit signed integers in both databases: anything above can name no stored code
#: (refs may name serials up to 2**64 - 1; and a PostgreSQL NUMERIC parameter would skip the index).
MAX_SERIAL = 2**63 - 1

T = TypeVar("T")
C = TypeVar("C", bound="Connection")

#: What refused one code's insertion, as a dialect reads its driver's error.
Refusal = Literal["idempotency_key", "serial", "resident", "constraint", "value"]


def refusal_error(refusal: Refusal) -> IssuerError:
    """The store's error for a refused code insertion (only that row failed)."""
    if refusal == "idempotency_key":
        return DuplicateIdempotencyKey("idempotency key was already used by this caller")
    if refusal == "serial":
        return DuplicateSerial("serial is already taken for this signing key")
    if refusal == "resident":
        return ResidentNotFound("resident not found")
    if refusal == "constraint":
        return WriteFailed("code could not be stored (constraint)")
    return WriteFailed("code could not be stored")


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses (sqlite3's and psycopg's both fit)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...


class Dialect(Protocol[C]):
    """What one database does its own way. Constructing one opens nothing."""

    #: Column types by role for the migrations (:mod:`issuer.store.schema`).
    types: Mapping[str, str]
    #: The scalar function of the larger of two values (SQLite ``max``, PostgreSQL ``greatest``).
    greatest: str
    #: The statement starting a read-only transaction that sees one snapshot.
    snapshot_begin: str
    row_errors: tuple[type[BaseException], ...]
    driver_error: type[BaseException]

    def sql(self, statement: str) -> str:
        """``statement`` with its ``?`` placeholders in this driver's style."""
        ...

    def time_param(self, moment: dt.datetime) -> object:
        """A time as stored (floored to the second)."""
        ...

    def time_value(self, stored: Any) -> dt.datetime:
        """A stored time as an aware UTC datetime."""
        ...

    # -- the writer: lease, connection, transactions

    def open(self) -> C:
        """Take the writer lease (:class:`~issuer.store.base.StoreInUse` if held) and connect the writer."""
        ...

    def close(self) -> None:
        """Close the writer's connection and the readers; release the lease."""
        ...

    def begin(self) -> C: ...

    def restart(self, conn: C) -> None: ...

    def commit(self, conn: C) -> None: ...

    def rollback(self, conn: C | None) -> None: ...

    def insert_codes(self, conn: C, rows: list[tuple[object, ...]]) -> None:
        """Insert many codes' parameters at once; raises a row error if any is refused."""
        ...

    def refusal(self, exc: BaseException) -> Refusal:
        """What refused one code's insertion with driver error ``exc`` (one of :attr:`row_errors`)."""
        ...

    # -- migrations (see issuer.store.schema.Migrating)

    def migration_step(self, conn: C) -> AbstractContextManager[object]: ...

    def schema_version(self, conn: C) -> int: ...

    def set_schema_version(self, conn: C, version: int) -> None: ...

    def execute_ddl(self, conn: C, statement: str) -> None: ...

    # -- reads

    def read(self, query: Callable[[C], T]) -> T:
        """``query(conn)`` on a pooled read-only connection."""
        ...

    def reading(self) -> AbstractContextManager[C]:
        """A short read-only connection of its own (the revocation source: no store, no lease)."""
        ...


# --------------------------------------------------------------------------- statements

_CODE_COLUMNS = (
    "province, kid, serial, main_index_id, issued_at, expires_at, text, caller, idempotency_key, "
    "request_fingerprint, revoked_at, revocation_reason, channel"
)
_INSERTED_COLUMNS = (
    "province, kid, serial, main_index_id, issued_at, expires_at, text, caller, idempotency_key, request_fingerprint, "
    "channel"
)
INSERT_CODE = f"INSERT INTO codes ({_INSERTED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_IDENTIFIER_COLUMNS = "blind_index, doc_type, sealed, main_index_id, is_primary, created_at"
_INSERT_IDENTIFIER = f"INSERT INTO identifiers ({_IDENTIFIER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
RESIDENT_COLUMNS = "main_index_id, created_at, merged_into, merged_at, national_state, home_province, moved_at"
_RESIDENT = f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE main_index_id = ?"
_CODE_BY_REF = f"SELECT {_CODE_COLUMNS} FROM codes WHERE province = ? AND kid = ? AND serial = ?"
_REVOKE_LIVE = ("UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                "WHERE main_index_id = ? AND revoked_at IS NULL AND expires_at > ?")
_SUPERSEDE = (
    "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
    "WHERE province = ? AND kid = ? AND serial = ? AND main_index_id = ? AND revoked_at IS NULL"
)
#: One statement: one snapshot for both.
_NEXT_SERIAL = (
    "SELECT {greatest}("
    "(SELECT coalesce(max(next_serial), 0) FROM serial_counters WHERE province = ? AND kid = ?), "
    "(SELECT coalesce(max(serial) + 1, 0) FROM codes WHERE province = ? AND kid = ?))"
)
_BUMP_COUNTER = (
    "INSERT INTO serial_counters (province, kid, next_serial) VALUES (?, ?, ?) "
    "ON CONFLICT (province, kid) DO UPDATE SET next_serial = {greatest}(serial_counters.next_serial, "
    "excluded.next_serial)"
)


class SQLStore(WalletStatements, NationalStatements, Store, Generic[C]):
    """The :class:`~issuer.store.base.Store` over a :class:`Dialect`.

    ``batch_cap`` bounds the codes one transaction commits;
    ``resident_cache_size`` how many unmerged entries :meth:`known_active`
    remembers; ``max_queued`` how many writes may wait for the writer before
    new ones fail with :class:`~issuer.store.base.StoreOverloaded`
    (backpressure instead of unbounded memory and latency); ``commit_linger``
    how long a group commit may fill under concurrent load. Opening takes the
    writer lease, creates or migrates the schema and starts the writer.
    """

    def __init__(
        self,
        dialect: Dialect[C],
        *,
        writer_name: str,
        batch_cap: int = DEFAULT_BATCH_CAP,
        resident_cache_size: int = DEFAULT_RESIDENT_CACHE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        commit_linger: float = DEFAULT_COMMIT_LINGER,
    ) -> None:
        self.dialect = dialect
        self._writer: GroupCommitWriter[C] = GroupCommitWriter(
            dialect, self, name=writer_name, batch_cap=batch_cap, max_queued=max_queued, commit_linger=commit_linger)
        self._cache_cap = resident_cache_size
        self._active: dict[str, None] = {}  # FIFO-bounded set of entries known to exist unmerged
        self._merged: set[str] = set()  # entries this process merged (guards in-flight codes)
        self._cache_lock = threading.Lock()
        q = dialect.sql
        self._q = q
        self._t = dialect.time_param
        self._next_serial_sql = q(_NEXT_SERIAL.format(greatest=dialect.greatest))
        self._bump_counter_sql = q(_BUMP_COUNTER.format(greatest=dialect.greatest))
        self._insert_code_sql = q(INSERT_CODE)
        self._supersede_sql = q(_SUPERSEDE)

        conn = dialect.open()
        try:
            self.schema_version = migrate(conn, dialect)
        except BaseException:
            dialect.close()
            raise
        self._writer.start()

    # -- records

    def _time(self, stored: object) -> dt.datetime | None:
        return None if stored is None else self.dialect.time_value(stored)

    def _code_record(self, row: Sequence[Any]) -> CodeRecord:
        (province, kid, serial, mid, iat, exp, text, caller, key, fingerprint, revoked_at, reason, channel) = row
        value = self.dialect.time_value
        return CodeRecord(
            province=province,
            kid=kid,
            serial=serial,
            main_index_id=mid,
            issued_at=value(iat),
            expires_at=value(exp),
            text=text,
            caller=caller,
            idempotency_key=key,
            request_fingerprint=fingerprint,
            revoked_at=self._time(revoked_at),
            revocation_reason=None if reason is None else RevocationReason(reason),
            channel=Channel(channel),
        )

    def _identifier_record(self, row: Sequence[Any]) -> IdentifierRecord:
        blind_index, doc_type, sealed, mid, primary, created_at = row
        return IdentifierRecord(blind_index, doc_type, sealed, mid, bool(primary),
                                self.dialect.time_value(created_at))

    def _identifier_params(self, i: IdentifierRecord, main_index_id: str) -> tuple[object, ...]:
        return (i.blind_index, i.doc_type, i.sealed, main_index_id, bool(i.primary), self._t(i.created_at))

    def _code_params(self, record: CodeRecord) -> tuple[object, ...]:
        t = self._t
        return (record.province, record.kid, record.serial, record.main_index_id, t(record.issued_at),
                t(record.expires_at), record.text, record.caller, record.idempotency_key,
                record.request_fingerprint, Channel(record.channel).value)

    # -- the resident cache

    def _remember_active(self, main_index_id: str) -> None:
        if not self._cache_cap:
            return
        with self._cache_lock:
            if main_index_id in self._merged:
                return
            active = self._active
            active[main_index_id] = None
            while len(active) > self._cache_cap:
                del active[next(iter(active))]

    def _forget_active(self, main_index_id: str) -> None:
        with self._cache_lock:
            self._merged.add(main_index_id)
            self._active.pop(main_index_id, None)

    def known_active(self, main_index_id: str) -> bool:
        return main_index_id in self._active

    def write_stats(self) -> WriterStats:
        """Counters of the writer (transactions, batches, codes, largest batch, fallbacks)."""
        return self._writer.stats()

    # -- reads

    def _read(self, query: Callable[[C], T]) -> T:
        return self.dialect.read(query)

    def _one(self, statement: str, params: Sequence[object]) -> Any:
        sql = self._q(statement)
        return self.dialect.read(lambda conn: conn.execute(sql, params).fetchone())

    def _all(self, statement: str, params: Sequence[object]) -> Sequence[Any]:
        sql = self._q(statement)
        return self.dialect.read(lambda conn: conn.execute(sql, params).fetchall())

    def _resident_record(self, row: Sequence[Any]) -> ResidentRecord:
        mid, created_at, merged_into, merged_at, state, home, moved_at = row
        return ResidentRecord(mid, self.dialect.time_value(created_at), merged_into, self._time(merged_at),
                              NationalState(state), home, self._time(moved_at))

    def get_resident(self, main_index_id: str) -> ResidentRecord | None:
        row = self._one(_RESIDENT, (main_index_id,))
        if row is None:
            return None
        record = self._resident_record(row)
        if record.active:
            self._remember_active(main_index_id)
        return record

    def find_identifier(self, blind_index: bytes) -> IdentifierRecord | None:
        row = self._one(f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE blind_index = ?", (blind_index,))
        return None if row is None else self._identifier_record(row)

    def identifiers_of(self, main_index_id: str) -> list[IdentifierRecord]:
        rows = self._all(f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE main_index_id = ? "
                         "ORDER BY is_primary DESC, created_at, blind_index", (main_index_id,))
        return [self._identifier_record(row) for row in rows]

    def get_code(self, ref: CodeRef) -> CodeRecord | None:
        if not 0 <= ref.serial <= MAX_SERIAL:
            return None
        row = self._one(_CODE_BY_REF, (ref.province, ref.kid, ref.serial))
        return None if row is None else self._code_record(row)

    def find_code_by_idempotency_key(self, caller: str, idempotency_key: str) -> CodeRecord | None:
        row = self._one(f"SELECT {_CODE_COLUMNS} FROM codes WHERE caller = ? AND idempotency_key = ?",
                        (caller, idempotency_key))
        return None if row is None else self._code_record(row)

    def codes_of(self, main_index_id: str) -> list[CodeRecord]:
        rows = self._all(f"SELECT {_CODE_COLUMNS} FROM codes WHERE main_index_id = ? ORDER BY issued_at, id",
                         (main_index_id,))
        return [self._code_record(row) for row in rows]

    def next_serial(self, province: str, kid: bytes) -> int:
        sql = self._next_serial_sql
        return int(self.dialect.read(lambda conn: conn.execute(sql, (province, kid, province, kid)).fetchone()[0]))

    # -- writes (queued: see issuer/store/writer.py)

    def _operation(self, run: Callable[[C], T], after_commit: Callable[[T], None] | None = None) -> Future[T]:
        return self._writer.submit(run, after_commit)

    def _require_active(self, conn: C, main_index_id: str, what: str = "resident") -> None:
        row = conn.execute(self._q("SELECT merged_into, national_state FROM residents WHERE main_index_id = ?"),
                           (main_index_id,)).fetchone()
        if row is None:
            raise ResidentNotFound(f"{what} not found")
        if row[0] is not None:
            raise ResidentMerged(f"{what} was merged into another entry")
        if row[1] in ELSEWHERE:
            raise ResidentMoved(f"{what} is homed in another province")

    def create_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        mid = resident.main_index_id
        rows = [self._identifier_params(i, mid) for i in identifiers]
        created = self._t(resident.created_at)
        state = NationalState(resident.national_state).value
        q = self._q

        def run(conn: C) -> None:
            for position, row in enumerate(rows):
                if conn.execute(q("SELECT 1 FROM identifiers WHERE blind_index = ?"), (row[0],)).fetchone():
                    raise DuplicateIdentifier(position)
            conn.execute(q("INSERT INTO residents (main_index_id, created_at, national_state) VALUES (?, ?, ?)"),
                         (mid, created, state))
            for row in rows:
                conn.execute(q(_INSERT_IDENTIFIER), row)

        return self._operation(run, lambda _: self._remember_active(mid))

    def add_identifier(self, identifier: IdentifierRecord) -> Future[bool]:
        i = identifier
        row = self._identifier_params(i, i.main_index_id)
        q = self._q

        def run(conn: C) -> bool:
            self._require_active(conn, i.main_index_id)
            linked = conn.execute(q("SELECT main_index_id FROM identifiers WHERE blind_index = ?"),
                                  (i.blind_index,)).fetchone()
            if linked is not None:
                if linked[0] == i.main_index_id:
                    return False
                raise DuplicateIdentifier(0)
            conn.execute(q(_INSERT_IDENTIFIER), row)
            return True

        return self._operation(run)

    def merge_residents(self, *, survivor: str, merged: str, at: dt.datetime) -> Future[int]:
        now = self._t(at)
        q = self._q

        def run(conn: C) -> int:
            if survivor == merged:
                raise Conflict("cannot merge a resident into itself")
            self._require_active(conn, survivor, "survivor")
            self._require_active(conn, merged, "merged resident")
            # (1) the survivor keeps every document; it keeps its own primary
            conn.execute(q("UPDATE identifiers SET main_index_id = ?, is_primary = ? WHERE main_index_id = ?"),
                         (survivor, False, merged))
            # (2) the merged entry stays, read-only, pointing at the survivor
            conn.execute(q("UPDATE residents SET merged_into = ?, merged_at = ? WHERE main_index_id = ?"),
                         (survivor, now, merged))
            # (3) its live codes are revoked in the same transaction
            return conn.execute(q(_REVOKE_LIVE), (now, RevocationReason.MERGED.value, merged, now)).rowcount

        return self._operation(run, lambda _: self._forget_active(merged))

    def revoke_code(self, ref: CodeRef, *, reason: RevocationReason, at: dt.datetime) -> Future[CodeRecord | None]:
        reason_value = RevocationReason(reason).value
        now = self._t(at)
        key = (ref.province, ref.kid, ref.serial)
        q = self._q

        def run(conn: C) -> CodeRecord | None:
            if not 0 <= ref.serial <= MAX_SERIAL:
                return None
            conn.execute(q("UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                           "WHERE province = ? AND kid = ? AND serial = ? AND revoked_at IS NULL"),
                         (now, reason_value) + key)
            row = conn.execute(q(_CODE_BY_REF), key).fetchone()
            return None if row is None else self._code_record(row)

        return self._operation(run)

    def revoke_resident_codes(self, main_index_id: str, *, reason: RevocationReason, at: dt.datetime) -> Future[int]:
        reason_value = RevocationReason(reason).value
        now = self._t(at)
        sql = self._q(_REVOKE_LIVE)

        def run(conn: C) -> int:
            return conn.execute(sql, (now, reason_value, main_index_id, now)).rowcount

        return self._operation(run)

    def submit_code(self, record: CodeRecord, *, supersedes: CodeRef | None = None,
                    replace_channel: bool = False, challenge: ChallengeUse | None = None) -> Future[None]:
        return self._writer.submit_code(self._code_params(record), record, supersedes, replace_channel, challenge)

    # -- code batches, inside the writer's transaction (issuer.store.writer.CodeWrites)

    def screen(self, batch: list[CodeItem]) -> list[CodeItem]:
        """Entries merged while these codes were in flight take no new code."""
        merged = self._merged
        if not merged:
            return batch
        kept = []
        for item in batch:
            if item.record.main_index_id in merged:
                item.future.set_exception(ResidentMerged("resident was merged into another entry"))
            else:
                kept.append(item)
        return kept

    def apply_fast(self, conn: C, batch: list[CodeItem]) -> list[Outcome]:
        """All plain insertions in one statement, the others one by one. Raises on any row's failure.

        A plain insertion that replaces its channel first supersedes the
        resident's live codes of that channel (before the insertion: the new
        rows are not touched). Two such codes of one resident and channel in
        one batch go row by row instead, in order, so that the later one wins.
        """
        plain = [item for item in batch if item.supersedes is None and item.challenge is None]
        replacing = [item for item in plain if item.replace_channel]
        if replacing:
            if len({(i.record.main_index_id, i.record.channel) for i in replacing}) < len(replacing):
                return self.apply_one_by_one(conn, batch)
            for item in replacing:
                self._replace_channel_in(conn, item.params)
        if plain:
            self.dialect.insert_codes(conn, [item.params for item in plain])
        if len(plain) == len(batch):
            return [None] * len(batch)
        return [None if item.supersedes is None and item.challenge is None else self._apply_one(conn, item)
                for item in batch]

    def apply_one_by_one(self, conn: C, batch: list[CodeItem]) -> list[Outcome]:
        """One code at a time, each under a savepoint: a failing row is undone alone."""
        return [self._apply_one(conn, item) for item in batch]

    def _apply_one(self, conn: C, item: CodeItem) -> IssuerError | None:
        """One code and what goes with it, all or nothing (a savepoint), in this order:
        consume the challenge, insert the code, supersede the renewed code, supersede the channel."""
        old = item.supersedes
        conn.execute("SAVEPOINT code")
        try:
            try:
                if item.challenge is not None:
                    self._consume_or_refuse(conn, item.challenge, item.params[4])
                conn.execute(self._insert_code_sql, item.params)
            except ChallengeRefused as exc:
                conn.execute("ROLLBACK TO SAVEPOINT code")
                return exc
            except self.dialect.row_errors as exc:
                conn.execute("ROLLBACK TO SAVEPOINT code")
                return refusal_error(self.dialect.refusal(exc))
            if old is not None:
                updated = 0
                if 0 <= old.serial <= MAX_SERIAL:
                    updated = conn.execute(
                        self._supersede_sql,
                        (item.params[4], RevocationReason.SUPERSEDED.value, old.province, old.kid, old.serial,
                         item.record.main_index_id),
                    ).rowcount
                if updated != 1:
                    conn.execute("ROLLBACK TO SAVEPOINT code")
                    return CodeNotRenewable("code to renew is unknown, revoked, or of another resident")
            if item.replace_channel:
                self._replace_channel_in(conn, item.params)
            return None
        finally:
            conn.execute("RELEASE SAVEPOINT code")

    def bump_counters(self, conn: C, batch: list[CodeItem], outcomes: list[Outcome]) -> None:
        """Raise each (province, kid)'s serial counter past the highest serial this batch stored."""
        highest: dict[tuple[str, bytes], int] = {}
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                key = (item.record.province, item.record.kid)
                serial = item.record.serial
                if serial >= highest.get(key, -1):
                    highest[key] = serial
        for (province, kid), serial in highest.items():
            conn.execute(self._bump_counter_sql, (province, kid, serial + 1))

    # -- lifecycle

    def close(self) -> None:
        if not self._writer.stop():
            return
        self.dialect.close()


class SQLRevocationSource(Generic[C]):
    """Reads revoked serials from the issuer's store, for :mod:`issuer.revocation_publisher`.

    Its own short read-only connection per call (no lease: the issuer may be
    running); it never creates anything (a missing database or table is the
    driver's error). Its query is served by the partial index on revoked codes
    (migration ``revoked_index`` of :mod:`issuer.store.schema`).
    """

    def __init__(self, dialect: Dialect[C]) -> None:
        self.dialect = dialect
        self._revoked_sql = dialect.sql("SELECT serial FROM codes WHERE province = ? AND kid = ? "
                                        "AND revoked_at IS NOT NULL ORDER BY serial")
        self._universe_sql = dialect.sql(_NEXT_SERIAL.format(greatest=dialect.greatest))

    def shards(self) -> list[tuple[str, bytes]]:
        # serial_counters gets a row, in the same transaction, for every shard that commits a code
        with self.dialect.reading() as conn:
            rows = conn.execute("SELECT province, kid FROM serial_counters ORDER BY province, kid").fetchall()
        return [(p, bytes(k)) for p, k in rows]

    def revoked(self, province: str, kid: bytes) -> tuple[int, list[int]]:
        with self.dialect.reading() as conn:
            conn.execute(self.dialect.snapshot_begin)  # one snapshot for both reads
            serials = [s for (s,) in conn.execute(self._revoked_sql, (province, kid)).fetchall()]
            (universe,) = conn.execute(self._universe_sql, (province, kid, province, kid)).fetchone()
            conn.execute("COMMIT")
        return int(universe), serials
