"""SM2 with SM3: known answers, cross-checked against OpenSSL's SM2.

Our SM2 (``healthcode.algorithms``, through ``gmalglib``) and OpenSSL's are
independent implementations; every check here goes both ways:

* OpenSSL keys (``openssl genpkey -algorithm SM2`` and ``openssl ecparam -name
  SM2 -genkey``) load as ours, public and private, with identical SPKI DER;
* our signatures verify with ``openssl pkeyutl -verify -rawin -digest sm3
  -pkeyopt distid:1234567812345678`` and OpenSSL's verify with ours; a one-bit
  change of message or signature, or another signer ID, fails both ways;
* the published SM2 signature example on the *standard* curve (GM/T 0003.5-2012
  / GB/T 32918.5-2017, Annex A) is reproduced bit for bit, and OpenSSL accepts it;
* SM3 known answers (GB/T 32905-2016 examples) agree in gmalglib and OpenSSL;
* a whole health code signed through OpenSSL verifies with ``healthcode.verify``,
  and a code signed by us verifies with OpenSSL over its COSE Sig_structure.

Signatures: COSE carries raw ``r || s`` (64 bytes); OpenSSL reads and writes the
DER ``SEQUENCE { r INTEGER, s INTEGER }``, converted with cryptography's
``encode_dss_signature`` / ``decode_dss_signature``.

OpenSSL 3's SM2 signer ID defaults to the *empty* ID, not GB/T 32918's
``1234567812345678``; ``-pkeyopt distid:...`` is therefore always passed (and a
test pins that leaving it out, or using another ID, fails).

The module is skipped, with the reason, if there is no ``openssl`` binary or it
has no SM2 / SM3 / ``pkeyutl -rawin``; ``gmalglib`` (the ``sm2`` extra) is needed too.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("gmalglib", reason="SM2 needs the 'sm2' extra (gmalglib)")
import gmalglib.core  # noqa: E402

from cryptography.hazmat.primitives.asymmetric.utils import (  # noqa: E402
    decode_dss_signature,
    encode_dss_signature,
)

import healthcode  # noqa: E402
from healthcode import (  # noqa: E402
    Algorithm,
    CodeClaims,
    Keyring,
    SoftwareSigner,
    TrustedKey,
    decode_unverified,
    load_public_key_der,
    load_public_key_pem,
    main_index_id_from_bytes,
    sign_code,
    signing_key_from_private_bytes,
)
from healthcode.codec import Signer  # noqa: E402

OPENSSL = shutil.which("openssl")
DISTID = "1234567812345678"  # GB/T 35276 default signer ID; healthcode's SM2_DEFAULT_SIGNER_ID
_SM2_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")
# SM2 curve (GB/T 32918.5 recommended 256-bit curve) group order n.
_N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)
_ENV = {**os.environ, "LC_ALL": "C"}
_OK = "Signature Verified Successfully"
_BAD = "Signature Verification Failure"


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args], input=stdin, capture_output=True, env=_ENV, timeout=60, check=False
    )


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    """Run openssl and return its stdout; any error fails the test (never skips it)."""
    proc = _run(*args, stdin=stdin)
    assert proc.returncode == 0, (
        f"openssl {' '.join(args)} failed ({proc.returncode}): "
        f"{proc.stderr.decode(errors='replace')}"
    )
    return proc.stdout


def _openssl_sm2_problem() -> str | None:
    """Why this OpenSSL cannot run these tests, or None if it can."""
    if OPENSSL is None:
        return "no `openssl` binary on PATH"
    try:
        algs = _run("list", "-public-key-algorithms")
        digests = _run("list", "-digest-algorithms")
        pkeyutl = _run("pkeyutl", "-help")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run openssl: {exc}"
    if algs.returncode != 0 or not re.search(rb"\bSM2\b", algs.stdout, re.IGNORECASE):
        return "`openssl list -public-key-algorithms` has no SM2"
    if not re.search(rb"\bSM3\b", digests.stdout, re.IGNORECASE):
        return "`openssl list -digest-algorithms` has no SM3"
    if b"-rawin" not in pkeyutl.stdout + pkeyutl.stderr:
        return "`openssl pkeyutl` has no -rawin (OpenSSL 3 needed)"
    if _run("genpkey", "-algorithm", "SM2").returncode != 0:
        return "`openssl genpkey -algorithm SM2` fails"
    return None


_PROBLEM = _openssl_sm2_problem()
if _PROBLEM is not None:
    pytest.skip(f"OpenSSL SM2 unavailable: {_PROBLEM}", allow_module_level=True)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _raw_to_der(raw: bytes) -> bytes:
    assert len(raw) == 64
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def _pem_to_der(pem: bytes) -> bytes:
    body = re.search(rb"-----BEGIN PUBLIC KEY-----(.*?)-----END PUBLIC KEY-----", pem, re.S)
    assert body is not None, pem
    return base64.b64decode(b"".join(body.group(1).split()))


def _openssl_verify(
    pub_pem: Path, message: bytes, raw_sig: bytes, tmp: Path, *, distid: str | None = DISTID
) -> bool:
    """OpenSSL's verdict on a raw r||s SM2 signature. Errors other than a
    plain verification failure (bad flags, unreadable key) fail the test."""
    msg, sig = tmp / "verify.msg", tmp / "verify.sig.der"
    msg.write_bytes(message)
    sig.write_bytes(_raw_to_der(raw_sig))
    args = ["pkeyutl", "-verify", "-rawin", "-digest", "sm3"]
    if distid is not None:
        args += ["-pkeyopt", f"distid:{distid}"]
    args += ["-pubin", "-inkey", str(pub_pem), "-in", str(msg), "-sigfile", str(sig)]
    proc = _run(*args)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode == 0 and _OK in out:
        return True
    if proc.returncode == 1 and _BAD in out:
        return False
    raise AssertionError(
        f"openssl verify neither verified nor cleanly rejected ({proc.returncode}): "
        f"{out} {proc.stderr.decode(errors='replace')}"
    )


def _openssl_sign(key_pem: Path, message: bytes, tmp: Path, *, distid: str = DISTID) -> bytes:
    """OpenSSL's SM2 signature over ``message``, as raw r||s."""
    msg, sig = tmp / "sign.msg", tmp / "sign.sig.der"
    msg.write_bytes(message)
    _openssl(
        "pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-pkeyopt", f"distid:{distid}",
        "-inkey", str(key_pem), "-in", str(msg), "-out", str(sig),
    )  # fmt: skip
    der = sig.read_bytes()
    assert der[0] == 0x30, der.hex()
    raw = _der_to_raw(der)
    assert _raw_to_der(raw) == der  # OpenSSL writes minimal DER: nothing lost in conversion
    return raw


