"""Deterministic test vectors for dynamic presentations (``docs/code-format.md`` section 16).

Usage::

    python -m tools.gen_presentation_vectors            # (re)write tests/vectors/presentation
    python -m tools.gen_presentation_vectors --check    # compare with the committed files

Same contract, keys and JSON form of CBOR as :mod:`tools.gen_vectors` (every
key is derived from a public seed label: TEST ONLY). The presentation bytes are
assembled here by hand (``83 || credential COSE_Sign1 || step || 58 40 sig``),
independently of :mod:`healthcode.presentation`, and the device signature is
made over the domain-separated bytes written out here too.

Vector file format: the fields of :mod:`tools.gen_vectors` (the trusted
*issuer* key and its windows, ``verify_at``, ``clock_skew_seconds``,
``revoked_serials``, ``expected``, ``claims`` of the credential for valid
vectors) with ``presentation`` (the scanned text) instead of ``code``, plus:

    step                 the step the presentation carries (or null when unreadable)
    holder_public_key    the device key the credential binds, SEC 1 uncompressed hex (or null)
    holder_alg           its algorithm: "ES256" (P-256, crv 1) or "SM2-SM3" (SM2 curve, crv -65537) (or null)
    holder_seed_label    its seed label (or null)

SM2 device keys (``holder_alg`` "SM2-SM3") sign the same domain-separated
bytes with SM2 and SM3 (signer ID ``1234567812345678``), with the
deterministic nonce stream of :mod:`tools.gen_vectors`; the tests check them
with OpenSSL (``pkeyutl -rawin -digest sm3``), independently of gmalglib.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import hmac
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from healthcode import Algorithm, CodeClaims, CompromisePolicy, KeyStatus, cbor
from healthcode.base45 import b45encode
from healthcode.model import to_epoch
from tools.gen_vectors import (
    DEFAULT_OUT,
    EDDSA_KEY,
    ES256_KEY,
    ISSUED,
    SECOND,
    SM2_KEY,
    TEST_ONLY_NOTICE,
    UNTRUSTED_KEY,
    VERIFY_AT,
    KeyWindow,
    TestKey,
    _iso,
    base_claims,
    bstr,
    claims_to_json,
    cose_sign1,
    diff,
    protected_item,
    render,
    standard_cose,
)

__all__ = ["PRESENTATION_OUT", "PresentationVector", "build_vectors", "generate", "main"]

PRESENTATION_OUT = DEFAULT_OUT / "presentation"
PREFIX = "EHCD:"
CONTEXT = b"EHC-DYN-v1\x00"
STEP = 30
NOW_STEP = to_epoch(VERIFY_AT) // STEP
SKEW = 30  # the default clock skew, seconds

DEVICE_KEY = TestKey("device/p256/phone-1", Algorithm.ES256)
OTHER_DEVICE_KEY = TestKey("device/p256/phone-2", Algorithm.ES256)
SM2_DEVICE_KEY = TestKey("device/sm2/phone-1", Algorithm.SM2_SM3)
OTHER_SM2_DEVICE_KEY = TestKey("device/sm2/phone-2", Algorithm.SM2_SM3)
#: COSE_Key curves of device keys: P-256 (RFC 9053) and the SM2 curve (private use, docs/code-format.md §16.4).
CRV = {Algorithm.ES256: 1, Algorithm.SM2_SM3: -65537}


def _point(key: TestKey) -> bytes:
    """The SEC 1 uncompressed point of a P-256 or SM2 test key (the end of its SubjectPublicKeyInfo)."""
    return key.public_key().spki_der()[-65:]


def cnf_compressed(key: TestKey) -> dict[int, Any]:
    point = _point(key)
    return {1: {1: 2, -1: CRV[key.algorithm], -2: point[1:33], -3: bool(point[64] & 1)}}


def cnf_uncompressed(key: TestKey) -> dict[int, Any]:
    point = _point(key)
    return {1: {1: 2, -1: CRV[key.algorithm], -2: point[1:33], -3: point[33:]}}


def sm2_sign_with_signer_id(key: TestKey, data: bytes, signer_id: bytes) -> bytes:
    """An SM2-SM3 signature of ``data`` by ``key`` with another signer ID than the format's (Z_A differs)."""
    import gmalglib.core as core  # the `sm2` extra

    secret = key.secret
    counter = iter(range(1, 65))  # gmalglib asks again for an out-of-range nonce; 64 refusals cannot happen

    def nonces(size: int) -> bytes:  # deterministic: HMAC-SHA256(secret, label || SHA-256(data) || counter)
        block = hmac.new(secret, b"SM2 other-ID nonce" + hashlib.sha256(data).digest() + bytes((next(counter),)),
                         hashlib.sha256).digest()
        return block[:size]

    return bytes(core.SM2(sk=secret, uid=signer_id, rnd_fn=nonces).sign(data))


