"""The reference wallet's library with injected time: device key, state file, presentations, QR, renewal.

Real components throughout: the file keystore (scrypt-encrypted PKCS#8),
presentations checked by the core's ``verify_presentation`` against a keyring
of the issuer's key, QR symbols decoded back by pyzbar (``verifier.images``).
The renewal tests drive :meth:`Wallet.renew` with a scripted stand-in for
``WalletClient`` to pin the wallet's own bookkeeping (which idempotency key
is sent after a crash or a lost answer); the real issuer is exercised in
``tests/integration/test_wallet_issuer.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import stat

import pytest
from PIL import Image

import healthcode as hc
from healthcode import Reason
from healthcode import presentation as hp
from healthcode.algorithms import generate_signing_key
from keys.keystore import ScryptParams
from shellkit.files import InsecureFileMode
from verifier.images import decode_image
from wallet import RenewalPolicy, Wallet, WalletReason
from wallet.display import presentation_png, show_live, status_lines, terminal_qr
from wallet.errors import (
    AlreadyInitialised,
    BadCredential,
    CredentialExpired,
    CredentialRevoked,
    DeviceKeyError,
    NotEnrolled,
    Offline,
    StateCorrupt,
)
from wallet.state import STATE_NAME, Credential, Failure

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=UTC)  # a step boundary
DAY = dt.timedelta(days=1)
PASSPHRASE = b"correct horse battery"
ISSUER = hc.SoftwareSigner(generate_signing_key())
RING = hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                 use_from=T0 - 30 * DAY, use_until=T0 + 30 * DAY, verify_until=T0 + 60 * DAY)])


def issue(point: bytes | None, *, serial: int = 7, issued_at: dt.datetime = T0, days: int = 7) -> str:
    """A credential as the issuer signs it: a v1 code whose cnf names ``point`` (or none)."""
    return hc.sign_code(hc.CodeClaims(
        province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=serial, issued_at=issued_at,
        expires_at=issued_at + days * DAY, holder_key=hp.holder_cnf(point) if point else None), ISSUER)


FAST = ScryptParams(n=2**10, r=8, p=1)  # the key file's format is the same; only the cost is lower


@pytest.fixture
def wallet(tmp_path):
    with Wallet.create(tmp_path / "w", "file", PASSPHRASE, scrypt=FAST) as w:
        yield w


@pytest.fixture
def enrolled(wallet):
    state = wallet.state()
    wallet.files.write(state.with_(credential=issue(wallet.device.public_point())))
    return wallet


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- the wallet on disk


def test_init_makes_an_owner_only_wallet_with_an_encrypted_device_key(tmp_path):
    old = os.umask(0o022)
    try:
        Wallet.create(tmp_path / "w", "file", PASSPHRASE).close()
    finally:
        os.umask(old)
    directory = tmp_path / "w"
    assert mode(directory) == 0o700 and mode(directory / STATE_NAME) == 0o600
    key_files = list((directory / "device-key").iterdir())
    assert {p.suffix for p in key_files} == {".pem", ".json"} and all(mode(p) == 0o600 for p in key_files)
    pem = next(p for p in key_files if p.suffix == ".pem").read_text()
    assert "BEGIN ENCRYPTED PRIVATE KEY" in pem
    raw = (directory / STATE_NAME).read_text()
    assert "passphrase" not in raw and PASSPHRASE.decode() not in raw


def test_a_second_init_is_refused(wallet):
    with pytest.raises(AlreadyInitialised):
        Wallet.create(wallet.directory, "file", PASSPHRASE)


def test_the_device_key_reopens_with_its_passphrase_only(wallet):
    point = wallet.device.public_point()
    with Wallet.open(wallet.directory, PASSPHRASE) as again:
        assert again.device.public_point() == point and len(point) == 65 and point[0] == 4
    with pytest.raises(DeviceKeyError, match="wrong passphrase") as info:
        Wallet.open(wallet.directory, b"not the passphrase")
    assert info.value.reason is WalletReason.DEVICE_KEY and "not the passphrase" not in str(info.value)


@pytest.mark.parametrize(("name", "content", "error"), [
    ("not json", b"{", StateCorrupt),
    ("another format", b'{"format": "x", "version": 1}', StateCorrupt),
    ("unknown field", None, StateCorrupt),
])
def test_a_damaged_state_file_is_refused_with_a_reason(wallet, name, content, error):
    path = wallet.files.path
    if content is None:
        content = path.read_bytes().replace(b'"pending"', b'"extra": 1, "pending"')
    path.write_bytes(content)
    with pytest.raises(error):
        wallet.state()


def test_a_state_file_others_can_read_is_refused_with_the_fix(wallet):
    os.chmod(wallet.files.path, 0o644)
    with pytest.raises(InsecureFileMode, match="chmod 600"):
        wallet.state()


# --------------------------------------------------------------------------- presentations, offline


def test_no_presentation_before_enrolment(wallet):
    with pytest.raises(NotEnrolled):
        wallet.present(T0)


@pytest.mark.parametrize("seconds", [0, 29, 30, 3600, 6 * 86400])
def test_a_presentation_verifies_at_the_terminal(enrolled, seconds):
    now = T0 + dt.timedelta(seconds=seconds)
    text = enrolled.present(now)
    verified = hp.verify_presentation(text, RING, now=now)
    assert verified.step == hp.step_at(now) and verified.credential.serial == 7


def test_the_code_changes_every_step_and_an_old_one_goes_stale(enrolled):
    first, same, next_step = enrolled.present(T0), enrolled.present(T0 + dt.timedelta(seconds=29)), \
        enrolled.present(T0 + dt.timedelta(seconds=30))
    assert hp.decode_presentation_unverified(first).step == hp.decode_presentation_unverified(same).step
    assert hp.decode_presentation_unverified(next_step).step == hp.step_at(T0) + 1
    late = hp.check_presentation(first, RING, now=T0 + dt.timedelta(seconds=90))
    assert late.reason is Reason.STALE_PRESENTATION


def test_an_expired_credential_is_not_shown(enrolled):
    with pytest.raises(CredentialExpired) as info:
        enrolled.present(T0 + 7 * DAY)
    assert info.value.reason is WalletReason.EXPIRED


@pytest.mark.parametrize(("name", "make"), [
    ("bound to another device", lambda: issue(generate_signing_key().public_key().spki_der()[-65:])),
    ("bound to no device", lambda: issue(None)),
    ("not a code", lambda: "EHC1:NOT-A-CODE"),
])
def test_a_credential_this_device_cannot_present_is_never_kept(wallet, name, make):
    with pytest.raises(BadCredential):
        Credential.parse(make(), wallet.device.public_point())


# --------------------------------------------------------------------------- QR: PNG and terminal


def test_the_png_decodes_back_to_the_presentation(enrolled):
    text = enrolled.present(T0)
    assert decode_image(presentation_png(text)) == [text]


def half_blocks_to_png(lines: list[str], scale: int = 4) -> bytes:
    """What a camera sees of the terminal: every character is one module wide and two tall."""
    rows = []
    for line in lines:
        top = [ch in "▀█" for ch in line]
        bottom = [ch in "▄█" for ch in line]
        rows += [top, bottom]
    image = Image.new("L", (len(rows[0]) * scale, len(rows) * scale), 255)
    for r, row in enumerate(rows):
        for c, dark in enumerate(row):
            if dark:
                image.paste(0, (c * scale, r * scale, (c + 1) * scale, (r + 1) * scale))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_terminal_qr_scans_back_to_the_presentation(enrolled):
    text = enrolled.present(T0)
    plain = terminal_qr(text, colour=False)
    assert decode_image(half_blocks_to_png(plain)) == [text]
    coloured = terminal_qr(text)
    assert all(line.startswith("\x1b[30;107m") and line.endswith("\x1b[0m") for line in coloured)


def test_the_terminal_redraws_in_place_every_step(enrolled):
    moments = iter([T0, T0 + dt.timedelta(seconds=12), T0 + dt.timedelta(seconds=30),
                    T0 + dt.timedelta(seconds=31), T0 + dt.timedelta(seconds=60)])
    slept: list[float] = []
    shown: list[str] = []

    def frame(now):
        text = enrolled.present(now)
        shown.append(text)
        return text, status_lines(now, T0 + 7 * DAY)

    out = io.StringIO()
    drawn = show_live(frame, out, clock=lambda: next(moments), sleep=slept.append, frames=3)
    assert drawn == 3 and len(set(shown)) == 3
    assert slept == [18.0, 29.0]  # until the next step boundary each time
    lines = len(terminal_qr(shown[0])) + 3
    assert out.getvalue().count(f"\x1b[{lines}A\r") == 2  # cursor back over the previous frame, twice
    assert "2026-12-14 12:00 北京时间 (CST)" in out.getvalue()


# --------------------------------------------------------------------------- renewal


@pytest.mark.parametrize(("name", "hours_after_issue", "renew_below", "failure_minutes_ago", "due"), [
    ("fresh", 1, 0.5, None, False),
    ("just before half", 83, 0.5, None, False),
    ("at half", 84, 0.5, None, True),
    ("late", 160, 0.5, None, True),
    ("a quarter left, policy 0.25", 126, 0.25, None, True),
    ("failed a minute ago", 100, 0.5, 1, False),
    ("failed ten minutes ago", 100, 0.5, 10, True),
])
def test_the_renewal_policy(name, hours_after_issue, renew_below, failure_minutes_ago, due):
    credential = Credential(issue(None), "33", 7, ISSUER.kid, T0, T0 + 7 * DAY)
    now = T0 + dt.timedelta(hours=hours_after_issue)
    failure = None if failure_minutes_ago is None else \
        Failure("offline", "x", now - dt.timedelta(minutes=failure_minutes_ago))
    assert RenewalPolicy(renew_below=renew_below).due(credential, now, failure) is due


class ScriptedClient:
    """Stands in for WalletClient.renew_credential: records the keys sent, answers from a script."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.keys: list[str] = []

    def renew_credential(self, code_text, *, idempotency_key):
        self.keys.append(idempotency_key)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return type("Issued", (), {"code_text": answer})()

    def close(self):
        pass


