"""The PostgreSQL store: one writer thread with group commit, pooled read connections.

The same :class:`~issuer.store.base.Store` as :mod:`issuer.store.sqlite`, with
the same design; only what PostgreSQL does differently is described here.

Writes
    One writer thread and one connection apply every write in submission
    order. Code insertions are group committed: the writer takes what waits in
    its queue (up to ``batch_cap`` codes) and inserts the plain ones with one
    ``INSERT ... SELECT FROM unnest(...)`` in one transaction; each future
    resolves only after ``COMMIT`` returned. Other writes run in their own
    transaction, in order between the batches.

    If a batch fails on a row (a UNIQUE conflict from a retried idempotent
    request, say), the writer rolls back and applies the rows one by one in a
    fresh transaction. PostgreSQL aborts the whole transaction on an error
    (SQLite undoes only the statement), so each row runs inside its own
    ``SAVEPOINT``: the failing row's future gets its error, every other row
    still commits. Only row errors (integrity, data) fall back; a lost
    connection or a lock timeout fails the batch with :class:`WriteFailed`.

    Connections break (a server restart, a failover). One found dead at
    ``BEGIN`` is replaced at once: nothing of the write had been sent. One
    that breaks during a write fails that write with :class:`WriteFailed`
    (its fate is unknown if ``COMMIT`` was under way), and the next write
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

One writer *process* per province schema, enforced as for SQLite. Serials
are allocated in the issuing process's memory from :meth:`PostgresStore.next_serial`
(see :mod:`issuer.issuance`) and the resident cache trusts that merges go
through this process. So the writer's session holds the schema's writer
lease, a session-level advisory lock on (``_WRITER_LEASE_CLASS``,
``hashtext(schema)``): a second store on the same schema fails to open with
:class:`~issuer.store.base.StoreInUse`. The lease ends with the session (the
store closed, the process killed, the connection lost). After a lost
connection the writer takes it again on its new session; if another issuer
took it meanwhile, writes fail (:class:`~issuer.store.base.WriteFailed`)
rather than race it. (Two schemas whose names share a ``hashtext`` would
exclude each other: a refusal, never a race.)

Where: the tables live in ``schema`` (created if missing; every connection
gets ``search_path`` set to it), or in the server's ``current_schema()`` when
no schema is given. Sessions run with ``TimeZone = UTC``.

Privacy: the tables (and the server's WAL) hold main index IDs, blind indexes
and sealed values, never a document number (see :mod:`issuer.privacy`).

Schema (``schema_version.version`` counts the migrations applied)::

    residents(main_index_id TEXT PK, created_at TIMESTAMPTZ, merged_into TEXT -> residents,
              merged_at TIMESTAMPTZ)
    identifiers(blind_index BYTEA PK, doc_type TEXT, sealed BYTEA, main_index_id TEXT -> residents,
                is_primary BOOLEAN, created_at TIMESTAMPTZ)          index (main_index_id)
    codes(id BIGINT identity PK, province TEXT, kid BYTEA, serial BIGINT, main_index_id TEXT -> residents,
          issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, text TEXT, caller TEXT, idempotency_key TEXT,
          request_fingerprint BYTEA, revoked_at TIMESTAMPTZ, revocation_reason TEXT)
          UNIQUE (province, kid, serial); UNIQUE (caller, idempotency_key); index (main_index_id);
          index (province, kid, serial) WHERE revoked_at IS NOT NULL
    serial_counters(province TEXT, kid BYTEA, next_serial BIGINT, PK (province, kid))

Times are whole seconds (floored like the SQLite store's epoch seconds).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from concurrent.futures import Future
from typing import Any, Callable, Iterator, Sequence, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from healthcode.model import from_epoch, to_epoch

from ..errors import Conflict, IssuerError, Unavailable
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
)
from .pool import ReaderPool
from .writer import DEFAULT_COMMIT_LINGER, CodeItem, GroupCommitWriter, Operation

__all__ = [
    "PostgresStore",
    "PostgresRevocationSource",
    "MIGRATIONS",
    "SchemaTooNew",
    "split_postgres_url",
    "DEFAULT_LOCK_TIMEOUT_MS",
]

log = logging.getLogger("issuer.store")

DEFAULT_LOCK_TIMEOUT_MS = 5000
DEFAULT_CONNECT_TIMEOUT = 10
#: Serials are BIGINT: anything above can name no stored code.
_MAX_BIGINT = 2**63 - 1
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: pg_advisory_xact_lock(class, hashtext(schema)): serialises migrations of one schema.
_MIGRATION_LOCK_CLASS = 0x4843  # "HC"
#: The writer lease: a session-level advisory lock (this class, hashtext(schema)) held by the writer's connection.
_WRITER_LEASE_CLASS = 0x484C  # "HL"

_T = TypeVar("_T")


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
             connect_timeout: int) -> psycopg.Connection:
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


# --------------------------------------------------------------------------- migrations


def _migration_1_initial(conn: psycopg.Connection) -> None:
    conn.execute(
        "CREATE TABLE residents ("
        " main_index_id text PRIMARY KEY,"
        " created_at timestamptz NOT NULL,"
        " merged_into text REFERENCES residents (main_index_id),"
        " merged_at timestamptz)"
    )
    conn.execute(
        "CREATE TABLE identifiers ("
        " blind_index bytea PRIMARY KEY,"
        " doc_type text NOT NULL,"
        " sealed bytea NOT NULL,"
        " main_index_id text NOT NULL REFERENCES residents (main_index_id),"
        " is_primary boolean NOT NULL,"
        " created_at timestamptz NOT NULL)"
    )
    conn.execute("CREATE INDEX identifiers_by_resident ON identifiers (main_index_id)")
    conn.execute(
        "CREATE TABLE codes ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " province text NOT NULL,"
        " kid bytea NOT NULL,"
        " serial bigint NOT NULL,"
        " main_index_id text NOT NULL CONSTRAINT codes_resident_fkey REFERENCES residents (main_index_id),"
        " issued_at timestamptz NOT NULL,"
        " expires_at timestamptz NOT NULL,"
        " text text NOT NULL,"
        " caller text NOT NULL,"
        " idempotency_key text,"
        " request_fingerprint bytea,"
        " revoked_at timestamptz,"
        " revocation_reason text)"
    )
    conn.execute("CREATE UNIQUE INDEX codes_by_serial ON codes (province, kid, serial)")
    conn.execute("CREATE UNIQUE INDEX codes_by_idempotency_key ON codes (caller, idempotency_key)")
    conn.execute("CREATE INDEX codes_by_resident ON codes (main_index_id)")
    # the revocation publisher reads a shard's revoked serials in order (see the SQLite store's migration 2)
    conn.execute("CREATE INDEX codes_revoked ON codes (province, kid, serial) WHERE revoked_at IS NOT NULL")
    conn.execute(
        "CREATE TABLE serial_counters ("
        " province text NOT NULL,"
        " kid bytea NOT NULL,"
        " next_serial bigint NOT NULL,"
        " PRIMARY KEY (province, kid))"
    )


#: Applied in order, each in its own transaction; ``schema_version.version`` is the number applied. Append only.
MIGRATIONS: tuple[Callable[[psycopg.Connection], None], ...] = (_migration_1_initial,)


def _migrate(conn: psycopg.Connection, schema: str | None) -> int:
    """Create ``schema`` if missing, apply the missing migrations; return the schema version.

    Each step holds a transaction-scoped advisory lock on the schema, so
    processes (or threads) opening a fresh schema at once migrate it once.
    """
    migrations = MIGRATIONS  # read once: tests extend it
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (_MIGRATION_LOCK_CLASS, schema if schema is not None else "current_schema"))
            if schema is not None and conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            if conn.execute("SELECT current_schema()").fetchone()[0] is None:
                raise WriteFailed("no schema to create the tables in: give one (?schema=NAME in the URL)")
            # looked up first: CREATE TABLE IF NOT EXISTS would need the CREATE privilege even when it exists
            if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
                conn.execute(
                    "CREATE TABLE schema_version ("
                    " one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),"
                    " version integer NOT NULL)"
                )
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
            if version > len(migrations):
                raise SchemaTooNew(f"database schema version {version} is newer than this software's "
                                   f"{len(migrations)}")
            if version == len(migrations):
                return version
            migrations[version](conn)
            conn.execute("UPDATE schema_version SET version = %s", (version + 1,))


# --------------------------------------------------------------------------- rows


_CODE_COLUMNS = (
    "province, kid, serial, main_index_id, issued_at, expires_at, text, caller, idempotency_key, "
    "request_fingerprint, revoked_at, revocation_reason"
)
_INSERTED_COLUMNS = (
    "province, kid, serial, main_index_id, issued_at, expires_at, text, caller, idempotency_key, request_fingerprint"
)
_INSERT_CODE = f"INSERT INTO codes ({_INSERTED_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
#: One statement, one plan, for any number of rows: the columns as ten arrays.
_INSERT_CODES = (
    f"INSERT INTO codes ({_INSERTED_COLUMNS}) SELECT * FROM unnest("
    "%s::text[], %s::bytea[], %s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[], "
    "%s::text[], %s::text[], %s::text[], %s::bytea[])"
)
_SUPERSEDE = (
    "UPDATE codes SET revoked_at = %s, revocation_reason = %s "
    "WHERE province = %s AND kid = %s AND serial = %s AND main_index_id = %s AND revoked_at IS NULL"
)
_BUMP_COUNTER = (
    "INSERT INTO serial_counters (province, kid, next_serial) VALUES (%s, %s, %s) "
    "ON CONFLICT (province, kid) DO UPDATE SET next_serial = greatest(serial_counters.next_serial, "
    "excluded.next_serial)"
)
_NEXT_SERIAL = (  # one statement: one snapshot for both
    "SELECT greatest("
    "(SELECT coalesce(max(next_serial), 0) FROM serial_counters WHERE province = %s AND kid = %s), "
    "(SELECT coalesce(max(serial) + 1, 0) FROM codes WHERE province = %s AND kid = %s))"
)
_IDENTIFIER_COLUMNS = "blind_index, doc_type, sealed, main_index_id, is_primary, created_at"
_INSERT_IDENTIFIER = f"INSERT INTO identifiers ({_IDENTIFIER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"


def _second(moment: dt.datetime) -> dt.datetime:
    """``moment`` floored to the second, in UTC (exactly what the SQLite store keeps)."""
    return from_epoch(to_epoch(moment))


def _code_record(row: tuple) -> CodeRecord:
    (province, kid, serial, mid, iat, exp, text, caller, key, fingerprint, revoked_at, reason) = row
    return CodeRecord(
        province=province,
        kid=kid,
        serial=serial,
        main_index_id=mid,
        issued_at=iat,
        expires_at=exp,
        text=text,
        caller=caller,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        revoked_at=revoked_at,
        revocation_reason=None if reason is None else RevocationReason(reason),
    )


def _identifier_record(row: tuple) -> IdentifierRecord:
    blind_index, doc_type, sealed, mid, primary, created_at = row
    return IdentifierRecord(blind_index, doc_type, sealed, mid, primary, created_at)


def _code_params(record: CodeRecord) -> tuple:
    return (
        record.province,
        record.kid,
        record.serial,
        record.main_index_id,
        _second(record.issued_at),
        _second(record.expires_at),
        record.text,
        record.caller,
        record.idempotency_key,
        record.request_fingerprint,
    )


def _row_error(exc: psycopg.Error) -> IssuerError:
    """Name the failure of one code's insertion (PostgreSQL names the failed constraint)."""
    if not isinstance(exc, psycopg.IntegrityError):
        return WriteFailed("code could not be stored")  # a value PostgreSQL refuses (out of range, NUL in text)
    constraint = exc.diag.constraint_name
    if constraint == "codes_by_idempotency_key":
        return DuplicateIdempotencyKey("idempotency key was already used by this caller")
    if constraint == "codes_by_serial":
        return DuplicateSerial("serial is already taken for this signing key")
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return ResidentNotFound("resident not found")
    return WriteFailed("code could not be stored (constraint)")


