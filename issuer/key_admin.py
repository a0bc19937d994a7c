"""The KeyAdmin gRPC service: a province's signing keys, managed through its issuer over mTLS.

Wire types (``issuer.api.key_admin_pb2``) stay in this module; the work is
done by :class:`keys.ceremony.ProvinceKeyAdmin` over the issuer's key-set
file, its keystore (files or HSM) and the national trust repository.

**Who may call** (:func:`authorize`). The issuer's admission layer
(:mod:`issuer.auth`) lets only the admin and national roles reach this
service; each call is checked again here, per method and province. The
caller is the subject CN of its client certificate, taken from the TLS auth
context; a call that carries an
API key (``authorization`` metadata) is refused, even on an mTLS connection,
so a leaked API key never administers keys. Roles:

==========================  ==================================================
CN                          may
==========================  ==================================================
``admin:<code>``            every RPC, on province ``<code>`` only
``national:<name>``         ListKeys, PlanRotation, MarkCompromised,
                            PublishKeyList, on any province
anything else               nothing
==========================  ==================================================

A refusal is PERMISSION_DENIED and one WARNING log line naming the caller,
the method and the target province (never a request's other fields). An
issuer holds only its own province's keys: a permitted caller asking for
another province gets FAILED_PRECONDITION.

**Each RPC** (marked in :meth:`KeyAdminService._serve`): (1) read the clock
once; (2) the caller's role from its certificate; (3) the province field;
(4) the permission for (role, method, province); (5) validate the other
fields; (6) run the operation in a worker thread (file I/O, scrypt, HSM
calls), one at a time; (7) map errors through the issuer's one table
(:data:`issuer.wire.STATUS_BY_ERROR`), after translating key-management
errors into issuer errors in :func:`_issuer_error`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import pathlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, NoReturn, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from healthcode import PROVINCES, Algorithm, CompromisePolicy
from issuer.api import key_admin_pb2, key_admin_pb2_grpc
from issuer.auth import NATIONAL_CN, PROVINCE_ADMIN_CN
from issuer.errors import Conflict, FieldViolation, InvalidRequest, IssuerError, NotFound, Unavailable, Violations
from issuer.wire import ERROR_DOMAIN, status_code_for
from keys.ceremony import Outcome
from keys.errors import KeyManagementError, KeyNotFound, KeyReason, TrustRepoError
from keys.lifecycle import PlanReason
from keys.managed_key import KeyState, ManagedKey
from keys.province_keys import ProvinceKeyAdmin

__all__ = ["KeyAdminService", "CallerRole", "authorize", "role_of", "READ_METHODS", "NATIONAL_METHODS",
           "open_key_admin"]

log = logging.getLogger("issuer.key_admin")
T = TypeVar("T")

SERVICE = key_admin_pb2.DESCRIPTOR.services_by_name["KeyAdmin"].full_name
READ_METHODS = frozenset({"ListKeys", "PlanRotation"})
#: What a national role may do on any province: read, and cut off a compromised key.
NATIONAL_METHODS = READ_METHODS | {"MarkCompromised", "PublishKeyList"}
_PROVINCE_ADMIN = PROVINCE_ADMIN_CN  # the CN scheme issuer.auth assigns roles by
_NATIONAL = NATIONAL_CN
_MAX_KID = 32
_MAX_LABEL = 64


# --------------------------------------------------------------------------- permissions


@dataclass(frozen=True)
class CallerRole:
    """An authenticated key administrator: ``province`` for a province admin, None for a national role."""

    name: str
    province: str | None

    @property
    def national(self) -> bool:
        return self.province is None


def role_of(common_name: str | None) -> CallerRole | None:
    """The role a certificate CN names, or None (``admin:33``, ``national:ops``)."""
    if not common_name:
        return None
    match = _PROVINCE_ADMIN.fullmatch(common_name)
    if match and match[1] in PROVINCES:
        return CallerRole(common_name, match[1])
    if _NATIONAL.fullmatch(common_name):
        return CallerRole(common_name, None)
    return None


def authorize(role: CallerRole, method: str, province: str) -> bool:
    """May ``role`` call ``method`` on ``province``? (The table in the module docstring.)"""
    if role.national:
        return method in NATIONAL_METHODS
    return role.province == province


# --------------------------------------------------------------------------- conversions

_STATES = {s: key_admin_pb2.KeyState.Value(f"KEY_STATE_{s.name}") for s in KeyState}
_ALGORITHMS = {Algorithm.ES256: key_admin_pb2.KEY_ALGORITHM_ES256, Algorithm.EDDSA: key_admin_pb2.KEY_ALGORITHM_EDDSA,
               Algorithm.SM2_SM3: key_admin_pb2.KEY_ALGORITHM_SM2_SM3}
_ALGORITHM_OF = {v: k for k, v in _ALGORITHMS.items()}
_POLICIES = {CompromisePolicy.REJECT_FROM_COMPROMISE: key_admin_pb2.COMPROMISE_POLICY_REJECT_FROM_COMPROMISE,
             CompromisePolicy.REJECT_ALL: key_admin_pb2.COMPROMISE_POLICY_REJECT_ALL}
_PLAN_REASONS = {r: key_admin_pb2.PlanReason.Value(f"PLAN_REASON_{r.name}") for r in PlanReason}


def _ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(moment.timestamp()))


def _from_ts(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts.seconds, dt.timezone.utc)


#: The timestamps a request may carry: from the Unix epoch to the start of year 9000, so that a
#: key's window (use_from + usage + lead time + code validity) still fits in a datetime.
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)


def _time_field(ts: timestamp_pb2.Timestamp, field: str, out: Violations) -> dt.datetime | None:
    """The moment ``ts`` names, or None with a ``range`` violation on ``field`` when it is outside
    1970-01-01 .. 9000-01-01 UTC (a datetime cannot hold +-2^62 s; no key lives outside that)."""
    if _EARLIEST.timestamp() <= ts.seconds < _LATEST.timestamp():
        return _from_ts(ts)
    out.add(field, f"{field} must be between {_EARLIEST:%Y-%m-%d} and {_LATEST:%Y-%m-%d} UTC", "range")
    return None


def _key_pb(key: ManagedKey, now: dt.datetime) -> key_admin_pb2.ManagedKey:
    msg = key_admin_pb2.ManagedKey(
        kid=key.kid, algorithm=_ALGORITHMS[key.algorithm], state=_STATES[key.state_at(now)],
        signing=key.signs_at(now), use_from=_ts(key.use_from), use_until=_ts(key.use_until),
        verify_until=_ts(key.verify_until), codes_signed=key.codes_signed, public_key_spki=key.public_key.spki_der())
    if key.compromised_since is not None:
        msg.compromised_since.CopyFrom(_ts(key.compromised_since))
        msg.compromise_policy = _POLICIES[key.compromise_policy]
    if key.handle is not None:
        msg.keystore, msg.label = key.handle.backend, key.handle.label
    return msg


def _publication_pb(outcome: Outcome, repo_dir: pathlib.Path | None) -> key_admin_pb2.Publication:
    written = []
    for path in outcome.written:
        try:
            written.append(str(pathlib.Path(path).relative_to(repo_dir)) if repo_dir else path)
        except ValueError:
            written.append(path)
    return key_admin_pb2.Publication(serial=outcome.serial or 0, role_version=outcome.role_version or 0,
                                     visible=outcome.published, written=written)


# --------------------------------------------------------------------------- errors


def _issuer_error(error: BaseException) -> BaseException:
    """Key-management and repository refusals as issuer errors, so the one table maps them."""
    if isinstance(error, KeyNotFound):
        return NotFound(error.detail)
    if isinstance(error, KeyManagementError):
        if error.reason in (KeyReason.HSM_ERROR, KeyReason.KEYSTORE_IO):
            return Unavailable(error.detail)
        return Conflict(str(error))  # policy_violation: ..., invalid_key_set: ..., wrong_pin: ...
    if isinstance(error, TrustRepoError):
        return Conflict(f"trust repository: {error}")
    return error


def _reason(original: BaseException, mapped: BaseException) -> str:
    if isinstance(original, KeyManagementError):
        return original.reason.value.upper()
    if isinstance(original, TrustRepoError):
        return "TRUST_REPOSITORY"
    return mapped.reason.upper() if isinstance(mapped, IssuerError) else "INTERNAL"


def _status(code: grpc.StatusCode, message: str, reason: str, details: list[Any] | None = None) -> grpc.Status:
    proto = status_pb2.Status(code=code.value[0], message=message[:1000])
    for detail in [*(details or []), error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)]:
        proto.details.add().Pack(detail)
    return rpc_status.to_status(proto)


def _changed_key(outcome: Outcome) -> tuple[ManagedKey, int]:
    """The key an add, a mark or a retire changed, and the key set's new revision (they always set both)."""
    assert outcome.key is not None and outcome.key_set is not None, "a key operation's outcome names its key"
    return outcome.key, outcome.key_set.revision


