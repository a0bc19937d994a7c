"""Benchmark: the national trust publisher with 34 provinces pushing (issue 15 target: keeps up with
34 provinces pushing every minute, its CPU per publication reported).

The publisher runs as its own process (``python -m publisher serve``, default
batch window 0.5 s) over a repository with 34 provinces delegated
(:class:`tools.bench.publisher_chain.Chain`); each province signs its role
versions in its own working copy beforehand (a revocation snapshot of 2 KiB
changed each time, as a revocation run does) and pushes them over mTLS, one
client thread per province. Three loads:

* **compressed time**: every round, all 34 provinces push at once, as fast as the
  publisher goes; the round ends when the last push is published. Reported: the
  round's wall time, pushes per minute it sustains, publications (snapshot +
  timestamp pairs) per round;
* **saturated**: each province pushes 10 versions back to back, each as soon as
  the previous one is acknowledged: the publisher's capacity;
* **1/min scaled**: each province pushes once every ``period`` seconds (60 s
  scaled down by ``scale``), at its own random offset: the real rate, sped up.
  Reported: the lag from acknowledgement to publication (median, worst).

CPU is the publisher **process's** CPU time (user + system, ``/proc/<pid>/stat``),
per push and per publication, against a baseline measured in the same run: one
plain Ed25519 signature over the published snapshot's bytes with the same kind
of key (what one publication cannot do without: it signs a snapshot and a
timestamp).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import pathlib
import random
import statistics
import tempfile
import threading
import time

from securesystemslib.signer import CryptoSigner

from healthcode.model import PROVINCES
from keys import ceremony
from keys.trustrepo import TrustRepository

from .publisher_chain import PASSPHRASE, Chain, Child, free_port, grpc_ready

__all__ = ["run"]

UTC = dt.timezone.utc
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class _Province:
    def __init__(self, chain: Chain, code: str) -> None:
        self.code = code
        self.work = TrustRepository(chain.work_dir(code))
        self.signers = ceremony.province_signers(chain.home(code), lambda holder, new=False: PASSPHRASE)
        self.pending: list[tuple[int, bytes, list[tuple[str, bytes]]]] = []

    def sign(self, count: int, now: dt.datetime) -> None:
        """``count`` role versions, each with a new 2 KiB revocation snapshot."""
        for _ in range(count):
            self.work.publish_province_targets(self.code, {"revocation/00aa/snapshot.hcrs": os.urandom(2048)},
                                               self.signers, now=now)
            role = self.work.province_targets(self.code)
            assert role is not None
            data = (self.work.directory / "metadata" / f"{role.version}.province-{self.code}.json").read_bytes()
            path = f"provinces/{self.code}/revocation/00aa/snapshot.hcrs"
            self.pending.append((role.version, data, [(path, self.work.target_bytes(path, role))]))


def _published(repo_dir: pathlib.Path) -> dict[str, int]:
    snapshot = TrustRepository(repo_dir)._published_snapshot()
    assert snapshot is not None
    return {name[len("province-"):-len(".json")]: info.version for name, info in snapshot.signed.meta.items()
            if name.startswith("province-")}


def _snapshot_version(repo_dir: pathlib.Path) -> int:
    snapshot = TrustRepository(repo_dir)._published_snapshot()
    assert snapshot is not None
    return int(snapshot.signed.version)


def _baseline(repo_dir: pathlib.Path, repeats: int = 2000) -> float:
    """CPU seconds of one Ed25519 signature over the published snapshot's bytes."""
    repo = TrustRepository(repo_dir)
    snapshot = repo._published_snapshot()
    assert snapshot is not None
    signer = CryptoSigner.generate_ed25519()
    payload = snapshot.signed_bytes
    start = time.thread_time()
    for _ in range(repeats):
        signer.sign(payload)
    return (time.thread_time() - start) / repeats


