"""Revocations from the issuer to an offline verifier, for real: one publish, one refresh.

Each test builds a world on disk: a real issuer domain (SQLite store, resident
index, code issuer) behind the revocation trigger of ``issuer/revocation_job.py``;
the revocation job; a national trust repository whose province 33 signs with
TUF role keys kept in encrypted files; a mirror directory copied from the
repository (the USB stick a hospital syncs from); and verifiers running
``verifier.trustsync.TrustSync``. Attacks are played on the mirror (a file
changed) or by a publisher misusing the province's keys (replayed, gapped or
rolled-back files, properly signed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import hashlib
import logging
import shutil
import time
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

import healthcode as hc
from healthcode.keylist import KeyList
from healthcode.revocation import (
    RevocationState,
    delta_target,
    encode_delta,
    read_header,
    snapshot_target,
)
from issuer.config import ConfigError, IssuerConfig
from issuer.documents import make_resident_id, parse_document
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import RevocationReason
from issuer.privacy import IdentifierVault
from issuer.revocation_job import RevocationPublishJob, notify_revocations, open_revocation_job, push_directory
from issuer.revocation_publisher import SQLiteRevocationSource
from issuer.store import SQLiteStore
from keys.keystore import ScryptParams
from keys.signers import RoleKeyFile, generate_role_key, load_role_signer, role_key_names
from keys.trustrepo import TrustRepository
from verifier.revocation_sync import DELTAS, DROPPED, KEPT, MISSING, SNAPSHOT, UNCHANGED, RevocationStore
from verifier.trustsync import MirrorUnavailable, TrustDataError, TrustSync

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)  # far from the wall clock: every time is a parameter
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
PROVINCE_PASSPHRASE = b"province 33 tuf passphrase"
ONLINE_PASSPHRASE = b"national online passphrase"
FAST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)
VAULT = {"blind_index_key": b"I" * 32, "encryption_key": b"E" * 32}


def es256(label: str) -> hc.SoftwareSigner:
    secret = hashlib.sha256(f"revocation flow {label}".encode()).digest()
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(hc.Algorithm.ES256, secret))


def trusted(signer: hc.SoftwareSigner, *, use_until: dt.datetime, verify_until: dt.datetime) -> hc.TrustedKey:
    return hc.TrustedKey(kid=signer.kid, province="33", public_key=signer.public_key(),
                         use_from=NOW - 10 * DAY, use_until=use_until, verify_until=verify_until)


def document(seq: int):
    number = make_resident_id("330102", dt.date(1960, 1, 1) + dt.timedelta(days=seq), seq % 1000)
    return parse_document("resident_id", number, today=NOW.date())


class Issued:
    """A store in which 300 residents hold 10 codes each, signed by k1: serials 0-2999 (built once)."""

    RESIDENTS, PER = 300, 10

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "issuer-33.db"
        store = SQLiteStore(self.path)
        index = ResidentIndex(store=store, vault=IdentifierVault(**VAULT))
        issuer = CodeIssuer(store=store, province="33", signer=es256("k1"))
        loop = asyncio.new_event_loop()

        async def issue():
            mids = await asyncio.gather(*(index.register_resident(document(i), now=NOW)
                                          for i in range(self.RESIDENTS)))
            codes = await asyncio.gather(*(
                issuer.issue_code(caller="test", main_index_id=mid, idempotency_key=None, now=NOW)
                for mid in mids for _ in range(self.PER)))
            return mids, codes

        try:
            self.mids, codes = loop.run_until_complete(issue())
        finally:
            loop.close()
            store.close()
        self.codes: dict[str, list] = {mid: [] for mid in self.mids}
        for code in codes:
            self.codes[code.main_index_id].append(code)
        self.everyone = codes


class World:
    """The issuer, the job, the national repository, its mirror, and verifiers, in ``tmp``."""

    def __init__(self, tmp: Path, issued: Issued) -> None:
        self.tmp = tmp
        self.mids, self.codes, self.everyone = issued.mids, issued.codes, issued.everyone
        # the province's TUF role keys and the national online keys, in encrypted files
        self.tuf_dir, self.online_dir = tmp / "province-33" / "tuf-33", tmp / "national" / "online"
        for name in ("role-1", "role-2", "role-3"):
            generate_role_key(RoleKeyFile(self.tuf_dir, name), PROVINCE_PASSPHRASE, scrypt=FAST_SCRYPT)
        for name in ("snapshot", "timestamp"):
            generate_role_key(RoleKeyFile(self.online_dir, name), ONLINE_PASSPHRASE, scrypt=FAST_SCRYPT)
        self.province_signers = [load_role_signer(RoleKeyFile(self.tuf_dir, name), PROVINCE_PASSPHRASE)
                                 for name in role_key_names(self.tuf_dir)]
        online = [load_role_signer(RoleKeyFile(self.online_dir, name), ONLINE_PASSPHRASE)
                  for name in ("snapshot", "timestamp")]
        root, targets = CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()
        self.repo, _ = TrustRepository.init(
            tmp / "repo", root_signers=[root], root_threshold=1, targets_signers=[targets], targets_threshold=1,
            snapshot_signers=online[:1], timestamp_signers=online[1:], now=NOW - HOUR)
        self.repo.add_province("33", self.province_signers, 2, targets_signers=[targets], now=NOW - HOUR)
        # code-signing keys: k1 lives long; `old` stops verifying a day from now
        self.k1, self.old = es256("k1"), es256("old")
        key_list = KeyList(province="33", serial=1, keys=(
            trusted(self.k1, use_until=NOW + 30 * DAY, verify_until=NOW + 60 * DAY),
            trusted(self.old, use_until=NOW + HOUR, verify_until=NOW + DAY),
        ))
        self.repo.publish_key_list(key_list, self.province_signers[:2], now=NOW - HOUR)
        self.repo.publish(now=NOW - HOUR)
        # the issuer domain, its revocations announced to whoever listens
        shutil.copyfile(issued.path, tmp / "issuer-33.db")
        self.store = SQLiteStore(tmp / "issuer-33.db")
        self.index = ResidentIndex(store=self.store, vault=IdentifierVault(**VAULT))
        self.current = self.k1
        self.issuer = CodeIssuer(store=self.store, province="33", signer_for=lambda now: self.current)
        self.triggers = 0
        self.listener = None
        self.ports_index, self.ports_codes = notify_revocations(self.index, self.issuer, self._trigger)
        self.loop = asyncio.new_event_loop()
        self.revocation_dir = tmp / "revocation"
        self.job = RevocationPublishJob(
            source=SQLiteRevocationSource(self.store.path), directory=self.revocation_dir, province="33",
            repository=self.repo, signers=self.province_signers[1:], publish_snapshot=True, fsync=False)
        self.mirror = tmp / "mirror"
        self._residents = Issued.RESIDENTS

    def _trigger(self) -> None:
        self.triggers += 1
        if self.listener is not None:
            self.listener()

    def close(self) -> None:
        self.loop.close()
        self.store.close()

    # -- the issuer

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def run_all(self, coroutines) -> list:
        async def gather():
            return await asyncio.gather(*coroutines)

        return self.run(gather())

    def residents(self, count: int) -> list[str]:
        first, self._residents = self._residents, self._residents + count
        return self.run_all([self.index.register_resident(document(i), now=NOW)
                             for i in range(first, first + count)])

    def issue(self, mids: list[str], per: int) -> dict[str, list]:
        codes = self.run_all([
            self.issuer.issue_code(caller="test", main_index_id=mid, idempotency_key=None, now=NOW)
            for mid in mids for _ in range(per)])
        out: dict[str, list] = {}
        for code in codes:
            out.setdefault(code.main_index_id, []).append(code)
        return out

    def revoke(self, *codes, reason=RevocationReason.LOST_DEVICE, now=NOW) -> None:
        for code in codes:
            self.run(self.ports_codes.revoke_code(ref=code.ref, reason=reason, now=now))

    def revoke_resident(self, mid: str, now=NOW) -> int:
        return self.run(self.ports_codes.revoke_resident_codes(main_index_id=mid, reason=RevocationReason.DECEASED,
                                                               now=now))

    def merge(self, survivor: str, merged: str, now=NOW) -> int:
        return self.run(self.ports_index.merge_residents(survivor=survivor, merged=merged, now=now))

    # -- publication and the mirror

    def publish(self, now: dt.datetime):
        run = self.job.run_once(now)
        self.sync_mirror()
        return run

    def sync_mirror(self) -> None:
        shutil.copytree(self.repo.directory, self.mirror, dirs_exist_ok=True)

    def mirror_file(self, target: str) -> Path:
        """Where the mirror holds the province's current version of ``target`` (listed: under its
        SHA-256; unlisted, as deltas are: under its name)."""
        info = self.repo.province_targets("33").targets.get(target)
        if info is None:
            return self.mirror / "targets" / target
        parent, _, name = target.rpartition("/")
        return self.mirror / "targets" / parent / f"{info.hashes['sha256']}.{name}"

    def published(self, target: str) -> bytes:
        return (self.revocation_dir / target).read_bytes()

    def sign_as_province(self, files: dict[str, bytes], now: dt.datetime, remove=()) -> None:
        """A publisher misusing the province's keys: properly signed, wrong content."""
        prefix = "provinces/33/"
        self.repo.publish_province_targets("33", {k.removeprefix(prefix): v for k, v in files.items()},
                                           self.province_signers[:2], now=now,
                                           remove=[r.removeprefix(prefix) for r in remove])
        self.repo.publish(now=now)
        self.sync_mirror()

    # -- verifiers

    def verifier(self, name: str, source=None) -> TrustSync:
        base = self.tmp / "verifiers" / name
        return TrustSync(base / "metadata", base / "targets", source or self.mirror, self.repo.root_bytes(1))


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    return Issued(tmp_path_factory.mktemp("issued"))


