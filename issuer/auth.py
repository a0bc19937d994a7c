"""Who is calling, and may they call now: API keys, mTLS client certificates, rate limits.

* :class:`Authenticator` turns a call's metadata and TLS auth context into a
  caller name, or ``None``:

  - ``authorization: Bearer <key>``: the key's SHA-256 is compared in constant
    time with *every* configured hash (no early exit), and the caller is the
    name configured with the matching hash. A call that presents a key is
    judged by the key alone: a wrong key is refused even on an mTLS
    connection.
  - otherwise, when client certificates are accepted (the server has a client
    CA, so gRPC already verified the chain in the handshake), the caller is the
    certificate's subject CN.

* :class:`RateLimiter` keeps one token bucket per caller (``rate`` tokens a
  second, ``burst`` at most), with per-caller overrides.
* :class:`Admission` applies both to every RPC of every service except
  the exempt ones (the standard health service): UNAUTHENTICATED or
  RESOURCE_EXHAUSTED before the servicer runs, and the caller's name in
  :func:`current_caller` while it runs.

The API keys file is TOML, hashes only (``hash_api_key`` makes one)::

    [[callers]]
    name = "mobile-app"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    rate = 200.0   # optional: tokens per second for this caller
    burst = 400    # optional
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import pathlib
import re
import secrets
import time
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import grpc

__all__ = [
    "ApiKey",
    "RateLimit",
    "Authenticator",
    "RateLimiter",
    "Admission",
    "current_caller",
    "peek_caller",
    "clear_caller",
    "service_of",
    "hash_api_key",
    "generate_api_key",
    "load_api_keys",
    "parse_api_keys",
    "wrap_handler",
    "HEALTH_SERVICE",
]

HEALTH_SERVICE = "grpc.health.v1.Health"
_MAX_KEY_LENGTH = 256
_CALLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("issuer_caller", default=None)


def current_caller() -> str:
    """The authenticated caller of the RPC being served. Raises ``LookupError`` outside one."""
    caller = _CALLER.get()
    if caller is None:
        raise LookupError("no authenticated caller in this context")
    return caller


def clear_caller() -> None:
    """Forget any caller in this context (the start of an RPC's task)."""
    _CALLER.set(None)


def peek_caller() -> str | None:
    """The caller if one was authenticated in this context, else ``None`` (for logs)."""
    return _CALLER.get()


def hash_api_key(key: str) -> str:
    """The hex SHA-256 of an API key, as the keys file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> str:
    """A new random API key (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket's shape: ``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError("rate limit needs rate > 0 and burst >= 1")


@dataclass(frozen=True)
class ApiKey:
    """One configured caller: its name, its key's SHA-256, an optional own rate limit."""

    caller: str
    sha256: bytes
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if not _CALLER_NAME.match(self.caller):
            raise ValueError("caller name must be 1-64 characters of A-Z a-z 0-9 . _ @ : -")
        if len(self.sha256) != 32:
            raise ValueError("key hash must be 32 bytes (SHA-256)")

    def __repr__(self) -> str:
        return f"ApiKey(caller={self.caller!r})"


def parse_api_keys(data: Mapping[str, Any]) -> list[ApiKey]:
    """Callers from a parsed keys file (see the module docstring). Raises ``ValueError``."""
    entries = data.get("callers", [])
    if not isinstance(entries, list):
        raise ValueError("keys file: [[callers]] must be an array of tables")
    keys: list[ApiKey] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"keys file: callers[{i}] must be a table")
        unknown = set(entry) - {"name", "key_sha256", "rate", "burst"}
        if unknown:
            raise ValueError(f"keys file: callers[{i}] has unknown fields {sorted(unknown)}")
        name, digest = entry.get("name"), entry.get("key_sha256")
        if not isinstance(name, str) or not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise ValueError(f"keys file: callers[{i}] needs a name and a 64-hex-digit key_sha256")
        limit = None
        if "rate" in entry or "burst" in entry:
            try:
                rate = float(entry["rate"])
                limit = RateLimit(rate, float(entry.get("burst", max(1.0, rate))))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"keys file: callers[{i}] needs rate > 0 (and burst >= 1)") from None
        keys.append(ApiKey(name, bytes.fromhex(digest), limit))
    names = [k.caller for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("keys file: caller names must be unique")
    hashes = [k.sha256 for k in keys]
    if len(set(hashes)) != len(hashes):
        raise ValueError("keys file: two callers share one key")
    return keys


def load_api_keys(path: pathlib.Path) -> list[ApiKey]:
    """Read and parse an API keys file."""
    with open(path, "rb") as f:
        return parse_api_keys(tomllib.load(f))


class Authenticator:
    """Maps a call's credentials to a caller name (see the module docstring)."""

    def __init__(self, api_keys: Iterable[ApiKey], *, accept_client_certs: bool) -> None:
        self._keys = tuple(api_keys)
        self._accept_client_certs = accept_client_certs

    def authenticate(
        self,
        metadata: Iterable[tuple[str, Any]] | None,
        auth_context: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    ) -> str | None:
        """The caller's name, or ``None``. ``auth_context`` may be a callable, called only when needed."""
        authorization = None
        for key, value in metadata or ():
            if key == "authorization":
                if authorization is not None:
                    return None  # two credentials: refuse rather than guess
                authorization = value
        if authorization is not None:
            return self._by_key(authorization)
        if self._accept_client_certs:
            if callable(auth_context):
                auth_context = auth_context()
            names = auth_context.get("x509_common_name") or ()
            for name in names:
                cn = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                if _CALLER_NAME.match(cn):
                    return cn
        return None

    def _by_key(self, authorization: Any) -> str | None:
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        scheme, _, token = str(authorization).partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > _MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for key in self._keys:  # every comparison runs: time does not depend on which matched
            if hmac.compare_digest(digest, key.sha256):
                found = key.caller
        return found


class RateLimiter:
    """Per-caller token buckets. ``clock`` is a monotonic seconds counter (injectable for tests)."""

    def __init__(
        self,
        default: RateLimit | None,
        per_caller: Mapping[str, RateLimit] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default
        self._per_caller = dict(per_caller or {})
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # caller -> [tokens, last refill time]

    def try_acquire(self, caller: str) -> bool:
        """Take one token from ``caller``'s bucket; ``False`` when it is empty."""
        limit = self._per_caller.get(caller, self._default)
        if limit is None:
            return True
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = [limit.burst, now]
        tokens = min(limit.burst, bucket[0] + (now - bucket[1]) * limit.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True


# --------------------------------------------------------------------------- admission


def service_of(method: str) -> str:
    """``"/pkg.Service/Method"`` -> ``"pkg.Service"``."""
    return method.lstrip("/").partition("/")[0]


class Admission:
    """Authenticates and rate-limits every RPC outside ``exempt_services``.

    Not a gRPC interceptor: the server wraps each method handler once, when
    services register (``issuer.app``), and the wrapper calls :meth:`check`
    before the servicer runs. A ``grpc.aio`` interceptor runs a coroutine
    pipeline on every call before the handler is even found; measured in the
    issuer, that alone cost more CPU per call than authenticating.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        *,
        exempt_services: Iterable[str] = (HEALTH_SERVICE,),
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._exempt = frozenset(exempt_services)

    def check(self, context: grpc.aio.ServicerContext) -> tuple[grpc.StatusCode, str] | None:
        """Authenticate and rate-limit the call; ``None`` when admitted, else the status to abort with.

        Sets the caller (:func:`current_caller`) when it is known, also for a
        rate-limit refusal (which is logged against the caller).
        """
        caller = self._authenticator.authenticate(context.invocation_metadata(), context.auth_context)
        if caller is None:
            return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials"
        _CALLER.set(caller)
        if not self._limiter.try_acquire(caller):
            return grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded; retry later"
        return None

    def exempt(self, method: str) -> bool:
        """Whether ``method`` (``/pkg.Service/Method``) is outside authentication."""
        return service_of(method) in self._exempt
