"""The trust publisher as a real process (``python -m publisher serve``) over mTLS, with real clients.

One chain per module (tools/bench/publisher_chain.py: national repository by
the ceremonies, provinces 33 and 44, a throwaway PKI); each province signs in
its working copy and pushes what it signed, as a provincial issuer does.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import grpc
import pytest
from tuf.api.metadata import Metadata, Targets

from issuer.role_push import RolePusher
from keys import ceremony
from keys.trustrepo import TrustRepository
from publisher.client import refusal_reason
from tools.bench.publisher_chain import PASSPHRASE, Chain, Child, free_port, grpc_ready
from verifier.trustsync import TrustSync

UTC = dt.timezone.utc


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


class Served:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.port = free_port()
        self.publisher: Child | None = None
        self.log = chain.base / "publisher.log"

    def start(self, **options) -> Child:
        argv = self.chain.publisher_argv(self.port, **options)
        ready = grpc_ready(f"127.0.0.1:{self.port}", self.chain.grpc_credentials("national:ops"))
        self.publisher = Child("publisher", argv, log=self.log, ready=ready, env=self.chain.publisher_env()).start()
        return self.publisher

    def work(self, code: str) -> TrustRepository:
        return TrustRepository(self.chain.work_dir(code))

    def signers(self, code: str):
        return ceremony.province_signers(self.chain.home(code), lambda holder, new=False: PASSPHRASE)

    def sign(self, code: str, files: dict[str, bytes]) -> tuple[bytes, list[tuple[str, bytes]]]:
        """A new role version in the province's working copy: its bytes and every file it lists."""
        work = self.work(code)
        work.publish_province_targets(code, files, self.signers(code), now=utc_now())
        role = work.province_targets(code)
        data = (work.directory / "metadata" / f"{role.version}.province-{code}.json").read_bytes()
        return data, [(p, work.target_bytes(p, role)) for p in role.targets]

    def published_version(self, code: str) -> int:
        repo = TrustRepository(self.chain.repo_dir)
        snapshot = repo._published_snapshot()
        return snapshot.signed.meta[f"province-{code}.json"].version

    def wait_published(self, code: str, version: int, timeout: float = 10.0) -> float:
        start = time.monotonic()
        while self.published_version(code) < version:
            assert time.monotonic() - start < timeout, f"province-{code} v{version} not published"
            time.sleep(0.02)
        return time.monotonic() - start

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    chain = Chain.create(tmp_path_factory.mktemp("chain"), now=utc_now(), provinces=("33", "44"))
    s = Served(chain)
    s.start()
    yield s
    if s.publisher is not None:
        s.publisher.stop()


def test_a_push_is_acknowledged_then_published_and_a_terminal_accepts_it(served):
    role, files = served.sign("33", {"revocation/00aa/snapshot.hcrs": b"a revocation snapshot"})
    version = Metadata[Targets].from_bytes(role).signed.version
    with served.chain.client("province:33", served.port) as client:
        ack = client.push("33", role, targets=files)
        assert (ack.version, ack.already_accepted) == (version, False)
        took = served.wait_published("33", version)
        again = client.push("33", role, targets=[])  # a retry after a lost answer: idempotent
        assert again.already_accepted and again.version == version
    assert took < 3.0  # batch window 0.2 s
    root = (served.chain.repo_dir / "metadata" / "1.root.json").read_bytes()
    terminal = TrustSync(served.chain.base / "t" / "md", served.chain.base / "t" / "t", served.chain.repo_dir, root)
    terminal.refresh(utc_now())  # the verifier's own sync accepts what was published
    assert terminal.province_targets("33")["provinces/33/revocation/00aa/snapshot.hcrs"]
    with served.chain.client("national:ops", served.port) as ops:
        report = ops.status()
    p33 = {p.province: p for p in report.provinces}["33"]
    assert p33.published_version == p33.accepted_version == version and p33.published_at is not None
    assert report.timestamp_expires > report.now


@pytest.mark.parametrize("cn, code, reason", [
    ("province:33", "44", "other_province"),  # another province's role
])
def test_another_provinces_role_is_refused_and_logged(served, cn, code, reason):
    role, files = served.sign(code, {"revocation/00bb/snapshot.hcrs": b"signed by 44"})
    before = served.published_version(code)
    with served.chain.client(cn, served.port) as client, pytest.raises(grpc.RpcError) as err:
        client.push(code, role, targets=files)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refusal_reason(err.value) == reason
    time.sleep(0.5)
    assert served.published_version(code) == before
    refusals = [line for line in served.log_lines() if line.get("event") == "push_refused"]
    assert refusals[-1]["province"] == "33" and refusals[-1]["reason"] == reason


def test_replayed_and_rolled_back_pushes_are_refused(served):
    first, files = served.sign("33", {"revocation/00cc/snapshot.hcrs": b"first"})
    second, more = served.sign("33", {"revocation/00cc/snapshot.hcrs": b"second"})
    with served.chain.client("province:33", served.port) as client:
        client.push("33", first, targets=files)
        client.push("33", second, targets=more)
        with pytest.raises(grpc.RpcError) as err:
            client.push("33", first, targets=files)
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION and refusal_reason(err.value) == "replayed"
        with pytest.raises(grpc.RpcError) as err:
            client.push("33", b'{"signed": ', targets=[])  # truncated upload
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and refusal_reason(err.value) == "malformed"


