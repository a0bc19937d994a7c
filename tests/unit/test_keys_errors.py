"""keys/ has one error root (issue 12 item 5): the trust repository's refusals are key-management
errors with a stable reason code, and the CLI prints them as one ``Error: <reason>: <detail>`` line."""

from __future__ import annotations

import pytest

from keys.errors import KeyManagementError, KeyReason, PolicyViolation, TrustRepoError


@pytest.mark.parametrize(
    "name, error, reason",
    [
        ("the repository's refusal", TrustRepoError("province 33 is already delegated"), "trust_repository"),
        ("the lifecycle's refusal, for comparison", PolicyViolation("no key signs now"), "policy_violation"),
    ],
)
def test_every_refusal_is_under_the_one_root_with_a_stable_reason(name, error, reason):
    assert isinstance(error, KeyManagementError)
    assert error.reason is KeyReason(reason) and str(error.reason) == reason
    assert str(error) == f"{reason}: {error.detail}"


def test_the_cli_prints_a_repository_refusal_as_one_line_with_its_reason(tmp_path, capsys):
    from keys.__main__ import main

    code = main(["--repo", str(tmp_path), "status"])  # an empty directory is no trust repository

    err = capsys.readouterr().err
    assert code == 1
    assert err == f"Error: trust_repository: {tmp_path} is not a trust repository (no metadata/1.root.json)\n"
