"""The wallet's device key in a PKCS#11 token: SoftHSM2 standing in for a phone's secure element.

A fresh token is made for this module (as ``test_keystore_softhsm.py`` does).
The device key is generated inside it, sensitive and never extractable; the
presentations and the enrolment proof it signs (``CKM_ECDSA`` over the SHA-256
digest) verify with the core. The command line uses the same token from
another process, and a wrong PIN is one ``Error:`` line.

Skipped, with the reason, only if SoftHSM2 or python-pkcs11 is absent.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

pkcs11 = pytest.importorskip("pkcs11", reason="the PKCS#11 device key needs python-pkcs11 (the 'hsm' extra)")

from tests.integration.softhsm import softhsm_token  # noqa: E402

import healthcode as hc  # noqa: E402
from healthcode import presentation as hp  # noqa: E402
from healthcode.algorithms import generate_signing_key, load_p256_point  # noqa: E402
from verifier.images import decode_image  # noqa: E402
from wallet import Wallet  # noqa: E402


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
LABEL = "phone-se"
PIN = "246810"
ISSUER = hc.SoftwareSigner(generate_signing_key())


def ring(now: dt.datetime) -> hc.Keyring:
    return hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                     use_from=now - 30 * DAY, use_until=now + 30 * DAY,
                                     verify_until=now + 60 * DAY)])


def credential_for(point: bytes, issued_at: dt.datetime) -> str:
    return hc.sign_code(hc.CodeClaims(
        province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=99, issued_at=issued_at,
        expires_at=issued_at + 7 * DAY, holder_key=hp.holder_cnf(point)), ISSUER)


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A fresh SoftHSM2 token in a temporary directory; the library is unloaded afterwards."""
    with softhsm_token(tmp_path_factory.mktemp("softhsm-wallet"), label=LABEL, so_pin="13579135", pin=PIN) as module:
        yield module


def test_the_device_key_lives_in_the_token_and_its_presentations_verify(token, tmp_path):
    with Wallet.create(tmp_path / "w", "pkcs11", PIN, module=token, token=LABEL) as wallet:
        point = wallet.device.public_point()
        wallet.files.write(wallet.state().with_(credential=credential_for(point, T0)))
        for seconds in (0, 30, 3600):
            now = T0 + dt.timedelta(seconds=seconds)
            verified = hp.verify_presentation(wallet.present(now), ring(T0), now=now)
            assert verified.credential.serial == 99 and verified.step == hp.step_at(now)
        challenge = os.urandom(hp.CHALLENGE_BYTES)
        proof = wallet.device.sign(hp.proof_of_possession_input(challenge, load_p256_point(point)))
        assert hp.verify_proof_of_possession(point, challenge, proof).spki_der()[-65:] == point
        state = wallet.state()
        assert state.device.kind == "pkcs11" and state.device.token == LABEL
        assert PIN not in wallet.files.path.read_text()

        A = pkcs11.Attribute
        session = pkcs11.lib(token).get_token(token_label=LABEL).open()  # same application: logged in already
        try:
            (private,) = session.get_objects({A.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                                              A.ID: bytes.fromhex(state.device.handle.id)})
            assert private[A.SENSITIVE] and not private[A.EXTRACTABLE] and private[A.NEVER_EXTRACTABLE]
            with pytest.raises(pkcs11.AttributeSensitive):
                private[A.VALUE]
        finally:
            session.close()


def pin_file(path, pin: str):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return path


def test_the_command_line_with_a_token(token, tmp_path):
    directory, pin = tmp_path / "w", pin_file(tmp_path / "pin", PIN)
    base = ["--wallet", str(directory), "--secret-file", str(pin)]
    init = subprocess.run([sys.executable, "-m", "wallet", "init", *base, "--keystore", "pkcs11",
                           "--pkcs11-module", token, "--pkcs11-token", LABEL],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    now = dt.datetime.now(UTC)
    with Wallet.open(directory, PIN) as wallet:
        wallet.files.write(wallet.state().with_(credential=credential_for(wallet.device.public_point(), now)))
    out = tmp_path / "code.png"
    png = subprocess.run([sys.executable, "-m", "wallet", "png", *base, "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert png.returncode == 0, png.stderr
    (text,) = decode_image(out.read_bytes())
    assert hp.verify_presentation(text, ring(now), now=dt.datetime.now(UTC)).credential.serial == 99

    wrong = pin_file(tmp_path / "wrong", "999999")
    refused = subprocess.run([sys.executable, "-m", "wallet", "png", "--wallet", str(directory), "--secret-file",
                              str(wrong), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and "wrong_pin" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "999999" not in refused.stderr
