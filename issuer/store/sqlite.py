"""The SQLite store: WAL, full fsync, one writer thread with group commit.

Writes
    Every write goes through one writer thread and one connection, in
    submission order. Code insertions are *group committed*: the writer takes
    everything waiting in its queue (up to ``batch_cap``) and commits the
    insertions together in one transaction, so one fsync acknowledges many
    issuances; only then does it resolve each submitter's future. Other writes
    (register, link, merge, revoke) run in their own transaction, in order
    between the batches.

    If a batch's transaction fails on a row (a UNIQUE conflict from a retried
    idempotent request, say), the writer rolls back and applies the rows one
    by one in a fresh transaction: SQLite undoes only the failing *statement*,
    so that row's future gets its error and every other row still commits.

Reads
    Reads use their own connections from a small pool (WAL lets them run
    while the writer commits), opened ``query_only``.

Durability
    ``journal_mode=WAL`` and ``synchronous=FULL``: a commit returns after the
    WAL is fsync'd, so a future resolved by the writer survives a crash or a
    power cut. ``busy_timeout`` covers a second connection (an operator's
    ``sqlite3`` shell, a backup) holding a lock briefly.

One writer *process* per province database, enforced. Serial numbers are
allocated in the issuing process's memory from :meth:`SQLiteStore.next_serial`
(see :mod:`issuer.issuance`), and the resident cache trusts that merges go
through this process. So an open store holds the database's writer lease, an
exclusive ``flock`` on ``<database>-issuer.lock`` (:func:`lease_path`): a
second store on the same file, in any process, fails to open with
:class:`~issuer.store.base.StoreInUse`; the kernel releases the lease when
the holder closes the store or dies (kill -9 included). Readers that are not
stores (the revocation source, an operator's ``sqlite3`` shell) need no lease.

Privacy: the file holds main index IDs, blind indexes and sealed values, never
a document number (see :mod:`issuer.privacy`); the WAL holds the same. The
database, its ``-wal`` and ``-shm`` are owner-only (``0600``) whatever the
umask (:func:`_make_private`); so is the lease file.

Schema (``PRAGMA user_version`` counts the migrations applied)::

    residents(main_index_id TEXT PK, created_at INT, merged_into TEXT -> residents, merged_at INT)
    identifiers(blind_index BLOB PK, doc_type TEXT, sealed BLOB, main_index_id TEXT -> residents,
                is_primary INT, created_at INT)          index (main_index_id)
    codes(id INT PK, province TEXT, kid BLOB, serial INT, main_index_id TEXT -> residents,
          issued_at INT, expires_at INT, text TEXT, caller TEXT, idempotency_key TEXT,
          request_fingerprint BLOB, revoked_at INT, revocation_reason TEXT)
          UNIQUE (province, kid, serial); UNIQUE (caller, idempotency_key); index (main_index_id);
          index (province, kid, serial) WHERE revoked_at IS NOT NULL   (migration 2)
    serial_counters(province TEXT, kid BLOB, next_serial INT, PK (province, kid))

Times are whole seconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import pathlib
import sqlite3
import time
from concurrent.futures import Future
from typing import Callable, Iterator, Sequence

import sqlite_utils

from healthcode.model import from_epoch, to_epoch
from shellkit.files import create_private_file, ensure_private_file

from ..errors import Conflict, IssuerError
from ..model import CodeRef, RevocationReason
from .base import (
    DEFAULT_BATCH_CAP,
    DEFAULT_MAX_QUEUED,
    DEFAULT_RESIDENT_CACHE,
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
    StoreInUse,
    Store,
    WriteFailed,
    WriterStats,
)
from .pool import ReaderPool
from .writer import DEFAULT_COMMIT_LINGER, CodeItem, GroupCommitWriter, Operation

__all__ = ["SQLiteStore", "WriterStats", "MIGRATIONS", "SchemaTooNew", "DEFAULT_BATCH_CAP"]

DEFAULT_BUSY_TIMEOUT_MS = 5000
#: SQLite integers are 64-bit signed; code serials may go to 2**64 - 1 (no such row is ever stored).
_MAX_SQL_INTEGER = 2**63 - 1


# --------------------------------------------------------------------------- migrations


def _migration_1_initial(db: sqlite_utils.Database) -> None:
    db["residents"].create(
        {"main_index_id": str, "created_at": int, "merged_into": str, "merged_at": int},
        pk="main_index_id",
        not_null=["main_index_id", "created_at"],
        foreign_keys=[("merged_into", "residents", "main_index_id")],
        strict=True,
    )
    db["identifiers"].create(
        {
            "blind_index": bytes,
            "doc_type": str,
            "sealed": bytes,
            "main_index_id": str,
            "is_primary": int,
            "created_at": int,
        },
        pk="blind_index",
        not_null=["blind_index", "doc_type", "sealed", "main_index_id", "is_primary", "created_at"],
        foreign_keys=[("main_index_id", "residents", "main_index_id")],
        strict=True,
    )
    db["identifiers"].create_index(["main_index_id"], index_name="identifiers_by_resident")
    db["codes"].create(
        {
            "id": int,
            "province": str,
            "kid": bytes,
            "serial": int,
            "main_index_id": str,
            "issued_at": int,
            "expires_at": int,
            "text": str,
            "caller": str,
            "idempotency_key": str,
            "request_fingerprint": bytes,
            "revoked_at": int,
            "revocation_reason": str,
        },
        pk="id",
        not_null=["province", "kid", "serial", "main_index_id", "issued_at", "expires_at", "text", "caller"],
        foreign_keys=[("main_index_id", "residents", "main_index_id")],
        strict=True,
    )
    db["codes"].create_index(["province", "kid", "serial"], index_name="codes_by_serial", unique=True)
    db["codes"].create_index(["caller", "idempotency_key"], index_name="codes_by_idempotency_key", unique=True)
    db["codes"].create_index(["main_index_id"], index_name="codes_by_resident")
    db["serial_counters"].create(
        {"province": str, "kid": bytes, "next_serial": int},
        pk=("province", "kid"),
        not_null=["province", "kid", "next_serial"],
        strict=True,
    )


def _migration_2_revoked_index(db: sqlite_utils.Database) -> None:
    # The revocation publisher reads a shard's revoked serials in order
    # (issuer/revocation_publisher.py); without this it scans the shard's whole
    # (province, kid, serial) range, 30 million rows for the largest national shard.
    # Partial: codes that are not revoked add nothing to it.
    db.execute("CREATE INDEX codes_revoked ON codes (province, kid, serial) WHERE revoked_at IS NOT NULL")


#: Applied in order; ``PRAGMA user_version`` is the number applied. Append only.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1_initial,
    _migration_2_revoked_index,
)


def _migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations, each in its own transaction; return the schema version."""
    db = sqlite_utils.Database(conn, execute_plugins=False)
    while True:
        conn.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise SchemaTooNew(f"database schema version {version} is newer than this software's "
                                   f"{len(MIGRATIONS)}")
            if version == len(MIGRATIONS):
                conn.execute("COMMIT")
                return version
            MIGRATIONS[version](db)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


