"""Who is calling, what may they call, and may they call now: API keys, mTLS client
certificates, roles, rate limits.

* :class:`Authenticator` turns a call's metadata and TLS auth context into a
  :class:`Caller` (a name and a :class:`Role`, or no role), or ``None``:

  - ``authorization: Bearer <key>``: the key's SHA-256 is compared in constant
    time with *every* configured hash (no early exit), and the caller is the
    name configured with the matching hash, with that entry's role
    (:attr:`Role.ISSUANCE`, the default, or :attr:`Role.WALLET`). A call that
    presents a key is judged by the key alone: a wrong key is refused even on
    an mTLS connection.
  - otherwise, when client certificates are accepted (the server has a client
    CA, so gRPC already verified the chain in the handshake), the caller is the
    certificate's subject CN, and its role is named explicitly
    (:func:`certificate_role`): ``admin:<province>`` a province key admin,
    ``national:<name>`` the national operations centre, a CN listed in
    ``issuance_clients`` (the config's ``auth.issuance_clients``) an issuance
    client, a CN listed in ``wallet_clients`` (``auth.wallet_clients``) a
    wallet client; any other CN has no role and may call nothing.

* **Roles** (default deny, :data:`SERVICE_ROLES`, then :data:`METHOD_ROLES`): ``ResidentIndex``,
  ``HealthCodes`` and ``Wallets`` take the issuance role; the wallet role (a resident's phone
  wallet, a key that may sit in a public web page) reaches only :data:`WALLET_METHODS`:
  enrolment (FindResident, RegisterResident, CreateChallenge, IssueCredential; by main index ID
  a renewal only, with the bound device key: ``issuer/wallets_service.py``), the resident's live
  codes (ListLiveCodes; phone credentials only, never a printed code: :func:`current_role`), never
  the access log (ListAccesses names the resident by main index ID alone, which every QR code
  carries), issuing, renewing, revoking, rendering, merging or linking by itself; ``KeyAdmin`` takes the admin
  and national roles only (it then checks the province itself); ``NationalLink`` takes the
  national-index role only (``national-index:<name>``, the national index service's calls: releases
  and resolutions; never a key administrator's ``national:<name>``); server
  reflection takes any role; a service missing from the table takes nobody.
  The standard health service is exempt from all of it.
* :class:`RateLimiter` keeps one token bucket per caller (``rate`` tokens a
  second, ``burst`` at most), with per-caller overrides and per-role defaults
  (the wallet role's are stricter: ``auth.wallet_rate``, ``auth.wallet_burst``).
* :class:`Admission` applies all three to every RPC of every service except
  the exempt ones: UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED
  before the servicer runs (a refused call spends no token), and the caller's
  name in :func:`current_caller` while it runs.

The API keys file is TOML, hashes only (``hash_api_key`` makes one)::

    [[callers]]
    name = "mobile-app"
    key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    role = "issuance"   # optional: "issuance" (the default) or "wallet"
    rate = 200.0   # optional: tokens per second for this caller
    burst = 400    # optional

    [[callers]]
    name = "web-wallet"
    key_sha256 = "..."
    role = "wallet"     # enrolment and the resident's own reads only (WALLET_METHODS)

It is a secret (anyone who can change it can add a caller): :func:`load_api_keys`
refuses a file group or others can read or write (``chmod 600``).
"""

from __future__ import annotations

import contextvars
import enum
import hashlib
import hmac
import logging
import pathlib
import re
import secrets
import time
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import grpc

from healthcode import PROVINCES
from shellkit.files import read_secret

__all__ = [
    "Role",
    "Caller",
    "SERVICE_ROLES",
    "METHOD_ROLES",
    "WALLET_METHODS",
    "DEFAULT_WALLET_RATE_LIMIT",
    "certificate_role",
    "check_issuance_client_name",
    "check_client_names",
    "ApiKey",
    "RateLimit",
    "Authenticator",
    "RateLimiter",
    "Admission",
    "current_caller",
    "current_role",
    "peek_caller",
    "clear_caller",
    "set_caller",
    "service_of",
    "hash_api_key",
    "generate_api_key",
    "load_api_keys",
    "parse_api_keys",
    "HEALTH_SERVICE",
    "PROVINCE_ADMIN_CN",
    "NATIONAL_CN",
    "NATIONAL_INDEX_CN",
]

