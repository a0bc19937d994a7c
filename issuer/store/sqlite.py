"""The SQLite dialect and :class:`SQLiteStore`: one file, WAL, full fsync, a lock-file lease.

The store itself (every operation, the migrations, the group-commit writer)
is :mod:`issuer.store.sql`; this module is what SQLite does its own way.

Writes
    One writer connection (``BEGIN IMMEDIATE``); a batch's row-by-row retry
    runs each row under a savepoint, as on PostgreSQL. Plain code insertions
    go in a few multi-row INSERTs (:func:`_insert_codes`).

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
stores (:class:`SQLiteRevocationSource`, an operator's ``sqlite3`` shell) need
no lease.

Privacy: the file holds main index IDs, blind indexes and sealed values, never
a document number (see :mod:`issuer.privacy`); the WAL holds the same. The
database, its ``-wal`` and ``-shm`` are owner-only (``0600``) whatever the
umask (:func:`_make_private`); so is the lease file.

Schema: :mod:`issuer.store.schema` in STRICT tables (``PRAGMA user_version``
counts the migrations applied). Times are whole seconds since the Unix epoch
(UTC); booleans are 0 or 1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import pathlib
import sqlite3
import time
from typing import Callable, Iterator, Mapping, TypeVar

from healthcode.model import from_epoch, to_epoch
from shellkit.files import create_private_file, ensure_private_file

from .base import DEFAULT_BATCH_CAP, DEFAULT_MAX_QUEUED, DEFAULT_RESIDENT_CACHE, StoreInUse, WriteFailed
from .pool import ReaderPool
from .sql import INSERT_CODE, Refusal, SQLRevocationSource, SQLStore
from .writer import DEFAULT_COMMIT_LINGER

__all__ = ["SQLiteStore", "SQLiteDialect", "SQLiteRevocationSource", "lease_path", "DEFAULT_BUSY_TIMEOUT_MS"]

DEFAULT_BUSY_TIMEOUT_MS = 5000

T = TypeVar("T")

_INSERT_CODE_VALUES = INSERT_CODE.partition(" VALUES ")[0] + " VALUES "
_CODE_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: Rows per multi-row INSERT: powers of two, so a batch takes at most a few
#: statements and the statement cache holds at most these few shapes.
_INSERT_CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)
_INSERT_CODES_SQL = {n: _INSERT_CODE_VALUES + ", ".join([_CODE_PLACEHOLDERS] * n) for n in _INSERT_CHUNKS}


def _max_insert_rows() -> int:
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            return max(1, probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 11)
    except (AttributeError, sqlite3.Error):  # Python < 3.11: assume the old limit of 999
        return 99


_MAX_INSERT_ROWS = _max_insert_rows()


def _insert_codes(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Insert ``rows`` (code params) with a few multi-row INSERTs; raises like executemany would.

    One statement step for many rows instead of one per row: ``executemany``
    releases and retakes the GIL around every row's step, and each retake
    waits for the event loop. (256 rows x 11 columns stays under SQLite's
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


class SQLiteDialect:
    """SQLite for :class:`~issuer.store.sql.SQLStore` (see the module docstring). Opens nothing until :meth:`open`."""

    types: Mapping[str, str] = {
        "text": "TEXT", "bytes": "BLOB", "time": "INTEGER", "bool": "INTEGER", "serial": "INTEGER",
        "id": "INTEGER PRIMARY KEY", "table_options": " STRICT"}
    greatest = "max"
    snapshot_begin = "BEGIN"
    #: Everything a code's insertion can raise that is no bug: a serial past 64 bits is an OverflowError.
    row_errors: tuple[type[BaseException], ...] = (sqlite3.Error, OverflowError)
    driver_error: type[BaseException] = sqlite3.Error

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        self.path = pathlib.Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self.readers: ReaderPool[sqlite3.Connection] = ReaderPool(lambda: self._connect(writer=False),
                                                                 _close_quietly)
        self._lease: int | None = None
        self._conn: sqlite3.Connection | None = None

    # -- adapters

    @staticmethod
    def sql(statement: str) -> str:
        return statement

    @staticmethod
    def time_param(moment: dt.datetime) -> object:
        return to_epoch(moment)

    @staticmethod
    def time_value(stored: int) -> dt.datetime:
        return from_epoch(stored)

    @staticmethod
    def refusal(exc: BaseException) -> Refusal:
        """What refused a code's insertion (SQLite's messages name the columns)."""
        if not isinstance(exc, sqlite3.IntegrityError):
            return "value"  # e.g. a serial past 64-bit integers: this row only
        message = str(exc)
        if "codes.caller" in message and "codes.idempotency_key" in message:
            return "idempotency_key"
        if "codes.serial" in message:
            return "serial"
        if "FOREIGN KEY" in message:
            return "resident"
        return "constraint"

    insert_codes = staticmethod(_insert_codes)

    # -- connections

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

    def _enter_wal(self, conn: sqlite3.Connection) -> str:
        # Switching a new file to WAL takes an exclusive lock and SQLite does not run the
        # busy handler for it: several processes (or threads) opening a fresh database at
        # once would see "database is locked". Retry within the busy timeout instead.
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def open(self) -> sqlite3.Connection:
        lease = _take_lease(self.path)
        try:
            _make_private(self.path)
            conn = self._connect(writer=True)
            try:
                mode = self._enter_wal(conn)
                if mode.lower() != "wal":
                    raise WriteFailed(f"cannot put the database in WAL mode (got {mode})")
            except BaseException:
                conn.close()
                raise
        except BaseException:
            os.close(lease)
            raise
        self._lease, self._conn = lease, conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.readers.close()
        if self._lease is not None:
            os.close(self._lease)
            self._lease = None

    # -- the writer's transactions

    def begin(self) -> sqlite3.Connection:
        conn = self._conn
        assert conn is not None, "the store is not open"
        conn.execute("BEGIN IMMEDIATE")
        return conn

    @staticmethod
    def restart(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def commit(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    @staticmethod
    def rollback(conn: sqlite3.Connection | None) -> None:
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -- migrations

    @contextlib.contextmanager
    def migration_step(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")  # the version is re-read under the write lock
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def schema_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    @staticmethod
    def set_schema_version(conn: sqlite3.Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    @staticmethod
    def execute_ddl(conn: sqlite3.Connection, statement: str) -> None:
        conn.execute(statement)

    # -- reads

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.readers.take()
        usable = True
        try:
            return query(conn)
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    usable = False
            self.readers.give_back(conn, usable=usable)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        # mode=rw: never create an empty database by mistake; query_only: never write.
        uri = self.path.resolve().as_uri() + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self._busy_timeout_ms / 1000)
        try:
            conn.execute("PRAGMA query_only = ON")
            yield conn
        finally:
            conn.close()


class SQLiteStore(SQLStore[sqlite3.Connection]):
    """The :class:`~issuer.store.base.Store` on one SQLite file.

    ``busy_timeout_ms`` is how long a connection waits on a lock held
    elsewhere; the other options are :class:`~issuer.store.sql.SQLStore`'s.
    Opening takes the lease, makes the files owner-only, switches to WAL,
    creates or migrates the schema and starts the writer.
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
        dialect = SQLiteDialect(path, busy_timeout_ms=busy_timeout_ms)
        self.path = dialect.path
        super().__init__(dialect, writer_name=f"sqlite-writer:{dialect.path.name}", batch_cap=batch_cap,
                         resident_cache_size=resident_cache_size, max_queued=max_queued, commit_linger=commit_linger)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path.name}>"


class SQLiteRevocationSource(SQLRevocationSource[sqlite3.Connection]):
    """Reads revoked serials straight from the issuer's SQLite file (a missing file is an error, never created)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        super().__init__(SQLiteDialect(path, busy_timeout_ms=busy_timeout_ms))
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"<SQLiteRevocationSource {self.path.name}>"


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
