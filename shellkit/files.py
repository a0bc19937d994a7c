"""Files on the host: owner-only by default, atomic when replaced, checked when secret.

Contracts:
- :func:`write_file_atomically` leaves the old file or the new one, never a mix, and
  never a temp file behind; the directory is fsynced so the rename survives a crash.
- :func:`create_private_file` / :func:`open_private` create files ``0600`` (owner
  read/write) and tighten an existing file that is wider.
- :func:`ensure_private_file` tightens a file some library created (SQLite's database,
  ``-wal`` and ``-shm``) to ``0600``.
- :func:`require_private` refuses a secret that group or others can read, naming the fix.
- :func:`read_config_file` reads a file a configuration names (optionally a secret), any
  failure raised as the caller's own configuration error.
- :func:`file_lock` holds an exclusive ``flock`` for a block.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Callable

__all__ = [
    "OWNER_ONLY",
    "InsecureFileMode",
    "write_file_atomically",
    "fsync_directory",
    "create_private_file",
    "open_private",
    "ensure_private_file",
    "require_private",
    "read_secret",
    "read_config_file",
    "file_lock",
]

OWNER_ONLY = 0o600
_GROUP_OR_OTHER = stat.S_IRWXG | stat.S_IRWXO


class InsecureFileMode(PermissionError):
    """A secret file is readable or writable by group or others; the message says how to fix it."""

    def __init__(self, path: pathlib.Path, mode: int, what: str) -> None:
        self.path = path
        self.mode = mode
        super().__init__(
            f"{what} {path} is readable by other users (mode {mode:04o}); "
            f"make it owner-only: chmod 600 {path}"
        )


def fsync_directory(directory: os.PathLike[str] | str) -> None:
    """Make a rename or creation in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_file_atomically(path: os.PathLike[str] | str, data: bytes, *, mode: int = OWNER_ONLY) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a mix.

    Temp file in the same directory (created 0600 by ``mkstemp``, then set to
    ``mode``), ``fsync``, ``os.replace``, then ``fsync`` of the directory. On any
    failure the temp file is removed and the old file is untouched.
    """
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def create_private_file(path: os.PathLike[str] | str) -> pathlib.Path:
    """Create ``path`` empty and owner-only if missing; tighten it to 0600 if it exists wider."""
    path = pathlib.Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, OWNER_ONLY)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & _GROUP_OR_OTHER:
            os.fchmod(fd, OWNER_ONLY)
    finally:
        os.close(fd)
    return path


def open_private(path: os.PathLike[str] | str, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for a file that must be owner-only (journals, exports, reports).

    The file is created 0600 (never briefly wider) and an existing file is tightened.
    """
    path = pathlib.Path(path)
    if any(flag in mode for flag in "wax+"):
        create_private_file(path)
    return open(path, mode, **kwargs)  # noqa: SIM115 - the caller owns the handle


def ensure_private_file(path: os.PathLike[str] | str) -> None:
    """Tighten an existing file to 0600 if group or others have any bit; a missing file is fine."""
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if current & _GROUP_OR_OTHER:
        os.chmod(path, current & ~_GROUP_OR_OTHER & 0o7777 | stat.S_IRUSR | stat.S_IWUSR)


def require_private(path: os.PathLike[str] | str, *, what: str = "secret file") -> None:
    """Raise :class:`InsecureFileMode` when ``path`` grants group or others any permission.

    A missing file raises ``FileNotFoundError`` as ``open`` would.
    """
    path = pathlib.Path(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & _GROUP_OR_OTHER:
        raise InsecureFileMode(path, mode, what)


def read_secret(path: os.PathLike[str] | str, *, what: str = "secret file") -> bytes:
    """The bytes of a secret file, after :func:`require_private` (checked on the open descriptor)."""
    path = pathlib.Path(path)
    with open(path, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & _GROUP_OR_OTHER:
            raise InsecureFileMode(path, mode, what)
        return handle.read()


def read_config_file(path: os.PathLike[str] | str, *, what: str, error: Callable[[str], Exception],
                     secret: bool = False) -> bytes:
    """The bytes of a file a configuration names (``what`` says which, e.g. "TLS key").

    Raises ``error(message)`` (without the ``OSError`` as context) when the file cannot be
    read, ``cannot read <what> <path>: <reason>``, or, with ``secret``, when group or others
    have any permission on it (:func:`read_secret`; the message says ``chmod 600 <path>``).
    """
    try:
        if secret:
            return read_secret(path, what=what)
        with open(path, "rb") as handle:
            return handle.read()
    except InsecureFileMode as e:
        raise error(str(e)) from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None


@contextlib.contextmanager
def file_lock(path: os.PathLike[str] | str) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created owner-only if missing) for the block."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, OWNER_ONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