def _device_key_of_parity(odd: bool, algorithm: Algorithm = Algorithm.ES256) -> TestKey:
    """The first device test key whose y is odd (or even), for the sign-bit vectors."""
    prefix = "device/p256/parity" if algorithm is Algorithm.ES256 else "device/sm2/parity"
    for i in range(64):
        key = TestKey(f"{prefix}-{i}", algorithm)
        if bool(_point(key)[64] & 1) is odd:
            return key
    raise AssertionError("no key of that parity")  # pragma: no cover


def device_input(cose: bytes, step: int) -> bytes:
    return CONTEXT + step.to_bytes(8, "big") + hashlib.sha256(cose).digest()


def presentation_bytes(cose: bytes, step: int, device: TestKey, *, signature: bytes | None = None,
                       step_item: bytes | None = None, signed_cose: bytes | None = None,
                       signed_step: int | None = None) -> bytes:
    """``83 || cose || step || 58 40 || signature``; each part overridable so one defect is the only one."""
    if signature is None:
        signature = device.sign(device_input(cose if signed_cose is None else signed_cose,
                                             step if signed_step is None else signed_step))
    return b"\x83" + cose + (cbor.dumps(step) if step_item is None else step_item) + bstr(signature)


def text(data: bytes, prefix: str = PREFIX) -> str:
    return prefix + b45encode(data)


@dataclass(frozen=True)
class PresentationVector:
    name: str
    description: str
    presentation: str
    expected: str
    step: int | None = NOW_STEP
    holder: TestKey | None = DEVICE_KEY
    key: TestKey = ES256_KEY
    window: KeyWindow = KeyWindow()
    verify_at: _dt.datetime = VERIFY_AT
    clock_skew_seconds: int = SKEW
    revoked_serials: tuple[int, ...] = ()
    claims: CodeClaims | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "presentation": self.presentation,
            "public_key_pem": self.key.pem(),
            "kid": self.key.kid.hex(),
            "alg": self.key.algorithm.value,
            "province": "33",
            "key": self.window.to_json(),
            "key_seed_label": self.key.label,
            "verify_at": _iso(self.verify_at),
            "clock_skew_seconds": self.clock_skew_seconds,
            "revoked_serials": list(self.revoked_serials),
            "expected": self.expected,
            "claims": None if self.claims is None else claims_to_json(self.claims),
            "step": self.step,
            "holder_public_key": None if self.holder is None else _point(self.holder).hex(),
            "holder_alg": None if self.holder is None else self.holder.algorithm.value,
            "holder_seed_label": None if self.holder is None else self.holder.label,
            "test_only": TEST_ONLY_NOTICE,
        }


def bound_claims(holder: TestKey = DEVICE_KEY, **changes: Any) -> CodeClaims:
    return base_claims(holder_key=cnf_compressed(holder), **changes)


def _valid(name: str, description: str, *, claims: CodeClaims | None = None, step: int = NOW_STEP,
           device: TestKey = DEVICE_KEY, issuer: TestKey = ES256_KEY, **kwargs: Any) -> PresentationVector:
    claims = bound_claims(device) if claims is None else claims
    cose = standard_cose(claims, issuer)
    return PresentationVector(name, description, text(presentation_bytes(cose, step, device)), "valid",
                              step=step, holder=device, key=issuer, claims=claims, **kwargs)


