"""The publisher's checks of a province push (publisher/checks.py) and its store (publisher/store.py).

Real repositories in temporary directories, real Ed25519 TUF keys: the
national side is one repository; each province signs in its own working copy
(a copy of the national directory), as a provincial issuer does, and pushes
the bytes it signed. Each refusal leaves the national repository unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, TargetFile, Targets

import healthcode as hc
from healthcode.keylist import KeyList
from keys.trustrepo import TrustRepository
from publisher.checks import Limits
from publisher.errors import PushRefused, Reason
from publisher.store import PublisherStore

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def gen(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


@dataclasses.dataclass
class Province:
    code: str
    tuf: list[CryptoSigner]
    key: hc.SigningKey
    repo: TrustRepository  # the province's working copy
    serial: int = 1

    def key_list(self) -> KeyList:
        entry = hc.TrustedKey(kid=self.key.public_key().key_id(), province=self.code,
                              public_key=self.key.public_key(), use_from=T0 - DAY, use_until=T0 + 90 * DAY,
                              verify_until=T0 + 120 * DAY)
        return KeyList(province=self.code, serial=self.serial, keys=(entry,))

    def role_bytes(self, version: int | None = None) -> bytes:
        version = version or self.repo.province_targets(self.code).version
        return (self.repo.directory / "metadata" / f"{version}.province-{self.code}.json").read_bytes()

    def sign_keys(self, now=T0) -> bytes:
        self.serial += 1
        self.repo.publish_key_list(self.key_list(), self.tuf[:2], now=now)
        return self.role_bytes()

    def files(self, role_bytes: bytes) -> list[tuple[str, bytes]]:
        role = Metadata[Targets].from_bytes(role_bytes).signed
        return [(path, self.repo.target_bytes(path, role)) for path in role.targets]


class World:
    def __init__(self, tmp: Path, codes=("33", "44")) -> None:
        self.root, self.targets = gen(1), gen(1)
        self.online = (gen(1), gen(1))
        self.repo, _ = TrustRepository.init(tmp / "national", root_signers=self.root, root_threshold=1,
                                            targets_signers=self.targets, targets_threshold=1,
                                            snapshot_signers=self.online[0], timestamp_signers=self.online[1],
                                            now=T0)
        tufs = {}
        for code in codes:
            tufs[code] = gen(3)
            self.repo.add_province(code, tufs[code], 2, targets_signers=self.targets, now=T0,
                                   province_signers=tufs[code][:2])
        self.repo.publish(now=T0)
        self.provinces = {}
        for code in codes:
            shutil.copytree(tmp / "national", tmp / f"work-{code}", ignore=shutil.ignore_patterns(".lock"))
            work = TrustRepository(tmp / f"work-{code}")
            self.provinces[code] = Province(code, tufs[code], hc.generate_signing_key(hc.Algorithm.ES256), work)
        self.store = PublisherStore(self.repo, tmp / "state")

    def push(self, code: str, role_bytes: bytes, *, caller: str | None = None, targets=None, unlisted=(),
             now=T0):
        p = self.provinces[code]
        return self.store.accept(caller_province=caller or code, province=code, role_bytes=role_bytes,
                                 targets=p.files(role_bytes) if targets is None else targets,
                                 unlisted=list(unlisted), now=now)

    def published(self) -> dict[str, bytes]:
        """Every file of the national repository (what mirrors serve), by path."""
        return {str(p.relative_to(self.repo.directory)): p.read_bytes()
                for p in sorted(self.repo.directory.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def refused(world: World, reason: Reason, call) -> PushRefused:
    before = world.published()
    with pytest.raises(PushRefused) as info:
        call()
    assert info.value.reason_code is reason, info.value.message
    assert world.published() == before  # the published state is unchanged
    assert not world.store.staged()
    return info.value


def test_a_push_is_staged_then_published_in_one_snapshot(world):
    role = world.provinces["33"].sign_keys()
    push, at = world.push("33", role)
    assert (push.version, push.already_accepted, at) == (2, False, T0)
    assert len(world.store.staged()) == 1
    before = world.repo._published_snapshot().signed.version
    publication = world.store.publish_staged(now=T0 + dt.timedelta(seconds=1))
    assert publication.provinces == ("33",)
    snapshot = world.repo._published_snapshot().signed
    assert snapshot.version == before + 1 and snapshot.meta["province-33.json"].version == 2
    assert (world.repo.directory / "metadata" / "2.province-33.json").read_bytes() == role  # exact bytes
    assert not world.store.staged()
    states = {p.province: p for p in world.store.provinces()}
    assert states["33"].published_version == states["33"].accepted_version == 2


def test_the_same_push_again_is_idempotent(world):
    role = world.provinces["33"].sign_keys()
    world.push("33", role)
    again, at = world.push("33", role, now=T0 + DAY / 24)
    assert again.already_accepted and at == T0
    assert len(world.store.staged()) == 1
    world.store.publish_staged(now=T0)
    assert world.push("33", role)[0].already_accepted  # also once published


def test_another_provinces_role_is_refused(world):
    role = world.provinces["44"].sign_keys()
    error = refused(world, Reason.OTHER_PROVINCE, lambda: world.push("44", role, caller="33"))
    assert "33" in error.message and "province-44" in error.message


def test_a_role_signed_by_too_few_or_foreign_keys_is_refused(world):
    p = world.provinces["33"]
    p.serial += 1
    md = Metadata[Targets].from_bytes(p.sign_keys())
    md.signatures.clear()
    md.sign(p.tuf[0])  # one of 2 needed
    refused(world, Reason.BAD_SIGNATURE, lambda: world.push("33", md.to_bytes(), targets=p.files(md.to_bytes())))
    md.signatures.clear()
    for signer in world.provinces["44"].tuf[:2]:  # another province's keys
        md.sign(signer, append=True)
    refused(world, Reason.BAD_SIGNATURE, lambda: world.push("33", md.to_bytes(), targets=[]))


def test_a_role_listing_files_outside_its_delegation_is_refused(world):
    p = world.provinces["33"]
    md = Metadata[Targets].from_bytes(p.sign_keys())
    md.signed.version += 1
    info = md.signed.targets["provinces/33/keys.json"]
    md.signed.targets["provinces/44/keys.json"] = TargetFile(info.length, info.hashes, "provinces/44/keys.json")
    md.signatures.clear()
    for signer in p.tuf[:2]:
        md.sign(signer, append=True)
    error = refused(world, Reason.OUTSIDE_DELEGATION, lambda: world.push("33", md.to_bytes(), targets=[]))
    assert "provinces/44/keys.json" in error.message


def test_an_unlisted_file_outside_the_province_revocation_folder_is_refused(world):
    role = world.provinces["33"].sign_keys()
    for path in ("provinces/44/revocation/ab/delta-0000000001.hcrd", "provinces/33/keys.json",
                 "provinces/33/revocation/../../44/x", "provinces/33/revocation/ab/.hidden"):
        refused(world, Reason.OUTSIDE_DELEGATION, lambda path=path: world.push("33", role, unlisted=[(path, b"x")]))


def test_versions_only_go_up_rolled_back_and_replayed(world):
    p = world.provinces["33"]
    first = p.sign_keys()
    world.push("33", first)
    second = p.sign_keys()
    world.push("33", second)
    world.store.publish_staged(now=T0)
    error = refused(world, Reason.REPLAYED, lambda: world.push("33", first))
    assert "v2" in error.message and "v3" in error.message
    # another role with a version already taken
    md = Metadata[Targets].from_bytes(second)
    md.signed.expires += DAY
    md.signatures.clear()
    for signer in p.tuf[:2]:
        md.sign(signer, append=True)
    refused(world, Reason.ROLLED_BACK, lambda: world.push("33", md.to_bytes(), targets=[]))


def test_a_truncated_or_oversized_upload_is_refused_before_parsing(world, tmp_path):
    p = world.provinces["33"]
    role = p.sign_keys()
    refused(world, Reason.MALFORMED, lambda: world.push("33", role[: len(role) // 2], targets=[]))
    files = p.files(role)
    truncated = [(path, data[:-3]) for path, data in files]
    refused(world, Reason.TARGET_MISMATCH, lambda: world.push("33", role, targets=truncated))
    small = PublisherStore(world.repo, tmp_path / "small-state", limits=Limits(max_role_bytes=100))
    before = world.published()
    with pytest.raises(PushRefused) as info:
        small.accept(caller_province="33", province="33", role_bytes=b"{" * 101, targets=[], unlisted=[], now=T0)
    assert info.value.reason_code is Reason.TOO_LARGE and world.published() == before


def test_a_listed_file_neither_held_nor_carried_is_missing(world):
    role = world.provinces["33"].sign_keys()
    refused(world, Reason.MISSING_TARGET, lambda: world.push("33", role, targets=[]))


def test_a_key_list_must_be_the_provinces_and_raise_its_serial(world):
    p = world.provinces["33"]
    world.push("33", p.sign_keys())
    world.store.publish_staged(now=T0)
    p.serial -= 1  # serial 2 again, as published (the working copy was told nothing), for another key
    p.key = hc.generate_signing_key(hc.Algorithm.ES256)
    shutil.rmtree(p.repo.directory)
    shutil.copytree(world.repo.directory, p.repo.directory, ignore=shutil.ignore_patterns(".lock"))
    for path in (p.repo.directory / "targets" / "provinces" / "33").glob("*.keys.json"):
        path.unlink()  # the working copy forgot the serial; the publisher did not
    role = p.sign_keys()
    error = refused(world, Reason.BAD_KEY_LIST, lambda: world.push("33", role))
    assert "serial 2 must exceed 2" in error.message


def test_an_expired_role_is_refused(world):
    role = world.provinces["33"].sign_keys(now=T0 - 40 * DAY)
    refused(world, Reason.EXPIRED, lambda: world.push("33", role))


def test_staged_pushes_survive_a_restart_and_are_published_then(world, tmp_path):
    role = world.provinces["33"].sign_keys()
    unlisted = [("provinces/33/revocation/" + "ab" * 8 + "/delta-0000000000.hcrd", b"delta bytes")]
    world.push("33", role, unlisted=unlisted)
    # a new store over the same directories: what a restarted publisher sees
    restarted = PublisherStore(world.repo, tmp_path / "state")
    assert [p.name for p in restarted.staged()] == ["33-000000000002.push"]
    assert restarted.provinces()[0].accepted_version == 2  # still refuses v2 from anyone else
    restarted.publish_staged(now=T0)
    assert world.repo._published_snapshot().signed.meta["province-33.json"].version == 2
    served = world.repo.directory / "targets" / unlisted[0][0]
    assert served.read_bytes() == b"delta bytes"
    # a push that no longer carries it removes the unlisted delta
    role = world.provinces["33"].sign_keys()
    restarted.accept(caller_province="33", province="33", role_bytes=role,
                     targets=world.provinces["33"].files(role), unlisted=[], now=T0)
    restarted.publish_staged(now=T0)
    assert not served.exists()
    ledger = json.loads((tmp_path / "state" / "ledger.json").read_text())
    assert ledger["published_version"]["33"] == 3


def test_a_publication_after_a_crash_between_write_and_snapshot_completes(world, monkeypatch):
    role = world.provinces["33"].sign_keys()
    world.push("33", role)

    def crash(*, now, force=False):
        raise OSError("killed before the snapshot")

    monkeypatch.setattr(world.repo, "publish", crash)
    with pytest.raises(OSError):
        world.store.publish_staged(now=T0)
    assert (world.repo.directory / "metadata" / "2.province-33.json").exists()  # written, not published
    monkeypatch.undo()
    world.store.publish_staged(now=T0)  # redone: the existing file is the same bytes
    assert world.repo._published_snapshot().signed.meta["province-33.json"].version == 2
    digest = hashlib.sha256(role).hexdigest()
    assert hashlib.sha256((world.repo.directory / "metadata" / "2.province-33.json").read_bytes()).hexdigest() == digest


def test_pruning_keeps_what_a_terminal_can_fetch_and_drops_the_rest(world, tmp_path):
    import os

    from publisher.retention import prune
    from verifier.trustsync import TrustSync

    p = world.provinces["33"]
    world.push("33", p.sign_keys())  # a key list, kept by every later version
    for n in range(15):  # 15 role versions, each with a new revocation snapshot, each published
        p.repo.publish_province_targets("33", {"revocation/00aa/snapshot.hcrs": f"state {n}".encode()},
                                        p.tuf[:2], now=T0)
        role = p.role_bytes()
        world.push("33", role)
        world.store.publish_staged(now=T0)
    old = (T0 - 2 * DAY).timestamp()
    for path in world.repo.directory.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    young = prune(world.repo, now=T0, retention=dt.timedelta(days=365))
    assert (young.snapshots, young.roles, young.targets) == (0, 0, 0)  # nothing is old enough
    pruned = prune(world.repo, now=T0, retention=DAY, keep=10)
    published = world.repo._published_snapshot().signed
    assert pruned.roles == published.meta["province-33.json"].version - 10 - 1  # v1 .. v(published - 11)
    assert pruned.snapshots == published.version - 10 - 1
    assert pruned.targets == 4  # the revocation snapshots only the pruned role versions listed (v2-v5)
    assert (world.repo.directory / "metadata" / "1.root.json").exists()
    root = (world.repo.directory / "metadata" / "1.root.json").read_bytes()
    terminal = TrustSync(tmp_path / "t" / "md", tmp_path / "t" / "t", world.repo.directory, root)
    terminal.refresh(T0)  # a first sync after pruning still finds everything the snapshot names
    assert terminal.province_targets("33")["provinces/33/revocation/00aa/snapshot.hcrs"]
