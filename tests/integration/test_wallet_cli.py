"""``healthcode-wallet`` as a real process: init, show --once on a real pty, png, status, one-line errors.

The credential is signed here with a test issuer key and stored through the
library (the issuer itself is in ``test_wallet_issuer.py``); everything else
is the command line as a user runs it. The terminal QR is read back from the
pty's bytes, drawn as pixels and decoded by pyzbar, then verified by the core.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
from PIL import Image

import healthcode as hc
from healthcode import presentation as hp
from healthcode.algorithms import generate_signing_key
from verifier.images import decode_image
from wallet import Wallet

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
DAY = dt.timedelta(days=1)
ISSUER = hc.SoftwareSigner(generate_signing_key())
RING = hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                 use_from=NOW - 30 * DAY, use_until=NOW + 30 * DAY, verify_until=NOW + 60 * DAY)])
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def wallet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wallet", *args]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(wallet_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def secret_file(path, content: str = "correct horse battery\n", mode: int = 0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


@pytest.fixture
def enrolled(tmp_path):
    """A wallet made by ``init`` whose credential (signed here) binds its device key."""
    secret = secret_file(tmp_path / "passphrase")
    directory = tmp_path / "wallet"
    result = run("init", "--wallet", str(directory), "--secret-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert "Wallet created" in result.stdout
    with Wallet.open(directory, secret.read_bytes().strip()) as wallet:
        credential = hc.sign_code(hc.CodeClaims(
            province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=41,
            issued_at=NOW - DAY, expires_at=NOW + 6 * DAY,
            holder_key=hp.holder_cnf(wallet.device.public_point())), ISSUER)
        wallet.files.write(wallet.state().with_(credential=credential))
    return directory, secret


def run_on_pty(argv: list[str], timeout: float = 60, size: tuple[int, int] | None = None) -> tuple[int, bytes, str]:
    """Run ``argv`` with stdin and stdout on a fresh pty (``size``: columns, rows); return (exit, pty bytes, stderr)."""
    master, slave = os.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    try:
        process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    finally:
        os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    code = process.wait(timeout=timeout)
    return code, bytes(output), process.stderr.read().decode()


def qr_from_terminal(text: str) -> list[str]:
    """Decode the half-block QR drawn in ``text`` (ANSI stripped), as a camera would see it."""
    lines = [line for line in ANSI.sub("", text).replace("\r", "").split("\n") if line and set(line) <= set(" ▀▄█")]
    scale = 4
    rows = []
    for line in lines:
        rows += [[ch in "▀█" for ch in line], [ch in "▄█" for ch in line]]
    image = Image.new("L", (max(len(r) for r in rows) * scale, len(rows) * scale), 255)
    for r, row in enumerate(rows):
        for c, dark in enumerate(row):
            if dark:
                image.paste(0, (c * scale, r * scale, (c + 1) * scale, (r + 1) * scale))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return decode_image(buffer.getvalue())


def test_show_once_draws_a_live_code_that_verifies(enrolled):
    directory, secret = enrolled
    code, output, stderr = run_on_pty(wallet_cmd("show", "--once", "--no-renew", "--wallet", str(directory),
                                                 "--secret-file", str(secret)), size=(100, 50))
    assert code == 0, stderr
    assert stderr == ""
    screen = output.decode("utf-8")
    assert "\x1b[30;107m" in screen and "Traceback" not in stderr
    assert "动态健康码 Live health code" in screen and "北京时间 (CST)" in screen
    texts = qr_from_terminal(screen)
    assert len(texts) == 1 and texts[0].startswith("EHCD:")
    verified = hp.verify_presentation(texts[0], RING, now=dt.datetime.now(UTC))
    assert verified.credential.serial == 41


def test_show_warns_when_the_terminal_is_too_small_for_the_code(enrolled):
    directory, secret = enrolled
    code, _, stderr = run_on_pty(wallet_cmd("show", "--once", "--no-renew", "--wallet", str(directory),
                                            "--secret-file", str(secret)), size=(80, 24))
    assert code == 0
    assert stderr.startswith("Warning: the terminal is 80x24; the live code needs at least 73x41")


def test_png_writes_an_owner_only_image_of_the_live_code(enrolled, tmp_path):
    directory, secret = enrolled
    out = tmp_path / "code.png"
    result = run("png", "--out", str(out), "--wallet", str(directory), "--secret-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    (text,) = decode_image(out.read_bytes())
    assert hp.verify_presentation(text, RING, now=dt.datetime.now(UTC)).credential.serial == 41


def test_status_shows_validity_and_next_renewal_in_beijing_time(enrolled):
    directory, _ = enrolled
    result = run("status", "--wallet", str(directory))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    expires = (NOW + 6 * DAY).astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M")
    assert f"有效至 Valid until: {expires} 北京时间 (CST)" in out
    assert "下次更新 Next renewal:" in out and "serial 41" in out


@pytest.mark.parametrize(("name", "args", "setup", "message"), [
    ("no wallet yet", ("show", "--once"), None, "run `healthcode-wallet init` first"),
    ("secret others can read", ("show", "--once"), "loose", "chmod 600"),
    ("wrong passphrase", ("png", "--out", "x.png"), "wrong", "wrong passphrase"),
    ("renew before enrolling with an issuer", ("renew",), None, "enrol"),
])
def test_failures_are_one_error_line(tmp_path, enrolled, name, args, setup, message):
    directory, secret = enrolled
    if name == "no wallet yet":
        directory = tmp_path / "none"
    if setup == "loose":
        os.chmod(secret, 0o644)
    if setup == "wrong":
        secret = secret_file(tmp_path / "wrong", "not the passphrase\n")
    result = run(*args, "--wallet", str(directory), "--secret-file", str(secret))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "not the passphrase" not in result.stderr