@pytest.fixture
def world(tmp_path, issued):
    w = World(tmp_path, issued)
    try:
        yield w
    finally:
        w.close()


def answers(codes, client: TrustSync, now: dt.datetime) -> dict[int, str]:
    """What a verifier that loads its cache at ``now`` says of each code, by (kid, serial)."""
    keyring, _ = client.load_cached(now)
    revocation = client.load_revocation(now)
    out = {}
    for code in codes:
        result = hc.check(code.text, keyring, now=now, revocation=revocation)
        out[(code.ref.kid, code.ref.serial)] = "valid" if result.valid else result.reason.value
    return out


def expected(codes, revoked) -> dict[tuple[bytes, int], str]:
    gone = {(c.ref.kid, c.ref.serial) for c in revoked}
    return {(c.ref.kid, c.ref.serial): "revoked" if (c.ref.kid, c.ref.serial) in gone else "valid" for c in codes}


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def bulk(world: World) -> list:
    """600 codes revoked at irregular spacing: a snapshot of a few hundred bytes, worth deltas."""
    return [world.codes[mid][j] for mid in world.mids[100:] for j in (1, 4, 7)]


# ------------------------------------------------------------------ the flow


def test_a_revoked_code_answers_revoked_after_one_publish_and_one_refresh(world):
    codes, everyone = world.codes, world.everyone
    alice, bob, dave, erin, carol = world.mids[:5]
    # RevokeCode for one code and for every code of a resident, a merge, and 600 single codes
    world.revoke(codes[alice][0])
    assert world.revoke_resident(bob) == 10
    assert world.merge(dave, erin) == 10
    spread = bulk(world)
    world.revoke(*spread, reason=RevocationReason.FRAUD)
    assert world.triggers == 1 + 1 + 1 + len(spread)  # every revoking call announced itself
    revoked = [codes[alice][0], *codes[bob], *codes[erin], *spread]

    # one publish: the job writes the shard's first snapshot and pushes it with the province's keys
    run = world.publish(NOW + MIN)
    (publication,) = run.publications
    assert (publication.kid, publication.seq, publication.revoked, publication.universe) == (
        world.k1.kid, 1, len(revoked), 3000)
    assert run.push is not None and run.push.published is not None  # snapshot + timestamp at once
    kid_dir = f"revocation/{world.k1.kid.hex()}"
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",)  # the delta from nothing weighs more: not listed

    # one refresh of a verifier that never synced
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    shard = result.revocation.get("33", world.k1.kid)
    assert shard.action == SNAPSHOT and shard.seq == 1 and shard.added == len(revoked)
    assert result.revocation.get("33", world.old.kid).action == MISSING  # a key that signed nothing yet
    assert answers(everyone, client, NOW + 2 * MIN) == expected(everyone, revoked)
    late = world.verifier("late")
    assert late.refresh(NOW + 2 * MIN).revocation.get("33", world.k1.kid).seq == 1

    # the second round: two more revocations travel as one small delta
    snapshot_bytes = len(world.published(snapshot_target("33", world.k1.kid)))
    world.revoke(codes[carol][1], codes[alice][1])
    revoked += [codes[carol][1], codes[alice][1]]
    run = world.publish(NOW + HOUR)
    assert [p.added for p in run.publications] == [2]
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",)  # listed, with its seq
    assert run.push.unlisted == (f"{kid_dir}/delta-0000000001.hcrd",)  # served by name, not listed
    role = world.repo.province_targets("33")
    assert [p for p in role.targets if "/revocation/" in p] == [snapshot_target("33", world.k1.kid)]
    assert role.targets[snapshot_target("33", world.k1.kid)].custom == {"seq": 2}
    result = client.refresh(NOW + HOUR + MIN)
    shard = result.revocation.get("33", world.k1.kid)
    delta = world.published(delta_target("33", world.k1.kid, 1))
    assert (shard.action, shard.seq_before, shard.seq, shard.added) == (DELTAS, 1, 2, 2)
    assert (shard.bytes_transferred, shard.files_transferred) == (len(delta), 1)
    assert shard.bytes_transferred < 80 and snapshot_bytes > 300  # 70-byte header + 2 Rice-coded serials
    assert answers(everyone, client, NOW + HOUR + MIN) == expected(everyone, revoked)

    # a third round: the new delta is served beside the first; a verifier at seq 2 fetches only it
    world.revoke(codes[carol][2])
    revoked.append(codes[carol][2])
    run = world.publish(NOW + 2 * HOUR)
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",) and run.push.removed == ()
    assert run.push.unlisted == (f"{kid_dir}/delta-0000000002.hcrd",) and run.push.unlisted_removed == ()
    shard = client.refresh(NOW + 2 * HOUR + MIN).revocation.get("33", world.k1.kid)
    assert (shard.action, shard.seq, shard.files_transferred) == (DELTAS, 3, 1)
    shard = late.refresh(NOW + 2 * HOUR + MIN).revocation.get("33", world.k1.kid)  # last synced at seq 1
    assert (shard.action, shard.seq_before, shard.seq, shard.files_transferred) == (DELTAS, 1, 3, 2)

    # nothing new: nothing fetched for revocation
    world.publish(NOW + 3 * HOUR)
    result = client.refresh(NOW + 3 * HOUR + MIN)
    shard = result.revocation.get("33", world.k1.kid)
    assert (shard.action, shard.bytes_transferred) == (UNCHANGED, 0)
    assert result.revocation.bytes_transferred == 0
    assert answers(everyone, client, NOW + 3 * HOUR + MIN) == expected(everyone, revoked)


