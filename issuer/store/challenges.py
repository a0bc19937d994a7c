"""What the store does for dynamic codes (issue 13), written once in SQL like :mod:`issuer.store.sql`.

:class:`WalletStatements` is a mixin of :class:`~issuer.store.sql.SQLStore`:

* the enrolment challenges of the Wallets API (:meth:`create_challenge`,
  :meth:`get_challenge`, :meth:`consume_challenge`), in table ``challenges``
  (migration ``wallets`` of :mod:`issuer.store.schema`): a challenge is
  usable once, before it expires, by the caller and for the resident it was
  made for;
* the two statements a code insertion runs in its own transaction when asked
  (:meth:`_consume_in`, :meth:`_replace_channel_in`): consuming the
  challenge, and superseding the resident's other live codes of the same
  channel (one live code per resident per channel).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..model import RevocationReason
from .base import ChallengeRecord, ChallengeRefused, ChallengeUse

__all__ = ["WalletStatements"]

_CHALLENGE_COLUMNS = "challenge, main_index_id, caller, created_at, expires_at, used_at"
_CONSUME = ("UPDATE challenges SET used_at = ? WHERE challenge = ? AND main_index_id = ? AND caller = ? "
            "AND used_at IS NULL AND expires_at > ?")
#: The resident's other live codes of the channel (the new code itself excluded: it may be inserted already).
_REPLACE_CHANNEL = (
    "UPDATE codes SET revoked_at = ?, revocation_reason = ? "
    "WHERE main_index_id = ? AND channel = ? AND revoked_at IS NULL AND expires_at > ? "
    "AND NOT (province = ? AND kid = ? AND serial = ?)"
)


class WalletStatements:
    """Challenges and channel replacement over the store's dialect (a mixin of ``SQLStore``)."""

    if TYPE_CHECKING:  # provided by SQLStore
        _q: Callable[[str], str]
        _t: Callable[[dt.datetime], object]
        dialect: Any

        def _one(self, statement: str, params: Sequence[object]) -> Any: ...
        def _operation(self, run: Callable[[Any], Any], after_commit: Any = None) -> Future[Any]: ...
        def _require_active(self, conn: Any, main_index_id: str, what: str = "resident") -> None: ...

    def create_challenge(self, record: ChallengeRecord) -> Future[None]:
        params = (record.challenge, record.main_index_id, record.caller, self._t(record.created_at),
                  self._t(record.expires_at), None)
        now = params[3]
        q = self._q

        def run(conn: Any) -> None:
            self._require_active(conn, record.main_index_id)
            conn.execute(q("DELETE FROM challenges WHERE expires_at <= ?"), (now,))
            conn.execute(q(f"INSERT INTO challenges ({_CHALLENGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"), params)

        return self._operation(run)

    def get_challenge(self, challenge: bytes) -> ChallengeRecord | None:
        row = self._one(f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE challenge = ?", (challenge,))
        if row is None:
            return None
        value = self.dialect.time_value
        challenge_, mid, caller, created_at, expires_at, used_at = row
        return ChallengeRecord(bytes(challenge_), mid, caller, value(created_at), value(expires_at),
                               None if used_at is None else value(used_at))

    def consume_challenge(self, use: ChallengeUse, *, at: dt.datetime) -> Future[bool]:
        now = self._t(at)
        return self._operation(lambda conn: self._consume_in(conn, use, now) == 1)

    # -- inside a code's transaction

    def _consume_in(self, conn: Any, use: ChallengeUse, now: object) -> int:
        return conn.execute(self._q(_CONSUME), (now, use.challenge, use.main_index_id, use.caller, now)).rowcount

    def _consume_or_refuse(self, conn: Any, use: ChallengeUse, now: object) -> None:
        if self._consume_in(conn, use, now) != 1:
            raise ChallengeRefused()

    def _replace_channel_in(self, conn: Any, params: Sequence[object]) -> int:
        """Supersede the other live codes of the new code's resident and channel (``params``: its insertion's)."""
        province, kid, serial, mid, issued_at = params[:5]
        channel = params[10]
        return conn.execute(self._q(_REPLACE_CHANNEL), (issued_at, RevocationReason.SUPERSEDED.value, mid, channel,
                                                         issued_at, province, kid, serial)).rowcount
