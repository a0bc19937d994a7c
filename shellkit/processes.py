"""Child processes on the host: stopped gracefully, killed only when they do not stop.

Contract: :func:`terminate` sends SIGTERM (the graceful drain every service here
implements), waits up to ``timeout`` seconds, then SIGKILLs and reaps; the child is
always reaped and its exit status returned (negative: the signal that ended it).
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

__all__ = ["terminate"]


def terminate(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit status (a process already gone: its status)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)
