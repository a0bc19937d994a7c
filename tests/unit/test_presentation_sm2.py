"""SM2 device keys in the core: the SM2 ``cnf`` COSE_Key, SM2-SM3 device signatures and proofs of possession.

A province may bind SM2 device keys (``docs/code-format.md`` §16.4): the
COSE_Key is EC2 with ``crv`` -65537 (private use, the SM2 curve), compressed
like a P-256 one, and the device signs the same domain-separated bytes with
SM2-SM3 (signer ID ``1234567812345678``). The reason codes are those of P-256.
"""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("gmalglib", reason="SM2 needs the 'sm2' extra (gmalglib)")

import healthcode as hc  # noqa: E402
from healthcode import Algorithm, Reason  # noqa: E402
from healthcode import presentation as hp  # noqa: E402
from healthcode.algorithms import generate_signing_key, load_sm2_point  # noqa: E402
from healthcode.base45 import b45decode, b45encode  # noqa: E402
from healthcode.cbor import dumps  # noqa: E402

T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
ISSUER = hc.SoftwareSigner(generate_signing_key())
SM2_ISSUER = hc.SoftwareSigner(generate_signing_key(Algorithm.SM2_SM3))
DEVICE = generate_signing_key(Algorithm.SM2_SM3)
OTHER_DEVICE = generate_signing_key(Algorithm.SM2_SM3)
P256_DEVICE = generate_signing_key()


def _trusted(signer: hc.SoftwareSigner) -> hc.TrustedKey:
    return hc.TrustedKey(kid=signer.kid, province="33", public_key=signer.public_key(),
                         use_from=T0 - DAY, use_until=T0 + DAY, verify_until=T0 + 30 * DAY)


RING = hc.Keyring([_trusted(ISSUER), _trusted(SM2_ISSUER)])


def point(key) -> bytes:
    return key.public_key().spki_der()[-65:]


def credential(device=DEVICE, *, issuer=ISSUER, cnf=None, serial=7) -> str:
    cnf = hp.holder_cnf(point(device), Algorithm.SM2_SM3) if cnf is None else cnf
    return hc.sign_code(hc.CodeClaims(
        province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=serial,
        issued_at=T0, expires_at=T0 + 7 * DAY, holder_key=cnf), issuer)


def test_sm2_cnf_is_a_compressed_ec2_key_on_the_private_use_curve():
    cnf = hp.holder_cnf(point(DEVICE), Algorithm.SM2_SM3)
    raw = point(DEVICE)
    assert cnf == {1: {1: 2, -1: -65537, -2: raw[1:33], -3: bool(raw[64] & 1)}}
    assert len(dumps(cnf)) == 48  # 4 more than a P-256 cnf (44): crv -65537 takes 5 bytes, not 1
    assert hp.holder_key_from_cnf(cnf) == DEVICE.public_key()
    assert hp.holder_key_from_cnf(cnf).algorithm is Algorithm.SM2_SM3
    full = {1: {1: 2, -1: -65537, -2: raw[1:33], -3: raw[33:]}}
    assert hp.holder_key_from_cnf(full) == DEVICE.public_key()
    # the same point given compressed
    assert hp.holder_cnf(bytes((2 + (raw[64] & 1),)) + raw[1:33], Algorithm.SM2_SM3) == cnf


def test_an_sm2_point_is_not_a_p256_point_and_the_reverse():
    with pytest.raises(hc.InvalidKey):  # an SM2 point is (almost surely) not on P-256
        hp.holder_cnf(point(DEVICE))
    with pytest.raises(hc.InvalidKey):
        hp.holder_cnf(point(P256_DEVICE), Algorithm.SM2_SM3)
    with pytest.raises(hc.UnsupportedAlgorithm):
        hp.holder_cnf(point(DEVICE), Algorithm.EDDSA)


@pytest.mark.parametrize("issuer", [ISSUER, SM2_ISSUER], ids=["es256-credential", "sm2-credential"])
def test_round_trip(issuer):
    text = hp.encode_presentation(credential(issuer=issuer), hp.step_at(T0), DEVICE)
    verified = hp.verify_presentation(text, RING, now=T0)
    assert verified.step == hp.step_at(T0) and verified.credential.serial == 7
    assert verified.credential.holder_key == hp.holder_cnf(point(DEVICE), Algorithm.SM2_SM3)


def _reason(text: str, now: dt.datetime = T0) -> Reason | None:
    return hp.check_presentation(text, RING, now=now).reason


