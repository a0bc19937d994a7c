"""Crash loop: kill -9 the real issuer during concurrent issuance, restart it, check nothing was lost.

``python -m tools.bench crashloop [--cycles 20]`` runs ``python -m issuer serve``
(TLS, API key, a SQLite file on disk) as a child process and, cycle after cycle:

1. drives ``IssueCode`` with many calls in flight from one grpc.aio client,
   half of them with an idempotency key, some of them retries of keys already
   answered, and records every *acknowledged* response (code text, ref, key);
2. sends SIGKILL to the server at a random moment while calls are in flight;
3. restarts it on the same database and checks:

   * every code ever acknowledged is stored, under its ref, with the same text
     (the database, opened read-only), and this cycle's are also answered by
     ``GetCodeStatus`` and verify with :func:`healthcode.verify` against the
     server's public key;
   * no (province, kid, serial) carries two different acknowledged codes, and
     no serial is stored twice;
   * retrying every keyed request of the cycle (same caller, same key) returns
     the original code; a request the kill cut off returns the code its first
     attempt committed if it did, else a new one, and the same one when retried
     again.

The server's files, the server process and the residents are
:mod:`tools.bench.crashloop_workspace`; this module is the load
(:func:`issue_until_killed`), the checks (:func:`check_after_restart`) and the
benchmark with its report (:func:`run`). The helpers are shared with
``tests/integration/test_crash.py``, which runs one such cycle.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import itertools
import os
import pathlib
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Callable, Sequence

import grpc

import healthcode as hc
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc

from .crashloop_workspace import CALLER, RPC_TIMEOUT, ServerProcess, Workspace, register_residents, resident_ids

__all__ = [
    "Ack",
    "LoadResult",
    "CheckResult",
    "issue_until_killed",
    "check_after_restart",
    "stored_codes",
    "run",
]


# --------------------------------------------------------------------------- load


@dataclasses.dataclass(frozen=True)
class Ack:
    """An acknowledged IssueCode response, as the client saw it."""

    main_index_id: str
    key: str | None
    text: str
    ref: tuple[str, bytes, int]  # (province, kid, serial)


def _ack(main_index_id: str, key: str | None, code: common_pb2.IssuedCode) -> Ack:
    return Ack(main_index_id, key, code.code_text, (code.ref.province, bytes(code.ref.kid), code.ref.serial))


@dataclasses.dataclass
class LoadResult:
    acks: list[Ack]
    #: keyed requests sent that were never acknowledged: key -> main index ID
    cut_off: dict[str, str]
    #: failures by status code before the kill (there should be none) and after it
    errors_before_kill: collections.Counter
    errors_after_kill: collections.Counter
    #: retries, while the server ran, of keys already answered; and how many got another code
    live_retries: int
    live_retry_mismatches: int
    seconds: float


async def issue_until_killed(
    channel: grpc.aio.Channel,
    metadata,
    main_index_ids: Sequence[str],
    *,
    kill: Callable[[], None],
    kill_after: float,
    concurrency: int = 48,
    key_prefix: str,
    rng: random.Random,
    keyed_fraction: float = 0.5,
    live_retry_fraction: float = 0.1,
    timeout: float = 30.0,
) -> LoadResult:
    """Keep ``concurrency`` IssueCode calls in flight; call ``kill()`` after ``kill_after`` seconds.

    Each call is for a random resident; a ``keyed_fraction`` of them carry a
    fresh idempotency key (``key_prefix-NNNNNN``), and a ``live_retry_fraction``
    re-send a key already answered (its answer must be the same code). Workers
    stop at the kill; the calls it cuts off fail (UNAVAILABLE and the like).
    Everything is bounded by ``timeout``.
    """
    stub = health_codes_pb2_grpc.HealthCodesStub(channel)
    acks: list[Ack] = []
    sent_keys: dict[str, str] = {}
    acked_keys: dict[str, Ack] = {}
    before: collections.Counter = collections.Counter()
    after: collections.Counter = collections.Counter()
    live = [0, 0]
    killed = asyncio.Event()
    numbers = itertools.count()

    async def worker() -> None:
        while not killed.is_set():
            key: str | None
            if acked_keys and rng.random() < live_retry_fraction:
                key = rng.choice(list(acked_keys))
                mid, original = sent_keys[key], acked_keys[key]
            else:
                mid = rng.choice(main_index_ids)
                key = f"{key_prefix}-{next(numbers):06d}" if rng.random() < keyed_fraction else None
                original = None
                if key is not None:
                    sent_keys[key] = mid
            request = health_codes_pb2.IssueCodeRequest(main_index_id=mid, idempotency_key=key or "")
            try:
                reply = await stub.IssueCode(request, metadata=metadata, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                (after if killed.is_set() else before)[e.code().name] += 1
                continue
            ack = _ack(mid, key, reply.code)
            acks.append(ack)
            if original is not None:
                live[0] += 1
                live[1] += ack.text != original.text
            elif key is not None:
                acked_keys[key] = ack

    async def killer() -> None:
        await asyncio.sleep(kill_after)
        kill()
        killed.set()

    start = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    kill_task = asyncio.ensure_future(killer())
    try:
        await asyncio.wait_for(asyncio.gather(kill_task, *tasks), timeout)
    finally:
        for task in [kill_task, *tasks]:
            task.cancel()
        if not killed.is_set():
            kill()
    cut_off = {key: mid for key, mid in sent_keys.items() if key not in acked_keys}
    return LoadResult(acks, cut_off, before, after, live[0], live[1], time.perf_counter() - start)


# --------------------------------------------------------------------------- checks


def stored_codes(database: pathlib.Path) -> tuple[dict[tuple[str, bytes, int], str], dict[str, str], int]:
    """Read the database read-only: (ref -> text, idempotency key -> text of CALLER's codes, refs stored twice)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        by_ref: dict[tuple[str, bytes, int], str] = {}
        by_key: dict[str, str] = {}
        for province, kid, serial, text, caller, key in conn.execute(
            "SELECT province, kid, serial, text, caller, idempotency_key FROM codes"
        ):
            by_ref[(province, bytes(kid), serial)] = text
            if caller == CALLER and key is not None:
                by_key[key] = text
        (twice,) = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM codes GROUP BY province, kid, serial HAVING count(*) > 1)"
        ).fetchone()
    finally:
        conn.close()
    return by_ref, by_key, twice


