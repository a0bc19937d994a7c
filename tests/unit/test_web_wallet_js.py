"""The web wallet's JavaScript (webwallet/src) against the project's vectors, under Node's test runner.

``webwallet/test/vectors.test.js`` rebuilds every well-formed presentation vector byte for byte,
checks the device signing input and the proof-of-possession input against the vectors and
docs/wallet.md's worked example, and runs the page's credential check over the valid and bad
credentials; ``webwallet/test/wallet.test.js`` runs the wallet's logic against a test issuer
(idempotency keys across a lost answer, the renewal policy, a revoked or foreign credential).
``./dev setup`` installs Node.js and the npm packages (``npm ci``).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

WEBWALLET = pathlib.Path(__file__).resolve().parents[2] / "webwallet"


def test_the_web_wallet_javascript_passes_its_vector_tests():
    node = shutil.which("node")
    assert node, "Node.js is missing: ./dev setup installs it"
    assert (WEBWALLET / "node_modules" / "cborg").is_dir(), "the web wallet's npm packages are missing: ./dev setup"
    run = subprocess.run([node, "--test", "test/"], cwd=WEBWALLET, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 16" in run.stdout, run.stdout[-2000:]
