"""Benchmark of the hospital verifier (issue 6): ``python -m tools.bench verifier``.

Two figures, from one run:

* **Throughput of ``run`` from text input, against the core.** The real CLI
  (``python -m verifier run --stdin``, JSON lines on stdout, the SQLite audit
  log on, display off) runs as its own process; each round pipes N codes into
  it and times until the N-th JSON line comes back (end to end: framing,
  policy, verification, JSON, audit queue). In the same rounds, interleaved,
  the bench process runs ``healthcode.verify`` in a loop over the same codes.
  The figure is the per-round ratio (target >= 0.8). A second process with
  the operator display on (plain text to /dev/null) is measured the same way.
* **Memory of a verifier process with the full national revocation state.**
  The synthetic national state of ``tools/bench/revocation.py`` (10 million
  revoked among 1.4 billion issued, ~100 shards over 34 provinces, as
  snapshot files) is loaded into a :class:`healthcode.revocation.RevocationSet`
  inside a process that then runs the real :class:`verifier.runtime.Runtime`
  loop (stdin, JSON, audit log) over codes; its peak RSS (VmHWM) is the
  figure (target < 250 MB), next to the same process with the keyring only.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import healthcode as hc

from ._measure import rate

POOL = 512
PROVINCE = hc.ProvinceCode("33")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _setup(directory: pathlib.Path, now: dt.datetime):
    from verifier.trust_sources import DevBundleSource, dev_bundle_bytes

    key = hc.generate_signing_key(hc.Algorithm.ES256)
    signer = hc.SoftwareSigner(key)
    trusted = hc.TrustedKey(kid=signer.kid, province=PROVINCE, public_key=key.public_key(),
                            use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=90),
                            verify_until=now + dt.timedelta(days=120))
    codes = [
        hc.sign_code(hc.CodeClaims(province=PROVINCE, subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                   serial=i, issued_at=now - dt.timedelta(minutes=5),
                                   expires_at=now + dt.timedelta(days=7)), signer)
        for i in range(POOL)
    ]
    (directory / "mirror").mkdir()
    (directory / "mirror" / "bundle.json").write_bytes(dev_bundle_bytes([trusted], version=1))
    DevBundleSource(directory / "data" / "trust", directory / "mirror").refresh(now)
    return signer, trusted, codes, hc.Keyring([trusted])


class _RunProcess:
    """``healthcode-verifier run`` reading stdin, answering on stdout; one batch of codes at a time."""

    def __init__(self, directory: pathlib.Path, *, display: bool) -> None:
        args = [sys.executable, "-m", "verifier", "--data-dir", str(directory / "data"), "--dev-trust",
                "run", "--stdin", "--json", "stdout", "--no-sync",
                "--audit-db", str(directory / f"audit-{'display' if display else 'plain'}.sqlite3"),
                "--display", "stderr" if display else "none"]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, cwd=ROOT)
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or not isinstance(stdout, io.BufferedReader):  # buffered pipes, as asked above
            raise RuntimeError("the verifier process has no stdin/stdout pipes")
        self._stdin = stdin
        self._stdout = stdout
        self.lines = 0
        self.valid = 0
        self._tail = b""

    def batch(self, payload: bytes, count: int) -> float:
        """Send ``count`` codes; seconds until their ``count`` JSON lines are back."""
        start = time.perf_counter()
        writer = threading.Thread(target=lambda: (self._stdin.write(payload), self._stdin.flush()))
        writer.start()
        target = self.lines + count
        stdout = self._stdout
        while self.lines < target:
            chunk = stdout.read1(1 << 20)
            if not chunk:
                raise RuntimeError("the verifier process ended early")
            data = self._tail + chunk
            cut = data.rfind(b"\n") + 1
            complete, self._tail = data[:cut], data[cut:]
            self.lines += complete.count(b"\n")
            self.valid += complete.count(b'"result":"valid"')
        elapsed = time.perf_counter() - start
        writer.join()
        return elapsed

    def close(self) -> None:
        self._stdin.close()
        self.process.wait(timeout=60)


def _vm(pid: int | str) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_round(codes, ring, now, count: int) -> tuple[float, float]:
    """(wall, cpu) seconds for ``count`` core verifications."""
    n = len(codes)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        hc.verify(codes[i % n], ring, now=now)
    return time.perf_counter() - wall, time.process_time() - cpu


def _throughput(directory, codes, ring, now, *, rounds: int, seconds: float, out) -> None:
    core = lambda code: hc.verify(code, ring, now=now)  # noqa: E731
    plain = _RunProcess(directory, display=False)
    shown = _RunProcess(directory, display=True)
    try:
        warm = "\n".join(codes).encode() + b"\n"
        plain.batch(warm, len(codes))
        shown.batch(warm, len(codes))
        estimate = rate(core, codes, seconds=min(seconds, 0.5))
        count = max(len(codes), int(estimate * seconds))
        payload = "\n".join(codes[i % len(codes)] for i in range(count)).encode() + b"\n"
        wall: dict[str, list[float]] = {"core": [], "run": [], "run+display": []}
        cpu: dict[str, list[float]] = {"core": [], "run": [], "run+display": []}
        for round_index in range(rounds):
            order = ["core", "run", "run+display"]
            if round_index % 2:
                order.reverse()
            for name in order:
                if name == "core":
                    w, c = _core_round(codes, ring, now, count)
                else:
                    process = plain if name == "run" else shown
                    before = _cpu_seconds(process.process.pid)
                    w = process.batch(payload, count)
                    c = _cpu_seconds(process.process.pid) - before
                wall[name].append(count / w)
                cpu[name].append(count / max(c, 1e-9))
        rss = _vm(plain.process.pid)
        assert plain.valid == plain.lines and shown.valid == shown.lines, "every code must verify"
    finally:
        plain.close()
        shown.close()
    print(f"## Throughput of `run` from text input ({count:,} codes a round through a pipe, "
          f"JSON lines + audit log on)\n", file=out)
    print("Wall clock is the headline (end to end: pipe in, JSON line out); CPU time (all threads of the "
          "process, from /proc) is printed beside it because the machine is shared and noisy.\n", file=out)
    print("| contender | median codes/s (wall) | ratio to core, wall (median, min-max) | "
          "median codes per CPU-s | ratio to core, CPU |", file=out)
    print("|---|---:|---|---:|---:|", file=out)
    for name, label in (("core", "core `healthcode.verify` loop (same codes, same rounds)"),
                        ("run", "`healthcode-verifier run`, display off"),
                        ("run+display", "`healthcode-verifier run`, display on (plain, to /dev/null)")):
        ratios = [a / b for a, b in zip(wall[name], wall["core"])]
        cpu_ratio = statistics.median(a / b for a, b in zip(cpu[name], cpu["core"]))
        print(f"| {label} | {statistics.median(wall[name]):,.0f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) | {statistics.median(cpu[name]):,.0f} | {cpu_ratio:.3f} |",
              file=out)
    print(f"\n`run` process after {plain.lines:,} codes, keyring only: RSS {rss['VmRSS']:.1f} MiB "
          f"(peak {rss['VmHWM']:.1f} MiB).\n", file=out)


# --- memory with the national revocation state, in its own process -------------------------------------


def _memory_child(snapshots_file: str, data_dir: str) -> None:
    """A verifier process: load the national state (if a file is given), then run the real loop on stdin."""
    from healthcode.revocation import RevocationSet

    from verifier.audit import AuditLog
    from verifier.config import AuditConfig, VerifierConfig
    from verifier.output import StreamSink
    from verifier.runtime import Runtime
    from verifier.scan import FdStream
    from verifier.trust import TrustState
    from verifier.trust_sources import DevBundleSource

    from .revocation import _uncontainer

    clock = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731 - a shell may read the clock
    dev = DevBundleSource(pathlib.Path(data_dir) / "trust")
    base = dev.load(clock())
    start = time.perf_counter()
    revocation = None
    if snapshots_file:
        revocation = RevocationSet()
        for blob in _uncontainer(pathlib.Path(snapshots_file).read_bytes()):
            revocation.load_snapshot(blob)
    load_s = time.perf_counter() - start

    class Preloaded:
        def refresh(self, now, *, progress=None):
            raise NotImplementedError

        def load(self, now):
            return TrustState(base.keyring, revocation, base.last_verified_refresh)

    config = VerifierConfig(audit=AuditConfig(path=pathlib.Path(data_dir) / f"audit-mem-{os.getpid()}.sqlite3"))
    audit = AuditLog(config.audit, clock=clock).start()
    runtime = Runtime(Preloaded(), config=config, clock=clock, sinks=[StreamSink(sys.stdout.buffer)], audit=audit)
    runtime.add_stream(lambda: FdStream(0, "stdin"), name="stdin")
    runtime.run()
    audit.close()
    report = {"load_s": load_s, "revoked": revocation.revoked_count if revocation else 0,
              "shards": len(revocation) if revocation else 0, **_vm("self")}
    if revocation is not None:  # a background sync: the new state is loaded while the old is in force
        fresh = RevocationSet()
        for blob in _uncontainer(pathlib.Path(snapshots_file).read_bytes()):
            fresh.load_snapshot(blob)
        runtime.state = TrustState(base.keyring, fresh, base.last_verified_refresh)
        del revocation
        report["reload_peak"] = _vm("self")["VmHWM"]
    sys.stderr.write(json.dumps(report) + "\n")


def _national_snapshots(path: pathlib.Path) -> tuple[int, float]:
    from healthcode.revocation import RevocationState

    from .revocation import SEED, _container, _random_subset, shards_of_the_scenario

    start = time.perf_counter()
    rng = random.Random(SEED)
    blobs = []
    for province, kid, universe, count in shards_of_the_scenario():
        serials = _random_subset(rng, universe, count)
        blobs.append(RevocationState(province, kid, seq=1, universe=universe, serials=serials).to_snapshot())
    path.write_bytes(_container(blobs))
    return len(blobs), time.perf_counter() - start


def _memory(directory: pathlib.Path, codes: list[str], *, out) -> None:
    snapshots = directory / "national.snapshots"
    national: pathlib.Path | None = snapshots  # None: not built
    try:
        shards, build_s = _national_snapshots(snapshots)
    except ImportError as exc:  # healthcode.revocation or its bench missing
        print(f"(national revocation state not built: {exc}; keyring only)\n", file=out)
        national, shards, build_s = None, 0, 0.0
    rows = []
    for label, file in (("keyring only", ""), ("keyring + national revocation state", str(national or ""))):
        if label != "keyring only" and not file:
            continue
        program = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tools.bench.verifier import _memory_child; "
                   f"_memory_child({file!r}, {str(directory / 'data')!r})")
        payload = ("\n".join(codes) + "\n").encode()
        proc = subprocess.run([sys.executable, "-c", program], input=payload, capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.decode()[-2000:])
        report = json.loads(proc.stderr.decode().strip().splitlines()[-1])
        valid = proc.stdout.count(b'"result":"valid"')
        rows.append((label, report, valid))
    print(f"## Memory of a verifier process (real `Runtime` loop, stdin -> JSON + audit log, {len(codes)} codes)\n",
          file=out)
    if shards:
        print(f"National state: {shards} shards, snapshot files built in {build_s:.1f} s "
              f"(`tools/bench/revocation.py` scenario, seed as there).\n", file=out)
    print("| process | revoked serials loaded | load s | RSS MiB | peak RSS MiB | peak during a sync reload MiB "
          "| codes valid |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|", file=out)
    for label, report, valid in rows:
        reload_peak = f"{report['reload_peak']:.1f}" if "reload_peak" in report else "-"
        print(f"| {label} | {report['revoked']:,} | {report['load_s']:.2f} | {report['VmRSS']:.1f} | "
              f"{report['VmHWM']:.1f} | {reload_peak} | {valid}/{len(codes)} |", file=out)
    print("", file=out)


def run(*, rounds: int, seconds: float, out=sys.stdout) -> None:
    now = dt.datetime.now(dt.timezone.utc)  # the benchmark is a shell: it may read the clock
    print(f"# Verifier benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {rounds} interleaved rounds of ~{seconds:g} s)\n", file=out)
    with tempfile.TemporaryDirectory(prefix="bench-verifier-") as tmp:
        directory = pathlib.Path(tmp)
        _, _, codes, ring = _setup(directory, now)
        _throughput(directory, codes, ring, now, rounds=rounds, seconds=seconds, out=out)
        _memory(directory, codes[:64], out=out)
