"""The PostgreSQL dialect and :class:`PostgresStore`: pooled connections, an advisory-lock lease.

The store itself (every operation, the migrations, the group-commit writer)
is :mod:`issuer.store.sql`; this module is what PostgreSQL does its own way.

Writes
    One writer connection. Plain code insertions go in one
    ``INSERT ... SELECT FROM unnest(...)`` (one statement, one plan, for any
    number of rows). PostgreSQL aborts the whole transaction on an error, so
    the row-by-row retry runs each row under its own ``SAVEPOINT``. Only row
    errors (integrity, data) fall back; a lost connection or a lock timeout
    fails the batch with :class:`~issuer.store.base.WriteFailed`.

    Connections break (a server restart, a failover). One found dead at
    ``BEGIN`` is replaced at once: nothing of the write had been sent. One
    that breaks during a write fails that write with ``WriteFailed`` (its
    fate is unknown if ``COMMIT`` was under way), and the next write
    reconnects.

Reads
    Connections from a small pool (one per thread that reads at once), in
    autocommit with ``default_transaction_read_only``: every read is one
    statement, so one snapshot. A pooled connection the server closed (a
    restart) is replaced once; a database that cannot be reached raises
    :class:`~issuer.errors.Unavailable`.

Durability
    A future resolves after ``COMMIT`` returned with ``synchronous_commit`` on
    (PostgreSQL's default; a session or role default of ``off`` is raised to
    ``on`` for the writer), so the transaction's WAL was flushed. ``fsync =
    off`` on the server voids this; the store logs a warning if it sees it.
    ``lock_timeout`` bounds how long the writer waits for a lock another
    session holds (an operator's ``LOCK TABLE``, a migration).

One writer *process* per province schema, enforced as for SQLite (see
:mod:`issuer.store.sqlite`). The writer's session holds the schema's writer
lease, a session-level advisory lock on (``_WRITER_LEASE_CLASS``,
``hashtext(schema)``): a second store on the same schema fails to open with
:class:`~issuer.store.base.StoreInUse`. The lease ends with the session (the
store closed, the process killed, the connection lost). After a lost
connection the writer takes it again on its new session; if another issuer
took it meanwhile, writes fail rather than race it. (Two schemas whose names
share a ``hashtext`` would exclude each other: a refusal, never a race.)

Where: the tables live in ``schema`` (created if missing; every connection
gets ``search_path`` set to it), or in the server's ``current_schema()`` when
no schema is given. Sessions run with ``TimeZone = UTC``.

Privacy: the tables (and the server's WAL) hold main index IDs, blind indexes
and sealed values, never a document number (see :mod:`issuer.privacy`).

Schema: :mod:`issuer.store.schema` (``schema_version.version`` counts the
migrations applied), with ``timestamptz``, ``bytea``, ``boolean`` and
``bigint`` columns. Times are whole seconds (floored like SQLite's epoch seconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
from typing import Any, Callable, Iterator, Mapping, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from healthcode.model import from_epoch, to_epoch

from ..errors import Unavailable
from .base import DEFAULT_BATCH_CAP, DEFAULT_MAX_QUEUED, DEFAULT_RESIDENT_CACHE, StoreInUse, WriteFailed
from .pool import ReaderPool
from .sql import Refusal, SQLRevocationSource, SQLStore
from .writer import DEFAULT_COMMIT_LINGER

__all__ = [
    "PostgresStore",
    "PostgresDialect",
    "PostgresRevocationSource",
    "split_postgres_url",
    "check_schema_name",
    "DEFAULT_LOCK_TIMEOUT_MS",
]

log = logging.getLogger("issuer.store")

DEFAULT_LOCK_TIMEOUT_MS = 5000
DEFAULT_CONNECT_TIMEOUT = 10
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: pg_advisory_xact_lock(class, hashtext(schema)): serialises migrations of one schema.
_MIGRATION_LOCK_CLASS = 0x4843  # "HC"
#: The writer lease: a session-level advisory lock (this class, hashtext(schema)) held by the writer's connection.
_WRITER_LEASE_CLASS = 0x484C  # "HL"

T = TypeVar("T")

#: One statement, one plan, for any number of rows: the columns as eleven arrays.
_INSERT_CODES = (
    "INSERT INTO codes (province, kid, serial, main_index_id, issued_at, expires_at, text, caller, "
    "idempotency_key, request_fingerprint, channel) SELECT * FROM unnest("
    "%s::text[], %s::bytea[], %s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[], "
    "%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[])"
)


# --------------------------------------------------------------------------- URLs and connections


def split_postgres_url(url: str) -> tuple[str, str | None]:
    """``(conninfo, schema)`` from ``postgresql://...[?schema=NAME&...]``.

    ``schema`` is this store's own query parameter (libpq does not know it), so
    it is taken out; every other parameter is left for libpq exactly as written.
    Raises :class:`ValueError` for a schema that is not a plain lower-case identifier.
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url, None
    kept, schema = [], None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "schema":
            schema = value
        elif part:
            kept.append(part)
    if schema is not None:
        check_schema_name(schema)
    return (base + "?" + "&".join(kept) if kept else base), schema


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain identifier: lower-case letters, digits, ``_`` (at most 63)."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise ValueError("the PostgreSQL schema must be 1 to 63 lower-case letters, digits or _ "
                         "(not starting with a digit or pg_)")
    return schema