def test_renewal_supersedes_and_key_rotation_make_a_second_shard(world):
    mids, codes = world.mids, world.codes
    old_code = codes[mids[0]][0]
    world.current = world.old  # the province signs with its other key for a while
    renewed = world.run(world.ports_codes.renew_code(caller="test", ref=old_code.ref, idempotency_key=None, now=NOW))
    other = world.issue(mids[1:2], 1)[mids[1]][0]
    world.revoke(other)
    assert world.triggers == 2
    run = world.publish(NOW + MIN)
    assert {p.kid: p.revoked for p in run.publications} == {world.k1.kid: 1, world.old.kid: 1}
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    assert {s.kid: s.action for s in result.revocation.shards} == {world.k1.kid: SNAPSHOT, world.old.kid: SNAPSHOT}
    checked = [*codes[mids[0]], *codes[mids[1]], renewed, other]
    assert answers(checked, client, NOW + 2 * MIN) == expected(checked, [old_code, other])


# ------------------------------------------------------------------ refused data


def test_tampered_files_on_the_mirror_are_refused_and_the_last_good_state_kept(world):
    codes, everyone, kid = world.codes, world.everyone, world.k1.kid
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)

    # a changed delta on the mirror (deltas are unlisted: nothing but the result vouches for them):
    # refused, and the sync falls back to the snapshot
    first = codes[world.mids[0]][0]
    world.revoke(first)
    world.publish(NOW + HOUR)
    assert world.mirror_file(delta_target("33", kid, 1)).exists()
    corrupt(world.mirror_file(delta_target("33", kid, 1)))
    shard = client.refresh(NOW + HOUR + MIN).revocation.get("33", kid)
    assert shard.action == SNAPSHOT and shard.seq == 2 and "delta refused" in shard.detail
    assert answers(everyone, client, NOW + HOUR + MIN) == expected(everyone, revoked + [first])

    # delta and snapshot both changed: nothing new is accepted, the last good state stays
    second = codes[world.mids[1]][0]
    world.revoke(second)
    world.publish(NOW + 2 * HOUR)
    corrupt(world.mirror_file(delta_target("33", kid, 2)))
    corrupt(world.mirror_file(snapshot_target("33", kid)))
    result = client.refresh(NOW + 2 * HOUR + MIN)
    shard = result.revocation.get("33", kid)
    assert shard.action == KEPT and shard.seq == 2 and "snapshot refused" in shard.detail
    assert result.revocation.failed == (shard,) and result.complete  # the keys verified; revocation kept
    assert answers(everyone, client, NOW + 2 * HOUR + MIN) == expected(everyone, revoked + [first])

    # the mirror repaired: the one missing delta brings the shard up to date
    world.sync_mirror()
    shard = client.refresh(NOW + 2 * HOUR + 2 * MIN).revocation.get("33", kid)
    assert (shard.action, shard.seq_before, shard.seq) == (DELTAS, 2, 3)
    assert answers(everyone, client, NOW + 2 * HOUR + 2 * MIN) == expected(everyone, revoked + [first, second])


