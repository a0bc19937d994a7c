"""The national trust repository (keys/trustrepo.py) and a verifier's trust sync (verifier/trustsync.py).

Everything runs on real directories: the repository directory *is* the mirror
(a USB stick), and one test serves it over a real local HTTP server. Attacks
are played by editing the mirror: an old timestamp put back, a file
corrupted, metadata signed by the wrong keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

import healthcode as hc
from healthcode import Algorithm, CompromisePolicy, KeyStatus, Reason, TrustedKey
from healthcode.keylist import KeyList, parse_key_list
from keys.errors import TrustRepoError
from keys.trustrepo import TrustRepository
from keys.trustrepo_files import Change, RepoConfig
from verifier.trustsync import (
    DirectoryFetcher,
    MirrorUnavailable,
    NotSynced,
    RollbackError,
    SyncError,
    TrustDataError,
    TrustDataFrozen,
    TrustSync,
)

UTC = dt.timezone.utc
# Far from the wall clock on purpose: expiry must be judged at the `now` we pass.
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
SUBJECT = hc.main_index_id_from_bytes(hashlib.sha256(b"trust sync resident").digest()[:16])
SMALL = ("11", "33", "44")
ALGS = (Algorithm.ES256, Algorithm.EDDSA, Algorithm.SM2_SM3)


def gen(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


@dataclasses.dataclass
class Province:
    code: str
    tuf: list[CryptoSigner]  # 3 keys, threshold 2
    keys: list  # healthcode signing keys, oldest first
    entries: list[TrustedKey]
    serial: int = 1

    def key_list(self) -> KeyList:
        return KeyList(province=self.code, serial=self.serial, keys=tuple(self.entries))


class Nation:
    """A repository with its keys, built through the public API."""

    def __init__(self, directory: Path, codes, *, now=T0, algs=(Algorithm.ES256,)):
        self.root_signers, self.targets_signers = gen(5), gen(5)
        self.snapshot_signers, self.timestamp_signers = gen(1), gen(1)
        self.repo, self.init_change = TrustRepository.init(
            directory,
            root_signers=self.root_signers, root_threshold=3,
            targets_signers=self.targets_signers, targets_threshold=3,
            snapshot_signers=self.snapshot_signers, timestamp_signers=self.timestamp_signers,
            now=now,
        )
        self.provinces: dict[str, Province] = {}
        for index, code in enumerate(codes):
            key = hc.generate_signing_key(algs[index % len(algs)])
            province = Province(code, gen(3), [key], [entry(code, key)])
            self.repo.add_province(code, province.tuf, 2, targets_signers=self.targets_signers[:3], now=now)
            self.repo.publish_key_list(province.key_list(), province.tuf[:2], now=now)
            self.provinces[code] = province
        self.publish(now)

    @property
    def directory(self) -> Path:
        return self.repo.directory

    def copy(self, directory: Path) -> "Nation":
        shutil.copytree(self.directory, directory)
        clone = object.__new__(Nation)
        clone.__dict__.update(self.__dict__)
        clone.repo = TrustRepository(directory, snapshot_signers=self.snapshot_signers,
                                     timestamp_signers=self.timestamp_signers)
        clone.provinces = {
            code: dataclasses.replace(p, keys=list(p.keys), entries=list(p.entries))
            for code, p in self.provinces.items()
        }
        return clone

    def publish(self, now) -> Change:
        return self.repo.publish(now=now)

    def publish_keys(self, code: str, now, entries=None) -> Change:
        province = self.provinces[code]
        if entries is not None:
            province.entries = entries
        province.serial += 1
        return self.repo.publish_key_list(province.key_list(), province.tuf[:2], now=now)

    def client(self, path: Path, source=None) -> TrustSync:
        return TrustSync(path / "metadata", path / "targets", source or self.directory, self.repo.root_bytes(1))


def entry(code, key, **kw) -> TrustedKey:
    fields = dict(kid=key.public_key().key_id(), province=code, public_key=key.public_key(),
                  use_from=T0 - DAY, use_until=T0 + 90 * DAY, verify_until=T0 + 120 * DAY)
    fields.update(kw)
    return TrustedKey(**fields)


def code_for(province: str, key, iat, serial=1) -> str:
    claims = hc.CodeClaims(province=province, subject=SUBJECT, serial=serial,
                           issued_at=iat, expires_at=iat + 7 * DAY)
    return hc.sign_code(claims, hc.SoftwareSigner(key))


def reason(code: str, keyring, now):
    result = hc.check(code, keyring, now=now)
    return "valid" if result.valid else result.reason


def snapshot_of(client: TrustSync, now):
    """What a verifier's cache holds: its keys (comparable) and its last verified refresh."""
    ring, last = client.load_cached(now)
    return sorted((k.province, k.kid, k.status) for k in ring), last


