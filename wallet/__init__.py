"""The reference wallet: what a phone app does to hold and show a live (dynamic) health code.

A working model for app developers on any platform (``docs/wallet.md`` states
the steps and the bytes):

* :mod:`wallet.device`: the device key behind one small protocol
  (:class:`~wallet.device.DeviceKey`): a passphrase-encrypted PKCS#8 file, or
  a PKCS#11 token standing in for the phone's secure element;
* :mod:`wallet.state`: the credential kept for offline use in an owner-only
  state file, written atomically;
* :mod:`wallet.remote`: enrolment with proof of possession and renewal over
  the issuer's gRPC API;
* :mod:`wallet.core`: :class:`~wallet.core.Wallet`, presentations offline
  and the renewal policy;
* :mod:`wallet.display`: the changing QR in a terminal and as a PNG;
* ``healthcode-wallet`` (:mod:`wallet.__main__`): the command line.

Every failure is a :class:`~wallet.errors.WalletError` with a stable reason.
"""

from .core import RenewalOutcome, RenewalPolicy, Wallet
from .device import DeviceKey
from .errors import WalletError, WalletReason

__all__ = ["Wallet", "RenewalPolicy", "RenewalOutcome", "DeviceKey", "WalletError", "WalletReason"]
