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
* the set has at least 30 vectors and covers every presentation reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
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


@pytest.mark.parametrize("name", VALID, ids=_ids(VALID))
def test_cryptography_verifies_the_device_signature(name):
    vector = VECTORS[name]
    cose, step, signature = _parts(vector)
    signed = b"EHC-DYN-v1\x00" + step.to_bytes(8, "big") + hashlib.sha256(cose).digest()
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
