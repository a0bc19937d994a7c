"""Value types of the issuer's domain (never protobuf types: ``issuer/wire.py`` and the servicers convert)."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import NewType

#: A client's idempotency key, as :func:`parse_idempotency_key` accepted it.
IdempotencyKey = NewType("IdempotencyKey", str)

#: The one rule (docs/api.md, "Idempotency"): 8 to 128 characters of ``A-Z a-z 0-9 . _ : -``.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{8,128}")
IDEMPOTENCY_KEY_RULE = "idempotency key must be 8 to 128 characters of A-Z a-z 0-9 . _ : -"


def parse_idempotency_key(value: object) -> IdempotencyKey:
    """``value`` as an :data:`IdempotencyKey`; :class:`ValueError` saying :data:`IDEMPOTENCY_KEY_RULE` if not.

    The wire parses a request's key with this once (``issuer/wire.py``); the domain takes the result.
    """
    if not isinstance(value, str) or IDEMPOTENCY_KEY_PATTERN.fullmatch(value) is None:
        raise ValueError(IDEMPOTENCY_KEY_RULE)
    return IdempotencyKey(value)


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


class NationalState(str, enum.Enum):
    """Where a resident entry stands with the national index (issue 14). Stored values.

    ``local``: registered without a national link (claimed as provisional once
    one is configured); ``pending``: written, its claim in flight (never
    acknowledged; removed if the claim finds the documents held elsewhere);
    ``provisional``: acknowledged while the national index was unreachable;
    ``claimed``: held nationally by this province; ``moved``: released to
    another province (``home_province``); ``merged``: merged away nationally
    (``merged_into`` the survivor, homed in ``home_province`` or here);
    ``foreign``: a stand-in for another province's surviving entry, which a
    merged entry here points to.
    """

    LOCAL = "local"
    PENDING = "pending"
    PROVISIONAL = "provisional"
    CLAIMED = "claimed"
    MOVED = "moved"
    MERGED = "merged"
    FOREIGN = "foreign"


#: The states whose entries take no new code or document here: they live in another province.
ELSEWHERE = frozenset({NationalState.MOVED, NationalState.FOREIGN})
