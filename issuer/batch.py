"""Batch issuance for residents without smartphones: a CSV in, codes and printable QR sheets out.

The batch is a client of the issuer API like any app, so the issuer stays the
single writer of its database. It is resumable without issuing twice:

* every row's ``IssueCode`` carries the idempotency key ``batch-<hash of the
  CSV>-<row>``, so a row retried after an interruption (even one that cut the
  first attempt off mid-call) gets back the code the issuer committed;
* a journal (``journal.jsonl`` in the output directory, one fsync'd line per
  finished row) lets a rerun skip the rows already done.

Input CSV, with a header: ``document_type,document_number[,country]`` where
``document_type`` is a :class:`~issuer.documents.DocumentType` value (e.g.
``resident_id``). Bad rows are reported in ``rejected.csv`` (row number, field
and reason, never the number) and do not stop the batch.

Everything the batch writes is owner-only: the output directory is created
0700, and the journal (every code's text), ``rejected.csv`` and the sheets are
created 0600 (an existing wider file is tightened), since they are personal data.

Sheets (:mod:`issuer.sheets`) show each code as a slip a
resident keeps: heading, province, the QR with its quiet zone, the row number,
the masked document number (first 3 and last 4 characters, GB/T 35273 display
de-identification; never a name or the full number), the expiry in Beijing
time, and instructions in Chinese and English, six to an A4 page with dashed
cut lines, as one PDF with a text layer or as PNG pages.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from healthcode.codec import ClaimKey, decode_unverified
from issuer.documents import Document, DocumentError, parse_document
from shellkit.files import open_private, write_file_atomically

__all__ = ["BatchRow", "BatchResult", "Issued", "IssuedRow", "read_rows", "run_batch", "render_sheets",
           "masked", "make_private_dir"]

JOURNAL = "journal.jsonl"
REJECTED = "rejected.csv"
MAX_CSV_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class BatchRow:
    """One valid CSV row: its 1-based data row number and its document."""

    row: int
    document: Document


@dataclass(frozen=True)
class Rejection:
    row: int
    field: str
    reason: str


@dataclass(frozen=True)
class Issued:
    """What the issuer answered for one row (``expires_at`` is ISO 8601 UTC)."""

    serial: int
    kid_hex: str
    code_text: str
    expires_at: str
    province: str


@dataclass(frozen=True)
class IssuedRow:
    row: int
    masked_number: str
    serial: int
    kid_hex: str
    code_text: str
    expires_at: str  # ISO 8601, UTC
    province: str

    def sheet_code(self):
        """This row as a printed slip (:class:`issuer.sheets.SheetCode`)."""
        from issuer.sheets import SheetCode

        return SheetCode(self.code_text, self.province, self.masked_number,
                         dt.datetime.fromisoformat(self.expires_at), label=f"No. {self.row}")


@dataclass(frozen=True)
class BatchResult:
    issued: tuple[IssuedRow, ...]
    rejected: tuple[Rejection, ...]
    resumed: int  # rows found already done in the journal
    sheets: tuple[pathlib.Path, ...]


def batch_id(csv_bytes: bytes) -> str:
    """Names the batch: the same CSV gives the same idempotency keys on every run."""
    return hashlib.sha256(csv_bytes).hexdigest()[:20]


def masked(number: str) -> str:
    """The number as printed: first 3 and last 4 characters, the rest ``*`` (GB/T 35273)."""
    return number[:3] + "*" * max(0, len(number) - 7) + number[-4:]


def make_private_dir(path: pathlib.Path) -> None:
    """Create ``path`` (and missing parents) with the leaf owner-only (0700); an existing one is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _province_of(code_text: str) -> str:
    """The province a code names (journals written before the province was recorded)."""
    return str(decode_unverified(code_text).claims[ClaimKey.ISS])


def read_rows(csv_bytes: bytes, *, today: dt.date) -> tuple[list[BatchRow], list[Rejection]]:
    """Parse and validate the CSV; bad rows become :class:`Rejection` entries."""
    text = csv_bytes.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"document_type", "document_number"} <= set(reader.fieldnames):
        raise ValueError("the CSV needs a header with document_type and document_number")
    rows: list[BatchRow] = []
    rejected: list[Rejection] = []
    for index, record in enumerate(reader, start=1):
        try:
            document = parse_document(
                (record.get("document_type") or "").strip(),
                record.get("document_number") or "",
                country=(record.get("country") or "").strip() or None,
                today=today,
            )
        except DocumentError as error:
            rejected.extend(Rejection(index, v.field, v.description) for v in error.violations)
            continue
        except (TypeError, ValueError) as error:
            rejected.append(Rejection(index, "document_type", str(error)))
            continue
        rows.append(BatchRow(index, document))
    return rows, rejected