def test_refusals_have_the_p256_reason_codes():
    cred = credential()
    step = hp.step_at(T0)
    good = hp.encode_presentation(cred, step, DEVICE)
    assert _reason(good) is None
    assert _reason(hp.encode_presentation(cred, step, OTHER_DEVICE)) is Reason.BAD_DEVICE_SIGNATURE
    # a P-256 signature where the credential binds an SM2 key
    assert _reason(hp.encode_presentation(cred, step, P256_DEVICE)) is Reason.BAD_DEVICE_SIGNATURE
    # an SM2 signature where the credential binds a P-256 key
    p256_cred = hc.sign_code(hc.CodeClaims(
        province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=8, issued_at=T0,
        expires_at=T0 + 7 * DAY, holder_key=hp.holder_cnf(point(P256_DEVICE))), ISSUER)
    assert _reason(hp.encode_presentation(p256_cred, step, DEVICE)) is Reason.BAD_DEVICE_SIGNATURE
    assert _reason(good, T0 + dt.timedelta(seconds=90)) is Reason.STALE_PRESENTATION
    assert _reason(good, T0 - dt.timedelta(seconds=31)) is Reason.FUTURE_PRESENTATION
    assert hc.check(cred, RING, now=T0).reason is Reason.PRESENTATION_REQUIRED
    data = b45decode(good.removeprefix(hp.PRESENTATION_PREFIX))
    flipped = hp.PRESENTATION_PREFIX + b45encode(data[:-1] + bytes((data[-1] ^ 1,)))
    assert _reason(flipped) is Reason.BAD_DEVICE_SIGNATURE


@pytest.mark.parametrize(("cnf", "detail"), [
    ({1: {1: 2, -1: -65537, -2: (5).to_bytes(32, "big"), -3: True}}, "not a point on the SM2 curve"),
    ({1: {1: 2, -1: -65537, -2: bytes(31), -3: True}}, "x must be 32 bytes"),
    ({1: {1: 2, -1: -65536, -2: bytes(32), -3: True}}, "not an EC2 P-256 or SM2 key"),
    ({1: {1: 2, -1: "SM2", -2: bytes(32), -3: True}}, "not an EC2 P-256 or SM2 key"),
    ({1: {1: 1, -1: -65537, -2: bytes(32)}}, "not an EC2 P-256 or SM2 key"),
])
def test_unusable_sm2_holder_keys(cnf, detail):
    text = hp.encode_presentation(credential(cnf=cnf), hp.step_at(T0), DEVICE)
    result = hp.check_presentation(text, RING, now=T0)
    assert result.reason is Reason.NO_HOLDER_KEY and detail in result.detail


def test_load_sm2_point_refuses_what_is_not_on_the_curve():
    raw = point(DEVICE)
    assert load_sm2_point(raw) == load_sm2_point(bytes((2 + (raw[64] & 1),)) + raw[1:33]) == DEVICE.public_key()
    for bad in (b"\x04" + bytes(64), b"\x02" + (5).to_bytes(32, "big"), raw[:-1], b"\x05" + raw[1:33],
                b"\x04" + raw[1:33], raw[:33]):
        with pytest.raises(hc.InvalidKey):
            load_sm2_point(bad)
    # y negated (p - y) is the other point with this x: a valid key, but not this one
    p = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
    other = raw[:33] + (p - int.from_bytes(raw[33:], "big")).to_bytes(32, "big")
    assert load_sm2_point(other) != DEVICE.public_key()
    off_curve = raw[:64] + bytes((raw[64] ^ 1,))
    with pytest.raises(hc.InvalidKey):
        load_sm2_point(off_curve)


def test_sm2_proof_of_possession():
    challenge = bytes(range(32))
    proof = DEVICE.sign(hp.proof_of_possession_input(challenge, DEVICE.public_key()))
    key = hp.verify_proof_of_possession(point(DEVICE), challenge, proof, Algorithm.SM2_SM3)
    assert key == DEVICE.public_key() and key.algorithm is Algorithm.SM2_SM3
    compressed = bytes((2 + (point(DEVICE)[64] & 1),)) + point(DEVICE)[1:33]
    assert hp.verify_proof_of_possession(compressed, challenge, proof, Algorithm.SM2_SM3) == key
    for device_point, chal, sig in (
        (point(OTHER_DEVICE), challenge, proof),
        (point(DEVICE), bytes(32), proof),
        (point(DEVICE), challenge, bytes(64)),
        (point(DEVICE), challenge, b"\xff" * 64),  # r, s out of range
    ):
        with pytest.raises(hc.VerificationError) as caught:
            hp.verify_proof_of_possession(device_point, chal, sig, Algorithm.SM2_SM3)
        assert caught.value.reason is Reason.BAD_DEVICE_SIGNATURE
    # the algorithm is the caller's statement: an SM2 point named ES256 is refused as a P-256 point
    with pytest.raises(hc.InvalidKey):
        hp.verify_proof_of_possession(point(DEVICE), challenge, proof)
    # a P-256 proof for a P-256 key never passes as SM2
    p256_proof = P256_DEVICE.sign(hp.proof_of_possession_input(challenge, P256_DEVICE.public_key()))
    with pytest.raises(hc.InvalidKey):
        hp.verify_proof_of_possession(point(P256_DEVICE), challenge, p256_proof, Algorithm.SM2_SM3)
    with pytest.raises(hc.UnsupportedAlgorithm):
        hp.verify_proof_of_possession(point(DEVICE), challenge, proof, Algorithm.EDDSA)


def test_an_sm2_presentation_fits_a_version_12_qr_at_m():
    qrcode = pytest.importorskip("qrcode")
    for issuer in (ISSUER, SM2_ISSUER):
        for serial in (0, 2**32 - 1):
            text = hp.encode_presentation(credential(issuer=issuer, serial=serial), hp.step_at(T0), DEVICE)
            qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
            qr.add_data(text)
            qr.make(fit=True)
            assert qr.version <= 12, (serial, len(text))
