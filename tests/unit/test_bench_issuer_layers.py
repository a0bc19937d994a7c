"""The issuer-layers benchmark's stand-in code issuer takes the call the gRPC servicer makes.

The servicer's IssueCode asks ``issue_code(..., replace_live=True)`` (one live static
code per resident, issue 13); the stand-in once lacked ``replace_live``, so every
IssueCode against the ``canned``, ``burn`` and ``signonly`` layers failed with a
TypeError inside the server (found by mypy: the stand-in did not fit ``CodeIssuerPort``).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import healthcode as hc
from issuer.model import IssuedCode
from tools.bench.issuer_layers import StandInCodes

NOW = dt.datetime(2026, 12, 7, 4, 17, 30, 500, tzinfo=dt.timezone.utc)
MAIN_INDEX_ID = hc.main_index_id_from_bytes(bytes(range(16)))
SIGNER = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256))


def _issue(mode: str, *, servicer_call: bool) -> IssuedCode:
    """Issue one code from a fresh stand-in: as the servicer asks (``replace_live=True``) or as a library would."""
    codes = StandInCodes(mode, "33", SIGNER)
    if servicer_call:
        return asyncio.run(codes.issue_code(caller="bench", main_index_id=MAIN_INDEX_ID, idempotency_key="bench-1",
                                            now=NOW, replace_live=True))
    return asyncio.run(codes.issue_code(caller="bench", main_index_id=MAIN_INDEX_ID, idempotency_key="bench-1",
                                        now=NOW))


@pytest.mark.parametrize("mode", ["canned", "burn", "sign"])
@pytest.mark.parametrize("servicer_call", [True, False], ids=["servicer call (replace_live)", "library call"])
def test_stand_in_issues_for_every_layer_mode(mode: str, servicer_call: bool) -> None:
    code = _issue(mode, servicer_call=servicer_call)
    assert code.ref.province == "33" and code.ref.kid == bytes(SIGNER.kid) and code.ref.serial == 0
    assert code.main_index_id == MAIN_INDEX_ID
    assert code.issued_at == NOW.replace(microsecond=0)
    assert code.expires_at == code.issued_at + dt.timedelta(days=7)


def test_signed_mode_issues_a_code_that_verifies() -> None:
    code = _issue("sign", servicer_call=True)
    ring = hc.Keyring([hc.TrustedKey(kid=SIGNER.kid, province=hc.ProvinceCode("33"),
                                     public_key=SIGNER.public_key(), use_from=NOW - dt.timedelta(days=1),
                                     use_until=NOW + dt.timedelta(days=1), verify_until=NOW + dt.timedelta(days=9))])
    verified = hc.verify(code.text, ring, now=NOW)
    assert (verified.serial, verified.subject) == (0, MAIN_INDEX_ID)


def test_the_operations_the_bench_does_not_drive_say_so() -> None:
    with pytest.raises(NotImplementedError, match="IssueCode only"):
        StandInCodes("canned", "33", SIGNER).ref_from_text("EHC1:")
