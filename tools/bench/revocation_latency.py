"""Benchmark: revoke -> rejected at an online terminal, end to end with real processes (issue 15).

The running chain, each part its own process on 127.0.0.1
(:mod:`tools.bench.publisher_chain` writes the files):

* the provincial issuer (``python -m issuer serve``, province 33: rotating
  keys, the revocation job, ``push_mode = "network"``);
* the national trust publisher (``python -m publisher serve``) over the
  national repository of all 34 provinces;
* a mirror serving that repository over HTTP (``tools/bench/mirror_server.py``,
  with ETags, logging every request's bytes);
* a terminal, ``python -m verifier run`` with its background sync, scanning
  the codes from standard input and writing JSON lines.

Every interval is the default divided by the scale (20): the issuer's
on-demand minimum interval (60 s), the publisher's batch window (0.5 s), the
issuer's push poll (1 s) and the terminal's sync interval (default, see
``verifier/config.py``); the issuer's settle (2 s, fixed) is not scaled. For
each of ``--rounds`` revocations, after a random pause in [0, sync interval):
``RevokeCode`` over mTLS, then the code is scanned every 50 ms until the
terminal answers ``revoked``. Every other revocation comes right after a
publication (another code revoked and published first), so it waits the
issuer's minimum interval: the worst case of that part. Reported: median
and worst revoke -> rejected, split into revoke -> published (the
repository's ``timestamp.json`` replaced) and published -> rejected; the
ratio of the worst to the **baseline**, the sum of the scaled intervals as
measured in the same run (the issuer's minimum interval as configured, the
batch window, and the terminal's poll period read from the mirror's log);
the formula of the parts with the default settings; once, at the end, a key
compromise (KeyAdmin ``MarkCompromised`` by the national operator, every code
rejected, published at once) until the terminal answers ``key_compromised``;
and what each terminal poll cost on the wire (request and response, headers included) when nothing
changed and when it fetched a revocation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from healthcode.model import PROVINCES

from issuer.api import (common_pb2, health_codes_pb2, health_codes_pb2_grpc, key_admin_pb2, key_admin_pb2_grpc,
                        resident_index_pb2, resident_index_pb2_grpc)
from verifier.config import SyncConfig as TerminalSync
from verifier.mirror import SyncConfig as ClientLimits

from .crashloop_workspace import resident_ids
from .publisher_chain import Chain, Child, free_port, grpc_ready, http_ready

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The defaults the formula uses (seconds): issuer/config.py, publisher/config.py, verifier/config.py.
DEFAULTS = {
    "issuer_settle": 2.0,  # the revocation job's settle: a run starts this long after the first trigger (fixed)
    "issuer_min_interval": 60.0,  # [revocation] min_interval_seconds: at most one run this often
    "push_poll": 1.0,  # [revocation] push_poll_seconds (network mode; a run also triggers a push at once)
    "batch_window": 0.5,  # healthcode-publisher batch_window_seconds
    "sync_interval": TerminalSync().interval.total_seconds(),  # healthcode-verifier run --sync-interval
    "sync_deadline": float(ClientLimits().refresh_deadline or 0),  # --sync-deadline: the longest a refresh takes
}
SCAN_EVERY = 0.05
TARGET = 300.0


@dataclass
class _Terminal:
    """``python -m verifier run`` reading scans from a pipe, one JSON line out per scan."""

    process: subprocess.Popen[str]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scan(self, code: str) -> dict:
        with self.lock:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write(code + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the terminal exited")
        return dict(json.loads(line))


class _PublishWatch:
    """Notes every replacement of the repository's ``timestamp.json`` (what the mirror serves)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.moments: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                stat = self.path.stat()
                mark = (stat.st_ino, stat.st_mtime_ns)
            except OSError:
                mark = None
            if mark != last:
                self.moments.append(time.monotonic())
                last = mark
            time.sleep(0.005)

    def first_after(self, moment: float) -> float | None:
        return next((m for m in self.moments if m > moment), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _cost(poll: list[dict]) -> int:
    return sum(r["sent"] + r["received"] for r in poll)


async def _issue(address: str, credentials: grpc.ChannelCredentials, count: int) -> list[str]:
    """``count`` residents registered, one static code each; their code texts."""
    async with grpc.aio.secure_channel(address, credentials) as channel:
        index = resident_index_pb2_grpc.ResidentIndexStub(channel)
        codes = health_codes_pb2_grpc.HealthCodesStub(channel)
        texts = []
        for i, number in enumerate(resident_ids(count)):
            mid = (await index.RegisterResident(resident_index_pb2.RegisterResidentRequest(
                primary=common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)),
                timeout=30)).main_index_id
            reply = await codes.IssueCode(health_codes_pb2.IssueCodeRequest(
                main_index_id=mid, idempotency_key=f"latency-bench-{i:04d}"), timeout=30)
            texts.append(reply.code.code_text)
        return texts


