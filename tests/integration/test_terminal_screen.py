"""What the person at the terminal sees, and what the terminal leaves on disk (issue 11, items 1, 11-13).

* ``run`` on the operator's own console (a real pty as stdin, stdout and stderr): a ready screen
  first, then the verdict in Chinese and English with Beijing times, and never the HIS's JSON
  line (main index IDs) unless it is configured; ``--json file:`` gets it, owner-only.
* The audit database (and its ``-wal``/``-shm``) and kept camera images are owner-only under umask 022.
* Through the real TUF trust repository: a pre-published key without revocation data is no
  warning; a live one is, by province and kid; a sync against a closed port is one bilingual line.
* Every failure of the CLI is one ``Error:`` line, never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import termios
import time

import pytest

from tests.integration.verifier_runtime_support import T0, H, World
from verifier.audit import AuditEntry, AuditLog
from verifier.config import AuditConfig
from verifier.scan import FolderSource

NOW = (T0 + H).strftime("%Y-%m-%dT%H:%M:%SZ")
TIMEOUT = 120


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class Console:
    """The operator's console: ``run`` with a real pty as its stdin, stdout and stderr."""

    def __init__(self, world: World, *args: str, cwd) -> None:
        self.master, slave = os.openpty()
        self.child = subprocess.Popen(
            [sys.executable, "-m", "verifier", "--data-dir", str(world.data_dir), "--dev-trust", "--now", NOW,
             "run", "--no-sync", "--audit-db", str(cwd / "audit.sqlite3"), *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=cwd, start_new_session=True)
        os.close(slave)
        self.screen = b""

    def read_until(self, words: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while words.encode() not in self.screen:
            assert time.monotonic() < deadline, f"{words!r} never shown: {self.screen.decode(errors='replace')}"
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:  # the child closed the pty
                    break
        return self.screen.decode(errors="replace")

    def wait_raw(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:
            assert time.monotonic() < deadline, "the verifier never configured the console"
            time.sleep(0.01)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode() + b"\r")

    def close(self) -> int:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):  # drain, so the child never blocks writing to the pty
            while select.select([self.master], [], [], 0.2)[0] and os.read(self.master, 65536):
                pass
        code = self.child.wait(timeout=30)
        os.close(self.master)
        return code


def test_the_his_json_line_is_not_on_the_operators_screen(world, tmp_path):
    """Plain ``run`` on the console (no --json): the verdict, never the JSON line with the main index ID."""
    console = Console(world, cwd=tmp_path)
    try:
        console.wait_raw()
        console.type(world.valid[0])
        console.read_until("The health code is valid")
        console.type("HC1:NCFOXN%TS3DH")  # a second verdict: the first scan's batch is done and flushed
        screen = console.read_until("EU Digital COVID Certificate")
    finally:
        assert console.close() == 0
    subject = json.loads(subprocess.run(
        [sys.executable, "-m", "verifier", "--data-dir", str(world.data_dir), "--dev-trust", "--now", NOW,
         "verify", "--json", world.valid[0]], capture_output=True, timeout=TIMEOUT).stdout)["main_index_id"]
    assert "main_index_id" not in screen and '"schema"' not in screen
    assert subject not in screen


def test_operator_console_ready_screen_beijing_time_and_both_languages(world, tmp_path):
    """A ready screen before the first scan; Beijing times; a refusal's detail in Chinese and English."""
    console = Console(world, cwd=tmp_path)
    try:
        console.wait_raw()
        ready = console.read_until("ready")
        console.type(world.valid[0])
        console.read_until("有效期至")
        console.type("HC1:NCFOXN%TS3DH")
        screen = console.read_until("HC1:),")
    finally:
        assert console.close() == 0
    assert "就绪，请扫码 / ready: scan a code" in ready and "扫描输入 / scanner input: stdin" in ready
    assert "信任数据 1 小时 前更新（2026-11-22 16:00 北京时间 (CST) 验证）" in ready
    assert "结果输出 / results to: 无（未配置 --json）/ none (no --json)" in ready
    assert "有效期至 / valid until: 2026-12-22 16:00 北京时间 (CST)" in screen and " UTC" not in screen
    assert "欧盟数字新冠证书（HC1:），不是中国健康码 / an EU Digital COVID Certificate" in screen


def test_json_to_a_file_is_owner_only_and_off_the_screen(world, tmp_path):
    results = tmp_path / "his" / "results.jsonl"
    results.parent.mkdir()
    with umask(0o022):
        console = Console(world, "--json", f"file:{results}", cwd=tmp_path)
    try:
        console.wait_raw()
        console.read_until("ready")
        console.type(world.valid[1])
        screen = console.read_until("有效期至")
    finally:
        assert console.close() == 0
    assert "main_index_id" not in screen and f"results to: file:{results}" in screen
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert record["result"] == "valid" and record["main_index_id"] and record["time"].endswith("Z")
    assert mode(results) == 0o600  # main index IDs: owner-only, whatever the umask
    assert mode(tmp_path / "audit.sqlite3") == 0o600


def test_audit_database_and_its_wal_are_owner_only(tmp_path):
    """SQLite creates files 0644 under umask 022: the audit log (and -wal, -shm) must be 0600."""
    path = tmp_path / "audit.sqlite3"
    entry = AuditEntry(time="2026-11-22T09:00:00.000Z", result="valid", reason=None, province="33",
                       kid="0102030405060708", serial="1", claims_verified=1, source="stdin", trust_age_s=0,
                       clock_behind=0, subject=None, raw=None)
    with umask(0o022):
        log = AuditLog(AuditConfig(path=path), clock=lambda: T0).start()
        try:
            log.record(entry)
            assert log.flush()
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        finally:
            log.close()
    # an audit database left wider (an older version, a copy) is tightened when opened
    path.chmod(0o644)
    log = AuditLog(AuditConfig(path=path), clock=lambda: T0).start()
    try:
        log.record(entry)
        assert log.flush()
    finally:
        log.close()
    assert mode(path) == 0o600


def test_kept_camera_images_are_owner_only(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    image = folder / "scan-1.png"
    with umask(0o022):
        image.write_bytes(b"not really a PNG")
        source = FolderSource(folder, decode=lambda path: ["EHC1:X"])
        source.poll_once()
        assert [s.text for s in source.poll_once()] == ["EHC1:X"]
    assert mode(folder / "processed" / "scan-1.png") == 0o600
    assert mode(folder / "processed") == 0o700


# --- the CLI's failures ---------------------------------------------------------------------------------

def test_every_failure_is_one_error_line(world, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        ("camera folder cannot be created", ["run", "--no-sync", "--stdin", "--folder", str(a_file / "drop")],
         "Not a directory"),
        ("JSON file in a missing directory", ["run", "--no-sync", "--stdin", "--json", f"file:{tmp_path}/no/x.jsonl"],
         "No such file or directory"),
        ("sync from a missing USB stick", ["--source", str(tmp_path / "no-stick"), "sync"],
         "trust sync failed / 信任数据同步失败: 找不到信任数据源 / trust source not found"),
    ]
    for name, args, words in cases:
        proc = subprocess.run([sys.executable, "-m", "verifier", "--data-dir", str(world.data_dir), "--dev-trust",
                               "--now", NOW, *args], capture_output=True, input=b"", timeout=TIMEOUT)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err, (name, err)
        (line,) = err.splitlines()
        assert line.startswith("Error: ") and words in line, (name, err)


# --- the production trust source --------------------------------------------------------------------------

def test_tuf_revocation_warning_names_live_keys_only_and_sync_failure_is_short(tmp_path):
    """A key list with a key that has revocation data, a live key without, and a pre-published key
    without: only the live one is warned about, by province and kid. Then a sync against a closed
    port says so in one bilingual line, not urllib3's exception."""
    from securesystemslib.signer import CryptoSigner

    import healthcode as hc
    from healthcode.keylist import KeyList
    from healthcode.revocation import RevocationState
    from keys.trustrepo import TrustRepository

    def gen(n):
        return [CryptoSigner.generate_ed25519() for _ in range(n)]

    targets_signers = gen(1)
    repo, _ = TrustRepository.init(
        tmp_path / "mirror", root_signers=gen(1), root_threshold=1, targets_signers=targets_signers,
        targets_threshold=1, snapshot_signers=gen(1), timestamp_signers=gen(1), now=T0)
    province_signers = gen(1)
    repo.add_province("33", province_signers, 1, targets_signers=targets_signers, now=T0)
    keys = {}
    for name, use_from in (("covered", T0 - 24 * H), ("live", T0 - 24 * H), ("pre-published", T0 + 30 * 24 * H)):
        public = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
        keys[name] = hc.TrustedKey(kid=public.key_id(), province="33", public_key=public, use_from=use_from,
                                   use_until=use_from + 60 * 24 * H, verify_until=use_from + 90 * 24 * H)
    repo.publish_key_list(KeyList(province="33", serial=1, keys=tuple(keys.values())), province_signers, now=T0)
    kid = keys["covered"].kid
    shard = RevocationState("33", kid, seq=1, universe=100, serials=[5])
    repo.publish_province_targets("33", {f"revocation/{kid.hex()}/snapshot.hcrs": shard.to_snapshot()},
                                  province_signers, now=T0)
    repo.publish(now=T0)
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes(1))

    def run_cli(*args):
        return subprocess.run([sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "data"),
                               "--now", (T0 + H).isoformat(), *args], capture_output=True, timeout=TIMEOUT)

    proc = run_cli("--source", str(tmp_path / "mirror"), "--root", str(root), "sync")
    assert proc.returncode == 0, proc.stderr
    status = run_cli("status").stdout.decode()
    live, pre = keys["live"].kid.hex()[:8], keys["pre-published"].kid.hex()[:8]
    assert f"no revocation data for 1 signing key(s): their revoked codes are not detected: 33 浙江 kid {live}" \
        in status, status
    assert "1 个签名密钥无撤销数据" in status and pre not in status

    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    failed = run_cli("--source", f"http://127.0.0.1:{port}/", "sync")
    err = failed.stderr.decode()
    assert failed.returncode == 2 and "Traceback" not in err
    (line,) = err.splitlines()
    assert line == ("Error: trust sync failed / 信任数据同步失败: 镜像拒绝连接 / mirror refused the connection; "
                    "上次有效的信任数据继续使用 / the last good trust data stays in force"), err


