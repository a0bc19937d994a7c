"""A terminal polling a real HTTP mirror process: what a poll costs, and a slow mirror's deadline.

The mirror is a separate process on 127.0.0.1 (``tools/bench/mirror_server.py``:
a static file server that logs the bytes it sends and receives per request),
with ETags or with ``Last-Modified`` only (as ``python -m http.server``), or
dripping one byte every 5 seconds. The terminal is the real sync
(``verifier.trustsync.TrustSync`` through ``verifier.http_fetcher``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from issuer.tls import DevPki
from tests.integration.trustrepo_support import HOUR, SMALL, T0, Nation
from verifier.errors import SyncFailed
from verifier.http_fetcher import CACHE_FORMAT, HttpMirrorFetcher
from verifier.trust import sync_failure
from verifier.trust_sources import TufTrustSource
from verifier.trustsync import VALIDATORS_NAME, SyncConfig, TrustSync

ROOT = Path(__file__).resolve().parents[2]


class Mirror:
    """``python -m tools.bench.mirror_server`` serving a directory, in its own process."""

    def __init__(self, directory: Path, work: Path, *args: str) -> None:
        self.log = work / "mirror.log"
        port_file = work / "mirror.port"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.mirror_server", str(directory), "--port-file", str(port_file),
             "--log", str(self.log), *args], cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.process.poll() is None, "the mirror process exited"
            assert time.monotonic() < deadline, "the mirror did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}/"
        self._seen = 0

    def requests(self) -> list[dict]:
        """The requests served since the last call."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        new, self._seen = lines[self._seen:], len(lines)
        return [json.loads(line) for line in new]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def nation(tmp_path):
    return Nation(tmp_path / "repo", SMALL)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _cost(requests: list[dict]) -> int:
    return sum(r["sent"] + r["received"] for r in requests)


@pytest.mark.parametrize("validators", ["etag", "last-modified"])
def test_a_poll_costs_under_1kB_when_nothing_changed_and_under_10kB_after_a_change(nation, tmp_path, validators):
    mirror = Mirror(nation.directory, tmp_path, *(["--etag"] if validators == "etag" else []))
    try:
        client = TrustSync(tmp_path / "t" / "metadata", tmp_path / "t" / "targets", mirror.url,
                           nation.repo.root_bytes(1))
        if validators == "last-modified":
            time.sleep(1.1)  # a Last-Modified is a strong validator only once a second older than the Date
        first = client.refresh(T0 + HOUR)
        assert first.complete and first.changed == SMALL
        full = mirror.requests()
        # (1) nothing new: timestamp.json answers 304 and root N+1 404; nothing else is asked
        result = client.refresh(T0 + 2 * HOUR)
        poll = mirror.requests()
        assert result.changed == () and result.bytes_transferred == 0
        assert [(Path(r["path"]).name, r["status"]) for r in poll] == [("2.root.json", 404), ("timestamp.json", 304)]
        assert _cost(poll) <= 1000, poll
        assert len({r["conn"] for r in poll}) == 1  # one connection, kept alive for the poll's requests
        # (2) a restarted terminal keeps its validators (they are on disk, owner-only)
        validators_file = tmp_path / "t" / "targets" / VALIDATORS_NAME
        assert json.loads(validators_file.read_bytes())["format"] == CACHE_FORMAT
        assert validators_file.stat().st_mode & 0o077 == 0
        restarted = TrustSync(tmp_path / "t" / "metadata", tmp_path / "t" / "targets", mirror.url,
                              nation.repo.root_bytes(1))
        restarted.refresh(T0 + 3 * HOUR)
        assert [r["status"] for r in mirror.requests()] == [404, 304]
        # (3) one province publishes: the poll fetches the new timestamp, snapshot, role and key list
        nation.publish_keys("33", T0 + 3 * HOUR)
        nation.publish(T0 + 3 * HOUR)
        if validators == "last-modified":
            time.sleep(1.1)
        result = restarted.refresh(T0 + 4 * HOUR)
        after = mirror.requests()
        assert result.changed == ("33",)
        assert [r["status"] for r in after].count(200) == 4 and _cost(after) <= 10_000, after
        assert _cost(full) > 10 * _cost(poll)
        # (4) a damaged validators file costs one unconditional request, nothing else
        validators_file.write_text("{not json")
        TrustSync(tmp_path / "t" / "metadata", tmp_path / "t" / "targets", mirror.url,
                  nation.repo.root_bytes(1)).refresh(T0 + 5 * HOUR)
        assert [r["status"] for r in mirror.requests()] == [404, 200]
    finally:
        mirror.stop()


