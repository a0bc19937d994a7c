"""The issuer's gRPC server, for real: authentication, rate limits, deadlines and graceful shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import grpc
import pytest
from grpc_health.v1 import health_pb2

from issuer import auth
from issuer.api import resident_index_pb2_grpc
from issuer.service import ServiceSettings
from issuer.store.sqlite import SQLiteStore
from .issuer_server_support import (
    APP,
    APP_KEY,
    Client,
    GOOD_MID,
    LIMITED_KEY,
    PROVINCE,
    _ID,
    bearer,
    doc,
    hpb,
    resident_id,
    rpb,
)
from .issuer_server_support import harness, loop, pki, served  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- authentication and limits


@pytest.mark.parametrize("metadata", [None, bearer("wrong-key"), (("authorization", "Basic " + APP_KEY),),
                                      (("authorization", APP_KEY),)], ids=["none", "wrong", "basic", "no-scheme"])
def test_unauthenticated(served, metadata):  # noqa: F811 - the imported fixture
    _, _, client = served
    with pytest.raises(grpc.RpcError) as e:
        client.index.FindResident(rpb.FindResidentRequest(document=doc(_ID)), metadata=metadata, timeout=5)
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_client_against_tls_server_fails(served):  # noqa: F811 - the imported fixture
    server, _, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = resident_index_pb2_grpc.ResidentIndexStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.FindResident(rpb.FindResidentRequest(document=doc(_ID)), metadata=APP, timeout=3)
    assert e.value.code() is grpc.StatusCode.UNAVAILABLE


def test_over_limit_caller_is_refused_while_others_are_served(served):  # noqa: F811 - the imported fixture
    _, _, client = served
    limited = bearer(LIMITED_KEY)
    request = rpb.FindResidentRequest(document=doc(resident_id()))
    codes = []
    for _ in range(5):
        try:
            client.index.FindResident(request, metadata=limited, timeout=5)
        except grpc.RpcError as e:
            codes.append(e.code())
    assert codes[:3] == [grpc.StatusCode.NOT_FOUND] * 3  # the burst of 3 got through to the domain
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    with pytest.raises(grpc.RpcError) as e:
        client.index.FindResident(request, metadata=APP, timeout=5)
    assert e.value.code() is grpc.StatusCode.NOT_FOUND  # 'app' is unaffected


def test_rate_limiter_refills():
    now = [0.0]
    limiter = auth.RateLimiter(auth.RateLimit(2.0, 2.0), clock=lambda: now[0])
    assert [limiter.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("b")
    now[0] += 0.5  # one token back at 2/s
    assert [limiter.try_acquire("a") for _ in range(2)] == [True, False]


def test_mtls_client_certificate_is_a_caller(harness):  # noqa: F811 - the imported fixture
    server, domain, _ = harness.start(client_ca=True, issuance_clients=frozenset({"ops"}))  # an issuance client
    try:
        ops = Client(server.port, harness.pki, cert=harness.pki.client("ops"))
        anon = Client(server.port, harness.pki)
        try:
            request = rpb.RegisterResidentRequest(primary=doc(resident_id()))
            mid = ops.index.RegisterResident(request, timeout=5).main_index_id  # no API key: the CN is the caller
            code = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                       timeout=5).code
            # idempotency keys are per caller: 'ops' by certificate, 'app' by key are different callers
            ops_again = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                            timeout=5).code
            app_same_key = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                               metadata=APP, timeout=5).code
            assert ops_again == code and app_same_key.ref.serial != code.ref.serial
            stored = {r.serial: r.caller for r in domain.store.codes_of(mid)}
            assert stored == {code.ref.serial: "ops", app_same_key.ref.serial: "app"}
            with pytest.raises(grpc.RpcError) as e:  # a key, if sent, must be right, certificate or not
                ops.index.FindResident(rpb.FindResidentRequest(document=request.primary), metadata=bearer("nope"),
                                       timeout=5)
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as e:  # no certificate: the handshake fails
                anon.index.FindResident(rpb.FindResidentRequest(document=request.primary), metadata=APP, timeout=3)
            assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        finally:
            ops.close()
            anon.close()
    finally:
        harness.stop(server)


# --------------------------------------------------------------------------- deadlines


def late_outcomes(submit, delay: float, futures: list):
    """A ``submit_code`` whose outcome reaches the issuer ``delay`` seconds after the real commit
    (a slow commit, as the caller sees it); each returned future is appended to ``futures``."""

    def slow_submit(record, **kw):
        committed = submit(record, **kw)
        late: Future = Future()
        late.set_running_or_notify_cancel()

        def resolve(f):
            time.sleep(delay)
            late.set_exception(f.exception()) if f.exception() else late.set_result(f.result())

        committed.add_done_callback(lambda f: threading.Thread(target=resolve, args=(f,), daemon=True).start())
        futures.append(late)
        return late

    return slow_submit


def test_deadline_passing_before_the_code_is_stored_issues_nothing(harness):  # noqa: F811 - the imported fixture
    # The deadline passes while the issuance waits before anything is stored (here: a slow
    # domain in front of the issuer): nothing was signed or stored, the retry issues one code.
    server, domain, slow = harness.start(codes_delay=0.6)
    client = Client(server.port, harness.pki)
    try:
        mid = client.register()
        request = hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="deadline-0001")
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(request, metadata=APP, timeout=0.2)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.8)  # past the delay: a call that went on would have stored its code by now
        assert domain.store.codes_of(mid) == []
        slow.delay = 0
        retried = client.codes.IssueCode(request, metadata=APP, timeout=5).code
        assert [r.serial for r in domain.store.codes_of(mid)] == [retried.ref.serial]
    finally:
        client.close()
        harness.stop(server)


def test_deadline_passing_while_the_commit_runs_keeps_the_code_and_the_retry_gets_it(harness):  # noqa: F811 - the imported fixture
    # The deadline passes after the code was submitted, while its commit is slow: the
    # write goes on (durably), the serial is not handed out again, and the retry with the
    # same idempotency key gets that very code.
    server, domain, _ = harness.start()
    client = Client(server.port, harness.pki)
    submit = domain.store.submit_code
    slow_commits = []
    try:
        mid = client.register()
        request = hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="deadline-0002")
        domain.store.submit_code = late_outcomes(submit, 0.6, slow_commits)
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(request, metadata=APP, timeout=0.2)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        slow_commits[0].result(timeout=5)
        (stored,) = domain.store.codes_of(mid)  # committed although the caller gave up
        domain.store.submit_code = submit
        retried = client.codes.IssueCode(request, metadata=APP, timeout=5).code
        assert retried.ref.serial == stored.serial and retried.code_text == stored.text
        assert [r.serial for r in domain.store.codes_of(mid)] == [stored.serial]
        other = client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=5).code
        assert other.ref.serial == stored.serial + 1  # dense: the retry's refused serial was handed out again
    finally:
        client.close()
        harness.stop(server)


def test_too_short_deadline_is_refused_before_any_work(harness):  # noqa: F811 - the imported fixture
    server, domain, slow = harness.start(codes_delay=0, service=ServiceSettings(province=PROVINCE,
                                                                               min_time_remaining=2.0))
    client = Client(server.port, harness.pki)
    try:
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=GOOD_MID), metadata=APP, timeout=1.0)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "too close" in e.value.details()  # the server's answer, not the client's own timer
        assert slow.started == 0
    finally:
        client.close()
        harness.stop(server)


# --------------------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_drains_in_flight_calls(harness):  # noqa: F811 - the imported fixture
    server, domain, slow = harness.start(codes_delay=0.5)
    client = Client(server.port, harness.pki)
    try:
        mid = client.register()
        in_flight = client.codes.IssueCode.future(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=10)
        deadline = time.monotonic() + 5
        while slow.started < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping = harness.loop.submit(server.shutdown(grace=5))
        time.sleep(0.1)
        # health says NOT_SERVING as soon as shutdown starts; new calls are refused
        assert not domain.closed
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=2)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        code = in_flight.result(timeout=10).code  # the in-flight call completes
        assert code.main_index_id == mid
        stopping.result(timeout=10)
        assert domain.closed  # the store is closed last
        assert server.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        client.close()


@pytest.mark.parametrize("where", ["before_submit", "during_commit"])
def test_shutdown_without_grace_leaves_nothing_half_done(harness, where):  # noqa: F811 - the imported fixture
    # grace=0 cancels the RPC. Cancelled before its code was submitted, the issuance
    # stores nothing; cancelled while its commit runs, the code is committed before
    # the store closes. Either way the store closes last and nothing is half-done.
    server, domain, slow = harness.start(codes_delay=0.4 if where == "before_submit" else 0)
    client = Client(server.port, harness.pki)
    submitted: list = []
    if where == "during_commit":  # stored at once, but its caller hears of it only 2 s later
        domain.store.submit_code = late_outcomes(domain.store.submit_code, 2.0, submitted)
    try:
        mid = client.register()
        in_flight = client.codes.IssueCode.future(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="nograce-1"),
                                                  metadata=APP, timeout=10)
        deadline = time.monotonic() + 5
        while (slow.started < 1 or (where == "during_commit" and not submitted)) and time.monotonic() < deadline:
            time.sleep(0.01)
        harness.stop(server, 0)
        with pytest.raises(grpc.RpcError):
            in_flight.result(timeout=5)
        assert domain.closed and slow.started == 1
        reopened = SQLiteStore(domain.store.path)
        try:
            assert len(reopened.codes_of(mid)) == (0 if where == "before_submit" else 1)
        finally:
            reopened.close()
    finally:
        client.close()
