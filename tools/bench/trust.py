"""Benchmark of the trust distribution (issue: per-province keys and the national trust repository).

Builds a national repository of all 34 provinces (root and targets 3 of 5,
each province 2 of 3 Ed25519 TUF keys, each province's key list holding six
ES256 keys: one active, one pre-published, four retired), mirrors it as a
directory, and prints from one run:

* the bytes a verifier transfers for a refresh after ONE province rotated
  its key (target: <= 10 kB), file by file, counted by the fetcher; the same
  for a key marked compromised, and for a refresh with nothing new;
* the time of a first sync of all 34 provinces from the local mirror
  (target: < 2 s) against a baseline measured in the same rounds: reading
  and JSON-parsing the very same files without any verification;
* the time of an offline start-up (``load_cached``: re-verifying the cache);
* the size of every metadata file, next to the research prototype's;
* revocation at steady state: province 33 publishes one large shard every
  hour, pushed exactly as the issuer's revocation job pushes it
  (``issuer.revocation_job.push_directory``), until it keeps its full window
  of deltas; a verifier refreshing after each of the last 24 publications
  records what it downloads, file by file: TUF metadata against the
  revocation data itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from securesystemslib.signer import CryptoSigner

import healthcode as hc
from healthcode.keylist import KeyList
from healthcode.revocation import RevocationState, delta_target, encode_delta, shard_directory, snapshot_target
from keys.trustrepo import TrustRepository
from verifier.revocation_sync import ShardSync
from verifier.trustsync import DirectoryFetcher, SyncResult, TrustSync

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
_MINUTE = dt.timedelta(minutes=1)
KEYS_PER_PROVINCE = 6
# research/revocation-and-trust.md section 4.3, python-tuf 7.0.1 prototype
PROTOTYPE = {"root": "3.6 KB", "targets": "30 KB", "snapshot": "1.2 KB", "timestamp": "369 B", "province": "~1 KB"}


class _LoggingFetcher(DirectoryFetcher):
    """The directory fetcher, recording every file it serves and its size."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.log: list[tuple[str, int]] = []

    def _fetch(self, url: str):
        chunks = super()._fetch(url)

        def counted():
            size = 0
            for chunk in chunks:
                size += len(chunk)
                yield chunk
            self.log.append((url.removeprefix(self.base_url), size))

        return counted()


