"""The store's schema: named migrations, written once for every dialect.

A migration is a name and its DDL statements. The statements name column
types by role (``{text}``, ``{bytes}``, ``{time}``, ``{bool}``, ``{serial}``,
``{id}``) and end tables with ``{table_options}``; a dialect fills them in
(:attr:`Dialect.types <issuer.store.sql.Dialect.types>`)::

    residents(main_index_id text PK, created_at time, merged_into text -> residents, merged_at time)
    identifiers(blind_index bytes PK, doc_type text, sealed bytes, main_index_id text -> residents,
                is_primary bool, created_at time)          index (main_index_id)
    codes(id PK, province text, kid bytes, serial serial, main_index_id text -> residents,
          issued_at time, expires_at time, text text, caller text, idempotency_key text,
          request_fingerprint bytes, revoked_at time, revocation_reason text, channel text = 'static')
          UNIQUE (province, kid, serial); UNIQUE (caller, idempotency_key); index (main_index_id);
          index (province, kid, serial) WHERE revoked_at IS NOT NULL
    serial_counters(province text, kid bytes, next_serial serial, PK (province, kid))
    challenges(challenge bytes PK, main_index_id text -> residents, caller text, created_at time,
               expires_at time, used_at time)       index (expires_at)
    residents + (national_state text = 'local', home_province text, moved_at time, move_consent text)
          index (national_state) WHERE national_state IN ('local', 'pending', 'provisional')
    accesses(access_id text PK, main_index_id text -> residents, hospital_organisation text,
             hospital_province text, purpose serial, resolved_at time, code_kind text)
          index (main_index_id, resolved_at, access_id)
    national_cursor(name text PK, sequence serial)
    presentations_resolved(presentation text PK, resolved_at time)     index (resolved_at)

Migrations apply in order, each in its own transaction under the dialect's
migration lock; the database records how many were applied (its *schema
version*: SQLite's ``PRAGMA user_version``, PostgreSQL's ``schema_version``
table), so the list is append only and a database migrated by newer software
(:class:`~issuer.store.base.SchemaTooNew`) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from contextlib import AbstractContextManager
from typing import Mapping, Protocol, TypeVar

from .base import SchemaTooNew

__all__ = ["Migration", "MIGRATIONS", "migrate", "Migrating"]

C_contra = TypeVar("C_contra", contravariant=True)
C = TypeVar("C")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``statements`` (type placeholders filled in by the dialect), in one transaction."""

    name: str
    statements: tuple[str, ...]

    def sql(self, types: Mapping[str, str]) -> list[str]:
        return [statement.format_map(types) for statement in self.statements]


_INITIAL = Migration("initial", (
    "CREATE TABLE residents ("
    " main_index_id {text} NOT NULL PRIMARY KEY,"
    " created_at {time} NOT NULL,"
    " merged_into {text} REFERENCES residents (main_index_id),"
    " merged_at {time}){table_options}",
    "CREATE TABLE identifiers ("
    " blind_index {bytes} NOT NULL PRIMARY KEY,"
    " doc_type {text} NOT NULL,"
    " sealed {bytes} NOT NULL,"
    " main_index_id {text} NOT NULL REFERENCES residents (main_index_id),"
    " is_primary {bool} NOT NULL,"
    " created_at {time} NOT NULL){table_options}",
    "CREATE INDEX identifiers_by_resident ON identifiers (main_index_id)",
    "CREATE TABLE codes ("
    " id {id},"
    " province {text} NOT NULL,"
    " kid {bytes} NOT NULL,"
    " serial {serial} NOT NULL,"
    " main_index_id {text} NOT NULL CONSTRAINT codes_resident_fkey REFERENCES residents (main_index_id),"
    " issued_at {time} NOT NULL,"
    " expires_at {time} NOT NULL,"
    " text {text} NOT NULL,"
    " caller {text} NOT NULL,"
    " idempotency_key {text},"
    " request_fingerprint {bytes},"
    " revoked_at {time},"
    " revocation_reason {text}){table_options}",
    "CREATE UNIQUE INDEX codes_by_serial ON codes (province, kid, serial)",
    "CREATE UNIQUE INDEX codes_by_idempotency_key ON codes (caller, idempotency_key)",
    "CREATE INDEX codes_by_resident ON codes (main_index_id)",
    "CREATE TABLE serial_counters ("
    " province {text} NOT NULL,"
    " kid {bytes} NOT NULL,"
    " next_serial {serial} NOT NULL,"
    " PRIMARY KEY (province, kid)){table_options}",
))