# --------------------------------------------------------------------------- rows


_CODE_COLUMNS = (
    "province, kid, serial, main_index_id, issued_at, expires_at, text, caller, idempotency_key, "
    "request_fingerprint, revoked_at, revocation_reason"
)
_INSERT_CODE = (
    "INSERT INTO codes (province, kid, serial, main_index_id, issued_at, expires_at, text, caller, "
    "idempotency_key, request_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CODE_VALUES = _INSERT_CODE.partition(" VALUES ")[0] + " VALUES "
_CODE_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Rows per multi-row INSERT: powers of two, so a batch takes at most a few
#: statements and the statement cache holds at most these few shapes.
_INSERT_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_INSERT_CODES_SQL = {n: _INSERT_CODE_VALUES + ", ".join([_CODE_PLACEHOLDERS] * n) for n in _INSERT_CHUNKS}


def _insert_codes(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert ``rows`` (code params) with a few multi-row INSERTs; raises like executemany would.

    One statement step for many rows instead of one per row: ``executemany``
    releases and retakes the GIL around every row's step, and each retake
    waits for the event loop. (256 rows x 10 columns stays under SQLite's
    default limit of 32766 variables; a build with the old limit of 999 gets
    chunks of at most 64 rows.)
    """
    position, total = 0, len(rows)
    while position < total:
        left = total - position
        n = next(c for c in _INSERT_CHUNKS if c <= left and c <= _MAX_INSERT_ROWS)
        chunk = rows[position:position + n]
        conn.execute(_INSERT_CODES_SQL[n], [value for row in chunk for value in row])
        position += n


def _max_insert_rows() -> int:
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            return max(1, probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 10)
    except (AttributeError, sqlite3.Error):  # Python < 3.11: assume the old limit of 999
        return 99


_MAX_INSERT_ROWS = _max_insert_rows()

_SUPERSEDE = (
    "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
    "WHERE province = ? AND kid = ? AND serial = ? AND main_index_id = ? AND revoked_at IS NULL"
)
_BUMP_COUNTER = (
    "INSERT INTO serial_counters (province, kid, next_serial) VALUES (?, ?, ?) "
    "ON CONFLICT (province, kid) DO UPDATE SET next_serial = max(next_serial, excluded.next_serial)"
)
_IDENTIFIER_COLUMNS = "blind_index, doc_type, sealed, main_index_id, is_primary, created_at"


def _time(value: int | None) -> dt.datetime | None:
    return None if value is None else from_epoch(value)


def _code_record(row: tuple) -> CodeRecord:
    (province, kid, serial, mid, iat, exp, text, caller, key, fingerprint, revoked_at, reason) = row
    return CodeRecord(
        province=province,
        kid=kid,
        serial=serial,
        main_index_id=mid,
        issued_at=from_epoch(iat),
        expires_at=from_epoch(exp),
        text=text,
        caller=caller,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        revoked_at=_time(revoked_at),
        revocation_reason=None if reason is None else RevocationReason(reason),
    )


def _identifier_record(row: tuple) -> IdentifierRecord:
    blind_index, doc_type, sealed, mid, primary, created_at = row
    return IdentifierRecord(blind_index, doc_type, sealed, mid, bool(primary), from_epoch(created_at))


def _resident_record(row: tuple) -> ResidentRecord:
    mid, created_at, merged_into, merged_at = row
    return ResidentRecord(mid, from_epoch(created_at), merged_into, _time(merged_at))


def _code_params(record: CodeRecord) -> tuple:
    return (
        record.province,
        record.kid,
        record.serial,
        record.main_index_id,
        to_epoch(record.issued_at),
        to_epoch(record.expires_at),
        record.text,
        record.caller,
        record.idempotency_key,
        record.request_fingerprint,
    )


def _integrity_error(exc: sqlite3.IntegrityError) -> IssuerError:
    """Name a failed constraint of a code insertion (SQLite's messages name the columns)."""
    message = str(exc)
    if "codes.caller" in message and "codes.idempotency_key" in message:
        return DuplicateIdempotencyKey("idempotency key was already used by this caller")
    if "codes.serial" in message:
        return DuplicateSerial("serial is already taken for this signing key")
    if "FOREIGN KEY" in message:
        return ResidentNotFound("resident not found")
    return WriteFailed("code could not be stored (constraint)")


# --------------------------------------------------------------------------- the writer's queue items




# --------------------------------------------------------------------------- the store


class SQLiteStore(GroupCommitWriter, Store):
    """The :class:`~issuer.store.base.Store` on one SQLite file.

    ``batch_cap`` bounds the codes one transaction commits; ``busy_timeout_ms``
    how long a connection waits on a lock held elsewhere;
    ``resident_cache_size`` how many unmerged entries :meth:`known_active`
    remembers; ``max_queued`` how many writes may wait for the writer before
    new ones fail with :class:`~issuer.store.base.StoreOverloaded`
    (backpressure instead of unbounded memory and latency). Opening creates or
    migrates the schema.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_cap: int = DEFAULT_BATCH_CAP,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        resident_cache_size: int = DEFAULT_RESIDENT_CACHE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        commit_linger: float = DEFAULT_COMMIT_LINGER,
    ) -> None:
        self._init_writer(batch_cap=batch_cap, max_queued=max_queued, resident_cache_size=resident_cache_size,
                          commit_linger=commit_linger)
        self.path = pathlib.Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._readers: ReaderPool[sqlite3.Connection] = ReaderPool(lambda: self._connect(writer=False), _close_quietly)

        self._lease = _take_lease(self.path)
        try:
            _make_private(self.path)
            conn = self._connect(writer=True)
            try:
                mode = self._enter_wal(conn)
                if mode.lower() != "wal":
                    raise WriteFailed(f"cannot put the database in WAL mode (got {mode})")
                self.schema_version = _migrate(conn)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            os.close(self._lease)
            raise
        self._conn = conn
        self._start_writer(f"sqlite-writer:{self.path.name}")

    # -- connections

    def _enter_wal(self, conn: sqlite3.Connection) -> str:
        # Switching a new file to WAL takes an exclusive lock and SQLite does not run the
        # busy handler for it: several processes (or threads) opening a fresh database at
        # once would see "database is locked". Retry within the busy timeout instead.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the code says BEGIN and COMMIT itself.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_timeout_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        if writer:
            conn.execute("PRAGMA synchronous = FULL")
        else:
            conn.execute("PRAGMA query_only = ON")
        return conn

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        conn = self._readers.take()
        usable = True
        try:
            yield conn
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    usable = False
            self._readers.give_back(conn, usable=usable)

    # -- reads

    def get_resident(self, main_index_id: str) -> ResidentRecord | None:
        with self._reader() as conn:
            row = conn.execute(
                "SELECT main_index_id, created_at, merged_into, merged_at FROM residents WHERE main_index_id = ?",
                (main_index_id,),
            ).fetchone()
        if row is None:
            return None
        record = _resident_record(row)
        if record.active and self._cache_cap:
            self._remember_active(main_index_id)
        return record

    def find_identifier(self, blind_index: bytes) -> IdentifierRecord | None:
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE blind_index = ?", (blind_index,)
            ).fetchone()
        return None if row is None else _identifier_record(row)

    def identifiers_of(self, main_index_id: str) -> list[IdentifierRecord]:
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE main_index_id = ? "
                "ORDER BY is_primary DESC, created_at, blind_index",
                (main_index_id,),
            ).fetchall()
        return [_identifier_record(row) for row in rows]

    def get_code(self, ref: CodeRef) -> CodeRecord | None:
        if not 0 <= ref.serial <= _MAX_SQL_INTEGER:  # refs may name serials up to 2**64 - 1: no such row
            return None
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM codes WHERE province = ? AND kid = ? AND serial = ?",
                (ref.province, ref.kid, ref.serial),
            ).fetchone()
        return None if row is None else _code_record(row)

    def find_code_by_idempotency_key(self, caller: str, idempotency_key: str) -> CodeRecord | None:
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM codes WHERE caller = ? AND idempotency_key = ?",
                (caller, idempotency_key),
            ).fetchone()
        return None if row is None else _code_record(row)

    def codes_of(self, main_index_id: str) -> list[CodeRecord]:
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM codes WHERE main_index_id = ? ORDER BY issued_at, id",
                (main_index_id,),
            ).fetchall()
        return [_code_record(row) for row in rows]

    def next_serial(self, province: str, kid: bytes) -> int:
        with self._reader() as conn:
            conn.execute("BEGIN")  # one snapshot for both
            (counted,) = conn.execute(
                "SELECT coalesce(max(next_serial), 0) FROM serial_counters WHERE province = ? AND kid = ?",
                (province, kid),
            ).fetchone()
            (highest,) = conn.execute(
                "SELECT coalesce(max(serial) + 1, 0) FROM codes WHERE province = ? AND kid = ?", (province, kid)
            ).fetchone()
            conn.execute("COMMIT")
        return max(counted, highest)

    # -- writes (queued: see issuer/store/writer.py)

    def create_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        mid = resident.main_index_id
        rows = [
            (i.blind_index, i.doc_type, i.sealed, mid, int(i.primary), to_epoch(i.created_at)) for i in identifiers
        ]
        created = to_epoch(resident.created_at)

        def run(conn: sqlite3.Connection) -> None:
            for position, row in enumerate(rows):
                if conn.execute("SELECT 1 FROM identifiers WHERE blind_index = ?", (row[0],)).fetchone():
                    raise DuplicateIdentifier(position)
            conn.execute("INSERT INTO residents (main_index_id, created_at) VALUES (?, ?)", (mid, created))
            conn.executemany(f"INSERT INTO identifiers ({_IDENTIFIER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)

        return self._operation(run, lambda _: self._remember_active(mid) if self._cache_cap else None)

    def add_identifier(self, identifier: IdentifierRecord) -> Future[bool]:
        i = identifier
        row = (i.blind_index, i.doc_type, i.sealed, i.main_index_id, int(i.primary), to_epoch(i.created_at))

        def run(conn: sqlite3.Connection) -> bool:
            _require_active(conn, i.main_index_id)
            linked = conn.execute(
                "SELECT main_index_id FROM identifiers WHERE blind_index = ?", (i.blind_index,)
            ).fetchone()
            if linked is not None:
                if linked[0] == i.main_index_id:
                    return False
                raise DuplicateIdentifier(0)
            conn.execute(f"INSERT INTO identifiers ({_IDENTIFIER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", row)
            return True

        return self._operation(run)

    def merge_residents(self, *, survivor: str, merged: str, at: dt.datetime) -> Future[int]:
        now = to_epoch(at)

        def run(conn: sqlite3.Connection) -> int:
            if survivor == merged:
                raise Conflict("cannot merge a resident into itself")
            _require_active(conn, survivor, "survivor")
            _require_active(conn, merged, "merged resident")
            # (1) the survivor keeps every document; it keeps its own primary
            conn.execute(
                "UPDATE identifiers SET main_index_id = ?, is_primary = 0 WHERE main_index_id = ?", (survivor, merged)
            )
            # (2) the merged entry stays, read-only, pointing at the survivor
            conn.execute(
                "UPDATE residents SET merged_into = ?, merged_at = ? WHERE main_index_id = ?", (survivor, now, merged)
            )
            # (3) its live codes are revoked in the same transaction
            return conn.execute(
                "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                "WHERE main_index_id = ? AND revoked_at IS NULL AND expires_at > ?",
                (now, RevocationReason.MERGED.value, merged, now),
            ).rowcount

        return self._operation(run, lambda _: self._forget_active(merged))

    def revoke_code(self, ref: CodeRef, *, reason: RevocationReason, at: dt.datetime) -> Future[CodeRecord | None]:
        reason_value = RevocationReason(reason).value
        now = to_epoch(at)
        key = (ref.province, ref.kid, ref.serial)

        def run(conn: sqlite3.Connection) -> CodeRecord | None:
            if not 0 <= ref.serial <= _MAX_SQL_INTEGER:
                return None
            conn.execute(
                "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                "WHERE province = ? AND kid = ? AND serial = ? AND revoked_at IS NULL",
                (now, reason_value) + key,
            )
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM codes WHERE province = ? AND kid = ? AND serial = ?", key
            ).fetchone()
            return None if row is None else _code_record(row)

        return self._operation(run)

    def revoke_resident_codes(self, main_index_id: str, *, reason: RevocationReason, at: dt.datetime) -> Future[int]:
        reason_value = RevocationReason(reason).value
        now = to_epoch(at)

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                "WHERE main_index_id = ? AND revoked_at IS NULL AND expires_at > ?",
                (now, reason_value, main_index_id, now),
            ).rowcount

        return self._operation(run)

    # -- the writer thread

    _bump_counter_sql = _BUMP_COUNTER
    _row_errors = (sqlite3.Error, OverflowError)

    def _params_of(self, record: CodeRecord) -> tuple:
        return _code_params(record)

    def _begin_codes(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def _restart(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")

    def _commit_tx(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _rollback_tx(self, conn: sqlite3.Connection | None) -> None:
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _apply_operation(self, op: Operation) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = op.run(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except IssuerError as exc:
            op.future.set_exception(exc)
            return
        except sqlite3.Error as exc:
            op.future.set_exception(WriteFailed(f"write failed: {exc.__class__.__name__}"))
            return
        except BaseException as exc:  # a bug in an operation must not kill the writer
            op.future.set_exception(exc)
            return
        self._stats[0] += 1
        if op.after_commit is not None:
            op.after_commit(result)
        op.future.set_result(result)

    def _apply_codes_fast(self, conn: sqlite3.Connection, batch: list[CodeItem]) -> list[IssuerError | None]:
        """All plain insertions in one statement; renewals one by one. Raises on any row's failure."""
        plain = [item.params for item in batch if item.supersedes is None]
        if plain:
            _insert_codes(conn, plain)
        if len(plain) == len(batch):
            return [None] * len(batch)
        return [None if item.supersedes is None else self._apply_renewal(conn, item) for item in batch]

    def _apply_codes_one_by_one(self, conn: sqlite3.Connection, batch: list[CodeItem]) -> list[IssuerError | None]:
        """One statement per row in one transaction: a failing row is undone alone (statement rollback)."""
        outcomes: list[IssuerError | None] = []
        for item in batch:
            if item.supersedes is not None:
                outcomes.append(self._apply_renewal(conn, item))
                continue
            try:
                conn.execute(_INSERT_CODE, item.params)
            except sqlite3.IntegrityError as exc:
                outcomes.append(_integrity_error(exc))
                continue
            except OverflowError:  # a serial past SQLite's 64-bit signed integers: this row only
                outcomes.append(WriteFailed("code could not be stored"))
                continue
            except sqlite3.Error:
                if not conn.in_transaction:  # the error took the transaction with it: fail the batch
                    raise
                outcomes.append(WriteFailed("code could not be stored"))
                continue
            outcomes.append(None)
        return outcomes

    @staticmethod
    def _apply_renewal(conn: sqlite3.Connection, item: CodeItem) -> IssuerError | None:
        """Insert the new code and supersede the old one, both or neither (a savepoint)."""
        old = item.supersedes
        record = item.record
        conn.execute("SAVEPOINT renewal")
        try:
            try:
                conn.execute(_INSERT_CODE, item.params)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO renewal")
                return _integrity_error(exc)
            updated = 0
            if 0 <= old.serial <= _MAX_SQL_INTEGER:
                updated = conn.execute(
                    _SUPERSEDE,
                    (item.params[4], RevocationReason.SUPERSEDED.value, old.province, old.kid, old.serial,
                     record.main_index_id),
                ).rowcount
            if updated != 1:
                conn.execute("ROLLBACK TO renewal")
                return CodeNotRenewable("code to renew is unknown, revoked, or of another resident")
            return None
        finally:
            conn.execute("RELEASE renewal")

    # -- lifecycle

    def close(self) -> None:
        if not self._stop_writer():
            return
        self._conn.close()
        self._readers.close()
        os.close(self._lease)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path.name}>"


def lease_path(database: pathlib.Path) -> pathlib.Path:
    """The file whose exclusive ``flock`` is an SQLite database's writer lease: ``<database>-issuer.lock``."""
    return database.with_name(database.name + "-issuer.lock")


def _take_lease(database: pathlib.Path) -> int:
    """Hold the writer lease of ``database`` (an exclusive ``flock``); return its descriptor.

    Raises :class:`StoreInUse` when another open store holds it, in this
    process or another. The kernel drops the lock with the last descriptor,
    so a killed issuer leaves no stale lease (``O_CLOEXEC``: no child process
    inherits it). A lock file, not the database: ``flock`` on the database
    itself could meet SQLite's own locks where a filesystem emulates one with
    the other.
    """
    path = lease_path(database)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(f"another issuer holds the database {database.name} (lock file {path.name})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


#: The files SQLite keeps next to a database (``-journal`` only while switching a new file to WAL).
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _make_private(database: pathlib.Path) -> None:
    """Make the database and the files SQLite keeps beside it owner-only (0600), before SQLite opens it.

    SQLite creates a database with mode ``0644 & ~umask`` (0644 under the usual
    umask 022: any local user could read every main index ID and sealed value)
    and gives ``-wal``, ``-shm`` and ``-journal`` the database file's own mode
    (its unix VFS copies it, umask notwithstanding; for ``-wal`` and ``-shm``
    checked under umask 022 in ``tests/integration/test_review_issuance.py``).
    So the database file is created 0600 here before SQLite sees it (an empty
    file is an empty database), and an existing one, or side files left wider
    by an older version or another program, are tightened. Runs under the
    writer lease, so no other store is creating them meanwhile.
    """
    create_private_file(database)
    for suffix in _SIDE_FILES:
        ensure_private_file(database.with_name(database.name + suffix))


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def _require_active(conn: sqlite3.Connection, main_index_id: str, what: str = "resident") -> None:
    row = conn.execute("SELECT merged_into FROM residents WHERE main_index_id = ?", (main_index_id,)).fetchone()
    if row is None:
        raise ResidentNotFound(f"{what} not found")
    if row[0] is not None:
        raise ResidentMerged(f"{what} was merged into another entry")
