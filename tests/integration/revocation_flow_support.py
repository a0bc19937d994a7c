"""Shared world of the revocation flow tests (test_revocation_flow*.py).

Each test builds a world on disk: a real issuer domain (SQLite store, resident
index, code issuer) behind the revocation trigger of ``issuer/revocation_job.py``;
the revocation job; a national trust repository whose province 33 signs with
TUF role keys kept in encrypted files; a mirror directory copied from the
repository (the USB stick a hospital syncs from); and verifiers running
``verifier.trustsync.TrustSync``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

import healthcode as hc
from healthcode.keylist import KeyList
from issuer.documents import make_resident_id, parse_document
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import RevocationReason
from issuer.privacy import IdentifierVault
from issuer.revocation_job import RevocationPublishJob, notify_revocations
from issuer.revocation_publisher import SQLiteRevocationSource
from issuer.store import SQLiteStore
from keys.keystore import ScryptParams
from keys.signers import RoleKeyFile, generate_role_key, load_role_signer, role_key_names
from keys.trustrepo import TrustRepository
from verifier.trustsync import TrustSync


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