def run(*, rounds: int = 5, seconds: float = 30.0, concurrency: int = 34) -> dict[str, float]:
    """``rounds`` compressed rounds, then ``seconds`` of the 1/min rate scaled so that every province
    pushes 3 times (period ``seconds / 3``); ``concurrency`` provinces (34)."""
    codes = sorted(PROVINCES)[:concurrency]
    scaled_pushes = 3
    saturating = 10  # versions each province pushes back to back in the saturation run
    with tempfile.TemporaryDirectory(prefix="bench-publisher-") as tmp:
        base = pathlib.Path(tmp)
        now = dt.datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        chain = Chain.create(base / "chain", now=now, provinces=codes)
        provinces = [_Province(chain, code) for code in codes]
        for p in provinces:
            p.sign(rounds + saturating + scaled_pushes, now)
        setup = time.perf_counter() - t0
        port = free_port()
        publisher = Child("publisher", chain.publisher_argv(port, batch_window=0.5), log=base / "publisher.log",
                          ready=grpc_ready(f"127.0.0.1:{port}", chain.grpc_credentials("national:ops")),
                          env=chain.publisher_env()).start()
        clients = {p.code: chain.client(f"province:{p.code}", port) for p in provinces}
        try:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(provinces))

            def push(p: _Province) -> tuple[int, float]:
                version, data, files = p.pending.pop(0)
                clients[p.code].push(p.code, data, targets=files)
                return version, time.monotonic()

            def wait_published(want: dict[str, int], timeout: float = 120.0) -> float:
                deadline = time.monotonic() + timeout
                while True:
                    have = _published(chain.repo_dir)
                    if all(have.get(c, 0) >= v for c, v in want.items()):
                        return time.monotonic()
                    if time.monotonic() > deadline:
                        raise TimeoutError("the publisher did not keep up")
                    time.sleep(0.01)

            # compressed time
            walls, cpus, pubs = [], [], []
            for _ in range(rounds):
                cpu0, snap0, start = _cpu_seconds(publisher.pid), _snapshot_version(chain.repo_dir), time.monotonic()
                acks = dict(zip([p.code for p in provinces], pool.map(push, provinces)))
                done = wait_published({code: version for code, (version, _) in acks.items()})
                walls.append(done - start)
                cpus.append(_cpu_seconds(publisher.pid) - cpu0)
                pubs.append(_snapshot_version(chain.repo_dir) - snap0)
            # saturated: every province pushes its next version as soon as the last is acknowledged
            cpu0, snap0, start = _cpu_seconds(publisher.pid), _snapshot_version(chain.repo_dir), time.monotonic()

            def back_to_back(p: _Province) -> tuple[str, int]:
                version = 0
                for _ in range(saturating):
                    version, _ = push(p)
                return p.code, version

            done = wait_published(dict(pool.map(back_to_back, provinces)))
            sat_wall, sat_cpu = done - start, _cpu_seconds(publisher.pid) - cpu0
            sat_pubs = _snapshot_version(chain.repo_dir) - snap0
            # the 1/min rate, scaled: every province pushes `scaled_pushes` times, once per period
            period = seconds / scaled_pushes
            lags: list[float] = []
            lock = threading.Lock()
            cpu0, snap0 = _cpu_seconds(publisher.pid), _snapshot_version(chain.repo_dir)
            start = time.monotonic()
            rng = random.Random(15)

            def province_at_rate(p: _Province) -> None:
                offset = rng.random() * period
                for n in range(scaled_pushes):
                    delay = start + offset + n * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    version, acked = push(p)
                    published = wait_published({p.code: version})
                    with lock:
                        lags.append(published - acked)

            list(pool.map(province_at_rate, provinces))
            scaled_wall = time.monotonic() - start
            scaled_cpu = _cpu_seconds(publisher.pid) - cpu0
            scaled_pubs = _snapshot_version(chain.repo_dir) - snap0
            pool.shutdown()
            baseline = _baseline(chain.repo_dir)
        finally:
            for client in clients.values():
                client.close()
            publisher.stop()
        n = len(provinces)
        per_push = statistics.median(c / n for c in cpus)
        per_pub = statistics.median(c / max(1, p) for c, p in zip(cpus, pubs))
        rate = statistics.median(n / w * 60 for w in walls)
        result = {
            "saturating": saturating, "saturated_pushes_per_minute": n * saturating / sat_wall * 60,
            "saturated_publications": sat_pubs,
            "saturated_cpu_per_push_ms": sat_cpu / (n * saturating) * 1000,
            "saturated_cpu_per_publication_ms": sat_cpu / max(1, sat_pubs) * 1000, "saturated_wall_s": sat_wall,
            "provinces": n, "round_wall_s": statistics.median(walls), "pushes_per_minute": rate,
            "publications_per_round": statistics.median(pubs), "cpu_per_push_ms": per_push * 1000,
            "cpu_per_publication_ms": per_pub * 1000, "baseline_sign_ms": baseline * 1000,
            "scaled_lag_median_s": statistics.median(lags), "scaled_lag_max_s": max(lags),
            "scaled_cpu_per_push_ms": scaled_cpu / (n * scaled_pushes) * 1000,
            "scaled_cpu_per_publication_ms": scaled_cpu / max(1, scaled_pubs) * 1000,
            "scaled_publications": scaled_pubs, "scaled_period_s": period, "scaled_wall_s": scaled_wall,
        }
        _report(result, rounds, setup)
        return result


