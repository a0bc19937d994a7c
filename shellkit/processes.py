"""Processes on the host: a child stopped gracefully, and this process stopped by a signal when it serves.

Contracts:
- :func:`terminate` sends SIGTERM (the graceful drain every service here implements), waits
  up to ``timeout`` seconds, then SIGKILLs and reaps; the child is always reaped and its exit
  status returned (negative: the signal that ended it).
- :func:`stop_signals` turns SIGTERM and SIGINT into an :class:`asyncio.Event` while its block
  runs (a server waits on it, then drains); after the block they act as before again, so a
  second signal during the drain ends the process at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

__all__ = ["terminate", "stop_signals"]


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


@contextlib.contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[asyncio.Event]:
    """An event ``signals`` set while the block runs (in the running event loop); their handlers are removed
    when it ends, however it ends."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
