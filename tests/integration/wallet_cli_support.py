"""Running the reference wallet's CLI (``python -m wallet``) as a real process, for tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

__all__ = ["ROOT", "owner_only", "wallet"]

#: The checkout's root: the wallet runs from there.
ROOT = pathlib.Path(__file__).resolve().parents[2]


def owner_only(path: pathlib.Path, text: str) -> pathlib.Path:
    """Write ``text`` and a newline to ``path``, created owner-only (a passphrase file the wallet accepts)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def wallet(*args: str) -> subprocess.CompletedProcess:
    """``python -m wallet *args`` from the root, no stdin, output captured as text (at most 120 s)."""
    return subprocess.run([sys.executable, "-m", "wallet", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=ROOT)
