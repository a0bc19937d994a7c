"""The national trust repository (keys/trustrepo.py) and a verifier's trust sync (verifier/trustsync.py).

Everything runs on real directories: the repository directory *is* the mirror
(a USB stick). Attacks are played by editing the mirror: an old timestamp put
back, metadata signed by the wrong keys. This module: first sync, rotation,
rollback, freeze, compromise, root rotation and cutting a province off.
Delegation boundaries, corruption, the offline cache and transports are in
test_trustrepo_boundaries.py; the harness in trustrepo_support.py.
"""

from __future__ import annotations


import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp

import healthcode as hc
from healthcode import Algorithm, CompromisePolicy, KeyStatus, Reason
from healthcode.keylist import parse_key_list
from keys.errors import TrustRepoError
from keys.trustrepo import TrustRepository
from verifier.trustsync import (
    RollbackError,
    TrustDataError,
    TrustDataFrozen,
)
from .trustrepo_support import DAY, HOUR, Nation, T0, code_for, entry, gen, reason, snapshot_of
from .trustrepo_support import nation, small_template, synced  # noqa: F401 - fixtures


ALGS = (Algorithm.ES256, Algorithm.EDDSA, Algorithm.SM2_SM3)


# ------------------------------------------------------------------ first sync, all 34 provinces


def test_first_sync_of_34_provinces_verifies_each_provinces_codes(tmp_path):
    nation = Nation(tmp_path / "repo", tuple(hc.PROVINCES), algs=ALGS)  # noqa: F811 - the imported fixture
    assert "root v1 (3 of 5)" in nation.init_change.summary
    assert len(nation.repo.provinces()) == 34
    client = nation.client(tmp_path / "client")
    now = T0 + HOUR
    result = client.refresh(now)
    assert result.complete and result.changed == tuple(sorted(hc.PROVINCES)) and result.removed == ()
    assert len(result.keyring) == 34 and result.root_version == 1
    assert result.last_verified_refresh == now and result.fresh_until == T0 + DAY
    assert set(result.serials.values()) == {1}
    for code, province in nation.provinces.items():
        text = code_for(code, province.keys[0], now)
        assert hc.verify(text, result.keyring, now=now).province == code
    # a code claiming another province is not verified by this province's key
    forged = code_for("44", nation.provinces["33"].keys[0], now)
    assert reason(forged, result.keyring, now) is Reason.UNKNOWN_KEY
    ring, last = client.load_cached(now)
    assert last == now and sorted(k.kid for k in ring) == sorted(k.kid for k in result.keyring)
    # nothing new: the next refresh transfers the timestamp only
    again = client.refresh(now + HOUR)
    assert again.changed == () and again.files_transferred == 1 and again.bytes_transferred < 600


# ------------------------------------------------------------------ scheduled rotation


def test_scheduled_rotation_pre_published_key_and_codes_across_it(synced, tmp_path):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    province = nation.provinces["33"]
    old, new = province.keys[0], hc.generate_signing_key(Algorithm.ES256)
    switch = T0 + 10 * DAY
    province.keys.append(new)
    change = nation.publish_keys("33", T0 + 2 * HOUR, entries=[
        entry("33", old, use_until=switch, verify_until=switch + 30 * DAY),
        entry("33", new, use_from=switch, use_until=switch + 90 * DAY, verify_until=switch + 120 * DAY),
    ])
    assert "serial 2 (2 keys)" in change.summary and "publish() makes it visible" in change.summary
    assert any(path.endswith(".keys.json") for path in change.written)
    nation.publish(T0 + 2 * HOUR)
    result = client.refresh(T0 + 3 * HOUR)
    assert result.changed == ("33",) and result.serials["33"] == 2
    assert result.bytes_transferred <= 10_000  # target of the issue: a one-province rotation
    before = code_for("33", old, switch - HOUR, serial=1)
    after = code_for("33", new, switch + HOUR, serial=1)
    too_early = code_for("33", new, switch - HOUR, serial=2)
    too_late = code_for("33", old, switch + HOUR, serial=2)
    now = switch + 2 * HOUR
    assert reason(before, result.keyring, now) == "valid"
    assert reason(after, result.keyring, now) == "valid"
    assert reason(too_early, result.keyring, now) is Reason.KEY_NOT_VALID_AT_ISSUANCE
    assert reason(too_late, result.keyring, now) is Reason.KEY_NOT_VALID_AT_ISSUANCE