def _valid_vectors() -> Iterator[PresentationVector]:
    yield _valid("valid-presentation-basic",
                 "An ES256 credential bound to a compressed P-256 device key, presented at the current step.")
    yield _valid("valid-presentation-previous-step", "Made in the previous 30-s step: still accepted.",
                 step=NOW_STEP - 1)
    oldest = (to_epoch(VERIFY_AT) - SKEW) // STEP - 1
    yield _valid("valid-presentation-oldest-accepted-step",
                 "The oldest step accepted with 30 s of skew: step(now - 30 s) - 1.", step=oldest)
    newest = (to_epoch(VERIFY_AT) + SKEW) // STEP
    yield _valid("valid-presentation-newest-accepted-step",
                 "A phone clock 30 s ahead: step(now + 30 s) is accepted.",
                 step=newest, verify_at=VERIFY_AT + 29 * SECOND)
    yield _valid("valid-presentation-zero-skew", "No clock skew tolerated; the current step.",
                 clock_skew_seconds=0)
    yield _valid("valid-presentation-uncompressed-holder-key",
                 "The holder key with y in full (32 bytes) instead of the sign bit.",
                 claims=base_claims(holder_key=cnf_uncompressed(DEVICE_KEY)))
    for odd in (False, True):
        device = _device_key_of_parity(odd)
        yield _valid(f"valid-presentation-holder-y-{'odd' if odd else 'even'}",
                     f"A compressed holder key whose y is {'odd: -3 is true' if odd else 'even: -3 is false'}.",
                     claims=bound_claims(device), device=device)
    yield _valid("valid-presentation-serial-zero", "Credential serial 0.", claims=bound_claims(serial=0))
    yield _valid("valid-presentation-serial-max", "Credential serial 2**64-1.",
                 claims=bound_claims(serial=2**64 - 1))
    yield _valid("valid-presentation-eddsa-credential", "An EdDSA-signed credential; the device key is P-256.",
                 issuer=EDDSA_KEY)
    yield _valid("valid-presentation-sm2-credential", "An SM2-SM3-signed credential; the device key is P-256.",
                 issuer=SM2_KEY)
    yield _valid("valid-presentation-status-and-extra", "A credential with status and an extra claim.",
                 claims=bound_claims(status=1, extra={-70000: "x"}))
    yield _valid("valid-presentation-other-serials-revoked", "Revocations of other serials do not matter.",
                 revoked_serials=(1, 4241, 4243))


def _sm2_valid_vectors() -> Iterator[PresentationVector]:
    yield _valid("valid-presentation-sm2-device",
                 "An ES256 credential bound to a compressed SM2 device key (crv -65537); SM2-SM3 device signature.",
                 claims=bound_claims(SM2_DEVICE_KEY), device=SM2_DEVICE_KEY)
    yield _valid("valid-presentation-sm2-device-sm2-credential",
                 "All SM2: an SM2-SM3 credential bound to an SM2 device key.",
                 claims=bound_claims(SM2_DEVICE_KEY), device=SM2_DEVICE_KEY, issuer=SM2_KEY)
    yield _valid("valid-presentation-sm2-device-uncompressed-holder-key",
                 "The SM2 holder key with y in full (32 bytes) instead of the sign bit.",
                 claims=base_claims(holder_key=cnf_uncompressed(SM2_DEVICE_KEY)), device=SM2_DEVICE_KEY)
    for odd in (False, True):
        device = _device_key_of_parity(odd, Algorithm.SM2_SM3)
        yield _valid(f"valid-presentation-sm2-device-holder-y-{'odd' if odd else 'even'}",
                     f"A compressed SM2 holder key whose y is {'odd: -3 is true' if odd else 'even: -3 is false'}.",
                     claims=bound_claims(device), device=device)
    yield _valid("valid-presentation-sm2-device-previous-step", "SM2 device; made in the previous 30-s step.",
                 claims=bound_claims(SM2_DEVICE_KEY), device=SM2_DEVICE_KEY, step=NOW_STEP - 1)


SM2_COSE = standard_cose(bound_claims(SM2_DEVICE_KEY), ES256_KEY)


