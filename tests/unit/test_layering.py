"""The core stays pure: no I/O libraries, no shells, no files, no sockets, no clock.

Two checks: a static one over the source (imports and calls), and a dynamic one
that signs and verifies under an audit hook and fails on any file open, socket
or subprocess, or on a forbidden module being loaded.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

CORE = pathlib.Path(__file__).resolve().parents[2] / "healthcode"
FORBIDDEN_MODULES = {
    "grpc", "sqlite3", "sqlite_utils", "PIL", "pyzbar", "qrcode", "socket", "ssl", "http", "urllib",
    "requests", "subprocess", "asyncio", "psycopg", "pkcs11", "tuf", "serial",
    "issuer", "verifier", "keys", "tools", "shellkit",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}
FORBIDDEN_ATTRIBUTES = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "open", "read_text",
                        "read_bytes", "write_text", "write_bytes", "urandom", "getenv", "environ"}


def core_sources():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    return files


def test_core_imports_no_io_module():
    offenders = []
    for path in core_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
    assert offenders == []


def test_core_calls_no_file_clock_or_environment():
    offenders = []
    for path in core_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert offenders == []


def test_sign_and_verify_touch_no_file_socket_or_process():
    program = textwrap.dedent(
        """
        import datetime as dt, sys
        import healthcode as hc
        from healthcode import Algorithm
        FORBIDDEN = %r
        keys = {alg: hc.generate_signing_key(alg) for alg in Algorithm}  # loads every backend first
        events = []
        def hook(event, args):
            if event in ("open", "socket.connect", "socket.bind", "subprocess.Popen", "os.system",
                         "shutil.copyfile", "os.remove", "os.rename"):
                events.append(event)
        sys.addaudithook(hook)
        now = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)
        for alg, key in keys.items():
            signer = hc.SoftwareSigner(key)
            claims = hc.CodeClaims(province="33", subject=hc.main_index_id_from_bytes(bytes(16)), serial=1,
                                   issued_at=now, expires_at=now + dt.timedelta(days=1))
            code = hc.sign_code(claims, signer)
            ring = hc.Keyring([hc.TrustedKey(kid=signer.kid, province="33", public_key=key.public_key(),
                                             use_from=now, use_until=now, verify_until=now + dt.timedelta(days=2))])
            assert hc.verify(code, ring, now=now).serial == 1
            assert not hc.check(code[:-3], ring, now=now).valid
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        print(events, loaded)
        sys.exit(1 if events or loaded else 0)
        """
        % (FORBIDDEN_MODULES - {"tools", "urllib"},)  # cryptography loads urllib.parse: parsing only
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
