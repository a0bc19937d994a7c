"""Privacy on the national index's real store for deployments: a byte scan of PostgreSQL's files.

Fifty residents are claimed through the real national server (mTLS, JSON logs) on a PostgreSQL schema;
then the test reads, through the server itself (``pg_read_binary_file``, which a superuser may call):
every WAL segment written since the first claim, and every data file of the schema's tables and indexes
after a ``CHECKPOINT``. None may hold any encoding of an inserted number (``national_support.encodings``),
and neither may the service's log. Two positive controls keep the scan honest: a marker written to the
WAL in the same range is found there, and a claimed main index ID's stored bytes are found in the data
files — so a scan of the wrong bytes fails the test instead of passing it.
"""

from __future__ import annotations

import datetime as dt
import secrets

import psycopg
import pytest

from issuer.api import common_pb2
from national.api import national_index_pb2 as pb
from national.store import open_national_store

from .national_support import (LoopThread, NationalHarness, Pki, TestProvince, captured_json_logs, encodings, new_mid,
                               resident)

WAL_READ = 1 << 20  # bytes per pg_read_binary_file call


def superuser(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def wal_bytes(conn: psycopg.Connection, start_lsn: str, end_lsn: str) -> bytes:
    """The WAL from ``start_lsn`` to ``end_lsn`` exactly, read from the server's pg_wal segment by segment."""
    size = int(conn.execute("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'").fetchone()[0])
    first, last = (conn.execute("SELECT file_name, file_offset FROM pg_walfile_name_offset(%s::pg_lsn)",
                                (lsn,)).fetchone() for lsn in (start_lsn, end_lsn))
    names = [r[0] for r in conn.execute("SELECT name FROM pg_ls_waldir() WHERE name BETWEEN %s AND %s ORDER BY name",
                                        (first[0], last[0]))]
    assert names and names[0] == first[0] and names[-1] == last[0], "the test's WAL segments were recycled"
    out = bytearray()
    for name in names:
        begin = first[1] if name == first[0] else 0
        end = last[1] if name == last[0] else size
        for offset in range(begin, end, WAL_READ):
            out += conn.execute("SELECT pg_read_binary_file(%s, %s, %s)",
                                (f"pg_wal/{name}", offset, min(WAL_READ, end - offset))).fetchone()[0]
    return bytes(out)


def relation_files(conn: psycopg.Connection, schema: str) -> dict[str, bytes]:
    """Every data file (main fork, first segment) of the schema's tables, TOAST tables and indexes."""
    rows = conn.execute(
        """SELECT c.relname, pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('r', 'i', 't') AND pg_relation_filepath(c.oid) IS NOT NULL
           UNION ALL
           SELECT t.relname, pg_relation_filepath(t.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class t ON t.oid = c.reltoastrelid WHERE n.nspname = %s""", (schema, schema)).fetchall()
    files = {}
    for name, path in rows:
        files[f"{name} ({path})"] = conn.execute("SELECT pg_read_binary_file(%s, 0, 268435456, true)",
                                                 (path,)).fetchone()[0] or b""
    return files


def test_no_number_in_the_national_postgres_files_wal_or_logs(pg_schema):
    with psycopg.connect(pg_schema.server, autocommit=True) as admin, captured_json_logs() as logs:
        if not superuser(admin):
            pytest.skip("reading the server's WAL and data files needs a superuser")
        pg_schema.drop()
        loop, pki = LoopThread(), Pki.create()
        provinces = {"33": TestProvince("33", pki)}
        loop.run(provinces["33"].start())
        store = open_national_store(pg_schema.url, partitions=4)
        harness = NationalHarness(loop, pki, store, provinces)
        try:
            start_lsn = admin.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            stub = harness.index_stub("province:33")
            numbers = []
            first = secrets.randbelow(900)  # numbers of this run only: an earlier run's WAL cannot be mistaken
            for i in range(50):
                doc = resident(region="330106", n=first + i, birth=dt.date(1950, 1, 1) + dt.timedelta(
                    days=secrets.randbelow(20_000)))
                numbers.append(doc.number)
                stub.ClaimIdentity(pb.ClaimIdentityRequest(main_index_id=new_mid(), documents=[common_pb2.Document(
                    type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=doc.number)]), timeout=10)
            marker = b"hc-wal-marker-" + secrets.token_hex(8).encode()
            admin.execute("SELECT pg_logical_emit_message(false, 'hc-test', %s::bytea)", (marker,))
            admin.execute("CHECKPOINT")
            end_lsn = admin.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            wal = wal_bytes(admin, str(start_lsn), str(end_lsn))
            files = relation_files(admin, pg_schema.name)
            stored_mid = admin.execute(f'SELECT main_index_id FROM "{pg_schema.name}".identities LIMIT 1').fetchone()[0]
        finally:
            harness.close()
            store.close()
            loop.run(provinces["33"].stop())
            loop.close()

    blobs = {"WAL": wal, "service log": logs.getvalue().encode(), **files}
    assert marker in wal, "the WAL scan did not read the range the claims were written in"
    assert any(bytes(stored_mid) in blob for blob in files.values()), "the data-file scan read no claimed row"
    assert "ClaimIdentity" in logs.getvalue(), "the service logged nothing"
    for number in numbers:
        for needle in encodings(number):
            for name, blob in blobs.items():
                assert needle not in blob, f"an encoding of an inserted number is in {name}"