def _private_scalar(key_pem: Path) -> bytes:
    """The private scalar d, parsed from ``openssl pkey -text -noout``."""
    text = _openssl("pkey", "-in", str(key_pem), "-text", "-noout").decode()
    m = re.search(r"^priv:\s*\n((?:\s+[0-9a-f:]+\n)+)", text, re.M | re.I)
    assert m is not None, text
    value = int(re.sub(r"[\s:]", "", m.group(1)), 16)
    assert 1 <= value <= _N - 2, "OpenSSL printed an out-of-range SM2 private key"
    assert re.search(r"ASN1 OID: SM2", text), text
    return value.to_bytes(32, "big")


def _openssl_key_from_scalar(secret: bytes, tmp: Path, name: str) -> Path:
    """An OpenSSL PEM private key for ``secret``: a SEC1 ECPrivateKey with the
    SM2 curve OID and *no* public key, so OpenSSL computes the public point."""
    der = bytes.fromhex("30310201010420") + secret + bytes.fromhex("a00a06082a811ccf5501822d")
    (tmp / f"{name}.der").write_bytes(der)
    pem = tmp / f"{name}.pem"
    _openssl("pkey", "-inform", "DER", "-in", str(tmp / f"{name}.der"), "-out", str(pem))
    return pem


@dataclass(frozen=True)
class OpenSSLKey:
    key_pem: Path  # private key as OpenSSL wrote it
    pub_pem: Path  # `openssl pkey -pubout`
    pub_der: bytes  # `openssl pkey -pubout -outform DER`
    secret: bytes  # private scalar, from `openssl pkey -text -noout`


