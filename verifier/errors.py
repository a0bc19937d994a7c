"""The verifier's one error root, and every error it raises, each with a stable reason code.

:class:`VerifierError` is the root: the CLI (``verifier.__main__``) turns any of
them into one ``Error: ...`` line. ``reason`` is a stable, machine-readable code
(logs, tests); the message is for people and may change.

Two families sit below it, one per layer:

* the seam (:mod:`verifier.trust`), what the terminal sees of any trust source:
  :class:`TrustError` with :class:`SyncFailed` (transport), :class:`TrustDataRejected`
  (bad data) and :class:`NoTrustData` (nothing synced yet);
* the TUF trust sync (:mod:`verifier.trustsync`, :mod:`verifier.revocation_sync`):
  :class:`SyncError` with :class:`MirrorUnavailable` (transport), :class:`TrustDataError`
  (bad data; :class:`RollbackError` and :class:`TrustDataFrozen` its special cases) and
  :class:`NotSynced`. ``TufTrustSource`` maps these onto the seam's.

Whatever a sync raises, the last good state stays in force. This module imports
nothing of the verifier: every other module may import it.
"""

from __future__ import annotations

import datetime as _dt

from shellkit.times import iso_utc

__all__ = [
    "VerifierError",
    "TrustError",
    "SyncFailed",
    "TrustDataRejected",
    "NoTrustData",
    "SyncError",
    "MirrorUnavailable",
    "TrustDataError",
    "RollbackError",
    "TrustDataFrozen",
    "NotSynced",
]


class VerifierError(Exception):
    """Root of every error the verifier raises on purpose (``reason``: a stable code)."""

    reason = "verifier_error"


# ---------------------------------------------------------------------- the seam (verifier.trust)


class TrustError(VerifierError):
    """Root of the trust-data errors of the verifier's seam (:class:`verifier.trust.TrustSource`)."""

    reason = "trust_data"


class SyncFailed(TrustError):
    """The mirror could not be reached or read (transport); the cached data stays in force."""

    reason = "trust_sync_failed"


class TrustDataRejected(TrustError):
    """What the mirror or the cache holds is bad: unverifiable, rolled back, expired, corrupt."""

    reason = "trust_data_rejected"


class NoTrustData(TrustError):
    """Nothing verified is cached yet: a first sync is needed."""

    reason = "no_trust_data"


# ---------------------------------------------------------------------- the TUF trust sync


class SyncError(VerifierError):
    """Root of every trust sync failure. The last good state stays in force."""

    reason = "sync_failed"


class MirrorUnavailable(SyncError):
    """Transport: the mirror could not be reached or read (network, HTTP error, missing stick)."""

    reason = "transport"


class TrustDataError(SyncError):
    """The data are bad: a signature, hash, version, key list or the cache does not verify."""

    reason = "invalid"


class RollbackError(TrustDataError):
    """Older data than already verified was offered (metadata version or key list serial)."""

    reason = "rollback"


class TrustDataFrozen(TrustDataError):
    """The mirror offers only expired metadata: trust data are frozen at their last verified state."""

    reason = "frozen"

    def __init__(
        self,
        role: str,
        expired_at: _dt.datetime | None,
        last_verified_refresh: _dt.datetime | None,
    ) -> None:
        self.role = role
        self.expired_at = expired_at
        self.last_verified_refresh = last_verified_refresh
        expired = f" at {iso_utc(expired_at)}" if expired_at is not None else ""
        since = iso_utc(last_verified_refresh) if last_verified_refresh is not None else "never"
        super().__init__(
            f"trust data frozen: {role} metadata expired{expired}; "
            f"stale since the last verified refresh at {since}"
        )


class NotSynced(SyncError):
    """No verified trust data is cached yet: a first refresh is needed."""

    reason = "not_synced"
