"""Issue 15, "Done when": revocations and a key compromise reach an online terminal with no command typed.

Separate processes, as deployed: the provincial issuer (``python -m issuer serve``,
``push_mode = "network"``, signing into its working copy), the national trust
publisher (``python -m publisher serve``) and a mirror (``python -m http.server``
over the national repository directory, the way terminals read it). The
terminal is the verifier's own runtime (:class:`verifier.runtime.Runtime` over
:class:`verifier.trust_sources.TufTrustSource`, syncing from the mirror's URL
every half second), judging scans as it does at a hospital desk.

1. RevokeCode -> the terminal rejects the code (``revoked``), nothing typed;
2. the publisher is SIGKILLed holding an acknowledged push it has not published;
   restarted, it publishes it: the revoked code is rejected;
3. the issuer is SIGKILLed while its push is failing (publisher down); restarted
   (and the publisher back), what it had not pushed is pushed: rejected;
4. MarkCompromised (KeyAdmin, national:ops) -> codes signed since are rejected
   (``key_compromised``), the same way.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import grpc
import pytest

from healthcode import Reason
from issuer.api import common_pb2, health_codes_pb2
from issuer.api import key_admin_pb2 as kpb
from issuer.api import key_admin_pb2_grpc
from issuer.client import IssuerClient
from issuer.documents import make_resident_id, parse_document
from tools.bench.publisher_chain import Chain, Child, free_port, grpc_ready, http_ready
from verifier.config import SyncConfig, VerifierConfig
from verifier.runtime import Runtime
from verifier.scan import Scan
from verifier.trust_sources import TufTrustSource

pytestmark = pytest.mark.slow

UTC = dt.timezone.utc
SYNC = 0.5  # the terminal's sync interval, scaled down from the default
DEADLINE = 30.0  # seconds for a revocation to reach the terminal here (expected: a few)


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


class Terminal:
    """The verifier's runtime, syncing from the mirror every ``SYNC`` seconds in a thread of its own."""

    def __init__(self, base, mirror_url: str, root) -> None:
        source = TufTrustSource(base / "terminal", mirror_url, bootstrap_root=root)
        config = VerifierConfig(sync=SyncConfig(interval=dt.timedelta(seconds=SYNC)))
        self.runtime = Runtime(source, config=config, clock=utc_now)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._sync, daemon=True)
        self.thread.start()

    def _sync(self) -> None:
        while not self._stop.is_set():
            self.runtime.sync_once()
            self._stop.wait(SYNC)

    def judge(self, code_text: str):
        """The terminal's reason for a scan: None when valid."""
        return self.runtime.process(Scan(code_text, "desk")).reason

    def wait_for(self, code_text: str, reason, timeout: float = DEADLINE) -> float:
        start = time.monotonic()
        while (got := self.judge(code_text)) != reason:
            assert time.monotonic() - start < timeout, f"terminal still answers {got}, not {reason}"
            time.sleep(0.1)
        return time.monotonic() - start

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)


class Deployment:
    def __init__(self, base) -> None:
        self.base = base
        self.chain = Chain.create(base / "chain", now=utc_now().replace(microsecond=0))
        self.publisher_port, self.mirror_port, self.issuer_port = free_port(), free_port(), free_port()
        self.config = self.chain.write_issuer_config(self.publisher_port)
        self.children: list[Child] = []
        self.publisher = self.issuer = self.mirror = None

    def start_publisher(self, *, batch_window: float = 0.2) -> Child:
        ready = grpc_ready(f"127.0.0.1:{self.publisher_port}", self.chain.grpc_credentials("national:ops"))
        self.publisher = Child("publisher", self.chain.publisher_argv(self.publisher_port, batch_window=batch_window),
                               log=self.base / "publisher.log", ready=ready, env=self.chain.publisher_env()).start()
        self.children.append(self.publisher)
        return self.publisher

    def start_issuer(self) -> Child:
        ready = grpc_ready(f"127.0.0.1:{self.issuer_port}", self.chain.grpc_credentials("app"))
        self.issuer = Child("issuer", self.chain.issuer_argv(self.config, self.issuer_port),
                            log=self.base / "issuer.log", ready=ready, env=self.chain.issuer_env()).start()
        self.children.append(self.issuer)
        return self.issuer

    def start_mirror(self) -> Child:
        url = f"http://127.0.0.1:{self.mirror_port}/"
        self.mirror = Child("mirror", Chain.mirror_argv(self.chain.repo_dir, self.mirror_port),
                            log=self.base / "mirror.log", ready=http_ready(url + "metadata/timestamp.json")).start()
        self.children.append(self.mirror)
        return self.mirror

    def issuer_client(self) -> IssuerClient:
        pki = self.chain.pki_dir
        return IssuerClient(f"127.0.0.1:{self.issuer_port}", ca_pem=(pki / "ca.pem").read_bytes(),
                            cert_pem=(pki / "app.pem").read_bytes(), key_pem=(pki / "app.key").read_bytes())

    def staged(self) -> list:
        return sorted((self.chain.state_dir / "staged").glob("*.push"))

    def close(self) -> None:
        for child in self.children:
            child.kill()