#: Errors that belong to one row's values, not to the connection or the transaction.
_ROW_ERRORS = (psycopg.IntegrityError, psycopg.DataError)




# --------------------------------------------------------------------------- the store


class PostgresStore(GroupCommitWriter, Store):
    """The :class:`~issuer.store.base.Store` on a PostgreSQL database.

    ``conninfo`` is a libpq connection string or URL (``postgresql://user@host/db``);
    ``schema`` the schema to keep the tables in (created if missing; None: the
    server's ``current_schema()``). ``lock_timeout_ms`` bounds the writer's
    wait for a lock held by another session; ``connect_timeout`` (seconds)
    applies unless the conninfo sets one. ``batch_cap``,
    ``resident_cache_size`` and ``max_queued`` are those of
    :class:`~issuer.store.sqlite.SQLiteStore`. Opening connects, creates or
    migrates the schema, and starts the writer.
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
        self._init_writer(batch_cap=batch_cap, max_queued=max_queued, resident_cache_size=resident_cache_size,
                          commit_linger=commit_linger)
        self.conninfo = conninfo
        self.schema = None if schema is None else check_schema_name(schema)
        self._lock_timeout_ms = int(lock_timeout_ms)
        self._connect_timeout = int(connect_timeout)
        self._readers: ReaderPool[psycopg.Connection] = ReaderPool(self._new_reader, _close_quietly)

        conn = self._connect(writer=True)
        try:
            self._take_lease(conn)
            self.schema_version = _migrate(conn, self.schema)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._start_writer("postgres-writer")

    # -- connections

    def _connect(self, *, writer: bool) -> psycopg.Connection:
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
    def _check_durability(conn: psycopg.Connection) -> None:
        # 'local', 'remote_write', 'on' and 'remote_apply' all flush the WAL locally before COMMIT returns
        if conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":
            conn.execute("SET synchronous_commit = on")
        if conn.execute("SHOW fsync").fetchone()[0] == "off":
            log.warning("the PostgreSQL server runs with fsync = off: committed codes may be lost in a crash")

    def _take_lease(self, conn: psycopg.Connection) -> None:
        """Hold the writer lease on ``conn``'s session, or raise :class:`StoreInUse`.

        A session-level advisory lock on (``_WRITER_LEASE_CLASS``, the schema's
        name): it ends with the session, so a killed issuer's lease is gone as
        soon as the server notices the closed connection.
        """
        schema = self.schema if self.schema is not None else conn.execute("SELECT current_schema()").fetchone()[0]
        held = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                            (_WRITER_LEASE_CLASS, schema or "")).fetchone()[0]
        if not held:
            raise StoreInUse(f"another issuer holds the database {_describe(self.conninfo, schema)}")

    def _writer_conn(self) -> psycopg.Connection:
        """The writer's connection, reconnected if the last one broke (a server restart).

        The lease went with the broken session: it is taken again on the new
        one, and while another issuer holds it every write fails with
        :class:`StoreInUse` (as a :class:`WriteFailed`: nothing is reused).
        """
        conn = self._conn
        if conn.broken or conn.closed:
            conn.close()
            conn = self._connect(writer=True)
            try:
                self._take_lease(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return conn

    def _new_reader(self) -> psycopg.Connection:
        try:
            return self._connect(writer=False)
        except psycopg.OperationalError:
            raise Unavailable("database unavailable: cannot connect") from None

    def _take_reader(self) -> psycopg.Connection:
        return self._readers.take()

    def _give_back(self, conn: psycopg.Connection) -> None:
        usable = not (conn.broken or conn.closed)
        if usable and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.rollback()
            except psycopg.Error:
                usable = False
        self._readers.give_back(conn, usable=usable)

    def _read(self, query: Callable[[psycopg.Connection], _T]) -> _T:
        """``query(conn)`` on a pooled connection; one the server closed (a restart) is replaced once."""
        for attempt in (1, 2):
            conn = self._take_reader()
            try:
                return query(conn)
            except psycopg.OperationalError:
                if attempt == 1 and conn.broken:
                    continue
                raise Unavailable("database unavailable") from None
            finally:
                self._give_back(conn)
        raise AssertionError("unreachable")

    # -- the resident cache

    # -- reads

    def get_resident(self, main_index_id: str) -> ResidentRecord | None:
        row = self._read(lambda conn: conn.execute(
            "SELECT main_index_id, created_at, merged_into, merged_at FROM residents WHERE main_index_id = %s",
            (main_index_id,),
        ).fetchone())
        if row is None:
            return None
        record = ResidentRecord(*row)
        if record.active and self._cache_cap:
            self._remember_active(main_index_id)
        return record

    def find_identifier(self, blind_index: bytes) -> IdentifierRecord | None:
        row = self._read(lambda conn: conn.execute(
            f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE blind_index = %s", (blind_index,)
        ).fetchone())
        return None if row is None else _identifier_record(row)

    def identifiers_of(self, main_index_id: str) -> list[IdentifierRecord]:
        rows = self._read(lambda conn: conn.execute(
            f"SELECT {_IDENTIFIER_COLUMNS} FROM identifiers WHERE main_index_id = %s "
            "ORDER BY is_primary DESC, created_at, blind_index",
            (main_index_id,),
        ).fetchall())
        return [_identifier_record(row) for row in rows]

    def get_code(self, ref: CodeRef) -> CodeRecord | None:
        if not 0 <= ref.serial <= _MAX_BIGINT:  # no such row; and a NUMERIC parameter would skip the index
            return None
        row = self._read(lambda conn: conn.execute(
            f"SELECT {_CODE_COLUMNS} FROM codes WHERE province = %s AND kid = %s AND serial = %s",
            (ref.province, ref.kid, ref.serial),
        ).fetchone())
        return None if row is None else _code_record(row)

    def find_code_by_idempotency_key(self, caller: str, idempotency_key: str) -> CodeRecord | None:
        row = self._read(lambda conn: conn.execute(
            f"SELECT {_CODE_COLUMNS} FROM codes WHERE caller = %s AND idempotency_key = %s",
            (caller, idempotency_key),
        ).fetchone())
        return None if row is None else _code_record(row)

    def codes_of(self, main_index_id: str) -> list[CodeRecord]:
        rows = self._read(lambda conn: conn.execute(
            f"SELECT {_CODE_COLUMNS} FROM codes WHERE main_index_id = %s ORDER BY issued_at, id",
            (main_index_id,),
        ).fetchall())
        return [_code_record(row) for row in rows]

    def next_serial(self, province: str, kid: bytes) -> int:
        return self._read(lambda conn: conn.execute(_NEXT_SERIAL, (province, kid, province, kid)).fetchone()[0])

    # -- writes (queued: see issuer/store/writer.py)

    def create_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        mid = resident.main_index_id
        rows = [(i.blind_index, i.doc_type, i.sealed, mid, bool(i.primary), _second(i.created_at)) for i in identifiers]
        created = _second(resident.created_at)

        def run(conn: psycopg.Connection) -> None:
            for position, row in enumerate(rows):
                if conn.execute("SELECT 1 FROM identifiers WHERE blind_index = %s", (row[0],)).fetchone():
                    raise DuplicateIdentifier(position)
            conn.execute("INSERT INTO residents (main_index_id, created_at) VALUES (%s, %s)", (mid, created))
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(_INSERT_IDENTIFIER, rows)

        return self._operation(run, lambda _: self._remember_active(mid) if self._cache_cap else None)

    def add_identifier(self, identifier: IdentifierRecord) -> Future[bool]:
        i = identifier
        row = (i.blind_index, i.doc_type, i.sealed, i.main_index_id, bool(i.primary), _second(i.created_at))

        def run(conn: psycopg.Connection) -> bool:
            _require_active(conn, i.main_index_id)
            linked = conn.execute(
                "SELECT main_index_id FROM identifiers WHERE blind_index = %s", (i.blind_index,)
            ).fetchone()
            if linked is not None:
                if linked[0] == i.main_index_id:
                    return False
                raise DuplicateIdentifier(0)
            conn.execute(_INSERT_IDENTIFIER, row)
            return True

        return self._operation(run)

    def merge_residents(self, *, survivor: str, merged: str, at: dt.datetime) -> Future[int]:
        now = _second(at)

        def run(conn: psycopg.Connection) -> int:
            if survivor == merged:
                raise Conflict("cannot merge a resident into itself")
            _require_active(conn, survivor, "survivor")
            _require_active(conn, merged, "merged resident")
            # (1) the survivor keeps every document; it keeps its own primary
            conn.execute(
                "UPDATE identifiers SET main_index_id = %s, is_primary = false WHERE main_index_id = %s",
                (survivor, merged),
            )
            # (2) the merged entry stays, read-only, pointing at the survivor
            conn.execute(
                "UPDATE residents SET merged_into = %s, merged_at = %s WHERE main_index_id = %s",
                (survivor, now, merged),
            )
            # (3) its live codes are revoked in the same transaction
            return conn.execute(
                "UPDATE codes SET revoked_at = %s, revocation_reason = %s "
                "WHERE main_index_id = %s AND revoked_at IS NULL AND expires_at > %s",
                (now, RevocationReason.MERGED.value, merged, now),
            ).rowcount

        return self._operation(run, lambda _: self._forget_active(merged))

    def revoke_code(self, ref: CodeRef, *, reason: RevocationReason, at: dt.datetime) -> Future[CodeRecord | None]:
        reason_value = RevocationReason(reason).value
        now = _second(at)
        key = (ref.province, ref.kid, ref.serial)

        def run(conn: psycopg.Connection) -> CodeRecord | None:
            if not 0 <= ref.serial <= _MAX_BIGINT:
                return None
            conn.execute(
                "UPDATE codes SET revoked_at = %s, revocation_reason = %s "
                "WHERE province = %s AND kid = %s AND serial = %s AND revoked_at IS NULL",
                (now, reason_value) + key,
            )
            row = conn.execute(
                f"SELECT {_CODE_COLUMNS} FROM codes WHERE province = %s AND kid = %s AND serial = %s", key
            ).fetchone()
            return None if row is None else _code_record(row)

        return self._operation(run)

    def revoke_resident_codes(self, main_index_id: str, *, reason: RevocationReason, at: dt.datetime) -> Future[int]:
        reason_value = RevocationReason(reason).value
        now = _second(at)

        def run(conn: psycopg.Connection) -> int:
            return conn.execute(
                "UPDATE codes SET revoked_at = %s, revocation_reason = %s "
                "WHERE main_index_id = %s AND revoked_at IS NULL AND expires_at > %s",
                (now, reason_value, main_index_id, now),
            ).rowcount

        return self._operation(run)

    # -- the writer thread

    _bump_counter_sql = _BUMP_COUNTER
    _row_errors = _ROW_ERRORS

    def _params_of(self, record: CodeRecord) -> tuple:
        return _code_params(record)

    def _begin_codes(self) -> psycopg.Connection:
        return self._begin()

    @staticmethod
    def _restart(conn: psycopg.Connection) -> None:
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")

    def _commit_tx(self, conn: psycopg.Connection) -> None:
        self._commit(conn)

    def _rollback_tx(self, conn: psycopg.Connection | None) -> None:
        self._rollback(conn)

    def _begin(self) -> psycopg.Connection:
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
    def _commit(conn: psycopg.Connection) -> None:
        # COMMIT of a transaction that had failed answers ROLLBACK without raising: never take it for a commit
        status = conn.execute("COMMIT").statusmessage
        if status != "COMMIT":
            raise WriteFailed(f"transaction was not committed ({status})")

    @staticmethod
    def _rollback(conn: psycopg.Connection | None) -> None:
        if conn is not None and not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def _apply_operation(self, op: Operation) -> None:
        conn = None
        try:
            conn = self._begin()
            result = op.run(conn)
            self._commit(conn)
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, psycopg.Error):
                exc = WriteFailed(f"write failed: {exc.__class__.__name__}")
            op.future.set_exception(exc)  # an IssuerError as it is; a bug in an operation must not kill the writer
            return
        self._stats[0] += 1
        if op.after_commit is not None:
            op.after_commit(result)
        op.future.set_result(result)

    def _apply_codes_fast(self, conn: psycopg.Connection, batch: list[CodeItem]) -> list[IssuerError | None]:
        """All plain insertions in one statement; renewals one by one. Raises on any row's failure."""
        plain = [item.params for item in batch if item.supersedes is None]
        if plain:
            conn.execute(_INSERT_CODES, [list(column) for column in zip(*plain)])
        if len(plain) == len(batch):
            return [None] * len(batch)
        return [None if item.supersedes is None else self._apply_renewal(conn, item) for item in batch]

    def _apply_codes_one_by_one(self, conn: psycopg.Connection, batch: list[CodeItem]) -> list[IssuerError | None]:
        """One statement per row, each under a savepoint: a failing row is undone alone."""
        outcomes: list[IssuerError | None] = []
        for item in batch:
            if item.supersedes is not None:
                outcomes.append(self._apply_renewal(conn, item))
                continue
            conn.execute("SAVEPOINT code")
            try:
                conn.execute(_INSERT_CODE, item.params)
                outcomes.append(None)
            except _ROW_ERRORS as exc:
                conn.execute("ROLLBACK TO SAVEPOINT code")
                outcomes.append(_row_error(exc))
            finally:
                conn.execute("RELEASE SAVEPOINT code")
        return outcomes

    @staticmethod
    def _apply_renewal(conn: psycopg.Connection, item: CodeItem) -> IssuerError | None:
        """Insert the new code and supersede the old one, both or neither (a savepoint)."""
        old = item.supersedes
        conn.execute("SAVEPOINT renewal")
        try:
            try:
                conn.execute(_INSERT_CODE, item.params)
            except _ROW_ERRORS as exc:
                conn.execute("ROLLBACK TO SAVEPOINT renewal")
                return _row_error(exc)
            updated = 0
            if 0 <= old.serial <= _MAX_BIGINT:
                updated = conn.execute(
                    _SUPERSEDE,
                    (item.params[4], RevocationReason.SUPERSEDED.value, old.province, old.kid, old.serial,
                     item.record.main_index_id),
                ).rowcount
            if updated != 1:
                conn.execute("ROLLBACK TO SAVEPOINT renewal")
                return CodeNotRenewable("code to renew is unknown, revoked, or of another resident")
            return None
        finally:
            conn.execute("RELEASE SAVEPOINT renewal")

    # -- lifecycle

    def close(self) -> None:
        if not self._stop_writer():
            return
        self._conn.close()
        self._readers.close()

    def __repr__(self) -> str:
        return f"<PostgresStore {_describe(self.conninfo, self.schema)}>"


