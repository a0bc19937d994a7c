"""The file keystore, and the rotating signer over it inside a real issuer.

* every algorithm: generate, reload, sign health codes that ``healthcode.verify`` accepts;
* the files: encrypted PKCS#8 that OpenSSL opens (and OpenSSL's that we import),
  0600 files in a 0700 directory, written atomically;
* refusals: wrong passphrase (clear error), no passphrase, a swapped key file,
  a handle that tries to leave the directory;
* the private key and the passphrase appear in no repr, str, error, log line or file
  but the encrypted one (checked by searching for their bytes);
* rotation while serving: codes issued concurrently through ``CodeIssuer`` across a
  rotation instant and across a key-set reload; all verify; serials restart per kid;
* the issuer's wiring: ``[keys] key_set`` in the config, ``open_rotating_signer``,
  ``build_domain``, and ``NoSigningKey`` when no key signs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import pathlib
import pickle
import shutil
import stat
import subprocess

import pytest

import healthcode as hc
from healthcode import Algorithm, Keyring
from issuer.config import ConfigError, IssuerConfig, load_config
from issuer.documents import make_resident_id, parse_document
from issuer.errors import NoSigningKey
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.privacy import IdentifierVault
from issuer.store import SQLiteStore
from keys.errors import InvalidKeySet, KeyFileCorrupt, KeyNotFound, KeyReason, WrongPassphrase
from keys.keystore import FileKeystore, KeyHandle, ScryptParams, open_keystore
from keys.keystore.pkcs8 import decrypt_private_key_info
from keys.key_set_file import load_key_set, save_key_set
from keys.lifecycle import ProvinceKeySet
from keys.managed_key import RotationPolicy
from keys.rotating_signer import RotatingSigner
from shellkit.files import open_private, write_file_atomically

UTC = dt.timezone.utc
T = dt.datetime(2026, 11, 22, 8, 0, tzinfo=UTC)  # a rotation instant
DAY = dt.timedelta(days=1)
PASSPHRASE = b"correct horse battery staple"
SUBJECT = hc.main_index_id_from_bytes(bytes(range(16)))
OPENSSL = shutil.which("openssl")
FAST = ScryptParams(n=2**10, r=8, p=1)  # for tests that make many keys; the default is checked once


def algorithms():
    try:
        import gmalglib  # noqa: F401
        return list(Algorithm)
    except ImportError:  # pragma: no cover
        return [Algorithm.ES256, Algorithm.EDDSA]


def sign_at(signer, at: dt.datetime, serial: int = 1) -> str:
    claims = hc.CodeClaims(province="33", subject=SUBJECT, serial=serial, issued_at=at, expires_at=at + 7 * DAY)
    return hc.sign_code(claims, signer)


def trusted(signer, use_from=T - DAY, use_until=T + DAY) -> hc.TrustedKey:
    return hc.TrustedKey(kid=signer.kid, province="33", public_key=signer.public_key(), use_from=use_from,
                         use_until=use_until, verify_until=use_until + 7 * DAY)


# --------------------------------------------------------------------------- keys and files


@pytest.mark.parametrize("alg", algorithms(), ids=str)
def test_generate_reload_and_sign_codes_that_verify(tmp_path, alg):
    store = FileKeystore(tmp_path / "keys", PASSPHRASE, clock=lambda: T)
    handle = store.generate(alg, label=f"33-{alg.value}")
    assert (handle.backend, handle.algorithm, handle.label) == ("file", alg, f"33-{alg.value}")
    # a new keystore object (a restarted issuer) finds and decrypts it
    again = FileKeystore(tmp_path / "keys", PASSPHRASE)
    assert again.list() == (handle,)
    signer = again.load_signer(handle)
    assert signer.kid == handle.kid == again.public_key(handle).key_id()
    code = sign_at(signer, T)
    verified = hc.verify(code, Keyring([trusted(signer)]), now=T)
    assert (verified.kid, verified.algorithm) == (handle.kid, alg.value)
    meta = json.loads((tmp_path / "keys" / f"{handle.id}.json").read_text())
    assert meta["created"] == "2026-11-22T08:00:00Z" and meta["algorithm"] == alg.value


def test_files_are_0600_in_a_0700_directory_and_written_atomically(tmp_path, monkeypatch):
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        store = FileKeystore(tmp_path / "keys", PASSPHRASE, scrypt=FAST)
        handle = store.generate(Algorithm.ES256, label="perm")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for suffix in (".pem", ".json"):
        assert stat.S_IMODE((tmp_path / "keys" / f"{handle.id}{suffix}").stat().st_mode) == 0o600

    target = tmp_path / "keys" / "file.bin"
    write_file_atomically(target, b"old")
    inode = target.stat().st_ino
    write_file_atomically(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_ino != inode  # replaced, not rewritten

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_file_atomically(target, b"half-written")
    monkeypatch.undo()
    assert target.read_bytes() == b"new"  # the old content survives a failed write
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(
        [f"{handle.id}.pem", f"{handle.id}.json", "file.bin"])  # no temp file left behind


def test_key_file_is_pbes2_scrypt_aes256cbc_with_the_default_cost(tmp_path):
    store = FileKeystore(tmp_path, PASSPHRASE)
    handle = store.generate(Algorithm.ES256, label="cost")
    pem = (tmp_path / f"{handle.id}.pem").read_text()
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    # OIDs: PBES2, scrypt, aes256-CBC; scrypt N = 2**14 (0x4000), r = 8, p = 4
    for oid in ("06092a864886f70d01050d", "06092b06010401da47040b", "060960864801650304012a"):
        assert oid in der.hex()
    assert "020240000201080201040201" + "20" in der.hex()  # INTEGER N, r, p, keyLength 32
    assert decrypt_private_key_info(der, PASSPHRASE).startswith(b"\x30")


def test_wrong_or_missing_passphrase_is_refused_clearly(tmp_path):
    handle = FileKeystore(tmp_path, PASSPHRASE, scrypt=FAST).generate(Algorithm.EDDSA, label="province 33 q4")
    with pytest.raises(WrongPassphrase) as info:
        FileKeystore(tmp_path, b"Tr0ub4dor&3 wrong").load_signer(handle)
    assert str(info.value) == f"wrong_passphrase: wrong passphrase for key {handle.kid.hex()} (province 33 q4)"
    assert info.value.reason is KeyReason.WRONG_PASSPHRASE and info.value.__cause__ is None
    with pytest.raises(WrongPassphrase, match="opened without a passphrase: cannot load a key"):
        FileKeystore(tmp_path, None).load_signer(handle)
    assert FileKeystore(tmp_path, None).public_key(handle).key_id() == handle.kid  # public data needs none
    with pytest.raises(Exception, match="at least 8 bytes"):
        FileKeystore(tmp_path / "weak", b"short").generate(Algorithm.ES256, label="x")


def test_a_swapped_key_file_or_a_foreign_handle_is_refused(tmp_path):
    store = FileKeystore(tmp_path, PASSPHRASE, scrypt=FAST)
    a = store.generate(Algorithm.ES256, label="a")
    b = store.generate(Algorithm.ES256, label="b")
    (tmp_path / f"{a.id}.pem").write_bytes((tmp_path / f"{b.id}.pem").read_bytes())
    with pytest.raises(KeyFileCorrupt, match="does not hold the key its metadata names"):
        store.load_signer(a)
    with pytest.raises(KeyNotFound, match="not a file keystore key id"):
        store.load_signer(KeyHandle(backend="file", id="../../etc/passwd", kid=a.kid, algorithm=a.algorithm,
                                    label="x"))
    with pytest.raises(KeyNotFound, match="not the key the handle names"):
        store.load_signer(KeyHandle(backend="file", id=b.id, kid=a.kid, algorithm=a.algorithm, label="x"))
    with pytest.raises(Exception, match="lives in a pkcs11 keystore"):
        store.load_signer(KeyHandle(backend="pkcs11", id=a.id, kid=a.kid, algorithm=a.algorithm, label="x"))


def test_destroy_removes_both_files(tmp_path):
    store = FileKeystore(tmp_path, PASSPHRASE, scrypt=FAST)
    keep = store.generate(Algorithm.ES256, label="keep")
    gone = store.generate(Algorithm.EDDSA, label="gone")
    store.destroy(gone)
    assert store.list() == (keep,)
    assert not any(p.name.startswith(gone.id) for p in tmp_path.iterdir())
    with pytest.raises(KeyNotFound):
        store.destroy(gone)


def test_secrets_appear_nowhere_but_in_the_encrypted_file(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    store = FileKeystore(tmp_path / "keys", PASSPHRASE, scrypt=FAST)
    handles = [store.generate(alg, label=f"leak-{alg.value}") for alg in algorithms()]
    signers = [store.load_signer(h) for h in handles]
    secrets = [s._key.private_bytes() for s in signers]
    ks = ProvinceKeySet("33")
    for i, (handle, signer) in enumerate(zip(handles, signers)):
        ks = ks.add_prepublished(signer.public_key(), handle=handle, use_from=T + i * 100 * DAY, now=T)
    save_key_set(tmp_path / "key-set.json", ks)
    rotating = RotatingSigner.from_file(tmp_path / "key-set.json", store, province="33")
    errors = []
    for attempt in (lambda: FileKeystore(tmp_path / "keys", b"wrong passphrase!").load_signer(handles[0]),
                    lambda: rotating.signer_for(T - DAY),
                    lambda: pickle.dumps(signers[0])):
        with pytest.raises(Exception) as info:
            attempt()
        errors.append(f"{info.value!s} {info.value!r}")
    texts = [repr(store), str(store), repr(rotating), repr(ks), *errors, caplog.text,
             *(repr(s) + str(s) + repr(vars(s) if hasattr(s, "__dict__") else "") for s in signers),
             *(repr(h) + json.dumps(h.to_json()) for h in handles)]
    blobs = [t.encode() for t in texts] + [p.read_bytes() for p in tmp_path.rglob("*.json")]
    for secret in secrets:
        forms = [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret),
                 str(int.from_bytes(secret, "big")).encode()]
        for blob in blobs + [p.read_bytes() for p in tmp_path.rglob("*.pem")]:
            assert not any(form in blob for form in forms)
    for blob in blobs:
        assert PASSPHRASE not in blob


# --------------------------------------------------------------------------- OpenSSL interoperability


@pytest.mark.skipif(OPENSSL is None, reason="no `openssl` binary on PATH")
@pytest.mark.parametrize("alg", algorithms(), ids=str)
def test_openssl_opens_our_key_files(tmp_path, alg):
    store = FileKeystore(tmp_path, PASSPHRASE)
    handle = store.generate(alg, label="interop")
    out = subprocess.run(
        [OPENSSL, "pkey", "-in", str(tmp_path / f"{handle.id}.pem"), "-passin", "env:PW", "-pubout",
         "-outform", "DER"], capture_output=True, env={**os.environ, "PW": PASSPHRASE.decode()}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == store.public_key(handle).spki_der()


@pytest.mark.skipif(OPENSSL is None, reason="no `openssl` binary on PATH")
@pytest.mark.parametrize("genpkey, alg", [(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "ES256"),
                                           (["-algorithm", "ED25519"], "EdDSA"),
                                           (["-algorithm", "SM2"], "SM2-SM3")], ids=["p256", "ed25519", "sm2"])
def test_we_import_openssl_scrypt_pkcs8_keys(tmp_path, genpkey, alg):
    if Algorithm(alg) not in algorithms():  # pragma: no cover
        pytest.skip("SM2 needs the sm2 extra")
    env = {**os.environ, "PW": "openssl passphrase"}
    plain = tmp_path / "plain.pem"
    if subprocess.run([OPENSSL, "genpkey", *genpkey, "-out", str(plain)], capture_output=True).returncode:
        pytest.skip(f"openssl cannot generate {alg} keys")
    subprocess.run([OPENSSL, "pkcs8", "-topk8", "-scrypt", "-in", str(plain), "-out", str(tmp_path / "enc.pem"),
                    "-passout", "env:PW"], check=True, capture_output=True, env=env)
    spki = subprocess.run([OPENSSL, "pkey", "-in", str(plain), "-pubout", "-outform", "DER"], check=True,
                          capture_output=True).stdout
    store = FileKeystore(tmp_path / "keys", PASSPHRASE, scrypt=FAST)
    handle = store.import_pem((tmp_path / "enc.pem").read_bytes(), b"openssl passphrase", label="imported")
    assert handle.algorithm is Algorithm(alg) and store.public_key(handle).spki_der() == spki
    with pytest.raises(WrongPassphrase):
        store.import_pem((tmp_path / "enc.pem").read_bytes(), b"not it", label="again")
    signer = store.load_signer(handle)
    assert hc.verify(sign_at(signer, T), Keyring([trusted(signer)]), now=T).kid == handle.kid


# --------------------------------------------------------------------------- rotation while serving


def resident(seq: int):
    return parse_document("resident_id", make_resident_id("330102", dt.date(1980, 1, 1), seq), today=T.date())


@pytest.fixture
def rotation(tmp_path):
    """Key A signs until T, key B from T; both in a file keystore, the key set in a file."""
    store = FileKeystore(tmp_path / "keys", PASSPHRASE)
    a = store.generate(Algorithm.ES256, label="33-a")
    b = store.generate(Algorithm.EDDSA, label="33-b")
    ks = ProvinceKeySet("33", RotationPolicy())
    ks = ks.add_prepublished(store.public_key(a), handle=a, use_from=T - 60 * DAY, now=T - 60 * DAY)
    ks = ks.add_prepublished(store.public_key(b), handle=b, use_from=T, now=T - 20 * DAY)
    path = tmp_path / "key-set-33.json"
    return store, a, b, ks, path


async def _world(db: pathlib.Path, signer_for, residents: int):
    sqlite = SQLiteStore(db)
    index = ResidentIndex(store=sqlite, vault=IdentifierVault(blind_index_key=b"I" * 32, encryption_key=b"E" * 32))
    issuer = CodeIssuer(store=sqlite, province="33", signer_for=signer_for)
    mids = [await index.register_resident(resident(i), now=T - DAY) for i in range(residents)]
    return sqlite, issuer, mids


def test_codes_issued_concurrently_across_a_rotation_instant_all_verify(tmp_path, rotation):
    store, a, b, ks, path = rotation
    save_key_set(path, ks)
    rotating = RotatingSigner.from_file(path, store, province="33")
    moments = [T + dt.timedelta(milliseconds=ms) for ms in range(-2500, 2500, 25)]  # 200 requests over 5 s

    async def body():
        sqlite, issuer, mids = await _world(tmp_path / "issuer.db", rotating.signer_for, 20)
        try:
            return await asyncio.gather(*(
                issuer.issue_code(caller="app", main_index_id=mids[i % len(mids)], idempotency_key=None, now=now)
                for i, now in enumerate(moments)))
        finally:
            sqlite.close()

    codes = asyncio.run(body())
    keyring = Keyring(ks.trusted_keys(T))
    by_kid: dict[bytes, list[int]] = {}
    for now, code in zip(moments, codes):
        expected = a.kid if now < T else b.kid
        verified = hc.verify(code.text, keyring, now=T + DAY)
        assert verified.kid == code.ref.kid == expected
        by_kid.setdefault(code.ref.kid, []).append(code.ref.serial)
    assert sorted(by_kid[a.kid]) == list(range(100)) and sorted(by_kid[b.kid]) == list(range(100))
    assert rotating.codes_signed() == {a.kid: 100, b.kid: 100}


def test_a_key_set_reload_while_serving_loses_no_request(tmp_path, rotation, caplog):
    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    store, a, b, ks, path = rotation
    only_a = ProvinceKeySet("33", ks.policy, (ks.find(a.kid),), revision=1)
    save_key_set(path, only_a)
    rotating = RotatingSigner.from_file(path, store, province="33")
    assert rotating.refresh() is False  # unchanged file: nothing to do

    async def body():
        sqlite, issuer, mids = await _world(tmp_path / "issuer.db", rotating.signer_for, 10)
        try:
            async def stream(start: dt.datetime, count: int):
                return await asyncio.gather(*(
                    issuer.issue_code(caller="app", main_index_id=mids[i % 10], idempotency_key=None,
                                      now=start + dt.timedelta(milliseconds=i))
                    for i in range(count)))

            # (1) the province admin publishes B (the file is replaced) while codes keep coming
            save_key_set(path, ks)
            reload = asyncio.ensure_future(asyncio.to_thread(rotating.refresh))
            before = []
            while not reload.done():
                before += await stream(T - DAY, 20)
            assert reload.result() is True
            before += await stream(T - DAY, 20)
            # (2) then the rotation instant passes
            across = await stream(T - dt.timedelta(milliseconds=100), 200)
            # (3) a bad file is refused and the key set in use stays
            path.write_bytes(b"{not json")
            with pytest.raises(InvalidKeySet, match="not JSON"):
                await asyncio.to_thread(rotating.refresh)
            after = await stream(T + DAY, 20)
            return before, across, after
        finally:
            sqlite.close()

    before, across, after = asyncio.run(body())
    keyring = Keyring(ks.trusted_keys(T))
    for code in before + across + after:
        assert hc.verify(code.text, keyring, now=T + DAY).kid == code.ref.kid
    assert {c.ref.kid for c in before} == {a.kid} and {c.ref.kid for c in after} == {b.kid}
    assert sorted(c.ref.serial for c in across + after if c.ref.kid == b.kid) == list(range(120))
    assert rotating.key_set == ks and "reloaded: revision 2" in caplog.text


def test_watch_reloads_on_change_and_on_wake(tmp_path, rotation):
    store, a, b, ks, path = rotation
    only_a = ProvinceKeySet("33", ks.policy, (ks.find(a.kid),), revision=1)
    save_key_set(path, only_a)
    rotating = RotatingSigner.from_file(path, store, province="33")

    async def body():
        wake = asyncio.Event()
        task = asyncio.ensure_future(rotating.watch(every=3600, wake=wake))  # only the wake-up will do
        try:
            save_key_set(path, ks)
            await asyncio.sleep(0.05)
            assert rotating.key_set.revision == 1
            wake.set()  # what SIGHUP does in the issuer
            for _ in range(200):
                if rotating.key_set.revision == ks.revision:
                    break
                await asyncio.sleep(0.01)
            assert rotating.key_set == ks
            assert rotating.signer_for(T).kid == b.kid
        finally:
            task.cancel()

    asyncio.run(body())


# --------------------------------------------------------------------------- the issuer's wiring


def write_private(path: pathlib.Path, text: str) -> None:
    """A secret file as the docs' recipes make it: owner-only (the issuer refuses wider ones)."""
    with open_private(path, "w") as f:
        f.write(text)


