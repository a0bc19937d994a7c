"""The crash loop's setup: a real issuer's files, the issuer as a child process, residents to issue for.

:class:`Workspace` writes what ``python -m issuer serve`` needs (a throwaway
PKI, a P-256 signing key, a vault secret, an API keys file with one caller,
:data:`CALLER`) and names its SQLite file; :class:`ServerProcess` runs a server
as a child process (JSON logs to a file, the port read from its "listening"
line, up once the standard health check says SERVING) and kills it with
SIGKILL; :func:`register_residents` registers residents through the API.

Shared by the crash loop (:mod:`tools.bench.crashloop`), the issuer benchmarks
(:mod:`tools.bench.issuer`, :mod:`tools.bench.issuer_layers`) and
``tests/integration/test_crash.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Iterable, Sequence

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

import healthcode as hc
from issuer.api import common_pb2, resident_index_pb2, resident_index_pb2_grpc
from issuer.auth import generate_api_key, hash_api_key
from issuer.documents import make_resident_id
from issuer.tls import DevPki
from shellkit.files import write_file_atomically

__all__ = [
    "PROVINCE",
    "CALLER",
    "RPC_TIMEOUT",
    "Workspace",
    "ServerProcess",
    "ServerFailed",
    "resident_ids",
    "register_residents",
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROVINCE = hc.ProvinceCode("33")
CALLER = "load-client"
RPC_TIMEOUT = 10.0


# --------------------------------------------------------------------------- the server's files


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Everything a real ``healthcode-issuer serve`` needs, written under ``directory``.

    A throwaway PKI (``issuer.tls``), a P-256 signing key, a vault secret, an
    API keys file with one caller (:data:`CALLER`) and its key, and the path of
    the SQLite database.
    """

    directory: pathlib.Path
    database: pathlib.Path
    ca_pem: bytes
    api_key: str
    kid: bytes
    public_key: hc.VerificationKey
    tls_cert: pathlib.Path
    tls_key: pathlib.Path
    serve_flags: tuple[str, ...]

    @classmethod
    def create(cls, directory: pathlib.Path, *, now: dt.datetime) -> "Workspace":
        directory = pathlib.Path(directory)
        paths = DevPki.create(now=now).write(directory / "pki")
        private = ec.generate_private_key(ec.SECP256R1())
        signing_key = directory / "signing.pem"
        # secrets owner-only: the issuer refuses to start on a secret others can read
        write_file_atomically(signing_key, private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        vault_key = directory / "vault.key"
        write_file_atomically(vault_key, (os.urandom(32).hex() + "\n").encode())
        api_key = generate_api_key()
        callers = directory / "callers.toml"
        callers_toml = f'[[callers]]\nname = "{CALLER}"\nkey_sha256 = "{hash_api_key(api_key)}"\n'
        write_file_atomically(callers, callers_toml.encode())
        public_key = hc.load_public_key_pem(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        database = directory / "issuer.db"
        flags = (
            "--province", PROVINCE,
            "--database", str(database),
            "--tls-cert", str(paths["server.pem"]),
            "--tls-key", str(paths["server.key"]),
            "--api-keys", str(callers),
            "--signing-key", str(signing_key),
            "--vault-key", str(vault_key),
            "--rate", "1000000", "--burst", "1000000",  # the load is the point, not the limiter
            "--grace-period", "1",
        )
        return cls(directory, database, paths["ca.pem"].read_bytes(), api_key, public_key.key_id(), public_key,
                   paths["server.pem"], paths["server.key"], flags)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    def keyring(self, now: dt.datetime) -> hc.Keyring:
        return hc.Keyring([hc.TrustedKey(
            kid=self.kid, province=PROVINCE, public_key=self.public_key,
            use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=1),
            verify_until=now + dt.timedelta(days=30),
        )])

    def channel(self, port: int) -> grpc.aio.Channel:
        """A grpc.aio TLS channel to the server (create it inside the running event loop)."""
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(self.ca_pem))


# --------------------------------------------------------------------------- the server process


class ServerFailed(RuntimeError):
    """The server process did not come up (the message ends with its last log lines)."""


