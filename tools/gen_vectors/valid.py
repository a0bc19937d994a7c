"""The valid vectors: every algorithm, every claim shape a verifier must accept."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterator

from healthcode import KeyStatus
from tools.gen_vectors.testkeys import (
    DEFAULT_WINDOW,
    EDDSA_KEY,
    ES256_KEY,
    EXPIRES,
    ISSUED,
    KeyWindow,
    SECOND,
    SM2_KEY,
    _utc,
)
from tools.gen_vectors.vector import EXTRA_CLAIMS, Vector, _valid, base_claims


def _valid_vectors() -> Iterator[Vector]:
    yield _valid("valid-es256-basic", "A plain ES256 code verified a day after issuance.", base_claims())
    yield _valid("valid-eddsa-basic", "A plain EdDSA (Ed25519) code.", base_claims(), EDDSA_KEY)
    yield _valid("valid-sm2-sm3-basic", "A plain SM2-SM3 code (COSE alg -65537, private use).", base_claims(), SM2_KEY)
    yield _valid("valid-es256-status", "A code with the optional status claim (-65537).", base_claims(status=2))
    yield _valid(
        "valid-es256-extra-claims",
        "Unknown extra claims (integer and text keys, nested values) are preserved verbatim.",
        base_claims(extra=EXTRA_CLAIMS),
    )
    for key, slug in ((EDDSA_KEY, "eddsa"), (SM2_KEY, "sm2-sm3"), (ES256_KEY, "es256")):
        yield _valid(
            f"valid-{slug}-all-optional-claims",
            f"An {key.algorithm.value} code with status and extra claims (cnf belongs in presentations).",
            base_claims(status=1, extra=EXTRA_CLAIMS),
            key,
        )
    yield _valid(
        "valid-es256-retired-key",
        "A retired key still verifies a code it signed inside its use window.",
        base_claims(),
        window=KeyWindow(
            use_from=_utc("2026-05-01T00:00:00Z"),
            use_until=_utc("2026-11-01T12:00:00Z"),
            verify_until=_utc("2026-11-08T12:00:00Z"),
            status=KeyStatus.RETIRED,
        ),
    )
    yield _valid("valid-es256-serial-zero", "Serial 0, encoded as the one-byte cti h'00'.", base_claims(serial=0))
    yield _valid(
        "valid-es256-serial-max",
        "The largest serial, 2**64-1 (8-byte cti); needs an arbitrary-precision JSON reader.",
        base_claims(serial=2**64 - 1),
    )
    yield _valid(
        "valid-es256-within-clock-skew",
        "Verified 60 s before its iat with a tolerated clock skew of 300 s.",
        base_claims(),
        verify_at=ISSUED - 60 * SECOND,
        clock_skew_seconds=300,
    )
    yield _valid("valid-es256-at-issuance", "Verified at exactly its iat.", base_claims(), verify_at=ISSUED)
    yield _valid(
        "valid-es256-last-second",
        "Verified one second before exp (exp itself is already expired).",
        base_claims(),
        verify_at=EXPIRES - SECOND,
    )
    yield _valid(
        "valid-es256-iat-at-use-from",
        "iat equals the key's use_from: the use window is inclusive.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, use_from=ISSUED),
    )
    yield _valid(
        "valid-es256-iat-at-use-until",
        "iat equals the key's use_until: the use window is inclusive.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, use_until=ISSUED, verify_until=_utc("2026-11-08T08:00:00Z")),
    )
    yield _valid(
        "valid-es256-compromised-after-issuance",
        "The key was compromised two hours after the code was issued; the default policy "
        "(reject_from_compromise) keeps codes issued before the compromise.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED + 2 * 3600 * SECOND),
    )
    yield _valid(
        "valid-es256-revocation-other-serials",
        "The revocation list holds other serials of the same key, not this one.",
        base_claims(),
        revoked_serials=(4241, 4243, 2**64 - 1),
    )
    yield _valid(
        "valid-es256-long-kid",
        "A 32-byte kid (the maximum) chosen by the issuer instead of the 8-byte default.",
        base_claims(),
        signer_kid=hashlib.sha256(b"healthcode TEST VECTOR kid: long").digest(),
    )
    yield _valid(
        "valid-es256-nesting-at-cap",
        "Claims nested exactly 6 levels deep (claims map + 5 arrays), the cap.",
        base_claims(extra={-1: [[[[[0]]]]]}),
    )