def _sm2_invalid_vectors() -> Iterator[PresentationVector]:
    good = presentation_bytes(SM2_COSE, NOW_STEP, SM2_DEVICE_KEY)
    sm2 = dict(holder=SM2_DEVICE_KEY)
    yield _defect("invalid-presentation-sm2-device-signature-bit-flip", "The SM2 device signature's last bit flipped.",
                  "bad_device_signature", good[:-1] + bytes((good[-1] ^ 0x01,)), **sm2)
    yield _defect("invalid-presentation-sm2-signed-by-another-device",
                  "Signed by another phone's SM2 key than the one bound in the credential.",
                  "bad_device_signature", presentation_bytes(SM2_COSE, NOW_STEP, OTHER_SM2_DEVICE_KEY), **sm2)
    yield _defect("invalid-presentation-sm2-step-changed",
                  "The SM2 device signed the previous step; the step was rewritten to the current one.",
                  "bad_device_signature", presentation_bytes(SM2_COSE, NOW_STEP, SM2_DEVICE_KEY,
                                                             signed_step=NOW_STEP - 1), **sm2)
    signed = device_input(SM2_COSE, NOW_STEP)
    yield _defect("invalid-presentation-sm2-other-signer-id",
                  "An SM2-SM3 device signature made with the empty signer ID instead of 1234567812345678.",
                  "bad_device_signature", presentation_bytes(
                      SM2_COSE, NOW_STEP, SM2_DEVICE_KEY,
                      signature=sm2_sign_with_signer_id(SM2_DEVICE_KEY, signed, b"")), **sm2)
    yield _defect("invalid-presentation-sm2-holder-p256-signature",
                  "The credential binds an SM2 key; the presentation carries an ES256 signature by a P-256 key.",
                  "bad_device_signature", presentation_bytes(SM2_COSE, NOW_STEP, DEVICE_KEY), **sm2)
    yield _defect("invalid-presentation-p256-holder-sm2-signature",
                  "The credential binds a P-256 key; the presentation carries an SM2-SM3 signature.",
                  "bad_device_signature", presentation_bytes(GOOD_COSE, NOW_STEP, SM2_DEVICE_KEY))
    yield _defect("invalid-presentation-sm2-stale", "SM2 device; made 3 minutes ago.", "stale_presentation",
                  presentation_bytes(SM2_COSE, NOW_STEP - 6, SM2_DEVICE_KEY), step=NOW_STEP - 6, **sm2)
    point = _point(SM2_DEVICE_KEY)
    for name, description, cnf in (
        ("invalid-presentation-sm2-holder-key-not-on-curve", "The bound SM2 key's x is not on the SM2 curve.",
         {1: {1: 2, -1: -65537, -2: (5).to_bytes(32, "big"), -3: True}}),
        ("invalid-presentation-sm2-holder-key-y-off-curve", "The bound SM2 key's y in full does not match its x.",
         {1: {1: 2, -1: -65537, -2: point[1:33], -3: point[33:64] + bytes((point[64] ^ 1,))}}),
        ("invalid-presentation-holder-key-unknown-private-curve", "crv -65538: a private-use curve no one defined.",
         {1: {1: 2, -1: -65538, -2: point[1:33], -3: True}}),
    ):
        cose = standard_cose(base_claims(holder_key=cnf), ES256_KEY)
        yield _defect(name, description, "no_holder_key", presentation_bytes(cose, NOW_STEP, SM2_DEVICE_KEY),
                      **sm2)


def _defect(name: str, description: str, expected: str, data_or_text: bytes | str, **kwargs: Any
            ) -> PresentationVector:
    presentation = data_or_text if isinstance(data_or_text, str) else text(data_or_text)
    return PresentationVector(name, description, presentation, expected, **kwargs)


GOOD_COSE = standard_cose(bound_claims(), ES256_KEY)


def _invalid_time_vectors() -> Iterator[PresentationVector]:
    oldest = (to_epoch(VERIFY_AT) - SKEW) // STEP - 1
    yield _defect("invalid-presentation-stale", "Made 3 minutes ago (a screenshot).", "stale_presentation",
                  presentation_bytes(GOOD_COSE, NOW_STEP - 6, DEVICE_KEY), step=NOW_STEP - 6)
    yield _defect("invalid-presentation-stale-by-one-step", "One step older than the oldest accepted.",
                  "stale_presentation", presentation_bytes(GOOD_COSE, oldest - 1, DEVICE_KEY), step=oldest - 1)
    yield _defect("invalid-presentation-stale-zero-skew", "The previous-but-one step with no skew tolerated.",
                  "stale_presentation", presentation_bytes(GOOD_COSE, NOW_STEP - 2, DEVICE_KEY),
                  step=NOW_STEP - 2, clock_skew_seconds=0)
    newest = (to_epoch(VERIFY_AT) + SKEW) // STEP
    yield _defect("invalid-presentation-future-by-one-step", "One step newer than the newest accepted.",
                  "future_presentation", presentation_bytes(GOOD_COSE, newest + 1, DEVICE_KEY), step=newest + 1)
    yield _defect("invalid-presentation-future", "A step an hour ahead.", "future_presentation",
                  presentation_bytes(GOOD_COSE, NOW_STEP + 120, DEVICE_KEY), step=NOW_STEP + 120)
    yield _defect("invalid-presentation-step-beyond-2106", "A step past the 32-bit time range.",
                  "future_presentation", presentation_bytes(GOOD_COSE, 2**40, DEVICE_KEY), step=2**40)