def test_a_slow_drip_mirror_ends_the_refresh_with_the_warning_within_the_deadline(nation, tmp_path):
    good = Mirror(nation.directory, tmp_path / "good" if (tmp_path / "good").mkdir() is None else tmp_path)
    source = TufTrustSource(tmp_path / "terminal" / "trust", good.url, bootstrap_root=_root_file(nation, tmp_path),
                            refresh_deadline=3)
    try:
        source.refresh(T0 + HOUR)
    finally:
        good.stop()
    (tmp_path / "slow").mkdir()
    slow = Mirror(nation.directory, tmp_path / "slow", "--drip", "5")
    try:
        drip = TufTrustSource(tmp_path / "terminal" / "trust", slow.url, refresh_deadline=3)
        started = time.monotonic()
        with pytest.raises(SyncFailed) as caught:
            drip.refresh(T0 + 2 * HOUR)
        took = time.monotonic() - started
        assert 2.5 <= took <= 4.5, took
        assert sync_failure(caught.value) == ("trust sync failed / 信任数据同步失败: 镜像过慢，同步超过 3 秒时限 / "
                                              "mirror too slow: refresh deadline of 3 s passed")
        # the last good trust data stays in force
        assert drip.load(T0 + 2 * HOUR).last_verified_refresh == T0 + HOUR
        # the terminal's own command, with the deadline from its option
        started = time.monotonic()
        cli = subprocess.run(
            [sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "terminal"), "--source", slow.url,
             "--sync-deadline", "2s", "--now", "2030-03-01T11:00:00Z", "sync", "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
        took = time.monotonic() - started
    finally:
        slow.stop()
    assert cli.returncode == 2, cli.stderr  # EXIT_ERROR: the sync failed
    assert "trust sync failed / 信任数据同步失败: 镜像过慢，同步超过 2 秒时限" in cli.stderr
    assert "the last good trust data stays in force" in cli.stderr
    assert took < 2 + 8, took  # the deadline, plus the interpreter's start


def _root_file(nation: Nation, tmp_path: Path) -> Path:
    path = tmp_path / "root.json"
    path.write_bytes(nation.repo.root_bytes(1))
    return path


def test_the_default_deadline_is_documented_and_can_be_turned_off():
    assert SyncConfig().refresh_deadline == 60.0
    assert SyncConfig(refresh_deadline=None).refresh_deadline is None


class CountingProxy:
    """A TCP relay on 127.0.0.1 that counts the bytes each way and the connections (TLS included)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = self.down = self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, way: str) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def take(self) -> tuple[int, int]:
        """(bytes both ways, connections) since the last call."""
        with self.lock:
            counts = (self.up + self.down, self.connections)
            self.up = self.down = self.connections = 0
        return counts

    def close(self) -> None:
        self.listener.close()


def test_an_https_poll_is_one_connection_and_resumes_the_tls_session(nation, tmp_path):
    pki = DevPki.create(now=dt.datetime.now(dt.timezone.utc)).write(tmp_path / "pki")
    mirror = Mirror(nation.directory, tmp_path, "--etag", "--tls-cert", str(pki["server.pem"]),
                    "--tls-key", str(pki["server.key"]))
    proxy = CountingProxy(int(mirror.url.rsplit(":", 1)[1].strip("/")))
    try:
        context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        fetcher = HttpMirrorFetcher(ssl_context=context, cache_file=tmp_path / "validators.json")
        client = TrustSync(tmp_path / "t" / "metadata", tmp_path / "t" / "targets",
                           f"https://127.0.0.1:{proxy.port}/", nation.repo.root_bytes(1), fetcher=fetcher)
        assert client.refresh(T0 + HOUR).changed == SMALL
        first, connections = proxy.take()
        assert connections == 1 and fetcher.resumed == 0  # the whole first sync on one connection
        polls = []
        for hour in (2, 3, 4):
            assert client.refresh(T0 + hour * HOUR).changed == ()
            polls.append(proxy.take())
        assert [c for _, c in polls] == [1, 1, 1] and fetcher.resumed == 3  # a resumed handshake each poll
        assert [r["status"] for r in mirror.requests()][-2:] == [404, 304]
        # what TLS costs on top of the HTTP bytes: recorded for docs/revocation.md §4.3
        print(f"https poll with nothing new: {[b for b, _ in polls]} bytes on the wire (first sync {first})")
        assert max(b for b, _ in polls) <= 3000
    finally:
        proxy.close()
        mirror.stop()


def test_a_last_modified_in_the_same_second_as_the_response_is_not_used(nation, tmp_path):
    # RFC 9110 8.8.2.2: a date less than a second before the response's Date is a weak validator
    # (the file may change again within that second): the next request is unconditional
    mirror = Mirror(nation.directory, tmp_path)
    try:
        client = TrustSync(tmp_path / "t" / "metadata", tmp_path / "t" / "targets", mirror.url,
                           nation.repo.root_bytes(1))
        timestamp = nation.directory / "metadata" / "timestamp.json"
        soon = time.time() + 0.5
        os.utime(timestamp, (soon, soon))
        client.refresh(T0 + HOUR)
        kept = tmp_path / "t" / "targets" / VALIDATORS_NAME  # absent when no file had a strong validator
        validators = json.loads(kept.read_bytes())["entries"] if kept.exists() else {}
        assert not any(url.endswith("timestamp.json") for url in validators)
        mirror.requests()
        client.refresh(T0 + 2 * HOUR)
        assert [r["status"] for r in mirror.requests()] == [404, 200]
    finally:
        mirror.stop()


def test_a_running_terminal_warns_when_its_background_sync_hits_the_deadline(nation, tmp_path):
    (tmp_path / "good").mkdir()
    good = Mirror(nation.directory, tmp_path / "good")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        subprocess.run([sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "terminal"), "--source",
                        good.url, "--root", str(_root_file(nation, tmp_path)), "--now", "2030-03-01T09:00:00Z",
                        "sync", "--no-progress"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
    finally:
        good.stop()
    (tmp_path / "slow").mkdir()
    slow = Mirror(nation.directory, tmp_path / "slow", "--drip", "5")
    terminal = subprocess.Popen(
        [sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "terminal"), "--source", slow.url,
         "--sync-deadline", "2s", "--now", "2030-03-01T10:00:00Z", "run", "--stdin", "--json", "stdout",
         "--display", "stderr", "--no-audit"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert terminal.stderr is not None
        os.set_blocking(terminal.stderr.fileno(), False)
        seen, started = b"", time.monotonic()
        while "镜像过慢".encode() not in seen and time.monotonic() - started < 30:
            seen += terminal.stderr.read() or b""
            time.sleep(0.1)
        took = time.monotonic() - started
    finally:
        terminal.terminate()
        terminal.wait(30)
        slow.stop()
    text = seen.decode()
    assert "trust sync failed / 信任数据同步失败: 镜像过慢，同步超过 2 秒时限 / mirror too slow" in text, text
    assert took < 2 + 10, took  # the deadline, plus the interpreter's start
