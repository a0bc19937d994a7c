"""Deterministic test vectors for the code format (in the spirit of dgc-testdata).

The generator is split by vector family: :mod:`.testkeys` (keys, subjects,
times), :mod:`.cose` (JSON of CBOR, COSE by hand), :mod:`.vector` (a vector
and its makers), then :mod:`.valid`, :mod:`.invalid_form`, :mod:`.invalid_cbor`
and :mod:`.invalid_trust`; this module assembles and writes them.

Usage::

    python -m tools.gen_vectors [--out tests/vectors]   # (re)write the vector files
    python -m tools.gen_vectors --check                 # compare with the committed files

Contract
========

* :func:`generate` returns ``{file name: exact file bytes}``. It is a pure
  function of this module and :mod:`healthcode`: no clock, no randomness, no
  I/O. Running it twice gives identical bytes, so the committed vectors can be
  byte-compared with a fresh generation (``--check`` and
  ``tests/unit/test_vectors.py`` do exactly that).
* ``--check`` writes nothing; it exits 1 and lists every file that differs,
  is missing, or is extra (a ``*.json`` in the directory that the generator
  does not produce). Writing also removes such extra ``*.json`` files: the
  vector directory belongs to this generator.

Keys (TEST ONLY)
================

Every key is derived from a public, labelled seed::

    secret = SHA-256(b"healthcode TEST VECTOR key, not for production: " + label)

and, only if that is not a valid private scalar for the curve (P-256: 1..n-1;
SM2: what ``gmalglib`` accepts), ``SHA-256(prefix + label + b"#" + str(i))``
for i = 1, 2, ... until it is. Anyone can re-derive them, which is the point:
**these keys are public and must never be trusted outside tests.** Private
keys are never written into the vectors; each vector names the seed label of
its trusted key (``key_seed_label``) and carries a ``test_only`` notice.

Signatures are reproducible: ES256 uses RFC 6979 nonces, Ed25519 is
deterministic by design, and SM2 draws its nonce from a per-message HMAC-SHA256
stream keyed by the secret (``HMAC(secret, b"SM2 nonce" + SHA-256(message) +
counter)``), so the order in which vectors are generated does not matter.

Vector file format
==================

One JSON object per file (``sort_keys``, 2-space indent, UTF-8, trailing
newline)::

    description         what the vector tests, in one or two sentences
    code                the code's text, exactly as a scanner would read it
    public_key_pem      the TRUSTED key (SubjectPublicKeyInfo, RFC 7468 PEM)
    kid                 the trusted key's kid, hex
    alg                 the trusted key's algorithm: "ES256", "EdDSA", "SM2-SM3"
    province            the trusted key's province (GB/T 2260, two digits)
    key                 the trusted key's windows: use_from, use_until,
                        verify_until (ISO 8601 UTC, "Z"), status
                        ("active"/"retired"/"compromised"), compromised_since
                        (ISO or null), compromise_policy
                        ("reject_from_compromise"/"reject_all")
    key_seed_label      seed label of the trusted key (see "Keys" above)
    verify_at           the verification time (ISO 8601 UTC, "Z")
    clock_skew_seconds  tolerated issuer clock lead (0 = none)
    revoked_serials     serials revoked for (province, kid); usually []
    expected            "valid" or a healthcode.Reason value ("malformed", ...)
    claims              for valid vectors, the verified claims; else null
    test_only           notice that the keys are public test keys

``claims`` is ``{"iss", "sub", "iat", "exp", "serial", "cnf", "status",
"extra"}``: ``iat``/``exp`` in epoch seconds, ``serial`` as an integer (the
largest is 2**64-1; read it with an arbitrary-precision JSON parser),
``status`` an integer or null, ``cnf`` null or a CBOR value, ``extra`` the
claims outside the reserved keys as a CBOR map. CBOR values use this JSON
form: integers, text, booleans, null and arrays as themselves; a byte string
as ``{"hex": "..."}``; a map as ``{"map": [[key, value], ...]}`` with the
pairs in deterministic (encoded-key) order. No other JSON objects occur, so
the form is unambiguous.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tools.gen_vectors.testkeys import DEFAULT_OUT, KEY_SEED_PREFIX, KeyWindow, TEST_ONLY_NOTICE, TestKey
from tools.gen_vectors.cose import cbor_to_json, claims_to_json
from tools.gen_vectors.vector import Vector
from tools.gen_vectors.valid import _valid_vectors
from tools.gen_vectors.invalid_form import _invalid_signature_vectors, _invalid_size_vectors, _invalid_text_vectors
from tools.gen_vectors.invalid_cbor import _invalid_cbor_vectors
from tools.gen_vectors.invalid_trust import _invalid_algorithm_vectors, _invalid_trust_vectors
# Re-exported for tools/gen_presentation_vectors.py (the same keys, times and COSE helpers).
from tools.gen_vectors.cose import bstr as bstr, claims_map as claims_map, cose_sign1 as cose_sign1
from tools.gen_vectors.cose import protected_item as protected_item, standard_cose as standard_cose
from tools.gen_vectors.testkeys import EDDSA_KEY as EDDSA_KEY, ES256_KEY as ES256_KEY, SM2_KEY as SM2_KEY
from tools.gen_vectors.testkeys import ISSUED as ISSUED, SECOND as SECOND, VERIFY_AT as VERIFY_AT
from tools.gen_vectors.testkeys import UNTRUSTED_KEY as UNTRUSTED_KEY, _iso as _iso
from tools.gen_vectors.vector import base_claims as base_claims

__all__ = [
    "KEY_SEED_PREFIX",
    "TEST_ONLY_NOTICE",
    "TestKey",
    "KeyWindow",
    "Vector",
    "build_vectors",
    "generate",
    "render",
    "claims_to_json",
    "cbor_to_json",
    "main",
]


def build_vectors() -> list[Vector]:
    """Every vector, in a stable order; names are unique."""
    vectors = [
        *_valid_vectors(),
        *_invalid_signature_vectors(),
        *_invalid_text_vectors(),
        *_invalid_size_vectors(),
        *_invalid_cbor_vectors(),
        *_invalid_algorithm_vectors(),
        *_invalid_trust_vectors(),
    ]
    names = [v.name for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector names"
    return vectors


def render(document: dict[str, Any]) -> bytes:
    """The exact bytes of a vector file."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def generate() -> dict[str, bytes]:
    """``{file name: file bytes}`` for every vector; deterministic (see the module doc)."""
    return {f"{v.name}.json": render(v.to_json()) for v in build_vectors()}


# -------------------------------------------------------------------------- CLI


def diff(expected: dict[str, bytes], directory: Path) -> list[str]:
    """Human-readable differences between ``expected`` and the ``*.json`` files in ``directory``."""
    present = {p.name: p for p in directory.glob("*.json")} if directory.is_dir() else {}
    problems = [f"missing: {name}" for name in sorted(set(expected) - set(present))]
    problems += [f"extra:   {name}" for name in sorted(set(present) - set(expected))]
    problems += [
        f"differs: {name}"
        for name in sorted(set(expected) & set(present))
        if present[name].read_bytes() != expected[name]
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_vectors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="vector directory (default: tests/vectors)")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out; write nothing")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = diff(files, args.out)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"{len(problems)} vector file(s) out of date; run: python -m tools.gen_vectors", file=sys.stderr)
            return 1
        print(f"{len(files)} vector files up to date in {args.out}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(set(p.name for p in args.out.glob("*.json")) - set(files)):
        (args.out / stale).unlink()
        print(f"removed stale {stale}")
    written = 0
    for name, content in sorted(files.items()):
        path = args.out / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written += 1
    print(f"{len(files)} vector files in {args.out} ({written} written)")
    return 0