def _connect(conninfo: str, *, schema: str | None, settings: dict[str, str],
             connect_timeout: int) -> psycopg.Connection[Any]:
    """An autocommit connection with ``settings`` (and search_path, TimeZone) as startup options."""
    given = conninfo_to_dict(conninfo)
    settings = {"TimeZone": "UTC", **settings}
    if schema is not None:
        settings["search_path"] = schema
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    extra: dict[str, Any] = {"options": f"{given['options']} {options}" if given.get("options") else options}
    if "connect_timeout" not in given:
        extra["connect_timeout"] = connect_timeout
    if "application_name" not in given:
        extra["application_name"] = "healthcode-issuer"
    return psycopg.connect(conninfo, autocommit=True, **extra)


def _describe(conninfo: str, schema: str | None) -> str:
    """host:port/dbname and schema, for messages: never the password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<invalid conninfo>"
    where = f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
    return where + (f" schema={schema}" if schema else "")


@functools.lru_cache(maxsize=256)
def _pyformat(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresDialect:
    """PostgreSQL for :class:`~issuer.store.sql.SQLStore` (see the module docstring). Opens nothing until :meth:`open`.

    ``lock_timeout_ms`` bounds the writer's wait for a lock held by another
    session; ``connect_timeout`` (seconds) applies unless the conninfo sets one.
    """

    types: Mapping[str, str] = {
        "text": "text", "bytes": "bytea", "time": "timestamptz", "bool": "boolean", "serial": "bigint",
        "id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "table_options": ""}
    greatest = "greatest"
    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    #: Errors that belong to one row's values, not to the connection or the transaction.
    row_errors: tuple[type[BaseException], ...] = (psycopg.IntegrityError, psycopg.DataError)
    driver_error: type[BaseException] = psycopg.Error

    def __init__(self, conninfo: str, *, schema: str | None = None,
                 lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.conninfo = conninfo
        self.schema = None if schema is None else check_schema_name(schema)
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._connect_timeout = int(connect_timeout)
        self.readers: ReaderPool[psycopg.Connection[Any]] = ReaderPool(self._new_reader, _close_quietly)
        self._conn: psycopg.Connection[Any] | None = None

    def describe(self) -> str:
        return _describe(self.conninfo, self.schema)

    # -- adapters

    sql = staticmethod(_pyformat)

    @staticmethod
    def time_param(moment: dt.datetime) -> object:
        """``moment`` floored to the second, in UTC (exactly what the SQLite store keeps)."""
        return from_epoch(to_epoch(moment))

    @staticmethod
    def time_value(stored: dt.datetime) -> dt.datetime:
        return stored  # timestamptz, read in a UTC session

    @staticmethod
    def refusal(exc: BaseException) -> Refusal:
        """What refused a code's insertion (PostgreSQL names the failed constraint)."""
        if not isinstance(exc, psycopg.IntegrityError):
            return "value"  # a value PostgreSQL refuses (out of range, NUL in text)
        constraint = exc.diag.constraint_name
        if constraint == "codes_by_idempotency_key":
            return "idempotency_key"
        if constraint == "codes_by_serial":
            return "serial"
        if isinstance(exc, pg_errors.ForeignKeyViolation):
            return "resident"
        return "constraint"

    @staticmethod
    def insert_codes(conn: psycopg.Connection[Any], rows: list[tuple[object, ...]]) -> None:
        conn.execute(_INSERT_CODES, [list(column) for column in zip(*rows, strict=True)])

    # -- connections

    def _connect(self, *, writer: bool) -> psycopg.Connection[Any]:
        settings = ({"lock_timeout": str(self._lock_timeout_ms)} if writer
                    else {"default_transaction_read_only": "on"})
        conn = _connect(self.conninfo, schema=self.schema, settings=settings, connect_timeout=self._connect_timeout)
        if writer:
            try:
                self._check_durability(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    @staticmethod
    def _check_durability(conn: psycopg.Connection[Any]) -> None:
        # 'local', 'remote_write', 'on' and 'remote_apply' all flush the WAL locally before COMMIT returns
        if _first(conn, "SHOW synchronous_commit") == "off":
            conn.execute("SET synchronous_commit = on")
        if _first(conn, "SHOW fsync") == "off":
            log.warning("the PostgreSQL server runs with fsync = off: committed codes may be lost in a crash")

    def _take_lease(self, conn: psycopg.Connection[Any]) -> None:
        """Hold the writer lease on ``conn``'s session, or raise :class:`StoreInUse`.

        A session-level advisory lock on (``_WRITER_LEASE_CLASS``, the schema's
        name): it ends with the session, so a killed issuer's lease is gone as
        soon as the server notices the closed connection.
        """
        schema = self.schema if self.schema is not None else _first(conn, "SELECT current_schema()")
        held = _first(conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_WRITER_LEASE_CLASS, schema or ""))
        if not held:
            raise StoreInUse(f"another issuer holds the database {_describe(self.conninfo, schema)}")

    def _leased_writer(self) -> psycopg.Connection[Any]:
        """A new writer connection holding the lease."""
        conn = self._connect(writer=True)
        try:
            self._take_lease(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> psycopg.Connection[Any]:
        self._conn = self._leased_writer()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.readers.close()

    def _writer_conn(self) -> psycopg.Connection[Any]:
        """The writer's connection, reconnected if the last one broke (a server restart).

        The lease went with the broken session: it is taken again on the new
        one, and while another issuer holds it every write fails with
        :class:`StoreInUse` (nothing is reused).
        """
        conn = self._conn
        assert conn is not None, "the store is not open"
        if conn.broken or conn.closed:
            conn.close()
            conn = self._conn = self._leased_writer()
        return conn

    # -- the writer's transactions

    def begin(self) -> psycopg.Connection[Any]:
        """The writer's connection, in a new transaction. One found dead at BEGIN is replaced once:
        nothing of this write was sent on it."""
        conn = self._writer_conn()
        try:
            conn.execute("BEGIN")
        except psycopg.OperationalError:
            if not conn.broken:
                raise
            conn = self._writer_conn()
            conn.execute("BEGIN")
        return conn

    @staticmethod
    def restart(conn: psycopg.Connection[Any]) -> None:
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")

    @staticmethod
    def commit(conn: psycopg.Connection[Any]) -> None:
        # COMMIT of a transaction that had failed answers ROLLBACK without raising: never take it for a commit
        status = conn.execute("COMMIT").statusmessage
        if status != "COMMIT":
            raise WriteFailed(f"transaction was not committed ({status})")

    @staticmethod
    def rollback(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None and not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    # -- migrations

    @contextlib.contextmanager
    def migration_step(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        """One transaction holding the schema's migration lock; creates the schema and the version table."""
        schema = self.schema
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (_MIGRATION_LOCK_CLASS, schema if schema is not None else "current_schema"))
            if schema is not None and _first(conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) is None:
                conn.execute(pg_sql.SQL("CREATE SCHEMA {}").format(pg_sql.Identifier(schema)))
            if _first(conn, "SELECT current_schema()") is None:
                raise WriteFailed("no schema to create the tables in: give one (?schema=NAME in the URL)")
            # looked up first: CREATE TABLE IF NOT EXISTS would need the CREATE privilege even when it exists
            if _first(conn, "SELECT to_regclass('schema_version')") is None:
                conn.execute(
                    "CREATE TABLE schema_version ("
                    " one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),"
                    " version integer NOT NULL)"
                )
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            yield conn

    @staticmethod
    def schema_version(conn: psycopg.Connection[Any]) -> int:
        return int(_first(conn, "SELECT version FROM schema_version"))

    @staticmethod
    def set_schema_version(conn: psycopg.Connection[Any], version: int) -> None:
        conn.execute("UPDATE schema_version SET version = %s", (version,))

    @staticmethod
    def execute_ddl(conn: psycopg.Connection[Any], statement: str) -> None:
        conn.execute(statement)

    # -- reads

    def _new_reader(self) -> psycopg.Connection[Any]:
        try:
            return self._connect(writer=False)
        except psycopg.OperationalError:
            raise Unavailable("database unavailable: cannot connect") from None

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        usable = not (conn.broken or conn.closed)
        if usable and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                usable = False
        self.readers.give_back(conn, usable=usable)

    def read(self, query: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``query(conn)`` on a pooled connection; one the server closed (a restart) is replaced once."""
        for attempt in (1, 2):
            conn = self.readers.take()
            try:
                return query(conn)
            except psycopg.OperationalError:
                if attempt == 1 and conn.broken:
                    continue
                raise Unavailable("database unavailable") from None
            finally:
                self._give_back(conn)
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        conn = _connect(self.conninfo, schema=self.schema, settings={"default_transaction_read_only": "on"},
                        connect_timeout=self._connect_timeout)
        try:
            yield conn
        finally:
            conn.close()


class PostgresStore(SQLStore[psycopg.Connection[Any]]):
    """The :class:`~issuer.store.base.Store` on a PostgreSQL database.

    ``conninfo`` is a libpq connection string or URL (``postgresql://user@host/db``);
    ``schema`` the schema to keep the tables in (created if missing; None: the
    server's ``current_schema()``); ``lock_timeout_ms`` and ``connect_timeout``
    are :class:`PostgresDialect`'s, the other options
    :class:`~issuer.store.sql.SQLStore`'s. Opening connects, takes the lease,
    creates or migrates the schema, and starts the writer.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        batch_cap: int = DEFAULT_BATCH_CAP,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
        resident_cache_size: int = DEFAULT_RESIDENT_CACHE,
        max_queued: int = DEFAULT_MAX_QUEUED,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        commit_linger: float = DEFAULT_COMMIT_LINGER,
    ) -> None:
        dialect = PostgresDialect(conninfo, schema=schema, lock_timeout_ms=lock_timeout_ms,
                                  connect_timeout=connect_timeout)
        self._pg = dialect
        super().__init__(dialect, writer_name="postgres-writer", batch_cap=batch_cap,
                         resident_cache_size=resident_cache_size, max_queued=max_queued, commit_linger=commit_linger)

    @property
    def conninfo(self) -> str:
        return self._pg.conninfo

    @property
    def schema(self) -> str | None:
        return self._pg.schema

    def __repr__(self) -> str:
        return f"<PostgresStore {self._pg.describe()}>"


class PostgresRevocationSource(SQLRevocationSource[psycopg.Connection[Any]]):
    """Reads revoked serials from the issuer's PostgreSQL schema (a missing schema or table is an error)."""

    def __init__(self, conninfo: str, *, schema: str | None = None,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> None:
        self._pg = PostgresDialect(conninfo, schema=schema, connect_timeout=connect_timeout)
        super().__init__(self._pg)

    def __repr__(self) -> str:
        return f"<PostgresRevocationSource {self._pg.describe()}>"


def _first(conn: psycopg.Connection[Any], query: str, params: tuple[object, ...] | None = None) -> Any:
    """The first column of the first row of ``query`` (None if there is no row)."""
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.close()