def _revoke(stub: health_codes_pb2_grpc.HealthCodesStub, text: str) -> None:
    stub.RevokeCode(health_codes_pb2.RevokeCodeRequest(
        code_text=text, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE), timeout=30)


def _compromise(address: str, credentials: grpc.ChannelCredentials, terminal: _Terminal, code: str,
                timeout: float) -> float:
    """MarkCompromised (every code rejected, published at once) on the signing key; seconds until
    the terminal answers ``key_compromised`` for ``code``."""
    with grpc.secure_channel(address, credentials) as channel:
        stub = key_admin_pb2_grpc.KeyAdminStub(channel)
        keys = stub.ListKeys(key_admin_pb2.ListKeysRequest(province="33"), timeout=30).keys
        kid = next(k.kid for k in keys if k.signing)
        t0 = time.monotonic()
        since = timestamp_pb2.Timestamp(seconds=int(time.time()))
        stub.MarkCompromised(key_admin_pb2.MarkCompromisedRequest(
            province="33", kid=kid, since=since, policy=key_admin_pb2.COMPROMISE_POLICY_REJECT_ALL, publish=True),
            timeout=30)
    return _wait(terminal, code, "key_compromised", timeout) - t0


def _wait(terminal: _Terminal, code: str, want: str, timeout: float) -> float:
    """Scan ``code`` every 50 ms until the terminal's reason is ``want`` (None: valid); the moment it was."""
    deadline = time.monotonic() + timeout
    while True:
        answer = terminal.scan(code)
        if (answer.get("reason") or "valid") == want:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the terminal still answers {answer.get('reason') or 'valid'} after {timeout} s")
        time.sleep(SCAN_EVERY)


