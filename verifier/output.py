"""JSON lines for the hospital information system (HIS): one object per result.

The schema (``healthcode-verifier/result/1``) is documented field by field in
``docs/verifier.md``; :func:`result_record` is its one implementation. A new
field may be added within version 1; removing or changing one bumps it.

Sinks (:func:`open_sink`):

* ``stdout``: lines on standard output, flushed after every batch
  of results. A reader that stops reading eventually blocks the loop (that
  is how pipes work); use a socket when the HIS may stall. (The CLI's default,
  ``auto``, is ``stdout`` when standard output is a pipe or a file and ``none``
  when it is the operator's terminal: the screen shows verdicts, not main
  index IDs.)
* ``file:/path``: appended to a file created owner-only (0600; an existing
  wider file is tightened: the lines carry main index IDs), or written to an
  existing FIFO (opened when the HIS opens its end: the verifier waits for it).
* ``unix:/path/to.sock`` or ``tcp:127.0.0.1:PORT``: the verifier *connects*
  to the HIS's listening socket and streams lines. A writer thread does the
  I/O: the loop only queues. While the HIS is not there, up to ``backlog``
  lines are kept and sent on reconnection (oldest dropped beyond that, and
  counted); reconnection is retried with back-off. TCP is refused for any
  host that is not loopback: results carry main index IDs and are not
  encrypted.
* ``none``: no JSON output.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import pathlib
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

from healthcode import PROVINCES

from shellkit.files import open_private

from .audit import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from .outcome import Outcome
    from .trust import TrustAssessment

__all__ = ["SCHEMA_ID", "result_record", "encode", "encode_result", "ValidLines", "source_part", "trust_part",
           "kind_part", "step_time",
           "Sink", "StreamSink", "FileSink", "SocketSink", "NullSink", "open_sink"]

SCHEMA_ID = "healthcode-verifier/result/1"
_STEP_SECONDS = 30  # healthcode.presentation.STEP_SECONDS


def step_time(step: int) -> str:
    """The start of a live code's time step, UTC as ``time`` (what machines read)."""
    return _iso_epoch(step * _STEP_SECONDS)


def result_record(outcome: "Outcome", *, include_subject: bool = True) -> dict:
    """The JSON object of one result (schema ``healthcode-verifier/result/1``).

    ``province`` ... ``status`` are the verified claims: of a valid code, and of
    one the terminal refused after verifying it (``replayed``,
    ``static_code_refused``); ``main_index_id`` only for a valid one.
    """
    code = outcome.code
    trust = outcome.trust
    valid = code is not None and outcome.reason is None
    record = {
        "schema": SCHEMA_ID,
        "seq": outcome.seq,
        "time": iso_utc(trust.now),
        "result": "valid" if valid else "invalid",
        "reason": outcome.reason.value if outcome.reason is not None else None,
        "detail": outcome.detail,
        "province": code.province if code is not None else None,
        "province_name": PROVINCES[code.province] if code is not None else None,
        "kid": code.kid.hex() if code is not None else None,
        "serial": str(code.serial) if code is not None else None,
        "issued_at": iso_utc(code.issued_at) if code is not None else None,
        "expires_at": iso_utc(code.expires_at) if code is not None else None,
        "status": code.status if code is not None else None,
        "unverified": (
            {"province": outcome.claimed[0], "kid": outcome.claimed[1].hex(), "serial": str(outcome.claimed[2])}
            if outcome.claimed is not None else None),
        "source": outcome.source,
        "ended_by": outcome.ended_by,
        "kind": outcome.kind,
        "step": outcome.step,
        "step_time": step_time(outcome.step) if outcome.step is not None else None,
        "check_id": outcome.check_id,
        "trust": {
            "freshness": trust.level.value,
            "last_verified_refresh": iso_utc(trust.last_verified) if trust.last_verified else None,
            "age_s": int(trust.age.total_seconds()) if trust.age is not None else None,
            "clock_behind_s": int(trust.clock_behind.total_seconds()) if trust.clock_behind else None,
            "sync_error": outcome.sync_error,
            "warnings": list(outcome.trust_warnings),
        },
    }
    if include_subject:
        record["main_index_id"] = code.subject if valid and code is not None else None
    return record


