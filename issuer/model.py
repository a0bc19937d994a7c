"""Value types of the issuer's domain (never protobuf types: ``issuer/wire.py`` and the servicers convert)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class RevocationReason(str, enum.Enum):
    """Why a code was revoked. Stable values, stored and returned by the API."""

    LOST_DEVICE = "lost_device"
    DECEASED = "deceased"
    FRAUD = "fraud"
    MERGED = "merged"  # its resident was merged into another entry
    SUPERSEDED = "superseded"  # replaced by a renewed code
    KEY_COMPROMISE = "key_compromise"
    OTHER = "other"


class Channel(str, enum.Enum):
    """How a code reaches its holder; a resident has at most one live code per channel. Stored values."""

    PHONE = "phone"  # a credential bound to a device key (cnf), shown as dynamic presentations
    STATIC = "static"  # a static code: printed, or shown as a still image


class CodeState(str, enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class CodeRef:
    """Names one issued code: serials are unique within (province, signing key)."""

    province: str
    kid: bytes
    serial: int


@dataclass(frozen=True)
class IssuedCode:
    """An issued code as the issuer recorded it (durably, before anyone saw it), and its channel."""

    ref: CodeRef
    main_index_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    text: str
    revoked_at: dt.datetime | None = None
    revocation_reason: RevocationReason | None = None
    channel: Channel = Channel.STATIC

    def state(self, now: dt.datetime) -> CodeState:
        if self.revoked_at is not None:
            return CodeState.REVOKED
        return CodeState.VALID if now < self.expires_at else CodeState.EXPIRED