class ServerProcess:
    """A server in a child process: JSON logs to a file, port read from its "listening" line.

    :meth:`spawn` returns once the process listens and answers the standard
    health check with SERVING (bounded by ``timeout``). :meth:`kill` is
    SIGKILL; :meth:`close` kills it if it still runs (call it in a ``finally``).
    """

    def __init__(self, process: subprocess.Popen, log_path: pathlib.Path, port: int) -> None:
        self.process = process
        self.log_path = log_path
        self.port = port

    @classmethod
    def issuer(cls, workspace: Workspace, *, log_name: str = "server.log", timeout: float = 30.0,
               extra_flags: Sequence[str] = (), root: pathlib.Path | None = None) -> "ServerProcess":
        """``python -m issuer serve`` on 127.0.0.1 with a port the kernel picks (``root``: of another
        checkout of this project, e.g. an older commit's ``git archive``; this one by default)."""
        argv = [sys.executable, "-m", "issuer", "serve", *workspace.serve_flags,
                "--listen", "127.0.0.1:0", "--log-level", "INFO", *extra_flags]
        return cls.spawn(argv, workspace.directory / log_name, ca_pem=workspace.ca_pem, timeout=timeout, root=root)

    @classmethod
    def spawn(cls, argv: Sequence[str], log_path: pathlib.Path, *, ca_pem: bytes,
              timeout: float = 30.0, root: pathlib.Path | None = None) -> "ServerProcess":
        root = ROOT if root is None else root
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        log_path = pathlib.Path(log_path)
        with open(log_path, "ab") as log:
            offset = log.tell()
            process = subprocess.Popen(list(argv), cwd=root, env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        server = cls(process, log_path, 0)
        try:
            deadline = time.monotonic() + timeout
            server.port = server._wait_listening(offset, deadline)
            server._wait_serving(ca_pem, deadline)
        except BaseException:
            server.close()
            raise
        return server

    def _log_tail(self, offset: int = 0, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_listening(self, offset: int, deadline: float) -> int:
        position = offset
        pending = b""
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(position)
                chunk = f.read()
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("event") == "listening":
                    return int(entry["port"])
            if self.process.poll() is not None:
                raise ServerFailed(f"server exited with {self.process.returncode}:\n{self._log_tail(offset)}")
            time.sleep(0.02)
        raise ServerFailed(f"server did not report a listening port in time:\n{self._log_tail(offset)}")

    def _wait_serving(self, ca_pem: bytes, deadline: float) -> None:
        credentials = grpc.ssl_channel_credentials(ca_pem)
        with grpc.secure_channel(f"127.0.0.1:{self.port}", credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerFailed(f"server not SERVING in time:\n{self._log_tail()}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=min(2.0, remaining))
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.process.poll() is not None:
                    raise ServerFailed(f"server exited with {self.process.returncode}:\n{self._log_tail()}")
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, now (does not wait: call :meth:`wait`)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float = 10.0) -> int:
        return self.process.wait(timeout)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful drain), then wait; SIGKILL if it does not stop in ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)


# --------------------------------------------------------------------------- the residents


def resident_ids(count: int, *, start: int = 0) -> list[str]:
    """``count`` distinct valid resident ID numbers (Hangzhou, Xihu district)."""
    return [
        make_resident_id("330106", dt.date(1950, 1, 1) + dt.timedelta(days=i // 1000), i % 1000)
        for i in range(start, start + count)
    ]


async def register_residents(channel: grpc.aio.Channel, metadata, numbers: Iterable[str], *,
                             concurrency: int = 32) -> list[str]:
    """Register a resident per ID number through the API; return their main index IDs, in order."""
    stub = resident_index_pb2_grpc.ResidentIndexStub(channel)
    numbers = list(numbers)
    out: list[str | None] = [None] * len(numbers)
    positions = iter(range(len(numbers)))

    async def worker() -> None:
        for i in positions:
            request = resident_index_pb2.RegisterResidentRequest(
                primary=common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=numbers[i]))
            reply = await stub.RegisterResident(request, metadata=metadata, timeout=RPC_TIMEOUT)
            out[i] = reply.main_index_id

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [mid for mid in out if mid is not None]
