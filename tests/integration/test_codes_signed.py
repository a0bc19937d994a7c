"""Codes signed go from the serving issuer back into the key-set file (issue 11, item 7).

The rotating signer counts every code against its key's cap; these tests check
that the count reaches the file and everything that reads it:

* a real ``issuer.app.run`` serving with ``key_set`` issues codes over gRPC; after
  its graceful shutdown the key-set file holds the count, ``healthcode-keys
  province key list`` shows it against the cap, and planning starts at 80 %;
* the write-back under the ceremonies' lock: a ceremony holding the lock is
  waited for and its change kept; counts only go up; the issuer's own write is
  not a change its refresh reloads (the revision stays); a ceremony after it
  keeps the counts;
* the watcher writes back periodically;
* KeyAdmin (``ListKeys``, ``PlanRotation`` over mTLS) shows the live counts
  before any write-back.

Real files, a real file keystore, SQLite and the gRPC server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import pathlib
import signal
import threading
import time
from dataclasses import dataclass

import grpc
import pytest
from click.testing import CliRunner

from healthcode import Algorithm
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc
from issuer.api import key_admin_pb2 as kpb
from issuer.api import key_admin_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc
from issuer.config import IssuerConfig
from issuer.documents import make_resident_id
from keys import ceremony, province_keys
from keys.__main__ import cli
from keys.keystore import FileKeystore, ScryptParams
from keys.key_set_file import key_set_lock, load_key_set, save_key_set
from keys.lifecycle import PlanReason, ProvinceKeySet
from keys.managed_key import RotationPolicy
from keys.rotating_signer import RotatingSigner
from shellkit.files import open_private

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)
SECRET = "keystore secret 33"
FAST = ScryptParams(n=2**10, r=8, p=1)
CAP = 10  # planning starts at 8 codes (80 %), signing stops at 10
API_KEY = "codes-signed-test-key"


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


@dataclass
class Province:
    """Province 33's home: a file keystore and a key set whose one key signs now."""

    home: pathlib.Path
    keystore: FileKeystore
    kid: bytes
    now: dt.datetime

    @property
    def path(self) -> pathlib.Path:
        return self.home / ceremony.KEY_SET_NAME

    def key_set(self) -> ProvinceKeySet:
        return load_key_set(self.path)

    def signer(self) -> RotatingSigner:
        return RotatingSigner.from_file(self.path, self.keystore, province="33")

    def key_list(self) -> str:
        result = CliRunner().invoke(cli, ["--now", self.now.strftime("%Y-%m-%dT%H:%M:%SZ"), "province", "key",
                                          "list", "33", "--home", str(self.home)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout


@pytest.fixture
def province(tmp_path) -> Province:
    now = utc_now()
    home = tmp_path / "province-33"
    keystore = FileKeystore(home / "keystore", SECRET.encode(), scrypt=FAST)
    handle = keystore.generate(Algorithm.ES256, label="33-es256")
    key_set = ProvinceKeySet("33", RotationPolicy(max_codes_per_key=CAP)).add_prepublished(
        keystore.public_key(handle), handle=handle, use_from=now - DAY, now=now - DAY)
    save_key_set(home / ceremony.KEY_SET_NAME, key_set)
    yield Province(home, keystore, handle.kid, now)
    keystore.close()


def sign(rotating: RotatingSigner, province: Province, count: int) -> None:
    for _ in range(count):
        assert rotating.signer_for(province.now).kid == province.kid


def write_private(path: pathlib.Path, text: str) -> None:
    with open_private(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- the real issuer


def test_a_serving_issuer_writes_its_counts_back_and_key_list_shows_them(tmp_path, province, caplog):
    from issuer import app

    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    assert "0 of 10 codes signed (0.0 % of the cap)" in province.key_list()
    write_private(tmp_path / "vault.key", os.urandom(32).hex() + "\n")
    write_private(tmp_path / "callers.toml",
                  f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key(API_KEY)}"\n')
    config = IssuerConfig(province="33", database=tmp_path / "issuer.db", vault_key=tmp_path / "vault.key",
                          key_set=province.path, keystore_dir=province.home / "keystore",
                          insecure_dev_plaintext=True, api_keys=tmp_path / "callers.toml", listen="127.0.0.1:0",
                          key_set_check_interval=3600.0)  # no periodic write-back: the shutdown's must do
    issued = []

    def issue(port: int) -> None:
        metadata = (("authorization", f"Bearer {API_KEY}"),)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            index = resident_index_pb2_grpc.ResidentIndexStub(channel)
            codes = health_codes_pb2_grpc.HealthCodesStub(channel)
            document = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
                                           number=make_resident_id("330102", dt.date(1980, 1, 1), 7))
            mid = index.RegisterResident(resident_index_pb2.RegisterResidentRequest(primary=document),
                                         metadata=metadata, timeout=10).main_index_id
            for n in range(8):
                issued.append(codes.IssueCode(
                    health_codes_pb2.IssueCodeRequest(main_index_id=mid, idempotency_key=f"codes-signed-{n}"),
                    metadata=metadata, timeout=10).code)

    async def operate(server) -> None:
        try:
            await asyncio.to_thread(issue, server.port)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # graceful shutdown: the last write-back

    async def main() -> None:
        await app.run(config, signing_key_passphrase=SECRET.encode(),
                      ready=lambda server: asyncio.ensure_future(operate(server)))

    asyncio.run(main())
    assert len(issued) == 8 and {c.ref.kid for c in issued} == {province.kid}
    key_set = province.key_set()
    assert key_set.find(province.kid).codes_signed == 8
    assert key_set.revision == 1  # counts are not a key-set change
    assert key_set.plan_next(province.now).reason is PlanReason.CODE_CAP  # 8 of 10: 80 %
    listing = province.key_list()
    assert "8 of 10 codes signed (80.0 % of the cap: at least 80 %, rotate early)" in listing
    assert "next rotation: code_cap" in listing
    assert "codes signed recorded in the key set of province 33" in caplog.text


# --------------------------------------------------------------------------- the write-back and the lock


def test_a_ceremony_holding_the_lock_is_waited_for_and_its_change_kept(province, caplog):
    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    rotating = province.signer()
    sign(rotating, province, 5)
    results: list = []
    with key_set_lock(province.path):  # a ceremony is between reading and writing the file
        writer = threading.Thread(target=lambda: results.append(rotating.record_codes_signed()))
        writer.start()
        time.sleep(0.1)
        assert writer.is_alive() and results == []  # the write-back waits for the ceremony
        handle = province.keystore.generate(Algorithm.ES256, label="33-next")
        changed = province.key_set().add_prepublished(
            province.keystore.public_key(handle), handle=handle, use_from=province.now + 10 * DAY, now=province.now)
        save_key_set(province.path, changed)
    writer.join(10)
    assert results == [True]
    on_disk = province.key_set()
    assert on_disk.revision == changed.revision == 2  # the ceremony's revision, not bumped by the counts
    assert [k.kid for k in on_disk.keys] == [province.kid, handle.kid]  # the ceremony's key is kept
    assert on_disk.find(province.kid).codes_signed == 5
    assert rotating.key_set.revision == 1  # a foreign change: the next refresh installs it, as usual
    assert rotating.refresh() is True and rotating.key_set == on_disk
    assert "reloaded: revision 2" in caplog.text


@pytest.mark.parametrize(
    "name, in_file, signed, expected",
    [
        ("the signer is ahead: the file goes up", 0, 6, 6),
        ("the file is ahead (an earlier run): it stays", 50, 6, 50),
        ("equal: nothing to write", 6, 6, 6),
    ],
)
def test_counts_only_go_up(province, name, in_file, signed, expected):
    rotating = province.signer()
    sign(rotating, province, signed)
    save_key_set(province.path, province.key_set().with_codes_signed({province.kid: in_file}))
    stamp = os.stat(province.path).st_mtime_ns
    assert rotating.record_codes_signed() is (expected > in_file)
    assert province.key_set().find(province.kid).codes_signed == expected
    assert (os.stat(province.path).st_mtime_ns == stamp) is (expected == in_file)  # unchanged: not rewritten


def test_the_issuers_own_write_back_is_not_a_change_to_reload(province, caplog):
    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    rotating = province.signer()
    sign(rotating, province, 3)
    assert rotating.record_codes_signed() is True
    assert rotating.refresh() is False  # our own write: nothing new
    assert rotating.key_set.revision == 1 and rotating.key_set.find(province.kid).codes_signed == 3
    assert rotating.record_codes_signed() is False  # no new code: the file is not rewritten
    assert "reloaded" not in caplog.text
    # a ceremony afterwards keeps the counts (it reads the file under the same lock)
    admin = province_keys.ProvinceKeyAdmin(province="33", key_set_path=province.path)
    retired = admin.retire(province.kid, now=province.now, force=True)
    assert retired.key_set.revision == 2 and province.key_set().find(province.kid).codes_signed == 3
    sign_after = rotating.refresh()
    assert sign_after is True and rotating.codes_signed() == {province.kid: 3}


def test_the_watcher_writes_counts_back_periodically(province, caplog):
    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    rotating = province.signer()

    async def body() -> int:
        task = asyncio.ensure_future(rotating.watch(every=0.01, record_every=0.05))
        try:
            sign(rotating, province, 4)
            for _ in range(300):
                if province.key_set().find(province.kid).codes_signed == 4:
                    break
                await asyncio.sleep(0.01)
            return province.key_set().find(province.kid).codes_signed
        finally:
            task.cancel()

    assert asyncio.run(body()) == 4
    assert "reloaded" not in caplog.text and province.key_set().revision == 1


def test_a_write_back_never_touches_another_provinces_file(province):
    rotating = province.signer()
    sign(rotating, province, 2)
    foreign = ProvinceKeySet("44", province.key_set().policy)
    save_key_set(province.path, foreign)
    from keys.errors import InvalidKeySet

    with pytest.raises(InvalidKeySet, match="province 44's, not 33's"):
        rotating.record_codes_signed()
    assert load_key_set(province.path) == foreign


# --------------------------------------------------------------------------- KeyAdmin sees the live counts


def test_key_admin_lists_live_counts_and_plans_at_80_percent(province):
    from issuer.server import IssuerServer, ServerOptions, TlsMaterial
    from issuer.key_admin import KeyAdminService
    from issuer.service import ServiceSettings
    from issuer.tls import DevPki

    rotating = province.signer()
    admin = province_keys.ProvinceKeyAdmin(province="33", key_set_path=province.path,
                                      live_codes_signed=rotating.codes_signed)
    sign(rotating, province, 7)
    assert admin.plan(province.now) is None  # 70 %: nothing due yet
    sign(rotating, province, 1)
    assert province.key_set().find(province.kid).codes_signed == 0  # nothing written back yet
    key_set, infos = admin.list_keys(province.now)
    assert [i.key.codes_signed for i in infos] == [8] and key_set.revision == 1
    assert admin.plan(province.now).reason is PlanReason.CODE_CAP

    pki = DevPki.create(now=utc_now())
    server_cert = pki.server()
    options = ServerOptions(service=ServiceSettings(province="33"), listen="127.0.0.1:0",
                            tls=TlsMaterial(server_cert.cert_pem, server_cert.key_pem, pki.ca_cert_pem),
                            rate_limit=auth.RateLimit(1000.0, 1000.0), grace=1.0)

    async def body():
        server = await IssuerServer.start(options, index=object(), codes=object(),
                                          key_admin=KeyAdminService(admin, clock=lambda: province.now))
        try:
            cert = pki.client("admin:33")
            creds = grpc.ssl_channel_credentials(pki.ca_cert_pem, cert.key_pem, cert.cert_pem)

            def calls():
                with grpc.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
                    stub = key_admin_pb2_grpc.KeyAdminStub(channel)
                    return (stub.ListKeys(kpb.ListKeysRequest(province="33"), timeout=30),
                            stub.PlanRotation(kpb.PlanRotationRequest(province="33"), timeout=30))

            return await asyncio.to_thread(calls)
        finally:
            await server.shutdown(0)

    listed, plan = asyncio.run(body())
    assert [k.codes_signed for k in listed.keys] == [8] and listed.policy.max_codes_per_key == CAP
    assert plan.reason == kpb.PLAN_REASON_CODE_CAP and plan.replaces_kid == province.kid
