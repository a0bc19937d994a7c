"""Benchmark of revocation (issue 5): ten million revoked among 1.4 billion issued.

``python -m tools.bench revocation [--rounds N] [--seconds S]``

The scenario: 1.4 billion codes issued across the 34 provincial-level
divisions, each province's share proportional to its population (the table
below), 10 million of them revoked at random, uniformly. Each province signs
with 2 to 4 keys (by population), each key under a cap of 2**25 codes, so
there are ~100 shards (province, kid); a shard's universe is the serials its
key has issued. Reports, from one seeded run:

* the size of the full national state (Golomb-Rice snapshot files, as
  published) next to the bound log2 C(1.4e9, 1e7) and the per-shard bound,
  and the same sets coded with Elias-Fano (the measured alternative);
* a day's delta for 14,000 new revocations: one delta per shard, and the same
  day as 24 hourly deltas per shard;
* generation, build, decode and delta-application times;
* in a fresh subprocess (a verifier): load time and peak RSS for the whole
  national state, and the time a lookup adds to one ES256 verification,
  as a ratio of interleaved rounds with ``revocation=None`` and with the
  loaded :class:`~healthcode.revocation.RevocationSet`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import pathlib
import platform
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from itertools import repeat
from operator import mul, rshift

from healthcode.revocation import (
    RevocationSet,
    RevocationState,
    encode_delta,
    read_header,
    rice_decode,
    rice_encode,
    rice_parameter,
)

from .elias_fano import elias_fano_decode, elias_fano_encode

SEED = 20201101  # census day
ISSUED = 1_400_000_000
REVOKED = 10_000_000
DAILY = 14_000  # ~5 million revocations a year
KEY_CAP = 1 << 25  # codes one signing key may sign (33.5 million)
ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Resident population, 2020: the 7th national census (mainland, 2020-11-01), and the
#: 2020 official estimates of Hong Kong, Macau and Taiwan. GB/T 2260 code -> people.
POPULATION = {
    "11": 21_893_095, "12": 13_866_009, "13": 74_610_235, "14": 34_915_616, "15": 24_049_155,
    "21": 42_591_407, "22": 24_073_453, "23": 31_850_088, "31": 24_870_895, "32": 84_748_016,
    "33": 64_567_588, "34": 61_027_171, "35": 41_540_086, "36": 45_188_635, "37": 101_527_453,
    "41": 99_365_519, "42": 57_752_557, "43": 66_444_864, "44": 126_012_510, "45": 50_126_804,
    "46": 10_081_232, "50": 32_054_159, "51": 83_674_866, "52": 38_562_148, "53": 47_209_277,
    "54": 3_648_100, "61": 39_528_999, "62": 25_019_831, "63": 5_923_957, "64": 7_202_654,
    "65": 25_852_345, "71": 23_561_236, "81": 7_474_200, "82": 683_218,
}


def _keys_for(population: int) -> int:
    return 4 if population >= 60_000_000 else 3 if population >= 20_000_000 else 2


def _kid(province: str, index: int) -> bytes:
    return hashlib.sha256(f"revocation bench {province} {index}".encode()).digest()[:8]


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Largest-remainder apportionment of ``total`` in proportion to ``weights``."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def shards_of_the_scenario() -> list[tuple[str, bytes, int, int]]:
    """(province, kid, universe, revoked) of every shard."""
    provinces = sorted(POPULATION)
    issued = _apportion(ISSUED, [POPULATION[p] for p in provinces])
    universes: list[tuple[str, bytes, int]] = []
    for province, total in zip(provinces, issued):
        keys = _keys_for(POPULATION[province])
        for index, universe in enumerate(_apportion(total, [1] * keys)):
            assert universe <= KEY_CAP
            universes.append((province, _kid(province, index), universe))
    revoked = _apportion(REVOKED, [u for _, _, u in universes])
    return [(p, k, u, r) for (p, k, u), r in zip(universes, revoked)]


def _random_subset(rng: random.Random, universe: int, count: int) -> array:
    """A uniform random ``count``-subset of range(universe), sorted: bulk draws, then rejection."""
    raw = array("Q")
    raw.frombytes(rng.randbytes(8 * count))
    chosen = set(map(rshift, map(mul, raw, repeat(universe)), repeat(64)))  # floor(r * universe / 2**64)
    while len(chosen) < count:
        chosen.add(rng.randrange(universe))
    return array("I" if universe <= 1 << 32 else "Q", sorted(chosen))


def _new_serials(rng: random.Random, state: RevocationState, count: int) -> list[int]:
    revoked = state._serials
    fresh: set[int] = set()
    while len(fresh) < count:
        serial = rng.randrange(state.universe)
        i = bisect_left(revoked, serial)
        if i == len(revoked) or revoked[i] != serial:
            fresh.add(serial)
    return sorted(fresh)


def log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def _container(blobs: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(b)) + b for b in blobs)


def _uncontainer(data: bytes) -> list[bytes]:
    blobs, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        blobs.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return blobs


# --------------------------------------------------------------------------- the verifier, in its own process


def _peak_rss_mib() -> float:
    """Peak RSS of this process's address space.

    VmHWM where there is /proc: getrusage's ru_maxrss survives execve on
    Linux, so a child would report its parent's peak from before the exec.
    """
    status = pathlib.Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _paired_cpu(bare, checked, codes, *, seconds: float) -> dict:
    """Interleaved blocks, one pass over ``codes`` per contender, timed in process CPU time.

    The machine is shared: wall-clock rounds swing by more than the effect
    measured here when other jobs take the cores. CPU time leaves out the time
    this process waits for a core, and short alternating blocks see the same
    cache and frequency conditions. Returns per-pair ratios (checked / bare).
    """
    ratios, wall_ratios, bare_total, checked_total, blocks = [], [], 0.0, 0.0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or blocks < 40:
        times, walls = {}, {}
        for name in ("bare", "checked") if blocks % 2 else ("checked", "bare"):
            operation = bare if name == "bare" else checked
            start, wall = time.process_time(), time.perf_counter()
            for code in codes:
                operation(code)
            times[name], walls[name] = time.process_time() - start, time.perf_counter() - wall
        if times["bare"] > 0:
            ratios.append(times["checked"] / times["bare"])
        wall_ratios.append(walls["checked"] / walls["bare"])
        bare_total += times["bare"]
        checked_total += times["checked"]
        blocks += 1
    ratios.sort()
    wall_ratios.sort()
    quartile = len(ratios) // 4
    return {"pairs": blocks, "median": ratios[len(ratios) // 2], "q1": ratios[quartile], "q3": ratios[-1 - quartile],
            "wall_median": wall_ratios[len(wall_ratios) // 2], "wall_q1": wall_ratios[len(wall_ratios) // 4],
            "wall_q3": wall_ratios[-1 - len(wall_ratios) // 4],
            "sum_ratio": checked_total / bare_total, "bare_us": bare_total / (blocks * len(codes)) * 1e6}


def _child(snapshot_file: str, delta_file: str, rounds: int, seconds: float) -> None:
    import healthcode as hc

    from ._measure import best_time, interleaved

    before = _peak_rss_mib()
    start = time.perf_counter()
    snapshots = _uncontainer(pathlib.Path(snapshot_file).read_bytes())
    deltas = _uncontainer(pathlib.Path(delta_file).read_bytes())
    read_s = time.perf_counter() - start
    with_files = _peak_rss_mib()

    start, cpu = time.perf_counter(), time.process_time()
    national = RevocationSet()
    for blob in snapshots:
        national.load_snapshot(blob)
    load_s, load_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    loaded = _peak_rss_mib()

    start = time.perf_counter()
    for blob in deltas:
        national.apply_delta(blob)
    delta_s = time.perf_counter() - start
    del snapshots, deltas

    # the largest shard of the largest province: the longest bisect
    biggest = max(national, key=len)
    province = hc.ProvinceCode(biggest.province)
    now = dt.datetime.now(dt.timezone.utc)  # a shell may read the clock
    signer = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256), kid=biggest.kid)
    ring = hc.Keyring([hc.TrustedKey(kid=signer.kid, province=province, public_key=signer.public_key(),
                                     use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=90),
                                     verify_until=now + dt.timedelta(days=120))])
    rng = random.Random(SEED)
    serials = [s for s in (rng.randrange(biggest.universe) for _ in range(200)) if s not in biggest][:64]
    codes = [
        hc.sign_code(hc.CodeClaims(province, hc.main_index_id_from_bytes(rng.randbytes(16)), serial,
                                   now - dt.timedelta(minutes=5), now + dt.timedelta(days=7)), signer)
        for serial in serials
    ]
    assert all(hc.verify(c, ring, now=now, revocation=national) for c in codes)
    bare_verify = lambda code: hc.verify(code, ring, now=now)  # noqa: E731
    checked_verify = lambda code: hc.verify(code, ring, now=now, revocation=national)  # noqa: E731
    series = interleaved(  # whole-second wall-clock rounds, as the core benchmark does
        {"bare": (bare_verify, codes), "checked": (checked_verify, codes)}, rounds=rounds, seconds=seconds / 2)
    wall_ratio = series["checked"].ratio_to(series["bare"])
    pairs = _paired_cpu(bare_verify, checked_verify, codes, seconds=rounds * seconds)
    probes = [(biggest.province, biggest.kid, rng.randrange(biggest.universe)) for _ in range(1000)]
    is_revoked = national.is_revoked
    lookup = best_time(lambda: [is_revoked(*p) for p in probes], repeat=7, number=20) / len(probes)
    statm = pathlib.Path("/proc/self/statm")
    current = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20 if statm.exists() else None
    print(json.dumps({
        "read_s": read_s, "load_s": load_s, "load_cpu_s": load_cpu_s, "delta_s": delta_s,
        "rss_start_mib": before, "rss_files_mib": with_files, "rss_loaded_mib": loaded, "rss_now_mib": current,
        "arrays_bytes": national.nbytes, "shards": len(national), "revoked": national.revoked_count,
        "biggest": [biggest.province, biggest.kid.hex(), len(biggest), biggest.universe],
        "bare_ops": series["bare"].median, "checked_ops": series["checked"].median, "wall_ratio": wall_ratio,
        "pairs": pairs,
        "lookup_s": lookup,
    }))


# --------------------------------------------------------------------------- the run


def run(*, rounds: int, seconds: float, out=sys.stdout) -> None:
    rng = random.Random(SEED)
    scenario = shards_of_the_scenario()
    print(f"# Revocation benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, seed {SEED})\n", file=out)
    print(f"{ISSUED:,} codes issued and {REVOKED:,} revoked across {len(POPULATION)} provinces in proportion "
          f"to their 2020 population; {len(scenario)} shards (2-4 keys per province, key cap {KEY_CAP:,}); "
          f"shard universes {min(u for *_, u, _ in scenario):,} to {max(u for *_, u, _ in scenario):,}; "
          f"revoked serials uniform at random.\n", file=out)

    # the sets
    start = time.perf_counter()
    sets = [_random_subset(rng, universe, count) for _, _, universe, count in scenario]
    generate_s = time.perf_counter() - start

    # build: states (validated, hashed) and their snapshot files
    start = time.perf_counter()
    states = [RevocationState(p, k, seq=1, universe=u, serials=s) for (p, k, u, _), s in zip(scenario, sets)]
    del sets
    snapshots = [state.to_snapshot() for state in states]
    build_s = time.perf_counter() - start
    headers = [read_header(blob) for blob in snapshots]

    start = time.perf_counter()
    ef_bodies = [elias_fano_encode(state._serials, len(state), state.universe) for state in states]
    ef_build_s = time.perf_counter() - start

    rice_decode_s = ef_decode_s = 0.0
    for index, (blob, info, body) in enumerate(zip(snapshots, headers, ef_bodies)):
        rice_body = blob[info.body_offset:]
        for coding in ("rice", "ef") if index % 2 else ("ef", "rice"):  # alternate: fair to both
            start = time.perf_counter()
            if coding == "rice":
                rice_decode(rice_body, info.count, info.universe, info.rice_k)
                rice_decode_s += time.perf_counter() - start
            else:
                elias_fano_decode(body, info.count, info.universe)
                ef_decode_s += time.perf_counter() - start

    # a day: 14,000 new revocations in proportion to the universes
    start = time.perf_counter()
    per_shard = _apportion(DAILY, [state.universe for state in states])
    daily, hourly_bodies = [], []
    for state, count in zip(states, per_shard):
        fresh = _new_serials(rng, state, count)
        after = RevocationState(state.province, state.kid, seq=state.seq + 24, universe=state.universe,
                                serials=sorted(state.serials() + fresh))
        daily.append(encode_delta(state, after))
        hours: list[list[int]] = [[] for _ in range(24)]
        for serial in fresh:
            hours[rng.randrange(24)].append(serial)
        for hour in hours:  # an hourly delta is its header plus the coding of that hour's serials
            hour.sort()
            hourly_bodies.append(len(rice_encode(hour, len(hour), rice_parameter(state.universe, len(hour)))))
    delta_build_s = time.perf_counter() - start

    # sizes
    bound_bits = log2_binomial(ISSUED, REVOKED)
    shard_bound_bits = sum(log2_binomial(s.universe, len(s)) for s in states)
    rice_bytes = sum(map(len, snapshots))
    header_bytes = sum(info.body_offset for info in headers)
    ef_bytes = header_bytes + sum(map(len, ef_bodies))
    bound_bytes = bound_bits / 8
    print("## Size of the full national state\n", file=out)
    print(f"Bound log2 C({ISSUED:.2g}, {REVOKED:.0e}) = {bound_bits / 1e6:.2f} Mbit = **{bound_bytes / 1e6:.3f} MB** "
          f"({bound_bits / REVOKED:.3f} bits per revoked code); sum over shards of log2 C(universe, revoked) = "
          f"{shard_bound_bits / 8e6:.3f} MB. MB = 10^6 bytes.\n", file=out)
    print("| coding (whole files, headers included) | bytes | MB | bits per revoked | x bound | x shard bound |",
          file=out)
    print("|---|---:|---:|---:|---:|---:|", file=out)
    for name, size in (
        ("**Golomb-Rice, split-stream (chosen; the snapshot files)**", rice_bytes),
        ("Elias-Fano (same headers)", ef_bytes),
        ("sorted uint32 array (what the verifier holds)", 4 * REVOKED),
    ):
        print(f"| {name} | {size:,} | {size / 1e6:.3f} | {size * 8 / REVOKED:.3f} | {size / bound_bytes:.4f} | "
              f"{size * 8 / shard_bound_bits:.4f} |", file=out)
    print(f"\nHeaders: {header_bytes:,} bytes for {len(headers)} snapshots. Target: <= 1.05x the bound "
          f"(<= {1.05 * bound_bytes / 1e6:.2f} MB): **{'met' if rice_bytes <= 1.05 * bound_bytes else 'MISSED'}**.\n",
          file=out)

    daily_bytes = sum(map(len, daily))
    daily_headers = sum(read_header(d).body_offset for d in daily)
    hourly_headers = 24 * daily_headers  # the same header layout, 24 times per shard
    hourly_bytes = hourly_headers + sum(hourly_bodies)
    print("## A day's deltas (14,000 new revocations)\n", file=out)
    print("| published as | files | bytes | of which headers | bits per new revocation |", file=out)
    print("|---|---:|---:|---:|---:|", file=out)
    print(f"| one delta per shard for the day | {len(daily)} | **{daily_bytes:,}** | {daily_headers:,} | "
          f"{daily_bytes * 8 / DAILY:.1f} |", file=out)
    print(f"| 24 hourly deltas per shard | {len(hourly_bodies)} | {hourly_bytes:,} | {hourly_headers:,} | "
          f"{hourly_bytes * 8 / DAILY:.1f} |", file=out)
    print(f"\nPayload alone: {(daily_bytes - daily_headers) * 8 / DAILY:.2f} bits per new revocation "
          f"(bound for 14,000 of 1.4e9: {log2_binomial(ISSUED, DAILY) / DAILY:.2f}). Target: daily delta <= 40 kB: "
          f"**{'met' if daily_bytes <= 40_000 else 'MISSED'}**.\n", file=out)

    # the verifier, in a fresh process
    with tempfile.TemporaryDirectory() as tmp:
        snapshot_file, delta_file = pathlib.Path(tmp, "snapshots"), pathlib.Path(tmp, "deltas")
        snapshot_file.write_bytes(_container(snapshots))
        delta_file.write_bytes(_container(daily))
        proc = subprocess.run(
            [sys.executable, "-m", "tools.bench.revocation", "--child", str(snapshot_file), str(delta_file),
             str(rounds), str(seconds)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"verifier subprocess failed:\n{proc.stderr}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["revoked"] == REVOKED + DAILY and child["shards"] == len(states)

    print("## Times\n", file=out)
    print("| step | seconds |", file=out)
    print("|---|---:|", file=out)
    for name, value in (
        (f"generate the random sets ({REVOKED:,} serials; benchmark only)", generate_s),
        ("publisher: build every shard state (validate, hash) and its Golomb-Rice snapshot", build_s),
        ("Elias-Fano encode of every shard (comparison)", ef_build_s),
        ("decode every shard, Golomb-Rice (bodies only)", rice_decode_s),
        ("decode every shard, Elias-Fano (bodies only)", ef_decode_s),
        ("publisher: a day's delta per shard (states, hashes, coding; + hourly codings)", delta_build_s),
        ("verifier: read the snapshot files", child["read_s"]),
        ("**verifier: load the full national state** (parse, decode, hash-check every shard), wall clock",
         child["load_s"]),
        ("verifier: the same load, CPU time of the process", child["load_cpu_s"]),
        (f"verifier: apply the day's {len(daily)} deltas", child["delta_s"]),
    ):
        print(f"| {name} | {value:.2f} |", file=out)
    print(f"\nTarget: load <= 5 s: **{'met' if child['load_s'] <= 5 else 'MISSED'}**.\n", file=out)

    print("## Verifier memory (fresh process; peak RSS is VmHWM)\n", file=out)
    print("| | MiB |", file=out)
    print("|---|---:|", file=out)
    print(f"| peak RSS after imports | {child['rss_start_mib']:.1f} |", file=out)
    print(f"| peak RSS with the snapshot files read | {child['rss_files_mib']:.1f} |", file=out)
    print(f"| **peak RSS after loading the national state** (the whole process) | **{child['rss_loaded_mib']:.1f}** |",
          file=out)
    print(f"| growth while loading | {child['rss_loaded_mib'] - child['rss_files_mib']:.1f} |", file=out)
    print(f"| serial arrays and their directories ({child['revoked']:,} serials) | "
          f"{child['arrays_bytes'] / 2**20:.1f} |", file=out)
    if child["rss_now_mib"] is not None:
        print(f"| RSS at the end (after the verify benchmark) | {child['rss_now_mib']:.1f} |", file=out)
    print(f"\nTarget: <= 200 MB for the whole verifier process: "
          f"**{'met' if child['rss_loaded_mib'] * 2**20 <= 200e6 else 'MISSED'}**.\n", file=out)

    pairs = child["pairs"]
    wall, wall_low, wall_high = child["wall_ratio"]
    added = pairs["median"] - 1
    province, kid, size, universe = child["biggest"]
    print("## Lookup cost in a verification\n", file=out)
    print(f"ES256 codes of the largest shard ({province}/{kid}: {size:,} revoked of {universe:,}), none revoked; "
          f"`verify(code, ring, now=now)` against `verify(code, ring, now=now, revocation=national)`.\n", file=out)
    print("| measure | with / without | lookup adds |", file=out)
    print("|---|---:|---:|", file=out)
    print(f"| **CPU time, {pairs['pairs']} interleaved pairs of 64-code blocks: median of the pair ratios** "
          f"(interquartile {pairs['q1']:.4f}-{pairs['q3']:.4f}) | {pairs['median']:.4f} | **{added * 100:+.2f} %** |",
          file=out)
    print(f"| CPU time, all pairs summed | {pairs['sum_ratio']:.4f} | {(pairs['sum_ratio'] - 1) * 100:+.2f} % |",
          file=out)
    print(f"| wall clock, the same pairs: median of the pair ratios (interquartile {pairs['wall_q1']:.4f}-"
          f"{pairs['wall_q3']:.4f}) | {pairs['wall_median']:.4f} | {(pairs['wall_median'] - 1) * 100:+.2f} % |",
          file=out)
    print(f"| wall clock, {rounds} interleaved rounds of {seconds / 2:g} s: median of the round ratios "
          f"(rounds {1 / wall_high:.3f}-{1 / wall_low:.3f}) | {1 / wall:.4f} | {(1 / wall - 1) * 100:+.2f} % |",
          file=out)
    print(f"| `RevocationSet.is_revoked` alone, {child['lookup_s'] * 1e9:.0f} ns, over a "
          f"{pairs['bare_us']:.1f} us verification (CPU) | {1 + child['lookup_s'] * 1e6 / pairs['bare_us']:.4f} | "
          f"{child['lookup_s'] * 1e6 / pairs['bare_us'] * 100:+.2f} % |", file=out)
    print(f"\nVerifications per second (wall clock, medians): {child['bare_ops']:,.0f} without, "
          f"{child['checked_ops']:,.0f} with. Target: a lookup adds <= 3 %: "
          f"**{'met' if added <= 0.03 else 'MISSED'}**.", file=out)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        from .__main__ import main

        raise SystemExit(main(["revocation", *sys.argv[1:]]))