def _invalid_device_vectors() -> Iterator[PresentationVector]:
    good = presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY)
    flipped = good[:-1] + bytes((good[-1] ^ 0x01,))
    yield _defect("invalid-presentation-device-signature-bit-flip", "The device signature's last bit flipped.",
                  "bad_device_signature", flipped)
    yield _defect("invalid-presentation-signed-by-another-device",
                  "A presentation signed by another phone's key than the one bound in the credential.",
                  "bad_device_signature", presentation_bytes(GOOD_COSE, NOW_STEP, OTHER_DEVICE_KEY))
    yield _defect("invalid-presentation-step-changed",
                  "The device signed the previous step; the step was rewritten to the current one.",
                  "bad_device_signature", presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY,
                                                             signed_step=NOW_STEP - 1))
    other = standard_cose(bound_claims(serial=4243), ES256_KEY)
    yield _defect("invalid-presentation-signature-for-another-credential",
                  "A device signature over another credential of the same phone, moved onto this one.",
                  "bad_device_signature", presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY, signed_cose=other))
    yield _defect("invalid-presentation-zero-signature", "A device signature of 64 zero bytes.",
                  "bad_device_signature", presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY, signature=bytes(64)))


def _invalid_holder_vectors() -> Iterator[PresentationVector]:
    plain = standard_cose(base_claims(), ES256_KEY)
    yield _defect("invalid-presentation-credential-without-cnf",
                  "A static code (no cnf) wrapped as a presentation by someone with their own key.",
                  "no_holder_key", presentation_bytes(plain, NOW_STEP, DEVICE_KEY))
    point = _point(DEVICE_KEY)
    bad_x = bytes(31) + b"\x05"  # x = 5: no point on P-256 has it
    for name, description, cnf in (
        ("invalid-presentation-holder-key-not-on-curve", "The bound key's x is not on P-256.",
         {1: {1: 2, -1: 1, -2: bad_x, -3: point[33:]}}),
        ("invalid-presentation-holder-key-p384", "The bound key claims curve P-384 (crv 2).",
         {1: {1: 2, -1: 2, -2: point[1:33], -3: True}}),
        ("invalid-presentation-holder-key-okp", "The bound key is an OKP (Ed25519) key, not EC2 P-256.",
         {1: {1: 1, -1: 6, -2: point[1:33]}}),
        ("invalid-presentation-holder-key-short-x", "The bound key's x is 31 bytes.",
         {1: {1: 2, -1: 1, -2: point[2:33], -3: True}}),
        ("invalid-presentation-cnf-kid-only", "cnf names a key id (member 3), which terminals cannot check offline.",
         {3: b"phone-1"}),
    ):
        cose = standard_cose(base_claims(holder_key=cnf), ES256_KEY)
        yield _defect(name, description, "no_holder_key", presentation_bytes(cose, NOW_STEP, DEVICE_KEY))


def _invalid_credential_vectors() -> Iterator[PresentationVector]:
    claims = bound_claims()
    tampered = bytearray(GOOD_COSE)
    tampered[40] ^= 0x01  # inside sub: the issuer's signature no longer covers it
    yield _defect("invalid-presentation-credential-tampered",
                  "The credential's payload changed after the issuer signed it (device signature over the result).",
                  "bad_signature", presentation_bytes(bytes(tampered), NOW_STEP, DEVICE_KEY))
    yield _defect("invalid-presentation-credential-expired", "Verified after the credential's exp.", "expired",
                  presentation_bytes(GOOD_COSE, to_epoch(claims.expires_at) // STEP, DEVICE_KEY),
                  step=to_epoch(claims.expires_at) // STEP, verify_at=claims.expires_at)
    yield _defect("invalid-presentation-credential-revoked", "The credential's serial is revoked.", "revoked",
                  presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY), revoked_serials=(4242,))
    forged = standard_cose(claims, UNTRUSTED_KEY)
    yield _defect("invalid-presentation-credential-unknown-key", "A credential signed by a key nobody trusts.",
                  "unknown_key", presentation_bytes(forged, NOW_STEP, DEVICE_KEY))
    window = replace(KeyWindow(), status=KeyStatus.COMPROMISED, compromised_since=ISSUED,
                     compromise_policy=CompromisePolicy.REJECT_ALL)
    yield _defect("invalid-presentation-credential-key-compromised", "The issuer's key is compromised (reject all).",
                  "key_compromised", presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY), window=window)


