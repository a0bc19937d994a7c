"""docs/wallet.md's worked example is real: every value on the page is recomputed here from the TEST ONLY keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib

import pytest

import healthcode as hc
from healthcode import Reason
from healthcode import presentation as hp
from healthcode.algorithms import load_p256_point
from healthcode.base45 import b45decode
from issuer.render import qr_version

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "wallet.md").read_text()
UTC = dt.timezone.utc
T = dt.datetime(2026, 12, 7, 4, 0, 10, tzinfo=UTC)
DEVICE = hc.signing_key_from_private_bytes(hc.Algorithm.ES256, bytes.fromhex("11" * 32), deterministic=True)
ISSUER = hc.SoftwareSigner(hc.signing_key_from_private_bytes(hc.Algorithm.ES256, bytes.fromhex("22" * 32),
                                                             deterministic=True))
POINT = DEVICE.public_key().spki_der()[-65:]
CHALLENGE = bytes(range(32))
CREDENTIAL = hc.sign_code(hc.CodeClaims(
    province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=1001,
    issued_at=dt.datetime(2026, 12, 7, 4, 0, tzinfo=UTC), expires_at=dt.datetime(2026, 12, 14, 4, 0, tzinfo=UTC),
    holder_key=hp.holder_cnf(POINT)), ISSUER)
COSE = b45decode(CREDENTIAL[5:])
STEP = hp.step_at(T)
PRESENTATION = hp.encode_presentation(CREDENTIAL, STEP, DEVICE)
PROOF_INPUT = hp.proof_of_possession_input(CHALLENGE, load_p256_point(POINT))
SIGNATURE = b45decode(PRESENTATION[5:])[-64:]
RING = hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                 use_from=T - dt.timedelta(days=1), use_until=T + dt.timedelta(days=1),
                                 verify_until=T + dt.timedelta(days=30))])


@pytest.mark.parametrize(("name", "value"), [
    ("device public key", POINT.hex()),
    ("SHA-256 of the device public key", hashlib.sha256(POINT).hexdigest()),
    ("issuer kid", ISSUER.kid.hex()),
    ("challenge", CHALLENGE.hex()),
    ("proof input", PROOF_INPUT.hex()),
    ("proof", DEVICE.sign(PROOF_INPUT).hex()),
    ("credential text", CREDENTIAL),
    ("credential COSE_Sign1", COSE.hex()),
    ("SHA-256 of the credential", hashlib.sha256(COSE).hexdigest()),
    ("step", f"step {STEP} =\n`{STEP.to_bytes(8, 'big').hex()}`"),
    ("device signature input", hp.device_signing_input(COSE, STEP).hex()),
    ("device signature", SIGNATURE.hex()),
    ("presentation text", PRESENTATION),
    ("presentation step item", "1a" + STEP.to_bytes(4, "big").hex()),
    ("presentation size", f"({len(b45decode(PRESENTATION[5:]))} bytes)"),
    ("presentation length", f"({len(PRESENTATION)} characters, a version-{qr_version(PRESENTATION)} QR"),
])
def test_the_page_shows_the_computed_value(name, value):
    assert value in DOC, f"docs/wallet.md does not show the {name}: {value}"


def test_the_example_verifies_for_the_window_the_page_states():
    assert hp.verify_presentation(PRESENTATION, RING, now=T).credential.serial == 1001
    last = dt.datetime(2026, 12, 7, 4, 1, 29, tzinfo=UTC)  # 12:01:29 北京时间
    assert hp.check_presentation(PRESENTATION, RING, now=last).valid
    assert hp.check_presentation(PRESENTATION, RING, now=last + dt.timedelta(seconds=1)).reason \
        is Reason.STALE_PRESENTATION
    assert hp.verify_proof_of_possession(POINT, CHALLENGE, DEVICE.sign(PROOF_INPUT))
