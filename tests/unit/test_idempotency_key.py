"""One rule for the idempotency key, parsed once at the wire (issue 12 item 4).

The rule is docs/api.md's: 8 to 128 characters of ``A-Z a-z 0-9 . _ : -``.
The wire (``issuer.wire.idempotency_key_field``) parses a request's key into an
``IdempotencyKey``; the domain (``CodeIssuer``, ``WalletIssuer``) holds what it
is given to the same rule, so a key is never good at one layer and bad at the
other (before, the domain took 1-128 printable ASCII characters).
"""

from __future__ import annotations

import pytest

from issuer.errors import InvalidRequest, Violations
from issuer.issuance import _check_key
from issuer.model import IDEMPOTENCY_KEY_RULE, parse_idempotency_key
from issuer.wire import idempotency_key_field

KEYS = [
    ("eight-characters", "abcd-123", True),
    ("all-allowed-punctuation", "a.b_c:d-e", True),
    ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", True),
    ("longest", "k" * 128, True),
    ("seven-characters", "abc-123", False),
    ("one-character", "k", False),
    ("too-long", "k" * 129, False),
    ("space", "has space in it", False),
    ("slash", "batch/row/12", False),
    ("non-ascii", "ключ-ключ-ключ", False),
    ("control-character", "abcdefgh\n", False),
]


@pytest.mark.parametrize(("key", "good"), [(k, g) for _, k, g in KEYS], ids=[name for name, _, _ in KEYS])
def test_the_wire_and_the_domain_hold_a_key_to_one_rule(key: str, good: bool) -> None:
    out = Violations()
    at_wire = idempotency_key_field(key, out)
    try:
        in_domain = _check_key(key)  # type: ignore[arg-type] - a library caller passing a plain str
    except InvalidRequest as refused:
        in_domain = None
        assert [(v.field, v.description, v.code) for v in refused.violations] == [
            ("idempotency_key", IDEMPOTENCY_KEY_RULE, "format")]
    if good:
        assert at_wire == in_domain == parse_idempotency_key(key) == key
        assert out.items == []
    else:
        assert at_wire is None and in_domain is None
        assert [(v.field, v.code) for v in out.items] == [("idempotency_key", "format")]
        with pytest.raises(ValueError, match="8 to 128 characters"):
            parse_idempotency_key(key)


def test_an_absent_key_is_none_at_both_layers() -> None:
    out = Violations()
    assert idempotency_key_field("", out) is None and out.items == []
    assert _check_key(None) is None