# ------------------------------------------------------------------ rollback


def _old_timestamp(nation, client, keep):  # noqa: F811 - the imported fixture
    """Serve the timestamp saved before the last publish."""
    (nation.directory / "metadata" / "timestamp.json").write_bytes(keep["timestamp"])


def _timestamp_to_old_snapshot(nation, client, keep):  # noqa: F811 - the imported fixture
    """A correctly signed new timestamp that names an older snapshot."""
    current = Metadata[Timestamp].from_bytes((nation.directory / "metadata" / "timestamp.json").read_bytes())
    old_version = current.signed.snapshot_meta.version - 1
    data = (nation.directory / "metadata" / f"{old_version}.snapshot.json").read_bytes()
    forged = Metadata(Timestamp(version=current.signed.version + 1, expires=T0 + DAY,
                                snapshot_meta=MetaFile(old_version, len(data))))
    forged.sign(nation.timestamp_signers[0])
    (nation.directory / "metadata" / "timestamp.json").write_bytes(forged.to_bytes())


def _snapshot_rolls_back_a_province(nation, client, keep):  # noqa: F811 - the imported fixture
    """A correctly signed new snapshot (and timestamp) naming an older province-33."""
    meta_dir = nation.directory / "metadata"
    current = Metadata[Timestamp].from_bytes((meta_dir / "timestamp.json").read_bytes())
    snapshot_file = meta_dir / f"{current.signed.snapshot_meta.version}.snapshot.json"
    snapshot = Metadata[Snapshot].from_bytes(snapshot_file.read_bytes())
    info = snapshot.signed.meta["province-33.json"]
    old = (meta_dir / f"{info.version - 1}.province-33.json").read_bytes()
    snapshot.signed.meta["province-33.json"] = MetaFile(info.version - 1, len(old))
    snapshot.signed.version += 1
    snapshot.sign(nation.snapshot_signers[0])
    data = snapshot.to_bytes()
    (meta_dir / f"{snapshot.signed.version}.snapshot.json").write_bytes(data)
    stamp = Metadata(Timestamp(version=current.signed.version + 1, expires=T0 + DAY,
                               snapshot_meta=MetaFile(snapshot.signed.version, len(data))))
    stamp.sign(nation.timestamp_signers[0])
    (meta_dir / "timestamp.json").write_bytes(stamp.to_bytes())


ROLLBACKS = [
    ("old-timestamp", _old_timestamp),
    ("timestamp-names-old-snapshot", _timestamp_to_old_snapshot),
    ("snapshot-names-old-province-role", _snapshot_rolls_back_a_province),
]


@pytest.mark.parametrize("attack", [row[1] for row in ROLLBACKS], ids=[row[0] for row in ROLLBACKS])
def test_rollback_to_older_metadata_is_refused_and_state_unchanged(synced, attack):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    keep = {"timestamp": (nation.directory / "metadata" / "timestamp.json").read_bytes()}
    nation.publish_keys("33", T0 + 2 * HOUR)
    nation.publish(T0 + 2 * HOUR)
    assert client.refresh(T0 + 3 * HOUR).serials["33"] == 2
    before = snapshot_of(client, T0 + 4 * HOUR)
    attack(nation, client, keep)
    with pytest.raises(RollbackError, match="rollback") as info:
        client.refresh(T0 + 4 * HOUR)
    assert info.value.reason == "rollback" and isinstance(info.value, TrustDataError)
    assert snapshot_of(client, T0 + 4 * HOUR) == before