def test_a_lost_renewal_answer_is_retried_with_the_same_idempotency_key(enrolled):
    renewed = issue(enrolled.device.public_point(), serial=8, issued_at=T0 + 4 * DAY)
    client = ScriptedClient(Offline("unreachable"), renewed)
    now = T0 + 4 * DAY
    with pytest.raises(Offline):
        enrolled.renew(client, now=now)
    state = enrolled.state()
    assert state.pending is not None and state.pending.serial == 7 and state.last_failure.reason == "offline"
    assert enrolled.present(now)  # the old credential is still shown meanwhile
    assert enrolled.renew(client, now=now + dt.timedelta(minutes=10)).serial == 8
    assert client.keys[0] == client.keys[1]
    state = enrolled.state()
    assert state.pending is None and state.last_failure is None and state.credential == renewed


def test_a_crash_after_sending_reuses_the_key_from_the_state_file(enrolled):
    renewed = issue(enrolled.device.public_point(), serial=8)

    class Crash(BaseException):
        pass

    client = ScriptedClient(Crash(), renewed)
    with pytest.raises(Crash):
        enrolled.renew(client, now=T0)
    with Wallet.open(enrolled.directory, PASSPHRASE) as restarted:  # a new process reads the file
        assert restarted.renew(client, now=T0).serial == 8
    assert client.keys[0] == client.keys[1]


