"""The reference wallet with an SM2 device key: created in the file keystore, reopened, presenting.

SM2 device keys live in the file keystore only (SoftHSM2 2.6, the PKCS#11
stand-in for a phone's secure element, offers no SM2 mechanism: its 70
mechanisms have EC P-curve ECDSA/ECDH and no vendor-defined ones), so the
PKCS#11 combination is refused before any token is opened, by the library and
by the CLI. The credential here is signed in-process; the real issuer is in
``tests/integration/test_wallet_sm2.py``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

pytest.importorskip("gmalglib", reason="SM2 needs the 'sm2' extra (gmalglib)")

import healthcode as hc  # noqa: E402
from healthcode import Algorithm  # noqa: E402
from healthcode import presentation as hp  # noqa: E402
from healthcode.algorithms import generate_signing_key  # noqa: E402
from keys.keystore import ScryptParams  # noqa: E402
from wallet import Wallet  # noqa: E402
from wallet.errors import DeviceKeyError  # noqa: E402
from wallet.state import WalletState  # noqa: E402

T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
FAST = ScryptParams(n=2**10, r=8, p=1)
ISSUER = hc.SoftwareSigner(generate_signing_key())
RING = hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                 use_from=T0 - DAY, use_until=T0 + DAY, verify_until=T0 + 30 * DAY)])


def test_an_sm2_wallet_is_created_reopened_and_presents(tmp_path):
    with Wallet.create(tmp_path / "phone", "file", "passphrase", scrypt=FAST, algorithm=Algorithm.SM2_SM3) as w:
        assert w.device.algorithm is Algorithm.SM2_SM3
        point = w.device.public_point()
        assert len(point) == 65 and point[0] == 4
        assert w.device_config.handle.algorithm is Algorithm.SM2_SM3
    # what the issuer does: check the proof, bind the key
    with Wallet.open(tmp_path / "phone", "passphrase") as w:
        assert w.device.algorithm is Algorithm.SM2_SM3 and w.device.public_point() == point
        challenge = bytes(range(32))
        proof = w.device.sign(hp.proof_of_possession_input(challenge, w.device.public_key()))
        hp.verify_proof_of_possession(point, challenge, proof, Algorithm.SM2_SM3)
        credential = hc.sign_code(hc.CodeClaims(
            province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=9, issued_at=T0,
            expires_at=T0 + 7 * DAY, holder_key=hp.holder_cnf(point, Algorithm.SM2_SM3)), ISSUER)
        w.files.write(WalletState(device=w.device_config, credential=credential))
        text = w.present(T0)
        assert hp.verify_presentation(text, RING, now=T0).credential.serial == 9
        assert w.credential().serial == 9  # the held credential binds this device's SM2 key


def test_sm2_in_a_pkcs11_token_is_refused_before_any_token_is_opened(tmp_path):
    with pytest.raises(DeviceKeyError, match="SoftHSM2 has none"):
        Wallet.create(tmp_path / "phone", "pkcs11", "1234", module="/nonexistent.so", token="phone",
                      algorithm=Algorithm.SM2_SM3)
    with pytest.raises(DeviceKeyError, match="ES256"):
        Wallet.create(tmp_path / "other", "file", "passphrase", scrypt=FAST, algorithm=Algorithm.EDDSA)


def test_the_cli_refuses_sm2_in_pkcs11_and_names_the_curve(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("passphrase\n")
    secret.chmod(0o600)
    module = tmp_path / "module.so"
    module.write_bytes(b"")
    run = subprocess.run([sys.executable, "-m", "wallet", "init", "--wallet", str(tmp_path / "w"), "--secret-file",
                          str(secret), "--keystore", "pkcs11", "--pkcs11-module", str(module), "--pkcs11-token", "t",
                          "--algorithm", "SM2"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "use --keystore file" in run.stderr, run.stderr
    assert not (tmp_path / "w").exists()
