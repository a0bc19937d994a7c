"""A real PostgreSQL for tests: where it is, whether it is up, and a throwaway schema.

The server is ``HEALTHCODE_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it cannot be reached
(or psycopg is not installed) the tests that need it are skipped, except
under ``CI=true``, where they fail: CI must not pass by skipping them.

Each test module gets its own schema with a random name (the
``pg_schema`` fixture in ``conftest.py``), dropped when the module ends.
"""

from __future__ import annotations

import functools
import os
import secrets

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("HEALTHCODE_TEST_POSTGRES", DEFAULT_URL)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@functools.cache
def _unreachable_reason() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (the 'postgres' extra)"
    try:
        psycopg.connect(server_url(), connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {server_url()}: {str(exc).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip the calling test if PostgreSQL cannot be reached; fail it under CI=true."""
    reason = _unreachable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


class PgSchema:
    """A schema with a random name on the test server; the store creates it, :meth:`drop` removes it."""

    def __init__(self) -> None:
        self.server = server_url()
        self.name = f"hc_test_{secrets.token_hex(6)}"

    @property
    def url(self) -> str:
        """The issuer's ``database`` setting for this schema."""
        return f"{self.server}{'&' if '?' in self.server else '?'}schema={self.name}"

    def connect(self, **kwargs):
        """A raw autocommit connection with ``search_path`` set to the schema."""
        import psycopg

        return psycopg.connect(self.server, autocommit=True, options=f"-c search_path={self.name} -c TimeZone=UTC",
                               **kwargs)

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True, options="-c lock_timeout=10000") as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')

    def __repr__(self) -> str:
        return f"<PgSchema {self.name}>"
