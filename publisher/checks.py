"""The checks of one province push: bytes in, a :class:`CheckedPush` out, or :class:`PushRefused`.

Pure but for two callables the store passes in (``held``: does the publisher
already hold a target; ``was_accepted``: is this an older accepted role). The
steps, numbered as in :func:`check_push`:

1. the caller pushes its own province (certificate CN ``province:<code>``);
2. sizes are capped before anything is parsed (role, each file, the whole push);
3. the role parses as TUF targets metadata, its version fits the staged file's
   name (below 10**12), and it does not expire within ``min_validity`` (the
   batch window and one timestamp refresh: it must outlive its publication);
4. the national targets delegates ``provinces/<code>/`` to ``province-<code>``
   first, a threshold of the province's current keys signed the role, and the
   role lists nothing outside its delegation, nor any path the repository's
   writer refuses (:func:`province_file`);
5. versions only go up: the exact role accepted before is an idempotent retry,
   an older accepted role sent again is ``replayed``, any other version not
   above the accepted one is ``rolled_back``;
6. every file carried is listed by the role with exactly its length and hash
   (a truncated upload fails here), and every listed file not carried is held;
7. a new key list parses as the province's and raises its serial;
8. unlisted files are revocation files below ``provinces/<code>/revocation/``,
   named as the writer requires (:func:`province_file`);
9. last, the verifier's own check of a province role
   (:func:`verifier.tuf_verify.verify_province_role`) over the role as the
   next snapshot will name it: nothing is accepted that a terminal refuses.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import DelegatedRole, Metadata, MetaFile, Snapshot, TargetFile, Targets

from healthcode.errors import InvalidClaims
from healthcode.keylist import InvalidKeyList, parse_key_list
from healthcode.model import parse_province
from keys.errors import TrustRepoError
from keys.trustrepo_files import HASHED_NAME, KEY_LIST_NAME, province_role, province_target_path

from .errors import PushRefused, Reason

__all__ = ["Limits", "DEFAULT_LIMITS", "CheckedPush", "Accepted", "check_push", "role_digest", "province_file",
           "MAX_VERSION", "DEFAULT_MIN_VALIDITY"]


@dataclass(frozen=True)
class Limits:
    """Size caps, checked before parsing. The gRPC message cap is ``max_push_bytes`` plus framing."""

    max_role_bytes: int = 1 << 20
    max_file_bytes: int = 16 << 20
    max_push_bytes: int = 32 << 20
    max_files: int = 4096


#: The caps by default (frozen, so one shared instance is safe).
DEFAULT_LIMITS = Limits()
#: Role versions go up to this, exclusive: a staged push is named ``<code>-<version:012d>.push``.
MAX_VERSION = 10**12
#: A role must not expire sooner than this after it is pushed: the default batch window (0.5 s) and
#: timestamp refresh (60 min), rounded up. The server passes its configured sum.
DEFAULT_MIN_VALIDITY = _dt.timedelta(hours=1, seconds=1)

@dataclass(frozen=True)
class Accepted:
    """The newest role accepted for a province (staged or published): its version and SHA-256."""

    version: int
    sha256: str


@dataclass(frozen=True)
class CheckedPush:
    """A push that passed every check: what the store writes."""

    province: str
    version: int
    role_bytes: bytes
    role: Targets
    targets: Mapping[str, bytes]  # listed files carried, by target path, each verified
    unlisted: Mapping[str, bytes]  # the province's complete unlisted revocation files, by target path
    already_accepted: bool  # the exact role accepted before: nothing to store


def role_digest(role_bytes: bytes) -> str:
    return hashlib.sha256(role_bytes).hexdigest()


def province_file(code: str, path: str) -> bool:
    """Whether the repository can write ``path`` as a file of province ``code``: ``provinces/<code>/``
    then 1 to 3 segments of ``[A-Za-z0-9._-]`` (up to 100 characters), none empty or starting with a
    dot, so no ``..``, NUL or space (the writer's own rule, :func:`keys.trustrepo_files.province_target_path`)."""
    prefix = f"provinces/{code}/"
    if not path.startswith(prefix):
        return False
    try:
        return province_target_path(code, path[len(prefix):]) == path
    except TrustRepoError:
        return False


def check_push(
    *,
    caller_province: str,
    province: str,
    role_bytes: bytes,
    targets: Sequence[tuple[str, bytes]],
    unlisted: Sequence[tuple[str, bytes]],
    national: Targets,
    accepted: Accepted | None,
    key_list_serial: int | None,
    held: Callable[[TargetFile], bool],
    was_accepted: Callable[[int, bytes], bool],
    now: _dt.datetime,
    limits: Limits = DEFAULT_LIMITS,
    min_validity: _dt.timedelta = DEFAULT_MIN_VALIDITY,
) -> CheckedPush:
    """Check one push of ``province``'s role by ``caller_province`` (module docstring, steps 1-9).

    ``national`` is the newest national targets; ``accepted`` the province's
    newest accepted role; ``key_list_serial`` the highest key-list serial it
    published; ``held(info)`` whether the publisher holds the bytes of a listed
    target; ``was_accepted(version, role_bytes)`` whether exactly that role
    was accepted before; ``min_validity`` how long the role must still be
    valid after ``now``. Raises :class:`PushRefused`.
    """
    # (1) whose role
    try:
        code = parse_province(province)
    except InvalidClaims:
        raise PushRefused(Reason.MALFORMED, "province must be a two-digit GB/T 2260 code", field="province") from None
    if code != caller_province:
        raise PushRefused(Reason.OTHER_PROVINCE,
                          f"province {caller_province} may push only its own role, not province-{code}",
                          field="province")
    role_name = province_role(code)
    # (2) sizes, before parsing
    if not role_bytes:
        raise PushRefused(Reason.MALFORMED, "role_metadata is empty", field="role_metadata")
    if len(role_bytes) > limits.max_role_bytes:
        raise PushRefused(Reason.TOO_LARGE, f"{role_name}: {len(role_bytes)} bytes, over the cap of "
                          f"{limits.max_role_bytes}", field="role_metadata")
    if len(targets) + len(unlisted) > limits.max_files:
        raise PushRefused(Reason.TOO_LARGE, f"{len(targets) + len(unlisted)} files, over the cap of "
                          f"{limits.max_files}", field="targets")
    total = len(role_bytes)
    for field, files in (("targets", targets), ("unlisted", unlisted)):
        for path, data in files:
            if len(data) > limits.max_file_bytes:
                raise PushRefused(Reason.TOO_LARGE, f"{path}: {len(data)} bytes, over the cap of "
                                  f"{limits.max_file_bytes}", field=field)
            total += len(data)
    if total > limits.max_push_bytes:
        raise PushRefused(Reason.TOO_LARGE, f"the push holds {total} bytes, over the cap of {limits.max_push_bytes}")
    # (3) parse
    try:
        md = Metadata[Targets].from_bytes(role_bytes)
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError):
        raise PushRefused(Reason.MALFORMED, f"{role_name}: not TUF targets metadata (truncated?)",
                          field="role_metadata") from None
    if md.signed.type != Targets.type:
        raise PushRefused(Reason.MALFORMED, f"{role_name}: {md.signed.type} metadata, not targets",
                          field="role_metadata")
    role = md.signed
    if role.version >= MAX_VERSION:
        raise PushRefused(Reason.MALFORMED, f"{role_name}: version {role.version} is not below {MAX_VERSION}",
                          field="role_metadata")
    if role.expires <= now:
        raise PushRefused(Reason.EXPIRED, f"{role_name} v{role.version} expired at {role.expires.isoformat()}")
    if role.expires < now + min_validity:
        raise PushRefused(Reason.EXPIRED, f"{role_name} v{role.version} expires at {role.expires.isoformat()}, "
                          f"within {min_validity} (before the next timestamp refresh): sign it for longer")
    # (4) delegation, signatures, paths
    delegations = national.delegations
    probe = f"provinces/{code}/{KEY_LIST_NAME}"
    first = next(delegations.get_roles_for_target(probe), None) if delegations is not None else None
    if first is None or first[0] != role_name:
        raise PushRefused(Reason.NOT_DELEGATED, f"provinces/{code}/ is not delegated to {role_name}")
    try:
        national.verify_delegate(role_name, md.signed_bytes, md.signatures)
    except tuf_errors.UnsignedMetadataError as exc:
        raise PushRefused(Reason.BAD_SIGNATURE, f"{role_name} v{role.version}: {exc}") from None
    delegation = cast(DelegatedRole, national.get_delegated_role(role_name))  # a delegation of targets
    outside = sorted(p for p in role.targets if not delegation.is_delegated_path(p) or not province_file(code, p))
    if outside:
        raise PushRefused(Reason.OUTSIDE_DELEGATION, f"{role_name} v{role.version} signs "
                          f"{', '.join(repr(p[:120]) for p in outside[:3])}, outside its delegation or not a "
                          f"file name the repository takes")
    # (5) versions only go up
    digest = role_digest(role_bytes)
    if accepted is not None and digest == accepted.sha256:
        return CheckedPush(code, role.version, role_bytes, role, {}, {}, already_accepted=True)
    if accepted is not None and role.version <= accepted.version:
        if was_accepted(role.version, role_bytes):
            raise PushRefused(Reason.REPLAYED, f"{role_name} v{role.version} was accepted before; "
                              f"v{accepted.version} is newer")
        raise PushRefused(Reason.ROLLED_BACK, f"{role_name} v{role.version} is not above v{accepted.version}, "
                          "the version accepted")
    # (6) the files carried and held
    carried: dict[str, bytes] = {}
    for path, data in targets:
        info = role.targets.get(path)
        if info is None:
            raise PushRefused(Reason.TARGET_MISMATCH, f"{path} is not listed by {role_name} v{role.version}",
                              field="targets")
        try:
            info.verify_length_and_hashes(data)
        except tuf_errors.LengthOrHashMismatchError:
            raise PushRefused(Reason.TARGET_MISMATCH, f"{path}: {len(data)} bytes that do not match the "
                              f"{info.length} bytes {role_name} lists (truncated?)", field="targets") from None
        carried[path] = data
    for path, info in role.targets.items():
        if path not in carried and not held(info):
            raise PushRefused(Reason.MISSING_TARGET, f"{path} is listed but neither held nor carried: "
                              "push again with every file")
    # (7) a new key list
    key_info = role.targets.get(probe)
    if key_info is not None and probe in carried and not held(key_info):
        try:
            serial = parse_key_list(carried[probe], province=code).serial
        except InvalidKeyList as exc:
            raise PushRefused(Reason.BAD_KEY_LIST, f"{probe}: {exc}", field="targets") from None
        if key_list_serial is not None and serial <= key_list_serial:
            raise PushRefused(Reason.BAD_KEY_LIST, f"{probe}: serial {serial} must exceed {key_list_serial}, "
                              "the highest published (terminals refuse lower serials)", field="targets")
    # (8) unlisted revocation files
    served: dict[str, bytes] = {}
    prefix = f"provinces/{code}/revocation/"
    for path, data in unlisted:
        name = path.rpartition("/")[2]
        segments = path.split("/")
        if (not path.startswith(prefix) or not 4 <= len(segments) <= 5 or not delegation.is_delegated_path(path)
                or not province_file(code, path) or HASHED_NAME.match(name)):
            raise PushRefused(Reason.OUTSIDE_DELEGATION, f"unlisted {path[:120]!r} is not a revocation file of "
                              f"province {code}", field="unlisted")
        served[path] = data
    # (9) the verifier's own check, as the next snapshot will name the role
    _verifier_check(national, code, role_bytes, role.version)
    return CheckedPush(code, role.version, role_bytes, role, carried, served, already_accepted=False)


def _verifier_check(national: Targets, code: str, role_bytes: bytes, version: int) -> None:
    from verifier.errors import SyncError
    from verifier.tuf_verify import verify_province_role

    snapshot = Snapshot(meta={f"{province_role(code)}.json": MetaFile(version=version)})
    try:
        verify_province_role(national, snapshot, code, role_bytes, probe=f"provinces/{code}/{KEY_LIST_NAME}",
                             exact=True)
    except SyncError as exc:
        raise PushRefused(Reason.BAD_SIGNATURE, f"a terminal would refuse it: {exc}") from None
