"""batch-issue against a real issuer process: resumable after kill -9, never issuing twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import time

import grpc
import pytest

import healthcode as hc
from issuer.batch import JOURNAL
from issuer.client import Backoff, IssuerClient
from issuer.devenv import DevEnvironment, ServerProcess, free_port
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
        f"resident_id,{make_resident_id('440305', dt.date(1980, 2, 29) + dt.timedelta(days=i), 7)}\n"
        for i in range(7)))
    out = tmp_path / "sheets"
    run = subprocess.run(_batch(env, server, csv_path, out, fmt="png"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    pages = sorted(out.glob("sheet-*.png"))
    assert len(pages) == 2  # 7 codes at 6 a page

    journal = {json.loads(line)["code_text"] for line in (out / JOURNAL).read_text().splitlines()}
    scanned = set(decode_image(pages[0])) | set(decode_image(pages[1]))
    assert scanned == journal and len(journal) == 7


# --- connecting: mTLS, rate limits, unreachable issuers, secrets (issue 11, item 6) -----------------


def _few_rows(path, count, *, region="330106", serial=3):
    path.write_text("document_type,document_number\n" + "".join(
        f"resident_id,{make_resident_id(region, dt.date(1961, 3, 1) + dt.timedelta(days=i), serial)}\n"
        for i in range(count)))
    return path


def _command(address, env, csv_path, out, *credentials, extra=()):
    return [sys.executable, "-m", "issuer", "batch-issue", str(csv_path), "--server", address,
            "--ca", str(env.directory / "pki" / "ca.pem"), *credentials, "--out", str(out), *extra]


def _stored_codes(env):
    with sqlite3.connect(f"file:{env.database}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*), count(DISTINCT serial) FROM codes").fetchone()


@pytest.mark.parametrize("with_api_key", [False, True], ids=["certificate-only", "certificate-and-api-key"])
def test_batch_reaches_an_issuer_that_requires_client_certificates(tmp_path, with_api_key):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc), caller="batch",
                                mtls=True)
    credentials = ["--cert", str(env.client_cert), "--key", str(env.client_key)]
    if with_api_key:
        credentials += ["--api-key-file", str(env.directory / "app.apikey")]
    with ServerProcess(env) as server:
        run = subprocess.run(_command(server.address, env, _few_rows(tmp_path / "r.csv", 4), tmp_path / "out",
                                      *credentials, extra=("--format", "png")),
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "4 codes" in run.stdout and "Traceback" not in run.stderr
    assert _stored_codes(env) == (4, 4)


def test_batch_under_a_tight_rate_limit_backs_off_and_finishes_every_row(tmp_path):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc), rate=5, burst=2)
    rows = 4  # 3 calls a new resident (find, register, issue): 12 calls at 5 a second, burst 2
    with ServerProcess(env) as server:
        run = subprocess.run(_command(server.address, env, _few_rows(tmp_path / "r.csv", rows), tmp_path / "out",
                                      "--api-key-file", str(env.directory / "app.apikey")),
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"{rows} codes" in run.stdout and "after RESOURCE_EXHAUSTED" in run.stdout  # it was limited, and retried
    journal = [json.loads(line) for line in (tmp_path / "out" / JOURNAL).read_text().splitlines()]
    assert sorted(e["row"] for e in journal) == list(range(1, rows + 1))
    assert _stored_codes(env) == (rows, rows)  # retries never gave a second code


@pytest.fixture(scope="module")
def mtls_issuer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mtls")
    env = DevEnvironment.create(directory / "issuer", now=dt.datetime.now(dt.timezone.utc), caller="batch",
                                mtls=True)
    with ServerProcess(env) as server:
        yield env, server


def _loose_key(env, tmp_path):
    path = tmp_path / "loose.apikey"
    path.write_text((env.directory / "app.apikey").read_text())
    path.chmod(0o644)
    return path


# (name, how to call, the start of the one Error: line)
FAILURES = [
    ("unreachable-server", lambda env, server, tmp: (f"127.0.0.1:{free_port()}",
                                                     ["--api-key-file", str(env.directory / "app.apikey")]),
     "Error: UNAVAILABLE: "),
    ("no-client-certificate-for-an-mtls-issuer", lambda env, server, tmp: (
        server.address, ["--api-key-file", str(env.directory / "app.apikey")]), "Error: UNAVAILABLE: "),
    ("api-key-file-readable-by-others", lambda env, server, tmp: (
        server.address, ["--api-key-file", str(_loose_key(env, tmp))]), "Error: API key file "),
]


@pytest.mark.parametrize("make, expected", [(f[1], f[2]) for f in FAILURES], ids=[f[0] for f in FAILURES])
def test_failures_are_one_error_line_and_exit_1(mtls_issuer, tmp_path, make, expected):
    env, server = mtls_issuer
    address, credentials = make(env, server, tmp_path)
    run = subprocess.run(_command(address, env, _few_rows(tmp_path / "r.csv", 2), tmp_path / "out", *credentials,
                                  extra=("--retry-seconds", "0.5")), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, (run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("issuing")]
    assert len(lines) == 1 and lines[0].startswith(expected), run.stderr
    assert "Traceback" not in run.stderr
    if "chmod" in expected or "API key" in expected:
        assert "chmod 600" in lines[0]


def test_batch_files_are_owner_only_under_umask_022(issuer, tmp_path):
    env, server = issuer
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(_few_rows(tmp_path / "ok.csv", 3).read_text() + "resident_id,110105194912310021\n")
    for fmt in ("pdf", "png"):
        out = tmp_path / f"out-{fmt}"
        run = subprocess.run(_command(server.address, env, csv_path, out, "--api-key-file",
                                      str(env.directory / "app.apikey"), extra=("--format", fmt)),
                             capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
        assert run.returncode == 0, run.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        written = sorted(p.name for p in out.iterdir())
        assert JOURNAL in written and "rejected.csv" in written and len(written) >= 3
        for path in out.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


# --- the client's retries, in process (a fake RPC) ---------------------------------------------


class _Refused(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "refused"

    def trailing_metadata(self):
        return ()


def _client(**backoff):
    return IssuerClient("127.0.0.1:9", ca_pem=b"", api_key="k", backoff=Backoff(**backoff),
                        sleep=_client.slept.append, rng=random.Random(7))


@pytest.mark.parametrize("code, failures, attempts, outcome", [
    ("RESOURCE_EXHAUSTED", 3, 10, "ok"),
    ("UNAVAILABLE", 2, 10, "ok"),
    ("DEADLINE_EXCEEDED", 1, 10, "ok"),
    ("RESOURCE_EXHAUSTED", 5, 3, "RESOURCE_EXHAUSTED"),  # bounded: the third failure is raised
    ("INVALID_ARGUMENT", 1, 10, "INVALID_ARGUMENT"),  # never retried
    ("NOT_FOUND", 1, 10, "NOT_FOUND"),
], ids=["rate-limited", "unavailable", "deadline", "gives-up-after-attempts", "bad-request", "not-found"])
def test_client_retries_only_transient_failures_with_jittered_backoff(code, failures, attempts, outcome):
    _client.slept = []
    client = _client(attempts=attempts, base=0.05, cap=1.0)
    calls = []

    def method(request, *, metadata, timeout):
        calls.append(request)
        if len(calls) <= failures:
            raise _Refused(getattr(grpc.StatusCode, code))
        return "reply"

    try:
        if outcome == "ok":
            assert client._call(method, "req") == "reply"
            assert len(calls) == failures + 1 and client.retries == failures
        else:
            with pytest.raises(grpc.RpcError) as raised:
                client._call(method, "req")
            assert raised.value.code().name == outcome
    finally:
        client.close()
    assert all(0 <= wait <= min(1.0, 0.05 * 2 ** n) for n, wait in enumerate(_client.slept))


def test_backoff_honours_a_retry_hint_and_the_time_budget():
    rng = random.Random(1)
    backoff = Backoff(base=0.05, cap=2.0, budget=10)
    assert all(backoff.delay(0, rng, hint=1.5) >= 1.5 for _ in range(20))
    assert max(backoff.delay(20, rng) for _ in range(200)) <= 2.0
    _client.slept = []
    client = _client(attempts=50, base=1.0, cap=1.0, budget=0.0)  # no time to wait at all

    def method(request, *, metadata, timeout):
        raise _Refused(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.RpcError):
        client._call(method, "req")
    client.close()
    assert _client.slept == []
