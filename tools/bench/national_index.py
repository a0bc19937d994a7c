"""``python -m tools.bench national-index``: the national index on PostgreSQL with millions of residents.

1. **Load**: ``residents`` synthetic residents (one identity and one document
   each) go into a fresh schema of their own (``national_bench_<pid>`` on the test
   server, dropped at the end), created by the real store (its migration: HASH
   partitions, primary keys, the documents-by-identity index). Rows are made in
   the server, 1M per statement (``INSERT ... SELECT FROM generate_series``):
   blind index ``md5(i||'a') || md5(i||'b')`` (32 bytes; HMAC output is as
   random), main index ID ``md5(i||'m')`` (16 bytes), so the run can look any
   of them up again without keeping them. ``--schema NAME`` loads into NAME
   instead and keeps it; a later run with the same NAME and size reuses that
   load (``--drop-schema`` drops it at the end).
2. **The database alone** (:mod:`tools.bench.national_pgbench`): ``pgbench``, a C
   client, at 4, 8 and ``concurrency`` clients (``-j 2``, ``-M prepared``) runs
   exactly the statements :mod:`national.store` sends for a lookup, a claim
   (the WITH of both INSERTs alone in autocommit) and the baseline below, in sessions
   set up as the store's (``plan_cache_mode=force_generic_plan``), ``seconds`` each,
   percentiles from its per-transaction log; and, as "before" diagnoses, the store as it
   was: the lookup with the default plan cache (``plan_cache_mode=auto``: it re-plans the
   partitioned join on every call), and the claim as ``BEGIN``; the WITH of both
   ``INSERT ... ON CONFLICT DO NOTHING`` with counts; ``COMMIT``.
3. **Store layer at 4, 8 and ``concurrency`` in flight** (threads, one pooled connection
   each), for ``seconds`` each, interleaved: *claims* of new residents through
   :meth:`national.index.NationalIndex.claim` (HMAC under the national key,
   the claim transaction); *lookups* of loaded residents through the store
   (the document joined to its identity, one statement); and the **baseline**: a
   trivial indexed lookup of the same table (``SELECT main_index_id FROM
   documents WHERE blind_index = %s``, autocommit) with the same threads. At ``concurrency``,
   the lookup and the claim again from ``processes`` processes of ``concurrency / processes``
   threads each (:mod:`tools.bench.national_processes`: how the service is deployed).
4. **gRPC**: a short run of ClaimIdentity through the real server (mTLS,
   admission, logs, metrics) in this process, ``concurrency`` in flight.
5. **Disk**: bytes per resident of identities + documents (tables, TOAST and
   indexes, every partition: ``pg_total_relation_size`` over ``pg_partition_tree``).

Prints a Markdown report with p50/p99, the ratio to the baseline and the
projection to 1.4 billion residents.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import os
import random
import threading
import time
from typing import Any, Callable

from healthcode.model import MainIndexId

from ._measure import percentile

__all__ = ["run"]

PG_URL = os.environ.get("HEALTHCODE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
CHUNK = 1_000_000
PARTITIONS = 16
TARGET_P99_MS = 10.0


def _loaded_key(i: int) -> bytes:
    return hashlib.md5(f"{i}a".encode()).digest() + hashlib.md5(f"{i}b".encode()).digest()


def _load(conn: Any, residents: int) -> float:
    start = time.perf_counter()
    conn.execute("DROP INDEX IF EXISTS documents_by_identity")  # built once after the load, as a restore would
    for lo in range(1, residents + 1, CHUNK):
        hi = min(residents, lo + CHUNK - 1)
        with conn.transaction():
            conn.execute(
                "INSERT INTO identities (main_index_id, home_province, state, survivor, registered_at, created_at) "
                "SELECT decode(md5(i::text || 'm'), 'hex'), (ARRAY['11','31','33','44','51','61'])[1 + mod(i, 6)], 1, "
                "NULL, 1700000000 + mod(i, 86400), 1700000000 FROM generate_series(%s::bigint, %s::bigint) AS i",
                (lo, hi))
            conn.execute(
                "INSERT INTO documents (blind_index, main_index_id) "
                "SELECT decode(md5(i::text || 'a') || md5(i::text || 'b'), 'hex'), decode(md5(i::text || 'm'), 'hex') "
                "FROM generate_series(%s::bigint, %s::bigint) AS i", (lo, hi))
        print(f"  loaded {hi:,} residents ({time.perf_counter() - start:.0f} s)", flush=True)
    with conn.transaction():
        conn.execute("CREATE INDEX documents_by_identity ON documents (main_index_id)")
    conn.execute("VACUUM ANALYZE identities")
    conn.execute("VACUUM ANALYZE documents")
    return time.perf_counter() - start


def _sizes(conn: Any) -> dict[str, int]:
    out = {}
    for table in ("identities", "documents"):
        row = conn.execute("SELECT sum(pg_total_relation_size(relid)), sum(pg_relation_size(relid)) "
                           "FROM pg_partition_tree(%s)", (table,)).fetchone()
        out[table], out[table + "_heap"] = int(row[0]), int(row[1])
    return out


def _lookup_op(store: Any) -> Callable[[int], None]:
    """A lookup of loaded resident ``i`` through the store (the document joined to its identity)."""

    def lookup(i: int) -> None:
        key = _loaded_key(i)
        assert store.read(lambda tx: tx.identity_by_document(key)) is not None, "a loaded resident is missing"

    return lookup


def _index(store: Any) -> Any:
    """A :class:`national.index.NationalIndex` over ``store`` with a fresh national key."""
    from national.blind_index import NationalBlindIndex, SoftwareHmacKey
    from national.index import NationalIndex

    return NationalIndex(store=store, blind=NationalBlindIndex(SoftwareHmacKey(os.urandom(32))))


def _claim_op(store: Any, region: str) -> Callable[[int], None]:
    """A claim of new resident ``i`` of ``region`` (6 digits) through :class:`national.index.NationalIndex`
    (HMAC under a fresh national key, then the claim transaction), registered now, by province 33."""
    from issuer.documents import make_resident_id, parse_document

    index = _index(store)
    now = dt.datetime.now(dt.timezone.utc)
    today = (now + dt.timedelta(hours=8)).date()

    def claim(i: int) -> None:
        number = make_resident_id(region, dt.date(1950, 1, 1) + dt.timedelta(days=i // 1000), i % 1000)
        index.claim(province="33", main_index_id=_mid(), documents=[parse_document("resident_id", number, today=today)],
                    provisional=False, registered_at=None, now=now)

    return claim


def _timed(op: Callable[[int], object], inputs: list[int], concurrency: int, seconds: float) -> list[float]:
    """Run ``op`` over ``inputs`` with ``concurrency`` threads for about ``seconds``; latencies in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    it = iter(inputs)

    def worker() -> None:
        mine = []
        while time.perf_counter() < deadline:
            with lock:
                item = next(it, None)
            if item is None:
                break
            t0 = time.perf_counter()
            op(item)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    with cf.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return latencies


