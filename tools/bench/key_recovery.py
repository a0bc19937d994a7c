"""The road not taken for dynamic presentations: recovering the device key from its signature.

``docs/code-format.md`` §16.6: a presentation would fit a version-11 QR at ECC M
if the credential's ``cnf`` named only a key thumbprint and the terminal
recovered the phone's P-256 key from the ECDSA signature (SEC 1 §4.1.6). This
measures what that recovery costs here, in pure Python over ``cryptography``
(an ECDH scalar multiplication for ``s/r * R``, a fixed-base one for
``-z/r * G``, then field arithmetic for the square roots and the point
addition), as a ratio to one ES256 verification measured interleaved in the
same run.

``python -m tools.bench key-recovery [--rounds N] [--seconds S]``
"""

from __future__ import annotations

import hashlib
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._measure import interleaved

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_CURVE = ec.SECP256R1()


def _sqrt(value: int) -> int:
    root = pow(value, (_P + 1) // 4, _P)
    if root * root % _P != value:
        raise ValueError("not a square")
    return root


def _y(x: int) -> int:
    return _sqrt((x * x * x - 3 * x + _B) % _P)


def recover(digest: int, r: int, s: int) -> list[tuple[int, int]]:
    """The two candidate public keys for an ECDSA (r, s) over ``digest`` with R.x = r (r + n ignored)."""
    big_r = ec.EllipticCurvePublicNumbers(r, _y(r), _CURVE).public_key()
    r_inv = pow(r, -1, _N)
    shared = ec.derive_private_key(s * r_inv % _N, _CURVE).exchange(ec.ECDH(), big_r)
    x_a = int.from_bytes(shared, "big")  # x of (s/r)·R; its y is either root
    b = ec.derive_private_key(-digest * r_inv % _N, _CURVE).public_key().public_numbers()
    candidates = []
    for y_a in (_y(x_a), _P - _y(x_a)):
        slope = (b.y - y_a) * pow(b.x - x_a, -1, _P) % _P
        x = (slope * slope - x_a - b.x) % _P
        candidates.append((x, (slope * (x_a - x) - y_a) % _P))
    return candidates


def run(*, rounds: int, seconds: float, out=sys.stdout) -> None:
    key = ec.generate_private_key(_CURVE)
    public = key.public_key()
    message = b"EHC-DYN-v1\x00" + bytes(8) + hashlib.sha256(b"credential").digest()
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(signature)
    digest = int.from_bytes(hashlib.sha256(message).digest(), "big")
    numbers = public.public_numbers()
    assert (numbers.x, numbers.y) in recover(digest, r, s), "recovery is wrong"
    series = interleaved({
        "ES256 verify (cryptography)": (lambda _: public.verify(signature, message, ec.ECDSA(hashes.SHA256())), [0]),
        "P-256 key recovery (Python over cryptography)": (lambda _: recover(digest, r, s), [0]),
    }, rounds=rounds, seconds=seconds)
    base = series["ES256 verify (cryptography)"]
    print("| contender | median µs | ratio of rates to ES256 verify (median, min-max) |", file=out)
    print("|---|---|---|", file=out)
    for name, one in series.items():
        med, lo, hi = one.ratio_to(base)
        print(f"| {name} | {1e6 / one.median:.0f} | {med:.3f} ({lo:.3f}-{hi:.3f}) |", file=out)