_GENERATORS = {
    "genpkey": ("genpkey", "-algorithm", "SM2"),
    "ecparam": ("ecparam", "-name", "SM2", "-genkey", "-noout"),
}


@pytest.fixture(scope="module", params=sorted(_GENERATORS))
def ossl_key(request, tmp_path_factory) -> OpenSSLKey:
    tmp = tmp_path_factory.mktemp(f"sm2-{request.param}")
    key_pem, pub_pem = tmp / "key.pem", tmp / "pub.pem"
    _openssl(*_GENERATORS[request.param], "-out", str(key_pem))
    _openssl("pkey", "-in", str(key_pem), "-pubout", "-out", str(pub_pem))
    pub_der = _openssl("pkey", "-in", str(key_pem), "-pubout", "-outform", "DER")
    return OpenSSLKey(key_pem, pub_pem, pub_der, _private_scalar(key_pem))


MESSAGES = {
    "empty": b"",
    "message-digest": b"message digest",
    "one-byte": b"\x00",
    "binary-1k": bytes(range(256)) * 4,
}


# ---------------------------------------------------------------------------
# 1. keys
# ---------------------------------------------------------------------------


def test_openssl_public_key_loads_as_sm2(ossl_key: OpenSSLKey, tmp_path: Path) -> None:
    pem = ossl_key.pub_pem.read_text()
    assert ossl_key.pub_der.startswith(_SM2_SPKI_PREFIX) and len(ossl_key.pub_der) == 91
    assert _pem_to_der(pem.encode()) == ossl_key.pub_der

    key = load_public_key_pem(pem)
    assert key.algorithm is Algorithm.SM2_SM3
    assert key.spki_der() == ossl_key.pub_der
    assert load_public_key_pem(pem.encode()).spki_der() == ossl_key.pub_der
    assert load_public_key_der(ossl_key.pub_der) == key

    # ... and OpenSSL reads our PEM back to the same DER.
    ours = tmp_path / "ours.pem"
    ours.write_text(key.pem())
    assert _openssl("pkey", "-pubin", "-in", str(ours), "-outform", "DER") == ossl_key.pub_der


def test_openssl_private_scalar_gives_openssl_public_key(ossl_key: OpenSSLKey) -> None:
    ours = signing_key_from_private_bytes(Algorithm.SM2_SM3, ossl_key.secret)
    assert ours.algorithm is Algorithm.SM2_SM3
    assert ours.private_bytes() == ossl_key.secret
    assert ours.public_key().spki_der() == ossl_key.pub_der
    assert ours.public_key() == load_public_key_pem(ossl_key.pub_pem.read_text())


def test_openssl_derives_our_public_key_from_our_scalar(tmp_path: Path) -> None:
    """The other direction: a key generated by us, handed to OpenSSL as a bare scalar."""
    ours = healthcode.generate_signing_key(Algorithm.SM2_SM3)
    key_pem = _openssl_key_from_scalar(ours.private_bytes(), tmp_path, "ours")
    assert _private_scalar(key_pem) == ours.private_bytes()
    der = _openssl("pkey", "-in", str(key_pem), "-pubout", "-outform", "DER")
    assert der == ours.public_key().spki_der()


