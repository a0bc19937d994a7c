"""Who may call the national service: client-certificate CNs, services by kind, per-caller rate limits.

Every connection is mTLS (gRPC verified the chain to the configured client CA
in the handshake); the caller is the certificate's subject CN:

* ``province:<two-digit code>``: a provincial issuer, ``NationalIndex`` only;
  it claims, transfers and reads events for its own province only (the
  servicer takes the province from :func:`current_principal`, never from the request);
* ``hospital:<province>:<organisation>``: a hospital, ``HospitalResolution`` only
  (organisation: 1-52 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit);
* anything else: PERMISSION_DENIED. Reflection is open to provinces and
  hospitals; the standard health service is exempt.

Each caller has a token bucket (:class:`issuer.auth.RateLimiter`): hospitals
the configured default or their own limit, provinces theirs;
RESOURCE_EXHAUSTED before the servicer runs (a refused call spends nothing).

This object fits :class:`issuer.handlers.ObservedHandlers` (``exempt`` and
``checker``), so the issuer's per-RPC logs and metrics wrap the national RPCs too.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import grpc

from healthcode import PROVINCES
from issuer import auth

__all__ = [
    "Principal",
    "principal_of",
    "current_principal",
    "NationalAdmission",
    "NATIONAL_INDEX",
    "HOSPITAL_RESOLUTION",
    "PROVINCE_CN",
    "HOSPITAL_CN",
]

NATIONAL_INDEX = "healthcode.national.v1.NationalIndex"
HOSPITAL_RESOLUTION = "healthcode.national.v1.HospitalResolution"
_REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")
PROVINCE_CN = re.compile(r"province:([0-9]{2})")
HOSPITAL_CN = re.compile(r"hospital:([0-9]{2}):([A-Za-z0-9][A-Za-z0-9._-]{0,51})")

_PRINCIPAL: contextvars.ContextVar["Principal | None"] = contextvars.ContextVar("national_principal", default=None)


@dataclass(frozen=True)
class Principal:
    """An admitted caller: ``kind`` is ``"province"`` or ``"hospital"``; ``organisation`` is a hospital's."""

    kind: str
    province: str
    organisation: str
    name: str


def principal_of(common_name: str) -> Principal | None:
    """The principal a certificate CN names, or None (unknown form, or a province code not in GB/T 2260)."""
    m = PROVINCE_CN.fullmatch(common_name)
    if m:
        return Principal("province", m[1], "", common_name) if m[1] in PROVINCES else None
    m = HOSPITAL_CN.fullmatch(common_name)
    if m:
        return Principal("hospital", m[1], m[2], common_name) if m[1] in PROVINCES else None
    return None


def current_principal() -> Principal:
    """The admitted caller of the RPC being served. Raises ``LookupError`` outside one."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise LookupError("no admitted caller in this context")
    return principal


_SERVICE_KINDS: Mapping[str, frozenset[str]] = {
    NATIONAL_INDEX: frozenset({"province"}),
    HOSPITAL_RESOLUTION: frozenset({"hospital"}),
    **{name: frozenset({"province", "hospital"}) for name in _REFLECTION},
}
_WHO = {NATIONAL_INDEX: "province:<code> certificates", HOSPITAL_RESOLUTION: "hospital:<province>:<organisation> "
        "certificates"}


class NationalAdmission:
    """Admission for the national service (see the module docstring)."""

    def __init__(self, limiter: auth.RateLimiter, *, exempt_services: Iterable[str] = (auth.HEALTH_SERVICE,)) -> None:
        self._limiter = limiter
        self._exempt = frozenset(exempt_services)
        self._principals: dict[str, Principal | None] = {}

    def exempt(self, method: str) -> bool:
        return auth.service_of(method) in self._exempt

    def _principal(self, context: Any) -> tuple[str | None, Principal | None]:
        names = context.auth_context().get("x509_common_name") or ()
        for name in names:
            cn = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            try:
                return cn, self._principals[cn]
            except KeyError:
                principal = principal_of(cn)
                if len(self._principals) < 100_000:
                    self._principals[cn] = principal
                return cn, principal
        return None, None

    def checker(self, method: str) -> Callable[[Any], tuple[grpc.StatusCode, str] | None]:
        service = auth.service_of(method)
        kinds = _SERVICE_KINDS.get(service, frozenset())
        try_acquire = self._limiter.try_acquire

        def check(context: Any) -> tuple[grpc.StatusCode, str] | None:
            _PRINCIPAL.set(None)
            cn, principal = self._principal(context)
            if cn is None:
                return grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required"
            if principal is None:
                return grpc.StatusCode.PERMISSION_DENIED, (
                    "this certificate names no national caller (a CN must be province:<code> or "
                    "hospital:<province>:<organisation>)")
            auth.set_caller(principal.name)  # the per-RPC log line names the caller (never request contents)
            if principal.kind not in kinds:
                return grpc.StatusCode.PERMISSION_DENIED, (
                    f"a {principal.kind} certificate may not call {service}; "
                    f"it is open to {_WHO.get(service, 'no one')} only")
            if not try_acquire(principal.name):
                return grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded; retry later"
            _PRINCIPAL.set(principal)
            return None

        return check