def _kid(value: bytes, out: Violations) -> bytes:
    if not value:
        out.add("kid", "kid is required", "required")
    elif len(value) > _MAX_KID:
        out.add("kid", f"kid must be 1 to {_MAX_KID} bytes", "length")
    return bytes(value)


# --------------------------------------------------------------------------- the service


class KeyAdminService(key_admin_pb2_grpc.KeyAdminServicer):
    """The KeyAdmin servicer over one :class:`ProvinceKeyAdmin` (this issuer's province)."""

    def __init__(self, admin: ProvinceKeyAdmin, *, clock: Callable[[], dt.datetime],
                 on_close: Callable[[], None] | None = None) -> None:
        self._admin = admin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._on_close = on_close

    def add_to_server(self, server: grpc.aio.Server) -> str:
        key_admin_pb2_grpc.add_KeyAdminServicer_to_server(self, server)
        return SERVICE

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()

    # -- the steps every RPC takes

    @staticmethod
    def _certificate_cn(context: grpc.aio.ServicerContext) -> str | None:
        for key, _ in context.invocation_metadata() or ():
            if key == "authorization":
                return None  # an API key: refused here, whatever the connection
        names = (context.auth_context() or {}).get("x509_common_name") or ()
        for name in names:
            return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        return None

    async def _deny(self, context, method: str, caller: str, province: str, why: str) -> NoReturn:
        """Log the refusal and end the RPC with PERMISSION_DENIED (``abort_with_status`` raises)."""
        log.warning("key admin denied: caller %s, method %s, target province %s: %s", caller, method,
                    province or "-", why, extra={"event": "key_admin_denied", "method": method, "caller": caller})
        await context.abort_with_status(_status(grpc.StatusCode.PERMISSION_DENIED, why, "PERMISSION_DENIED"))
        raise AssertionError("unreachable: abort_with_status raises")

    async def _serve(self, context: grpc.aio.ServicerContext, method: str, province: str,
                     impl: Callable[[dt.datetime, CallerRole], Awaitable[T]]) -> T:
        now = self._clock().replace(microsecond=0)  # (1) the one clock reading of this RPC
        cn = self._certificate_cn(context)  # (2) who: the certificate, never an API key
        role = role_of(cn)
        if cn is None:
            has_key = any(k == "authorization" for k, _ in context.invocation_metadata() or ())
            await self._deny(context, method, "api-key-caller" if has_key else "anonymous", province,
                             "KeyAdmin accepts mTLS client certificates only, never API keys")
        if role is None:
            await self._deny(context, method, cn, province,
                             f"{cn!r} is not a key administrator (CN admin:<province> or national:<name>)")
        try:
            if not province:  # (3) the target province
                raise InvalidRequest([FieldViolation("province", "province is required", "required")])
            if province not in PROVINCES:
                raise InvalidRequest([FieldViolation("province", "province must be a two-digit GB/T 2260 code",
                                                     "province")])
        except InvalidRequest as error:
            await self._abort(context, error, error)
        if not authorize(role, method, province):  # (4) the permission
            why = (f"{role.name} may not call {method}" if role.national
                   else f"{role.name} administers province {role.province}, not {province}")
            await self._deny(context, method, role.name, province, why)
        try:
            if province != self._admin.province:
                raise Conflict(f"this issuer holds the keys of province {self._admin.province} only")
            result = await impl(now, role)  # (5) validate, (6) run
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # (7) the one mapping
            await self._abort(context, error, _issuer_error(error))
        return result

    async def _abort(self, context, original: BaseException, mapped: BaseException) -> None:
        code = status_code_for(mapped)
        if code is grpc.StatusCode.INTERNAL:
            log.error("key admin internal error: %s", type(original).__name__)
            await context.abort_with_status(_status(code, "internal error", "INTERNAL"))
        details: list[Any] = []
        message = getattr(mapped, "message", None) or str(mapped)
        if isinstance(mapped, InvalidRequest):
            message = "invalid request: " + message
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description,
                                                            reason=v.code.upper()) for v in mapped.violations]))
        await context.abort_with_status(_status(code, message, _reason(original, mapped), details))

    async def _run(self, call: Callable[[], T]) -> T:
        """One admin operation at a time in this process (the file locks order them across processes)."""
        async with self._lock:
            return await asyncio.to_thread(call)

    def _audit(self, role: CallerRole, method: str, outcome: Outcome) -> None:
        log.info("key admin: %s %s province %s: %s", role.name, method, self._admin.province,
                 outcome.summary.splitlines()[0], extra={"event": "key_admin", "method": method, "caller": role.name})

    # -- the RPCs

    async def ListKeys(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            key_set, infos = await self._run(lambda: self._admin.list_keys(now))
            policy = key_set.policy
            return key_admin_pb2.ListKeysResponse(
                province=key_set.province, revision=key_set.revision,
                keys=[_key_pb(info.key, now) for info in infos],
                policy=key_admin_pb2.RotationPolicy(
                    usage_period_seconds=int(policy.usage_period.total_seconds()),
                    lead_time_seconds=int(policy.lead_time.total_seconds()),
                    max_code_validity_seconds=int(policy.max_code_validity.total_seconds()),
                    max_codes_per_key=policy.max_codes_per_key, allow_emergency=policy.allow_emergency))

        return await self._serve(context, "ListKeys", request.province, impl)

    async def PlanRotation(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            plan = await self._run(lambda: self._admin.plan(now))
            if plan is None:
                return key_admin_pb2.PlanRotationResponse()
            return key_admin_pb2.PlanRotationResponse(
                reason=_PLAN_REASONS[plan.reason], use_from=_ts(plan.use_from), use_until=_ts(plan.use_until),
                replaces_kid=plan.replaces or b"")

        return await self._serve(context, "PlanRotation", request.province, impl)

    async def RotateKey(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            out = Violations()
            algorithm = Algorithm.ES256
            if request.algorithm != key_admin_pb2.KEY_ALGORITHM_UNSPECIFIED:
                chosen = _ALGORITHM_OF.get(request.algorithm)
                if chosen is None:
                    out.add("algorithm", "unknown algorithm", "enum")
                else:
                    algorithm = chosen
            use_from = _time_field(request.use_from, "use_from", out) if request.HasField("use_from") else None
            if use_from is not None and use_from < now:
                out.add("use_from", "use_from must not be in the past", "range")
            label = request.label or None
            if label is not None and (len(label) > _MAX_LABEL or not label.isprintable()):
                out.add("label", f"label must be 1 to {_MAX_LABEL} printable characters", "format")
            out.raise_if_any()
            outcome = await self._run(lambda: self._admin.add_key(now, algorithm=algorithm, use_from=use_from,
                                                                  label=label, rotate=True,
                                                                  emergency=request.emergency))
            self._audit(role, "RotateKey", outcome)
            key, revision = _changed_key(outcome)
            return key_admin_pb2.RotateKeyResponse(key=_key_pb(key, now), revision=revision,
                                                   warnings=list(outcome.warnings))

        return await self._serve(context, "RotateKey", request.province, impl)

    async def MarkCompromised(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            out = Violations()
            kid = _kid(request.kid, out)
            since = None
            if not request.HasField("since"):
                out.add("since", "since is required", "required")
            else:
                since = _time_field(request.since, "since", out)
                if since is not None and since > now:
                    out.add("since", "a compromise cannot start in the future", "range")
            if request.policy not in (key_admin_pb2.COMPROMISE_POLICY_UNSPECIFIED,
                                      key_admin_pb2.COMPROMISE_POLICY_REJECT_FROM_COMPROMISE,
                                      key_admin_pb2.COMPROMISE_POLICY_REJECT_ALL):
                out.add("policy", "unknown compromise policy", "enum")
            out.raise_if_any()
            assert since is not None  # required: its absence or a bad value is a violation raised above
            reject_all = request.policy == key_admin_pb2.COMPROMISE_POLICY_REJECT_ALL

            def call() -> tuple[Outcome, Outcome | None]:
                marked = self._admin.mark_compromised(kid, since=since, now=now, reject_all=reject_all)
                return marked, (self._admin.publish(now=now) if request.publish else None)

            marked, published = await self._run(call)
            self._audit(role, "MarkCompromised", marked)
            key, revision = _changed_key(marked)
            response = key_admin_pb2.MarkCompromisedResponse(
                key=_key_pb(key, now), revision=revision,
                warnings=list(marked.warnings if published is None else published.warnings))
            if published is not None:
                self._audit(role, "PublishKeyList", published)
                response.publication.CopyFrom(_publication_pb(published, self._repo_dir()))
            return response

        return await self._serve(context, "MarkCompromised", request.province, impl)

    async def RetireKey(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            out = Violations()
            kid = _kid(request.kid, out)
            out.raise_if_any()
            outcome = await self._run(lambda: self._admin.retire(kid, now=now, force=request.force))
            self._audit(role, "RetireKey", outcome)
            key, revision = _changed_key(outcome)
            return key_admin_pb2.RetireKeyResponse(key=_key_pb(key, now), revision=revision)

        return await self._serve(context, "RetireKey", request.province, impl)

    async def PublishKeyList(self, request, context):
        async def impl(now: dt.datetime, role: CallerRole):
            outcome = await self._run(lambda: self._admin.publish(now=now))
            self._audit(role, "PublishKeyList", outcome)
            return key_admin_pb2.PublishKeyListResponse(publication=_publication_pb(outcome, self._repo_dir()),
                                                        warnings=list(outcome.warnings))

        return await self._serve(context, "PublishKeyList", request.province, impl)

    def _repo_dir(self) -> pathlib.Path | None:
        return self._admin.repo.directory if self._admin.repo is not None else None


# --------------------------------------------------------------------------- wiring


def open_key_admin(
    config: Any,
    *,
    keystore_secret: bytes | None,
    tuf_passphrase: bytes | None,
    online_passphrase: bytes | None,
    clock: Callable[[], dt.datetime],
    on_change: Callable[[Any], None] | None = None,
    live_codes_signed: Callable[[], Any] | None = None,
) -> KeyAdminService:
    """The KeyAdmin service an :class:`issuer.config.IssuerConfig` describes (``trust_repo`` set).

    Opens its own handle on the keystore (a second session on a PKCS#11 token),
    loads the province's TUF role keys from ``tuf_keys`` and, with
    ``online_keys``, the snapshot and timestamp keys, so PublishKeyList makes
    the list visible at once. Raises :class:`issuer.config.ConfigError`.
    """
    from issuer.config import ConfigError
    from keys import ceremony
    from keys.keystore import open_keystore
    from keys.signers import RoleKeyFile, load_role_signer, role_key_names

    try:
        keystore = open_keystore(config.keystore, secret=keystore_secret, directory=config.keystore_dir,
                                 module=config.pkcs11_module, token=config.pkcs11_token)
    except (KeyManagementError, ValueError) as exc:
        raise ConfigError(f"key admin: cannot open the {config.keystore} keystore: {exc}") from None
    try:
        tuf_signers = []
        if config.tuf_keys is not None:
            names = role_key_names(config.tuf_keys)
            if not names:
                raise ConfigError(f"key admin: no TUF role keys in {config.tuf_keys}")
            if tuf_passphrase is None:
                raise ConfigError("key admin: the TUF role keys need key_admin.tuf_passphrase_env")
            tuf_signers = [load_role_signer(RoleKeyFile(config.tuf_keys, n), tuf_passphrase) for n in names]
        online = None
        if config.online_keys is not None:
            if online_passphrase is None:
                raise ConfigError("key admin: the online keys need key_admin.online_passphrase_env")
            online = ([load_role_signer(RoleKeyFile(config.online_keys, "snapshot"), online_passphrase)],
                      [load_role_signer(RoleKeyFile(config.online_keys, "timestamp"), online_passphrase)])
        repo = ceremony.open_repository(config.trust_repo, online=online)
    except ConfigError:
        keystore.close()
        raise
    except (KeyManagementError, TrustRepoError) as exc:
        keystore.close()
        raise ConfigError(f"key admin: {exc}") from None
    admin = ProvinceKeyAdmin(province=config.province, key_set_path=config.key_set, keystore=keystore, repo=repo,
                             tuf_signers=tuf_signers, publish_snapshot=online is not None, on_change=on_change,
                             live_codes_signed=live_codes_signed)  # ListKeys/PlanRotation: the signer's live counts
    if config.revocation_push_mode == "network" and config.revocation_directory is not None:
        admin.unpublished_note = (f"pushed to the national trust publisher within {config.revocation_push_poll:g} s "
                                  "(push_mode = \"network\"); visible to verifiers at its next publication")
    return KeyAdminService(admin, clock=clock, on_close=keystore.close)