def test_a_revoked_credential_says_so_and_forgets_the_key(enrolled):
    client = ScriptedClient(CredentialRevoked("the credential was revoked (lost_device)"))
    with pytest.raises(CredentialRevoked):
        enrolled.renew(client, now=T0)
    state = enrolled.state()
    assert state.pending is None and state.last_failure.reason == "revoked"


def test_the_issuer_dropping_the_device_binding_is_refused(enrolled):
    with pytest.raises(BadCredential):
        enrolled.renew(ScriptedClient(issue(None, serial=8)), now=T0)
    assert enrolled.credential().serial == 7


def test_renew_if_due_renews_on_its_own_and_reports_failures(enrolled):
    from wallet.state import IssuerSettings

    enrolled.files.write(enrolled.state().with_(issuer=IssuerSettings("127.0.0.1:1", "/nonexistent/ca.pem")))
    renewed = issue(enrolled.device.public_point(), serial=8, issued_at=T0 + 4 * DAY)
    client = ScriptedClient(Offline("unreachable"), renewed)
    policy = RenewalPolicy()
    assert not enrolled.renew_if_due(lambda s: client, now=T0 + DAY, policy=policy).renewed  # not due
    failed = enrolled.renew_if_due(lambda s: client, now=T0 + 4 * DAY, policy=policy)
    assert not failed.renewed and isinstance(failed.error, Offline)
    waiting = enrolled.renew_if_due(lambda s: client, now=T0 + 4 * DAY + dt.timedelta(minutes=1), policy=policy)
    assert not waiting.renewed and waiting.error is None and len(client.keys) == 1  # backs off
    done = enrolled.renew_if_due(lambda s: client, now=T0 + 4 * DAY + dt.timedelta(minutes=6), policy=policy)
    assert done.renewed and done.credential.serial == 8
