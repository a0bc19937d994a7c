"""The wallet: a device key, a credential kept for offline use, presentations, and renewal.

:class:`Wallet` is what a phone app does, with every side effect named:

* :meth:`Wallet.create` makes the device key and the state file (``init``);
* :meth:`Wallet.enrol`: ``CreateChallenge``, the device signs
  :func:`healthcode.presentation.proof_of_possession_input`,
  ``IssueCredential``; the credential is kept only if it binds this device's
  key;
* :meth:`Wallet.present`: the presentation of the current 30-second step,
  offline, with the time passed in;
* :meth:`Wallet.renew` (``RenewCode`` on the credential, which keeps the
  device binding) and :meth:`Wallet.renew_if_due` under a
  :class:`RenewalPolicy`.

Enrolment and renewal persist their idempotency key *before* the call
(``pending`` in the state file) and clear it in the write that stores the
result, so a crash or a lost answer never mints two credentials: the next
attempt sends the same key and gets the first one back. A definitive refusal
clears it (nothing was minted). Time is always a parameter.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

from healthcode.algorithms import Algorithm
from healthcode.presentation import encode_presentation, proof_of_possession_input, step_at
from issuer.api.common_pb2 import IssuedCode
from issuer.documents import Document
from keys.keystore import ScryptParams

from .device import DEFAULT_SCRYPT, DeviceKeyConfig, KeystoreDeviceKey, create_device_key, open_device_key
from .errors import (
    AlreadyInitialised,
    CredentialExpired,
    NotEnrolled,
    Offline,
    WalletError,
)
from .remote import WalletClient, new_idempotency_key
from .state import Credential, Failure, IssuerSettings, Pending, StateFile, WalletState

__all__ = ["Wallet", "RenewalPolicy", "RenewalOutcome"]


@dataclass(frozen=True)
class RenewalPolicy:
    """When the wallet renews on its own.

    ``renew_below``: renew once less than this fraction of the credential's
    validity remains (0.5: a 7-day credential is renewed from day 3.5 on, so
    a phone offline for 3 days still never shows an expired code).
    ``retry_after``: after a failed attempt, wait this long before the next
    automatic one (a manual ``renew`` always tries).
    """

    renew_below: float = 0.5
    retry_after: dt.timedelta = dt.timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not 0.0 < self.renew_below < 1.0:
            raise ValueError("renew_below must be a fraction between 0 and 1")

    def renew_at(self, credential: Credential) -> dt.datetime:
        """The moment from which the credential is due for renewal."""
        return credential.expires_at - credential.validity * self.renew_below

    def due(self, credential: Credential, now: dt.datetime, last_failure: Failure | None = None) -> bool:
        if now < self.renew_at(credential):
            return False
        return last_failure is None or now >= last_failure.at + self.retry_after


@dataclass(frozen=True)
class RenewalOutcome:
    """What :meth:`Wallet.renew_if_due` did: ``renewed`` (a new credential), or why not."""

    renewed: bool
    credential: Credential
    error: WalletError | None = None


ClientFactory = Callable[[IssuerSettings], WalletClient]


class Wallet:
    """One wallet directory and its unlocked device key. Close it (or use ``with``) to release the key."""

    def __init__(self, directory: os.PathLike[str] | str, device: KeystoreDeviceKey) -> None:
        self.files = StateFile(directory)
        self.device = device
        self._point = device.public_point()

    # -- creating and opening

    @classmethod
    def create(cls, directory: os.PathLike[str] | str, kind: str, secret: bytes | str | None, *,
               module: str | None = None, token: str | None = None,
               scrypt: ScryptParams = DEFAULT_SCRYPT, algorithm: Algorithm = Algorithm.ES256) -> "Wallet":
        """A new wallet in ``directory`` (0700) with a new device key; refuses an existing wallet.

        ``secret`` is the key file's passphrase (``kind`` ``"file"``) or the
        token's user PIN (``"pkcs11"``, with ``module`` and ``token``).
        ``algorithm``: ES256 (P-256) or SM2-SM3 (file keystore only; the
        province's issuer must allow SM2 device keys).
        """
        files = StateFile(directory)
        if files.exists():
            raise AlreadyInitialised(f"{files.path} exists: this phone already has a wallet")
        files.ensure_directory()
        with files.locked():
            if files.exists():
                raise AlreadyInitialised(f"{files.path} exists: this phone already has a wallet")
            config, device = create_device_key(kind, files.directory, secret, module=module, token=token,
                                               scrypt=scrypt, algorithm=algorithm)
            files.write(WalletState(device=config))
        return cls(directory, device)

    @classmethod
    def open(cls, directory: os.PathLike[str] | str, secret: bytes | str | None) -> "Wallet":
        """The wallet in ``directory``, its device key unlocked with ``secret`` (passphrase or PIN)."""
        files = StateFile(directory)
        state = files.read()
        return cls(directory, open_device_key(state.device, files.directory, secret))

    def close(self) -> None:
        self.device.close()

    def __enter__(self) -> "Wallet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading

    @property
    def directory(self) -> pathlib.Path:
        return self.files.directory

    def state(self) -> WalletState:
        return self.files.read()

    @property
    def device_config(self) -> DeviceKeyConfig:
        return self.state().device

    def credential(self) -> Credential:
        """The credential held; :class:`NotEnrolled` before the first enrolment."""
        text = self.state().credential
        if text is None:
            raise NotEnrolled("this wallet holds no credential yet: run `healthcode-wallet enrol`")
        return Credential.parse(text, self._point)

    # -- presenting (offline)

    def present(self, now: dt.datetime) -> str:
        """The presentation (``EHCD:...``) of the time step containing ``now``; never touches the network.

        Raises :class:`CredentialExpired` once the credential has expired: a
        terminal would refuse it, so the wallet says so instead of showing it.
        """
        credential = self.credential()
        if now >= credential.expires_at:
            raise CredentialExpired("the credential has expired: renew it (healthcode-wallet renew) or enrol again")
        return encode_presentation(credential.text, step_at(now), self.device)

    # -- the issuer

    def enrol(self, client: WalletClient, document: Document, *, now: dt.datetime,
              issuer: IssuerSettings | None = None) -> Credential:
        """Enrol this device for the resident holding ``document``; keep and return the credential.

        Replaces a credential held before (the issuer revokes the old one as
        superseded: one live phone credential per resident).
        """
        with self.files.locked():
            state = self.files.read()
            pending = state.pending if state.pending and state.pending.operation == "enrol" else \
                Pending("enrol", new_idempotency_key())
            state = state.with_(pending=pending, issuer=issuer or state.issuer)
            self.files.write(state)

            def issue() -> IssuedCode:
                challenge = client.create_challenge(document)
                proof = self.device.sign(proof_of_possession_input(challenge, self.device.public_key()))
                return client.issue_credential(document, challenge=challenge, public_point=self._point,
                                               proof=proof, idempotency_key=pending.idempotency_key,
                                               algorithm=self.device.algorithm)

            return self._keep(state, issue, now)

    def renew(self, client: WalletClient, *, now: dt.datetime) -> Credential:
        """Renew the credential now (``RenewCode``); keep and return the new one.

        Raises :class:`Offline` (the old credential stays in use until it
        expires; the idempotency key is kept for the next attempt),
        :class:`CredentialRevoked` (enrol again), or another
        :class:`WalletError`.
        """
        with self.files.locked():
            state = self.files.read()
            current = self.credential()
            pending = state.pending
            if pending is None or pending.operation != "renew" or pending.serial != current.serial:
                pending = Pending("renew", new_idempotency_key(), current.serial)
            state = state.with_(pending=pending)
            self.files.write(state)
            return self._keep(state, lambda: client.renew_credential(current.text,
                                                                 idempotency_key=pending.idempotency_key), now)

    def renew_if_due(self, connect: ClientFactory, *, now: dt.datetime,
                     policy: RenewalPolicy = RenewalPolicy()) -> RenewalOutcome:
        """Renew when ``policy`` says so; never raises for a failed attempt (see ``outcome.error``)."""
        state = self.state()
        credential = self.credential()
        if state.issuer is None or not policy.due(credential, now, state.last_failure):
            return RenewalOutcome(False, credential)
        try:
            client = connect(state.issuer)
            try:
                return RenewalOutcome(True, self.renew(client, now=now))
            finally:
                client.close()
        except WalletError as exc:
            return RenewalOutcome(False, credential, exc)
        except OSError as exc:  # the CA or credentials files named in the state are gone
            return RenewalOutcome(False, credential, Offline(f"cannot connect to the issuer: {exc}"))

    def _keep(self, state: WalletState, call: Callable[[], IssuedCode], now: dt.datetime) -> Credential:
        """Run the issuer ``call`` (its idempotency key already persisted in ``state.pending``); keep the
        credential it returns, clearing ``pending`` in the same write; record a failure and re-raise."""
        try:
            credential = Credential.parse(call().code_text, self._point)
        except WalletError as exc:
            self._record_failure(state, exc, now)
            raise
        self.files.write(state.with_(credential=credential.text, pending=None, last_failure=None))
        return credential

    def _record_failure(self, state: WalletState, error: WalletError, now: dt.datetime) -> None:
        """Remember the failure for ``status``; drop the idempotency key after a definitive refusal."""
        keep = state.pending if isinstance(error, Offline) else None
        self.files.write(state.with_(pending=keep, last_failure=Failure(error.reason.value, error.detail, now)))