def test_an_oversized_file_is_refused_before_it_is_parsed(served):
    role, files = served.sign("33", {"revocation/0300/snapshot.hcrs": b"small"})
    big = [(files[0][0], b"\0" * ((16 << 20) + 1))] + files[1:]  # over the 16 MiB cap of one file
    with served.chain.client("province:33", served.port) as client, pytest.raises(grpc.RpcError) as err:
        client.push("33", role, targets=big)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and refusal_reason(err.value) == "too_large"
    refusals = [line for line in served.log_lines() if line.get("event") == "push_refused"]
    assert refusals[-1]["province"] == "33" and refusals[-1]["reason"] == "too_large"


def test_callers_without_the_province_role_may_not_push(served):
    role, files = served.sign("33", {"revocation/00dd/snapshot.hcrs": b"x"})
    for cn, code in (("national:ops", grpc.StatusCode.PERMISSION_DENIED), ("app", grpc.StatusCode.PERMISSION_DENIED)):
        with served.chain.client(cn, served.port) as client, pytest.raises(grpc.RpcError) as err:
            client.push("33", role, targets=files)
        assert err.value.code() is code, cn


def test_an_acknowledged_push_survives_sigkill_of_the_publisher(served):
    served.publisher.stop()
    served.start(batch_window=30.0)  # nothing is published for 30 s after a push ...
    role, files = served.sign("33", {"revocation/00ee/snapshot.hcrs": b"acknowledged then killed"})
    version = Metadata[Targets].from_bytes(role).signed.version
    with served.chain.client("province:33", served.port) as client:
        assert client.push("33", role, targets=files).version == version
    served.publisher.kill()  # ... and the publisher dies before it publishes
    assert served.published_version("33") < version
    served.start()  # at start, what is staged is published first
    served.wait_published("33", version)


def test_the_timestamp_is_refreshed_without_pushes(served):
    served.publisher.stop()
    served.start(timestamp_refresh=1.0)
    with served.chain.client("national:ops", served.port) as ops:
        first = ops.status().timestamp_version
        time.sleep(2.5)
        assert ops.status().timestamp_version >= first + 1


def test_the_issuers_pusher_retries_until_the_publisher_is_back(served):
    served.publisher.stop()
    work = served.work("33")
    served.sign("33", {"revocation/00ff/snapshot.hcrs": b"pushed while the publisher is down"})
    version = work.province_targets("33").version
    pusher = RolePusher(repository=work, province="33", connect=lambda: served.chain.client("province:33", served.port),
                        poll=0.2, backoff_initial=0.2, backoff_max=0.5)
    pusher.start()
    try:
        time.sleep(1.0)
        assert pusher.failures >= 1 and pusher.acknowledged == 0
        served.start()
        assert pusher.wait_acknowledged(version, timeout=15)
        served.wait_published("33", version)
        # a key-list change in the working copy (KeyAdmin) is seen by the poll alone
        served.sign("33", {"revocation/00ff/snapshot.hcrs": b"next"})
        assert pusher.wait_acknowledged(version + 1, timeout=10)
    finally:
        pusher.stop(5)


def test_status_shows_what_is_pushed_but_not_published(served):
    import subprocess
    import sys

    served.publisher.stop()
    served.start(batch_window=30.0)
    role, files = served.sign("33", {"revocation/0100/snapshot.hcrs": b"waiting for its publication"})
    version = Metadata[Targets].from_bytes(role).signed.version
    with served.chain.client("province:33", served.port) as client:
        client.push("33", role, targets=files)
    pki = served.chain.pki_dir

    def keys(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "keys", "--repo", str(served.chain.repo_dir), "status", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = keys("--publisher", f"127.0.0.1:{served.port}", "--publisher-ca", str(pki / "ca.pem"),
                "--publisher-cert", str(pki / "national:ops.pem"), "--publisher-key", str(pki / "national:ops.key"))
    assert f"PUSHED, NOT YET PUBLISHED: v{version}" in text, text
    assert "timestamp expires" in text and "北京时间" in text and " ago (" in text
    # from the repository directory: a role written there (repository mode) and not yet published
    repo = TrustRepository(served.chain.repo_dir)
    with repo.lock():
        repo.publish_province_targets("44", {"revocation/0200/snapshot.hcrs": b"written"}, served.signers("44"),
                                      now=utc_now())
    newest = repo.province_targets("44").version
    text = keys()
    assert "province 44" in text and f"PUSHED, NOT YET PUBLISHED: v{newest}" in text, text
    assert "timestamp expires" in text and "newest publication" in text


def test_metrics_show_the_timestamp_expiry_and_the_rpcs(served):
    import urllib.request

    served.publisher.stop()
    port = free_port()
    served.start(metrics_port=port)
    with served.chain.client("national:ops", served.port) as ops:
        ops.status()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    left = [line for line in text.splitlines() if line.startswith("healthcode_publisher_timestamp_expires_in_seconds")]
    assert left and 0 < float(left[0].split()[-1]) <= 86400
    assert "healthcode_publisher_staged_pushes 0.0" in text
    # the issuer's Metrics, reused: its series keep their healthcode_issuer_ names
    assert 'code="OK",method="healthcode.publisher.v1.TrustPublisher/GetPublicationStatus"} 1.0' in text
