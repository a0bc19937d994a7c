"""The revocation job: its schedule, its configuration, and the serving issuer publishing revocations."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

import healthcode as hc
from healthcode.keylist import KeyList
from healthcode.revocation import (
    RevocationState,
    read_header,
    snapshot_target,
)
from issuer.config import ConfigError, IssuerConfig
from issuer.revocation_job import RevocationPublishJob, open_revocation_job, push_directory
from issuer.revocation_publisher import SQLiteRevocationSource
from keys.trustrepo import TrustRepository
from verifier.revocation_sync import SNAPSHOT
from verifier.trustsync import TrustSync
from .revocation_flow_support import (
    MIN,
    NOW,
    ONLINE_PASSPHRASE,
    PROVINCE_PASSPHRASE,
    UTC,
    World,
    answers,
    document,
    expected,
)
from .revocation_flow_support import issued, world  # noqa: F401 - fixtures


# ------------------------------------------------------------------ the job's schedule


def test_the_job_publishes_on_demand_coalesces_bursts_and_flushes_at_stop(world):  # noqa: F811 - the imported fixture
    mids, codes = world.mids, world.codes
    clock = [NOW + MIN]
    job = RevocationPublishJob(
        source=SQLiteRevocationSource(world.store.path), directory=world.revocation_dir, province="33",
        repository=world.repo, signers=world.province_signers[:2], publish_snapshot=True, fsync=False,
        interval=3600, min_interval=1.0, settle=0.5, clock=lambda: clock[0])
    world.listener = job.trigger
    job.start()
    try:
        assert job.wait_for_runs(1, 10) == 1  # at start: the shard's first, empty snapshot
        assert [p.revoked for p in job.last_run.publications] == [0]
        # a burst of revocations: one publication
        burst = [codes[mid][0] for mid in mids[:5]]
        world.revoke(*burst)
        assert job.wait_for_runs(2, 10) == 2
        assert [p.added for p in job.last_run.publications] == [5]
        # another revocation at once: not before min_interval has passed since the last run
        world.revoke(codes[mids[5]][0])
        assert job.wait_for_runs(3, 0.4) == 2
        assert job.wait_for_runs(3, 10) == 3
        assert [p.added for p in job.last_run.publications] == [1]
        # a revocation just before stopping is published by the last run
        world.revoke(codes[mids[6]][0])
    finally:
        job.stop(timeout=30)
    assert job.runs == 4 and job.failures == 0
    assert [p.added for p in job.last_run.publications] == [1]
    world.sync_mirror()
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    checked = [code for mid in mids[:10] for code in codes[mid]]
    assert answers(checked, client, NOW + 2 * MIN) == expected(
        checked, burst + [codes[mids[5]][0], codes[mids[6]][0]])


def test_a_failed_push_is_retried_and_completed_by_reconciliation(world):  # noqa: F811 - the imported fixture
    world.revoke(world.codes[world.mids[0]][0])

    def job(signers):
        return RevocationPublishJob(
            source=SQLiteRevocationSource(world.store.path), directory=world.revocation_dir, province="33",
            repository=world.repo, signers=signers, publish_snapshot=True, fsync=False)

    with pytest.raises(Exception, match="signatures"):  # one key, below the role's threshold of two
        job(world.province_signers[:1]).run_once(NOW + MIN)
    assert world.repo.province_targets("33").targets.keys() == {"provinces/33/keys.json"}
    run = world.job.run_once(NOW + 2 * MIN)  # nothing new to publish, but the push catches up
    assert run.publications == () and run.push.added == (f"revocation/{world.k1.kid.hex()}/snapshot.hcrs",)
    world.sync_mirror()
    client = world.verifier("hospital")
    assert client.refresh(NOW + 3 * MIN).revocation.get("33", world.k1.kid).seq == 1
    assert world.job.run_once(NOW + 4 * MIN).push is None  # in agreement: nothing signed


# ------------------------------------------------------------------ configuration and the server


def _config(world: World, **overrides) -> IssuerConfig:  # noqa: F811 - the imported fixture
    fields = dict(
        province="33", database=world.store.path, vault_key=Path("vault.key"), key_set=Path("key-set.json"),
        keystore_dir=Path("keystore"), tls_cert=Path("server.pem"), tls_key=Path("server.key"),
        client_ca=Path("ca.pem"), trust_repo=world.repo.directory, tuf_keys=world.tuf_dir,
        online_keys=world.online_dir, revocation_directory=world.revocation_dir)
    fields.update(overrides)
    return IssuerConfig(**fields)


def test_the_job_from_the_issuer_configuration(world):  # noqa: F811 - the imported fixture
    mids, codes = world.mids, world.codes
    world.revoke(codes[mids[0]][0])
    job = open_revocation_job(_config(world), tuf_passphrase=PROVINCE_PASSPHRASE,
                              online_passphrase=ONLINE_PASSPHRASE)
    run = job.run_once(NOW + MIN)
    assert [p.revoked for p in run.publications] == [1] and run.push.published
    world.sync_mirror()
    client = world.verifier("hospital")
    assert client.refresh(NOW + 2 * MIN).revocation.get("33", world.k1.kid).seq == 1
    # without online keys the province role is signed; the national service publishes later
    job = open_revocation_job(_config(world, online_keys=None), tuf_passphrase=PROVINCE_PASSPHRASE,
                              online_passphrase=None)
    world.revoke(codes[mids[1]][0])
    assert job.run_once(NOW + 3 * MIN).push.published is None


@pytest.mark.parametrize("overrides, passphrases, message", [
    ({}, (b"wrong passphrase!", ONLINE_PASSPHRASE), "passphrase"),
    ({}, (None, ONLINE_PASSPHRASE), "tuf_passphrase_env"),
    ({}, (PROVINCE_PASSPHRASE, None), "online_passphrase_env"),
    ({"tuf_keys": "online"}, (ONLINE_PASSPHRASE, ONLINE_PASSPHRASE), "belong to province-33"),
], ids=["wrong-passphrase", "no-passphrase", "no-online-passphrase", "not-the-province-keys"])
def test_job_configuration_errors_are_refused_at_start(world, overrides, passphrases, message):  # noqa: F811 - the imported fixture
    if overrides.get("tuf_keys") == "online":
        overrides = {"tuf_keys": world.online_dir}
    with pytest.raises(ConfigError, match=message):
        open_revocation_job(_config(world, **overrides), tuf_passphrase=passphrases[0],
                            online_passphrase=passphrases[1])


@pytest.mark.parametrize("overrides, message", [
    ({"revocation_push_mode": "ftp"}, "push_mode"),
    ({"trust_repo": None, "tuf_keys": None, "online_keys": None}, "needs key_admin.trust_repo"),
    ({"revocation_interval": 0.0}, "interval"),
    ({"revocation_keep_deltas": 0}, "keep_deltas"),
])
def test_revocation_settings_are_validated(world, overrides, message):  # noqa: F811 - the imported fixture
    with pytest.raises(ConfigError, match=message):
        _config(world, **overrides)


def test_config_file_revocation_section(tmp_path):
    from issuer.config import load_config

    path = tmp_path / "conf" / "issuer.toml"
    path.parent.mkdir()
    path.write_text(
        'province = "33"\ndatabase = "issuer.db"\n[tls]\ncert = "s.pem"\nkey = "s.key"\n'
        '[auth]\napi_keys = "callers.toml"\n[keys]\nsigning_key = "k.pem"\nvault_key = "v.key"\n'
        '[revocation]\ndirectory = "revocation"\npush_mode = "directory-only"\ninterval_minutes = 30\n'
        'min_interval_seconds = 5\nkeep_deltas = 24\n')
    config = load_config(path)
    assert config.revocation_directory == path.parent / "revocation"
    assert (config.revocation_push_mode, config.revocation_interval, config.revocation_min_interval,
            config.revocation_keep_deltas) == ("directory-only", 1800.0, 5.0, 24)


def test_the_serving_issuer_publishes_after_revoke_code(tmp_path):
    """``healthcode-issuer serve`` with a [revocation] section, as a real process: RevokeCode over
    gRPC, the job publishes into its directory within seconds, another tool pushes the directory
    into the repository, a verifier refreshes once."""
    from issuer.api import common_pb2, health_codes_pb2
    from issuer.client import IssuerClient
    from issuer.devenv import DevEnvironment, ServerProcess

    now = dt.datetime.now(UTC).replace(microsecond=0)
    env = DevEnvironment.create(tmp_path / "issuer", now=now)
    with open(env.config_path, "a") as config:
        config.write('\n[revocation]\ndirectory = "revocation"\npush_mode = "directory-only"\n'
                     "min_interval_seconds = 0\n")
    kid = env.public_key.key_id()
    snapshot = env.directory / "revocation" / snapshot_target("33", kid)
    with ServerProcess(env) as server, IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as client:
        # three residents: a resident's new static code supersedes (revokes) their previous one
        residents = [client.find_or_register(document(i)) for i in (1, 2, 3)]
        issued = [client.issue(mid, idempotency_key=f"flow-{i:04d}") for i, mid in enumerate(residents)]
        reply = client.codes.RevokeCode(
            health_codes_pb2.RevokeCodeRequest(ref=issued[1].ref, reason=common_pb2.REVOCATION_REASON_FRAUD),
            metadata=(("authorization", f"Bearer {env.api_key}"),), timeout=10)
        assert reply.revoked_count == 1
        deadline = time.monotonic() + 20
        while not (snapshot.exists() and read_header(snapshot.read_bytes()).count == 1):
            assert time.monotonic() < deadline, (env.directory / "server.log").read_text()
            time.sleep(0.1)
        assert server.stop() == 0
    state = RevocationState.from_snapshot(snapshot.read_bytes())
    assert state.serials() == [issued[1].ref.serial]

    # the directory, pushed by another tool with the province's keys, reaches a verifier
    province = [CryptoSigner.generate_ed25519() for _ in range(2)]
    online = [CryptoSigner.generate_ed25519() for _ in range(2)]
    national = CryptoSigner.generate_ed25519()
    repo, _ = TrustRepository.init(tmp_path / "repo", root_signers=[national], root_threshold=1,
                                   targets_signers=[national], targets_threshold=1,
                                   snapshot_signers=online[:1], timestamp_signers=online[1:], now=now)
    repo.add_province("33", province, 2, targets_signers=[national], now=now)
    repo.publish_key_list(KeyList(province="33", serial=1, keys=tuple(env.keyring())), province, now=now)
    pushed = push_directory(repo, "33", env.directory / "revocation", province, now=now, publish=True)
    assert pushed is not None and pushed.published
    verifier = TrustSync(tmp_path / "v" / "metadata", tmp_path / "v" / "targets", repo.directory, repo.root_bytes(1))
    assert verifier.refresh(now + MIN).revocation.get("33", kid).action == SNAPSHOT
    keyring, _ = verifier.load_cached(now + MIN)
    revocation = verifier.load_revocation(now + MIN)
    results = [hc.check(code.code_text, keyring, now=now + MIN, revocation=revocation) for code in issued]
    assert ["valid" if r.valid else r.reason.value for r in results] == ["valid", "revoked", "valid"]


def test_the_store_has_the_partial_index_the_publisher_reads(world):  # noqa: F811 - the imported fixture
    import sqlite3

    conn = sqlite3.connect(world.store.path)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT serial FROM codes WHERE province = ? AND kid = ? "
            "AND revoked_at IS NOT NULL ORDER BY serial", ("33", b"k")).fetchall()
    finally:
        conn.close()
    assert "codes_revoked" in str(plan)


@pytest.mark.parametrize("superseding", ["static code", "phone credential"])
def test_a_superseded_code_is_published_within_seconds(tmp_path, superseding):
    """A resident's new static code (IssueCode) or new phone credential (IssueCredential) revokes the
    previous one as superseded: the revocation job publishes that at once, as it does for RevokeCode,
    not at its next scheduled run an hour later."""
    from healthcode.algorithms import generate_signing_key
    from healthcode.presentation import proof_of_possession_input
    from issuer.api import wallets_pb2
    from issuer.client import IssuerClient
    from issuer.devenv import DevEnvironment, ServerProcess

    now = dt.datetime.now(UTC).replace(microsecond=0)
    env = DevEnvironment.create(tmp_path / "issuer", now=now)
    with open(env.config_path, "a") as config:
        config.write('\n[revocation]\ndirectory = "revocation"\npush_mode = "directory-only"\n'
                     "min_interval_seconds = 0\n")
    snapshot = env.directory / "revocation" / snapshot_target("33", env.public_key.key_id())

    def credential(client, mid):
        device = generate_signing_key()
        metadata = (("authorization", f"Bearer {env.api_key}"),)
        challenge = client.wallets.CreateChallenge(wallets_pb2.CreateChallengeRequest(main_index_id=mid),
                                                   metadata=metadata, timeout=10).challenge
        return client.wallets.IssueCredential(wallets_pb2.IssueCredentialRequest(
            main_index_id=mid, challenge=challenge,
            device_key=wallets_pb2.DeviceKey(algorithm=wallets_pb2.DEVICE_KEY_ALGORITHM_ES256,
                                             public_key=device.public_key().spki_der()[-65:]),
            proof=device.sign(proof_of_possession_input(challenge, device.public_key()))),
            metadata=metadata, timeout=10).credential

    with ServerProcess(env) as server, IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as client:
        mid = client.find_or_register(document(1))
        if superseding == "static code":
            first = client.issue(mid, idempotency_key="supersede-0001")
            client.issue(mid, idempotency_key="supersede-0002")
        else:
            first = credential(client, mid)
            credential(client, mid)
        deadline = time.monotonic() + 15
        while not (snapshot.exists() and read_header(snapshot.read_bytes()).count == 1):
            assert time.monotonic() < deadline, "the superseded code was not published"
            time.sleep(0.1)
        assert server.stop() == 0
    assert RevocationState.from_snapshot(snapshot.read_bytes()).serials() == [first.ref.serial]