@dataclasses.dataclass
class CheckResult:
    acknowledged: int  # distinct codes acknowledged (this cycle)
    lost: list[Ack]  # acknowledged (ever) but not stored as acknowledged
    status_mismatches: list[Ack]  # GetCodeStatus did not return the acknowledged code (this cycle)
    unverifiable: list[Ack]  # healthcode.verify refused it, or it names another resident/serial
    duplicate_refs_acked: int  # refs with two different acknowledged codes (ever)
    duplicate_refs_stored: int  # refs stored twice (the UNIQUE index should make this impossible)
    retries: int  # idempotent retries sent after the restart
    retry_mismatches: list[str]  # keys whose retry returned another code
    cut_off_committed: int  # cut-off keys whose first attempt had committed (the retry returned it)
    cut_off_new: int  # cut-off keys that got a new code on retry
    retry_errors: collections.Counter
    new_acks: list[Ack]  # codes the retries of cut-off keys produced (acknowledged now)

    @property
    def lost_count(self) -> int:
        """Distinct acknowledged codes missing, altered, unanswered or unverifiable."""
        return len({ack.text for ack in self.lost + self.status_mismatches + self.unverifiable})

    @property
    def ok(self) -> bool:
        return not (self.lost or self.status_mismatches or self.unverifiable or self.duplicate_refs_acked
                    or self.duplicate_refs_stored or self.retry_mismatches or self.retry_errors)


async def _bounded(items: Sequence, fn, concurrency: int) -> None:
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)) or 1)))