def encode(record: dict) -> bytes:
    """One JSON line (UTF-8, compact) of a record."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


_q = json.encoder.encode_basestring  # the C string quoter json.dumps(ensure_ascii=False) uses
_DAYS: dict[int, str] = {}  # "YYYY-MM-DDT" per day since the epoch: codes span a few days
_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]  # per minute of the day
_SS_Z = [f"{s:02d}.000Z" for s in range(60)]


def _day_prefix(day: int) -> str:
    if len(_DAYS) > 4096:
        _DAYS.clear()
    date = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    return date


def _iso_epoch(seconds: int) -> str:
    """``iso_utc`` of whole epoch seconds (a code's iat/exp), without building a datetime."""
    day, rest = divmod(seconds, 86400)
    minute, second = divmod(rest, 60)
    return f"{_DAYS.get(day) or _day_prefix(day)}{_HH_MM[minute]}{_SS_Z[second]}"


_KEY_PARTS: dict[tuple[str, bytes], str] = {}  # per signing key: its province and kid, formatted once
_TRUST_PARTS: dict[tuple, str] = {}  # the trust block changes about once a second


def _key_part(province: str, kid: bytes) -> str:
    part = _KEY_PARTS.get((province, kid))
    if part is None:
        if len(_KEY_PARTS) > 4096:
            _KEY_PARTS.clear()
        part = _KEY_PARTS[(province, kid)] = (
            f'"province":"{province}","province_name":"{PROVINCES[province]}","kid":"{kid.hex()}",')
    return part


def _trust_part(outcome: "Outcome") -> str:
    return trust_part(outcome.trust, outcome.sync_error, outcome.trust_warnings)


def trust_part(trust: "TrustAssessment", sync_error: str | None, warnings: tuple[str, ...]) -> str:
    """The ``"trust":{...}`` member of a line (it changes about once a second)."""
    age = None if trust.age is None else int(trust.age.total_seconds())
    key = (trust.level, trust.last_verified, age, trust.clock_behind, sync_error, warnings)
    part = _TRUST_PARTS.get(key)
    if part is None:
        if len(_TRUST_PARTS) > 64:
            _TRUST_PARTS.clear()
        last = f'"{iso_utc(trust.last_verified)}"' if trust.last_verified else "null"
        behind = int(trust.clock_behind.total_seconds()) if trust.clock_behind else "null"
        sync_text = "null" if sync_error is None else _q(sync_error)
        warning_texts = ",".join(map(_q, warnings))
        part = _TRUST_PARTS[key] = (
            f'"trust":{{"freshness":"{trust.level.value}","last_verified_refresh":{last},'
            f'"age_s":{"null" if age is None else age},"clock_behind_s":{behind},"sync_error":{sync_text},'
            f'"warnings":[{warning_texts}]}}')
    return part


_KIND_PARTS = {(kind, check_id): (f'"kind":{json.dumps(kind)},"step":null,"step_time":null,'
                                   f'"check_id":{json.dumps(check_id)},')
               for kind in (None, "static", "dynamic") for check_id in (False, True)}


def kind_part(kind: str | None, step: int | None, check_id: bool) -> str:
    """The ``"kind":...,"step":...,"step_time":...,"check_id":...,`` members."""
    if step is None:
        return _KIND_PARTS[(kind, check_id)]
    return (f'"kind":"{kind}","step":{step},"step_time":"{step_time(step)}",'
            f'"check_id":{"true" if check_id else "false"},')


_SOURCE_PARTS: dict[tuple[str, str], str] = {}


def source_part(source: str, ended_by: str) -> str:
    """The ``"source":...,"ended_by":...,`` members (escaped: a source names a file or a device)."""
    part = _SOURCE_PARTS.get((source, ended_by))
    if part is None:
        if len(_SOURCE_PARTS) > 4096:
            _SOURCE_PARTS.clear()
        part = _SOURCE_PARTS[(source, ended_by)] = f'"source":{_q(source)},"ended_by":{_q(ended_by)},'
    return part


def encode_result(outcome: "Outcome", *, include_subject: bool = True, time_text: str | None = None) -> bytes:
    """``encode(result_record(outcome))``, formatted directly (``run``: the line of a refused scan;
    a valid code's comes from :class:`ValidLines`).

    Same bytes (a test checks it on a table of outcomes), about a third of the
    cost of building the dict and calling ``json.dumps``. ``time_text`` is
    ``iso_utc(outcome.trust.now)`` when the caller has it already.
    """
    code = outcome.code
    reason = "null" if outcome.reason is None else f'"{outcome.reason.value}"'
    valid = code is not None and outcome.reason is None
    if code is not None:
        body = (f'"result":"{"valid" if valid else "invalid"}","reason":{reason},"detail":{_q(outcome.detail)},'
                f'{_key_part(code.province, code.kid)}"serial":"{code.serial}",'
                f'"issued_at":"{_iso_epoch(code.iat)}","expires_at":"{_iso_epoch(code.exp)}",'
                f'"status":{"null" if code.status is None else code.status},"unverified":null,')
    else:
        claimed = outcome.claimed
        unverified = "null" if claimed is None else (
            f'{{"province":{_q(claimed[0])},"kid":"{claimed[1].hex()}","serial":"{claimed[2]}"}}')
        body = (f'"result":"invalid","reason":{reason},"detail":{_q(outcome.detail)},"province":null,'
                f'"province_name":null,"kid":null,"serial":null,"issued_at":null,"expires_at":null,'
                f'"status":null,"unverified":{unverified},')
    line = (f'{{"schema":"{SCHEMA_ID}","seq":{outcome.seq},"time":"{time_text or iso_utc(outcome.trust.now)}",'
            f'{body}{source_part(outcome.source, outcome.ended_by)}'
            f'{kind_part(outcome.kind, outcome.step, outcome.check_id)}{_trust_part(outcome)}')
    if include_subject:
        line += f',"main_index_id":"{code.subject}"}}\n' if valid and code is not None else ',"main_index_id":null}\n'
    else:
        line += "}\n"
    return line.encode("utf-8")


_HEAD = f'{{"schema":"{SCHEMA_ID}","seq":'.encode()
_KEY_BYTES: dict[tuple[str, bytes], bytes] = {}  # _key_part, encoded (the province's name is not ASCII)


class ValidLines:
    """The lines of valid codes at one instant, for the run loop (``encode_result``, in parts).

    Everything in a valid code's line but the sequence number, the key, the
    code's own claims and the source is the same for every scan of one
    instant (the time, the trust block): :meth:`at` formats it once, and
    :meth:`line` fills in the rest. The values inserted unescaped are safe by
    construction: integers, the province (a GB/T 2260 code the core checked),
    hex, the main index ID (26 base32 characters, checked by the core), and
    the escaped parts from :func:`source_part` and :func:`trust_part`. A test
    checks the bytes equal ``encode(result_record(outcome))``.

    The line is joined from bytes: the province's name is the only non-ASCII
    text in it, and one such character in a ``str`` makes Python build the
    whole line as UCS-2 and encode it character by character (2.5 times the
    cost of the joined bytes).
    """

    __slots__ = ("include_subject", "_head", "_tail")

    def __init__(self, *, include_subject: bool = True) -> None:
        self.include_subject = include_subject
        self._head = self._tail = b""

    def at(self, time_text: str, trust: str) -> None:
        """Set the instant: its ``time`` text and its :func:`trust_part` (escaped text)."""
        self._head = f',"time":"{time_text}","result":"valid","reason":null,"detail":"valid",'.encode()
        self._tail = (f'{trust},"main_index_id":"' if self.include_subject else f"{trust}}}\n").encode()

    def line(self, seq: int, code, serial: str, source: str, kind: str) -> bytes:
        """The line of ``code`` (serial already as text), with ``source`` from :func:`source_part`
        and ``kind`` from :func:`kind_part`."""
        province, kid = code.province, code.kid
        key = _KEY_BYTES.get((province, kid))
        if key is None:
            if len(_KEY_BYTES) > 4096:
                _KEY_BYTES.clear()
            key = _KEY_BYTES[(province, kid)] = _key_part(province, kid).encode()
        status = code.status
        day, rest = divmod(code.iat, 86400)
        issued = f"{_DAYS.get(day) or _day_prefix(day)}{_HH_MM[rest // 60]}{_SS_Z[rest % 60]}"
        day, rest = divmod(code.exp, 86400)
        expires = f"{_DAYS.get(day) or _day_prefix(day)}{_HH_MM[rest // 60]}{_SS_Z[rest % 60]}"
        claims = (f'"serial":"{serial}","issued_at":"{issued}","expires_at":"{expires}",'
                  f'"status":{"null" if status is None else status},"unverified":null,{source}{kind}')
        if self.include_subject:
            return b"".join((_HEAD, str(seq).encode(), self._head, key, claims.encode(), self._tail,
                             f'{code.subject}"}}\n'.encode()))
        return b"".join((_HEAD, str(seq).encode(), self._head, key, claims.encode(), self._tail))


class Sink:
    """Where JSON lines go. ``write`` never raises; ``problem`` says what is wrong, if anything."""

    problem: str | None = None

    def write(self, line: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Several lines, in order (the run loop: once per batch)."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink(Sink):
    def write(self, line: bytes) -> None:
        pass

    def write_lines(self, lines: Sequence[bytes]) -> None:
        pass


class StreamSink(Sink):
    """Lines to a binary stream (standard output)."""

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self.stream: IO[bytes] = stream if stream is not None else sys.stdout.buffer
        self._parts: list[bytes] = []

    def write(self, line: bytes) -> None:
        self._parts.append(line)

    def write_lines(self, lines: Sequence[bytes]) -> None:
        self._parts.extend(lines)

    def flush(self) -> None:
        if not self._parts:
            return
        data, self._parts = b"".join(self._parts), []
        try:
            self.stream.write(data)
            self.stream.flush()
            self.problem = None
        except (OSError, ValueError) as exc:  # closed pipe, closed file
            self.problem = f"JSON 输出失败 / JSON output failed: {exc}"

    def close(self) -> None:
        self.flush()


class FileSink(StreamSink):
    """Lines appended to a file created owner-only, or written to an existing FIFO."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        stream: IO[bytes]
        if self.path.is_fifo():  # the HIS's pipe: its mode is the HIS's; open waits for its reader
            stream = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        else:
            stream = open_private(self.path, "ab", buffering=0)
        super().__init__(stream)

    def close(self) -> None:
        super().close()
        try:
            self.stream.close()
        except OSError:
            pass


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SocketSink(Sink):
    """Lines to the HIS's listening unix or loopback TCP socket, through a writer thread."""

    def __init__(self, address: str, *, backlog: int = 10_000, connect_timeout: float = 2.0) -> None:
        self.target: str | tuple[str, int]  # the path of a unix socket, or (host, port)
        if address.startswith("unix:"):
            self.family, self.target = socket.AF_UNIX, address[5:]
        elif address.startswith("tcp:"):
            host, _, port = address[4:].rpartition(":")
            host = host.strip("[]")
            if not _loopback(host):
                raise ValueError(f"JSON over TCP only to a loopback address, not {host!r}")
            self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.target = (host, int(port))
        else:
            raise ValueError(f"not a socket address: {address!r} (unix:PATH or tcp:127.0.0.1:PORT)")
        self.address = address
        self.backlog = backlog
        self.connect_timeout = connect_timeout
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._sock: socket.socket | None = None
        self.problem = None
        self._thread = threading.Thread(target=self._run, name="json-socket", daemon=True)
        self._thread.start()

    def write(self, line: bytes) -> None:
        self.write_lines((line,))

    def write_lines(self, lines: Sequence[bytes]) -> None:
        queued = self._lines
        queued.extend(lines)
        for _ in range(len(queued) - self.backlog):  # oldest dropped (the writer may pop meanwhile)
            try:
                queued.popleft()
            except IndexError:
                break
            self.dropped += 1

    def flush(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if not self._closing and (not self._lines or backoff):
                    self._cond.wait(backoff or 0.2)
                closing = self._closing
            if self._lines:
                try:
                    if self._sock is None:
                        sock = socket.socket(self.family, socket.SOCK_STREAM)
                        sock.settimeout(self.connect_timeout)
                        try:
                            sock.connect(self.target)
                        except BaseException:
                            sock.close()
                            raise
                        self._sock = sock
                    while self._lines:
                        count = min(len(self._lines), 1024)
                        batch = [self._lines.popleft() for _ in range(count)]
                        data = b"".join(batch)
                        try:
                            self._sock.sendall(data)
                        except BaseException:
                            self._lines.extendleft(reversed(batch))
                            raise
                    self.problem = None
                    backoff = 0.0
                except OSError as exc:
                    if self._sock is not None:
                        self._sock.close()
                        self._sock = None
                    self.problem = (f"HIS 接口 {self.address} 不可用，{len(self._lines)} 条结果等待发送 / "
                                    f"HIS socket {self.address} unavailable: {exc}; {len(self._lines)} lines waiting")
                    backoff = min(max(backoff * 2, 0.25), 10.0)
            if closing and (not self._lines or backoff):
                return


def open_sink(spec: str) -> Sink:
    """``stdout`` (or ``-``), ``none``, ``file:PATH``, ``unix:PATH``, ``tcp:127.0.0.1:PORT``."""
    if spec in ("stdout", "-"):
        return StreamSink()
    if spec == "none":
        return NullSink()
    if spec.startswith("file:"):
        if not spec[5:]:
            raise ValueError("file: needs a path, e.g. file:/var/lib/hcv/results.jsonl")
        return FileSink(spec[5:])
    return SocketSink(spec)