# ---------------------------------------------------------------------------
# 2. our signatures, OpenSSL's verification
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_our_signature_verifies_with_openssl(
    ossl_key: OpenSSLKey, message: bytes, tmp_path: Path
) -> None:
    ours = signing_key_from_private_bytes(Algorithm.SM2_SM3, ossl_key.secret)
    sig = ours.sign(message)
    assert len(sig) == 64
    assert ours.public_key().verify(sig, message)

    assert _openssl_verify(ossl_key.pub_pem, message, sig, tmp_path) is True
    # a one-bit change of the message, of r, or of s
    assert _openssl_verify(ossl_key.pub_pem, message + b"\x00", sig, tmp_path) is False
    if message:
        assert _openssl_verify(ossl_key.pub_pem, _flip(message, 7), sig, tmp_path) is False
    assert _openssl_verify(ossl_key.pub_pem, message, _flip(sig, 255), tmp_path) is False  # r
    assert _openssl_verify(ossl_key.pub_pem, message, _flip(sig, 511), tmp_path) is False  # s
    # the signer ID is bound into the signature
    other_id = "1234567812345679"
    assert _openssl_verify(ossl_key.pub_pem, message, sig, tmp_path, distid=other_id) is False
    assert _openssl_verify(ossl_key.pub_pem, message, sig, tmp_path, distid=None) is False


# ---------------------------------------------------------------------------
# 3. OpenSSL's signatures, our verification
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_openssl_signature_verifies_with_ours(
    ossl_key: OpenSSLKey, message: bytes, tmp_path: Path
) -> None:
    sig = _openssl_sign(ossl_key.key_pem, message, tmp_path)
    assert _openssl_verify(ossl_key.pub_pem, message, sig, tmp_path) is True  # sanity

    pub = load_public_key_pem(ossl_key.pub_pem.read_text())
    assert pub.verify(sig, message) is True
    assert pub.verify(sig, message + b"\x00") is False
    if message:
        assert pub.verify(sig, _flip(message, 7)) is False
        assert pub.verify(sig, message[:-1]) is False
    for bit in (0, 255, 256, 511):  # first and last bit of r and of s
        assert pub.verify(_flip(sig, bit), message) is False, bit
    assert pub.verify(sig[32:] + sig[:32], message) is False  # s || r
    assert pub.verify(_raw_to_der(sig), message) is False  # DER is not the COSE form


def test_openssl_signature_with_another_signer_id_fails_with_ours(
    ossl_key: OpenSSLKey, tmp_path: Path
) -> None:
    message = b"message digest"
    pub = load_public_key_pem(ossl_key.pub_pem.read_text())
    other = _openssl_sign(ossl_key.key_pem, message, tmp_path, distid="ALICE123@YAHOO.COM")
    assert _openssl_verify(ossl_key.pub_pem, message, other, tmp_path, distid="ALICE123@YAHOO.COM")
    assert pub.verify(other, message) is False


def test_signatures_do_not_verify_under_another_key(ossl_key: OpenSSLKey, tmp_path: Path) -> None:
    stranger = healthcode.generate_signing_key(Algorithm.SM2_SM3)
    stranger_pem = tmp_path / "stranger.pem"
    stranger_pem.write_text(stranger.public_key().pem())
    message = b"message digest"
    theirs = _openssl_sign(ossl_key.key_pem, message, tmp_path)
    assert stranger.public_key().verify(theirs, message) is False
    ours = stranger.sign(message)
    assert _openssl_verify(stranger_pem, message, ours, tmp_path) is True
    assert _openssl_verify(ossl_key.pub_pem, message, ours, tmp_path) is False


