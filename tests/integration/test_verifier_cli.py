"""``healthcode-verifier`` as a real process: sync, verify (exit codes), status, and run on a pty
scanner with the network blocked by an audit hook."""

from __future__ import annotations

import io
import json
import os
import select
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from tests.integration.verifier_runtime_support import T0, H, Pty, World

NOW = (T0 + H).strftime("%Y-%m-%dT%H:%M:%SZ")
TIMEOUT = 120

# Run the CLI with every network call refused (an audit hook in the child process).
OFFLINE = textwrap.dedent(
    """
    import sys
    def hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto",
                     "socket.sendmsg"):
            raise OSError(f"network blocked by the test ({event})")
    sys.addaudithook(hook)
    from verifier.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)


def cli(world: World, *args: str, now: str | None = NOW, offline: bool = False, input: bytes | None = None,
        source: str | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", OFFLINE] if offline else [sys.executable, "-m", "verifier"]
    options = ["--data-dir", str(world.data_dir), "--dev-trust", "--source", source or str(world.mirror)]
    if now:
        options += ["--now", now]
    return subprocess.run([*head, *options, *args], capture_output=True, input=input, timeout=TIMEOUT,
                          cwd=world.root)


@pytest.fixture()
def world(tmp_path) -> World:
    return World(tmp_path)


# --- verify ------------------------------------------------------------------------------------------


def test_verify_exit_codes(world, tmp_path):
    from PIL import Image

    from issuer.render import render_png

    png = tmp_path / "code.png"
    png.write_bytes(render_png(world.valid[0]))
    jpeg = tmp_path / "code.jpg"
    Image.open(io.BytesIO(render_png(world.valid[1], scale=5))).convert("L").save(jpeg, "JPEG", quality=40)
    garbage_image = tmp_path / "garbage.png"
    garbage_image.write_bytes(os.urandom(300))

    cases = [
        ("valid text", [world.valid[0]], 0, "VALID"),
        ("valid from stdin", ["-"], 0, "VALID"),
        ("revoked", [world.revoked], 1, "Code has been revoked"),
        ("expired", [world.expired], 1, "expired"),
        ("garbage", ["not a code at all"], 1, "INVALID"),
        ("EU DCC", ["HC1:NCFOXN%TS3DH3ZSUZK"], 1, "EU Digital COVID"),
        ("PNG image", ["--image", str(png)], 0, "VALID"),
        ("JPEG q40 image", ["--image", str(jpeg)], 0, "VALID"),
        ("not an image", ["--image", str(garbage_image)], 1, "image unreadable"),
        ("missing image", ["--image", str(tmp_path / "nope.png")], 2, "no such file"),
        ("nothing to verify", [], 2, "TEXT"),
    ]
    for name, args, code, words in cases:
        proc = cli(world, "verify", *args, input=(world.valid[2] + "\r\n").encode())
        output = (proc.stdout + proc.stderr).decode()
        assert proc.returncode == code, (name, output)
        assert words in output, (name, output)


def test_verify_json_and_stale_data(world):
    proc = cli(world, "verify", "--json", world.valid[4])
    record = json.loads(proc.stdout)
    assert proc.returncode == 0
    assert record["schema"] == "healthcode-verifier/result/1" and record["province_name"] == "浙江"
    stale = cli(world, "verify", "--json", world.valid[4], now=(T0 + 8 * 24 * H).isoformat())
    assert stale.returncode == 2  # the verifier cannot decide: an error, not an invalid code
    assert json.loads(stale.stdout)["reason"] == "trust_data_stale"
    warn = cli(world, "verify", world.valid[4], now=(T0 + 80 * H).isoformat())
    assert warn.returncode == 0 and b"trust data 3 d 8 h old: sync soon" in warn.stdout


def test_verify_without_any_trust_data_is_an_error(tmp_path, world):
    proc = subprocess.run([sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "empty"), "--dev-trust",
                           "verify", world.valid[0]], capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 2
    assert b"no verified trust data" in proc.stdout


# --- sync and status ------------------------------------------------------------------------------------


def test_sync_says_what_changed_and_keeps_good_data_on_failure(world):
    proc = cli(world, "sync", now=None)
    assert proc.returncode == 0, proc.stderr
    assert b"changed: nothing" in proc.stdout
    world.publish(version=2, extra_revoked=(3,))
    proc = cli(world, "sync", now=None)
    assert b"changed: 1 province(s): 33" in proc.stdout and b"2 key(s) of 2 province(s)" in proc.stdout

    world.publish(version=1)  # a rollback
    proc = cli(world, "sync", now=None)
    assert proc.returncode == 2 and b"rollback refused" in proc.stderr
    proc = cli(world, "sync", now=None, source=str(world.root / "no-such-mirror"))
    assert proc.returncode == 2 and b"last good trust data stays in force" in proc.stderr
    assert cli(world, "verify", world.valid[3], now=None).returncode == 1  # serial 3 revoked in version 2
    assert cli(world, "status", now=None).returncode == 0


def test_status_exit_code_follows_freshness(world):
    assert cli(world, "status").returncode == 0
    proc = cli(world, "status", now=(T0 + 8 * 24 * H).isoformat())
    assert proc.returncode == 1 and b"stale" in proc.stdout


def test_every_command_has_help():
    for command in ("sync", "verify", "run", "status"):
        proc = subprocess.run([sys.executable, "-m", "verifier", command, "--help"], capture_output=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0 and len(proc.stdout) > 200, command
    top = subprocess.run([sys.executable, "-m", "verifier", "--help"], capture_output=True, timeout=TIMEOUT)
    assert all(c.encode() in top.stdout for c in ("sync", "verify", "run", "status"))


# --- run: a pty scanner, the network gone --------------------------------------------------------------


def test_run_on_a_pty_scanner_offline(world, tmp_path):
    """The 'done when' scenario: synced earlier; now a wedge scanner on a pty, no network at all."""
    pty = Pty()
    audit_db = tmp_path / "audit.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", OFFLINE, "--data-dir", str(world.data_dir), "--dev-trust",
         "--source", "https://mirror.example.invalid/bundle.json", "--now", NOW,
         "run", "--tty", pty.path, "--audit-db", str(audit_db), "--frame-timeout", "200ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        pty.wait_raw(timeout=60)
        scans = [*world.valid, world.revoked, "HC1:NCFOXN%TS3DH", world.valid[0] + world.valid[1]]
        for text in scans:
            pty.type(text.encode() + b"\r\n", chunk=16)
        pty.type(b"\xff\xfe\x00garbage\r\n" + b"X" * 100_000 + b"\r\n")
        deadline_lines = len(scans) + 2
        out = b""
        while out.count(b"\n") < deadline_lines:
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk, child.stderr.read().decode()
            out += chunk
        err = b""
        deadline = time.monotonic() + 30
        while "trust sync failed".encode() not in err and time.monotonic() < deadline:
            if select.select([child.stderr], [], [], 0.5)[0]:
                err += os.read(child.stderr.fileno(), 65536)
    finally:
        pty.close()
        child.wait(timeout=30)
    stderr = (err + child.stderr.read()).decode()
    assert child.returncode == 0, stderr
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["result"] for r in records] == ["valid"] * len(world.valid) + ["invalid"] * 5
    assert [r["reason"] for r in records[len(world.valid):]] == ["revoked"] + ["malformed"] * 4
    # the background sync tried, and failed honestly: one bilingual line, no raw exception
    assert "trust sync failed / 信任数据同步失败: 镜像主机名无法解析 / mirror host name not found" in stderr
    assert "network blocked by the test" not in stderr
    assert "VALID" in stderr and "INVALID" in stderr  # the operator display (stderr: JSON owns stdout)
    conn = sqlite3.connect(audit_db)
    try:
        rows = conn.execute("SELECT result, reason, source, subject FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rows] == [r["result"] for r in records]
    assert all(r[2] == f"tty:{pty.path}" and r[3] is None for r in rows)


# --- the production trust source: the national TUF repository -----------------------------------------


def test_sync_and_verify_through_the_tuf_trust_repository(tmp_path):
    """keys/trustrepo.py writes a mirror with a key list and revocation files; the CLI syncs it
    (verifier/trustsync.py + healthcode/revocation.py), then verifies offline; a delta revokes more."""
    from securesystemslib.signer import CryptoSigner

    import healthcode as hc
    from healthcode.keylist import KeyList
    from healthcode.revocation import RevocationState, encode_delta
    from keys.trustrepo import TrustRepository

    def gen(n):
        return [CryptoSigner.generate_ed25519() for _ in range(n)]

    targets_signers = gen(3)
    repo, _ = TrustRepository.init(
        tmp_path / "mirror", root_signers=gen(3), root_threshold=2, targets_signers=targets_signers,
        targets_threshold=2, snapshot_signers=gen(1), timestamp_signers=gen(1), now=T0)
    key = hc.generate_signing_key(hc.Algorithm.ES256)
    kid = key.public_key().key_id()
    province_signers = gen(2)
    repo.add_province("33", province_signers, 1, targets_signers=targets_signers[:2], now=T0)
    trusted = hc.TrustedKey(kid=kid, province="33", public_key=key.public_key(),
                            use_from=T0 - 24 * H, use_until=T0 + 60 * 24 * H, verify_until=T0 + 90 * 24 * H)
    repo.publish_key_list(KeyList(province="33", serial=1, keys=(trusted,)), province_signers[:1], now=T0)
    first = RevocationState("33", kid, seq=1, universe=100, serials=[5])
    shard = f"revocation/{kid.hex()}"
    repo.publish_province_targets("33", {f"{shard}/snapshot.hcrs": first.to_snapshot()}, province_signers[:1],
                                  now=T0)
    repo.publish(now=T0)
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes(1))
    codes = {serial: hc.sign_code(hc.CodeClaims(province="33", subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                                serial=serial, issued_at=T0, expires_at=T0 + 7 * 24 * H),
                                  hc.SoftwareSigner(key)) for serial in (4, 5, 6)}

    def run_cli(*args, now=T0 + H):
        return subprocess.run([sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "data"),
                               "--now", now.isoformat(), *args], capture_output=True, timeout=TIMEOUT)

    def verify(serial, now=T0 + H):
        proc = run_cli("verify", "--json", codes[serial], now=now)
        return proc.returncode, json.loads(proc.stdout) if proc.stdout else proc.stderr

    assert run_cli("verify", codes[4]).returncode == 2  # nothing synced yet
    proc = run_cli("--source", str(tmp_path / "mirror"), "--root", str(root), "sync")
    assert proc.returncode == 0, proc.stderr
    assert b"changed: 1 province(s): 33" in proc.stdout and b"revocation: 1 shard(s) updated" in proc.stdout
    # offline from here: no --source, no --root (pinned at the first sync)
    code, record = verify(4)
    assert code == 0 and record["province"] == "33" and record["trust"]["warnings"] == []
    assert verify(5)[0] == 1 and verify(5)[1]["reason"] == "revoked"
    assert verify(6)[0] == 0

    second = RevocationState("33", kid, seq=2, universe=100, serials=[5, 6])
    repo.publish_province_targets("33", {f"{shard}/snapshot.hcrs": second.to_snapshot(),  # as the publisher does
                                         f"{shard}/delta-{1:010d}.hcrd": encode_delta(first, second)},
                                  province_signers[:1], now=T0 + H)
    repo.publish(now=T0 + H)
    proc = run_cli("--source", str(tmp_path / "mirror"), "sync", now=T0 + 2 * H)
    assert proc.returncode == 0, proc.stderr
    assert b"changed: 1 province(s): 33" in proc.stdout and b"revocation: 1 shard(s) updated" in proc.stdout
    assert verify(6, now=T0 + 2 * H)[1]["reason"] == "revoked"
    assert verify(4, now=T0 + 2 * H)[0] == 0
    stale = run_cli("verify", codes[4], now=T0 + 9 * 24 * H)
    assert stale.returncode == 2 and b"Trust data too old" in stale.stdout


def test_a_crash_loses_at_most_the_audit_batch_window(world, tmp_path):
    """kill -9 the loop: every scan answered more than one batch window (200 ms) ago is in the audit log."""
    audit_db = tmp_path / "audit.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-m", "verifier", "--data-dir", str(world.data_dir), "--dev-trust", "--now", NOW,
         "run", "--stdin", "--audit-db", str(audit_db), "--display", "none"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        child.stdin.write(("\n".join(world.valid) + "\n").encode())
        child.stdin.flush()
        out = b""
        while out.count(b"\n") < len(world.valid):
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk
            out += chunk
        time.sleep(0.2 + 0.3)  # the batch window, and some slack for a loaded machine
        child.kill()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    conn = sqlite3.connect(audit_db)
    try:
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == len(world.valid)
    finally:
        conn.close()