def _gen(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


def _key_list(code: str, serial: int, keys, now: dt.datetime, *, compromised: bool = False) -> KeyList:
    """Six keys on a 90-day rotation: four retired, the active one, the pre-published next one."""
    province = hc.ProvinceCode(code)
    entries = []
    for index, key in enumerate(keys):
        start = now + (index - 4) * 90 * DAY
        status = hc.KeyStatus.RETIRED if index < 4 else hc.KeyStatus.ACTIVE
        compromised_since = None
        if compromised and index == 4:
            status = hc.KeyStatus.COMPROMISED
            compromised_since = now
        entries.append(
            hc.TrustedKey(
                kid=key.public_key().key_id(), province=province, public_key=key.public_key(),
                use_from=start, use_until=start + 90 * DAY, verify_until=start + 120 * DAY,
                status=status, compromised_since=compromised_since,
            )
        )
    return KeyList(province=province, serial=serial, keys=tuple(entries))


def _build(directory: Path, now: dt.datetime):
    national = {"root": _gen(5), "targets": _gen(5), "snapshot": _gen(1), "timestamp": _gen(1)}
    repo, _ = TrustRepository.init(
        directory,
        root_signers=national["root"], root_threshold=3,
        targets_signers=national["targets"], targets_threshold=3,
        snapshot_signers=national["snapshot"], timestamp_signers=national["timestamp"],
        now=now,
    )
    provinces = {}
    for code in hc.PROVINCES:
        tuf_keys = _gen(3)
        keys = [hc.generate_signing_key(hc.Algorithm.ES256) for _ in range(KEYS_PER_PROVINCE)]
        repo.add_province(code, tuf_keys, 2, targets_signers=national["targets"][:3], now=now)
        repo.publish_key_list(_key_list(code, 1, keys, now), tuf_keys[:2], now=now)
        provinces[code] = (tuf_keys, keys)
    repo.publish(now=now)
    return repo, provinces


def _client(base: Path, name: str, repo: TrustRepository, fetcher=None) -> TrustSync:
    return TrustSync(base / name / "metadata", base / name / "targets", repo.directory,
                     repo.root_bytes(1), fetcher=fetcher)


#: The steady-state shard: the largest of the national scenario (``tools.bench.revocation``) and its
#: share of the day's revocations (14,000 a day over ~100 shards: ~6 an hour).
SHARD_UNIVERSE = 30_600_000
SHARD_REVOKED = 218_850
REVOKED_PER_HOUR = 6
ISSUED_PER_HOUR = 5_000


def _revocation_steady_state(repo: TrustRepository, provinces, base: Path, now: dt.datetime) -> dict:
    """Hourly publications of one shard of province 33 until its delta window is full, then 24 more,
    each followed by a verifier's refresh; returns what the last 24 refreshes downloaded."""
    from issuer.revocation_job import push_directory
    from issuer.revocation_publisher import DEFAULT_KEEP_DELTAS

    tuf_keys, keys = provinces["33"]
    kid = keys[4].public_key().key_id()  # the active key: a live shard for the verifier
    rng = random.Random(20201101)
    serials = set(rng.sample(range(SHARD_UNIVERSE), SHARD_REVOKED))
    state = RevocationState("33", kid, seq=1, universe=SHARD_UNIVERSE, serials=sorted(serials))
    out = base / "revocation-out"
    shard = out / shard_directory("33", kid)
    shard.mkdir(parents=True)
    (shard / "snapshot.hcrs").write_bytes(state.to_snapshot())
    t = now + 5 * HOUR
    push_directory(repo, "33", out, tuf_keys[:2], now=t, publish=True)
    watcher = _LoggingFetcher(repo.directory)
    verifier = _client(base, "revocation-verifier", repo, watcher)
    first = _shard_synced(verifier.refresh(t + 60 * _MINUTE), "33", kid)
    assert first.seq == 1, first
    hours = DEFAULT_KEEP_DELTAS + 24
    refreshes, delta_bytes = [], []
    for hour in range(1, hours + 1):
        t = now + (5 + hour) * HOUR
        universe = state.universe + ISSUED_PER_HOUR
        while True:
            fresh = {rng.randrange(universe) for _ in range(REVOKED_PER_HOUR)} - serials
            if len(fresh) == REVOKED_PER_HOUR:
                break
        serials |= fresh
        new = RevocationState("33", kid, seq=state.seq + 1, universe=universe, serials=sorted(serials))
        delta = encode_delta(state, new)
        (shard / Path(delta_target("33", kid, state.seq)).name).write_bytes(delta)
        (shard / "snapshot.hcrs").write_bytes(new.to_snapshot())
        old = shard / Path(delta_target("33", kid, new.seq - 1 - DEFAULT_KEEP_DELTAS)).name
        old.unlink(missing_ok=True)  # the publisher keeps keep_deltas deltas
        state = new
        push_directory(repo, "33", out, tuf_keys[:2], now=t, publish=True)
        watcher.log.clear()
        synced = _shard_synced(verifier.refresh(t + _MINUTE), "33", kid)
        assert synced.seq == state.seq and synced.action == "deltas", synced
        if hour > hours - 24:
            refreshes.append(list(watcher.log))
            delta_bytes.append(len(delta))
    role = repo.province_targets("33")
    assert role is not None, "province 33 has published its role"
    listed = sum(1 for path in role.targets if path.startswith(shard_directory("33", kid) + "/delta-"))
    served = len(repo.unlisted("33", "revocation"))
    return {"refreshes": refreshes, "delta_bytes": delta_bytes, "listed_deltas": listed, "served_deltas": served,
            "snapshot_bytes": len(state.to_snapshot()), "keep_deltas": DEFAULT_KEEP_DELTAS,
            "snapshot_path": snapshot_target("33", kid)}


def _shard_synced(result: SyncResult, province: str, kid: bytes) -> ShardSync:
    """What ``result``'s revocation sync did for the shard (province, kid); the bench expects it there."""
    synced = None if result.revocation is None else result.revocation.get(province, kid)
    if synced is None:
        raise AssertionError(f"the refresh synced no revocation shard {province}/{kid.hex()}")
    return synced


def _kind_of(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    if name == "timestamp.json":
        return "timestamp.json"
    if name.endswith(".snapshot.json"):
        return "snapshot.json"
    if name.endswith(".root.json"):
        return "root.json probe (404)"
    if name.endswith(".json") and "province-" in name:
        return "province role (province-33.json)"
    if name.endswith(".hcrd"):
        return "revocation delta (.hcrd)"
    if name.endswith(".hcrs"):
        return "revocation snapshot (.hcrs)"
    return name


def _baseline(files: list[Path]) -> None:
    """Read and parse the same files, trusting them blindly."""
    for path in files:
        json.loads(path.read_bytes())


def _fmt_bytes(size: float) -> str:
    return f"{size:,.0f} B" if size < 1000 else f"{size / 1000:,.1f} kB"


def run(*, rounds: int = 7, out=sys.stdout) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # a shell: it may read the clock
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as temp:
        base = Path(temp)
        start = time.perf_counter()
        repo, provinces = _build(base / "repo", now)
        build_seconds = time.perf_counter() - start

        # first sync, interleaved with the blind read+parse baseline over the same files
        probe = _LoggingFetcher(repo.directory)
        first = _client(base, "probe", repo, probe).refresh(now + HOUR)
        assert first.complete and len(first.keyring) == 34 * KEYS_PER_PROVINCE
        fetched = [repo.directory / url for url, _ in probe.log]
        sync_times, sync_cpu, base_times, load_times = [], [], [], []
        for index in range(rounds):
            order = ("sync", "base") if index % 2 == 0 else ("base", "sync")
            for what in order:
                if what == "base":
                    t0 = time.perf_counter()
                    _baseline(fetched)
                    base_times.append(time.perf_counter() - t0)
                else:
                    client = _client(base, f"first-{index}", repo)
                    t0, c0 = time.perf_counter(), time.process_time()
                    client.refresh(now + HOUR)
                    sync_times.append(time.perf_counter() - t0)
                    sync_cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            client.load_cached(now + HOUR)
            load_times.append(time.perf_counter() - t0)
            shutil.rmtree(base / f"first-{index}")

        # one province rotates: its pre-published key becomes active, a new one is pre-published
        watcher = _LoggingFetcher(repo.directory)
        verifier = _client(base, "verifier", repo, watcher)
        verifier.refresh(now + HOUR)
        scenarios = []
        watcher.log.clear()
        result = verifier.refresh(now + 2 * HOUR)
        scenarios.append(("nothing new (timestamp only)", result, list(watcher.log)))
        tuf_keys, keys = provinces["33"]
        later = now + 90 * DAY
        keys = keys[1:] + [hc.generate_signing_key(hc.Algorithm.ES256)]
        repo.publish_key_list(_key_list("33", 2, keys, later), tuf_keys[:2], now=now + 2 * HOUR)
        repo.publish(now=now + 2 * HOUR)
        watcher.log.clear()
        result = verifier.refresh(now + 3 * HOUR)
        assert result.changed == ("33",)
        scenarios.append(("province 33 rotated its key", result, list(watcher.log)))
        repo.publish_key_list(_key_list("33", 3, keys, later, compromised=True), tuf_keys[:2], now=now + 3 * HOUR)
        repo.publish(now=now + 3 * HOUR)
        watcher.log.clear()
        result = verifier.refresh(now + 4 * HOUR)
        assert result.changed == ("33",)
        scenarios.append(("province 33 marked a key compromised", result, list(watcher.log)))

        start = time.perf_counter()
        steady = _revocation_steady_state(repo, provinces, base, now)
        steady_seconds = time.perf_counter() - start

        meta = repo.directory / "metadata"
        versions: dict[str, int] = {}
        for name in os.listdir(meta):
            if name[0].isdigit():
                version, role = name.split(".")[0], name.split(".")[1]
                versions[role] = max(versions.get(role, 0), int(version))
        current = {role: (meta / f"{v}.{role}.json").stat().st_size for role, v in versions.items()}
        current["timestamp"] = (meta / "timestamp.json").stat().st_size
        key_lists = sorted(
            p.stat().st_size for p in (repo.directory / "targets" / "provinces").rglob("*.keys.json")
        )

    print(f"# Trust sync benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {rounds} interleaved rounds)\n", file=out)
    print(f"Repository: 34 provinces, root and targets 3 of 5, provinces 2 of 3 (Ed25519 TUF keys), "
          f"{KEYS_PER_PROVINCE} ES256 keys per key list; built in {build_seconds:.2f} s.\n", file=out)

    print("## Refresh transfer (target: <= 10 kB after one province rotated)\n", file=out)
    print("| scenario | files | bytes | within target |", file=out)
    print("|---|---:|---:|---|", file=out)
    for name, result, _log in scenarios:
        ok = "yes" if result.bytes_transferred <= 10_000 else "**no**"
        print(f"| {name} | {result.files_transferred} | {result.bytes_transferred:,} | {ok} |", file=out)
    print("\nFiles of the rotation refresh (the root probe `N+1.root.json` answers 404, 0 bytes):\n", file=out)
    print("| file | bytes |", file=out)
    print("|---|---:|", file=out)
    for url, size in scenarios[1][2]:
        print(f"| `{url}` | {size:,} |", file=out)

    sync_med = statistics.median(sync_times)
    ratios = [s / b for s, b in zip(sync_times, base_times)]
    print("\n## First sync of all 34 provinces from a local mirror directory (target: < 2 s)\n", file=out)
    print(f"First sync fetches {first.files_transferred} files, {_fmt_bytes(first.bytes_transferred)}.\n",
          file=out)
    print("| contender | median | min | max |", file=out)
    print("|---|---:|---:|---:|", file=out)
    print(f"| baseline: read + json.loads of the same {len(fetched)} files, no verification | "
          f"{statistics.median(base_times) * 1000:.1f} ms | {min(base_times) * 1000:.1f} ms | "
          f"{max(base_times) * 1000:.1f} ms |", file=out)
    print(f"| TrustSync.refresh, empty cache (TUF + key lists + commit) | {sync_med * 1000:.0f} ms | "
          f"{min(sync_times) * 1000:.0f} ms | {max(sync_times) * 1000:.0f} ms |", file=out)
    print(f"| TrustSync.load_cached (offline start-up, re-verifies the cache) | "
          f"{statistics.median(load_times) * 1000:.0f} ms | {min(load_times) * 1000:.0f} ms | "
          f"{max(load_times) * 1000:.0f} ms |", file=out)
    print(f"\nSync / baseline, per round: median {statistics.median(ratios):.0f}x "
          f"({min(ratios):.0f}x-{max(ratios):.0f}x). The sync's CPU time: median "
          f"{statistics.median(sync_cpu) * 1000:.0f} ms; the rest of its wall time is mostly the fsync "
          f"of each verified object it commits. First sync "
          f"{'meets' if sync_med < 2 else '**misses**'} the 2 s target.\n", file=out)

    print("## Metadata sizes (newest version; prototype from research section 4.3)\n", file=out)
    print("| file | bytes | prototype |", file=out)
    print("|---|---:|---:|", file=out)
    for role in ("root", "targets", "snapshot", "timestamp"):
        print(f"| `{role}.json` | {current[role]:,} | {PROTOTYPE[role]} |", file=out)
    province_sizes = sorted(v for r, v in current.items() if r.startswith("province-"))
    print(f"| `province-<code>.json` (min / median / max of 34) | {province_sizes[0]:,} / "
          f"{statistics.median(province_sizes):,.0f} / {province_sizes[-1]:,} | {PROTOTYPE['province']} |",
          file=out)
    print(f"| `<SHA256>.keys.json` ({KEYS_PER_PROVINCE} keys; min / median / max) | {key_lists[0]:,} / "
          f"{statistics.median(key_lists):,.0f} / {key_lists[-1]:,} | - |", file=out)
    print(file=out)

    _report_steady_state(steady, steady_seconds, out)


def _report_steady_state(steady: dict, seconds: float, out) -> None:
    refreshes = steady["refreshes"]
    per_kind: dict[str, list[int]] = {}
    for log in refreshes:
        sizes: dict[str, int] = {}
        for url, size in log:
            kind = _kind_of(url)
            sizes[kind] = sizes.get(kind, 0) + size
        for kind, size in sizes.items():
            per_kind.setdefault(kind, []).append(size)
    totals = [sum(size for _, size in log) for log in refreshes]
    day = sum(totals)
    payload = sum(steady["delta_bytes"])
    print("## Revocation at steady state: what an hourly-refreshing verifier downloads\n", file=out)
    print(f"Province 33 publishes one large shard ({SHARD_REVOKED:,} revoked of {SHARD_UNIVERSE:,}, "
          f"+{REVOKED_PER_HOUR} revoked and +{ISSUED_PER_HOUR:,} issued an hour; snapshot "
          f"{steady['snapshot_bytes']:,} B) every hour through `push_directory` (publish at once), "
          f"{steady['keep_deltas'] + 24} publications ({seconds:.0f} s); the publisher keeps "
          f"{steady['keep_deltas']} deltas. The province role then lists the snapshot and "
          f"**{steady['listed_deltas']} deltas**; the mirror serves {steady['served_deltas']} deltas unlisted. "
          f"A verifier refreshed after each of the last 24:\n", file=out)
    print("| file | bytes per refresh (median) | a day (24 refreshes) |", file=out)
    print("|---|---:|---:|", file=out)
    for kind in sorted(per_kind, key=lambda k: -sum(per_kind[k])):
        kind_sizes = per_kind[kind]
        print(f"| {kind} | {statistics.median(kind_sizes):,.0f} | {sum(kind_sizes):,} |", file=out)
    print(f"| **total** | **{statistics.median(totals):,.0f}** | **{day:,}** |", file=out)
    heaviest = max((k for k in per_kind if not k.startswith("revocation")), key=lambda k: sum(per_kind[k]))
    print(f"\nThe revocation data itself (the 24 deltas) is {payload:,} B of that day's {day:,} B "
          f"({payload / day:.1%}); the rest is TUF metadata, the heaviest part {heaviest}.\n", file=out)