def _close_quietly(conn: psycopg.Connection) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.close()


def _require_active(conn: psycopg.Connection, main_index_id: str, what: str = "resident") -> None:
    row = conn.execute("SELECT merged_into FROM residents WHERE main_index_id = %s", (main_index_id,)).fetchone()
    if row is None:
        raise ResidentNotFound(f"{what} not found")
    if row[0] is not None:
        raise ResidentMerged(f"{what} was merged into another entry")


# --------------------------------------------------------------------------- revocations


class PostgresRevocationSource:
    """Reads revoked serials from the issuer's PostgreSQL schema, for :mod:`issuer.revocation_publisher`.

    The counterpart of :class:`~issuer.revocation_publisher.SQLiteRevocationSource`:
    its own short read-only connection per call, and it never creates anything
    (a missing schema or table is an error). Its query is served by the
    partial index on revoked codes.
    """

    def __init__(self, conninfo: str, *, schema: str | None = None,
                 connect_timeout: int = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.conninfo = conninfo
        self.schema = None if schema is None else check_schema_name(schema)
        self._connect_timeout = int(connect_timeout)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        conn = _connect(self.conninfo, schema=self.schema, settings={"default_transaction_read_only": "on"},
                        connect_timeout=self._connect_timeout)
        try:
            yield conn
        finally:
            conn.close()

    def shards(self) -> list[tuple[str, bytes]]:
        # serial_counters gets a row, in the same transaction, for every shard that commits a code
        with self._connect() as conn:
            return [(p, bytes(k)) for p, k in
                    conn.execute("SELECT province, kid FROM serial_counters ORDER BY province, kid")]

    def revoked(self, province: str, kid: bytes) -> tuple[int, list[int]]:
        with self._connect() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for both reads
            serials = [s for (s,) in conn.execute(
                "SELECT serial FROM codes WHERE province = %s AND kid = %s AND revoked_at IS NOT NULL "
                "ORDER BY serial", (province, kid))]
            (universe,) = conn.execute(_NEXT_SERIAL, (province, kid, province, kid)).fetchone()
            conn.execute("COMMIT")
        return universe, serials

    def __repr__(self) -> str:
        return f"<PostgresRevocationSource {_describe(self.conninfo, self.schema)}>"
