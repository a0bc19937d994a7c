"""The national index's statements measured at the database with a C client, ``pgbench``.

Used by ``python -m tools.bench national-index``: it separates what PostgreSQL itself
takes at N clients from what the Python service (threads sharing one GIL, on the
same cores as the database) adds on top.

Each script runs **the statement text** :mod:`national.store` sends (the same
columns, joins, ``ON CONFLICT`` and ``RETURNING``), with the parameters made in
the server from a pgbench random number, exactly as the loader made the rows
(``md5(i::text || 'a') || md5(i::text || 'b')``), so every lookup hits a loaded
resident and every claim is new:

* ``baseline``: ``SELECT main_index_id FROM documents WHERE blind_index = ...``;
* ``lookup``: :meth:`national.store.Tx.identity_by_document` (the document joined to
  its identity, one statement, autocommit as :meth:`NationalStore.read` runs it);
* ``claim``: :meth:`national.store.Tx.claim_new` on PostgreSQL as
  :meth:`NationalStore.statement` runs it (the WITH of both plain INSERTs alone in
  autocommit: one round trip), a new identity with one new document;
* ``claim-before`` (a diagnosis, the store before issue 14's fix): ``BEGIN``; the WITH of
  both ``INSERT ... ON CONFLICT DO NOTHING RETURNING 1`` with counts; ``COMMIT``.

The sessions start as the store's do (:data:`national.store.POSTGRES_SESSION_OPTIONS`,
``plan_cache_mode=force_generic_plan``); ``options`` can override that for a diagnosis.

``-M prepared`` (psycopg prepares a statement after its 5th use too), ``-j 2``
threads, one connection per client, latencies from the per-transaction log
(``-l``; microseconds), percentiles in Python.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tempfile

from national.store import POSTGRES_SESSION_OPTIONS

__all__ = ["SCRIPTS", "pgbench_path", "run_pgbench"]

_KEY = "decode(md5(:i::text || 'a') || md5(:i::text || 'b'), 'hex')"

#: name -> script body; ``{n}`` is the number of loaded residents.
SCRIPTS: dict[str, str] = {
    "baseline": (
        "\\set i random(1, {n})\n"
        f"SELECT main_index_id FROM documents WHERE blind_index = {_KEY};\n"),
    "lookup": (
        "\\set i random(1, {n})\n"
        "SELECT i.main_index_id, i.home_province, i.state, i.survivor, i.registered_at, i.created_at "
        "FROM documents d JOIN identities i ON i.main_index_id = d.main_index_id "
        f"WHERE d.blind_index = {_KEY};\n"),
    # r far above the loaded range and a suffix the loader never used: each claim is new.
    "claim": (
        "\\set r random(100000000000, 9000000000000000000)\n"
        "WITH i AS (INSERT INTO identities (main_index_id, home_province, state, survivor, registered_at, "
        "created_at) VALUES (decode(md5(:r::text || 'n'), 'hex'), '33', 1, NULL, 1765000000, 1765000000)) "
        "INSERT INTO documents (blind_index, main_index_id) VALUES "
        "(decode(md5(:r::text || 'c') || md5(:r::text || 'd'), 'hex'), decode(md5(:r::text || 'n'), 'hex'));\n"),
    "claim-before": (
        "\\set r random(100000000000, 9000000000000000000)\n"
        "BEGIN;\n"
        "WITH i AS (INSERT INTO identities (main_index_id, home_province, state, survivor, registered_at, "
        "created_at) VALUES (decode(md5(:r::text || 'n'), 'hex'), '33', 1, NULL, 1765000000, 1765000000) "
        "ON CONFLICT DO NOTHING RETURNING 1), "
        "d AS (INSERT INTO documents (blind_index, main_index_id) VALUES "
        "(decode(md5(:r::text || 'c') || md5(:r::text || 'd'), 'hex'), decode(md5(:r::text || 'n'), 'hex')) "
        "ON CONFLICT DO NOTHING RETURNING 1) "
        "SELECT (SELECT count(*) FROM i), (SELECT count(*) FROM d);\n"
        "END;\n"),
}


def pgbench_path() -> str:
    """``pgbench`` on PATH, else in the Debian PostgreSQL 15 directory; FileNotFoundError if neither."""
    found = shutil.which("pgbench") or next(
        (str(p) for p in sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None)
    if found is None:
        raise FileNotFoundError("pgbench is not installed (Debian: postgresql-client)")
    return found


def run_pgbench(name: str, *, url: str, schema: str, residents: int, clients: int,
                seconds: float, options: str = "") -> tuple[list[float], float]:
    """Run script ``name`` with ``clients`` connections for ``seconds``: (latencies in ms, duration s).

    ``url`` is a libpq URL without ``?schema``; the schema and the store's session settings go in
    by ``PGOPTIONS``, with ``options`` (more ``-c name=value`` settings, which win) after them.
    Raises :class:`subprocess.CalledProcessError` when pgbench fails (its output in the error).
    """
    with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
        script = pathlib.Path(tmp, f"{name}.sql")
        script.write_text(SCRIPTS[name].format(n=residents))
        prefix = str(pathlib.Path(tmp, "log"))
        env = {**os.environ, "PGOPTIONS": f"-c search_path={schema} {POSTGRES_SESSION_OPTIONS} {options}".strip()}
        done = subprocess.run(
            [pgbench_path(), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients)),
             "-T", str(max(1, round(seconds))), "-f", str(script), "-l", f"--log-prefix={prefix}", url],
            env=env, cwd=tmp, capture_output=True, text=True, timeout=seconds + 120)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, "pgbench", done.stdout, done.stderr)
        latencies: list[float] = []
        for log in pathlib.Path(tmp).glob("log.*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 6 and fields[2].isdigit():  # skipped/failed transactions say so instead
                    latencies.append(int(fields[2]) / 1000)
        match = re.search(r"duration: (\d+) s", done.stdout)
        duration = float(match.group(1)) if match else seconds
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        if failed and int(failed.group(1)):
            raise RuntimeError(f"pgbench {name}: {failed.group(1)} transactions failed")
    return latencies, duration