def _config(tmp_path, **kw) -> IssuerConfig:
    base = dict(province="33", database=tmp_path / "issuer.db", vault_key=tmp_path / "vault.key",
                key_set=tmp_path / "key-set-33.json", keystore_dir=tmp_path / "keys",
                insecure_dev_plaintext=True, api_keys=tmp_path / "callers.toml")
    base.update(kw)
    return IssuerConfig(**base)


def test_config_file_names_a_key_set_instead_of_a_signing_key(tmp_path):
    path = tmp_path / "issuer.toml"
    path.write_text('province = "33"\ndatabase = "i.db"\n[auth]\napi_keys = "c.toml"\n'
                    '[keys]\nkey_set = "ks.json"\nkeystore_dir = "store"\nvault_key = "v.key"\n'
                    'key_set_check_seconds = 2\nsigning_key_passphrase_env = "HC_KEYSTORE"\n')
    config = load_config(path, {"insecure_dev_plaintext": True})
    assert (config.key_set, config.keystore_dir, config.keystore, config.key_set_check_interval) == (
        tmp_path / "ks.json", tmp_path / "store", "file", 2.0)
    assert config.signing_key is None
    path.write_text(path.read_text().replace('key_set = "ks.json"\n', ""))
    with pytest.raises(ConfigError, match=r"missing settings: signing_key \(or key_set\)"):
        load_config(path, {"insecure_dev_plaintext": True})
    with pytest.raises(ConfigError, match="not both"):
        _config(tmp_path, signing_key=tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="needs keys.keystore_dir"):
        _config(tmp_path, keystore_dir=None)
    with pytest.raises(ConfigError, match="needs keys.pkcs11_module and keys.pkcs11_token"):
        _config(tmp_path, keystore="pkcs11")
    with pytest.raises(ConfigError, match='must be "file" or "pkcs11"'):
        _config(tmp_path, keystore="vault")


