"""The national index's store: one SQL implementation, an SQLite and a PostgreSQL dialect.

Tables (``national.schema``-style migrations below, :data:`MIGRATIONS`):

``identities``
    one row per main index ID ever claimed: ``main_index_id`` (16 bytes, the
    Base32 ID decoded), ``home_province`` (two digits), ``state`` (1 active,
    3 merged: the ``IdentityState`` numbers; a move changes ``home_province``
    and keeps the identity active, the old province's "moved" view is the
    ``transfers`` row), ``survivor`` (the identity a merged one went into),
    ``registered_at`` (when the home province acknowledged the registration:
    the merge rule's first key) and ``created_at``, whole seconds UTC.
``documents``
    ``blind_index`` (32 bytes, :mod:`national.blind_index`) -> ``main_index_id``.
    The primary key on the blind index is what makes "first claim wins" atomic.
``transfers``
    every move: identity, from, to, the consent's method, reference and time.
``events`` / ``event_counters``
    per province, an increasing ``sequence`` (taken from the province's
    counter row under its row lock, so two writers never share one).

No table holds a document number or an unkeyed hash of one.

Concurrency: every write is one transaction (:meth:`NationalStore.transaction`); a read of one
statement runs without a transaction block (:meth:`NationalStore.read`).
SQLite: one connection, a lock, ``BEGIN IMMEDIATE``, WAL with ``synchronous=FULL``;
the file and its WAL are owner-only. PostgreSQL: a small pool of connections at
READ COMMITTED; ``INSERT ... ON CONFLICT DO NOTHING`` on the primary keys decides
races (a second claimant waits for the first to commit, then sees its row), rows
read to be changed are locked with ``FOR UPDATE``; a deadlock or serialization
failure is retried (:data:`RETRIES`).

PostgreSQL partitions ``identities`` by HASH (``main_index_id``) and
``documents`` by HASH (``blind_index``) into ``partitions`` partitions (16 by
default, fixed when the schema is created; see docs/national.md for 1.4 billion).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import queue
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

from healthcode.model import MainIndexId, main_index_id_from_bytes
from shellkit.files import create_private_file, ensure_private_file

from .errors import Aborted, NationalError

__all__ = [
    "NationalStore",
    "Tx",
    "IdentityRow",
    "EventRow",
    "TransferRow",
    "open_national_store",
    "is_postgres_url",
    "mid_bytes",
    "mid_text",
    "ACTIVE",
    "MERGED",
    "RETRIES",
    "MIGRATIONS",
    "POSTGRES_SESSION_OPTIONS",
]

ACTIVE = 1
MERGED = 3
RETRIES = 5
T = TypeVar("T")
#: How the store's PostgreSQL sessions start. ``force_generic_plan``: with HASH partitions the default
#: plan cache re-plans every call of a joined lookup (each custom plan prunes at plan time, which costs
#: more than the lookup); the generic plan is planned once per connection and prunes at run time.
POSTGRES_SESSION_OPTIONS = "-c TimeZone=UTC -c plan_cache_mode=force_generic_plan"
# The store's ways into its database (``begin(mode)``): one read, one all-or-none write, a transaction.
READ, STATEMENT, TRANSACTION = "read", "statement", "transaction"


class StoreUnavailable(NationalError):
    """The database cannot be reached (-> UNAVAILABLE)."""

    reason = "store_unavailable"


def mid_bytes(mid: str) -> bytes:
    """The 16 bytes behind a (parsed) main index ID."""
    return base64.b32decode(mid + "======")


def mid_text(raw: bytes) -> MainIndexId:
    return main_index_id_from_bytes(bytes(raw))


def is_postgres_url(database: object) -> bool:
    return isinstance(database, str) and database.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class IdentityRow:
    main_index_id: MainIndexId
    home_province: str
    state: int
    survivor: MainIndexId | None
    registered_at: int
    created_at: int


@dataclass(frozen=True)
class EventRow:
    province: str
    sequence: int
    kind: int  # EventKind numbers: 1 MERGED_AWAY, 2 ABSORBED, 3 MOVED_AWAY
    main_index_id: MainIndexId
    other_main_index_id: MainIndexId | None
    other_province: str
    recorded_at: int


@dataclass(frozen=True)
class TransferRow:
    main_index_id: MainIndexId
    from_province: str
    to_province: str
    consent_method: int
    consent_reference: str
    consent_given_at: int
    recorded_at: int


def _ddl(blob: str, partitions: int | None) -> list[str]:
    """The first migration. ``partitions``: PostgreSQL HASH partitions (None on SQLite)."""
    strict = "" if partitions else " STRICT"
    int64 = "BIGINT" if partitions else "INTEGER"
    small = "SMALLINT" if partitions else "INTEGER"

    def by_hash(column: str) -> str:
        return f" PARTITION BY HASH ({column})" if partitions else ""

    statements = [
        f"""CREATE TABLE identities (
            main_index_id {blob} NOT NULL PRIMARY KEY,
            home_province TEXT NOT NULL,
            state {small} NOT NULL,
            survivor {blob},
            registered_at {int64} NOT NULL,
            created_at {int64} NOT NULL){by_hash("main_index_id")}{strict}""",
        f"""CREATE TABLE documents (
            blind_index {blob} NOT NULL PRIMARY KEY,
            main_index_id {blob} NOT NULL){by_hash("blind_index")}{strict}""",
        "CREATE INDEX documents_by_identity ON documents (main_index_id)",
        f"""CREATE TABLE transfers (
            main_index_id {blob} NOT NULL,
            recorded_at {int64} NOT NULL,
            from_province TEXT NOT NULL,
            to_province TEXT NOT NULL,
            consent_method {small} NOT NULL,
            consent_reference TEXT NOT NULL,
            consent_given_at {int64} NOT NULL,
            PRIMARY KEY (main_index_id, recorded_at, to_province)){strict}""",
        f"""CREATE TABLE event_counters (
            province TEXT NOT NULL PRIMARY KEY,
            last_sequence {int64} NOT NULL){strict}""",
        f"""CREATE TABLE events (
            province TEXT NOT NULL,
            sequence {int64} NOT NULL,
            kind {small} NOT NULL,
            main_index_id {blob} NOT NULL,
            other_main_index_id {blob},
            other_province TEXT NOT NULL,
            recorded_at {int64} NOT NULL,
            PRIMARY KEY (province, sequence)){strict}""",
    ]
    for n in range(partitions or 0):
        for table in ("identities", "documents"):
            statements.append(f"CREATE TABLE {table}_p{n:03d} PARTITION OF {table} "
                              f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {n})")
    return statements


#: Named migrations, applied in order; ``schema_version`` holds how many ran.
MIGRATIONS: Sequence[tuple[str, Callable[[str, int | None], list[str]]]] = (("0001_initial", _ddl),)


class Tx:
    """One transaction's statements: the national index's SQL, written once (``?`` placeholders).

    ``conflict``: the dialect's unique-violation error types (PostgreSQL's fast claim relies on them).
    """

    def __init__(self, cursor: Any, placeholder: str, for_update: str,
                 conflict: tuple[type[BaseException], ...] = ()) -> None:
        self._cur = cursor
        self._ph = placeholder
        self._for_update = for_update
        self._conflict = conflict

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._ph != "?":
            sql = sql.replace("?", self._ph)
        self._cur.execute(sql.replace(" FOR UPDATE", self._for_update), tuple(params))
        return self._cur

    def identity(self, mid: str, *, lock: bool = False) -> IdentityRow | None:
        row = self._exec("SELECT main_index_id, home_province, state, survivor, registered_at, created_at "
                         "FROM identities WHERE main_index_id = ?" + (" FOR UPDATE" if lock else ""),
                         (mid_bytes(mid),)).fetchone()
        if row is None:
            return None
        return IdentityRow(mid_text(row[0]), row[1], int(row[2]), mid_text(row[3]) if row[3] is not None else None,
                           int(row[4]), int(row[5]))

    def identity_by_document(self, blind_index: bytes) -> IdentityRow | None:
        """The identity holding ``blind_index`` (one statement: the document joined to its identity)."""
        row = self._exec("SELECT i.main_index_id, i.home_province, i.state, i.survivor, i.registered_at, i.created_at "
                         "FROM documents d JOIN identities i ON i.main_index_id = d.main_index_id "
                         "WHERE d.blind_index = ?", (blind_index,)).fetchone()
        if row is None:
            return None
        return IdentityRow(mid_text(row[0]), row[1], int(row[2]), mid_text(row[3]) if row[3] is not None else None,
                           int(row[4]), int(row[5]))

    def claim_new(self, mid: str, home: str, indexes: Sequence[bytes], *, registered_at: int, now: int) -> bool:
        """The common claim in as few statements as the dialect allows: a new identity with new documents.

        True when the identity and every document were inserted; False when anything existed
        already (then the caller rolls back and takes the full path).

        PostgreSQL: **one statement**, both plain INSERTs in a WITH, meant to run alone in autocommit
        (:meth:`NationalStore.statement`): any existing (or concurrently inserted, once that commits)
        identity or document is a unique violation, which undoes the whole statement, so nothing is
        written and it returns False; all or none, and the first claimant wins. Inside a transaction
        block that violation aborts the transaction, so it must be the block's only statement.
        SQLite (no INSERT inside WITH): one INSERT per table, ``ON CONFLICT DO NOTHING``, in a
        transaction the caller rolls back on False.
        """
        identity_row = (mid_bytes(mid), home, ACTIVE, registered_at, now)
        doc_rows = [(bi, mid_bytes(mid)) for bi in indexes]
        doc_values = ", ".join(["(?, ?)"] * len(doc_rows))
        insert_identity = ("INSERT INTO identities (main_index_id, home_province, state, survivor, registered_at, "
                           "created_at) VALUES (?, ?, ?, NULL, ?, ?)")
        insert_documents = f"INSERT INTO documents (blind_index, main_index_id) VALUES {doc_values}"
        flat = [v for row in doc_rows for v in row]
        if self._ph != "?":  # PostgreSQL: one round trip, atomic on its own
            try:
                cur = self._exec(f"WITH i AS ({insert_identity}) {insert_documents}", (*identity_row, *flat))
            except self._conflict:
                return False
            return bool(cur.rowcount == len(doc_rows))
        if self._exec(insert_identity + " ON CONFLICT DO NOTHING", identity_row).rowcount != 1:
            return False
        return bool(self._exec(insert_documents + " ON CONFLICT DO NOTHING", flat).rowcount == len(doc_rows))

    def insert_identity(self, mid: str, home: str, *, registered_at: int, now: int) -> bool:
        """True if the row was created; False when the ID exists already (it is left as it is)."""
        cur = self._exec("INSERT INTO identities (main_index_id, home_province, state, survivor, registered_at, "
                         "created_at) VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING",
                         (mid_bytes(mid), home, ACTIVE, registered_at, now))
        return bool(cur.rowcount == 1)

    def holder(self, blind_index: bytes) -> MainIndexId | None:
        row = self._exec("SELECT main_index_id FROM documents WHERE blind_index = ?", (blind_index,)).fetchone()
        return None if row is None else mid_text(row[0])

    def insert_document(self, blind_index: bytes, mid: str) -> bool:
        """True if inserted; False when the blind index is held already (by anyone)."""
        cur = self._exec("INSERT INTO documents (blind_index, main_index_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                         (blind_index, mid_bytes(mid)))
        return bool(cur.rowcount == 1)

    def document_count(self, mid: str) -> int:
        row = self._exec("SELECT count(*) FROM documents WHERE main_index_id = ?", (mid_bytes(mid),)).fetchone()
        return int(row[0])

    def repoint_documents(self, loser: str, survivor: str) -> int:
        return int(self._exec("UPDATE documents SET main_index_id = ? WHERE main_index_id = ?",
                              (mid_bytes(survivor), mid_bytes(loser))).rowcount)

    def mark_merged(self, loser: str, survivor: str) -> None:
        self._exec("UPDATE identities SET state = ?, survivor = ? WHERE main_index_id = ?",
                   (MERGED, mid_bytes(survivor), mid_bytes(loser)))

    def set_home(self, mid: str, *, old: str, new: str) -> bool:
        """Move an active identity from ``old`` to ``new``; False when it is no longer active in ``old``."""
        cur = self._exec("UPDATE identities SET home_province = ? WHERE main_index_id = ? AND home_province = ? "
                         "AND state = ?", (new, mid_bytes(mid), old, ACTIVE))
        return bool(cur.rowcount == 1)

    def record_transfer(self, row: TransferRow) -> None:
        self._exec("INSERT INTO transfers (main_index_id, recorded_at, from_province, to_province, consent_method, "
                   "consent_reference, consent_given_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                   (mid_bytes(row.main_index_id), row.recorded_at, row.from_province, row.to_province,
                    row.consent_method, row.consent_reference, row.consent_given_at))

    def last_transfer(self, mid: str) -> TransferRow | None:
        row = self._exec("SELECT from_province, to_province, consent_method, consent_reference, consent_given_at, "
                         "recorded_at FROM transfers WHERE main_index_id = ? ORDER BY recorded_at DESC LIMIT 1",
                         (mid_bytes(mid),)).fetchone()
        if row is None:
            return None
        return TransferRow(MainIndexId(mid), row[0], row[1], int(row[2]), row[3], int(row[4]), int(row[5]))

    def append_event(self, province: str, kind: int, mid: str, other: str | None, other_province: str,
                     now: int) -> int:
        """Add an event for ``province``; returns its sequence (the province's counter, row-locked)."""
        self._exec("INSERT INTO event_counters (province, last_sequence) VALUES (?, 0) ON CONFLICT DO NOTHING",
                   (province,))
        row = self._exec("UPDATE event_counters SET last_sequence = last_sequence + 1 WHERE province = ? "
                         "RETURNING last_sequence", (province,)).fetchone()
        sequence = int(row[0])
        self._exec("INSERT INTO events (province, sequence, kind, main_index_id, other_main_index_id, "
                   "other_province, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (province, sequence, kind, mid_bytes(mid), mid_bytes(other) if other else None, other_province,
                    now))
        return sequence

    def events_after(self, province: str, after: int, limit: int) -> list[EventRow]:
        rows = self._exec("SELECT sequence, kind, main_index_id, other_main_index_id, other_province, recorded_at "
                          "FROM events WHERE province = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                          (province, after, limit)).fetchall()
        return [EventRow(province, int(r[0]), int(r[1]), mid_text(r[2]), mid_text(r[3]) if r[3] is not None else None,
                         r[4], int(r[5])) for r in rows]


class NationalStore:
    """The national index's database. :meth:`transaction` runs ``work(tx)`` atomically (retried on races)."""

    def __init__(self, begin: Callable[[str], contextlib.AbstractContextManager[Tx]], close: Callable[[], None],
                 retryable: tuple[type[BaseException], ...], unavailable: tuple[type[BaseException], ...],
                 description: str) -> None:
        self._begin = begin
        self._close = close
        self._retryable = retryable
        self._unavailable = unavailable
        self.description = description

    def transaction(self, work: Callable[[Tx], T]) -> T:
        """``work(tx)`` in one transaction: committed when it returns, rolled back when it raises.

        A deadlock or serialization failure reruns ``work`` (up to :data:`RETRIES` times), so it must
        not have effects outside the transaction; after that, :class:`~national.errors.Aborted`.
        """
        return self._retried(TRANSACTION, work)

    def read(self, work: Callable[[Tx], T]) -> T:
        """``work(tx)`` for **one** read statement, without a transaction block (PostgreSQL autocommit:
        the statement is its own snapshot; no BEGIN/COMMIT round trips). Use :meth:`transaction` for more."""
        try:
            with self._begin(READ) as tx:
                return work(tx)
        except self._unavailable:
            raise StoreUnavailable("the national database cannot be reached") from None

    def statement(self, work: Callable[[Tx], T]) -> T:
        """``work(tx)`` for **one** writing statement that is all-or-none on its own: PostgreSQL runs it
        in autocommit (one round trip instead of BEGIN, it, COMMIT); SQLite, whose writes here take
        more statements, in a transaction as :meth:`transaction`. Retried as :meth:`transaction`."""
        return self._retried(STATEMENT, work)

    def _retried(self, mode: str, work: Callable[[Tx], T]) -> T:
        for _attempt in range(RETRIES):
            try:
                with self._begin(mode) as tx:
                    return work(tx)
            except self._retryable:
                continue
            except self._unavailable:
                raise StoreUnavailable("the national database cannot be reached") from None
        raise Aborted("the national index is busy with the same identities; retry")

    def close(self) -> None:
        self._close()


# --------------------------------------------------------------------------- SQLite


def _migrate(cursor: Any, placeholder: str, blob: str, partitions: int | None) -> None:
    cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    cursor.execute("SELECT version FROM schema_version")
    row = cursor.fetchone()
    done = int(row[0]) if row else 0
    if row is None:
        cursor.execute("INSERT INTO schema_version (version) VALUES (0)")
    for _name, ddl in MIGRATIONS[done:]:
        for statement in ddl(blob, partitions):
            cursor.execute(statement)
    cursor.execute(f"UPDATE schema_version SET version = {placeholder}", (len(MIGRATIONS),))


def open_sqlite_store(path: os.PathLike[str] | str) -> NationalStore:
    """The store in the SQLite file ``path`` (created owner-only, WAL, synchronous=FULL)."""
    path = pathlib.Path(path)
    create_private_file(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    lock = threading.Lock()
    with lock:
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            _migrate(cur, "?", "BLOB", None)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    for suffix in ("-wal", "-shm"):
        ensure_private_file(f"{path}{suffix}")

    @contextlib.contextmanager
    def begin(mode: str) -> Iterator[Tx]:
        with lock:
            cur = conn.cursor()
            if mode == READ:  # one SELECT in autocommit
                yield Tx(cur, "?", "")
                return
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(cur, "?", "")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close() -> None:
        with lock:
            conn.close()

    return NationalStore(begin, close, retryable=(), unavailable=(), description=f"sqlite:{path.name}")


# --------------------------------------------------------------------------- PostgreSQL


def open_postgres_store(url: str, *, partitions: int = 16, pool_size: int = 8) -> NationalStore:
    """The store in the PostgreSQL database ``url`` (``postgresql://...[?schema=NAME]``).

    ``partitions`` applies when the schema is created; an existing schema keeps its own.
    """
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql as pg_sql

    from issuer.store.postgres import split_postgres_url

    if not 1 <= partitions <= 1024:
        raise ValueError("partitions must be 1 to 1024")
    conninfo, schema = split_postgres_url(url)

    def connect() -> Any:
        conn = psycopg.connect(conninfo, connect_timeout=10, options=POSTGRES_SESSION_OPTIONS, autocommit=True)
        if schema is not None:
            conn.execute(pg_sql.SQL("SET search_path TO {}").format(pg_sql.Identifier(schema)))
        return conn

    first = connect()
    try:
        with first.transaction():
            if schema is not None:
                first.execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pg_sql.Identifier(schema)))
            first.execute("SELECT pg_advisory_xact_lock(18755, hashtext(current_schema()))")  # one migrator
            _migrate(first.cursor(), "%s", "BYTEA", partitions)
    except BaseException:
        first.close()
        raise
    conflict: tuple[type[BaseException], ...] = (pg_errors.UniqueViolation,)
    idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
    idle.put(first)
    slots = threading.BoundedSemaphore(pool_size)
    closed = threading.Event()

    @contextlib.contextmanager
    def begin(mode: str) -> Iterator[Tx]:
        if closed.is_set():
            raise StoreUnavailableClosed()
        with slots:
            try:
                conn = idle.get_nowait()
            except queue.Empty:
                conn = connect()
            if conn.closed:
                conn = connect()
            ok = False
            try:
                if mode != TRANSACTION:  # autocommit: one statement, its own snapshot, atomic on its own
                    yield Tx(conn.cursor(), "%s", "", conflict)
                else:
                    with conn.transaction():
                        yield Tx(conn.cursor(), "%s", " FOR UPDATE", conflict)
                ok = True
            finally:
                if ok or not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    idle.put(conn)
                else:
                    conn.close()

    def close() -> None:
        closed.set()
        while True:
            try:
                idle.get_nowait().close()
            except queue.Empty:
                return

    return NationalStore(begin, close,
                         retryable=(pg_errors.DeadlockDetected, pg_errors.SerializationFailure),
                         unavailable=(psycopg.OperationalError,),
                         description=f"postgresql schema {schema or '(default)'}")


class StoreUnavailableClosed(StoreUnavailable):
    """The store was closed (shutting down)."""

    reason = "store_closed"

    def __init__(self) -> None:
        super().__init__("the national store is closed")


def open_national_store(database: str | os.PathLike[str], *, partitions: int = 16) -> NationalStore:
    """An SQLite file path, or a ``postgresql://`` URL (``?schema=NAME`` picks the schema)."""
    if is_postgres_url(database):
        return open_postgres_store(str(database), partitions=partitions)
    return open_sqlite_store(database)