def test_key_list_serial_rollback_is_refused_for_that_province_only(synced, monkeypatch):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    nation.publish_keys("33", T0 + 2 * HOUR)
    nation.publish_keys("44", T0 + 2 * HOUR)
    nation.publish(T0 + 2 * HOUR)
    assert client.refresh(T0 + 3 * HOUR).serials == {"11": 1, "33": 2, "44": 2}
    # the province re-publishes its serial-1 list under a new role version (the repository
    # refuses this itself; bypass that check to play a province signing an old list)
    nation.provinces["33"].serial = 0
    with pytest.raises(TrustRepoError, match="serial 1 must exceed 2"):
        nation.publish_keys("33", T0 + 4 * HOUR)
    monkeypatch.setattr(TrustRepository, "_check_key_list",
                        lambda self, code, data: parse_key_list(data, province=code))
    nation.repo.publish_province_targets(
        "33", {"keys.json": nation.provinces["33"].key_list().to_bytes()},
        nation.provinces["33"].tuf[:2], now=T0 + 4 * HOUR)
    nation.publish_keys("44", T0 + 4 * HOUR)
    nation.publish(T0 + 4 * HOUR)
    result = client.refresh(T0 + 5 * HOUR)
    assert set(result.failed) == {"33"} and isinstance(result.failed["33"], RollbackError)
    assert "serial 1 is lower than 2" in str(result.failed["33"])
    assert result.serials == {"11": 1, "33": 2, "44": 3} and result.changed == ("44",)
    assert result.last_verified_refresh == T0 + 3 * HOUR  # 33 is held at its last good list


# ------------------------------------------------------------------ freeze


