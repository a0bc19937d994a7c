"""What the repository no longer needs to serve: old snapshots, old province roles and their files.

Every publication adds a snapshot version and, per push, a province role
version and its changed files; nothing in :mod:`keys.trustrepo` ever deletes
one (a mirror must serve whatever a refreshing terminal was just told to
fetch). At the rate of 34 provinces pushing every minute that is about 50,000
files a day, and every publication scans the metadata directory.

:func:`prune` deletes, under the repository's lock:

1. snapshot versions and ``province-<code>`` role versions more than ``keep``
   versions older than the published one, **and** written more than
   ``retention`` ago (a terminal mid-refresh fetches what the snapshot it just
   read names: seconds, not a day);
2. a province's listed files (``targets/provinces/<code>/.../<SHA256>.<name>``)
   that no remaining role version lists, written more than ``retention`` ago.

Never deleted: roots (terminals walk the chain), national targets, the
timestamp, the published versions, unlisted revocation deltas (the province's
push keeps their set), and anything newer than ``retention``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from keys.trustrepo import TrustRepository
from keys.trustrepo_files import hashed_path

__all__ = ["Pruned", "prune", "DEFAULT_RETENTION", "DEFAULT_KEEP"]

#: Files younger than this are never pruned.
DEFAULT_RETENTION = _dt.timedelta(days=1)
#: Versions kept below the published one, whatever their age.
DEFAULT_KEEP = 10

_VERSIONED = re.compile(r"([1-9][0-9]{0,17})\.(snapshot|province-[0-9]{2})\.json")
_HASHED = re.compile(r"[0-9a-f]{64}\..+")


@dataclass(frozen=True)
class Pruned:
    """How many files :func:`prune` deleted."""

    snapshots: int
    roles: int
    targets: int


def _old(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def prune(repo: TrustRepository, *, now: _dt.datetime, retention: _dt.timedelta = DEFAULT_RETENTION,
          keep: int = DEFAULT_KEEP) -> Pruned:
    """Delete what no terminal can still be fetching (module docstring). The caller holds ``repo.lock()``."""
    if keep < 1 or retention < _dt.timedelta(0):
        raise ValueError("keep must be at least 1 and retention not negative")
    snapshot = repo._published_snapshot()
    if snapshot is None:
        return Pruned(0, 0, 0)
    cutoff = (now - retention).timestamp()
    metadata = repo.directory / "metadata"
    published = {"snapshot": snapshot.signed.version}
    for name, info in snapshot.signed.meta.items():
        published[name.removesuffix(".json")] = info.version
    deleted = {"snapshot": 0, "roles": 0}
    remaining: dict[str, list[Path]] = {}
    # (1) old versions
    with os.scandir(metadata) as entries:
        for entry in entries:
            match = _VERSIONED.fullmatch(entry.name)
            if match is None:
                continue
            version, role = int(match[1]), match[2]
            path = Path(entry.path)
            current = published.get(role)
            if current is not None and version < current - keep and _old(path, cutoff):
                path.unlink()
                deleted["snapshot" if role == "snapshot" else "roles"] += 1
            elif role != "snapshot":
                remaining.setdefault(role.removeprefix("province-"), []).append(path)
    # (2) files no remaining role version lists
    targets = 0
    for code, paths in remaining.items():
        listed = set()
        for path in paths:
            try:
                signed = json.loads(path.read_bytes())["signed"]
            except (OSError, ValueError, KeyError):
                continue  # deleted meanwhile, or unreadable: its files stay until the next run
            for target, info in signed.get("targets", {}).items():
                digest = info.get("hashes", {}).get("sha256")
                if digest:
                    listed.add(_hashed(target, digest))
        folder = repo.directory / "targets" / "provinces" / code
        for path in folder.rglob("*") if folder.is_dir() else ():
            if (path.is_file() and _HASHED.fullmatch(path.name)
                    and path.relative_to(repo.directory / "targets").as_posix() not in listed and _old(path, cutoff)):
                path.unlink()
                targets += 1
    return Pruned(deleted["snapshot"], deleted["roles"], targets)


def _hashed(target: str, digest: str) -> str:
    from tuf.api.metadata import TargetFile

    return hashed_path(TargetFile(length=0, hashes={"sha256": digest}, path=target))
