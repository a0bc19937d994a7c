"""What the store does for the national index (issue 14), written once in SQL like :mod:`issuer.store.sql`.

:class:`NationalStatements` is a mixin of :class:`~issuer.store.sql.SQLStore`
implementing the national part of :class:`~issuer.store.base.Store`:

* each entry's standing (``residents.national_state``, see
  :class:`~issuer.model.NationalState`): the reconciler's scan of the entries
  still to claim, a state changed only from the states expected, a refused
  ``pending`` entry removed;
* what the national index tells a province, each one transaction and
  idempotent: an entry merged away into a survivor (its live codes revoked as
  merged), an entry released to the province it moved to (its live codes
  superseded), an entry adopted under its existing main index ID;
* the resident's access log (table ``accesses``, no document number), and the
  cursor of national events applied (table ``national_cursor``).

Tables: migration ``national`` of :mod:`issuer.store.schema`.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import Conflict
from ..model import NationalState, RevocationReason
from .base import (
    AccessRecord,
    DuplicateIdentifier,
    PresentationResolved,
    IdentifierRecord,
    ResidentMerged,
    ResidentNotFound,
    ResidentRecord,
)

__all__ = ["NationalStatements", "PRESENTATION_MEMORY"]

#: How long a resolved live code is remembered: far longer than a presentation is accepted (about 90 s).
PRESENTATION_MEMORY = dt.timedelta(minutes=10)

_UNCLAIMED = (NationalState.LOCAL.value, NationalState.PENDING.value, NationalState.PROVISIONAL.value)
_ACCESS_COLUMNS = "access_id, main_index_id, hospital_organisation, hospital_province, purpose, resolved_at, code_kind"
_REVOKE_LIVE = ("UPDATE codes SET revoked_at = ?, revocation_reason = ? "
                "WHERE main_index_id = ? AND revoked_at IS NULL AND expires_at > ?")
_STANDING = "SELECT merged_into, national_state, home_province FROM residents WHERE main_index_id = ?"
_CURSOR = "events"


class NationalStatements:
    """The national index's statements over the store's dialect (a mixin of ``SQLStore``)."""

    if TYPE_CHECKING:  # provided by SQLStore
        _q: Callable[[str], str]
        _t: Callable[[dt.datetime], object]
        _cache_lock: Any
        _merged: set[str]
        dialect: Any

        def _one(self, statement: str, params: Sequence[object]) -> Any: ...
        def _all(self, statement: str, params: Sequence[object]) -> Sequence[Any]: ...
        def _operation(self, run: Callable[[Any], Any], after_commit: Any = None) -> Future[Any]: ...
        def _forget_active(self, main_index_id: str) -> None: ...
        def _resident_record(self, row: Sequence[Any]) -> ResidentRecord: ...
        def _identifier_params(self, i: IdentifierRecord, main_index_id: str) -> tuple[object, ...]: ...

    # -- standing

    def unclaimed_residents(self, *, limit: int,
                            after: tuple[dt.datetime, str] | None = None) -> list[ResidentRecord]:
        from .sql import RESIDENT_COLUMNS

        # a local merge's merged entry has no documents left to claim: its survivor claims them
        select = (f"SELECT {RESIDENT_COLUMNS} FROM residents WHERE national_state IN (?, ?, ?) "
                  "AND merged_into IS NULL")
        order = " ORDER BY created_at, main_index_id LIMIT ?"
        if after is None:
            rows = self._all(select + order, (*_UNCLAIMED, int(limit)))
        else:
            at = self._t(after[0])
            rows = self._all(select + " AND (created_at > ? OR (created_at = ? AND main_index_id > ?))" + order,
                             (*_UNCLAIMED, at, at, after[1], int(limit)))
        return [self._resident_record(row) for row in rows]

    def set_national_state(self, main_index_id: str, state: NationalState, *,
                           expect: Sequence[NationalState]) -> Future[bool]:
        expected = [NationalState(s).value for s in expect]
        sql = self._q(f"UPDATE residents SET national_state = ? WHERE main_index_id = ? "
                      f"AND national_state IN ({', '.join('?' * len(expected))})")
        params = (NationalState(state).value, main_index_id, *expected)

        def run(conn: Any) -> bool:
            return bool(expected) and conn.execute(sql, params).rowcount == 1

        return self._operation(run)

    def delete_pending(self, main_index_id: str) -> Future[bool]:
        q = self._q

        def run(conn: Any) -> bool:
            row = conn.execute(q("SELECT national_state FROM residents WHERE main_index_id = ?"),
                               (main_index_id,)).fetchone()
            if row is None or row[0] != NationalState.PENDING.value:
                return False
            # a pending entry was never acknowledged: nobody could have issued it a code or logged an access
            conn.execute(q("DELETE FROM challenges WHERE main_index_id = ?"), (main_index_id,))
            conn.execute(q("DELETE FROM identifiers WHERE main_index_id = ?"), (main_index_id,))
            conn.execute(q("DELETE FROM residents WHERE main_index_id = ?"), (main_index_id,))
            return True

        return self._operation(run)

    # -- what the national index decided

    def merge_away(self, *, merged: str, survivor: str, survivor_province: str | None,
                   at: dt.datetime) -> Future[int]:
        now = self._t(at)
        q = self._q

        def run(conn: Any) -> int:
            if merged == survivor:
                raise Conflict("cannot merge a resident into itself")
            row = conn.execute(q(_STANDING), (merged,)).fetchone()
            if row is None:
                raise ResidentNotFound("merged resident not found")
            if row[0] is not None:
                if row[0] == survivor:
                    return 0  # applied already
                raise ResidentMerged("merged resident was merged into another entry")
            if conn.execute(q("SELECT 1 FROM residents WHERE main_index_id = ?"), (survivor,)).fetchone() is None:
                conn.execute(q("INSERT INTO residents (main_index_id, created_at, national_state, home_province) "
                               "VALUES (?, ?, ?, ?)"), (survivor, now, NationalState.FOREIGN.value, survivor_province))
            conn.execute(q("UPDATE residents SET merged_into = ?, merged_at = ?, national_state = ?, home_province = ? "
                           "WHERE main_index_id = ?"),
                         (survivor, now, NationalState.MERGED.value, survivor_province, merged))
            return int(conn.execute(q(_REVOKE_LIVE), (now, RevocationReason.MERGED.value, merged, now)).rowcount)

        return self._operation(run, lambda _: self._forget_active(merged))

    def release_resident(self, main_index_id: str, *, to_province: str, consent_reference: str,
                         at: dt.datetime) -> Future[int]:
        now = self._t(at)
        q = self._q

        def run(conn: Any) -> int:
            row = conn.execute(q(_STANDING), (main_index_id,)).fetchone()
            if row is None or row[1] == NationalState.FOREIGN.value:
                raise ResidentNotFound("resident not found")
            if row[0] is not None:
                raise ResidentMerged("resident was merged into another entry")
            if row[1] == NationalState.MOVED.value and row[2] == to_province:
                return 0  # released already
            conn.execute(q("UPDATE residents SET national_state = ?, home_province = ?, moved_at = ?, "
                           "move_consent = ? WHERE main_index_id = ?"),
                         (NationalState.MOVED.value, to_province, now, consent_reference, main_index_id))
            return int(conn.execute(q(_REVOKE_LIVE),
                                    (now, RevocationReason.SUPERSEDED.value, main_index_id, now)).rowcount)

        return self._operation(run, lambda _: self._forget_active(main_index_id))

    def adopt_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        mid = resident.main_index_id
        rows = [self._identifier_params(i, mid) for i in identifiers]
        created = self._t(resident.created_at)
        q = self._q

        def run(conn: Any) -> None:
            row = conn.execute(q(_STANDING), (mid,)).fetchone()
            holders = [conn.execute(q("SELECT main_index_id FROM identifiers WHERE blind_index = ?"),
                                    (r[0],)).fetchone() for r in rows]
            for position, holder in enumerate(holders):
                if holder is not None and holder[0] != mid:
                    raise DuplicateIdentifier(position)
            if row is None:
                conn.execute(q("INSERT INTO residents (main_index_id, created_at, national_state) VALUES (?, ?, ?)"),
                             (mid, created, NationalState.CLAIMED.value))
            elif row[0] is not None:
                raise ResidentMerged("resident was merged into another entry")
            else:  # moving back, or the survivor of a merge moving here: ours again
                conn.execute(q("UPDATE residents SET national_state = ?, home_province = NULL, moved_at = NULL, "
                               "move_consent = NULL WHERE main_index_id = ?"), (NationalState.CLAIMED.value, mid))
                conn.execute(q("UPDATE identifiers SET is_primary = ? WHERE main_index_id = ?"), (False, mid))
            for params, holder in zip(rows, holders, strict=True):
                if holder is None:
                    conn.execute(q("INSERT INTO identifiers (blind_index, doc_type, sealed, main_index_id, is_primary, "
                                   "created_at) VALUES (?, ?, ?, ?, ?, ?)"), params)
                else:
                    conn.execute(q("UPDATE identifiers SET is_primary = ? WHERE blind_index = ?"),
                                 (params[4], params[0]))

        return self._operation(run, lambda _: self._reactivate(mid))

    def _reactivate(self, main_index_id: str) -> None:
        """An entry that moved away and came back takes codes again (see ``SQLStore.screen``)."""
        with self._cache_lock:
            self._merged.discard(main_index_id)

    # -- the access log

    def record_access(self, record: AccessRecord) -> Future[None]:
        r = record
        params = (r.access_id, r.main_index_id, r.hospital_organisation, r.hospital_province, int(r.purpose),
                  self._t(r.resolved_at), r.code_kind)
        sql = self._q(f"INSERT INTO accesses ({_ACCESS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)")
        q = self._q
        at = self._t(r.resolved_at)
        forget_before = self._t(r.resolved_at - PRESENTATION_MEMORY)

        def run(conn: Any) -> None:
            known = conn.execute(q("SELECT 1 FROM residents WHERE main_index_id = ?"), (r.main_index_id,)).fetchone()
            if known is None:
                raise ResidentNotFound("resident not found")
            if r.presentation is not None:  # once, whichever process answers: the primary key decides
                conn.execute(q("DELETE FROM presentations_resolved WHERE resolved_at < ?"), (forget_before,))
                added = conn.execute(q("INSERT INTO presentations_resolved (presentation, resolved_at) VALUES (?, ?) "
                                       "ON CONFLICT (presentation) DO NOTHING"), (r.presentation, at))
                if added.rowcount == 0:
                    raise PresentationResolved("this live code was resolved already")
            conn.execute(sql, params)

        return self._operation(run)

    def accesses_of(self, main_index_id: str, *, limit: int,
                    before: tuple[dt.datetime, str] | None = None) -> list[AccessRecord]:
        select = f"SELECT {_ACCESS_COLUMNS} FROM accesses WHERE main_index_id = ?"
        order = " ORDER BY resolved_at DESC, access_id DESC LIMIT ?"
        if before is None:
            rows = self._all(select + order, (main_index_id, int(limit)))
        else:
            at = self._t(before[0])
            rows = self._all(select + " AND (resolved_at < ? OR (resolved_at = ? AND access_id < ?))" + order,
                             (main_index_id, at, at, before[1], int(limit)))
        value = self.dialect.time_value
        return [AccessRecord(a, m, org, prov, int(purpose), value(at_), kind)
                for a, m, org, prov, purpose, at_, kind in rows]

    # -- the national events' cursor

    def national_cursor(self) -> int:
        row = self._one("SELECT sequence FROM national_cursor WHERE name = ?", (_CURSOR,))
        return 0 if row is None else int(row[0])

    def advance_national_cursor(self, sequence: int) -> Future[None]:
        greatest = self.dialect.greatest
        sql = self._q("INSERT INTO national_cursor (name, sequence) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                      f"SET sequence = {greatest}(national_cursor.sequence, excluded.sequence)")

        def run(conn: Any) -> None:
            conn.execute(sql, (_CURSOR, int(sequence)))

        return self._operation(run)
