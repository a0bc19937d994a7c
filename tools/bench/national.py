"""The national index's benchmarks, on real processes (:mod:`tools.bench.national_cluster`).

``python -m tools.bench national-registration [--rounds 5] [--cycles 200]``
  RegisterResident latency at a provincial issuer that claims every resident at
  the national index, against a province-only issuer (same code, no
  ``[national]`` section), both on this machine over loopback with mTLS,
  measured side by side: each round sends ``cycles`` registrations to each,
  one at a time and alternating, so both see the same machine. Target: the
  national claim adds at most 5 ms at the median.

``python -m tools.bench national-partition [--cycles 1000] [--concurrency 16]``
  Provinces 33 and 44 both register the same ``cycles`` people (and issue a
  code to each) while the national service is down; then it starts again and
  the provinces reconcile. Counted: main index IDs surviving nationally per
  person (target exactly one each, ``cycles`` in all), acknowledged
  registrations lost (target 0: every acknowledged entry is found at its
  province, as the survivor or merged into it), losing codes revoked (target
  all), and how long reconciliation took (from the national service
  answering SERVING until every person's national holder and both provinces'
  FindResident agree; polled, so an upper bound).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Sequence

import grpc

import healthcode as hc
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, \
    resident_index_pb2_grpc
from issuer.documents import make_resident_id

from .national_cluster import Cluster, desk_cn, province_cn

__all__ = ["run_registration", "run_partition"]

RPC_TIMEOUT = 30.0


def _people(count: int, *, region: str, start: int = 0) -> list[common_pb2.Document]:
    return [common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=make_resident_id(
        region, dt.date(1950, 1, 1) + dt.timedelta(days=i // 1000), i % 1000)) for i in range(start, start + count)]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- registration latency


def run_registration(*, rounds: int = 5, cycles: int = 200, out: Any = sys.stdout, **_ignored: object) -> dict:
    """Measure and print the report; returns {contender: [latency seconds]}."""
    rounds, cycles = int(rounds), int(cycles)
    latencies: dict[str, list[float]] = {"national": [], "province-only": []}
    per_round: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="healthcode-national-reg-") as tmp:
        cluster = Cluster(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc), provinces=("33", "11"),
                          hospitals=(), standalone=("11",))
        with cluster:
            cluster.start()
            stubs = {"national": resident_index_pb2_grpc.ResidentIndexStub(cluster.channel("33", desk_cn("33"))),
                     "province-only": resident_index_pb2_grpc.ResidentIndexStub(cluster.channel("11", desk_cn("11")))}
            people = _people(rounds * cycles + 20, region="330106")
            for warm in people[:20]:  # connections, TLS sessions, first-use paths
                for stub in stubs.values():
                    stub.RegisterResident(resident_index_pb2.RegisterResidentRequest(primary=warm), timeout=RPC_TIMEOUT)
            people = people[20:]
            for r in range(rounds):
                this_round: dict[str, list[float]] = {name: [] for name in stubs}
                for i in range(cycles):
                    document = people[r * cycles + i]
                    order = list(stubs) if i % 2 == 0 else list(reversed(stubs))
                    for name in order:
                        request = resident_index_pb2.RegisterResidentRequest(primary=document)
                        start = time.perf_counter()
                        reply = stubs[name].RegisterResident(request, timeout=RPC_TIMEOUT)
                        this_round[name].append(time.perf_counter() - start)
                        assert not reply.provisional, "the national service answered: no provisional entry"
                for name, values in this_round.items():
                    latencies[name] += values
                per_round.append((statistics.median(this_round["national"]),
                                  statistics.median(this_round["province-only"])))
    _report_registration(latencies, per_round, rounds=rounds, cycles=cycles, out=out)
    return latencies


def _report_registration(latencies: dict[str, list[float]], per_round: list[tuple[float, float]], *, rounds: int,
                         cycles: int, out: Any) -> None:
    print(f"# RegisterResident with the national claim against province-only  ({platform.python_implementation()} "
          f"{platform.python_version()}, {platform.machine()})\n", file=out)
    print("Three processes on 127.0.0.1 with mTLS (issuer 33 with `[national]`, issuer 11 without, the national "
          f"service); one client, one call at a time, alternating; {rounds} rounds of {cycles} registrations "
          "each.\n", file=out)
    print("| round | national p50 ms | province-only p50 ms | added ms |", file=out)
    print("|---:|---:|---:|---:|", file=out)
    for i, (a, b) in enumerate(per_round, 1):
        print(f"| {i} | {a * 1000:.2f} | {b * 1000:.2f} | {(a - b) * 1000:+.2f} |", file=out)
    print("\n| contender | p50 ms | p90 ms | p99 ms | max ms | calls |", file=out)
    print("|---|---:|---:|---:|---:|---:|", file=out)
    for name, values in latencies.items():
        print(f"| {name} | {_percentile(values, 0.5) * 1000:.2f} | {_percentile(values, 0.9) * 1000:.2f} | "
              f"{_percentile(values, 0.99) * 1000:.2f} | {max(values) * 1000:.2f} | {len(values):,} |", file=out)
    added = statistics.median(a - b for a, b in per_round) * 1000
    print("\n| target | measured | met |\n|---|---:|---|", file=out)
    print(f"| the national claim adds <= 5 ms at the median (median of the rounds' differences) | "
          f"{added:+.2f} ms | {'yes' if added <= 5 else 'NO'} |", file=out)


# --------------------------------------------------------------------------- partition


@dataclasses.dataclass
class _Ack:
    province: str
    main_index_id: str
    provisional: bool
    code_text: str
    person: int


async def _register_all(cluster: Cluster, people: list[common_pb2.Document], *, concurrency: int) -> list[_Ack]:
    acks: list[_Ack] = []
    jobs = iter([(p, i) for i in range(len(people)) for p in ("33", "44")])
    channels = {p: grpc.aio.secure_channel(cluster.issuers[p].address, cluster.credentials(desk_cn(p)))
                for p in ("33", "44")}

    async def worker() -> None:
        for province, i in jobs:
            index = resident_index_pb2_grpc.ResidentIndexStub(channels[province])
            codes = health_codes_pb2_grpc.HealthCodesStub(channels[province])
            reply = await index.RegisterResident(resident_index_pb2.RegisterResidentRequest(primary=people[i]),
                                                 timeout=RPC_TIMEOUT)
            code = await codes.IssueCode(health_codes_pb2.IssueCodeRequest(main_index_id=reply.main_index_id),
                                         timeout=RPC_TIMEOUT)
            acks.append(_Ack(province, reply.main_index_id, reply.provisional, code.code.code_text, i))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for channel in channels.values():
            await channel.close()
    return acks


async def _local_views(cluster: Cluster, people: list[common_pb2.Document], *, concurrency: int,
                       ) -> dict[tuple[str, int], tuple[str, str] | None]:
    """Each province's FindResident (main index ID, home province) per person; None when NOT_FOUND."""
    local: dict[tuple[str, int], tuple[str, str] | None] = {}
    async with grpc.aio.secure_channel(cluster.issuers["33"].address, cluster.credentials(desk_cn("33"))) as c33, \
            grpc.aio.secure_channel(cluster.issuers["44"].address, cluster.credentials(desk_cn("44"))) as c44:
        find = {"33": resident_index_pb2_grpc.ResidentIndexStub(c33),
                "44": resident_index_pb2_grpc.ResidentIndexStub(c44)}
        jobs = iter([(p, i) for i in range(len(people)) for p in find])

        async def worker() -> None:
            for p, i in jobs:
                try:
                    found = await find[p].FindResident(resident_index_pb2.FindResidentRequest(document=people[i]),
                                                       timeout=RPC_TIMEOUT)
                    local[(p, i)] = (found.main_index_id, found.home_province)
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    local[(p, i)] = None

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return local