def test_a_key_coming_into_use_mid_run_is_warned_from_then_on(world, tmp_path):
    """The loop takes the state's warnings anew once a pre-published key's use_from has passed."""
    from tests.integration.verifier_runtime_support import Clock, _scan, lines_of, runtime_for
    from verifier.trust import TrustState

    import healthcode as hc

    public = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
    upcoming = hc.TrustedKey(kid=public.key_id(), province="44", public_key=public, use_from=T0 + 2 * H,
                             use_until=T0 + 60 * 24 * H, verify_until=T0 + 90 * 24 * H)

    class Source:  # the world's data, with one pre-published key that has no revocation data
        def refresh(self, now, *, progress=None):
            return world.source().refresh(now, progress=progress)

        def load(self, now):
            inner = world.source().load(now)
            return TrustState(inner.keyring, inner.revocation, inner.last_verified_refresh,
                              uncovered=(upcoming,)).at(now)

    clock = Clock(T0 + H)
    runtime, out, screen, _ = runtime_for(world, clock, tmp_path, source=Source(), audit=False)
    runtime.process(_scan(world.valid[0]))
    clock.now = T0 + 2 * H
    runtime.process(_scan(world.valid[1]))
    runtime.sinks[0].flush()
    before, after = (record["trust"]["warnings"] for record in lines_of(out))
    assert before == []
    (warning,) = after
    assert f"44 广东 kid {upcoming.kid.hex()[:8]}" in warning
    assert runtime.state.recheck_at == T0 + 90 * 24 * H + dt.timedelta(seconds=1)
    assert f"kid {upcoming.kid.hex()[:8]}" in screen.getvalue()
