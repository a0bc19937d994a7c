"""Keys inside a PKCS#11 token (an HSM), through python-pkcs11 (the ``hsm`` extra).

Keys are generated *in* the token as token objects, private halves
``SENSITIVE``, not ``EXTRACTABLE``, ``PRIVATE``, ``SIGN`` only: the private key
never leaves the device, and nothing here can read it. A handle's ``id`` is the
hex of the pair's ``CKA_ID`` (16 random bytes); its kid is the default kid of
the public key read back from the token.

Algorithms:

* **ES256**: P-256 pair (``CKM_EC_KEY_PAIR_GEN``); the digest is computed here
  and signed with ``CKM_ECDSA``, because SoftHSM 2.6 (and many HSMs) lack
  ``CKM_ECDSA_SHA256``. PKCS#11 returns ``r || s``, the COSE form, already.
* **EdDSA**: Ed25519 pair (``CKM_EC_EDWARDS_KEY_PAIR_GEN``), ``CKM_EDDSA``
  over the message. SoftHSM 2.6 built on OpenSSL 1.1.1+ has both; a token
  without them refuses with ``unsupported_algorithm``.
* **SM2** is not offered: PKCS#11 has no standard SM2 mechanism (vendors use
  private ones) and SoftHSM has none. SM2 keys live in the file keystore.

Sessions: one read-write session per keystore, logged in as the user, and a
lock around every call on it (a PKCS#11 session runs one operation at a time).
A session lost to a token reset is reopened once, with the PIN kept in this
object (never in a repr, log or error). ``UserAlreadyLoggedIn`` (another
keystore object in this process already logged in: PKCS#11 logins are per
application) is accepted.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from healthcode import Algorithm, VerificationKey, load_public_key_der
from healthcode.errors import HealthCodeError

from ..errors import HsmError, KeyManagementError, KeyNotFound, UnsupportedKeyAlgorithm, WrongPin
from .base import KeyHandle, Keystore, KeystoreSigner, check_label

__all__ = ["Pkcs11Keystore", "Pkcs11Signer"]

_T = TypeVar("_T")
_ED25519_OID = "1.3.101.112"
_P256_NAME = "secp256r1"


def _pkcs11():
    try:
        import pkcs11  # the `hsm` extra
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise HsmError("the PKCS#11 keystore needs the 'hsm' extra: pip install 'healthcode[hsm]'") from None
    return pkcs11


def _hsm_error(exc: BaseException, what: str) -> KeyManagementError:
    """Our error for a python-pkcs11 exception: its class name only (its text is the token's)."""
    pkcs11 = _pkcs11()
    if isinstance(exc, (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange)):
        return WrongPin(f"the token refused the PIN ({type(exc).__name__})")
    if isinstance(exc, pkcs11.PinLocked):
        return WrongPin("the token's user PIN is locked")
    if isinstance(exc, (pkcs11.MechanismInvalid, pkcs11.FunctionNotSupported)):
        return UnsupportedKeyAlgorithm(f"the token cannot {what} ({type(exc).__name__})")
    return HsmError(f"cannot {what}: {type(exc).__name__}")


class Pkcs11Signer(KeystoreSigner):
    """Signs inside the token. Holds object handles, never key material."""

    __slots__ = ("kid", "algorithm", "label", "_store", "_id", "_public", "_cached")

    def __init__(self, store: "Pkcs11Keystore", handle: KeyHandle, public: VerificationKey) -> None:
        self._store = store
        self._id = bytes.fromhex(handle.id)
        self._public = public
        self.kid = handle.kid
        self.algorithm = handle.algorithm
        self.label = handle.label
        self._cached: tuple[Any, Any] = (None, None)  # (session, private key object) of the last sign

    def sign(self, data: bytes) -> bytes:
        pkcs11 = _pkcs11()
        if self.algorithm is Algorithm.ES256:
            message, mechanism = hashlib.sha256(data).digest(), pkcs11.Mechanism.ECDSA
        else:
            message, mechanism = data, pkcs11.Mechanism.EDDSA

        def op(session: Any) -> bytes:
            cached_session, key = self._cached
            if cached_session is not session:  # first use, or the session was reopened
                key = self._store._find(session, pkcs11.ObjectClass.PRIVATE_KEY, self._id)
                self._cached = (session, key)
            return key.sign(message, mechanism=mechanism)

        signature = self._store._call(op, f"sign with key {self.kid.hex()}")
        if len(signature) != 64:
            raise HsmError(f"the token returned a {len(signature)}-byte signature, not 64")
        return signature

    def public_key(self) -> VerificationKey:
        return self._public

    def __repr__(self) -> str:
        return f"<Pkcs11Signer {self.algorithm.value} kid={self.kid.hex()} label={self.label!r}>"

    def __reduce__(self):
        raise TypeError("a signer cannot be pickled")


class Pkcs11Keystore(Keystore):
    """Keys in the PKCS#11 token labelled ``token_label`` of the module at ``module_path``.

    ``pin`` is the token's user PIN (from the configuration or environment,
    read by the shell). Opens and logs in a session at once, so a wrong PIN
    fails here (``wrong_pin``).
    """

    backend = "pkcs11"

    def __init__(self, module_path: os.PathLike | str, token_label: str, pin: str | bytes) -> None:
        pkcs11 = _pkcs11()
        self.module_path = str(module_path)
        self.token_label = token_label
        self.__pin = pin.decode("utf-8") if isinstance(pin, bytes) else pin
        self._lock = threading.RLock()
        self._session: Any = None
        try:
            self._token = pkcs11.lib(self.module_path).get_token(token_label=token_label)
        except pkcs11.NoSuchToken:
            raise HsmError(f"no token labelled {token_label!r} in {self.module_path}") from None
        except pkcs11.PKCS11Error as exc:
            raise _hsm_error(exc, f"open the PKCS#11 module {self.module_path}") from None
        with self._lock:
            self._open()

    def __repr__(self) -> str:
        return f"<Pkcs11Keystore token={self.token_label!r} module={self.module_path!r}>"

    # -- the session

    def _open(self) -> None:
        pkcs11 = _pkcs11()
        try:
            try:
                self._session = self._token.open(rw=True, user_pin=self.__pin)
            except pkcs11.UserAlreadyLoggedIn:  # this application is logged in already
                self._session = self._token.open(rw=True)
        except pkcs11.PKCS11Error as exc:
            self._session = None
            raise _hsm_error(exc, f"log in to token {self.token_label!r}") from None

    def _call(self, op: Callable[[Any], _T], what: str) -> _T:
        """Run ``op(session)`` under the lock; reopen a lost session once."""
        pkcs11 = _pkcs11()
        lost = (pkcs11.SessionClosed, pkcs11.SessionHandleInvalid, pkcs11.DeviceRemoved, pkcs11.TokenNotPresent,
                pkcs11.UserNotLoggedIn)
        with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._open()
                try:
                    return op(self._session)
                except KeyManagementError:
                    raise
                except lost as exc:
                    self._session = None
                    if attempt == 2:
                        raise _hsm_error(exc, what) from None
                except pkcs11.PKCS11Error as exc:
                    raise _hsm_error(exc, what) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                try:
                    self._session.close()
                except Exception:  # already gone
                    pass
                self._session = None

    # -- helpers (called with the lock held)

    @staticmethod
    def _find(session: Any, object_class: Any, key_id: bytes) -> Any:
        pkcs11 = _pkcs11()
        objects = list(session.get_objects({pkcs11.Attribute.CLASS: object_class, pkcs11.Attribute.ID: key_id}))
        if len(objects) != 1:
            raise KeyNotFound(f"the token has {len(objects)} objects with id {key_id.hex()}, not one")
        return objects[0]

    @staticmethod
    def _public_key_of(public: Any) -> VerificationKey:
        pkcs11 = _pkcs11()
        from pkcs11.util.ec import encode_ec_public_key

        key_type = public[pkcs11.Attribute.KEY_TYPE]
        try:
            if key_type == pkcs11.KeyType.EC:
                return load_public_key_der(encode_ec_public_key(public))
            if key_type == pkcs11.KeyType.EC_EDWARDS:
                point = bytes(public[pkcs11.Attribute.EC_POINT])
                if len(point) == 34 and point[:2] == b"\x04\x20":  # DER OCTET STRING (PKCS#11 3.0)
                    point = point[2:]
                spki = ed25519.Ed25519PublicKey.from_public_bytes(point).public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
                return load_public_key_der(spki)
        except (HealthCodeError, ValueError) as exc:
            raise UnsupportedKeyAlgorithm(f"unusable public key on the token: {exc}") from None
        raise UnsupportedKeyAlgorithm(f"unsupported key type {key_type!r} on the token")

    def _handle(self, key_id: bytes, label: str, public: VerificationKey) -> KeyHandle:
        return KeyHandle(backend=self.backend, id=key_id.hex(), kid=public.key_id(), algorithm=public.algorithm,
                         label=label)

    # -- the interface

    def generate(self, algorithm: Algorithm, *, label: str) -> KeyHandle:
        """Generate a non-extractable key pair of ``algorithm`` inside the token."""
        pkcs11 = _pkcs11()
        from pkcs11.util.ec import encode_named_curve_parameters

        algorithm = Algorithm(algorithm)
        label = check_label(label)
        if algorithm is Algorithm.ES256:
            key_type, curve, mechanism = pkcs11.KeyType.EC, _P256_NAME, pkcs11.Mechanism.EC_KEY_PAIR_GEN
        elif algorithm is Algorithm.EDDSA:
            key_type, curve, mechanism = (pkcs11.KeyType.EC_EDWARDS, _ED25519_OID,
                                          pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
        else:
            raise UnsupportedKeyAlgorithm("SM2 keys cannot live in a PKCS#11 token here: use the file keystore")
        key_id = os.urandom(16)
        A = pkcs11.Attribute
        private_template = {
            A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False,
            A.SIGN: True, A.DECRYPT: False, A.UNWRAP: False, A.DERIVE: False,
        }
        public_template = {A.TOKEN: True, A.VERIFY: True, A.ENCRYPT: False, A.WRAP: False, A.DERIVE: False}

        def op(session: Any) -> KeyHandle:
            params = session.create_domain_parameters(
                key_type, {A.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True)
            public, _private = params.generate_keypair(
                id=key_id, label=label, store=True, mechanism=mechanism,
                private_template=private_template, public_template=public_template)
            return self._handle(key_id, label, self._public_key_of(public))

        return self._call(op, f"generate an {algorithm.value} key")

    def list(self) -> tuple[KeyHandle, ...]:
        """Every key pair on the token that signs with ES256 or EdDSA (others are skipped)."""
        pkcs11 = _pkcs11()

        def op(session: Any) -> tuple[KeyHandle, ...]:
            handles = []
            # the search ends before the next one starts: one find operation per session at a time
            privates = list(session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}))
            for private in privates:
                key_id = bytes(private[pkcs11.Attribute.ID])
                if not key_id:
                    continue
                try:
                    public = self._public_key_of(self._find(session, pkcs11.ObjectClass.PUBLIC_KEY, key_id))
                except (KeyNotFound, UnsupportedKeyAlgorithm):
                    continue
                handles.append(self._handle(key_id, private[pkcs11.Attribute.LABEL], public))
            return tuple(sorted(handles, key=lambda h: (h.label, h.id)))

        return self._call(op, "list keys")

    def _checked_public(self, session: Any, handle: KeyHandle) -> VerificationKey:
        pkcs11 = _pkcs11()
        try:
            key_id = bytes.fromhex(handle.id)
        except ValueError:
            raise KeyNotFound("not a PKCS#11 keystore key id") from None
        public = self._public_key_of(self._find(session, pkcs11.ObjectClass.PUBLIC_KEY, key_id))
        if public.key_id() != handle.kid or public.algorithm is not handle.algorithm:
            raise KeyNotFound(f"token object {handle.id} is not the key the handle names")
        return public

    def public_key(self, handle: KeyHandle) -> VerificationKey:
        handle = self._check_handle(handle)
        return self._call(lambda session: self._checked_public(session, handle), "read a public key")

    def load_signer(self, handle: KeyHandle) -> Pkcs11Signer:
        pkcs11 = _pkcs11()
        handle = self._check_handle(handle)

        def op(session: Any) -> Pkcs11Signer:
            public = self._checked_public(session, handle)
            self._find(session, pkcs11.ObjectClass.PRIVATE_KEY, bytes.fromhex(handle.id))
            return Pkcs11Signer(self, handle, public)

        return self._call(op, f"load key {handle.kid.hex()}")

    def destroy(self, handle: KeyHandle) -> None:
        pkcs11 = _pkcs11()
        handle = self._check_handle(handle)

        def op(session: Any) -> None:
            self._checked_public(session, handle)
            key_id = bytes.fromhex(handle.id)
            self._find(session, pkcs11.ObjectClass.PRIVATE_KEY, key_id).destroy()
            self._find(session, pkcs11.ObjectClass.PUBLIC_KEY, key_id).destroy()

        self._call(op, f"destroy key {handle.kid.hex()}")