def _report(r: dict[str, float], rounds: int, setup: float) -> None:
    ratio_push = r["cpu_per_push_ms"] / r["baseline_sign_ms"]
    ratio_pub = r["cpu_per_publication_ms"] / r["baseline_sign_ms"]
    print(f"### Trust publisher: {int(r['provinces'])} provinces pushing\n")
    print(f"Setup (ceremonies, {int(r['provinces'])} working copies, role versions signed): {setup:.1f} s. "
          f"Publisher: its own process, batch window 0.5 s, mTLS.\n")
    print("| load | result |")
    print("|---|---|")
    print(f"| compressed: all provinces push at once, {rounds} rounds | round published in "
          f"{r['round_wall_s']:.2f} s (median): **{r['pushes_per_minute']:,.0f} pushes/min** sustained "
          f"(needed: {int(r['provinces'])}/min); {r['publications_per_round']:.0f} publication(s) per round |")
    print(f"| publisher CPU per push (compressed) | {r['cpu_per_push_ms']:.1f} ms = {ratio_push:.0f}x one "
          f"Ed25519 snapshot signature ({r['baseline_sign_ms']:.3f} ms, same run) |")
    print(f"| publisher CPU per publication (compressed) | {r['cpu_per_publication_ms']:.1f} ms = "
          f"{ratio_pub:.0f}x the baseline signature |")
    print(f"| saturated: each province pushes {int(r['saturating'])} versions back to back "
          f"({int(r['provinces'] * r['saturating'])} pushes) | "
          f"all published after {r['saturated_wall_s']:.2f} s: **{r['saturated_pushes_per_minute']:,.0f} pushes/min**; "
          f"{int(r['saturated_publications'])} publications; CPU {r['saturated_cpu_per_push_ms']:.1f} ms per push, "
          f"{r['saturated_cpu_per_publication_ms']:.1f} ms per publication |")
    print(f"| 1/min rate scaled: each province once every {r['scaled_period_s']:.1f} s, "
          f"{r['scaled_wall_s']:.0f} s | acknowledged -> published: median {r['scaled_lag_median_s']:.2f} s, "
          f"worst {r['scaled_lag_max_s']:.2f} s; {int(r['scaled_publications'])} publications; CPU "
          f"{r['scaled_cpu_per_push_ms']:.1f} ms per push, {r['scaled_cpu_per_publication_ms']:.1f} ms per "
          "publication |")
    keeps_up = r["pushes_per_minute"] >= r["provinces"]
    print(f"\nKeeps up with {int(r['provinces'])} provinces pushing every minute: **{'yes' if keeps_up else 'NO'}** "
          f"({r['pushes_per_minute'] / r['provinces']:.0f}x the needed rate).")


if __name__ == "__main__":
    run()