@pytest.fixture(scope="module")
def small_template(tmp_path_factory):
    return Nation(tmp_path_factory.mktemp("small") / "repo", SMALL)


@pytest.fixture
def nation(small_template, tmp_path):
    return small_template.copy(tmp_path / "repo")


@pytest.fixture
def synced(nation, tmp_path):
    client = nation.client(tmp_path / "client")
    result = client.refresh(T0 + HOUR)
    assert result.complete and result.changed == SMALL
    return nation, client


# ------------------------------------------------------------------ first sync, all 34 provinces


def test_first_sync_of_34_provinces_verifies_each_provinces_codes(tmp_path):
    nation = Nation(tmp_path / "repo", tuple(hc.PROVINCES), algs=ALGS)
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


def test_scheduled_rotation_pre_published_key_and_codes_across_it(synced, tmp_path):
    nation, client = synced
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


def _old_timestamp(nation, client, keep):
    """Serve the timestamp saved before the last publish."""
    (nation.directory / "metadata" / "timestamp.json").write_bytes(keep["timestamp"])


def _timestamp_to_old_snapshot(nation, client, keep):
    """A correctly signed new timestamp that names an older snapshot."""
    current = Metadata[Timestamp].from_bytes((nation.directory / "metadata" / "timestamp.json").read_bytes())
    old_version = current.signed.snapshot_meta.version - 1
    data = (nation.directory / "metadata" / f"{old_version}.snapshot.json").read_bytes()
    forged = Metadata(Timestamp(version=current.signed.version + 1, expires=T0 + DAY,
                                snapshot_meta=MetaFile(old_version, len(data))))
    forged.sign(nation.timestamp_signers[0])
    (nation.directory / "metadata" / "timestamp.json").write_bytes(forged.to_bytes())


def _snapshot_rolls_back_a_province(nation, client, keep):
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
def test_rollback_to_older_metadata_is_refused_and_state_unchanged(synced, attack):
    nation, client = synced
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


def test_key_list_serial_rollback_is_refused_for_that_province_only(synced, monkeypatch):
    nation, client = synced
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


def test_expired_timestamp_is_a_freeze_with_its_time_and_keeps_the_last_good_keyring(synced):
    nation, client = synced
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


def test_a_province_that_stops_re_signing_is_frozen_alone(synced):
    nation, client = synced
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


def test_a_clock_behind_the_last_verified_refresh_is_floored(synced):
    nation, client = synced
    # one day later the timestamp has expired; winding the clock back does not revive it
    with pytest.raises(TrustDataFrozen):
        client.refresh(T0 + DAY + HOUR)
    assert client.refresh(T0).last_verified_refresh == T0 + HOUR  # judged at the floor, T0 + 1 h
    assert client.load_cached(T0)[1] == T0 + HOUR


# ------------------------------------------------------------------ delegation


def _sign_role(nation, role: str, version: int, targets: dict, signers) -> None:
    md = Metadata(Targets(version=version, expires=T0 + 30 * DAY, targets=targets))
    for signer in signers:
        md.sign(signer, append=True)
    (nation.directory / "metadata" / f"{version}.{role}.json").write_bytes(md.to_bytes())