def _craft(world: World, case: str, kid: bytes, saved: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Wrong revocation files for ``case`` (the verifier holds seq 2, seq 3 is out): deltas as a
    mirror could serve them (unlisted: no key needed), snapshots properly signed with the province's
    keys (a publisher misusing them). Returns (signed, served by the mirror)."""
    d1, d2 = delta_target("33", kid, 1), delta_target("33", kid, 2)
    snap = snapshot_target("33", kid)
    state3 = RevocationState.from_snapshot(saved["snapshot-3"])
    unrevoked = next(s for s in range(state3.universe) if not state3.is_revoked(s))
    if case == "replayed-delta":  # delta 1->2 again, under the name of delta 2->3
        return {}, {d2: saved[d1]}
    if case == "gap":  # delta 3->4 under the name of delta 2->3
        state4 = RevocationState("33", kid, seq=4, universe=state3.universe,
                                 serials=sorted({*state3.serials(), unrevoked}))
        return {}, {d2: encode_delta(state3, state4)}
    if case == "forged-delta":  # a well-formed delta 2->3 to another state than the listed snapshot
        state2 = RevocationState.from_snapshot(saved["snapshot-2"])
        other = RevocationState("33", kid, seq=3, universe=state3.universe,
                                serials=sorted({*state2.serials(), unrevoked}))
        return {}, {d2: encode_delta(state2, other)}
    if case == "rolled-back-snapshot":  # the seq 1 snapshot again
        return {snap: saved["snapshot-1"]}, {}
    if case == "forked-snapshot":  # another state at the held seq 2
        state2 = RevocationState.from_snapshot(saved["snapshot-2"])
        fork = RevocationState("33", kid, seq=2, universe=state2.universe,
                               serials=sorted({*state2.serials(), unrevoked}))
        return {snap: fork.to_snapshot()}, {}
    if case == "lifted-revocation":  # seq 3 without a serial revoked before
        lifted = RevocationState("33", kid, seq=3, universe=state3.universe, serials=state3.serials()[1:])
        return {snap: lifted.to_snapshot()}, {}
    raise AssertionError(case)


@pytest.mark.parametrize("case, action, reason", [
    ("replayed-delta", SNAPSHOT, "replay"),
    ("gap", SNAPSHOT, "gap"),
    ("forged-delta", SNAPSHOT, "do not hash to the listed snapshot"),
    ("rolled-back-snapshot", KEPT, "rollback"),
    ("forked-snapshot", KEPT, "disagrees"),
    ("lifted-revocation", KEPT, "lifts a revocation"),
])
def test_replayed_gapped_and_rolled_back_files_are_refused(world, case, action, reason):
    codes, kid = world.codes, world.k1.kid
    checked = world.everyone[:1000]  # serials 0-999: the rounds below revoke among them
    saved: dict[str, bytes] = {}
    revoked = []
    client = world.verifier("hospital")
    rounds = (bulk(world), [codes[mid][0] for mid in world.mids[:2]], [codes[world.mids[2]][0]])
    for seq, batch in enumerate(rounds, start=1):
        world.revoke(*batch)
        revoked += batch
        world.publish(NOW + seq * HOUR)
        saved[f"snapshot-{seq}"] = world.published(snapshot_target("33", kid))
        if seq > 1:
            saved[delta_target("33", kid, seq - 1)] = world.published(delta_target("33", kid, seq - 1))
        if seq < 3:
            assert client.refresh(NOW + seq * HOUR + MIN).revocation.get("33", kid).seq == seq
    signed, served = _craft(world, case, kid, saved)
    if signed:
        world.sign_as_province(signed, NOW + 3 * HOUR + MIN)
    for target, data in served.items():
        world.mirror_file(target).write_bytes(data)
    shard = client.refresh(NOW + 3 * HOUR + 2 * MIN).revocation.get("33", kid)
    assert shard.action == action and reason in shard.detail
    if action == SNAPSHOT:  # the bad delta was refused; the signed snapshot was the way forward
        assert shard.seq == 3 and "delta refused" in shard.detail
        assert answers(checked, client, NOW + 3 * HOUR + 2 * MIN) == expected(checked, revoked)
    else:  # nothing acceptable: the held seq 2 stays
        assert shard.seq == 2
        assert answers(checked, client, NOW + 3 * HOUR + 2 * MIN) == expected(checked, revoked[:-1])
    # the job's next push puts the published files back (it reconciles what the role lists and
    # what the repository serves); the mirror copies the repository again
    run = world.publish(NOW + 4 * HOUR)
    assert run.publications == () and (run.push is not None) == bool(signed)
    shard = client.refresh(NOW + 4 * HOUR + MIN).revocation.get("33", kid)
    assert shard.seq == 3 and shard.action in (UNCHANGED, DELTAS)
    assert answers(checked, client, NOW + 4 * HOUR + MIN) == expected(checked, revoked)


@pytest.mark.parametrize("case", ["missing", "oversized"])
def test_a_missing_or_oversized_unlisted_delta_costs_at_most_the_snapshot(world, case):
    """Deltas are fetched unverified, so what a mirror can make a verifier download is capped: the
    chain may weigh less than the snapshot it replaces, then the (listed, verified) snapshot."""
    kid = world.k1.kid
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    first = world.codes[world.mids[0]][0]
    world.revoke(first)
    world.publish(NOW + HOUR)
    delta = world.mirror_file(delta_target("33", kid, 1))
    snapshot_bytes = len(world.published(snapshot_target("33", kid)))
    if case == "missing":
        delta.unlink()
    else:
        delta.write_bytes(b"\0" * (50 * snapshot_bytes))
    shard = client.refresh(NOW + HOUR + MIN).revocation.get("33", kid)
    assert shard.action == SNAPSHOT and shard.seq == 2
    assert "before the listed 2" in shard.detail
    assert shard.bytes_transferred <= 2 * snapshot_bytes  # the capped attempt, then the snapshot
    assert answers(world.everyone[:1000], client, NOW + HOUR + MIN) == expected(world.everyone[:1000],
                                                                                revoked + [first])


def test_the_province_role_lists_one_target_per_shard_however_many_deltas(world):
    kid = world.k1.kid
    world.revoke(*bulk(world))
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    role_sizes = set()
    for hour in range(1, 6):
        world.revoke(world.codes[world.mids[hour]][0])
        run = world.publish(NOW + hour * HOUR)
        assert run.push.unlisted == (f"revocation/{kid.hex()}/delta-{hour:010d}.hcrd",)
        role = world.repo.province_targets("33")
        assert [p for p in role.targets if "/revocation/" in p] == [snapshot_target("33", kid)]
        assert role.targets[snapshot_target("33", kid)].custom == {"seq": hour + 1}
        role_sizes.add(len(json.dumps(role.to_dict()["targets"])))
        shard = client.refresh(NOW + hour * HOUR + MIN).revocation.get("33", kid)
        assert (shard.action, shard.seq, shard.files_transferred) == (DELTAS, hour + 1, 1)
    assert max(role_sizes) - min(role_sizes) <= 2  # the role does not grow with the deltas kept
    # served: the newest contiguous chain ending at the snapshot, lighter than the snapshot
    served = world.repo.unlisted("33", "revocation")
    first = 6 - len(served)
    assert sorted(served) == [f"revocation/{kid.hex()}/delta-{s:010d}.hcrd" for s in range(first, 6)]
    assert len(served) >= 2 and sum(map(len, served.values())) < len(world.published(snapshot_target("33", kid)))
    assert run.push.unlisted_removed == (() if first == 1 else (f"revocation/{kid.hex()}/delta-{first - 1:010d}.hcrd",))


# ------------------------------------------------------------------ offline, expiry


def test_a_restarted_verifier_answers_the_same_offline(world, caplog):
    everyone = world.everyone
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    online = answers(everyone, client, NOW + 2 * MIN)
    assert online == expected(everyone, revoked)

    # a restart with no mirror at all: everything from the verified cache
    offline = world.verifier("hospital", source=world.tmp / "no-such-mirror")
    with pytest.raises(MirrorUnavailable):
        offline.refresh(NOW + 3 * MIN)
    started = time.perf_counter()
    revocation = offline.load_revocation(NOW + 3 * MIN)
    assert time.perf_counter() - started < 1
    assert answers(everyone, offline, NOW + 3 * MIN) == online
    keyring, _ = offline.load_cached(NOW + 3 * MIN)
    assert revocation.missing(keyring, now=NOW + 3 * MIN) == [("33", world.old.kid)]  # never published

    # a changed cache is not trusted: that shard is left out (and shows as missing), not misread
    store = RevocationStore(world.tmp / "verifiers" / "hospital" / "targets" / "revocation")
    objects = sorted(store.directory.glob("objects/*"))
    snapshot_object = next(p for p in objects if p.read_bytes()[:4] == b"HCRV")
    corrupt(snapshot_object)
    with caplog.at_level(logging.WARNING, logger="verifier.revocation_sync"):
        revocation = offline.load_revocation(NOW + 3 * MIN)
    assert "corrupt" in caplog.text
    assert ("33", world.k1.kid) in revocation.missing(keyring, now=NOW + 3 * MIN)
    # ... and the next refresh fetches it again, though the province published nothing new
    shard = client.refresh(NOW + 4 * MIN).revocation.get("33", world.k1.kid)
    assert (shard.action, shard.seq) == (SNAPSHOT, 1)
    assert answers(everyone, offline, NOW + 4 * MIN) == online
    # a forged but self-consistent state (another set, its own hash) is refused too: no province listed it
    forged = RevocationState("33", world.k1.kid, seq=1, universe=3000, serials=[]).to_snapshot()
    forged_id = hashlib.sha256(forged).hexdigest()
    (store.directory / "objects" / forged_id).write_bytes(forged)
    state = store.directory / "state.json"
    state.write_bytes(state.read_bytes().replace(snapshot_object.name.encode(), forged_id.encode()))
    with caplog.at_level(logging.WARNING, logger="verifier.revocation_sync"):
        assert offline.load_revocation(NOW + 3 * MIN).get("33", world.k1.kid) is None
    assert "does not list this snapshot" in caplog.text
    state.write_bytes(b"{not json")
    with pytest.raises(TrustDataError, match="revocation state file is corrupt"):
        offline.load_revocation(NOW + 3 * MIN)

    # the next refresh from a mirror repairs it (a corrupt cache never keeps a verifier stuck)
    shard = client.refresh(NOW + 5 * MIN).revocation.get("33", world.k1.kid)
    assert shard.action == SNAPSHOT
    assert answers(everyone, offline, NOW + 6 * MIN) == online


def test_the_shard_of_an_expired_key_is_dropped(world):
    mids, codes = world.mids, world.codes
    world.current = world.old
    old_revoked = world.issue(mids[:1], 1)[mids[0]][0]
    world.revoke(old_revoked, codes[mids[1]][0])
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    assert {s.kid: s.action for s in result.revocation.shards} == {world.k1.kid: SNAPSHOT, world.old.kid: SNAPSHOT}
    assert answers([old_revoked], client, NOW + 2 * MIN) == {(world.old.kid, old_revoked.ref.serial): "revoked"}

    later = NOW + 2 * DAY  # past the old key's verify_until: none of its codes verifies any more
    # offline at once: the verifier loads only live shards
    assert [s.kid for s in client.load_revocation(later)] == [world.k1.kid]
    # the issuer retires the shard, the repository drops its files
    run = world.publish(later)
    assert run.retired == (("33", world.old.kid),)
    listed = world.repo.province_targets("33").targets
    assert not [p for p in listed if world.old.kid.hex() in p]
    assert not (world.revocation_dir / "provinces" / "33" / "revocation" / world.old.kid.hex()).exists()
    # the verifier forgets it, and its cached files go
    result = client.refresh(later + MIN)
    assert result.revocation.get("33", world.old.kid).action == DROPPED
    store = RevocationStore(world.tmp / "verifiers" / "hospital" / "targets" / "revocation")
    assert list(store.held()) == [("33", world.k1.kid)]
    assert len(list((store.directory / "objects").iterdir())) == 2  # one snapshot and its province role


# ------------------------------------------------------------------ the job's schedule


def test_the_job_publishes_on_demand_coalesces_bursts_and_flushes_at_stop(world):
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


def test_a_failed_push_is_retried_and_completed_by_reconciliation(world):
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


def _config(world: World, **overrides) -> IssuerConfig:
    fields = dict(
        province="33", database=world.store.path, vault_key=Path("vault.key"), key_set=Path("key-set.json"),
        keystore_dir=Path("keystore"), tls_cert=Path("server.pem"), tls_key=Path("server.key"),
        client_ca=Path("ca.pem"), trust_repo=world.repo.directory, tuf_keys=world.tuf_dir,
        online_keys=world.online_dir, revocation_directory=world.revocation_dir)
    fields.update(overrides)
    return IssuerConfig(**fields)


def test_the_job_from_the_issuer_configuration(world):
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
def test_job_configuration_errors_are_refused_at_start(world, overrides, passphrases, message):
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
def test_revocation_settings_are_validated(world, overrides, message):
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


def test_the_store_has_the_partial_index_the_publisher_reads(world):
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