def resident(seq: int):
    number = make_resident_id("330102", dt.date(1970, 1, 1) + dt.timedelta(days=seq), seq % 1000)
    return parse_document("resident_id", number, today=dt.date.today())


def revoke(client: IssuerClient, code) -> None:
    reply = client.codes.RevokeCode(health_codes_pb2.RevokeCodeRequest(
        ref=code.ref, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE), timeout=10)
    assert reply.revoked_count == 1


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path)
    try:
        d.start_publisher()
        d.start_mirror()
        d.start_issuer()
        yield d
    finally:
        d.close()


def test_revocations_and_a_compromise_reach_the_terminal_through_kills(deployment):
    d = deployment
    root = d.chain.repo_dir / "metadata" / "1.root.json"
    terminal = Terminal(d.base, f"http://127.0.0.1:{d.mirror_port}/", root)
    try:
        with d.issuer_client() as client:
            residents = [client.find_or_register(resident(i)) for i in range(5)]
            codes = [client.issue(mid, idempotency_key=f"chain-{i:04d}") for i, mid in enumerate(residents)]
        for code in codes:
            terminal.wait_for(code.code_text, None)  # valid everywhere first

        # (1) revoke -> rejected, nothing typed
        with d.issuer_client() as client:
            revoke(client, codes[0])
        took = terminal.wait_for(codes[0].code_text, Reason.REVOKED)
        assert terminal.judge(codes[1].code_text) is None
        print(f"revoke -> rejected: {took:.1f} s")

        # (2) the publisher killed holding an acknowledged push it has not published
        d.publisher.stop()
        d.start_publisher(batch_window=60.0)
        published_before = (d.chain.repo_dir / "metadata" / "timestamp.json").read_bytes()
        with d.issuer_client() as client:
            revoke(client, codes[1])
        wait_until(lambda: d.staged(), DEADLINE, "the issuer's push was not acknowledged")
        d.publisher.kill()
        assert (d.chain.repo_dir / "metadata" / "timestamp.json").read_bytes() == published_before
        assert terminal.judge(codes[1].code_text) is None  # not published yet
        d.start_publisher()
        terminal.wait_for(codes[1].code_text, Reason.REVOKED)
        assert not d.staged()

        # (3) the issuer killed while its push fails (the publisher is down)
        d.publisher.kill()
        with d.issuer_client() as client:
            revoke(client, codes[2])
        log = d.base / "issuer.log"
        wait_until(lambda: "role_push_failed" in log.read_text(), DEADLINE, "the issuer never tried to push")
        d.issuer.kill()
        d.start_publisher()
        d.start_issuer()  # at start: the newest role in the working copy is pushed again
        terminal.wait_for(codes[2].code_text, Reason.REVOKED)
        for revoked in codes[:2]:
            assert terminal.judge(revoked.code_text) is Reason.REVOKED

        # (4) a key compromise: codes signed since are rejected the same way
        kid = codes[3].ref.kid
        since = codes[3].issued_at.ToDatetime(tzinfo=UTC) - dt.timedelta(seconds=1)
        with grpc.secure_channel(f"127.0.0.1:{d.issuer_port}", d.chain.grpc_credentials("national:ops")) as channel:
            since_ts = common_ts(since)
            marked = key_admin_pb2_grpc.KeyAdminStub(channel).MarkCompromised(
                kpb.MarkCompromisedRequest(province="33", kid=kid, since=since_ts, publish=True), timeout=30)
        assert marked.key.state == kpb.KEY_STATE_COMPROMISED
        took = terminal.wait_for(codes[3].code_text, Reason.KEY_COMPROMISED)
        print(f"compromise -> rejected: {took:.1f} s")
        assert terminal.judge(codes[4].code_text) is Reason.KEY_COMPROMISED  # signed after `since` too
    finally:
        terminal.close()


def common_ts(moment: dt.datetime):
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out