HEALTH_SERVICE = "grpc.health.v1.Health"
_MAX_KEY_LENGTH = 256
_CALLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Certificate CNs that name a key-administration role (``issuer/key_admin.py`` checks the province).
PROVINCE_ADMIN_CN = re.compile(r"admin:([0-9]{2})")
NATIONAL_CN = re.compile(r"national:[A-Za-z0-9][A-Za-z0-9._@-]{0,54}")
#: The national index service calling a province's NationalLink (``national/``): a role of its own, so that
#: neither a national key administrator's certificate can resolve patients or release residents, nor the
#: national index service's certificate can cut off a province's keys.
NATIONAL_INDEX_CN = re.compile(r"national-index:[A-Za-z0-9][A-Za-z0-9._@-]{0,48}")
#: A provincial issuer calling a national service (the trust publisher, ``publisher/``).
PROVINCE_CN = re.compile(r"province:([0-9]{2})")
_ROLE_PREFIXES = ("admin:", "national:", "national-index:", "province:")

log = logging.getLogger("issuer.auth")

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("issuer_caller", default=None)
_ROLE: contextvars.ContextVar["Role | None"] = contextvars.ContextVar("issuer_caller_role", default=None)


def current_caller() -> str:
    """The authenticated caller of the RPC being served. Raises ``LookupError`` outside one."""
    caller = _CALLER.get()
    if caller is None:
        raise LookupError("no authenticated caller in this context")
    return caller


def current_role() -> "Role | None":
    """The role :class:`Admission` admitted the RPC being served with (None outside one, or if it had none)."""
    return _ROLE.get()


def set_caller(name: str) -> None:
    """Name the caller of the RPC being served (for an admission check outside :class:`Admission`)."""
    _CALLER.set(name)


def clear_caller() -> None:
    """Forget any caller in this context (the start of an RPC's task)."""
    _CALLER.set(None)
    _ROLE.set(None)


def peek_caller() -> str | None:
    """The caller if one was authenticated in this context, else ``None`` (for logs)."""
    return _CALLER.get()


