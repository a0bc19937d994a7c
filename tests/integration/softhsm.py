"""A throwaway SoftHSM2 token for the PKCS#11 tests (the keystore's and the wallet's).

Importing this module skips the importing test module, with the reason, when
python-pkcs11 or SoftHSM2 is absent. :func:`softhsm_token` makes a fresh
token in a temporary directory (``SOFTHSM2_CONF`` pointing at a config whose
``directories.tokendir`` is that directory; ``softhsm2-util --init-token
--free``), yields the module path, and afterwards unloads the library and
restores the environment, so the next user initialises with its own config.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

pkcs11 = pytest.importorskip("pkcs11", reason="PKCS#11 needs python-pkcs11 (the 'hsm' extra)")

SOFTHSM_UTIL = shutil.which("softhsm2-util")
MODULE_CANDIDATES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so", "/usr/lib64/pkcs11/libsofthsm2.so"]
MODULE = next((p for p in MODULE_CANDIDATES if os.path.exists(p)), None)
if SOFTHSM_UTIL is None or MODULE is None:
    pytest.skip("SoftHSM2 is not installed (softhsm2-util and libsofthsm2.so are needed)", allow_module_level=True)


@contextlib.contextmanager
def softhsm_token(root: pathlib.Path, *, label: str, so_pin: str, pin: str) -> Iterator[str]:
    """A fresh token ``label`` under ``root``; yields the PKCS#11 module path."""
    assert SOFTHSM_UTIL is not None and MODULE is not None
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read by softhsm2-util, the library and child processes
    try:
        subprocess.run([SOFTHSM_UTIL, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin],
                       check=True, capture_output=True, timeout=60)
        yield MODULE
    finally:
        with contextlib.suppress(Exception):
            pkcs11.unload(MODULE)
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
