"""Where the issuer keeps residents, identifiers and issued codes.

:mod:`issuer.store.base` is the interface (records, errors, :class:`Store`);
:mod:`issuer.store.sqlite` the default implementation, on one file;
:mod:`issuer.store.postgres` the same on PostgreSQL (it needs the
``postgres`` extra, and is imported only when a ``postgresql://`` URL is used).

:func:`open_store` picks one from the issuer's ``database`` setting.
"""

from __future__ import annotations

import os
from typing import Any

from .base import *  # noqa: F403 (the interface, re-exported: see base.__all__)
from . import base as _base
from .sqlite import SQLiteStore

__all__ = [*_base.__all__, "SQLiteStore", "POSTGRES_URL_PREFIXES", "is_postgres_url", "open_store",
           "open_revocation_source"]

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


def open_revocation_source(database: str | os.PathLike[str]) -> Any:
    """The :class:`~issuer.revocation_publisher.RevocationSource` reading the store ``database`` names."""
    if is_postgres_url(database):
        from .postgres import PostgresRevocationSource, split_postgres_url

        conninfo, schema = split_postgres_url(str(database))
        return PostgresRevocationSource(conninfo, schema=schema)
    from ..revocation_publisher import SQLiteRevocationSource

    return SQLiteRevocationSource(database)