class Role(enum.Enum):
    """What a caller is for. Every caller has at most one; no role means no service."""

    ISSUANCE = "issuance"  # ResidentIndex, HealthCodes, Wallets: API keys, and certificates in auth.issuance_clients
    WALLET = "wallet"  # WALLET_METHODS only: API keys with role "wallet", and certificates in auth.wallet_clients
    PROVINCE_ADMIN = "admin"  # KeyAdmin on its own province: certificate CN admin:<province>
    NATIONAL = "national"  # KeyAdmin reads and compromise cut-off: certificate CN national:<name>
    NATIONAL_INDEX = "national-index"  # NationalLink only (the national index service): CN national-index:<name>
    PROVINCE = "province"  # a provincial issuer at a national service (publisher/): certificate CN province:<code>


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its name, its role (None: may call nothing), and whether an API key named it."""

    name: str
    role: Role | None
    by_api_key: bool = False


_ANY_ROLE = frozenset(Role)
#: Which roles may call each service; a service not listed takes nobody (default deny).
SERVICE_ROLES: Mapping[str, frozenset[Role]] = {
    "healthcode.issuer.v1.ResidentIndex": frozenset({Role.ISSUANCE}),
    "healthcode.issuer.v1.HealthCodes": frozenset({Role.ISSUANCE}),
    "healthcode.issuer.v1.Wallets": frozenset({Role.ISSUANCE}),
    "healthcode.admin.v1.KeyAdmin": frozenset({Role.PROVINCE_ADMIN, Role.NATIONAL}),
    "healthcode.issuer.v1.NationalLink": frozenset({Role.NATIONAL_INDEX}),  # the national index's calls (issue 14)
    "grpc.reflection.v1alpha.ServerReflection": _ANY_ROLE,
    "grpc.reflection.v1.ServerReflection": _ANY_ROLE,
}
#: What a resident's own wallet calls (``pkg.Service/Method``): enrolment (find or register the resident by
#: their document, a challenge, the credential bound to the phone's key; renewal is a new enrolment with
#: the same key, the only one allowed by main index ID), the resident's live codes. Never ListAccesses (by
#: main index ID alone, which every QR code carries, it would read anyone's hospital access log), IssueCode,
#: RenewCode, RevokeCode, RenderCode, GetCodeStatus, MergeResidents, LinkIdentifier, MoveResidentIn,
#: KeyAdmin, NationalLink.
WALLET_METHODS = frozenset({
    "healthcode.issuer.v1.ResidentIndex/FindResident",
    "healthcode.issuer.v1.ResidentIndex/RegisterResident",
    "healthcode.issuer.v1.Wallets/CreateChallenge",
    "healthcode.issuer.v1.Wallets/IssueCredential",
    "healthcode.issuer.v1.Wallets/ListLiveCodes",
})
#: Roles a method takes besides its service's (:data:`SERVICE_ROLES`): a grant per method, never a removal.
METHOD_ROLES: Mapping[str, frozenset[Role]] = {method: frozenset({Role.WALLET}) for method in WALLET_METHODS}

_WHO_HAS = {
    Role.ISSUANCE: "issuance clients",
    Role.WALLET: "wallet clients",
    Role.PROVINCE_ADMIN: "admin:<province> certificates",
    Role.NATIONAL: "national:<name> certificates",
    Role.NATIONAL_INDEX: "national-index:<name> certificates",
    Role.PROVINCE: "province:<code> certificates",
}


def certificate_role(common_name: str, issuance_clients: frozenset[str] | set[str] = frozenset(),
                     wallet_clients: frozenset[str] | set[str] = frozenset()) -> Role | None:
    """The role a client certificate's CN names: ``admin:<province>``, ``national:<name>``,
    ``national-index:<name>``, ``province:<code>``, a CN
    listed in ``issuance_clients`` (issuance) or in ``wallet_clients`` (wallet); None for anything else
    (``admin:99``, an unlisted CN, a CN in both lists: a certificate has one role)."""
    match = PROVINCE_ADMIN_CN.fullmatch(common_name)
    if match:
        return Role.PROVINCE_ADMIN if match[1] in PROVINCES else None
    if NATIONAL_CN.fullmatch(common_name):
        return Role.NATIONAL
    if NATIONAL_INDEX_CN.fullmatch(common_name):
        return Role.NATIONAL_INDEX
    match = PROVINCE_CN.fullmatch(common_name)
    if match:
        return Role.PROVINCE if match[1] in PROVINCES else None
    if common_name.startswith(_ROLE_PREFIXES) or (common_name in issuance_clients and common_name in wallet_clients):
        return None
    if common_name in issuance_clients:
        return Role.ISSUANCE
    if common_name in wallet_clients:
        return Role.WALLET
    return None


def check_issuance_client_name(name: Any, what: str = "an issuance client") -> str:
    """``name`` if it can be an issuance (or wallet) client's certificate CN; raises ``ValueError`` saying why not."""
    if not isinstance(name, str) or not _CALLER_NAME.match(name):
        raise ValueError(f"{what}'s name is 1-64 characters of A-Z a-z 0-9 . _ @ : -")
    if name.startswith(_ROLE_PREFIXES):
        raise ValueError(f"{name!r} is a key-administration name or a service's (admin:, national:, national-index:, "
                         "province:): a certificate has one role")
    return name