def test_build_domain_issues_with_the_rotating_signer(tmp_path, rotation):
    from issuer import app

    store, a, b, ks, path = rotation
    save_key_set(path, ks)
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match="wrong_passphrase"):
        app.open_rotating_signer(config, b"not the passphrase")
    with pytest.raises(ConfigError, match="exceeds the key set's max_code_validity"):
        app.open_rotating_signer(_config(tmp_path, code_validity=8 * DAY), PASSPHRASE)
    rotating, close_keystore = app.open_rotating_signer(config, PASSPHRASE)
    index, codes, close = app.build_domain(config, signer=rotating, vault_secret=b"V" * 32)

    async def body():
        mid = await index.register_resident(resident(1), now=T - DAY)
        first = await codes.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=T - DAY)
        second = await codes.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=T)
        with pytest.raises(
            NoSigningKey, match="no key that signs at 2026-09-22T08:00:00Z; key [0-9a-f]+ signs from 2026-09-23"
        ):
            await codes.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=T - 61 * DAY)
        return first, second

    try:
        first, second = asyncio.run(body())
    finally:
        close()
        close_keystore()
    assert (first.ref.kid, second.ref.kid) == (a.kid, b.kid)
    keyring = Keyring(ks.trusted_keys(T))
    for code in (first, second):
        assert hc.verify(code.text, keyring, now=T).serial == 0

    # After a restart the cap counts what the store already holds (seeded from its serials).
    rotating, close_keystore = app.open_rotating_signer(config, PASSPHRASE)
    index, codes, close = app.build_domain(config, signer=rotating, vault_secret=b"V" * 32)
    close()
    close_keystore()
    assert rotating.codes_signed() == {a.kid: 1, b.kid: 1}


