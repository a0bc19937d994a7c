"""Dynamic presentations in the core: round trip, the time window, holder keys, replay, refusals."""

from __future__ import annotations

import datetime as dt

import pytest

import healthcode as hc
from healthcode import Reason
from healthcode import presentation as hp
from healthcode.algorithms import generate_signing_key

T0 = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)  # a step boundary
DAY = dt.timedelta(days=1)
ISSUER = hc.SoftwareSigner(generate_signing_key())
DEVICE = generate_signing_key()
OTHER_DEVICE = generate_signing_key()
RING = hc.Keyring([hc.TrustedKey(kid=ISSUER.kid, province="33", public_key=ISSUER.public_key(),
                                 use_from=T0 - DAY, use_until=T0 + DAY, verify_until=T0 + 30 * DAY)])


def point(key) -> bytes:
    return key.public_key().spki_der()[-65:]


def credential(device=DEVICE, serial=7, **changes) -> str:
    fields = dict(province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=serial,
                  issued_at=T0, expires_at=T0 + 7 * DAY, holder_key=hp.holder_cnf(point(device)))
    fields.update(changes)
    return hc.sign_code(hc.CodeClaims(**fields), ISSUER)


CREDENTIAL = credential()


def test_round_trip_at_the_current_step():
    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE)
    assert hp.is_presentation(text) and not hp.is_presentation(CREDENTIAL)
    verified = hp.verify_presentation(text, RING, now=T0)
    assert verified.step == hp.step_at(T0) and verified.credential.serial == 7
    assert verified.replay_key == ("33", ISSUER.kid, 7, hp.step_at(T0))


@pytest.mark.parametrize(("seconds_after", "skew", "reason"), [
    (0, 30, None),
    (59, 30, None),       # previous step, well inside
    (89, 30, None),       # step(now - 30) - 1 is still the presentation's step
    (90, 30, Reason.STALE_PRESENTATION),
    (-30, 30, None),      # the phone 30 s ahead
    (-31, 30, Reason.FUTURE_PRESENTATION),
    (59, 0, None),
    (60, 0, Reason.STALE_PRESENTATION),
    (-1, 0, Reason.FUTURE_PRESENTATION),
    (3600, 30, Reason.STALE_PRESENTATION),
])
def test_the_accepted_window(seconds_after, skew, reason):
    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE)
    now = T0 + dt.timedelta(seconds=seconds_after)
    result = hp.check_presentation(text, RING, now=now, clock_skew=dt.timedelta(seconds=skew))
    assert result.reason is reason, result.detail


def test_a_copy_of_the_credential_alone_is_refused_and_an_old_verifier_says_update():
    assert hc.check(CREDENTIAL, RING, now=T0).reason is Reason.PRESENTATION_REQUIRED
    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE)
    assert hc.check(text, RING, now=T0).reason is Reason.UNSUPPORTED_VERSION  # EHCD: is not EHC1:


def test_another_phone_cannot_present_the_credential():
    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), OTHER_DEVICE)
    assert hp.check_presentation(text, RING, now=T0).reason is Reason.BAD_DEVICE_SIGNATURE


def test_a_revoked_credential_is_refused_in_a_presentation():
    class Revoked:
        def is_revoked(self, province, kid, serial):
            return serial == 7

    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE)
    assert hp.check_presentation(text, RING, now=T0, revocation=Revoked()).reason is Reason.REVOKED


@pytest.mark.parametrize("device", [DEVICE, OTHER_DEVICE, generate_signing_key()])
def test_holder_cnf_is_compressed_and_names_the_same_key(device):
    cnf = hp.holder_cnf(point(device))
    assert type(cnf[1][-3]) is bool and len(cnf[1][-2]) == 32
    assert hp.holder_key_from_cnf(cnf) == device.public_key()
    uncompressed = {1: {1: 2, -1: 1, -2: point(device)[1:33], -3: point(device)[33:]}}
    assert hp.holder_key_from_cnf(uncompressed) == device.public_key()


@pytest.mark.parametrize(("cnf", "detail"), [
    (None, "no cnf"),
    ({3: b"kid"}, "no COSE_Key"),
    ({1: {1: 1, -1: 6, -2: bytes(32)}}, "EC2 P-256"),
    ({1: {1: 2, -1: 1, -2: bytes(31), -3: True}}, "32 bytes"),
    ({1: {1: 2, -1: 1, -2: bytes(32), -3: 5}}, "sign bit"),
    ({1: {1: 2, -1: 1, -2: bytes(31) + b"\x05", -3: bytes(31) + b"\x01"}}, "not a point"),
])
def test_unusable_holder_keys(cnf, detail):
    with pytest.raises(hc.VerificationError, match=detail) as caught:
        hp.holder_key_from_cnf(cnf)
    assert caught.value.reason is Reason.NO_HOLDER_KEY


