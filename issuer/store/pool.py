"""Read connections the stores share among threads, safe to close while reads are running.

A read can outlive the request that started it (a thread running a query when
its RPC was cancelled). Closing the store must not close a connection under
such a read (SQLite's module would crash the process): :meth:`ReaderPool.close`
closes the idle connections now and marks the pool closed; a connection in use
is closed when it comes back, and no new read starts.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

from .base import StoreClosed

__all__ = ["ReaderPool"]

C = TypeVar("C")


class ReaderPool(Generic[C]):
    """Connections made by ``connect()``, reused; ``close_one(conn)`` must not raise."""

    def __init__(self, connect: Callable[[], C], close_one: Callable[[C], None]) -> None:
        self._connect = connect
        self._close_one = close_one
        self._idle: queue.SimpleQueue[C] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> C:
        """An idle connection, or a new one. Raises :class:`StoreClosed` once the pool is closed."""
        if self._closed:
            raise StoreClosed("store is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    def give_back(self, conn: C, *, usable: bool = True) -> None:
        """Return ``conn`` after a read (its transaction ended); closed instead if the pool is, or if unusable."""
        with self._lock:
            if usable and not self._closed:
                self._idle.put(conn)
                return
        self._close_one(conn)

    def close(self) -> None:
        """Close the idle connections; the ones in use close when they come back."""
        with self._lock:
            self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            self._close_one(conn)