def _rogue_key_list(code):
    rogue = hc.generate_signing_key()
    return rogue, KeyList(province=code, serial=9, keys=(entry(code, rogue),)).to_bytes()


def test_unlisted_files_are_served_by_name_inside_the_delegation_only(synced):
    """Revocation deltas are served unlisted (nothing signs them; the verifier checks where they lead)."""
    nation, _client = synced
    repo = nation.repo
    name = "revocation/0011223344556677/delta-0000000001.hcrd"
    assert repo.put_unlisted("33", {name: b"delta"}) == (f"targets/provinces/33/{name}",)
    assert (nation.directory / "targets" / "provinces" / "33" / name).read_bytes() == b"delta"
    assert repo.unlisted("33", "revocation") == {name: b"delta"}
    assert "provinces/33/" + name not in repo.province_targets("33").targets  # not listed
    before = repo.province_targets("33").version
    repo.put_unlisted("33", {name: b"again"})  # replaced in place, no new role version
    assert repo.unlisted("33", "revocation") == {name: b"again"} and repo.province_targets("33").version == before
    for bad in ("../44/keys.json", "revocation/a/b/c", f"revocation/k/{'0' * 64}.delta.hcrd"):
        with pytest.raises(TrustRepoError):
            repo.put_unlisted("33", {bad: b"x"})
    repo.put_unlisted("33", {}, remove=[name])
    assert repo.unlisted("33", "revocation") == {}
    with pytest.raises(TrustRepoError, match="not among the files"):  # custom fields name a file being signed
        repo.publish_province_targets("33", {}, nation.provinces["33"].tuf[:2], now=T0 + HOUR,
                                      custom={"revocation/k/snapshot.hcrs": {"seq": 1}})


def test_a_province_cannot_sign_outside_its_delegation(synced):
    nation, client = synced
    p33 = nation.provinces["33"]
    rogue, data = _rogue_key_list("44")
    with pytest.raises(TrustRepoError, match="bad target name"):
        nation.repo.publish_province_targets("33", {"../44/keys.json": data}, p33.tuf[:2], now=T0)
    # crafted on the mirror: province-33 lists provinces/44/keys.json, signed by 33's keys
    info = TargetFile.from_data("provinces/44/keys.json", data)
    path = nation.directory / "targets" / "provinces" / "44" / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(data)
    current = nation.repo.province_targets("33")
    _sign_role(nation, "province-33", current.version + 1,
               {**current.targets, "provinces/44/keys.json": info}, p33.tuf[:2])
    # and province 33's keys sign a province-44 role too
    _sign_role(nation, "province-44", nation.repo.province_targets("44").version + 1,
               {"provinces/44/keys.json": info}, p33.tuf[:2])
    change = nation.publish(T0 + 2 * HOUR)
    assert any("province-44" in w and "does not verify" in w for w in change.warnings)
    result = client.refresh(T0 + 3 * HOUR)
    assert set(result.failed) == {"33", "44"} and "province-44" in str(result.failed["44"])
    assert "province-33 signs provinces/44/keys.json, outside its delegation" in str(result.failed["33"])
    assert result.serials == {"11": 1, "33": 1, "44": 1}  # last good lists, each signed by its own keys
    now = T0 + 4 * HOUR
    assert reason(code_for("44", rogue, now), result.keyring, now) is Reason.UNKNOWN_KEY
    assert reason(code_for("44", nation.provinces["44"].keys[0], now), result.keyring, now) == "valid"
    assert reason(code_for("33", p33.keys[0], now), result.keyring, now) == "valid"



def _latest(nation, role: str) -> bytes:
    """The newest version of ``role`` the national repository wrote (``<version>.<role>.json``)."""
    files = (nation.directory / "metadata").glob(f"*.{role}.json")
    return max(files, key=lambda p: int(p.name.split(".", 1)[0])).read_bytes()


