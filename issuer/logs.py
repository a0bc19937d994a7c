"""The issuer's log: one JSON object a line on stderr, the gRPC C core's own lines included.

:func:`configure_logging` installs a :class:`BatchingStreamHandler` with a
:class:`JsonFormatter` on the root logger; :class:`NativeStderr` turns what
native code writes to file descriptor 2 (absl's lines) into records of logger
``grpc.core``; :func:`rpc_record` makes the per-RPC record (logger
``issuer.rpc``) with its JSON line already written, for the hot path in
:mod:`issuer.handlers`. Logs carry no request contents and no identifiers.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import time
from typing import Any

__all__ = [
    "JsonFormatter",
    "BatchingStreamHandler",
    "NativeStderr",
    "configure_logging",
    "rpc_record",
]

_RECORD_FIELDS = ("event", "method", "caller", "code", "latency_ms", "port", "metrics_port", "http_port", "source",
                  "province", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the RPC fields if present."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("json_line")
        if line is not None:  # made with the record (rpc_record): the same fields, in this order
            return line
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _RECORD_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__  # the type only: a message may quote data
        return _JSON_ENCODER.encode(entry)  # json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


#: One encoder for every line: ``json.dumps`` with non-default options builds a new one per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class BatchingStreamHandler(logging.StreamHandler):
    """A stream handler that writes the per-RPC lines (logger ``batch_logger``) in batches.

    Why: under load, one ``write`` per RPC from the event-loop thread releases
    the GIL and then waits to take it back from the store's writer and gRPC's
    poller threads; measured in the issuer, 40-65 µs of wall time per RPC line
    against ~12 µs of formatting. Here RPC lines are written together: when
    ``max_pending`` are waiting, else by a daemon thread every ``interval``
    seconds. Every other record (lifecycle events, warnings, errors) is
    written at once, after the lines pending before it, so order is kept.
    A SIGKILL loses at most ``interval`` seconds of RPC lines; ``close`` (run
    by :func:`logging.shutdown` at exit) writes the rest.
    """

    def __init__(self, stream: Any = None, *, batch_logger: str = "issuer.rpc", interval: float = 0.2,
                 max_pending: int = 256) -> None:
        super().__init__(stream)
        self._batch_logger = batch_logger
        self._interval = interval
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._closed = threading.Event()
        threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._pending.append(self.format(record))
            if (record.name != self._batch_logger or record.levelno >= logging.WARNING
                    or len(self._pending) >= self._max_pending):
                self._write_pending()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write_pending(self) -> None:
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        lock = self.lock
        assert lock is not None  # logging.Handler.__init__ created it (createLock)
        with lock:
            try:
                self._write_pending()
            except (OSError, ValueError):  # the stream went away (closed pipe, closed file)
                self._pending.clear()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines (per-RPC lines in batches).

    With the default stream, what native code writes to file descriptor 2 (gRPC's C core
    through absl: ``I1207 04:22:23.065807 14440 ssl_transport_security.cc:2563] Handshake
    failed ...``) becomes JSON lines too (:class:`NativeStderr`), so every line of the
    server's log is JSON.
    """
    for old in logging.getLogger().handlers:
        if isinstance(old, BatchingStreamHandler):
            old.close()
    if stream is None:
        stream = NativeStderr.install().stderr
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


#: absl's log prefix: severity, MMDD, time (``00:00:<unix seconds>`` before absl is initialised),
#: thread id, file:line, "] ".
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_ABSL_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
native_log = logging.getLogger("grpc.core")


class NativeStderr:
    """File descriptor 2 routed into :mod:`logging`: native lines become records of logger ``grpc.core``.

    ``install`` keeps the real stderr on a new descriptor (:attr:`stderr`, also
    ``sys.stderr`` from then on, so Python's own messages and a CLI's ``Error:``
    line go straight out), points descriptor 2 at a pipe, and a daemon thread
    turns each line read from it into a record: absl's severity letter as the
    level, ``file.cc:line`` as ``source``, the rest as the message (an
    unrecognised line is a WARNING as written). At exit, descriptor 2 is put
    back and the lines still in the pipe are logged before logging shuts down.
    What a native crash writes just before the process dies may be lost.
    Installed once per process.
    """

    _installed: "NativeStderr | None" = None

    def __init__(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self.stderr = open(self._saved, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        sys.stderr = self.stderr
        self._reader = threading.Thread(target=self._pump, args=(read_end,), name="native-stderr", daemon=True)
        self._reader.start()
        atexit.register(self.restore)

    @classmethod
    def install(cls) -> "NativeStderr":
        if cls._installed is None:
            cls._installed = cls()
        return cls._installed

    @staticmethod
    def record(line: str) -> None:
        """Log one native line (see the class docstring)."""
        match = _ABSL_LINE.match(line)
        if match is None:
            native_log.warning("%s", line, extra={"event": "native"})
        else:
            native_log.log(_ABSL_LEVELS[match[1]], "%s", match[3], extra={"event": "native", "source": match[2]})

    def _pump(self, fd: int) -> None:
        with open(fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    try:
                        self.record(line)
                    except Exception:  # pragma: no cover - logging must not kill the pump
                        pass

    def restore(self) -> None:
        """Put the real stderr back on descriptor 2 (ending the pipe) and log what was left in it."""
        os.dup2(self._saved, 2)
        self._reader.join(2.0)



_RPC_RECORD_TEMPLATE = logging.LogRecord("issuer.rpc", logging.INFO, "(rpc)", 0, "rpc", (), None).__dict__


class _Timestamps:
    """ISO 8601 UTC text of ``time.time()`` values to the millisecond, as :class:`JsonFormatter` writes
    them; the part up to the second is formatted once a second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


def rpc_record(method: str, caller: str | None, code: str, latency_ms: float) -> logging.LogRecord:
    """The per-RPC log record, its JSON line made here (see :meth:`JsonFormatter.format`).

    ``Logger.makeRecord`` and the generic formatter cost ~13 µs a line, a
    measurable share of a ~300 µs RPC; this costs ~4. Every value is known to
    need no JSON escaping: ``method`` is a registered method name, ``code`` a
    status name, ``caller`` matched :data:`issuer.auth` 's caller-name pattern.
    """
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_RPC_RECORD_TEMPLATE)
    created = time.time()
    fields.update(created=created, msecs=(created - int(created)) * 1000, event="rpc", method=method, caller=caller,
                  code=code, latency_ms=latency_ms)
    who = "null" if caller is None else f'"{caller}"'
    fields["json_line"] = (
        f'{{"ts":"{_timestamp(created)}","level":"INFO","logger":"issuer.rpc","msg":"rpc","event":"rpc",'
        f'"method":"{method}","caller":{who},"code":"{code}","latency_ms":{latency_ms}}}'
    )
    return record


_timestamp = _Timestamps()