def test_open_keystore_from_configuration_values(tmp_path):
    assert isinstance(open_keystore("file", secret=PASSPHRASE, directory=tmp_path), FileKeystore)
    with pytest.raises(ValueError, match="unknown keystore kind"):
        open_keystore("cloud", secret=None)
    with pytest.raises(ValueError, match="needs a directory"):
        open_keystore("file", secret=PASSPHRASE)
    with pytest.raises(ValueError, match="user PIN"):
        open_keystore("pkcs11", secret=None, module="/x.so", token="t")
    assert load_key_set  # the file helpers are public API


def test_serve_reloads_the_key_set_on_sighup(tmp_path, rotation, caplog):
    """``app.run`` with ``key_set``: SIGHUP makes the serving issuer re-read the key set at once."""
    import signal

    from issuer import app, auth

    caplog.set_level(logging.INFO, logger="keys.lifecycle")
    store, a, b, ks, path = rotation
    save_key_set(path, ProvinceKeySet("33", ks.policy, (ks.find(a.kid),), revision=1))
    write_private(tmp_path / "vault.key", os.urandom(32).hex() + "\n")  # secrets are owner-only (0600)
    write_private(tmp_path / "callers.toml", f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key("k")}"\n')
    config = _config(tmp_path, listen="127.0.0.1:0", key_set_check_interval=3600.0)  # only SIGHUP will do
    seen = []

    async def operate(server) -> None:
        try:
            save_key_set(path, ks)
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(500):
                if "reloaded: revision 2" in caplog.text:
                    seen.append(True)
                    break
                await asyncio.sleep(0.01)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # run() handles it: graceful shutdown

    async def main() -> None:
        await app.run(config, signing_key_passphrase=PASSPHRASE,
                      ready=lambda server: asyncio.ensure_future(operate(server)))

    asyncio.run(main())
    assert seen == [True]
