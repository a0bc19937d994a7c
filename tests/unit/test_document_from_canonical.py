"""An opened sealed value back to its document (the reconciler's claims, hospital resolutions; issue 14)."""

from __future__ import annotations

import datetime as dt

import pytest

from issuer.documents import canonical_form, make_resident_id, parse_document
from issuer.errors import IssuerError
from issuer.index import document_from_canonical

TODAY = dt.date(2026, 12, 7)


@pytest.mark.parametrize("kind, number, country", [
    ("resident_id", make_resident_id("330106", dt.date(1990, 1, 1), 5), None),
    ("residence_permit_hmt", make_resident_id("810000", dt.date(1990, 1, 1), 5), None),
    ("passport", "E12345678", "CHN"),
    ("travel_permit_hk_mo", "H1234567801", None),  # comes back as its 9-character lifetime number
    ("travel_permit_hk_mo", "H12345678", None),
])
def test_round_trip(kind, number, country):
    doc = parse_document(kind, number, country=country, today=TODAY)
    back = document_from_canonical(canonical_form(doc), today=TODAY)
    assert (back.type, back.country, canonical_form(back)) == (doc.type, doc.country, canonical_form(doc))


@pytest.mark.parametrize("data", [b"", b"nonsense", b"passport:E12345678", b"resident_id:123", "\u00e9".encode()])
def test_bytes_that_are_no_document_raise_without_quoting_them(data):
    with pytest.raises(IssuerError) as e:
        document_from_canonical(data, today=TODAY)
    assert "123" not in str(e.value) and "E1234" not in str(e.value)
