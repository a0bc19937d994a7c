"""``healthcode-national`` as a real process: key generate, serve over mTLS with a config file, a claim and a
cross-province resolution through it (province 33 is the in-test NationalLink double), JSON logs, SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import threading
import time

from issuer.api import common_pb2
from national.api import national_index_pb2 as pb
from national.api import national_index_pb2_grpc as pb_grpc
from shellkit.files import write_file_atomically
from verifier.trust_sources import dev_bundle_bytes

from .national_support import LoopThread, Pki, TestProvince, new_mid, resident, write_pki

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HC_NATIONAL_KEY_PASSPHRASE": "correct horse battery staple", "PYTHONPATH": str(ROOT)}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "national", *args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=120)


def _wait_listening(proc: subprocess.Popen, lines: list[str], timeout: float = 60) -> int:
    """Read the server's stderr in a thread (every line kept); the port from its "listening" line."""
    port: list[int] = []
    started = threading.Event()

    def pump() -> None:
        for line in proc.stderr:
            lines.append(line)
            if json.loads(line).get("event") == "listening":
                port.append(int(json.loads(line)["port"]))
                started.set()
        started.set()

    threading.Thread(target=pump, daemon=True).start()
    if not started.wait(timeout) or not port:
        raise AssertionError("the server did not start: " + "".join(lines))
    return port[0]


def test_generate_key_serve_claim_resolve_and_stop(tmp_path):
    loop, pki = LoopThread(), Pki.create()
    p33 = TestProvince("33", pki)
    loop.run(p33.start())
    try:
        paths = write_pki(pki, tmp_path / "pki", ["national-index:ops"])
        write_file_atomically(tmp_path / "bundle.json", dev_bundle_bytes([p33.trusted], version=1), mode=0o644)
        config = tmp_path / "national.toml"
        config.write_text(f"""
listen = "127.0.0.1:0"
database = "national.db"
grace_period = 1.0
[tls]
cert = "{paths['server.pem']}"
key = "{paths['server.key']}"
client_ca = "{paths['ca']}"
[key]
keystore = "file"
directory = "keys"
[provinces]
ca = "{paths['ca']}"
cert = "{paths['national-index:ops.pem']}"
key = "{paths['national-index:ops.key']}"
endpoints = {{ "33" = "127.0.0.1:{p33.port}" }}
[trust]
dev_bundle = "bundle.json"
""")
        made = cli("key", "generate", "--config", str(config))
        assert made.returncode == 0, made.stderr
        key_file = tmp_path / "keys" / "national-blind-index.key.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        again = cli("key", "generate", "--config", str(config))
        assert again.returncode == 1 and again.stderr.startswith("Error:") and "never overwritten" in again.stderr

        proc = subprocess.Popen([sys.executable, "-m", "national", "serve", "--config", str(config)],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV, cwd=ROOT)
        lines: list[str] = []
        try:
            port = _wait_listening(proc, lines)
            mid, doc = new_mid(), resident(n=777)
            claim = pb_grpc.NationalIndexStub(pki.channel(port, "province:33")).ClaimIdentity(pb.ClaimIdentityRequest(
                main_index_id=mid, documents=[common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
                                                                  number=doc.number)]), timeout=10)
            assert claim.outcome == pb.CLAIM_OUTCOME_CLAIMED
            p33.patients[mid] = doc
            resolved = pb_grpc.HospitalResolutionStub(pki.channel(port, "hospital:44:gz-first")).ResolveCode(
                pb.ResolveCodeRequest(code=p33.code_for(mid), purpose=pb.PURPOSE_TREATMENT), timeout=10)
            assert (resolved.main_index_id, resolved.home_province) == (mid, "33")
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            assert proc.returncode == 0
            time.sleep(0.5)  # the pump thread reads the last lines
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        entries = [json.loads(line) for line in lines]  # every line is JSON
        assert any(e.get("event") == "rpc" and e.get("caller") == "hospital:44:gz-first" for e in entries)
        text = "".join(lines)
        assert doc.number not in text and doc.number[:14] not in text
        assert doc.number.encode() not in (tmp_path / "national.db").read_bytes()
    finally:
        loop.run(p33.stop())
        loop.close()