@pytest.mark.parametrize(("credential_text", "step", "message"), [
    ("HC1:XYZ", 1, "EHC1"),
    (CREDENTIAL, -1, "step"),
    (CREDENTIAL, 2**40, "step"),
    (CREDENTIAL[:-3], 1, "well-formed"),
])
def test_encoding_refuses_what_no_terminal_accepts(credential_text, step, message):
    with pytest.raises(hc.InvalidClaims, match=message):
        hp.encode_presentation(credential_text, step, DEVICE)


@pytest.mark.parametrize("text", [
    "", "EHCD:", "EHCD:" + "A" * 2000, "ehcd:AAA", "EHCD:%%%", 12345, None,
])
def test_garbage_is_malformed_never_a_crash(text):
    assert hp.check_presentation(text, RING, now=T0).reason is Reason.MALFORMED


def test_every_truncation_is_refused_cleanly():
    text = hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE)
    for end in range(len(text)):
        result = hp.check_presentation(text[:end], RING, now=T0)
        assert result.reason is not None


def test_replay_cache_recognises_the_same_presentation_whatever_its_signature_bytes():
    cache = hp.ReplayCache()
    first = hp.verify_presentation(hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE), RING, now=T0)
    again = hp.verify_presentation(hp.encode_presentation(CREDENTIAL, hp.step_at(T0), DEVICE), RING, now=T0)
    cache.admit(first, T0)
    with pytest.raises(hc.VerificationError) as caught:
        cache.admit(again, T0 + dt.timedelta(seconds=5))  # a new ECDSA signature, the same presentation
    assert caught.value.reason is Reason.REPLAYED
    next_step = hp.verify_presentation(hp.encode_presentation(CREDENTIAL, hp.step_at(T0) + 1, DEVICE), RING,
                                       now=T0 + dt.timedelta(seconds=30))
    cache.admit(next_step, T0 + dt.timedelta(seconds=30))  # the phone's next QR is a new presentation


def test_replay_cache_forgets_what_can_no_longer_verify_and_stays_bounded():
    cache = hp.ReplayCache(capacity=3)
    presentations = [hp.verify_presentation(hp.encode_presentation(credential(serial=s), hp.step_at(T0), DEVICE),
                                            RING, now=T0) for s in range(5)]
    for p in presentations:
        cache.admit(p, T0)
    assert len(cache) == 3
    cache.admit(presentations[0], T0)  # the oldest was dropped for capacity; admitting it again is allowed
    later = T0 + dt.timedelta(minutes=10)
    cache.admit(hp.verify_presentation(hp.encode_presentation(CREDENTIAL, hp.step_at(later), DEVICE), RING,
                                       now=later), later)
    assert len(cache) == 1  # everything from ten minutes ago expired


def test_a_presentation_fits_a_version_12_qr_at_m():
    qrcode = pytest.importorskip("qrcode")
    for serial in (0, 1000, 2**32 - 1):
        text = hp.encode_presentation(credential(serial=serial), hp.step_at(T0), DEVICE)
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        qr.add_data(text)
        qr.make(fit=True)
        assert qr.version <= 12, (serial, len(text))


def test_proof_of_possession_binds_challenge_and_key():
    challenge = bytes(range(32))
    proof = DEVICE.sign(hp.proof_of_possession_input(challenge, DEVICE.public_key()))
    assert hp.verify_proof_of_possession(point(DEVICE), challenge, proof) == DEVICE.public_key()
    compressed = hp.holder_cnf(point(DEVICE))[1]
    prefix = b"\x03" if compressed[-3] else b"\x02"
    assert hp.verify_proof_of_possession(prefix + compressed[-2], challenge, proof) == DEVICE.public_key()
    for device_point, chal, sig in (
        (point(OTHER_DEVICE), challenge, proof),            # another key
        (point(DEVICE), bytes(32), proof),                  # another challenge
        (point(DEVICE), challenge, bytes(64)),              # a zero proof
    ):
        with pytest.raises(hc.VerificationError) as caught:
            hp.verify_proof_of_possession(device_point, chal, sig)
        assert caught.value.reason is Reason.BAD_DEVICE_SIGNATURE
    # a presentation's device signature is never a proof, nor the reverse
    assert hp.proof_of_possession_input(challenge, DEVICE.public_key())[:13] != hp.DEVICE_SIGNATURE_CONTEXT[:13]
    with pytest.raises(hc.InvalidKey):
        hp.verify_proof_of_possession(b"\x04" + bytes(64), challenge, proof)
    with pytest.raises(hc.InvalidClaims):
        hp.proof_of_possession_input(b"short", DEVICE.public_key())


def test_the_issuer_clock_skew_is_separate_from_the_phone_clock_skew():
    early = credential(issued_at=T0 + dt.timedelta(minutes=4), expires_at=T0 + 7 * DAY)
    text = hp.encode_presentation(early, hp.step_at(T0), DEVICE)
    assert hp.check_presentation(text, RING, now=T0).reason is Reason.NOT_YET_VALID
    assert hp.check_presentation(text, RING, now=T0, issuer_clock_skew=dt.timedelta(minutes=5)).valid