def _invalid_form_vectors() -> Iterator[PresentationVector]:
    good = presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY)
    yield _defect("invalid-presentation-truncated", "The last byte of the device signature missing.",
                  "malformed", good[:-1], step=None)
    yield _defect("invalid-presentation-trailing-byte", "One byte after the device signature.", "malformed",
                  good + b"\x00", step=None)
    yield _defect("invalid-presentation-v1-prefix", "A presentation's body under the static prefix EHC1:.",
                  "malformed", text(good, "EHC1:"), step=None)
    yield _defect("invalid-presentation-lowercase-prefix", "The prefix in lower case.", "malformed",
                  text(good, "ehcd:"), step=None)
    yield _defect("invalid-presentation-step-not-shortest", "The step as a 9-byte integer.", "malformed",
                  presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY, step_item=b"\x1b" + NOW_STEP.to_bytes(8, "big")),
                  step=None)
    yield _defect("invalid-presentation-step-negative", "The step as a negative integer.", "malformed",
                  presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY, step_item=b"\x20"), step=None)
    yield _defect("invalid-presentation-step-text", "The step as a text string.", "malformed",
                  presentation_bytes(GOOD_COSE, NOW_STEP, DEVICE_KEY, step_item=b"\x61\x31"), step=None)
    short = good[:-66] + b"\x58\x3f" + good[-63:]
    yield _defect("invalid-presentation-signature-63-bytes", "A 63-byte device signature.", "malformed",
                  short, step=None)
    yield _defect("invalid-presentation-array-of-four", "An array of four items (an extra null).", "malformed",
                  b"\x84" + good[1:] + b"\xf6", step=None)
    yield _defect("invalid-presentation-untagged-credential", "The credential's COSE_Sign1 without tag 18.",
                  "malformed", presentation_bytes(GOOD_COSE[1:], NOW_STEP, DEVICE_KEY), step=None)
    protected = protected_item(ES256_KEY.algorithm.cose_id, ES256_KEY.kid)
    big = cose_sign1(protected, bstr(cbor.dumps(_claims_map_with_padding())), ES256_KEY)
    yield _defect("invalid-presentation-oversized", "A credential over the 600-byte cap inside a presentation.",
                  "malformed", presentation_bytes(big, NOW_STEP, DEVICE_KEY), step=None)
    yield _defect("invalid-presentation-empty", "The prefix alone.", "malformed", PREFIX, step=None)


def _claims_map_with_padding() -> dict[Any, Any]:
    """Bound claims with an extra claim that takes the credential past 600 bytes."""
    from tools.gen_vectors import claims_map

    mapping = claims_map(bound_claims())
    mapping[-70000] = b"\x00" * 560
    return mapping


def build_vectors() -> list[PresentationVector]:
    vectors = [
        *_valid_vectors(),
        *_invalid_time_vectors(),
        *_invalid_device_vectors(),
        *_invalid_holder_vectors(),
        *_invalid_credential_vectors(),
        *_invalid_form_vectors(),
        *_sm2_valid_vectors(),
        *_sm2_invalid_vectors(),
    ]
    names = [v.name for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector names"
    return vectors


def generate() -> dict[str, bytes]:
    return {f"{v.name}.json": render(v.to_json()) for v in build_vectors()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_presentation_vectors",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PRESENTATION_OUT)
    parser.add_argument("--check", action="store_true", help="compare with the files in --out; write nothing")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = diff(files, args.out)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in sorted({p.name for p in args.out.glob("*.json")} - set(files)):
        (args.out / stale).unlink()
    for name, content in sorted(files.items()):
        path = args.out / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    print(f"{len(files)} presentation vector files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
