"""Where the issuer keeps residents, identifiers and issued codes.

:mod:`issuer.store.base` is the interface (records, errors, :class:`Store`,
:class:`RevocationSource`); :mod:`issuer.store.sql` implements it once, in SQL,
with its migrations in :mod:`issuer.store.schema` and its group-commit writer in
:mod:`issuer.store.writer`; a dialect supplies what differs:
:mod:`issuer.store.sqlite` (the default, one file) and
:mod:`issuer.store.postgres` (it needs the ``postgres`` extra, and is imported
only when a ``postgresql://`` URL is used).

:func:`open_store` picks one from the issuer's ``database`` setting;
:func:`open_revocation_source` opens the revocation publisher's read side.
"""

from __future__ import annotations

import os
from typing import Any

from .base import *  # noqa: F403 (the interface, re-exported: see base.__all__)
from . import base as _base
from .base import RevocationSource, Store
from .sqlite import SQLiteRevocationSource, SQLiteStore

__all__ = [*_base.__all__, "SQLiteStore", "SQLiteRevocationSource", "POSTGRES_URL_PREFIXES", "is_postgres_url",
           "open_store", "open_revocation_source"]

#: A ``database`` setting starting with one of these is a PostgreSQL URL; anything else is an SQLite file.
POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(database: object) -> bool:
    """True if ``database`` is a PostgreSQL URL (text), False for an SQLite path."""
    return isinstance(database, str) and database.startswith(POSTGRES_URL_PREFIXES)


def open_store(database: str | os.PathLike[str], **options: Any) -> Store:
    """The store ``database`` names: ``postgresql://...[?schema=NAME]`` or an SQLite file path.

    ``options`` go to the store's constructor. The PostgreSQL URL is libpq's,
    plus this store's own ``schema`` parameter (see :func:`issuer.store.postgres.split_postgres_url`).
    """
    if is_postgres_url(database):
        from .postgres import PostgresStore, split_postgres_url

        conninfo, schema = split_postgres_url(str(database))
        return PostgresStore(conninfo, schema=schema, **options)
    return SQLiteStore(database, **options)


def open_revocation_source(database: str | os.PathLike[str]) -> RevocationSource:
    """The :class:`RevocationSource` reading the store ``database`` names."""
    if is_postgres_url(database):
        from .postgres import PostgresRevocationSource, split_postgres_url

        conninfo, schema = split_postgres_url(str(database))
        return PostgresRevocationSource(conninfo, schema=schema)
    return SQLiteRevocationSource(database)
