"""The province's client of the national index (``healthcode.national.v1.NationalIndex``), over mTLS.

The issuer authenticates with its own client certificate, whose subject CN is
``province:<code>`` (:func:`certificate_province` reads it; the serve shell
refuses one naming another province). Wire types stay here: callers pass
:class:`~issuer.documents.Document` values and get :class:`Claim`,
:class:`NationalEvent` and the previous province back.

Errors, in the issuer's root: the national index unreachable, not answering
within the call's deadline, or failing in a way that may pass (UNAVAILABLE,
DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN:
whether it stored anything is unknown, and every national call is idempotent)
is :class:`NationalUnavailable` (the caller decides: a registration goes on
provisionally, a transfer is refused); when the national index itself answered
that a province it had to call (a transfer's old home) cannot be reached
(ErrorInfo ``PROVINCE_UNAVAILABLE``) it is :class:`HomeProvinceUnavailable`,
naming that province; any other status is a definitive
refusal, :class:`NationalRefused`, carrying the national service's message (it
carries no document number, by the national API's contract) and its status
code's name; by the national API's contract nothing was stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Sequence

import grpc

from healthcode.model import PROVINCES, PROVINCES_EN

from .api import common_pb2
from .documents import Document, DocumentType
from .errors import Conflict, Unavailable
from .wire import received_error_info

__all__ = [
    "NationalLinkSettings",
    "NationalClient",
    "ClaimOutcome",
    "Claim",
    "ConsentMethod",
    "Consent",
    "EventKind",
    "NationalEvent",
    "NationalUnavailable",
    "HomeProvinceUnavailable",
    "NationalRefused",
    "document_pb",
    "certificate_province",
]

#: The national service's ErrorInfo domain (``national.service.ERROR_DOMAIN``).
_NATIONAL_DOMAIN = "national.healthcode"
_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL,
                        grpc.StatusCode.UNKNOWN})


class NationalUnavailable(Unavailable):
    """The national index could not be reached, or did not answer in time."""

    reason = "national_unavailable"


class HomeProvinceUnavailable(NationalUnavailable):
    """The national index answered, but the resident's home province it had to call cannot be reached.

    Nothing changed. ErrorInfo reason ``HOME_PROVINCE_UNAVAILABLE`` with metadata
    ``home_province`` (empty when the national service named no known province).
    """

    reason = "home_province_unavailable"

    def __init__(self, home_province: str) -> None:
        known = home_province in PROVINCES
        where = f"home province {home_province} ({PROVINCES[home_province]} {PROVINCES_EN[home_province]})" \
            if known else "home province"
        super().__init__(f"the resident's {where} cannot be reached now; nothing changed, try again later")
        self.home_province = home_province if known else ""
        self.metadata = {"home_province": self.home_province}


class NationalRefused(Conflict):
    """The national index refused the call (``code``: its gRPC status name)."""

    reason = "national_refused"

    def __init__(self, message: str, code: str = "FAILED_PRECONDITION") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, kw_only=True)
class NationalLinkSettings:
    """Where the national index is and how this province reaches it (the config's ``[national]``).

    ``ca_pem`` verifies the national service's certificate; ``cert_pem`` and
    ``key_pem`` are this province's client certificate (CN
    ``province:<code>``) and key; ``server_name`` overrides the name checked
    in the national certificate (default: the address's host). Timeouts are
    seconds: a registration waits ``claim_timeout`` for its claim before it
    goes on provisionally; ``reconcile_interval`` is the reconciler's period.
    """

    address: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    server_name: str | None = None
    claim_timeout: float = 2.0
    transfer_timeout: float = 10.0
    events_timeout: float = 10.0
    reconcile_interval: float = 30.0
    events_page_size: int = 100

    def __post_init__(self) -> None:
        if not (self.claim_timeout > 0 and self.transfer_timeout > 0 and self.events_timeout > 0
                and self.reconcile_interval > 0):
            raise ValueError("national timeouts and reconcile interval must be positive")
        if not 1 <= self.events_page_size <= 1000:
            raise ValueError("national events page size must be 1 to 1000")


class ClaimOutcome(str, enum.Enum):
    CLAIMED = "claimed"  # the documents are (now) held by the identity asked for
    HELD = "held"  # another identity holds a document; nothing was stored nationally
    MERGED = "merged"  # a provisional claim collided: one identity survives (Claim.main_index_id)


@dataclass(frozen=True, slots=True)
class Claim:
    """The national answer to a claim: the identity holding the documents and its home province."""

    outcome: ClaimOutcome
    main_index_id: str
    home_province: str


class ConsentMethod(str, enum.Enum):
    IN_PERSON = "in_person"
    APP = "app"


@dataclass(frozen=True, slots=True)
class Consent:
    """A resident's consent to move here, as this province recorded it (validated at the wire)."""

    method: ConsentMethod
    given_at: dt.datetime
    reference: str


class EventKind(str, enum.Enum):
    MERGED_AWAY = "merged_away"
    ABSORBED = "absorbed"
    MOVED_AWAY = "moved_away"


@dataclass(frozen=True, slots=True)
class NationalEvent:
    """One national event for this province (``kind`` None: a kind this software does not know)."""

    sequence: int
    kind: EventKind | None
    main_index_id: str
    other_main_index_id: str
    other_province: str


def document_pb(document: Document) -> common_pb2.Document:
    """The wire form of a validated document (a number travels only inside a Document, over TLS)."""
    return common_pb2.Document(type=common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{DocumentType(document.type).name}"),
                               number=document.number, country=document.country or "")


def certificate_province(cert_pem: bytes) -> str | None:
    """The province a ``province:<code>`` client certificate names (its subject CN), else None."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    cn = names[0].value
    cn = cn.decode("utf-8", "replace") if isinstance(cn, bytes) else cn
    prefix, sep, code = cn.partition(":")
    return code if prefix == "province" and sep else None


class NationalClient:
    """Calls the national index. The channel opens on first use, in the running event loop."""

    def __init__(self, settings: NationalLinkSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _index(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            from national.api import national_index_pb2_grpc

            s = self.settings
            creds = grpc.ssl_channel_credentials(s.ca_pem, s.key_pem, s.cert_pem)
            # reconnect soon after a partition heals (gRPC's default backoff grows to two minutes)
            options: list[tuple[str, Any]] = [("grpc.initial_reconnect_backoff_ms", 200),
                                              ("grpc.max_reconnect_backoff_ms", 5000)]
            if s.server_name:
                options.append(("grpc.ssl_target_name_override", s.server_name))
            self._channel = grpc.aio.secure_channel(s.address, creds, options=options)
            self._stub = national_index_pb2_grpc.NationalIndexStub(self._channel)
            self._loop = loop
        return self._stub

    async def _call(self, method: str, request: Any, timeout: float) -> Any:
        try:
            return await getattr(self._index(), method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _TRANSIENT:
                info = received_error_info(exc)
                if info is not None and (info.domain, info.reason) == (_NATIONAL_DOMAIN, "PROVINCE_UNAVAILABLE"):
                    raise HomeProvinceUnavailable(info.metadata.get("province", "")) from None
                raise NationalUnavailable(f"national index unreachable ({exc.code().name})") from None
            raise NationalRefused(f"national index: {exc.details() or exc.code().name}", exc.code().name) from None

    async def claim(self, main_index_id: str, documents: Sequence[Document], *, provisional: bool,
                    registered_at: dt.datetime) -> Claim:
        """ClaimIdentity: every document for ``main_index_id``, homed here, all or none."""
        from national.api import national_index_pb2 as pb

        request = pb.ClaimIdentityRequest(main_index_id=main_index_id, documents=[document_pb(d) for d in documents],
                                          provisional=provisional)
        request.registered_at.FromSeconds(int(registered_at.timestamp()))
        reply = await self._call("ClaimIdentity", request, self.settings.claim_timeout)
        outcome = {pb.CLAIM_OUTCOME_CLAIMED: ClaimOutcome.CLAIMED, pb.CLAIM_OUTCOME_HELD: ClaimOutcome.HELD,
                   pb.CLAIM_OUTCOME_MERGED: ClaimOutcome.MERGED}.get(reply.outcome)
        if outcome is None:
            raise NationalRefused("national index answered a claim with no outcome", "UNKNOWN")
        return Claim(outcome, reply.main_index_id, reply.home_province)

    async def transfer(self, main_index_id: str, document: Document, consent: Consent) -> str:
        """TransferResident with the resident's consent; returns the province they moved from."""
        from national.api import national_index_pb2 as pb

        method = {ConsentMethod.IN_PERSON: common_pb2.CONSENT_METHOD_IN_PERSON,
                  ConsentMethod.APP: common_pb2.CONSENT_METHOD_APP}
        request = pb.TransferResidentRequest(main_index_id=main_index_id, document=document_pb(document),
                                             consent=common_pb2.Consent(method=method[consent.method],
                                                                        reference=consent.reference))
        request.consent.given_at.FromSeconds(int(consent.given_at.timestamp()))
        reply = await self._call("TransferResident", request, self.settings.transfer_timeout)
        return str(reply.previous_province)

    async def events(self, *, after: int) -> list[NationalEvent]:
        """ListEvents: this province's events after sequence ``after``, oldest first."""
        from national.api import national_index_pb2 as pb

        kinds = {pb.EVENT_KIND_MERGED_AWAY: EventKind.MERGED_AWAY, pb.EVENT_KIND_ABSORBED: EventKind.ABSORBED,
                 pb.EVENT_KIND_MOVED_AWAY: EventKind.MOVED_AWAY}
        reply = await self._call("ListEvents", pb.ListEventsRequest(after_sequence=after,
                                                                    page_size=self.settings.events_page_size),
                                 self.settings.events_timeout)
        return [NationalEvent(e.sequence, kinds.get(e.kind), e.main_index_id, e.other_main_index_id, e.other_province)
                for e in reply.events]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