def run(*, rounds: int = 24, scale: float = 20.0, out=sys.stdout) -> dict:
    """Run the benchmark; print its Markdown report; return the numbers."""
    # the settle is fixed in the issuer (not configurable): it stays 2 s
    scaled = {name: value if name == "issuer_settle" else value / scale
              for name, value in DEFAULTS.items() if name != "sync_deadline"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    children: list[Child] = []
    watch = None
    with tempfile.TemporaryDirectory(prefix="revocation-latency-") as tmp:
        base = pathlib.Path(tmp)
        started = time.monotonic()
        chain = Chain.create(base / "chain", now=dt.datetime.now(dt.timezone.utc),
                             provinces=("33", *sorted(set(PROVINCES) - {"33"})))
        try:
            publisher_port = free_port()
            children.append(Child("publisher", chain.publisher_argv(publisher_port,
                                                                     batch_window=scaled["batch_window"]),
                                  log=base / "publisher.log", env={**chain.publisher_env(), **env},
                                  ready=grpc_ready(f"127.0.0.1:{publisher_port}",
                                                   chain.grpc_credentials("national:ops"))).start())
            mirror_port = free_port()
            mirror_log = base / "mirror.jsonl"
            url = f"http://127.0.0.1:{mirror_port}/"
            children.append(Child("mirror", [sys.executable, "-m", "tools.bench.mirror_server", str(chain.repo_dir),
                                             "--port", str(mirror_port), "--etag", "--log", str(mirror_log)],
                                  log=base / "mirror.log", env=env,
                                  ready=http_ready(url + "metadata/1.root.json")).start())
            config = chain.write_issuer_config(publisher_port, interval_minutes=60,
                                               min_interval_seconds=scaled["issuer_min_interval"],
                                               push_poll_seconds=scaled["push_poll"])
            issuer_port = free_port()
            address = f"127.0.0.1:{issuer_port}"
            credentials = chain.grpc_credentials("app")
            children.append(Child("issuer", chain.issuer_argv(config, issuer_port), log=base / "issuer.log",
                                  env={**chain.issuer_env(), **env}, ready=grpc_ready(address, credentials)).start())
            codes = asyncio.run(_issue(address, credentials, rounds + (rounds + 1) // 2 + 1))
            codes, primers, spare = codes[:rounds], codes[rounds:-1], codes[-1]

            terminal_dir = base / "terminal"
            verifier = [sys.executable, "-m", "verifier", "--data-dir", str(terminal_dir), "--source", url]
            subprocess.run([*verifier, "--root", str(chain.repo_dir / "metadata" / "1.root.json"), "sync",
                            "--no-progress"], check=True, env=env, capture_output=True, timeout=120)
            interval = f"{scaled['sync_interval'] * 1000:.0f}ms"
            process = subprocess.Popen(
                [*verifier, "run", "--stdin", "--json", "stdout", "--display", "none", "--no-audit",
                 "--sync-interval", interval, "--sync-retry", interval],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(base / "terminal.log", "wb"),  # noqa: SIM115
                text=True, env=env)
            terminal = _Terminal(process)
            for code in [*codes, *primers, spare]:  # every code valid first: the issuance has reached the terminal
                _wait(terminal, code, "valid", 120)
            log_mark = len(mirror_log.read_text().splitlines())
            idle_by = time.monotonic() + 5 * scaled["sync_interval"] + 30
            while not any(r["status"] == 304 for p in _polls_after(mirror_log.read_text().splitlines(), log_mark)
                          for r in p) and time.monotonic() < idle_by:
                time.sleep(0.1)  # at least one poll with nothing new in the measurement
            setup = time.monotonic() - started
            watch = _PublishWatch(chain.repo_dir / "metadata" / "timestamp.json")
            rng = random.Random(15)
            totals, published, rejected = [], [], []
            with grpc.secure_channel(address, credentials) as channel:
                stub = health_codes_pb2_grpc.HealthCodesStub(channel)
                for i, code in enumerate(codes):
                    time.sleep(rng.uniform(0, scaled["sync_interval"]))
                    if i % 2:  # right after a publication: this one waits the issuer's minimum interval
                        primed = time.monotonic()
                        _revoke(stub, primers[i // 2])
                        while watch.first_after(primed) is None:
                            time.sleep(0.005)
                    t0 = time.monotonic()
                    _revoke(stub, code)
                    t1 = _wait(terminal, code, "revoked", 120 + 10 * sum(scaled.values()))
                    t_pub = watch.first_after(t0) or t1
                    totals.append(t1 - t0)
                    published.append(t_pub - t0)
                    rejected.append(t1 - t_pub)
            # last, a key compromise by the national operator through KeyAdmin (publish: at once);
            # its polls fetch a key list, not a revocation: the byte counts stop before it
            log_end = len(mirror_log.read_text().splitlines())
            time.sleep(rng.uniform(0, scaled["sync_interval"]))
            compromise = _compromise(address, chain.grpc_credentials("national:ops"), terminal, spare,
                                     120 + 10 * sum(scaled.values()))
            process.terminate()
            process.wait(30)
        finally:
            if watch is not None:
                watch.stop()
            for child in reversed(children):
                child.stop()
        measured_polls = _polls_after(mirror_log.read_text().splitlines()[:log_end], log_mark)
    idle = [_cost(p) for p in measured_polls if any(r["status"] == 304 for r in p)]
    changed = [_cost(p) for p in measured_polls
               if any(r["path"].endswith("timestamp.json") and r["status"] == 200 for r in p)]
    starts = [poll[0]["t"] for poll in measured_polls]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    period = statistics.median(gaps) if gaps else None  # the terminal's poll period, as the mirror saw it
    report = {
        "rounds": rounds, "scale": scale, "setup_s": setup, "totals": totals, "published": published,
        "rejected": rejected, "compromise": compromise, "idle_bytes": idle, "changed_bytes": changed,
        "poll_period_s": period, "scaled": scaled,
    }
    _report(report, out)
    return report


def _polls_after(lines: list[str], mark: int) -> list[list[dict]]:
    """The terminal's polls in the mirror's log from line ``mark``: each starts with its root request."""
    polls: list[list[dict]] = []
    for line in lines[mark:]:
        record = json.loads(line)
        if record["path"].endswith(".root.json") or not polls:
            polls.append([])
        polls[-1].append(record)
    return polls


def _report(r: dict, out) -> None:
    totals, published, rejected = r["totals"], r["published"], r["rejected"]
    s = r["scaled"]
    job_wait = max(s["issuer_settle"], s["issuer_min_interval"])
    baseline = job_wait + s["batch_window"] + (r["poll_period_s"] or s["sync_interval"])
    worst = max(totals)
    median = statistics.median(totals)
    # what is not an interval: the worst measured beyond the scaled intervals (processes' own work)
    work = max(0.0, worst - (job_wait + s["batch_window"] + s["sync_interval"]))
    d = DEFAULTS
    formula = (max(d["issuer_settle"], d["issuer_min_interval"]) + d["batch_window"] + d["sync_interval"]
               + d["sync_deadline"])
    print(f"## Revocation latency: revoke -> rejected at an online terminal ({r['rounds']} revocations, "
          f"intervals / {r['scale']:g})\n", file=out)
    print(f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; setup {r['setup_s']:.0f} s (34 provinces, 4 processes)\n", file=out)
    print("| | median | worst |\n|---|---:|---:|", file=out)
    print(f"| revoke -> rejected | {median:.2f} s | {worst:.2f} s |", file=out)
    print(f"| revoke -> published (issuer job, push, publisher) | {statistics.median(published):.2f} s | "
          f"{max(published):.2f} s |", file=out)
    print(f"| published -> rejected (terminal's sync wait, sync, scan) | {statistics.median(rejected):.2f} s | "
          f"{max(rejected):.2f} s |", file=out)
    print(f"| a key compromise (KeyAdmin MarkCompromised, publish) -> rejected, once | {r['compromise']:.2f} s | |",
          file=out)
    print(f"\nBaseline, the scaled intervals as run: the issuer job's wait max(settle {s['issuer_settle']:g} s, "
          f"minimum interval {s['issuer_min_interval']:.2f} s) + "
          f"batch window {s['batch_window']:.3f} s + terminal poll period {r['poll_period_s'] or 0:.2f} s "
          f"(mirror log) = {baseline:.2f} s; worst / baseline = **{worst / baseline:.2f}x**, "
          f"median / baseline = {median / baseline:.2f}x.", file=out)
    print(f"\nWith the defaults, worst case: the issuer job's wait max(settle {d['issuer_settle']:g} s, minimum "
          f"interval {d['issuer_min_interval']:.0f} s) + publisher "
          f"batch {d['batch_window']:g} s + terminal sync interval {d['sync_interval']:.0f} s + a refresh "
          f"at its deadline {d['sync_deadline']:.0f} s = {formula:.1f} s, plus the processes' own work "
          f"(measured worst beyond the scaled intervals: {work:.2f} s) and the mirror's lag (0 for the "
          f"origin) = **{formula + work:.0f} s** against the target of {TARGET:.0f} s.", file=out)
    compromise = d["push_poll"] + d["batch_window"] + d["sync_interval"] + d["sync_deadline"]
    print(f"\nA key compromise, worst case with the defaults: push poll {d['push_poll']:g} s + batch "
          f"{d['batch_window']:g} s + sync interval {d['sync_interval']:.0f} s + refresh deadline "
          f"{d['sync_deadline']:.0f} s = {compromise:.1f} s, plus the work.", file=out)
    idle, changed = r["idle_bytes"], r["changed_bytes"]
    if idle:
        print(f"\nTerminal poll on the wire (request + response, headers included): nothing new "
              f"median {statistics.median(idle):.0f} B, max {max(idle)} B over {len(idle)} polls (target <= 1 kB); "
              + (f"with a revocation median {statistics.median(changed):.0f} B, max {max(changed)} B over "
                 f"{len(changed)} polls (target <= 10 kB)." if changed else "no poll fetched a revocation."),
              file=out)
    print(f"\nAt the default interval of {d['sync_interval']:.0f} s a terminal polls "
          f"{86400 / d['sync_interval']:.0f} times a day: about "
          f"{86400 / d['sync_interval'] * (statistics.median(idle) if idle else 0) / 1e6:.1f} MB a day when "
          "nothing changes.\n", file=out)
