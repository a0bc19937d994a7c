"""Pure verification of the trust data a sync committed: bytes in, verified metadata and key lists out.

No clock and no I/O but the ``get`` callable that returns an object's bytes: the same
checks run after a refresh (on what is about to be committed) and offline, when a
terminal loads its cache (:meth:`verifier.trustsync.TrustSync.load_cached`), so what
is committed always loads. The steps, numbered as in :func:`verify_bundle`:

1. the root chain from the bootstrap root, each version signed by the old and the new keys;
2. timestamp, snapshot and national targets, each signed by the root's keys for it, their
   versions and hashes chained;
3. each province's role signed under its national delegation
   (:func:`verify_province_role`, also the check of the revocation files), and its
   key list matching the role's hash (:func:`verify_province`).

Expiry is not judged here: python-tuf judges it while fetching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import DelegatedRole, Metadata, Root, Signed, Snapshot, Targets, Timestamp

from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from healthcode.keyring import Keyring

from .errors import SyncError, TrustDataError
from .sync_state import SyncState

__all__ = ["verify_bundle", "verify_national", "verify_province_role", "verify_province", "keyring_of",
           "expect_type"]

def verify_bundle(
    bootstrap: bytes, state: SyncState, get: Callable[[str], bytes]
) -> dict[str, KeyList]:
    """Re-verify a committed state: bytes in, key lists out (no clock, no I/O but ``get``).

    (1)-(2) the national metadata (:func:`verify_national`); (3) each
    province's role metadata signed under its national delegation and its key
    list matching the role's hash (:func:`verify_province`).
    """
    targets, snapshot = verify_national(bootstrap, state, get)
    # (3) provinces
    return {
        code: verify_province(targets, code, get(rec.role), get(rec.keys), snapshot=snapshot, exact=False)
        for code, rec in state.provinces.items()
    }


def verify_national(
    bootstrap: bytes, state: SyncState, get: Callable[[str], bytes]
) -> tuple[Targets, Snapshot]:
    """(1) the root chain from the bootstrap, each version signed by the old and
    the new root keys; (2) timestamp, snapshot (hash and version from the
    timestamp) and national targets (version from the snapshot), each signed
    by the root's keys for it. Returns the verified targets and snapshot.
    """
    try:
        # (1) root chain
        md = Metadata[Root].from_bytes(bootstrap)
        root = md.signed
        for object_id in state.roots:
            new = Metadata[Root].from_bytes(get(object_id))
            expect_type(new, Root)
            if new.signed.version <= root.version:
                continue  # the bootstrap is newer than this link
            if new.signed.version != root.version + 1:
                raise TrustDataError(f"root chain skips from v{root.version} to v{new.signed.version}")
            root.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            new.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            root = new.signed
        # (2) top-level roles
        timestamp = Metadata[Timestamp].from_bytes(get(state.timestamp))
        expect_type(timestamp, Timestamp)
        root.verify_delegate(Timestamp.type, timestamp.signed_bytes, timestamp.signatures)
        snapshot_bytes = get(state.snapshot)
        timestamp.signed.snapshot_meta.verify_length_and_hashes(snapshot_bytes)
        snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes)
        expect_type(snapshot, Snapshot)
        root.verify_delegate(Snapshot.type, snapshot.signed_bytes, snapshot.signatures)
        if snapshot.signed.version != timestamp.signed.snapshot_meta.version:
            raise TrustDataError("snapshot version differs from the timestamp's")
        targets_bytes = get(state.targets)
        targets = Metadata[Targets].from_bytes(targets_bytes)
        expect_type(targets, Targets)
        root.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
        info = snapshot.signed.meta.get("targets.json")
        if info is None or info.version != targets.signed.version:
            raise TrustDataError("targets version differs from the snapshot's")
        info.verify_length_and_hashes(targets_bytes)
    except SyncError:
        raise
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"cached trust data does not verify: {exc}") from None
    return targets.signed, snapshot.signed


def verify_province_role(
    national: Targets,
    snapshot: Snapshot,
    code: str,
    role_bytes: bytes,
    *,
    probe: str,
    exact: bool = False,
) -> Targets:
    """A province role's metadata, if ``province-<code>`` signed it under ``national``'s delegation.

    Pure: bytes in, verified ``Targets`` out; the one check behind both the key
    lists (:func:`verify_province`) and the revocation files
    (:mod:`verifier.revocation_sync`). The role must be the first one a lookup
    of ``probe`` (a target path of the province) reaches in the national
    targets, be signed by a threshold of its current keys, and list nothing
    outside its delegation (TUF would only ignore such files; a province key
    signing them is misbehaving, so the role is refused as a whole). ``exact``
    requires the role's version to be the snapshot's (a fresh fetch);
    otherwise it may be older (a province kept at its last good state).
    Expiry is not judged here (as :meth:`TrustSync.load_cached`).
    """
    role = f"province-{code}"
    try:
        delegations = national.delegations
        first = next(delegations.get_roles_for_target(probe), None) if delegations is not None else None
        if first is None or first[0] != role:
            raise TrustDataError(f"{probe} is not delegated to {role}")
        md = Metadata[Targets].from_bytes(role_bytes)
        expect_type(md, Targets)
        national.verify_delegate(role, md.signed_bytes, md.signatures)
        delegation = cast(DelegatedRole, national.get_delegated_role(role))  # a delegation of targets
        outside = sorted(p for p in md.signed.targets if not delegation.is_delegated_path(p))
        if outside:
            raise TrustDataError(f"{role} signs {', '.join(outside[:3])}, outside its delegation")
        meta = snapshot.meta.get(f"{role}.json")
        if meta is None or md.signed.version > meta.version or (exact and md.signed.version != meta.version):
            raise TrustDataError(f"{role} v{md.signed.version} is not the snapshot's version")
        return md.signed
    except SyncError:
        raise
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"{role}: {exc}") from None


def verify_province(
    national: Targets,
    code: str,
    role_bytes: bytes,
    keys_bytes: bytes,
    *,
    snapshot: Snapshot,
    exact: bool,
) -> KeyList:
    """A province's key list, if its role verifies (:func:`verify_province_role`) and lists it."""
    path = f"provinces/{code}/keys.json"
    role = verify_province_role(national, snapshot, code, role_bytes, probe=path, exact=exact)
    try:
        info = role.targets.get(path)
        if info is None:
            raise TrustDataError(f"province-{code} does not list {path}")
        info.verify_length_and_hashes(keys_bytes)
        return parse_key_list(keys_bytes, province=code)
    except SyncError:
        raise
    except InvalidKeyList as exc:
        raise TrustDataError(f"{path}: {exc}") from None
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"province-{code}: {exc}") from None


def keyring_of(lists: Mapping[str, KeyList]) -> Keyring:
    return Keyring(key for code in sorted(lists) for key in lists[code].trusted_keys())


def expect_type(md: Metadata, kind: type[Signed]) -> None:
    if md.signed.type != kind.type:
        raise TrustDataError(f"expected {kind.type} metadata, got {md.signed.type}")
