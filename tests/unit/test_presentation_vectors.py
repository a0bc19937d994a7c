"""The dynamic-presentation vectors in ``tests/vectors/presentation`` (made by
``tools/gen_presentation_vectors.py``).

Contracts checked here:

* the committed files are byte-for-byte what the generator produces now;
* every vector gets its ``expected`` outcome from
  :func:`healthcode.presentation.check_presentation`, and a valid one yields
  exactly its credential's claims and step;
* every valid vector is also verified by independent code: python-cwt checks
  the issuer's COSE_Sign1 (ES256 and EdDSA credentials), and cryptography checks
  the device signature over the domain-separated bytes rebuilt here from the
  spec (``docs/code-format.md`` §16.4), with the holder key from the vector;
  an SM2 device signature (``holder_alg`` SM2-SM3) is checked by OpenSSL
  (``pkeyutl -verify -rawin -digest sm3``, signer ID 1234567812345678), and
  OpenSSL also refuses the SM2 vectors' bad device signatures;
* the set has at least 30 vectors and covers every presentation reason.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

import healthcode
from healthcode import Keyring, Reason
from healthcode import presentation as hp
from healthcode.base45 import b45decode
from tests.unit.test_vectors import RevocationList, expected_claims, parse_time, raw_claims, trusted_key
from tools import gen_presentation_vectors

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "presentation"
VECTORS = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(VECTOR_DIR.glob("*.json"))}
VALID = [name for name, v in VECTORS.items() if v["expected"] == "valid"]
PRESENTATION_REASONS = {
    Reason.STALE_PRESENTATION, Reason.FUTURE_PRESENTATION, Reason.BAD_DEVICE_SIGNATURE, Reason.NO_HOLDER_KEY,
}


def _ids(names: list[str]) -> list[str]:
    return [name.removesuffix(".json") for name in names]


def run(vector: dict[str, Any]) -> hp.PresentationResult:
    key = trusted_key(vector)
    return hp.check_presentation(
        vector["presentation"],
        Keyring([key]),
        now=parse_time(vector["verify_at"]),
        revocation=RevocationList(key.province, key.kid, vector["revoked_serials"]),
        clock_skew=_dt.timedelta(seconds=vector["clock_skew_seconds"]),
    )


def test_committed_vectors_are_exactly_what_the_generator_makes():
    generated = gen_presentation_vectors.generate()
    problems = gen_presentation_vectors.diff(generated, VECTOR_DIR)
    assert not problems, "run `python -m tools.gen_presentation_vectors`:\n" + "\n".join(problems)
    assert gen_presentation_vectors.generate() == generated  # deterministic


def test_vector_set_shape():
    assert len(VECTORS) >= 30
    covered = {v["expected"] for v in VECTORS.values()}
    assert {r.value for r in PRESENTATION_REASONS} <= covered
    assert covered <= {"valid"} | {r.value for r in Reason}
    assert all("PRIVATE" not in v["public_key_pem"] for v in VECTORS.values())
    assert {v["alg"] for v in VECTORS.values() if v["expected"] == "valid"} == {"ES256", "EdDSA", "SM2-SM3"}
    # SM2 device keys: valid ones, and refusals with the same reason codes as P-256
    sm2 = [v for v in VECTORS.values() if v["holder_alg"] == "SM2-SM3"]
    assert len([v for v in sm2 if v["expected"] == "valid"]) >= 5
    assert {"bad_device_signature", "no_holder_key", "stale_presentation"} <= {v["expected"] for v in sm2}


@pytest.mark.parametrize("name", list(VECTORS), ids=_ids(list(VECTORS)))
def test_vector(name):
    vector = VECTORS[name]
    result = run(vector)
    if vector["expected"] != "valid":
        assert result.presentation is None
        assert result.reason is not None and result.reason.value == vector["expected"], result.detail
        return
    assert result.valid, f"{result.reason}: {result.detail}"
    code = result.presentation.credential
    assert result.presentation.step == vector["step"]
    actual = {"iss": code.province, "sub": code.subject, "iat": code.iat, "exp": code.exp, "serial": code.serial,
              "cnf": dict(code.holder_key), "status": code.status, "extra": dict(code.extra)}
    assert actual == expected_claims(vector)


def _parts(vector: dict[str, Any]) -> tuple[bytes, int, bytes]:
    """Credential COSE, step and signature, cut by hand from the layout (§16.2), not by healthcode."""
    data = b45decode(vector["presentation"].removeprefix("EHCD:"))
    assert data[0] == 0x83 and data[-66:-64] == b"\x58\x40"
    step = vector["step"]
    step_item = healthcode.cbor.dumps(step)
    assert data[-66 - len(step_item):-66] == step_item
    return data[1:-66 - len(step_item)], step, data[-64:]


_P256_VALID = [name for name in VALID if VECTORS[name]["holder_alg"] == "ES256"]
_SM2_HOLDER = [name for name, v in VECTORS.items() if v["holder_alg"] == "SM2-SM3" and v["step"] is not None]


def _signed_bytes(cose: bytes, step: int) -> bytes:
    """§16.4, rebuilt from the spec."""
    return b"EHC-DYN-v1\x00" + step.to_bytes(8, "big") + hashlib.sha256(cose).digest()


@pytest.mark.parametrize("name", _P256_VALID, ids=_ids(_P256_VALID))
def test_cryptography_verifies_the_device_signature(name):
    vector = VECTORS[name]
    cose, step, signature = _parts(vector)
    signed = _signed_bytes(cose, step)
    device = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(vector["holder_public_key"]))
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    device.verify(der, signed, ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature on failure
    # and the credential binds exactly that key
    cnf = expected_claims(vector)["cnf"][1]
    point = device.public_numbers()
    assert cnf[-2] == point.x.to_bytes(32, "big")
    assert cnf[-3] in (point.y.to_bytes(32, "big"), bool(point.y & 1))


_CWT_VALID = [name for name in VALID if VECTORS[name]["alg"] in ("ES256", "EdDSA")]


@pytest.mark.parametrize("name", _CWT_VALID, ids=_ids(_CWT_VALID))
def test_python_cwt_verifies_the_credential(name):
    cwt = pytest.importorskip("cwt")
    cbor2 = pytest.importorskip("cbor2")
    vector = VECTORS[name]
    cose, _, _ = _parts(vector)
    key = cwt.COSEKey.from_pem(vector["public_key_pem"], alg=vector["alg"], kid=bytes.fromhex(vector["kid"]))
    claims = cbor2.loads(cwt.COSE.new(verify_kid=True).decode(cose, key))
    assert claims == raw_claims(expected_claims(vector))


def _openssl_sm2_problem() -> str | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return "no `openssl` binary on PATH"
    algs = subprocess.run([openssl, "list", "-public-key-algorithms"], capture_output=True, timeout=30)
    if not re.search(rb"\bSM2\b", algs.stdout, re.IGNORECASE):
        return "`openssl list -public-key-algorithms` has no SM2"
    return None


@pytest.mark.parametrize("name", _SM2_HOLDER, ids=_ids(_SM2_HOLDER))
def test_openssl_checks_the_sm2_device_signatures(name, tmp_path):
    """OpenSSL's SM2 (independent of gmalglib) accepts exactly the valid SM2 vectors' device signatures.

    Every SM2-holder vector with a readable step: valid ones verify; those refused with
    ``bad_device_signature`` fail in OpenSSL too (other refusals are not about the signature).
    """
    problem = _openssl_sm2_problem()
    if problem is not None:
        pytest.skip(f"OpenSSL SM2 unavailable: {problem}")
    vector = VECTORS[name]
    cose, step, signature = _parts(vector)
    point = bytes.fromhex(vector["holder_public_key"])
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004") + point[1:]
    pem = tmp_path / "device.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(spki).decode() + "-----END PUBLIC KEY-----\n")
    (tmp_path / "msg").write_bytes(_signed_bytes(cose, step))
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    (tmp_path / "sig").write_bytes(encode_dss_signature(r, s) if r and s else b"\x30\x06\x02\x01\x00\x02\x01\x00")
    proc = subprocess.run([shutil.which("openssl") or "openssl", "pkeyutl", "-verify", "-rawin", "-digest", "sm3",
                           "-pkeyopt", "distid:1234567812345678", "-pubin", "-inkey", str(pem),
                           "-in", str(tmp_path / "msg"), "-sigfile", str(tmp_path / "sig")],
                          capture_output=True, timeout=30)
    verified = proc.returncode == 0 and b"Signature Verified Successfully" in proc.stdout
    if vector["expected"] == "valid":
        assert verified, proc.stdout + proc.stderr
        cnf = expected_claims(vector)["cnf"][1]
        assert (cnf[1], cnf[-1], cnf[-2]) == (2, -65537, point[1:33])
        assert cnf[-3] in (point[33:], bool(point[64] & 1))
    elif vector["expected"] == "bad_device_signature":
        assert not verified and b"Signature Verification Failure" in proc.stdout, proc.stdout + proc.stderr
