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

Sheets show each QR with the row number, the masked document number (first 3
and last 4 characters, GB/T 35273 display de-identification) and the expiry
date, six to an A4 page, as PNG pages or one PDF.
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

from issuer.documents import Document, DocumentError, parse_document

__all__ = ["BatchRow", "BatchResult", "read_rows", "run_batch", "render_sheets"]

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
class IssuedRow:
    row: int
    masked_number: str
    serial: int
    kid_hex: str
    code_text: str
    expires_at: str


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
    return number[:3] + "*" * max(0, len(number) - 7) + number[-4:]


def read_rows(csv_bytes: bytes, *, today: dt.date) -> tuple[list[BatchRow], list[Rejection]]:
    """Parse and validate the CSV; bad rows become :class:`Rejection` entries."""
    text = csv_bytes.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"document_type", "document_number"} <= set(reader.fieldnames):
        raise ValueError("the CSV needs a header with document_type and document_number")
    rows, rejected = [], []
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
                                       entry["code_text"], entry["expires_at"])
    return done


def run_batch(
    csv_bytes: bytes,
    out_dir: pathlib.Path,
    *,
    issue_row: Callable[[BatchRow, str], tuple[int, str, str, str]],
    today: dt.date,
    progress: Callable[[Iterable[BatchRow], int], Iterator[BatchRow]] = lambda rows, total: iter(rows),
) -> BatchResult:
    """Issue a code for every valid row not yet in the journal.

    ``issue_row(row, idempotency_key)`` returns ``(serial, kid_hex, code_text,
    expires_at_iso)``; it is the API call (find or register, then IssueCode).
    """
    if len(csv_bytes) > MAX_CSV_BYTES:
        raise ValueError(f"CSV larger than {MAX_CSV_BYTES} bytes")
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = batch_id(csv_bytes)
    rows, rejected = read_rows(csv_bytes, today=today)
    journal_path = out_dir / JOURNAL
    done = _read_journal(journal_path, batch)
    resumed = sum(1 for row in rows if row.row in done)
    pending = [row for row in rows if row.row not in done]
    with open(journal_path, "a", encoding="utf-8") as journal:
        for row in progress(pending, len(pending)):
            serial, kid_hex, code_text, expires_at = issue_row(row, f"batch-{batch}-{row.row:07d}")
            entry = IssuedRow(row.row, masked(row.document.number), serial, kid_hex, code_text, expires_at)
            journal.write(json.dumps({"batch": batch, "row": entry.row, "masked_number": entry.masked_number,
                                      "serial": serial, "kid": kid_hex, "code_text": code_text,
                                      "expires_at": expires_at}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            done[row.row] = entry
    with open(out_dir / REJECTED, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "field", "reason"])
        writer.writerows((r.row, r.field, r.reason) for r in rejected)
    issued = tuple(done[row.row] for row in rows if row.row in done)
    return BatchResult(issued, tuple(rejected), resumed, ())


# Fonts with Chinese glyphs, where the system has one (Debian: fonts-droid-fallback, fonts-wqy-microhei).
_CJK_FONTS = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


def _cjk_font(size: int):
    """A font with Chinese glyphs, or None (the label is then English only)."""
    from PIL import ImageFont

    for path in _CJK_FONTS:
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return None


def render_sheets(issued: Iterable[IssuedRow], out_dir: pathlib.Path, *, fmt: str = "pdf",
                  per_page: int = 6) -> tuple[pathlib.Path, ...]:
    """Lay the codes out on A4 pages (150 dpi): QR, row, masked number, expiry."""
    from PIL import Image, ImageDraw, ImageFont

    from issuer.render import render_png

    width, height, columns = 1240, 1754, 2
    rows_per_page = max(1, per_page // columns)
    cell_w, cell_h = width // columns, height // rows_per_page
    font = ImageFont.load_default(size=26)
    cjk = _cjk_font(26)
    pages = []
    entries = list(issued)
    for start in range(0, len(entries), columns * rows_per_page):
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        for slot, entry in enumerate(entries[start:start + columns * rows_per_page]):
            x0, y0 = (slot % columns) * cell_w, (slot // columns) * cell_h
            qr = Image.open(io.BytesIO(render_png(entry.code_text, scale=8, border=4))).convert("L")
            page.paste(qr, (x0 + (cell_w - qr.width) // 2, y0 + 30))
            label_y = y0 + 40 + qr.height
            draw.text((x0 + 60, label_y), f"No. {entry.row}   {entry.masked_number}", fill=0, font=font)
            x = x0 + 60
            if cjk is not None:
                draw.text((x, label_y + 36), "有效期至", fill=0, font=cjk)
                x += int(draw.textlength("有效期至", font=cjk)) + 10
            draw.text((x, label_y + 36), f"valid until {entry.expires_at[:10]}", fill=0, font=font)
        pages.append(page)
    written = []
    if fmt == "pdf" and pages:
        path = out_dir / "sheets.pdf"
        pages[0].save(path, "PDF", resolution=150, save_all=True, append_images=pages[1:])
        written.append(path)
    elif fmt == "png":
        for number, page in enumerate(pages, start=1):
            path = out_dir / f"sheet-{number:03d}.png"
            page.save(path, "PNG", optimize=False)
            written.append(path)
    return tuple(written)
