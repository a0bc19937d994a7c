"""Invalid vectors: wrong algorithms, and keys that are not trusted at the time (windows, status, revocation)."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from healthcode import CompromisePolicy, KeyStatus
from tools.gen_vectors.testkeys import (
    DEFAULT_WINDOW,
    EDDSA_KEY,
    ES256_KEY,
    EXPIRES,
    ISSUED,
    SECOND,
    UNTRUSTED_KEY,
    VERIFY_AT,
)
from tools.gen_vectors.cose import standard_cose
from tools.gen_vectors.vector import Vector, _defect, base_claims, holder_cnf


def _invalid_algorithm_vectors() -> Iterator[Vector]:
    claims = base_claims()
    yield _defect(
        "invalid-alg-header-eddsa-key-es256",
        "The header says EdDSA (-8); the trusted key with this kid is ES256 (and signed the code).",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=-8),
    )
    yield _defect(
        "invalid-alg-header-es256-key-eddsa",
        "The header says ES256 (-7); the trusted key with this kid is EdDSA (and signed the code).",
        "algorithm_mismatch",
        standard_cose(claims, EDDSA_KEY, alg_id=-7),
        key=EDDSA_KEY,
    )
    yield _defect(
        "invalid-alg-header-sm2-key-es256",
        "The header says SM2-SM3 (-65537); the trusted key with this kid is ES256.",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=-65537),
    )
    yield _defect(
        "invalid-alg-header-zero",
        "A 'none'-like alg 0 in the header; the trusted key is ES256.",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=0),
    )


def _invalid_trust_vectors() -> Iterator[Vector]:
    claims = base_claims()
    good = standard_cose(claims, ES256_KEY)
    yield _defect(
        "invalid-province-mismatch",
        "A code with iss 44 (Guangdong) signed by the trusted key of province 33: no key of "
        "province 44 has this kid.",
        "unknown_key",
        standard_cose(base_claims(province="44"), ES256_KEY),
    )
    yield _defect(
        "invalid-unknown-kid",
        "A code signed by a key that is not in the keyring (different kid).",
        "unknown_key",
        standard_cose(claims, UNTRUSTED_KEY),
    )
    yield _defect(
        "invalid-untrusted-key-same-kid",
        "A code signed by an untrusted key but carrying the trusted key's kid.",
        "bad_signature",
        standard_cose(claims, UNTRUSTED_KEY, kid=ES256_KEY.kid),
    )
    yield _defect("invalid-expired", "Verified at exactly exp.", "expired", good, verify_at=EXPIRES)
    yield _defect(
        "invalid-credential-without-presentation",
        "A well-signed credential bound to a device key (cnf {1: COSE_Key}) shown on its own, as a screenshot "
        "of the credential would be: refused, it is valid only inside a dynamic presentation (EHCD:).",
        "presentation_required",
        standard_cose(base_claims(holder_key=holder_cnf()), ES256_KEY),
    )
    yield _defect(
        "invalid-not-yet-valid",
        "Verified 60 s before iat with no clock skew tolerated.",
        "not_yet_valid",
        good,
        verify_at=ISSUED - 60 * SECOND,
    )
    yield _defect(
        "invalid-not-yet-valid-beyond-skew",
        "Verified 60 s before iat with only 30 s of clock skew tolerated.",
        "not_yet_valid",
        good,
        verify_at=ISSUED - 60 * SECOND,
        clock_skew_seconds=30,
    )
    yield _defect(
        "invalid-key-compromised",
        "The key was compromised two hours before the code was issued.",
        "key_compromised",
        good,
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED - 2 * 3600 * SECOND),
    )
    yield _defect(
        "invalid-key-compromised-at-issuance",
        "compromised_since equals iat: codes issued at or after the compromise are refused.",
        "key_compromised",
        good,
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED),
    )
    yield _defect(
        "invalid-key-compromised-reject-all",
        "Compromised after issuance, but the policy reject_all refuses every code of the key.",
        "key_compromised",
        good,
        window=replace(
            DEFAULT_WINDOW,
            status=KeyStatus.COMPROMISED,
            compromised_since=ISSUED + 2 * 3600 * SECOND,
            compromise_policy=CompromisePolicy.REJECT_ALL,
        ),
    )
    yield _defect(
        "invalid-key-window-iat-before-use-from",
        "iat is one second before the key's use_from.",
        "key_not_valid_at_issuance",
        good,
        window=replace(DEFAULT_WINDOW, use_from=ISSUED + SECOND),
    )
    yield _defect(
        "invalid-key-window-iat-after-use-until",
        "iat is one second after the key's use_until (verify_until still ahead).",
        "key_not_valid_at_issuance",
        good,
        window=replace(DEFAULT_WINDOW, use_until=ISSUED - SECOND),
    )
    yield _defect(
        "invalid-key-verify-until-passed",
        "The code has not expired, but its key's verify_until has passed.",
        "expired",
        good,
        window=replace(DEFAULT_WINDOW, use_until=ISSUED + 3600 * SECOND, verify_until=VERIFY_AT - SECOND),
    )
    yield _defect(
        "invalid-revoked-serial",
        "Serial 4242 of this key is on the revocation list.",
        "revoked",
        good,
        revoked_serials=(4242,),
    )