def test_the_revocation_files_role_check_is_the_key_lists_one(synced):
    """Both uses of a province role go through one check (``verify_province_role``): a role that
    signs a file outside its delegation is refused for its revocation files too, not only for
    its key list."""
    from verifier import revocation_sync

    nation, client = synced
    p33 = nation.provinces["33"]
    current = nation.repo.province_targets("33")
    national = Metadata[Targets].from_bytes(_latest(nation, "targets")).signed
    _, data = _rogue_key_list("44")
    rogue_version = current.version + 1
    _sign_role(nation, "province-33", rogue_version,
               {**current.targets, "provinces/44/keys.json": TargetFile.from_data("provinces/44/keys.json", data)},
               p33.tuf[:2])
    snapshot = Snapshot(version=1, expires=T0 + 30 * DAY,
                        meta={"targets.json": MetaFile(1), "province-33.json": MetaFile(rogue_version)})
    crafted = (nation.directory / "metadata" / f"{rogue_version}.province-33.json").read_bytes()
    with pytest.raises(TrustDataError, match="province-33 signs provinces/44/keys.json, outside its delegation"):
        revocation_sync.verify_province_role(national, snapshot, "33", crafted)
    honest = (nation.directory / "metadata" / f"{current.version}.province-33.json").read_bytes()
    assert revocation_sync.verify_province_role(national, snapshot, "33", honest).version == current.version
    with pytest.raises(TrustDataError, match="province-44 was signed by 0/2 keys"):  # 33's role is not 44's
        revocation_sync.verify_province_role(national, snapshot, "44", honest)


PROVINCE_REFUSALS = [
    ("name-escapes", {"../44/keys.json": b"x"}, 2, "bad target name"),
    ("name-hidden", {".keys.json": b"x"}, 2, "bad target name"),
    ("name-too-deep", {"a/b/c/d": b"x"}, 2, "bad target name"),
    ("key-list-of-other-province", {"keys.json": KeyList(province="44", serial=5, keys=()).to_bytes()}, 2,
     "came from province 33"),
    ("key-list-garbage", {"keys.json": b"{}"}, 2, "exactly the fields"),
    ("below-threshold", {"revocation/full-1.bin": b"x"}, 1, "signed by 1/2 keys"),
]


@pytest.mark.parametrize("name,files,signers,message", PROVINCE_REFUSALS, ids=[r[0] for r in PROVINCE_REFUSALS])
def test_repository_refuses_what_verifiers_would_refuse(nation, name, files, signers, message):
    before = sorted(os.listdir(nation.directory / "metadata"))
    with pytest.raises(TrustRepoError, match=message):
        nation.repo.publish_province_targets("33", files, nation.provinces["33"].tuf[:signers], now=T0)
    assert sorted(os.listdir(nation.directory / "metadata")) == before


def test_other_repository_refusals(nation):
    p33 = nation.provinces["33"]
    with pytest.raises(TrustRepoError, match="not one of the role's keys"):
        nation.repo.publish_province_targets("33", {}, nation.provinces["44"].tuf[:2], now=T0)
    with pytest.raises(TrustRepoError, match="province-22 is not delegated"):
        nation.repo.publish_province_targets("22", {}, p33.tuf[:2], now=T0)
    with pytest.raises(TrustRepoError, match="already delegated"):
        nation.repo.add_province("33", p33.tuf, 2, targets_signers=nation.targets_signers[:3], now=T0)
    with pytest.raises(TrustRepoError, match="signed by 2/3"):
        nation.repo.add_province("22", gen(3), 2, targets_signers=nation.targets_signers[:2], now=T0)
    with pytest.raises(TrustRepoError, match="threshold 4"):
        nation.repo.add_province("22", gen(3), 4, targets_signers=nation.targets_signers[:3], now=T0)
    with pytest.raises(TrustRepoError, match="timezone-aware"):
        nation.repo.publish(now=dt.datetime(2030, 1, 1))
    with pytest.raises(TrustRepoError, match="already exists"):
        TrustRepository.init(nation.directory, root_signers=gen(1), root_threshold=1, targets_signers=gen(1),
                             targets_threshold=1, snapshot_signers=gen(1), timestamp_signers=gen(1), now=T0)