async def check_after_restart(
    workspace: Workspace,
    channel: grpc.aio.Channel,
    load: LoadResult,
    *,
    earlier_acks: Sequence[Ack] = (),
    now: dt.datetime,
    concurrency: int = 32,
) -> CheckResult:
    """Check the restarted server against what ``load`` saw acknowledged (and ``earlier_acks``)."""
    codes = health_codes_pb2_grpc.HealthCodesStub(channel)
    metadata = workspace.metadata
    # (1) the database, read-only: everything ever acknowledged is stored as acknowledged
    by_ref, by_key, stored_twice = stored_codes(workspace.database)
    distinct = {ack.text: ack for ack in load.acks}
    everything = {ack.text: ack for ack in earlier_acks}
    everything.update(distinct)
    lost = [ack for ack in everything.values() if by_ref.get(ack.ref) != ack.text]
    texts_by_ref: dict[tuple, set[str]] = collections.defaultdict(set)
    for ack in everything.values():
        texts_by_ref[ack.ref].add(ack.text)
    duplicate_refs = sum(1 for texts in texts_by_ref.values() if len(texts) > 1)

    # (2) this cycle's codes through the API, and their signatures
    keyring = workspace.keyring(now)
    mismatched: list[Ack] = []
    unverifiable: list[Ack] = []

    async def status(ack: Ack) -> None:
        ref = common_pb2.CodeRef(province=ack.ref[0], kid=ack.ref[1], serial=ack.ref[2])
        try:
            reply = await codes.GetCodeStatus(health_codes_pb2.GetCodeStatusRequest(ref=ref), metadata=metadata,
                                              timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError:
            mismatched.append(ack)
            return
        # VALID, or superseded by the resident's next static code (one live code per channel, issue 13)
        superseded = (reply.code.state == common_pb2.CODE_STATE_REVOKED
                      and reply.code.revocation_reason == common_pb2.REVOCATION_REASON_SUPERSEDED)
        if reply.code.code_text != ack.text or not (reply.code.state == common_pb2.CODE_STATE_VALID or superseded):
            mismatched.append(ack)

    await _bounded(list(distinct.values()), status, concurrency)
    for ack in distinct.values():
        try:
            verified = hc.verify(ack.text, keyring, now=now)
        except hc.VerificationError:
            unverifiable.append(ack)
            continue
        if (verified.province, verified.kid, verified.serial) != ack.ref or verified.subject != ack.main_index_id:
            unverifiable.append(ack)

    # (3) idempotent retries: acknowledged keys get their code back; cut-off keys get the code
    #     their first attempt committed, if any, else a new one, and the same one twice
    retry_mismatches: list[str] = []
    errors: collections.Counter = collections.Counter()
    new_acks: list[Ack] = []
    outcome = [0, 0, 0]  # retries, committed, new

    async def issue(mid: str, key: str) -> common_pb2.IssuedCode | None:
        outcome[0] += 1
        try:
            reply = await codes.IssueCode(health_codes_pb2.IssueCodeRequest(main_index_id=mid, idempotency_key=key),
                                          metadata=metadata, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            errors[e.code().name] += 1
            return None
        return reply.code

    async def retry_acked(item: tuple[str, Ack]) -> None:
        key, ack = item
        code = await issue(ack.main_index_id, key)
        if code is not None and code.code_text != ack.text:
            retry_mismatches.append(key)

    async def retry_cut_off(item: tuple[str, str]) -> None:
        key, mid = item
        first = await issue(mid, key)
        second = await issue(mid, key)
        if first is None or second is None:
            return
        committed = by_key.get(key)
        if first.code_text != second.code_text or (committed is not None and first.code_text != committed):
            retry_mismatches.append(key)
            return
        outcome[1 if committed is not None else 2] += 1
        new_acks.append(_ack(mid, key, first))

    keyed = {ack.key: ack for ack in distinct.values() if ack.key is not None}
    await _bounded(list(keyed.items()), retry_acked, concurrency)
    await _bounded(sorted(load.cut_off.items()), retry_cut_off, concurrency)

    # (4) the retries' new codes are stored once, too
    by_ref, _, stored_twice_after = stored_codes(workspace.database)
    lost += [ack for ack in new_acks if by_ref.get(ack.ref) != ack.text]
    return CheckResult(
        acknowledged=len(distinct),
        lost=lost,
        status_mismatches=mismatched,
        unverifiable=unverifiable,
        duplicate_refs_acked=duplicate_refs,
        duplicate_refs_stored=max(stored_twice, stored_twice_after),
        retries=outcome[0],
        retry_mismatches=retry_mismatches,
        cut_off_committed=outcome[1],
        cut_off_new=outcome[2],
        retry_errors=errors,
        new_acks=new_acks,
    )


# --------------------------------------------------------------------------- the benchmark


@dataclasses.dataclass
class _Cycle:
    index: int
    load: LoadResult
    check: CheckResult
    exit_code: int
    restart_seconds: float
    seconds: float


def run(*, cycles: int = 20, residents: int = 200, concurrency: int = 48, out=sys.stdout, seed: int | None = None,
        **_ignored) -> list[_Cycle]:
    """Run ``cycles`` kill -9 cycles and print a Markdown report. Returns the cycles."""
    rng = random.Random(seed)
    results: list[_Cycle] = []
    with tempfile.TemporaryDirectory(prefix="healthcode-crashloop-") as tmp:
        workspace = Workspace.create(pathlib.Path(tmp), now=dt.datetime.now(dt.timezone.utc))
        server = ServerProcess.issuer(workspace)
        try:
            mids = asyncio.run(_register(workspace, server.port, residents))
            all_acks: list[Ack] = []
            for index in range(1, cycles + 1):
                cycle_start = time.perf_counter()
                load = asyncio.run(_drive(workspace, server, mids, concurrency=concurrency, rng=rng,
                                          key_prefix=f"c{index:02d}", kill_after=rng.uniform(0.8, 2.0)))
                exit_code = server.wait()
                restart_start = time.perf_counter()
                server = ServerProcess.issuer(workspace)
                restart = time.perf_counter() - restart_start
                check = asyncio.run(_check(workspace, server.port, load, all_acks))
                all_acks += load.acks + check.new_acks
                results.append(_Cycle(index, load, check, exit_code, restart, time.perf_counter() - cycle_start))
            final_code = server.terminate()
        finally:
            server.close()
        by_ref, _, stored_twice = stored_codes(workspace.database)
        final_lost = sum(1 for ack in {a.text: a for a in all_acks}.values() if by_ref.get(ack.ref) != ack.text)
        _report(results, out=out, residents=residents, concurrency=concurrency, final_lost=final_lost,
                stored_twice=stored_twice, stored=len(by_ref), final_code=final_code)
    return results


async def _register(workspace: Workspace, port: int, count: int) -> list[str]:
    async with workspace.channel(port) as channel:
        return await register_residents(channel, workspace.metadata, resident_ids(count))


async def _drive(workspace: Workspace, server: ServerProcess, mids, **kw) -> LoadResult:
    async with workspace.channel(server.port) as channel:
        return await issue_until_killed(channel, workspace.metadata, mids, kill=server.kill, **kw)


async def _check(workspace: Workspace, port: int, load: LoadResult, earlier: Sequence[Ack]) -> CheckResult:
    async with workspace.channel(port) as channel:
        return await check_after_restart(workspace, channel, load, earlier_acks=earlier,
                                         now=dt.datetime.now(dt.timezone.utc))


def _report(cycles: list[_Cycle], *, out, residents: int, concurrency: int, final_lost: int, stored_twice: int,
            stored: int, final_code: int) -> None:
    print(f"# Crash loop: kill -9 of the issuer under concurrent IssueCode  ({platform.python_implementation()} "
          f"{platform.python_version()}, {os.cpu_count()} CPUs)\n", file=out)
    print(f"`python -m issuer serve` (TLS, API key, SQLite WAL synchronous=FULL) in a child process; "
          f"{residents} residents; one grpc.aio client with {concurrency} IssueCode calls in flight "
          f"(half with an idempotency key, 10% retries of keys already answered); SIGKILL at a random "
          f"0.8-2.0 s; restart on the same file; checks against the database (read-only) and the API.\n", file=out)
    print("| cycle | acked | acked/s | cut off (keyed) | lost | dup. serials | idem. retries | "
          "retry → other code | cut-off: committed / new | errors before kill | exit | restart s | cycle s |",
          file=out)
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|", file=out)
    for c in cycles:
        ch, ld = c.check, c.load
        print(f"| {c.index} | {ch.acknowledged} | {ch.acknowledged / ld.seconds:,.0f} | {len(ld.cut_off)} | "
              f"{ch.lost_count} | "
              f"{ch.duplicate_refs_acked + ch.duplicate_refs_stored} | {ch.retries + ld.live_retries} | "
              f"{len(ch.retry_mismatches) + ld.live_retry_mismatches} | {ch.cut_off_committed} / {ch.cut_off_new} | "
              f"{sum(ld.errors_before_kill.values())} | {c.exit_code} | {c.restart_seconds:.2f} | "
              f"{c.seconds:.2f} |", file=out)
    acked = sum(c.check.acknowledged + len(c.check.new_acks) for c in cycles)
    lost = sum(c.check.lost_count for c in cycles)
    dups = sum(c.check.duplicate_refs_acked + c.check.duplicate_refs_stored for c in cycles)
    retries = sum(c.check.retries + c.load.live_retries for c in cycles)
    mismatches = sum(len(c.check.retry_mismatches) + c.load.live_retry_mismatches for c in cycles)
    retry_errors = sum(sum(c.check.retry_errors.values()) for c in cycles)
    times = [c.seconds for c in cycles]
    print("\n| total | value |", file=out)
    print("|---|---:|", file=out)
    print(f"| kill -9 cycles | {len(cycles)} |", file=out)
    print(f"| acknowledged issuances (incl. retried cut-off requests) | {acked:,} |", file=out)
    print(f"| lost acknowledged issuances (per-cycle checks) | **{lost}** |", file=out)
    print(f"| lost acknowledged issuances (all, database after the last cycle) | **{final_lost}** |", file=out)
    print(f"| duplicated serials (acknowledged, and stored) | **{dups + stored_twice}** |", file=out)
    print(f"| idempotent retries | {retries:,} |", file=out)
    print(f"| idempotent retries that returned a different code | **{mismatches}** |", file=out)
    print(f"| failed retries | {retry_errors} |", file=out)
    print(f"| codes stored | {stored:,} |", file=out)
    print(f"| time per cycle, median (min-max) | {statistics.median(times):.2f} s "
          f"({min(times):.2f}-{max(times):.2f}) |", file=out)
    print(f"| exit code after the last cycle (SIGTERM, graceful) | {final_code} |", file=out)