# The revocation publisher reads a shard's revoked serials in order
# (issuer/revocation_publisher.py); without this it scans the shard's whole
# (province, kid, serial) range, 30 million rows for the largest national shard.
# Partial: codes that are not revoked add nothing to it. IF NOT EXISTS: the
# first PostgreSQL store created it in its initial migration.
_REVOKED_INDEX = Migration("revoked_index", (
    "CREATE INDEX IF NOT EXISTS codes_revoked ON codes (province, kid, serial) WHERE revoked_at IS NOT NULL",
))

# Dynamic codes (issue 13): each code's channel (one live code per resident per
# channel; the codes issued before are static), and the Wallets API's enrolment
# challenges, kept in the database so that a restart neither forgets one nor
# lets a used one be used again.
_WALLETS = Migration("wallets", (
    "ALTER TABLE codes ADD COLUMN channel {text} NOT NULL DEFAULT 'static'",
    "CREATE TABLE challenges ("
    " challenge {bytes} NOT NULL PRIMARY KEY,"
    " main_index_id {text} NOT NULL REFERENCES residents (main_index_id),"
    " caller {text} NOT NULL,"
    " created_at {time} NOT NULL,"
    " expires_at {time} NOT NULL,"
    " used_at {time}){table_options}",
    "CREATE INDEX challenges_by_expiry ON challenges (expires_at)",
))

# The national index (issue 14): each entry's standing with it (issuer.model.NationalState)
# and where it lives when not here; the hospitals' resolutions of its codes (the resident's
# access log: hospital, purpose, time, kind of code; never a document number); and the
# sequence number of the last national event applied. The partial index serves the
# reconciler's scan of the entries still to claim.
_NATIONAL = Migration("national", (
    "ALTER TABLE residents ADD COLUMN national_state {text} NOT NULL DEFAULT 'local'",
    "ALTER TABLE residents ADD COLUMN home_province {text}",
    "ALTER TABLE residents ADD COLUMN moved_at {time}",
    "ALTER TABLE residents ADD COLUMN move_consent {text}",
    "CREATE INDEX residents_unclaimed ON residents (national_state, created_at) "
    "WHERE national_state IN ('local', 'pending', 'provisional')",
    "CREATE TABLE accesses ("
    " access_id {text} NOT NULL PRIMARY KEY,"
    " main_index_id {text} NOT NULL REFERENCES residents (main_index_id),"
    " hospital_organisation {text} NOT NULL,"
    " hospital_province {text} NOT NULL,"
    " purpose {serial} NOT NULL,"
    " resolved_at {time} NOT NULL,"
    " code_kind {text} NOT NULL){table_options}",
    "CREATE INDEX accesses_by_resident ON accesses (main_index_id, resolved_at, access_id)",
    "CREATE TABLE national_cursor ("
    " name {text} NOT NULL PRIMARY KEY,"
    " sequence {serial} NOT NULL){table_options}",
))

# A live code resolves once, whichever process or replica answers (issue 14: a hospital resolves only with
# the person present): the presentations resolved lately, keyed "kid:serial:step", kept a few minutes.
_PRESENTATIONS = Migration("presentations_resolved", (
    "CREATE TABLE presentations_resolved ("
    " presentation {text} NOT NULL PRIMARY KEY,"
    " resolved_at {time} NOT NULL){table_options}",
    "CREATE INDEX presentations_resolved_by_time ON presentations_resolved (resolved_at)",
))

#: Applied in order; the schema version is the number applied. Append only.
MIGRATIONS: tuple[Migration, ...] = (_INITIAL, _REVOKED_INDEX, _WALLETS, _NATIONAL, _PRESENTATIONS)


class Migrating(Protocol[C_contra]):
    """What :func:`migrate` needs of a dialect."""

    types: Mapping[str, str]

    def migration_step(self, conn: C_contra) -> AbstractContextManager[object]:
        """A context manager: one transaction holding the migration lock (commits on success)."""
        ...

    def schema_version(self, conn: C_contra) -> int:
        ...

    def set_schema_version(self, conn: C_contra, version: int) -> None:
        ...

    def execute_ddl(self, conn: C_contra, statement: str) -> None:
        ...


def migrate(conn: C, dialect: Migrating[C]) -> int:
    """Apply the missing migrations, each in its own transaction; return the schema version.

    The version is re-read under the dialect's migration lock, so processes (or
    threads) opening a fresh database at once migrate it once.
    """
    migrations = MIGRATIONS  # read once (tests extend it)
    while True:
        with dialect.migration_step(conn):
            version = dialect.schema_version(conn)
            if version > len(migrations):
                raise SchemaTooNew(f"database schema version {version} is newer than this software's "
                                   f"{len(migrations)}")
            if version == len(migrations):
                return version
            for statement in migrations[version].sql(dialect.types):
                dialect.execute_ddl(conn, statement)
            dialect.set_schema_version(conn, version + 1)