def test_revocation_files_publish_beside_the_key_list(synced, tmp_path):
    """The API the revocation issue builds on: files under the province's own prefix,
    published beside the key list and read back through the same verification."""
    nation, client = synced
    p33 = nation.provinces["33"]
    change = nation.repo.publish_province_targets(
        "33", {"revocation/full-000001.bin": b"\x00" * 100, "revocation/delta-000002.bin": b"\x01"},
        p33.tuf[:2], now=T0 + HOUR)
    assert "provinces/33/revocation/full-000001.bin (100 bytes)" in change.summary
    change = nation.repo.publish_province_targets(
        "33", {"revocation/delta-000003.bin": b"\x02"}, p33.tuf[:2], now=T0 + HOUR,
        remove=["revocation/delta-000002.bin"])
    listed = nation.repo.province_targets("33").targets
    assert sorted(listed) == ["provinces/33/keys.json", "provinces/33/revocation/delta-000003.bin",
                              "provinces/33/revocation/full-000001.bin"]
    assert nation.repo.target_bytes("provinces/33/revocation/full-000001.bin") == b"\x00" * 100
    nation.publish(T0 + HOUR)
    with pytest.raises(NotSynced):
        nation.client(tmp_path / "not-refreshed").fetch_target("provinces/33/keys.json")
    result = client.refresh(T0 + 2 * HOUR)
    assert result.complete and result.changed == () and result.serials["33"] == 1
    # the verifier side of the revocation issue reads them through the same verification
    listed = client.province_targets("33")
    assert listed["provinces/33/revocation/full-000001.bin"] == 100 and len(listed) == 3
    assert client.fetch_target("provinces/33/revocation/full-000001.bin") == b"\x00" * 100
    with pytest.raises(TrustDataError, match="not a target"):
        client.fetch_target("provinces/33/revocation/delta-000002.bin")
    info = nation.repo.province_targets("33").targets["provinces/33/revocation/delta-000003.bin"]
    revocation_dir = nation.directory / "targets" / "provinces" / "33" / "revocation"
    path = revocation_dir / f"{info.hashes['sha256']}.delta-000003.bin"
    path.write_bytes(b"\x03")
    with pytest.raises(TrustDataError, match="hash"):
        client.fetch_target("provinces/33/revocation/delta-000003.bin")


# ------------------------------------------------------------------ compromise


COMPROMISES = [
    ("from-compromise", CompromisePolicy.REJECT_FROM_COMPROMISE, "valid"),
    ("reject-all", CompromisePolicy.REJECT_ALL, Reason.KEY_COMPROMISED),
]


@pytest.mark.parametrize("policy,earlier", [r[1:] for r in COMPROMISES], ids=[r[0] for r in COMPROMISES])
def test_compromised_key_is_rejected_everywhere_after_one_publish_and_one_refresh(synced, tmp_path, policy, earlier):
    nation, client = synced
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


def test_root_rotation_chain_v1_v2_v3_with_a_client_bootstrapped_at_v1(synced, tmp_path):
    nation, client = synced
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


def test_a_root_signed_only_by_new_keys_is_refused(synced):
    nation, client = synced
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


def test_removed_delegation_drops_the_provinces_keys(synced):
    nation, client = synced
    change = nation.repo.remove_province("33", targets_signers=nation.targets_signers[:3], now=T0 + HOUR)
    assert "removed the delegation to province-33" in change.summary
    nation.publish(T0 + HOUR)
    result = client.refresh(T0 + 2 * HOUR)
    assert result.removed == ("33",) and result.complete and set(result.serials) == {"11", "44"}
    now = T0 + 3 * HOUR
    assert reason(code_for("33", nation.provinces["33"].keys[0], now), result.keyring, now) is Reason.UNKNOWN_KEY
    assert reason(code_for("44", nation.provinces["44"].keys[0], now), result.keyring, now) == "valid"