def _read_journal(path: pathlib.Path, batch: str) -> dict[int, IssuedRow]:
    done: dict[int, IssuedRow] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # a line torn by the interruption: that row is simply redone
        if entry.get("batch") != batch:
            raise ValueError(f"{path} belongs to another batch; use a fresh output directory")
        done[entry["row"]] = IssuedRow(entry["row"], entry["masked_number"], entry["serial"], entry["kid"],
                                       entry["code_text"], entry["expires_at"],
                                       entry.get("province") or _province_of(entry["code_text"]))
    return done


def run_batch(
    csv_bytes: bytes,
    out_dir: pathlib.Path,
    *,
    issue_row: Callable[[BatchRow, str], Issued],
    today: dt.date,
    progress: Callable[[Iterable[BatchRow], int], Iterator[BatchRow]] = lambda rows, total: iter(rows),
) -> BatchResult:
    """Issue a code for every valid row not yet in the journal.

    ``issue_row(row, idempotency_key)`` returns the :class:`Issued` code; it is
    the API call (find or register, then IssueCode, each retried as the client
    does). The output directory is created 0700 if missing; the journal and
    ``rejected.csv`` are owner-only files.
    """
    if len(csv_bytes) > MAX_CSV_BYTES:
        raise ValueError(f"CSV larger than {MAX_CSV_BYTES} bytes")
    make_private_dir(out_dir)
    batch = batch_id(csv_bytes)
    rows, rejected = read_rows(csv_bytes, today=today)
    journal_path = out_dir / JOURNAL
    done = _read_journal(journal_path, batch)
    resumed = sum(1 for row in rows if row.row in done)
    pending = [row for row in rows if row.row not in done]
    with open_private(journal_path, "a", encoding="utf-8") as journal:
        for row in progress(pending, len(pending)):
            got = issue_row(row, f"batch-{batch}-{row.row:07d}")
            entry = IssuedRow(row.row, masked(row.document.number), got.serial, got.kid_hex, got.code_text,
                              got.expires_at, got.province)
            journal.write(json.dumps({"batch": batch, "row": entry.row, "masked_number": entry.masked_number,
                                      "serial": got.serial, "kid": got.kid_hex, "code_text": got.code_text,
                                      "expires_at": got.expires_at, "province": got.province}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            done[row.row] = entry
    report = io.StringIO(newline="")
    writer = csv.writer(report)
    writer.writerow(["row", "field", "reason"])
    writer.writerows((r.row, r.field, r.reason) for r in rejected)
    write_file_atomically(out_dir / REJECTED, report.getvalue().encode("utf-8"))
    issued = tuple(done[row.row] for row in rows if row.row in done)
    return BatchResult(issued, tuple(rejected), resumed, ())


def render_sheets(issued: Iterable[IssuedRow], out_dir: pathlib.Path, *, fmt: str = "pdf",
                  per_page: int = 6) -> tuple[pathlib.Path, ...]:
    """Write the slips of ``issued`` as ``sheets.pdf`` or ``sheet-NNN.png`` pages (owner-only files).

    Raises :class:`issuer.sheets.SheetError` when no font with Chinese glyphs is installed.
    """
    from issuer.sheets import render_sheet_pdf, render_sheet_png

    codes = [entry.sheet_code() for entry in issued]
    if not codes:
        return ()
    written = []
    if fmt == "pdf":
        path = out_dir / "sheets.pdf"
        write_file_atomically(path, render_sheet_pdf(codes, per_page=per_page))
        written.append(path)
    elif fmt == "png":
        for number, page in enumerate(render_sheet_png(codes, per_page=per_page), start=1):
            path = out_dir / f"sheet-{number:03d}.png"
            write_file_atomically(path, page)
            written.append(path)
    else:
        raise ValueError(f"unknown sheet format {fmt!r}: pdf or png")
    return tuple(written)
