"""The one error root of ``publisher/``, and its stable reason codes.

A refused push is a :class:`PushRefused` with one :class:`Reason`; its value is
the stable lower-case string that the gRPC status carries (google.rpc.ErrorInfo
reason), that the log line names and that the proto documents. Messages name
the province, role versions and target paths, never key material.
"""

from __future__ import annotations

import enum

__all__ = ["Reason", "PublisherError", "PushRefused", "ConfigError", "PublisherUnavailable"]


class Reason(enum.Enum):
    """Why a push was refused. Grouped by cause: who pushes, what it holds, where it stands."""

    OTHER_PROVINCE = "other_province"  # the caller pushes a role that is not its own
    TOO_LARGE = "too_large"  # a role, file or the push over its cap (checked before parsing)
    MALFORMED = "malformed"  # the role does not parse as TUF targets metadata, or a field is empty
    TARGET_MISMATCH = "target_mismatch"  # a file's bytes do not match what the role lists (truncated?)
    OUTSIDE_DELEGATION = "outside_delegation"  # a listed or unlisted file outside provinces/<code>/
    BAD_SIGNATURE = "bad_signature"  # not a threshold of the province's current keys
    BAD_KEY_LIST = "bad_key_list"  # keys.json is not the province's, or does not raise the serial
    EXPIRED = "expired"  # the role has already expired: terminals would refuse it
    NOT_DELEGATED = "not_delegated"  # the national targets delegates nothing to this province
    ROLLED_BACK = "rolled_back"  # a version not above the accepted one
    REPLAYED = "replayed"  # an older accepted role sent again
    MISSING_TARGET = "missing_target"  # a listed file the publisher lacks and the push did not carry


class PublisherError(Exception):
    """Root of every error raised by :mod:`publisher`. ``reason`` is stable."""

    reason = "internal"


class PushRefused(PublisherError):
    """A push the publisher will not publish; nothing was stored."""

    def __init__(self, reason: Reason, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason
        self.reason = reason.value
        self.message = message
        self.field = field  # the request field at fault, for a BadRequest violation


class ConfigError(PublisherError, ValueError):
    """The publisher's or a pusher's settings are incomplete or inconsistent; the message says which."""

    reason = "config"


class PublisherUnavailable(PublisherError):
    """The publisher could not be reached or did not answer in time (a pusher retries)."""

    reason = "unavailable"