def test_rekeyed_province_is_cut_off_until_it_signs_with_its_new_keys(synced):
    nation, client = synced
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


def test_rekey_with_province_signers_re_signs_at_once(synced):
    nation, client = synced
    fresh = gen(2)
    change = nation.repo.rekey_province("33", fresh, 1, targets_signers=nation.targets_signers[:3],
                                        now=T0 + HOUR, province_signers=fresh[:1])
    assert "re-signed with the new keys (1 files kept)" in change.summary and not change.warnings
    nation.publish(T0 + HOUR)
    result = client.refresh(T0 + 2 * HOUR)
    assert result.complete and result.changed == () and result.serials["33"] == 1


# ------------------------------------------------------------------ corruption on the mirror


def _corrupt_key_list(nation, code):
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))


def _truncate_key_list(nation, code):
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(path.read_bytes()[:-10])


def _grow_key_list(nation, code):
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(path.read_bytes() + b" " * 10)


def _corrupt_role(nation, code):
    version = nation.repo.province_targets(code).version
    path = nation.directory / "metadata" / f"{version}.province-{code}.json"
    path.write_bytes(path.read_bytes().replace(b'"version":', b'"version": ', 1))


def _delete_key_list(nation, code):
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    (nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json").unlink()


CORRUPTIONS = [
    ("bit-flip", _corrupt_key_list, TrustDataError, "hash"),
    ("truncated", _truncate_key_list, TrustDataError, "Length"),
    ("grown", _grow_key_list, TrustDataError, "larger than"),
    ("role-metadata-edited", _corrupt_role, TrustDataError, "province 33"),
    ("missing-on-mirror", _delete_key_list, MirrorUnavailable, "HTTP 404"),
]


@pytest.mark.parametrize("corrupt,error,message", [r[1:] for r in CORRUPTIONS], ids=[r[0] for r in CORRUPTIONS])
def test_corrupted_files_on_the_mirror_are_refused(synced, corrupt, error, message):
    nation, client = synced
    nation.publish_keys("33", T0 + HOUR)
    nation.publish(T0 + HOUR)
    corrupt(nation, "33")
    result = client.refresh(T0 + 2 * HOUR)
    assert set(result.failed) == {"33"} and type(result.failed["33"]) is error
    assert message.lower() in str(result.failed["33"]).lower()
    assert result.serials["33"] == 1 and result.changed == ()  # the last good list stays
    ring, last = client.load_cached(T0 + 2 * HOUR)
    assert last == T0 + HOUR and len(ring) == 3


# ------------------------------------------------------------------ offline


def test_load_cached_works_offline_and_refuses_a_tampered_cache(synced, tmp_path):
    nation, client = synced
    with pytest.raises(NotSynced):
        nation.client(tmp_path / "never-synced").load_cached(T0)
    expected = snapshot_of(client, T0 + 2 * HOUR)
    bootstrap = nation.repo.root_bytes(1)
    shutil.rmtree(nation.directory)  # the USB stick is gone
    with pytest.raises(MirrorUnavailable, match="not available"):
        client.refresh(T0 + 2 * HOUR)
    restarted = TrustSync(tmp_path / "client" / "metadata", tmp_path / "client" / "targets",
                          tmp_path / "nowhere", bootstrap)
    assert snapshot_of(restarted, T0 + 2 * HOUR) == expected
    # what is cached is re-verified, never trusted for being on disk
    objects = tmp_path / "client" / "targets" / "objects"
    victim = max(objects.iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")
    with pytest.raises(TrustDataError, match="corrupt"):
        restarted.load_cached(T0 + 2 * HOUR)


def test_load_cached_refuses_a_cache_forged_consistently(synced, tmp_path):
    """Rewriting an object *and* its name still fails: signatures are checked again."""
    nation, client = synced
    state = tmp_path / "client" / "targets" / "state.json"
    objects = tmp_path / "client" / "targets" / "objects"
    rogue, data = _rogue_key_list("33")
    doc = json.loads(state.read_text())
    old = doc["provinces"]["33"]["keys"]
    new = hashlib.sha256(data).hexdigest()
    (objects / new).write_bytes(data)
    doc["provinces"]["33"]["keys"] = new
    state.write_text(json.dumps(doc))
    with pytest.raises(TrustDataError, match="province-33"):
        client.load_cached(T0 + 2 * HOUR)
    assert old != new


# ------------------------------------------------------------------ transport


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_sync_over_a_real_local_http_server(synced, tmp_path, monkeypatch):
    nation, _ = synced
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # talk to 127.0.0.1 directly
        monkeypatch.delenv(proxy, raising=False)
    handler = functools.partial(_QuietHandler, directory=str(nation.directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        client = nation.client(tmp_path / "http-client", source=url)
        result = client.refresh(T0 + HOUR)
        assert result.complete and result.changed == SMALL and result.files_transferred == 9
        nation.publish_keys("33", T0 + 2 * HOUR)
        nation.publish(T0 + 2 * HOUR)
        result = client.refresh(T0 + 3 * HOUR)
        assert result.changed == ("33",) and result.bytes_transferred <= 10_000
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    with pytest.raises(MirrorUnavailable):
        client.refresh(T0 + 4 * HOUR)
    assert client.load_cached(T0 + 4 * HOUR)[1] == T0 + 3 * HOUR


def test_directory_fetcher_stays_inside_its_directory_and_caps_sizes(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    (tmp_path / "mirror" / "big").write_bytes(b"x" * 100)
    os.symlink(tmp_path / "secret", tmp_path / "mirror" / "link")
    fetcher = DirectoryFetcher(tmp_path / "mirror", max_file_bytes=50)
    from tuf.api import exceptions as tuf_errors

    for url, error in [
        ("mirror://directory/../secret", tuf_errors.DownloadError),
        ("mirror://directory/link", tuf_errors.DownloadError),
        ("mirror://directory/a//b", tuf_errors.DownloadError),
        ("http://elsewhere/x", tuf_errors.DownloadError),
        ("mirror://directory/big", tuf_errors.DownloadLengthMismatchError),
    ]:
        with pytest.raises(error):
            fetcher.download_bytes(url, 1000)
    with pytest.raises(tuf_errors.DownloadHTTPError) as info:
        fetcher.download_bytes("mirror://directory/missing", 1000)
    assert info.value.status_code == 404


def test_bootstrap_must_be_a_self_signed_root(tmp_path, small_template):
    with pytest.raises(TrustDataError, match="bootstrap root"):
        TrustSync(tmp_path / "m", tmp_path / "t", small_template.directory, b"{}")
    with pytest.raises(SyncError):
        TrustSync(tmp_path / "m", tmp_path / "t", small_template.directory,
                  small_template.repo.root_bytes(1).replace(b'"version":1', b'"version":7'))


def test_expiry_defaults_follow_the_issue(nation):
    config = RepoConfig()
    assert (config.timestamp_expiry, config.snapshot_expiry, config.province_expiry,
            config.targets_expiry, config.root_expiry) == (DAY, 7 * DAY, 30 * DAY, 180 * DAY, 365 * DAY)
    assert nation.repo.root().expires == T0 + 365 * DAY
    assert nation.repo.root().roles["root"].threshold == 3 and len(nation.repo.root().roles["root"].keyids) == 5
    assert nation.repo.targets().delegations.roles["province-33"].terminating
    assert nation.repo.targets().delegations.roles["province-33"].paths[0] == "provinces/33/*"
    names = sorted(os.listdir(nation.directory / "metadata"))
    assert "timestamp.json" in names and all(n == "timestamp.json" or n[0].isdigit() for n in names)