def test_expired_timestamp_is_a_freeze_with_its_time_and_keeps_the_last_good_keyring(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    before = snapshot_of(client, T0 + 2 * HOUR)
    # the mirror stops updating; a day later its timestamp has expired
    with pytest.raises(TrustDataFrozen) as info:
        client.refresh(T0 + DAY + HOUR)
    error = info.value
    assert error.role == "timestamp" and error.expired_at == T0 + DAY
    assert error.last_verified_refresh == T0 + HOUR and error.reason == "frozen"
    assert str(error) == ("trust data frozen: timestamp metadata expired at 2030-03-02T08:00:00Z; "
                          "stale since the last verified refresh at 2030-03-01T09:00:00Z")
    ring, last = client.load_cached(T0 + DAY + HOUR)
    assert last == T0 + HOUR and snapshot_of(client, T0 + DAY + HOUR) == before
    # a timestamp alone cannot keep a week-old snapshot alive
    change = nation.repo.refresh_timestamp(now=T0 + 8 * DAY)
    assert "run publish()" in change.warnings[0]
    with pytest.raises(TrustDataFrozen, match="snapshot metadata expired at 2030-03-08T08:00:00Z"):
        client.refresh(T0 + 8 * DAY + HOUR)
    # the online service publishes again, renewing the snapshot: fresh
    assert "renewed" in nation.publish(T0 + 8 * DAY + HOUR).summary
    result = client.refresh(T0 + 8 * DAY + 2 * HOUR)
    assert result.last_verified_refresh == T0 + 8 * DAY + 2 * HOUR


def test_a_province_that_stops_re_signing_is_frozen_alone(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    later = T0 + 31 * DAY
    for code in ("11", "44"):
        nation.repo.publish_province_targets(code, {}, nation.provinces[code].tuf[:2], now=later)
    change = nation.publish(later)
    assert any("province-33" in w and "re-sign it" in w for w in change.warnings)
    result = client.refresh(later + HOUR)
    assert set(result.failed) == {"33"} and isinstance(result.failed["33"], TrustDataFrozen)
    assert result.serials == {"11": 1, "33": 1, "44": 1} and result.verified_at["33"] == T0 + HOUR
    assert result.last_verified_refresh == T0 + HOUR  # the keyring is as old as its oldest part
    assert client.load_cached(later + HOUR)[1] == T0 + HOUR


def test_a_clock_behind_the_last_verified_refresh_is_floored(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    # one day later the timestamp has expired; winding the clock back does not revive it
    with pytest.raises(TrustDataFrozen):
        client.refresh(T0 + DAY + HOUR)
    assert client.refresh(T0).last_verified_refresh == T0 + HOUR  # judged at the floor, T0 + 1 h
    assert client.load_cached(T0)[1] == T0 + HOUR


# ------------------------------------------------------------------ compromise


COMPROMISES = [
    ("from-compromise", CompromisePolicy.REJECT_FROM_COMPROMISE, "valid"),
    ("reject-all", CompromisePolicy.REJECT_ALL, Reason.KEY_COMPROMISED),
]


@pytest.mark.parametrize("policy,earlier", [r[1:] for r in COMPROMISES], ids=[r[0] for r in COMPROMISES])
def test_compromised_key_is_rejected_everywhere_after_one_publish_and_one_refresh(synced, tmp_path, policy, earlier):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    other = nation.client(tmp_path / "other-hospital")
    other.refresh(T0 + HOUR)
    key = nation.provinces["33"].keys[0]
    since = T0 + 2 * HOUR
    before_code, after_code = code_for("33", key, since - HOUR), code_for("33", key, since + HOUR, serial=2)
    # (the one publish) the province marks the key, the online service publishes
    nation.publish_keys("33", since + HOUR, entries=[
        entry("33", key, status=KeyStatus.COMPROMISED, compromised_since=since, compromise_policy=policy)])
    nation.publish(since + HOUR)
    now = since + 2 * HOUR
    for verifier in (client, other):
        result = verifier.refresh(now)  # (the one refresh)
        assert result.changed == ("33",)
        for ring in (result.keyring, verifier.load_cached(now)[0]):
            assert reason(after_code, ring, now) is Reason.KEY_COMPROMISED
            assert reason(before_code, ring, now) == earlier
            assert reason(code_for("44", nation.provinces["44"].keys[0], now), ring, now) == "valid"


# ------------------------------------------------------------------ root rotation


def test_root_rotation_chain_v1_v2_v3_with_a_client_bootstrapped_at_v1(synced, tmp_path):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    repo = nation.repo
    v2_signers, v3_signers = gen(5), gen(4)
    with pytest.raises(TrustRepoError, match="lacks the old root threshold"):
        repo.rotate_root(old_root_signers=nation.root_signers[:2], new_root_signers=v2_signers, now=T0 + HOUR)
    change = repo.rotate_root(old_root_signers=nation.root_signers[2:], new_root_signers=v2_signers[:3],
                              now=T0 + HOUR)
    assert change.summary.startswith("root v2 (root 3 of 3)") and change.written == ("metadata/2.root.json",)
    # v3 also replaces the online keys and the national targets keys, and publishes at once
    new_snapshot, new_timestamp, new_targets = gen(1), gen(1), gen(3)
    change = repo.rotate_root(old_root_signers=v2_signers[:3], new_root_signers=v3_signers, threshold=2,
                              targets_signers=new_targets, targets_threshold=2, snapshot_signers=new_snapshot,
                              timestamp_signers=new_timestamp, now=T0 + 2 * HOUR)
    assert "root v3 (root 2 of 4, targets 2 of 3, snapshot 1 of 1, timestamp 1 of 1)" in change.summary
    assert "metadata/3.root.json" in change.written and "metadata/timestamp.json" in change.written
    # a verifier that slept through v2 walks v1 -> v2 -> v3 (here: the synced one and a new one)
    fresh = nation.client(tmp_path / "new-verifier")
    for verifier in (client, fresh):
        result = verifier.refresh(T0 + 3 * HOUR)
        assert result.root_version == 3 and result.complete and len(result.keyring) == 3
        assert verifier.load_cached(T0 + 3 * HOUR)[1] == T0 + 3 * HOUR
    # the old national targets keys no longer sign anything verifiers accept
    with pytest.raises(TrustRepoError, match="not one of the role's keys"):
        repo.add_province("22", gen(3), 2, targets_signers=nation.targets_signers[:3], now=T0 + 3 * HOUR)
    repo.add_province("22", gen(1), 1, targets_signers=new_targets[:2], now=T0 + 3 * HOUR)


def test_a_root_signed_only_by_new_keys_is_refused(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    current = Metadata.from_bytes(nation.repo.root_bytes())
    usurper = gen(3)
    current.signed.version = 2
    for keyid in list(current.signed.roles["root"].keyids):
        current.signed.revoke_key(keyid, "root")
    for signer in usurper:
        current.signed.add_key(signer.public_key, "root")
    current.signatures.clear()
    for signer in usurper:
        current.sign(signer, append=True)
    (nation.directory / "metadata" / "2.root.json").write_bytes(current.to_bytes())
    before = snapshot_of(client, T0 + 2 * HOUR)
    with pytest.raises(TrustDataError, match="root was signed by 0/3 keys"):
        client.refresh(T0 + 2 * HOUR)
    assert snapshot_of(client, T0 + 2 * HOUR) == before


# ------------------------------------------------------------------ cutting a province off


def test_removed_delegation_drops_the_provinces_keys(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    change = nation.repo.remove_province("33", targets_signers=nation.targets_signers[:3], now=T0 + HOUR)
    assert "removed the delegation to province-33" in change.summary
    nation.publish(T0 + HOUR)
    result = client.refresh(T0 + 2 * HOUR)
    assert result.removed == ("33",) and result.complete and set(result.serials) == {"11", "44"}
    now = T0 + 3 * HOUR
    assert reason(code_for("33", nation.provinces["33"].keys[0], now), result.keyring, now) is Reason.UNKNOWN_KEY
    assert reason(code_for("44", nation.provinces["44"].keys[0], now), result.keyring, now) == "valid"


def test_rekeyed_province_is_cut_off_until_it_signs_with_its_new_keys(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    p33 = nation.provinces["33"]
    stolen, fresh = p33.tuf, gen(3)
    change = nation.repo.rekey_province("33", fresh, 2, targets_signers=nation.targets_signers[:3], now=T0 + HOUR)
    assert "province-33 now 2 of 3 keys" in change.summary and change.warnings
    nation.publish(T0 + HOUR)
    result = client.refresh(T0 + 2 * HOUR)
    # metadata signed by the old (stolen) keys no longer counts, not even the last good list
    assert set(result.failed) == {"33"} and "last good key list dropped" in str(result.failed["33"])
    assert result.removed == ("33",) and "33" not in result.serials
    with pytest.raises(TrustRepoError, match="not one of the role's keys"):
        nation.repo.publish_province_targets("33", {}, stolen[:2], now=T0 + 2 * HOUR)
    p33.tuf = fresh
    nation.publish_keys("33", T0 + 2 * HOUR)
    nation.publish(T0 + 2 * HOUR)
    result = client.refresh(T0 + 3 * HOUR)
    assert result.complete and result.changed == ("33",) and result.serials["33"] == 2


def test_rekey_with_province_signers_re_signs_at_once(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    fresh = gen(2)
    change = nation.repo.rekey_province("33", fresh, 1, targets_signers=nation.targets_signers[:3],
                                        now=T0 + HOUR, province_signers=fresh[:1])
    assert "re-signed with the new keys (1 files kept)" in change.summary and not change.warnings
    nation.publish(T0 + HOUR)
    result = client.refresh(T0 + 2 * HOUR)
    assert result.complete and result.changed == () and result.serials["33"] == 1