# ---------------------------------------------------------------------------
# 4. published known answer: SM2 signature example on the standard curve
# ---------------------------------------------------------------------------
#
# Source: GM/T 0003.5-2012 "SM2 ... Part 5: Parameter definition", Annex A
# (signature example on the recommended 256-bit curve), carried over unchanged
# into GB/T 32918.5-2017 Annex A. It uses the *standard* SM2 curve and the ID
# "1234567812345678" (unlike the test-curve examples with ID ALICE123@YAHOO.COM
# in GB/T 32918.2 and draft-shen-sm2-ecdsa). The same numbers appear in the test
# suites of several independent SM2 implementations (gmalglib's own
# src/test/sm2test.c, GmSSL, CnPack, Go and Rust SM2 packages), and the test
# below also checks them against OpenSSL: OpenSSL derives the published public
# key from d and accepts the published (r, s).
KAT_D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
KAT_XA = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
KAT_YA = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
KAT_ID = b"1234567812345678"
KAT_M = b"message digest"
KAT_ZA = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
KAT_E = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
KAT_K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
KAT_X1 = "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
KAT_R = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
KAT_S = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
KAT_SIG = bytes.fromhex(KAT_R + KAT_S)


def _kat_nonce(calls: list[int]):
    # gmalglib reads the bytes of its random source as a *little-endian* integer
    # (RandomUInt256 fills a UInt256 from them), so the published k, a big-endian
    # number, is handed over byte-reversed.
    def random_bytes(n: int) -> bytes:
        calls.append(n)
        return int(KAT_K, 16).to_bytes(n, "little")

    return random_bytes


def test_kat_published_example_intermediates() -> None:
    assert healthcode.algorithms.SM2_DEFAULT_SIGNER_ID == KAT_ID
    pk = gmalglib.core.SM2.get_pk(bytes.fromhex(KAT_D))
    assert pk == bytes.fromhex("04" + KAT_XA + KAT_YA)
    za = gmalglib.core.SM2(pk=pk, uid=KAT_ID).get_entity_info()
    assert za == bytes.fromhex(KAT_ZA)
    e = gmalglib.core.SM3(za + KAT_M).digest()
    assert e == bytes.fromhex(KAT_E)
    # r = (e + x1) mod n, where (x1, y1) = [k]G
    assert (int(KAT_E, 16) + int(KAT_X1, 16)) % _N == int(KAT_R, 16)


def test_kat_published_example_signs_and_verifies_with_ours() -> None:
    calls: list[int] = []
    key = signing_key_from_private_bytes(
        Algorithm.SM2_SM3, bytes.fromhex(KAT_D), random_bytes=_kat_nonce(calls)
    )
    assert key.public_key().spki_der() == _SM2_SPKI_PREFIX + bytes.fromhex(KAT_XA + KAT_YA)
    assert key.sign(KAT_M).hex().upper() == KAT_R + KAT_S
    assert calls == [32]  # one nonce draw, used as is

    pub = load_public_key_der(_SM2_SPKI_PREFIX + bytes.fromhex(KAT_XA + KAT_YA))
    assert pub.verify(KAT_SIG, KAT_M) is True
    assert pub.verify(KAT_SIG, b"message digesT") is False
    assert pub.verify(_flip(KAT_SIG, 100), KAT_M) is False


def test_kat_published_example_agrees_with_openssl(tmp_path: Path) -> None:
    key_pem = _openssl_key_from_scalar(bytes.fromhex(KAT_D), tmp_path, "kat")
    pub_der = _openssl("pkey", "-in", str(key_pem), "-pubout", "-outform", "DER")
    assert pub_der == _SM2_SPKI_PREFIX + bytes.fromhex(KAT_XA + KAT_YA)
    pub_pem = tmp_path / "kat-pub.pem"
    _openssl("pkey", "-in", str(key_pem), "-pubout", "-out", str(pub_pem))

    assert _openssl_verify(pub_pem, KAT_M, KAT_SIG, tmp_path) is True
    assert _openssl_verify(pub_pem, b"message digesT", KAT_SIG, tmp_path) is False
    assert _openssl_verify(pub_pem, KAT_M, _flip(KAT_SIG, 300), tmp_path) is False
    assert _openssl_verify(pub_pem, KAT_M, KAT_SIG, tmp_path, distid="ALICE123@YAHOO.COM") is False

    # OpenSSL's own (random-nonce) signature with the published key verifies with ours.
    theirs = _openssl_sign(key_pem, KAT_M, tmp_path)
    assert theirs != KAT_SIG
    assert load_public_key_der(pub_der).verify(theirs, KAT_M) is True


