"""batch-issue against a real issuer process: resumable after kill -9, never issuing twice."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import time

import pytest

import healthcode as hc
from issuer.batch import JOURNAL
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import make_resident_id
from verifier.images import decode_image

ROWS = 240
BAD_ROWS = ["resident_id,110105194912310021", "passport,E12345678,XXX", "unknown_type,123"]


@pytest.fixture
def issuer(tmp_path):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc))
    with ServerProcess(env) as server:
        yield env, server


def _csv(path):
    lines = ["document_type,document_number,country"]
    for i in range(ROWS):
        lines.append(f"resident_id,{make_resident_id('330106', dt.date(1950, 1, 1) + dt.timedelta(days=i), i % 1000)},")
        if i in (5, 50, 100):
            lines.append(BAD_ROWS[(5, 50, 100).index(i)])
    path.write_text("\n".join(lines) + "\n")
    return path


def _batch(env, server, csv_path, out, fmt="pdf"):
    return [sys.executable, "-m", "issuer", "batch-issue", str(csv_path), "--server", server.address,
            "--ca", str(env.directory / "pki" / "ca.pem"), "--api-key-file", str(env.directory / "app.apikey"),
            "--out", str(out), "--format", fmt]


def _journal_lines(out):
    path = out / JOURNAL
    return path.read_text().count("\n") if path.exists() else 0


def test_interrupted_batch_resumes_without_issuing_twice(issuer, tmp_path):
    env, server = issuer
    csv_path, out = _csv(tmp_path / "residents.csv"), tmp_path / "out"
    first = subprocess.Popen(_batch(env, server, csv_path, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _journal_lines(out) < 20 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.kill()  # SIGKILL mid-batch
    first.wait()
    interrupted_at = _journal_lines(out)
    assert 0 < interrupted_at < ROWS, "the batch should have been cut off part-way"

    second = subprocess.run(_batch(env, server, csv_path, out), capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"{ROWS} codes" in second.stdout and "3 rows rejected" in second.stdout

    entries = [line for line in (out / JOURNAL).read_text().splitlines() if line.strip()]
    import json

    issued = {}
    for line in entries:
        entry = json.loads(line)
        assert issued.setdefault(entry["row"], entry["code_text"]) == entry["code_text"]
    assert len(issued) == ROWS
    assert len(set(issued.values())) == ROWS

    with sqlite3.connect(f"file:{env.database}?mode=ro", uri=True) as db:
        (stored,) = db.execute("SELECT count(*) FROM codes").fetchone()
        (distinct,) = db.execute("SELECT count(DISTINCT serial) FROM codes").fetchone()
    assert stored == ROWS == distinct  # the interruption issued nothing twice

    keyring, now = env.keyring(), dt.datetime.now(dt.timezone.utc)
    assert all(hc.check(text, keyring, now=now).valid for text in issued.values())

    rejected = (out / "rejected.csv").read_text()
    assert rejected.count("\n") >= 4 and "110105194912310021" not in rejected
    pdf = (out / "sheets.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Count %d" % -(-ROWS // 6) in pdf  # 6 codes an A4 page


def test_png_sheets_scan_back_to_the_issued_codes(issuer, tmp_path):
    env, server = issuer
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("document_type,document_number\n" + "".join(
        f"resident_id,{make_resident_id('440305', dt.date(1980, 2, 29) + dt.timedelta(days=i), 7)}\n" for i in range(7)))
    out = tmp_path / "sheets"
    run = subprocess.run(_batch(env, server, csv_path, out, fmt="png"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    pages = sorted(out.glob("sheet-*.png"))
    assert len(pages) == 2  # 7 codes at 6 a page
    import json

    journal = {json.loads(line)["code_text"] for line in (out / JOURNAL).read_text().splitlines()}
    scanned = set(decode_image(pages[0])) | set(decode_image(pages[1]))
    assert scanned == journal and len(journal) == 7