def check_client_names(issuance_clients: Iterable[Any], wallet_clients: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless every name can be a client certificate's CN and no CN is in both lists."""
    issuance = {check_issuance_client_name(n) for n in issuance_clients}
    wallet = {check_issuance_client_name(n, "a wallet client") for n in wallet_clients}
    both = sorted(issuance & wallet)
    if both:
        raise ValueError(f"{both[0]!r} is listed as an issuance client and as a wallet client: a certificate has "
                         "one role")


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


#: The wallet role's default bucket, per caller: stricter than an issuance client's (100/s, burst 200), since
#: one wallet key may serve every resident of a self-service page (config ``auth.wallet_rate``/``wallet_burst``;
#: a keys-file entry's own ``rate``/``burst`` still wins).
DEFAULT_WALLET_RATE_LIMIT = RateLimit(20.0, 40.0)


_API_KEY_ROLES = (Role.ISSUANCE, Role.WALLET)


@dataclass(frozen=True)
class ApiKey:
    """One configured caller: its name, its key's SHA-256, an optional own rate limit, its role.

    An API key is an issuance client or a wallet client: key administration takes a
    client certificate, so the names ``admin:...`` and ``national:...`` are refused here.
    """

    caller: str
    sha256: bytes
    rate_limit: RateLimit | None = None
    role: Role = Role.ISSUANCE

    def __post_init__(self) -> None:
        if not _CALLER_NAME.match(self.caller):
            raise ValueError("caller name must be 1-64 characters of A-Z a-z 0-9 . _ @ : -")
        if self.caller.startswith(_ROLE_PREFIXES):
            raise ValueError("caller names admin:..., national:..., national-index:... and province:... belong to "
                             "key administrators' and services' certificates")
        if self.role not in _API_KEY_ROLES:
            raise ValueError("an API key has the issuance or the wallet role")
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
        unknown = set(entry) - {"name", "key_sha256", "role", "rate", "burst"}
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
        role = entry.get("role", Role.ISSUANCE.value)
        if role not in [r.value for r in _API_KEY_ROLES]:
            raise ValueError(f'keys file: callers[{i}] role must be "issuance" (the default) or "wallet": key '
                             "administrators use admin:<province> or national:<name> client certificates, never "
                             "API keys")
        try:
            keys.append(ApiKey(name, bytes.fromhex(digest), limit, Role(role)))
        except ValueError as e:
            raise ValueError(f"keys file: callers[{i}]: {e}") from None
    names = [k.caller for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("keys file: caller names must be unique")
    hashes = [k.sha256 for k in keys]
    if len(set(hashes)) != len(hashes):
        raise ValueError("keys file: two callers share one key")
    return keys


def load_api_keys(path: pathlib.Path) -> list[ApiKey]:
    """Read and parse an API keys file.

    Raises :class:`shellkit.files.InsecureFileMode` (a ``PermissionError``, message
    ending ``chmod 600 <path>``) when group or others have any permission on it,
    ``OSError`` when it cannot be read, ``ValueError`` when it is not a valid keys file.
    """
    data = read_secret(path, what="API keys file")
    try:
        return parse_api_keys(tomllib.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"API keys file {path} is not valid TOML: {e}") from None


class Authenticator:
    """Maps a call's credentials to a :class:`Caller` (see the module docstring)."""

    def __init__(self, api_keys: Iterable[ApiKey], *, accept_client_certs: bool,
                 issuance_clients: Iterable[str] = (), wallet_clients: Iterable[str] = ()) -> None:
        self._keys = tuple(api_keys)
        self._accept_client_certs = accept_client_certs
        self._issuance_clients = frozenset(issuance_clients)
        self._wallet_clients = frozenset(wallet_clients)
        self._roles: dict[str, Role | None] = {}  # certificate CN -> role, decided once per CN

    def authenticate(
        self,
        metadata: Iterable[tuple[str, Any]] | None,
        auth_context: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    ) -> Caller | None:
        """The caller, or ``None``. ``auth_context`` may be a callable, called only when needed."""
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
                    return self._certificate_caller(cn)
        return None

    def _certificate_caller(self, cn: str) -> Caller:
        try:
            role = self._roles[cn]
        except KeyError:
            role = certificate_role(cn, self._issuance_clients, self._wallet_clients)
            if len(self._roles) < 10_000:  # CNs come from the client CA: a bounded set in practice
                self._roles[cn] = role
        return Caller(cn, role)

    def _by_key(self, authorization: Any) -> Caller | None:
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
                found = key
        return None if found is None else Caller(found.caller, found.role, by_api_key=True)


class RateLimiter:
    """Per-caller token buckets. ``clock`` is a monotonic seconds counter (injectable for tests).

    A caller's bucket has its own limit (``per_caller``), else its role's (``per_role``), else ``default``.
    """

    def __init__(
        self,
        default: RateLimit | None,
        per_caller: Mapping[str, RateLimit] | None = None,
        *,
        per_role: Mapping[Role, RateLimit] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default
        self._per_caller = dict(per_caller or {})
        self._per_role = dict(per_role or {})
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # caller -> [tokens, last refill time]

    def try_acquire(self, caller: str, role: Role | None = None) -> bool:
        """Take one token from ``caller``'s bucket; ``False`` when it is empty."""
        limit = self._per_caller.get(caller)
        if limit is None:
            limit = self._per_role.get(role, self._default) if role is not None else self._default
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


Refusal = tuple[grpc.StatusCode, str]


class Admission:
    """Authenticates, authorizes (by role) and rate-limits every RPC outside ``exempt_services``.

    Not a gRPC interceptor: the server wraps each method handler once, when
    services register (``issuer.app``), takes the method's :meth:`checker`
    then, and the wrapper calls it before the servicer runs. A ``grpc.aio``
    interceptor runs a coroutine pipeline on every call before the handler is
    even found; measured in the issuer, that alone cost more CPU per call than
    authenticating.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        *,
        exempt_services: Iterable[str] = (HEALTH_SERVICE,),
        service_roles: Mapping[str, frozenset[Role]] = SERVICE_ROLES,
        method_roles: Mapping[str, frozenset[Role]] = METHOD_ROLES,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._exempt = frozenset(exempt_services)
        self._service_roles = dict(service_roles)
        self._method_roles = dict(method_roles)

    def checker(self, method: str) -> Callable[[grpc.aio.ServicerContext], Refusal | None]:
        """The admission check of ``method`` (``/pkg.Service/Method``): call it with the RPC's context;
        ``None`` when admitted, else the status to abort with.

        It sets the caller (:func:`current_caller`) when it is known, also for a
        permission or rate-limit refusal (which is logged against the caller).
        """
        service = service_of(method)
        name = method.lstrip("/")
        allowed = self._service_roles.get(service, frozenset()) | self._method_roles.get(name, frozenset())
        # a service whose methods differ in who may call them is named by method in a refusal
        target = name if any(m.startswith(service + "/") for m in self._method_roles) else service
        authenticate, try_acquire = self._authenticator.authenticate, self._limiter.try_acquire

        def check(context: grpc.aio.ServicerContext) -> Refusal | None:
            caller = authenticate(context.invocation_metadata(), context.auth_context)
            if caller is None:
                return grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials"
            _CALLER.set(caller.name)
            _ROLE.set(caller.role)
            if caller.role not in allowed:
                return grpc.StatusCode.PERMISSION_DENIED, _denial(caller, target, allowed)
            if not try_acquire(caller.name, caller.role):
                return grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded; retry later"
            return None

        return check

    def exempt(self, method: str) -> bool:
        """Whether ``method`` (``/pkg.Service/Method``) is outside authentication."""
        return service_of(method) in self._exempt



def _denial(caller: Caller, service: str, allowed: frozenset[Role]) -> str:
    """The PERMISSION_DENIED message: who the caller is, and who the service (or the method,
    ``pkg.Service/Method``, when its service's methods differ) is open to.

    Logged once as a WARNING (caller, role, service; never request contents).
    """
    how = "API key" if caller.by_api_key else "certificate"
    if caller.role is None:
        who = (f"{how} {caller.name!r} has no role (a CN must be admin:<province>, national:<name>, "
               "or listed in auth.issuance_clients or auth.wallet_clients)")
    else:
        who = f"{how} {caller.name!r} has the {caller.role.value} role"
    if not allowed:
        open_to = f"{service} is open to no caller"
    else:
        open_to = f"{service} is open to " + " and ".join(_WHO_HAS[r] for r in Role if r in allowed) + " only"
    log.warning("access denied: caller %s, role %s, service %s", caller.name,
                caller.role.value if caller.role else "none", service,
                extra={"event": "access_denied", "caller": caller.name})
    return f"{who}; {open_to}"