# ---------------------------------------------------------------------------
# 5. SM3 known answers (GB/T 32905-2016 Annex A), gmalglib and OpenSSL
# ---------------------------------------------------------------------------

SM3_KAT = {
    "abc": (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    "abcd*16": (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
}


@pytest.mark.parametrize(("message", "digest"), SM3_KAT.values(), ids=SM3_KAT.keys())
def test_sm3_known_answer(message: bytes, digest: str, tmp_path: Path) -> None:
    assert gmalglib.core.SM3(message).digest().hex() == digest
    assert gmalglib.sm3_digest(message).hex() == digest
    h = gmalglib.core.SM3()
    for i in range(len(message)):  # byte-at-a-time updates give the same answer
        h.update(message[i : i + 1])
    assert h.digest().hex() == digest

    path = tmp_path / "sm3.in"
    path.write_bytes(message)
    out = _openssl("dgst", "-sm3", "-r", str(path)).decode()
    assert out.split()[0] == digest
    assert _openssl("dgst", "-sm3", "-binary", stdin=message).hex() == digest


# ---------------------------------------------------------------------------
# 6. whole codes: OpenSSL as the issuer's signer, OpenSSL as a verifier
# ---------------------------------------------------------------------------

_T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _claims(serial: int) -> CodeClaims:
    return CodeClaims(
        province="31",
        subject=main_index_id_from_bytes(bytes(range(16))),
        serial=serial,
        issued_at=_T0,
        expires_at=_T0 + dt.timedelta(days=1),
    )


def _keyring(pub, kid: bytes) -> Keyring:
    return Keyring(
        [
            TrustedKey(
                kid=kid,
                province="31",
                public_key=pub,
                use_from=_T0 - dt.timedelta(days=1),
                use_until=_T0 + dt.timedelta(days=30),
                verify_until=_T0 + dt.timedelta(days=60),
            )
        ]
    )


class _OpenSSLSigner(Signer):
    """An issuer signer whose private key lives in OpenSSL."""

    def __init__(self, key: OpenSSLKey, tmp: Path) -> None:
        self._key, self._tmp = key, tmp
        self.algorithm = Algorithm.SM2_SM3
        self.kid = load_public_key_der(key.pub_der).key_id()

    def sign(self, data: bytes) -> bytes:
        return _openssl_sign(self._key.key_pem, data, self._tmp)


def test_code_signed_by_openssl_verifies_with_healthcode(
    ossl_key: OpenSSLKey, tmp_path: Path
) -> None:
    signer = _OpenSSLSigner(ossl_key, tmp_path)
    text = sign_code(_claims(7), signer)
    pub = load_public_key_pem(ossl_key.pub_pem.read_text())
    code = healthcode.verify(text, _keyring(pub, signer.kid), now=_T0 + dt.timedelta(hours=1))
    assert (code.province, code.serial, code.kid) == ("31", 7, signer.kid)

    unverified = decode_unverified(text)
    assert unverified.alg_id == Algorithm.SM2_SM3.cose_id
    assert pub.verify(unverified.signature, unverified.signed_bytes)
    assert not pub.verify(_flip(unverified.signature, 42), unverified.signed_bytes)


def test_code_signed_by_healthcode_verifies_with_openssl(
    ossl_key: OpenSSLKey, tmp_path: Path
) -> None:
    ours = signing_key_from_private_bytes(Algorithm.SM2_SM3, ossl_key.secret)
    text = sign_code(_claims(8), SoftwareSigner(ours))
    unverified = decode_unverified(text)
    assert unverified.kid == load_public_key_der(ossl_key.pub_der).key_id()
    signed, signature = unverified.signed_bytes, unverified.signature
    assert _openssl_verify(ossl_key.pub_pem, signed, signature, tmp_path)
    assert not _openssl_verify(ossl_key.pub_pem, _flip(signed, 100), signature, tmp_path)