async def _national_views(cluster: Cluster, people: list[common_pb2.Document], *, concurrency: int,
                          ) -> dict[int, tuple[str, str]]:
    """The national holder (main index ID, home province) per person, asked as province 11.

    A claim of a fresh ID by 11: HELD names the holder and stores nothing. Asked
    only once the provinces agree (a document nobody held would be claimed by 11).
    """
    from national.api import national_index_pb2, national_index_pb2_grpc

    national: dict[int, tuple[str, str]] = {}
    probe = hc.main_index_id_from_bytes(bytes(16))
    async with grpc.aio.secure_channel(cluster.national.address, cluster.credentials(province_cn("11"))) as channel:
        stub = national_index_pb2_grpc.NationalIndexStub(channel)
        jobs = iter(range(len(people)))

        async def worker() -> None:
            for i in jobs:
                reply = await stub.ClaimIdentity(national_index_pb2.ClaimIdentityRequest(
                    main_index_id=probe, documents=[people[i]]), timeout=RPC_TIMEOUT)
                if reply.outcome == national_index_pb2.CLAIM_OUTCOME_HELD:
                    national[i] = (reply.main_index_id, reply.home_province)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return national


async def _code_states(cluster: Cluster, acks: list[_Ack], *, concurrency: int) -> dict[str, common_pb2.IssuedCode]:
    states: dict[str, common_pb2.IssuedCode] = {}
    async with grpc.aio.secure_channel(cluster.issuers["33"].address, cluster.credentials(desk_cn("33"))) as c33, \
            grpc.aio.secure_channel(cluster.issuers["44"].address, cluster.credentials(desk_cn("44"))) as c44:
        stubs = {"33": health_codes_pb2_grpc.HealthCodesStub(c33), "44": health_codes_pb2_grpc.HealthCodesStub(c44)}
        jobs = iter(acks)

        async def worker() -> None:
            for ack in jobs:
                reply = await stubs[ack.province].GetCodeStatus(
                    health_codes_pb2.GetCodeStatusRequest(code_text=ack.code_text), timeout=RPC_TIMEOUT)
                states[ack.code_text] = reply.code

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return states


