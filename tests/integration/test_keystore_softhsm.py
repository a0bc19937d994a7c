"""The PKCS#11 keystore against a real SoftHSM2 token made for this module.

The module creates its own token in a temporary directory (``SOFTHSM2_CONF``
pointing at a config whose ``directories.tokendir`` is that directory;
``softhsm2-util --init-token --free``), then:

* generates ES256 and EdDSA keys *in* the token and signs health codes through
  the PKCS#11 signer; ``healthcode.verify`` accepts them;
* checks the private keys are sensitive and never extractable (reading their
  value is refused by the token);
* signs from many threads at once through one keystore;
* rotates between two HSM keys inside a real ``CodeIssuer``;
* refuses a wrong PIN, SM2, and a handle naming another key; destroys keys.

Skipped, with the reason, only if SoftHSM2 or python-pkcs11 is absent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

pkcs11 = pytest.importorskip("pkcs11", reason="the PKCS#11 keystore needs python-pkcs11 (the 'hsm' extra)")

from tests.integration.softhsm import softhsm_token  # noqa: E402

import healthcode as hc  # noqa: E402
from healthcode import Algorithm, Keyring  # noqa: E402
from keys.errors import HsmError, KeyNotFound, KeyReason, UnsupportedKeyAlgorithm, WrongPin  # noqa: E402
from keys.keystore import KeyHandle, Pkcs11Keystore  # noqa: E402
from keys.lifecycle import ProvinceKeySet  # noqa: E402
from keys.rotating_signer import RotatingSigner  # noqa: E402


UTC = dt.timezone.utc
T = dt.datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
LABEL = "hc-test"
SO_PIN = "87654321"
PIN = "123456"
SUBJECT = hc.main_index_id_from_bytes(bytes(range(16)))


@pytest.fixture(scope="module")
def token(tmp_path_factory):
    """A fresh SoftHSM2 token in a temporary directory; the library is unloaded afterwards."""
    with softhsm_token(tmp_path_factory.mktemp("softhsm"), label=LABEL, so_pin=SO_PIN, pin=PIN) as module:
        yield module


@pytest.fixture
def hsm(token):
    store = Pkcs11Keystore(token, LABEL, PIN)
    try:
        yield store
    finally:
        store.close()


def sign_at(signer, at: dt.datetime, serial: int = 1) -> str:
    claims = hc.CodeClaims(province="33", subject=SUBJECT, serial=serial, issued_at=at, expires_at=at + 7 * DAY)
    return hc.sign_code(claims, signer)


def keyring_of(*signers) -> Keyring:
    return Keyring([hc.TrustedKey(kid=s.kid, province="33", public_key=s.public_key(), use_from=T - DAY,
                                  use_until=T + DAY, verify_until=T + 8 * DAY) for s in signers])


@pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.EDDSA], ids=str)
def test_hsm_keys_sign_health_codes_that_verify(hsm, alg):
    handle = hsm.generate(alg, label=f"33-{alg.value}")
    assert (handle.backend, handle.algorithm) == ("pkcs11", alg) and len(bytes.fromhex(handle.id)) == 16
    assert handle in hsm.list()
    signer = hsm.load_signer(handle)
    assert signer.kid == handle.kid == hsm.public_key(handle).key_id()
    for serial in range(5):
        code = sign_at(signer, T, serial)
        verified = hc.verify(code, keyring_of(signer), now=T)
        assert (verified.kid, verified.algorithm, verified.serial) == (handle.kid, alg.value, serial)
    tampered = sign_at(signer, T)[:-4] + "0000"
    assert not hc.check(tampered, keyring_of(signer), now=T).valid


def test_private_keys_are_sensitive_and_never_extractable(hsm, token):
    handle = hsm.generate(Algorithm.ES256, label="33-extract")
    A = pkcs11.Attribute
    session = pkcs11.lib(token).get_token(token_label=LABEL).open()  # same application: already logged in
    try:
        (private,) = session.get_objects({A.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, A.ID: bytes.fromhex(handle.id)})
        assert private[A.TOKEN] and private[A.PRIVATE] and private[A.SIGN]
        assert private[A.SENSITIVE] and private[A.ALWAYS_SENSITIVE]
        assert not private[A.EXTRACTABLE] and private[A.NEVER_EXTRACTABLE]
        with pytest.raises(pkcs11.AttributeSensitive):
            private[A.VALUE]
        with pytest.raises(pkcs11.PKCS11Error):  # and it cannot be made extractable afterwards
            private[A.EXTRACTABLE] = True
        assert not private[A.EXTRACTABLE]
    finally:
        session.close()


def test_many_threads_sign_through_one_session(hsm):
    handle = hsm.generate(Algorithm.ES256, label="33-threads")
    signer = hsm.load_signer(handle)
    ring = keyring_of(signer)
    codes: list[str] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(25):
                codes.append(sign_at(signer, T, offset * 100 + i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(codes) == 200
    assert len({hc.verify(code, ring, now=T).serial for code in codes}) == 200


def test_an_issuer_rotates_between_hsm_keys(hsm, tmp_path):
    from issuer.documents import make_resident_id, parse_document
    from issuer.index import ResidentIndex
    from issuer.issuance import CodeIssuer
    from issuer.privacy import IdentifierVault
    from issuer.store import SQLiteStore

    a = hsm.generate(Algorithm.ES256, label="33-rot-a")
    b = hsm.generate(Algorithm.EDDSA, label="33-rot-b")
    ks = ProvinceKeySet("33")
    ks = ks.add_prepublished(hsm.public_key(a), handle=a, use_from=T - 30 * DAY, now=T - 30 * DAY)
    ks = ks.add_prepublished(hsm.public_key(b), handle=b, use_from=T, now=T - 10 * DAY)
    rotating = RotatingSigner(hsm, ks)
    moments = [T + dt.timedelta(milliseconds=ms) for ms in range(-500, 500, 20)]

    async def body():
        store = SQLiteStore(tmp_path / "issuer.db")
        try:
            index = ResidentIndex(store=store, vault=IdentifierVault(blind_index_key=b"I" * 32,
                                                                     encryption_key=b"E" * 32))
            issuer = CodeIssuer(store=store, province="33", signer_for=rotating.signer_for)
            doc = parse_document("resident_id", make_resident_id("330102", dt.date(1980, 1, 1), 7), today=T.date())
            mid = await index.register_resident(doc, now=T - DAY)
            return await asyncio.gather(*(issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None,
                                                            now=now) for now in moments))
        finally:
            store.close()

    codes = asyncio.run(body())
    ring = Keyring(ks.trusted_keys(T))
    for now, code in zip(moments, codes):
        assert hc.verify(code.text, ring, now=T + DAY).kid == (a.kid if now < T else b.kid)
    assert sorted(c.ref.serial for c in codes if c.ref.kid == b.kid) == list(range(25))


def test_refusals_name_the_problem_without_the_pin(token, hsm):
    with pytest.raises(UnsupportedKeyAlgorithm, match="SM2 keys cannot live in a PKCS#11 token"):
        hsm.generate(Algorithm.SM2_SM3, label="33-sm2")
    a = hsm.generate(Algorithm.ES256, label="33-ref-a")
    b = hsm.generate(Algorithm.ES256, label="33-ref-b")
    with pytest.raises(KeyNotFound, match="not the key the handle names"):
        hsm.load_signer(KeyHandle(backend="pkcs11", id=b.id, kid=a.kid, algorithm=a.algorithm, label="x"))
    assert PIN not in repr(hsm) and PIN not in repr(hsm.load_signer(a))
    hsm.destroy(b)
    assert b not in hsm.list() and a in hsm.list()
    with pytest.raises(KeyNotFound):
        hsm.load_signer(b)
    with pytest.raises(HsmError, match="no token labelled 'nope'"):
        Pkcs11Keystore(token, "nope", PIN)


def test_a_wrong_pin_is_refused(token):
    # No session of this application is logged in here (each test closes its keystore), so the
    # token really checks the PIN: PKCS#11 logins are per application, not per session.
    with pytest.raises(WrongPin) as info:
        Pkcs11Keystore(token, LABEL, "000000")
    assert info.value.reason is KeyReason.WRONG_PIN and "000000" not in str(info.value)
    Pkcs11Keystore(token, LABEL, PIN).close()  # the right one still works (not locked out)
