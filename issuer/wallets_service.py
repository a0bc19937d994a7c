"""The ``Wallets`` servicer (``proto/healthcode/issuer/v1/wallets.proto``): wire in, domain calls, wire out.

It runs the steps of every RPC of :class:`issuer.service.IssuerService`
(one clock reading, the deadline check, every field validated and answered
together as INVALID_ARGUMENT with field violations, the domain call shielded,
the one error table). What it validates before the domain:

* the resident: ``main_index_id`` or ``document``, as ``IssueCode``;
* ``challenge``: 32 bytes; ``proof``: 64 bytes (raw ``r || s``);
* ``device_key``: ``algorithm`` one the province allows (the domain's
  ``device_key_algorithms``, from ``[wallets] device_key_algorithms``: ES256
  only by default, SM2 with SM3 where a province asks for it; another is
  refused on ``device_key.algorithm``, naming the allowed ones),
  ``public_key`` a SEC 1 point (65 bytes ``04 x y`` or 33 ``02/03 x``) on
  that algorithm's curve (P-256 or SM2).

The domain then checks the challenge (used, expired, unknown, another
resident's) and the proof, on the same fields. Nothing here logs an identifier.

By main index ID, a caller without the issuance role (the wallet role: a key
that may sit in a public web page, and a main index ID is in clear in every
QR code) only renews: CreateChallenge needs a live phone credential of the
resident, and IssueCredential the device key bound in it
(``renewal_only``, :class:`issuer.wallets.RenewalOnly`: FAILED_PRECONDITION,
reason ``RENEWAL_ONLY``); a new phone names the resident by document. An
issuance client (an app's back end, a front desk) enrols by either.

ListLiveCodes lists every live code to an issuance client, but to any other
caller (the wallet role: a key that may sit in a public web page, with a main
index ID shown in every on-screen code) phone credentials only: they are
useless without the phone's device key, where a printed code's text works at
a terminal on its own.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Protocol

from healthcode.algorithms import Algorithm, load_p256_point, load_sm2_point
from healthcode.errors import InvalidKey, UnsupportedAlgorithm
from healthcode.model import MainIndexId
from healthcode.presentation import CHALLENGE_BYTES

from issuer import auth
from issuer.api import wallets_pb2, wallets_pb2_grpc
from issuer.documents import Document
from issuer.errors import Violations
from issuer.model import Channel, IdempotencyKey, IssuedCode
from issuer.service import IssuerService
from issuer.wire import (
    china_date,
    document_field,
    idempotency_key_field,
    issued_code_pb,
    main_index_id_field,
    set_timestamp,
)

if TYPE_CHECKING:
    from issuer.wallets import Challenge

__all__ = ["WalletsPort", "WalletsServicer", "SERVICE_NAME", "PROOF_BYTES"]

SERVICE_NAME = wallets_pb2.DESCRIPTOR.services_by_name["Wallets"].full_name
PROOF_BYTES = 64
_CHANNELS = {Channel.PHONE: wallets_pb2.CHANNEL_PHONE, Channel.STATIC: wallets_pb2.CHANNEL_STATIC}
_ALGORITHMS = {wallets_pb2.DEVICE_KEY_ALGORITHM_ES256: Algorithm.ES256,
               wallets_pb2.DEVICE_KEY_ALGORITHM_SM2_SM3: Algorithm.SM2_SM3}
_CURVES = {Algorithm.ES256: (load_p256_point, "P-256"), Algorithm.SM2_SM3: (load_sm2_point, "SM2")}


class WalletsPort(Protocol):
    """What the servicer needs of the domain (``issuer.wallets.WalletIssuer``)."""

    #: The device key algorithms this province binds (checked on ``device_key.algorithm``).
    device_key_algorithms: tuple[Algorithm, ...]

    async def create_challenge(self, *, caller: str, main_index_id: MainIndexId, now: dt.datetime,
                               renewal_only: bool = False) -> "Challenge": ...

    async def issue_credential(self, *, caller: str, main_index_id: MainIndexId, challenge: bytes,
                               device_key: bytes, proof: bytes, idempotency_key: IdempotencyKey | None,
                               now: dt.datetime, algorithm: Algorithm = Algorithm.ES256,
                               renewal_only: bool = False) -> IssuedCode: ...

    async def list_live_codes(self, *, main_index_id: MainIndexId, now: dt.datetime) -> list[IssuedCode]: ...


def _device_key(request: Any, allowed: tuple[Algorithm, ...], out: Violations) -> tuple[bytes, Algorithm] | None:
    """The device key's point and algorithm, validated into ``out`` (``allowed``: the province's algorithms)."""
    if not request.HasField("device_key"):
        out.add("device_key", "device key is required", "required")
        return None
    key = request.device_key
    algorithm = _ALGORITHMS.get(key.algorithm)
    names = ", ".join(map(str, allowed))
    if key.algorithm == wallets_pb2.DEVICE_KEY_ALGORITHM_UNSPECIFIED:
        out.add("device_key.algorithm", f"device key algorithm is required (allowed: {names})", "required")
    elif algorithm is None:
        out.add("device_key.algorithm", f"unknown device key algorithm (allowed: {names})", "algorithm")
    elif algorithm not in allowed:
        out.add("device_key.algorithm", f"{algorithm} device keys are not allowed by this province; "
                                        f"allowed: {names}", "unsupported")
        algorithm = None
    point = bytes(key.public_key)
    if not point:
        out.add("device_key.public_key", "public key is required", "required")
        return None
    if not ((len(point) == 65 and point[0] == 4) or (len(point) == 33 and point[0] in (2, 3))):
        out.add("device_key.public_key", "public key must be a SEC 1 point: 65 bytes (04 x y) or "
                                         "33 bytes (02/03 x)", "format")
        return None
    if algorithm is None:  # the curve only matters for an allowed algorithm
        return None
    load, curve = _CURVES[algorithm]
    try:
        load(point)
    except (InvalidKey, UnsupportedAlgorithm):
        out.add("device_key.public_key", f"not a point on {curve}", "curve")
        return None
    return point, algorithm


def _fixed_bytes(value: bytes, size: int, path: str, what: str, out: Violations) -> bytes | None:
    if not value:
        out.add(path, f"{what} is required", "required")
        return None
    if len(value) != size:
        out.add(path, f"{what} must be {size} bytes", "length")
        return None
    return bytes(value)


class WalletsServicer(wallets_pb2_grpc.WalletsServicer):
    """``Wallets`` over :class:`WalletsPort`, through the steps of :class:`~issuer.service.IssuerService`."""

    def __init__(self, service: IssuerService, wallets: WalletsPort) -> None:
        self._s = service
        self._w = wallets

    @staticmethod
    def _resident(request: Any, now: dt.datetime, out: Violations) -> tuple[MainIndexId | None, Document | None]:
        """The resident oneof, validated into ``out``: (main index ID, None) or (None, document)."""
        which = request.WhichOneof("resident")
        if which == "main_index_id":
            return main_index_id_field(request.main_index_id, "main_index_id", out), None
        if which == "document":
            return None, document_field(request.document, True, "document", china_date(now), out)
        out.add("resident", "one of main_index_id or document is required", "required")
        return None, None

    @staticmethod
    def _renewal_only(document: Document | None) -> bool:
        """Whether the resident is named by main index ID by a caller without the issuance role: then
        the call may only renew the phone credential bound to its device key (the module docstring)."""
        return document is None and auth.current_role() is not auth.Role.ISSUANCE

    async def _main_index_id(self, context: Any, mid: MainIndexId | None, document: Document | None) -> MainIndexId:
        s = self._s
        if document is not None:
            return await s._domain(context, s._index.find_resident(document))
        assert mid is not None
        return mid

    async def CreateChallenge(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            mid, document = self._resident(request, now, out)
            out.raise_if_any()
            caller = s._caller()
            renewal_only = self._renewal_only(document)
            mid = await self._main_index_id(context, mid, document)
            challenge = await s._domain(context, self._w.create_challenge(caller=caller, main_index_id=mid, now=now,
                                                                          renewal_only=renewal_only))
            response = wallets_pb2.CreateChallengeResponse(challenge=challenge.value)
            set_timestamp(response.expires_at, challenge.expires_at)
            return response

        return await s._serve(context, impl)

    async def IssueCredential(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            mid, document = self._resident(request, now, out)
            challenge = _fixed_bytes(request.challenge, CHALLENGE_BYTES, "challenge", "challenge", out)
            device = _device_key(request, self._w.device_key_algorithms, out)
            proof = _fixed_bytes(request.proof, PROOF_BYTES, "proof", "proof (raw r || s)", out)
            key = idempotency_key_field(request.idempotency_key, out)
            out.raise_if_any()
            # each of these is None only with a violation, raised just above
            assert challenge is not None and device is not None and proof is not None
            point, algorithm = device
            caller = s._caller()
            renewal_only = self._renewal_only(document)
            mid = await self._main_index_id(context, mid, document)
            code = await s._domain(context, self._w.issue_credential(
                caller=caller, main_index_id=mid, challenge=challenge, device_key=point, proof=proof,
                idempotency_key=key, now=now, algorithm=algorithm, renewal_only=renewal_only))
            response = wallets_pb2.IssueCredentialResponse()
            issued_code_pb(s._issued(code), now, response.credential)
            return response

        return await s._serve(context, impl)

    async def ListLiveCodes(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            mid, document = self._resident(request, now, out)
            out.raise_if_any()
            mid = await self._main_index_id(context, mid, document)
            codes = await s._domain(context, self._w.list_live_codes(main_index_id=mid, now=now))
            if auth.current_role() is not auth.Role.ISSUANCE:  # the wallet role: phone credentials only
                codes = [code for code in codes if code.channel is Channel.PHONE]
            response = wallets_pb2.ListLiveCodesResponse()
            for code in codes:
                live = response.codes.add(channel=_CHANNELS[code.channel])
                issued_code_pb(code, now, live.code)
            return response

        return await s._serve(context, impl)


def add_to_server(servicer: WalletsServicer, server: Any) -> str:
    """Register ``servicer``; return the service's full name."""
    wallets_pb2_grpc.add_WalletsServicer_to_server(servicer, server)
    return SERVICE_NAME
