"""healthcode: the pure core of the electronic health code.

Bytes in, verified objects out; time is a parameter; no I/O.

* where a code is signed: :func:`sign_code` (``signing.py``, format in ``codec.py``)
* where a code is verified: :func:`verify` / :func:`check` (``verify.py``)
* trusted keys and their windows: :class:`Keyring` (``keyring.py``)
* errors and reason codes: ``errors.py``
* dynamic presentations (a credential bound to a phone, a QR that changes every
  30 s): :mod:`healthcode.presentation`
"""

from .algorithms import (
    Algorithm,
    SigningKey,
    VerificationKey,
    generate_signing_key,
    load_public_key_der,
    load_public_key_pem,
    signing_key_from_private_bytes,
)
from .codec import PREFIX, Signer, UnverifiedCode, decode_unverified
from .errors import (
    AlgorithmMismatch,
    BadDeviceSignature,
    BadSignature,
    Expired,
    FuturePresentation,
    HealthCodeError,
    InvalidClaims,
    InvalidKey,
    KeyCompromised,
    KeyNotValidAtIssuance,
    MalformedCode,
    NoHolderKey,
    NotYetValid,
    PresentationRequired,
    Reason,
    Replayed,
    Revoked,
    StalePresentation,
    TrustDataStale,
    UnknownKey,
    UnsupportedAlgorithm,
    UnsupportedVersion,
    VerificationError,
)
from .keyring import CompromisePolicy, Keyring, KeyStatus, TrustedKey
from .model import (
    PROVINCES,
    CodeClaims,
    MainIndexId,
    ProvinceCode,
    VerifiedCode,
    main_index_id_from_bytes,
    parse_main_index_id,
    parse_province,
)
from .signing import SoftwareSigner, sign_code
from .verify import RevocationChecker, TrustFreshness, VerificationResult, check, verify

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "SigningKey",
    "VerificationKey",
    "generate_signing_key",
    "load_public_key_der",
    "load_public_key_pem",
    "signing_key_from_private_bytes",
    "PREFIX",
    "Signer",
    "UnverifiedCode",
    "decode_unverified",
    "AlgorithmMismatch",
    "BadDeviceSignature",
    "BadSignature",
    "Expired",
    "FuturePresentation",
    "HealthCodeError",
    "InvalidClaims",
    "InvalidKey",
    "KeyCompromised",
    "KeyNotValidAtIssuance",
    "MalformedCode",
    "NoHolderKey",
    "NotYetValid",
    "PresentationRequired",
    "Reason",
    "Replayed",
    "Revoked",
    "StalePresentation",
    "TrustDataStale",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "UnsupportedVersion",
    "VerificationError",
    "CompromisePolicy",
    "Keyring",
    "KeyStatus",
    "TrustedKey",
    "PROVINCES",
    "CodeClaims",
    "MainIndexId",
    "ProvinceCode",
    "VerifiedCode",
    "main_index_id_from_bytes",
    "parse_main_index_id",
    "parse_province",
    "SoftwareSigner",
    "sign_code",
    "RevocationChecker",
    "TrustFreshness",
    "VerificationResult",
    "check",
    "verify",
]