def _row(name: str, lat: list[float], seconds: float, base_p99: float | None = None) -> str:
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    ratio = f"{p99 / base_p99:.1f}x" if base_p99 else "1.0x"
    return f"| {name} | {len(lat):,} | {len(lat) / seconds:,.0f}/s | {p50:.2f} | {p99:.2f} | {ratio} |"


def _grpc_run(index: Any, concurrency: int, seconds: float, first: int) -> list[float]:
    """ClaimIdentity through the real server on 127.0.0.1 (mTLS), ``concurrency`` in flight."""
    import asyncio

    import grpc

    from issuer.api import common_pb2
    from issuer.documents import make_resident_id
    from issuer.tls import DevPki
    from national.api import national_index_pb2 as pb
    from national.api import national_index_pb2_grpc as pb_grpc
    from national.resolution import CodeResolver
    from national.server import NationalServer, ServerOptions, TlsMaterial

    pki = DevPki.create(now=dt.datetime.now(dt.timezone.utc))
    server_pair, client = pki.server(), pki.client("province:33")
    latencies: list[float] = []

    async def main() -> None:
        import healthcode as hc

        resolver = CodeResolver(keyring=lambda: hc.Keyring([]), patients=None)  # type: ignore[arg-type]
        server = await NationalServer.start(ServerOptions(
            tls=TlsMaterial(server_pair.cert_pem, server_pair.key_pem, client_ca_pem=pki.ca_cert_pem),
            listen="127.0.0.1:0"), index=index, resolver=resolver)
        creds = grpc.ssl_channel_credentials(pki.ca_cert_pem, client.key_pem, client.cert_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
            stub = pb_grpc.NationalIndexStub(channel)
            counter = iter(range(first, first + 10_000_000))
            region = f"4401{random.randrange(10, 100)}"  # new residents even in a schema kept from an earlier run
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    i = next(counter)
                    number = make_resident_id(region, dt.date(1960, 1, 1) + dt.timedelta(days=i // 1000), i % 1000)
                    request = pb.ClaimIdentityRequest(main_index_id=_mid(), documents=[common_pb2.Document(
                        type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)])
                    t0 = time.perf_counter()
                    await stub.ClaimIdentity(request, timeout=30)
                    latencies.append((time.perf_counter() - t0) * 1000)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        await server.shutdown(0)

    asyncio.run(main())
    return latencies


def _mid() -> MainIndexId:
    import healthcode as hc

    return hc.main_index_id_from_bytes(os.urandom(16))


def _loaded(admin: Any, schema: str) -> tuple[int, float, dict[str, int]] | None:
    """(residents, load seconds, sizes) of an earlier load kept in ``schema``, or None."""
    row = admin.execute("SELECT to_regclass(%s)", (f"{schema}.bench_loaded",)).fetchone()
    if row[0] is None:
        return None
    row = admin.execute("SELECT residents, load_seconds, identities, identities_heap, documents, documents_heap "
                        "FROM bench_loaded").fetchone()
    if row is None:
        return None
    return int(row[0]), float(row[1]), {"identities": int(row[2]), "identities_heap": int(row[3]),
                                        "documents": int(row[4]), "documents_heap": int(row[5])}


def _pct(lat: list[float]) -> str:
    return f"{percentile(lat, 0.5):.2f} / {percentile(lat, 0.99):.2f}"


def run(*, residents: float = 10_000_000, concurrency: float = 32, seconds: float = 10.0, schema: str = "",
        drop_schema: bool = False, processes: float = 4) -> None:
    """``schema``: load into (or reuse an earlier load in) that schema and keep it, unless ``drop_schema``;
    without it, a fresh ``national_bench_<pid>`` dropped at the end. ``processes``: the store's calls at
    ``concurrency`` are also measured spread over that many processes (0: not)."""
    import psycopg

    from national.store import open_postgres_store

    from .national_pgbench import run_pgbench
    from .national_processes import in_processes

    n, conc = int(residents), int(concurrency)
    keep = bool(schema) and not drop_schema
    schema = schema or f"national_bench_{os.getpid()}"
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"
    store = open_postgres_store(url, partitions=PARTITIONS, pool_size=conc)
    admin = psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}")
    try:
        earlier = _loaded(admin, schema)
        if earlier is not None and earlier[0] == n:
            _, load_s, sizes = earlier
            print(f"national-index: reusing {n:,} residents loaded in schema {schema} ({load_s:.0f} s then)",
                  flush=True)
        else:
            print(f"national-index: loading {n:,} residents into schema {schema} ({PARTITIONS} partitions)",
                  flush=True)
            load_s = _load(admin, n)
            sizes = _sizes(admin)
            admin.execute("CREATE TABLE IF NOT EXISTS bench_loaded (residents bigint, load_seconds float8, "
                          "identities bigint, identities_heap bigint, documents bigint, documents_heap bigint)")
            admin.execute("DELETE FROM bench_loaded")
            admin.execute("INSERT INTO bench_loaded VALUES (%s, %s, %s, %s, %s, %s)",
                          (n, load_s, sizes["identities"], sizes["identities_heap"], sizes["documents"],
                           sizes["documents_heap"]))
        # new residents even in a schema kept from an earlier run (the processes' claims use 3302NN)
        claim = _claim_op(store, f"3301{random.randrange(10, 100)}")
        lookup = _lookup_op(store)

        local = threading.local()
        opened: list[Any] = []

        def baseline(i: int) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schema}")
                opened.append(conn)
            row = conn.execute("SELECT main_index_id FROM documents WHERE blind_index = %s",
                               (_loaded_key(i),)).fetchone()
            assert row is not None

        def pg(name: str, clients: int) -> list[float]:
            lat, took = run_pgbench(name, url=PG_URL, schema=schema, residents=n, clients=clients, seconds=seconds)
            pg_secs[(name, clients)] = took
            return lat

        rng = random.Random(14)
        sample = [rng.randrange(1, n + 1) for _ in range(2_000_000)]
        levels = sorted({c for c in (4, 8) if c < conc} | {conc})
        pg_secs: dict[tuple[str, int], float] = {}
        py: dict[tuple[str, int], list[float]] = {}
        db: dict[tuple[str, int], list[float]] = {}
        run_pgbench("lookup", url=PG_URL, schema=schema, residents=n, clients=conc, seconds=2.0)  # warm caches
        for k, level in enumerate(levels):
            # pgbench first, while this process holds few connections (max_connections is 100)
            for name in ("baseline", "lookup", "claim"):
                db[name, level] = pg(name, level)
                print(f"  pgbench {name} at {level}: p50/p99 {_pct(db[name, level])} ms", flush=True)
            _timed(baseline, sample[:2000], level, 2.0)  # warm connections
            _timed(lookup, sample[:2000], level, 2.0)
            py["baseline", level] = _timed(baseline, sample, level, seconds)
            py["lookup", level] = _timed(lookup, sample[::-1], level, seconds)
            py["claim", level] = _timed(claim, list(range(1 + k * 1_000_000, (k + 1) * 1_000_000)), level, seconds)
            for conn in opened:
                conn.close()
            opened.clear()
            local = threading.local()
            print(f"  python at {level}: baseline {_pct(py['baseline', level])}, lookup {_pct(py['lookup', level])}, "
                  f"claim {_pct(py['claim', level])} ms (p50 / p99)", flush=True)
        custom, custom_s = run_pgbench("lookup", url=PG_URL, schema=schema, residents=n, clients=conc,
                                       seconds=seconds, options="-c plan_cache_mode=auto")
        print(f"  pgbench lookup at {conc}, before (plan_cache_mode=auto): p50/p99 {_pct(custom)} ms", flush=True)
        three_trips, three_trips_s = run_pgbench("claim-before", url=PG_URL, schema=schema, residents=n,
                                                 clients=conc, seconds=seconds)
        print(f"  pgbench claim at {conc}, before (BEGIN; statement; COMMIT): p50/p99 {_pct(three_trips)} ms",
              flush=True)
        procs = int(processes)
        spread: dict[str, list[float]] = {}
        if procs > 1:
            for name in ("lookup", "claim"):
                spread[name] = in_processes(name, url=url, residents=n, in_flight=conc, processes=procs,
                                            seconds=seconds)
                print(f"  python {name} at {conc} in {procs} processes of {conc // procs} threads: p50/p99 "
                      f"{_pct(spread[name])} ms", flush=True)
        base, look, claims = py["baseline", conc], py["lookup", conc], py["claim", conc]
        base_p99 = percentile(base, 0.99)
        grpc_s = min(seconds, 5.0)
        try:
            grpc_lat = _grpc_run(_index(store), conc, grpc_s, 20_000_000)
        except Exception as e:  # noqa: BLE001 - report the store numbers even if the server run fails
            print(f"  the gRPC run failed: {type(e).__name__}: {e}", flush=True)
            grpc_lat = [float("nan")]
        db_base_p99 = percentile(db["baseline", conc], 0.99)
        per = (sizes["identities"] + sizes["documents"]) / n
        print()
        print(f"### National index on PostgreSQL, {n:,} residents ({PARTITIONS} HASH partitions), {conc} in flight")
        print()
        print(f"Load: {load_s:.0f} s. Latency in ms; ratio = p99 / the baseline's p99 (same run, same client: "
              "pgbench rows against the pgbench baseline, Python rows against the Python baseline).")
        print()
        print("| operation | calls | rate | p50 ms | p99 ms | p99 vs baseline |")
        print("|---|---:|---:|---:|---:|---:|")
        print(_row(f"pgbench baseline: `SELECT ... WHERE blind_index = $1` ({conc} clients, C)",
                   db["baseline", conc], pg_secs["baseline", conc]))
        print(_row("pgbench lookup: the store's lookup statement (generic plan)", db["lookup", conc],
                   pg_secs["lookup", conc], db_base_p99))
        print(_row("pgbench claim: the store's claim statement alone in autocommit", db["claim", conc],
                   pg_secs["claim", conc], db_base_p99))
        print(_row("before: pgbench lookup, same statement, `plan_cache_mode=auto` (custom plans)", custom,
                   custom_s, db_base_p99))
        print(_row("before: pgbench claim, BEGIN; WITH of both INSERT ... ON CONFLICT DO NOTHING; COMMIT",
                   three_trips, three_trips_s, db_base_p99))
        print(_row(f"Python baseline: `SELECT ... WHERE blind_index = %s` ({conc} threads)", base, seconds))
        print(_row("lookup (store: document joined to identity, one statement)", look, seconds, base_p99))
        print(_row("claim (NationalIndex.claim: HMAC + claim transaction)", claims, seconds, base_p99))
        for name in ("lookup", "claim"):
            if name in spread:
                print(_row(f"{name}, the same through {procs} processes of {conc // procs} threads (own store each)",
                           spread[name], seconds, base_p99))
        print(_row("claim over gRPC (ClaimIdentity, mTLS, in-process server)", grpc_lat, grpc_s, base_p99))
        print()
        verdict = {f"{who} {name}": "met" if percentile(lat, 0.99) <= TARGET_P99_MS else "NOT met"
                   for who, src in (("database (pgbench)", db), ("Python store, one process", py))
                   for name, lat in ((name, src[name, conc]) for name in ("lookup", "claim"))}
        verdict |= {f"Python store, {procs} processes, {name}": "met" if percentile(lat, 0.99) <= TARGET_P99_MS
                    else "NOT met" for name, lat in spread.items()}
        print(f"Target p99 <= {TARGET_P99_MS:.0f} ms at {conc}: "
              + ", ".join(f"{name} {v}" for name, v in verdict.items()) + ".")
        print()
        print("p50 / p99 ms by calls in flight (pgbench: C clients, one connection each; Python: threads of this "
              "process through the store, one pooled connection each):")
        print()
        print("| in flight | pgbench baseline | pgbench lookup | pgbench claim | Python baseline | Python lookup "
              "| Python claim |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for level in levels:
            print(f"| {level} | " + " | ".join(_pct(src[name, level]) for src in (db, py)
                                               for name in ("baseline", "lookup", "claim")) + " |")
        print()
        mib = {name: value / 2**20 for name, value in sizes.items()}
        print(f"Disk: identities {mib['identities']:,.0f} MiB (heap {mib['identities_heap']:,.0f}), "
              f"documents {mib['documents']:,.0f} MiB (heap {mib['documents_heap']:,.0f}): "
              f"**{per:.0f} bytes per resident** (one document each; tables + indexes).")
        total = per * 1.4e9
        print(f"Projection to 1.4 billion: {total / 1e12:.2f} TB per copy (x1.25 for a second document on a quarter "
              f"of residents: {total * 1.25 / 1e12:.2f} TB); with 256 partitions {1.4e9 / 256 / 1e6:.1f} M residents "
              f"and {total * 1.25 / 256 / 1e9:.1f} GB each; primary + 2 synchronous standbys: "
              f"{3 * total * 1.25 / 1e12:.1f} TB in all.")
    finally:
        store.close()
        if keep:
            print(f"(schema {schema} kept: reuse it with --schema {schema}, drop it with --drop-schema)")
        else:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()
