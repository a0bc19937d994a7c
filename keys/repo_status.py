"""What a trust repository publishes at a moment: ``healthcode-keys status``.

:func:`repository_status` reads the published metadata (through the timestamp
and snapshot, as a verifier would) and reports every role's version, expiry and
keys, newer versions written but not yet published, the delegated provinces and
each published key's state at ``now``, with warnings for what verifiers would
refuse or soon will. For people, times are also in Beijing time with human
durations: when the timestamp expires, how old each province's published role
is (from its file's modification time: when the province's push wrote it), and
any province role written (pushed) but not yet in the published snapshot.
:class:`RepoStatus` renders it for scripts and for people.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Mapping

from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp

from healthcode.keylist import parse_key_list
from shellkit.times import beijing, human_duration, iso_utc

from .ceremony import aware_utc
from .errors import TrustRepoError
from .province_keys import trusted_state
from .trustrepo import TrustRepository
from .trustrepo_files import KEY_LIST_NAME

__all__ = ["RepoStatus", "repository_status"]


@dataclass(frozen=True)
class RepoStatus:
    """What is in a repository at ``now``; :meth:`to_json` for scripts, :meth:`lines` for people."""

    directory: str
    now: _dt.datetime
    roles: Mapping[str, Mapping[str, Any]]
    provinces: Mapping[str, Mapping[str, Any]]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "now": iso_utc(self.now), "roles": self.roles,
                "provinces": self.provinces, "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        out = [f"trust repository {self.directory} at {iso_utc(self.now)} ({beijing(self.now)})"]
        for name, role in self.roles.items():
            keys = f"  {role['threshold']} of {role['keys']} keys" if "threshold" in role else ""
            unpublished = (f"  (v{role['newest_version']} written, not yet published)"
                           if role.get("newest_version", role["version"]) != role["version"] else "")
            out.append(f"  {name:<10} v{role['version']:<4} expires {role['expires']} "
                       f"({role['expires_in']}){keys}{unpublished}")
            if name == "timestamp":
                expires = _dt.datetime.fromisoformat(role["expires"].replace("Z", "+00:00"))
                out.append(f"  timestamp expires {beijing(expires)}, in {human_duration(expires - self.now)}")
        listed = f" ({', '.join(self.provinces)})" if self.provinces else ""
        out.append(f"  provinces: {len(self.provinces)}{listed}")
        for code, info in self.provinces.items():
            head = (f"  province {code}: role v{info['role_version']} ({info['threshold']} of {info['keys']} keys"
                    f", expires {info['expires']})" if info.get("role_version") else
                    f"  province {code}: no metadata yet ({info['threshold']} of {info['keys']} keys)")
            if info.get("serial") is not None:
                head += f", key list serial {info['serial']}, {len(info['key_list'])} keys"
            if info.get("published_at"):
                at = _dt.datetime.fromisoformat(info["published_at"].replace("Z", "+00:00"))
                head += f"; newest publication {human_duration(self.now - at)} ago ({beijing(at)})"
            if info.get("newest_version", 0) > info.get("role_version", 0):
                head += f"; PUSHED, NOT YET PUBLISHED: v{info['newest_version']}"
            out.append(head)
            for key in info.get("key_list", ()):
                extra = f", compromised since {key['compromised_since']}" if key["compromised_since"] else ""
                out.append(f"    {key['kid']} {key['algorithm']:<7} {key['state']:<12} signs {key['use_from']} .. "
                           f"{key['use_until']}, verifies until {key['verify_until']}{extra}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _left(expires: _dt.datetime, now: _dt.datetime) -> str:
    delta = expires - now
    if delta.total_seconds() < 0:
        return "EXPIRED"
    if delta >= _dt.timedelta(days=2):
        return f"{delta.days}d left"
    return f"{int(delta.total_seconds() // 3600)}h{int(delta.total_seconds() % 3600 // 60):02d}m left"


def repository_status(repo: TrustRepository, *, now: _dt.datetime) -> RepoStatus:
    """Versions, expiry and keys of every role as published (with newer unpublished versions noted),
    the provinces, and their published key lists with each key's state at ``now``."""
    now = aware_utc(now)
    metadata = repo.directory / "metadata"
    warnings: list[str] = []
    timestamp_path = metadata / "timestamp.json"
    if not timestamp_path.exists():
        raise TrustRepoError(f"{repo.directory}: nothing published (no timestamp.json)")
    timestamp = Metadata[Timestamp].from_bytes(timestamp_path.read_bytes()).signed
    snapshot = Metadata[Snapshot].from_bytes(
        (metadata / f"{timestamp.snapshot_meta.version}.snapshot.json").read_bytes()).signed
    root = repo.root()
    newest_targets = repo.targets()
    published_targets_version = snapshot.meta["targets.json"].version
    targets = Metadata[Targets].from_bytes((metadata / f"{published_targets_version}.targets.json").read_bytes()).signed
    roles: dict[str, dict[str, Any]] = {}
    for name, signed, extra in (
        ("root", root, {}),
        ("targets", targets, {"newest_version": newest_targets.version}),
        ("snapshot", snapshot, {}),
        ("timestamp", timestamp, {}),
    ):
        entry: dict[str, Any] = {"version": signed.version, "expires": iso_utc(signed.expires),
                                 "expires_in": _left(signed.expires, now), **extra}
        if name in root.roles:
            entry.update(threshold=root.roles[name].threshold, keys=len(root.roles[name].keyids))
        roles[name] = entry
        if signed.expires <= now:
            warnings.append(f"{name} v{signed.version} EXPIRED at {iso_utc(signed.expires)}: verifiers see a freeze")
    if timestamp.expires - now < _dt.timedelta(hours=6) and timestamp.expires > now:
        warnings.append("timestamp expires within 6 hours: run `healthcode-keys timestamp refresh`")
    provinces: dict[str, dict[str, Any]] = {}
    delegations = targets.delegations.roles if targets.delegations and targets.delegations.roles else {}
    for role_name, delegated in delegations.items():
        code = role_name.removeprefix("province-")
        info: dict[str, Any] = {"threshold": delegated.threshold, "keys": len(delegated.keyids)}
        meta = snapshot.meta.get(f"{role_name}.json")
        newest = repo.province_targets(code)
        if newest is not None and (meta is None or newest.version > meta.version):
            info["newest_version"] = newest.version  # written (pushed), not yet in the published snapshot
            warnings.append(f"{role_name} v{newest.version} is written but not published: the publisher "
                            "(healthcode-publisher serve) or `healthcode-keys publish` makes it visible")
        if meta is not None:
            role_file = metadata / f"{meta.version}.{role_name}.json"
            md = Metadata[Targets].from_bytes(role_file.read_bytes()).signed
            written_at = _dt.datetime.fromtimestamp(role_file.stat().st_mtime, _dt.timezone.utc)
            info.update(role_version=meta.version, expires=iso_utc(md.expires), published_at=iso_utc(written_at))
            path = f"provinces/{code}/{KEY_LIST_NAME}"
            if path in md.targets:
                key_list = parse_key_list(repo.target_bytes(path, md), province=code)
                info["serial"] = key_list.serial
                info["key_list"] = [
                    {"kid": k.kid.hex(), "algorithm": k.public_key.algorithm.value, "state": trusted_state(k, now),
                     "use_from": iso_utc(k.use_from), "use_until": iso_utc(k.use_until),
                     "verify_until": iso_utc(k.verify_until),
                     "compromised_since": iso_utc(k.compromised_since) if k.compromised_since else None}
                    for k in key_list.keys]
            if md.expires <= now:
                warnings.append(f"{role_name} v{meta.version} EXPIRED: the province must re-publish")
        provinces[code] = info
    return RepoStatus(str(repo.directory), now, roles, provinces, tuple(warnings))