def run_partition(*, cycles: int = 1000, concurrency: int = 16, timeout: float = 600.0, out: Any = sys.stdout,
                  **_ignored: object) -> dict:
    """Run the partition, reconcile, count; print the report and return the counts."""
    people = _people(int(cycles), region="440106")
    concurrency = int(concurrency)
    with tempfile.TemporaryDirectory(prefix="healthcode-national-partition-") as tmp:
        cluster = Cluster(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc), provinces=("33", "44", "11"),
                          hospitals=())
        with cluster:
            cluster.start()
            cluster.national.stop()
            start = time.perf_counter()
            acks = asyncio.run(_register_all(cluster, people, concurrency=concurrency))
            registering = time.perf_counter() - start
            cluster.national.start()
            back = time.perf_counter()
            polls = 0
            while True:  # poll the provinces only: probing the national index could claim a free document
                polls += 1
                local = asyncio.run(_local_views(cluster, people, concurrency=concurrency))
                agreed = sum(1 for i in range(len(people))
                             if local.get(("33", i)) is not None and local.get(("33", i)) == local.get(("44", i)))
                if agreed == len(people) or time.perf_counter() - back > timeout:
                    break
                time.sleep(1.0)
            reconciled = time.perf_counter() - back
            national = asyncio.run(_national_views(cluster, people, concurrency=concurrency))
            agreed = sum(1 for i in range(len(people)) if i in national
                         and local.get(("33", i)) == national[i] == local.get(("44", i)))
            states = asyncio.run(_code_states(cluster, acks, concurrency=concurrency))
    return _report_partition(people, acks, national, local, states, agreed=agreed, registering=registering,
                             reconciled=reconciled, polls=polls, concurrency=concurrency, out=out)


def _report_partition(people, acks: list[_Ack], national, local, states, *, agreed: int, registering: float,
                      reconciled: float, polls: int, concurrency: int, out: Any) -> dict:
    survivors = {national[i][0] for i in national}
    acked_mids: dict[int, set[str]] = {}
    for ack in acks:
        acked_mids.setdefault(ack.person, set()).add(ack.main_index_id)
    foreign = sum(1 for i, (mid, _) in national.items() if mid not in acked_mids.get(i, set()))
    lost = 0
    losers = revoked = 0
    for ack in acks:
        survivor = national.get(ack.person, (None, None))[0]
        view = local.get((ack.province, ack.person))
        if view is None or view[0] != survivor:  # the entry is gone, or points at no survivor
            lost += 1
        state = states[ack.code_text]
        if ack.main_index_id != survivor:
            losers += 1
            revoked += (state.state == common_pb2.CODE_STATE_REVOKED
                        and state.revocation_reason == common_pb2.REVOCATION_REASON_MERGED)
    provisional = sum(1 for a in acks if a.provisional)
    result = {"people": len(people), "acked": len(acks), "provisional": provisional, "survivors": len(survivors),
              "foreign": foreign, "lost": lost, "losers": losers, "revoked": revoked, "agreed": agreed,
              "reconcile_s": reconciled}
    print(f"# Partition: two provinces register the same {len(people):,} people while the national service is "
          f"down  ({platform.python_implementation()} {platform.python_version()}, {platform.machine()})\n",
          file=out)
    print(f"Real processes on 127.0.0.1 (issuers 33, 44, 11 and the national service, mTLS). National service "
          f"stopped (SIGTERM); 33 and 44 each registered all {len(people):,} and issued a code to each "
          f"({concurrency} in flight, {registering:.1f} s); national service started; the provinces "
          f"reconcile on their own.\n", file=out)
    print("| measure | value | target | met |\n|---|---:|---:|---|", file=out)
    rows = [
        ("registrations acknowledged (provisional)", f"{len(acks):,} ({provisional:,})", f"{2 * len(people):,}",
         len(acks) == provisional == 2 * len(people)),
        ("main index IDs surviving nationally", f"{len(survivors):,}", f"{len(people):,}",
         len(survivors) == len(people) and len(national) == len(people) and foreign == 0),
        ("acknowledged registrations lost", f"{lost:,}", "0", lost == 0),
        ("losing codes revoked (MERGED)", f"{revoked:,} of {losers:,}", "all", revoked == losers == len(people)),
        ("people on which both provinces and the national index agree", f"{agreed:,}", f"{len(people):,}",
         agreed == len(people)),
        ("reconciliation time (SERVING to agreement; polled)", f"{reconciled:.1f} s ({polls} polls)", "-", True),
    ]
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'yes' if met else 'NO'} |", file=out)
    return result
