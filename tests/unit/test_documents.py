"""Identity documents of the main index: normalisation, strict validation, violations, canonical bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re

import pytest

from issuer.documents import (
    EARLIEST_BIRTH_DATE,
    MAINLAND_PROVINCES,
    Document,
    DocumentError,
    DocumentType,
    Violation,
    ViolationCode,
    canonical_form,
    make_resident_id,
    mod11_2_check_character,
    normalise,
    parse_document,
)

TODAY = dt.date(2025, 6, 1)
T = DocumentType


def with_check(body: str) -> str:
    """17 digits + their check character, computed independently of the module."""
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body))
    return body + "10X98765432"[total % 11]


def bad_check(number: str) -> str:
    """The same 18-character number with a wrong check character."""
    return number[:17] + ("0" if number[17] != "0" else "1")


# Synthetic numbers used by the tables (all with correct check characters unless named bad).
RID_LEAP = make_resident_id("110105", dt.date(2000, 2, 29), 1)
RID_2024_LEAP = make_resident_id("330102", dt.date(2024, 2, 29), 52)
RID_TODAY = make_resident_id("440305", TODAY, 999)
RID_1880 = make_resident_id("650102", EARLIEST_BIRTH_DATE, 3)
HMT_HK = make_resident_id("810000", dt.date(1985, 7, 1), 12)
HMT_MO = make_resident_id("820000", dt.date(1999, 12, 20), 7)
HMT_TW = make_resident_id("830000", dt.date(1970, 3, 15), 456)
# 2023 form, laid out as 9 + 2-digit location + 3-digit nationality + birth date + sequence (the
# inner layout is unverified and not checked by the module; it only keeps the examples realistic).
PR_2023 = with_check("93384019850701012")
PR_2023_X = next(n for n in (with_check(f"91184019900101{i:03d}") for i in range(1000)) if n[-1] == "X")


# --------------------------------------------------------------------------- valid documents

VALID = [
    # id, type, raw number, country, normalised number
    ("rid-standard-example-X", T.RESIDENT_ID, "11010519491231002X", None, "11010519491231002X"),
    ("rid-example-digit-check", T.RESIDENT_ID, "360426199101010071", None, "360426199101010071"),
    ("rid-lowercase-x", T.RESIDENT_ID, "11010519491231002x", None, "11010519491231002X"),
    ("rid-full-width-digits-and-x", T.RESIDENT_ID, "１１０１０５１９４９１２３１００２ｘ", None, "11010519491231002X"),
    ("rid-full-width-capital-X", T.RESIDENT_ID, "１１０１０５１９４９１２３１００２Ｘ", None, "11010519491231002X"),
    ("rid-spaces-grouped", T.RESIDENT_ID, " 110105 19491231 002x ", None, "11010519491231002X"),
    ("rid-ideographic-space-tab-nbsp", T.RESIDENT_ID, "110105\u300019491231\t002\u00a0X", None, "11010519491231002X"),
    ("rid-zero-width-space", T.RESIDENT_ID, "\u200b11010519491231002X\ufeff", None, "11010519491231002X"),
    ("rid-feb29-leap-2000", T.RESIDENT_ID, RID_LEAP, None, RID_LEAP),
    ("rid-feb29-leap-2024", T.RESIDENT_ID, RID_2024_LEAP, None, RID_2024_LEAP),
    ("rid-born-today", T.RESIDENT_ID, RID_TODAY, None, RID_TODAY),
    ("rid-born-1880-01-01", T.RESIDENT_ID, RID_1880, None, RID_1880),
    ("hmt-hong-kong", T.RESIDENCE_PERMIT_HMT, HMT_HK, None, HMT_HK),
    ("hmt-macau", T.RESIDENCE_PERMIT_HMT, HMT_MO, None, HMT_MO),
    ("hmt-taiwan", T.RESIDENCE_PERMIT_HMT, HMT_TW, None, HMT_TW),
    ("pr-2023", T.PERMANENT_RESIDENCE_ID, PR_2023, None, PR_2023),
    ("pr-2023-check-X-lowercase", T.PERMANENT_RESIDENCE_ID, PR_2023_X.lower(), None, PR_2023_X),
    ("pr-2017", T.PERMANENT_RESIDENCE_ID, "USA330012345678", None, "USA330012345678"),
    ("pr-2017-lowercase-spaces", T.PERMANENT_RESIDENCE_ID, "usa 3300 1234 5678", None, "USA330012345678"),
    ("hkmo-card-H", T.TRAVEL_PERMIT_HK_MO, "H12345678", None, "H12345678"),
    ("hkmo-card-M", T.TRAVEL_PERMIT_HK_MO, "M87654321", None, "M87654321"),
    ("hkmo-booklet-11", T.TRAVEL_PERMIT_HK_MO, "H1234567801", None, "H1234567801"),
    ("hkmo-lowercase-full-width", T.TRAVEL_PERMIT_HK_MO, "ｈ１２３４５６７８", None, "H12345678"),
    ("tw-8-digit", T.TRAVEL_PERMIT_TW, "07257456", None, "07257456"),
    ("tw-one-time-10", T.TRAVEL_PERMIT_TW, "F290299977", None, "F290299977"),
    ("tw-one-time-12-lowercase", T.TRAVEL_PERMIT_TW, "ab1234567890", None, "AB1234567890"),
    ("passport-chn-E8", T.PASSPORT, "E12345678", "CHN", "E12345678"),
    ("passport-chn-E-letter-7", T.PASSPORT, "EA1234567", "CHN", "EA1234567"),
    ("passport-chn-G8", T.PASSPORT, "G12345678", "CHN", "G12345678"),
    ("passport-chn-lowercase-country", T.PASSPORT, "e12345678", " chn ", "E12345678"),
    ("passport-usa-digits", T.PASSPORT, "123456789", "USA", "123456789"),
    ("passport-deu-alnum", T.PASSPORT, "C01X00T47", "DEU", "C01X00T47"),
    ("passport-min-5", T.PASSPORT, "AB123", "GBR", "AB123"),
    ("passport-max-20", T.PASSPORT, "A" * 10 + "1" * 10, "FRA", "A" * 10 + "1" * 10),
    ("passport-hkg-sar", T.PASSPORT, "K12345678", "HKG", "K12345678"),
    ("passport-full-width-country", T.PASSPORT, "123456789", "ｊｐｎ", "123456789"),
    ("type-as-string", "resident_id", "11010519491231002X", None, "11010519491231002X"),
    ("type-as-string-upper", " RESIDENT_ID ", "11010519491231002X", None, "11010519491231002X"),
    ("country-blank-for-non-passport", T.TRAVEL_PERMIT_TW, "07257456", "  ", "07257456"),
]


@pytest.mark.parametrize(("doc_type", "raw", "country", "expected"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_documents_parse_and_normalise(doc_type, raw, country, expected):
    doc = parse_document(doc_type, raw, country=country, today=TODAY)
    assert doc.number == expected
    assert doc.type is DocumentType(doc_type.strip().lower() if isinstance(doc_type, str) else doc_type)
    if doc.type is T.PASSPORT:
        assert doc.country == normalise(country)
    else:
        assert doc.country is None


# --------------------------------------------------------------------------- invalid documents

N, C, TY = "number", "country", "type"

INVALID = [
    # id, type, raw number, country, [(field, code), ...] in report order
    # resident ID: length and characters stop further checks
    ("rid-17-chars", T.RESIDENT_ID, "11010519491231002", None, [(N, "length")]),
    ("rid-19-chars", T.RESIDENT_ID, "11010519491231002X1", None, [(N, "length")]),
    ("rid-first-generation-15", T.RESIDENT_ID, "110105491231002", None, [(N, "length")]),
    ("rid-empty", T.RESIDENT_ID, "", None, [(N, "length")]),
    ("rid-only-spaces", T.RESIDENT_ID, " \u3000 ", None, [(N, "length")]),
    ("rid-none", T.RESIDENT_ID, None, None, [(N, "length")]),
    ("rid-far-too-long", T.RESIDENT_ID, "1" * 65, None, [(N, "length")]),
    ("rid-letter-in-body", T.RESIDENT_ID, "1101051949123100AX", None, [(N, "characters")]),
    ("rid-X-not-last", T.RESIDENT_ID, "1101051949X2310020", None, [(N, "characters")]),
    ("rid-hyphen", T.RESIDENT_ID, "110105-19491231002", None, [(N, "characters")]),
    ("rid-arabic-indic-digit", T.RESIDENT_ID, "11010519491231002\u0663", None, [(N, "characters")]),
    ("rid-bad-chars-and-bad-date-stop-at-chars", T.RESIDENT_ID, "11010519491399002Y", None, [(N, "characters")]),
    # resident ID: check character
    ("rid-check-wrong", T.RESIDENT_ID, "110105194912310021", None, [(N, "check_character")]),
    ("rid-check-X-expected-digit", T.RESIDENT_ID, "36042619910101007X", None, [(N, "check_character")]),
    # resident ID: region
    ("rid-province-00", T.RESIDENT_ID, with_check("00010519491231002"), None, [(N, "region")]),
    ("rid-province-19-unassigned", T.RESIDENT_ID, with_check("19010519491231002"), None, [(N, "region")]),
    ("rid-province-71-taiwan", T.RESIDENT_ID, with_check("71010519491231002"), None, [(N, "region")]),
    ("rid-province-81-hong-kong", T.RESIDENT_ID, with_check("81000019491231002"), None, [(N, "region")]),
    ("rid-province-82-macau", T.RESIDENT_ID, with_check("82010519491231002"), None, [(N, "region")]),
    ("rid-province-83-taiwan-permit", T.RESIDENT_ID, HMT_TW, None, [(N, "region")]),
    ("rid-permanent-residence-9", T.RESIDENT_ID, PR_2023, None, [(N, "region")]),
    ("rid-prefecture-00", T.RESIDENT_ID, with_check("11000019491231002"), None, [(N, "region")]),
    # resident ID: birth date
    ("rid-month-13", T.RESIDENT_ID, with_check("11010519491331002"), None, [(N, "birth_date")]),
    ("rid-month-00", T.RESIDENT_ID, with_check("11010519490031002"), None, [(N, "birth_date")]),
    ("rid-day-32", T.RESIDENT_ID, with_check("11010519490132002"), None, [(N, "birth_date")]),
    ("rid-apr-31", T.RESIDENT_ID, with_check("11010519490431002"), None, [(N, "birth_date")]),
    ("rid-feb29-non-leap-2023", T.RESIDENT_ID, with_check("11010520230229002"), None, [(N, "birth_date")]),
    ("rid-feb29-non-leap-1900", T.RESIDENT_ID, with_check("11010519000229002"), None, [(N, "birth_date")]),
    ("rid-feb30-leap-2000", T.RESIDENT_ID, with_check("11010520000230002"), None, [(N, "birth_date")]),
    ("rid-year-0000", T.RESIDENT_ID, with_check("11010500000101002"), None, [(N, "birth_date")]),
    ("rid-before-1880", T.RESIDENT_ID, with_check("11010518791231002"), None, [(N, "birth_date")]),
    ("rid-born-tomorrow", T.RESIDENT_ID, with_check("11010520250602002"), None, [(N, "birth_date_in_future")]),
    ("rid-born-next-year", T.RESIDENT_ID, with_check("11010520260101002"), None, [(N, "birth_date_in_future")]),
    # resident ID: several at once
    ("rid-date-and-check", T.RESIDENT_ID, bad_check(with_check("11010519491331002")), None,
     [(N, "birth_date"), (N, "check_character")]),
    ("rid-region-date-check", T.RESIDENT_ID, bad_check(with_check("99000020300101002")), None,
     [(N, "region"), (N, "birth_date_in_future"), (N, "check_character")]),
    ("rid-with-country", T.RESIDENT_ID, "11010519491231002X", "CHN", [(C, "country")]),
    ("rid-check-and-country", T.RESIDENT_ID, "110105194912310021", "CHN", [(N, "check_character"), (C, "country")]),
    # HK/Macau/Taiwan residence permit
    ("hmt-resident-id-prefix", T.RESIDENCE_PERMIT_HMT, "11010519491231002X", None, [(N, "prefix")]),
    ("hmt-810001-prefix", T.RESIDENCE_PERMIT_HMT, with_check("81000119850701012"), None, [(N, "prefix")]),
    ("hmt-840000-prefix", T.RESIDENCE_PERMIT_HMT, with_check("84000019850701012"), None, [(N, "prefix")]),
    ("hmt-check", T.RESIDENCE_PERMIT_HMT, bad_check(HMT_HK), None, [(N, "check_character")]),
    ("hmt-birth-date", T.RESIDENCE_PERMIT_HMT, with_check("82000019850229012"), None, [(N, "birth_date")]),
    ("hmt-birth-future", T.RESIDENCE_PERMIT_HMT, with_check("83000020990101012"), None, [(N, "birth_date_in_future")]),
    ("hmt-prefix-date-check", T.RESIDENCE_PERMIT_HMT, bad_check(with_check("12345619851301012")), None,
     [(N, "prefix"), (N, "birth_date"), (N, "check_character")]),
    ("hmt-length", T.RESIDENCE_PERMIT_HMT, HMT_HK[:-1], None, [(N, "length")]),
    ("hmt-characters", T.RESIDENCE_PERMIT_HMT, "8100001985O701012" + "3", None, [(N, "characters")]),
    # permanent residence ID
    ("pr-length-16", T.PERMANENT_RESIDENCE_ID, PR_2023[:16], None, [(N, "length")]),
    ("pr-length-14", T.PERMANENT_RESIDENCE_ID, "USA33001234567", None, [(N, "length")]),
    ("pr-2017-digit-in-letters", T.PERMANENT_RESIDENCE_ID, "US1330012345678", None, [(N, "characters")]),
    ("pr-2017-letter-in-digits", T.PERMANENT_RESIDENCE_ID, "USA33001234567A", None, [(N, "characters")]),
    ("pr-2023-not-9", T.PERMANENT_RESIDENCE_ID, "11010519491231002X", None, [(N, "prefix")]),
    ("pr-2023-check", T.PERMANENT_RESIDENCE_ID, bad_check(PR_2023), None, [(N, "check_character")]),
    ("pr-2023-prefix-and-check", T.PERMANENT_RESIDENCE_ID, "110105194912310021", None,
     [(N, "prefix"), (N, "check_character")]),
    ("pr-2023-characters", T.PERMANENT_RESIDENCE_ID, "9338401985070101A" + "1", None, [(N, "characters")]),
    # HK/Macau travel permit
    ("hkmo-length-10", T.TRAVEL_PERMIT_HK_MO, "H123456789", None, [(N, "length")]),
    ("hkmo-length-8", T.TRAVEL_PERMIT_HK_MO, "H1234567", None, [(N, "length")]),
    ("hkmo-prefix-C", T.TRAVEL_PERMIT_HK_MO, "C12345678", None, [(N, "prefix")]),
    ("hkmo-first-is-digit", T.TRAVEL_PERMIT_HK_MO, "112345678", None, [(N, "characters")]),
    ("hkmo-letter-in-digits", T.TRAVEL_PERMIT_HK_MO, "H1234567A", None, [(N, "characters")]),
    # Taiwan travel permit
    ("tw-length-9", T.TRAVEL_PERMIT_TW, "123456789", None, [(N, "length")]),
    ("tw-length-13", T.TRAVEL_PERMIT_TW, "A123456789012", None, [(N, "length")]),
    ("tw-8-with-letter", T.TRAVEL_PERMIT_TW, "1234567A", None, [(N, "characters")]),
    ("tw-one-time-hyphen", T.TRAVEL_PERMIT_TW, "F2902-9997", None, [(N, "characters")]),
    ("tw-old-bracket-suffix", T.TRAVEL_PERMIT_TW, "0123456789(B)", None, [(N, "length")]),
    ("tw-with-country", T.TRAVEL_PERMIT_TW, "07257456", "TWN", [(C, "country")]),
    # passports
    ("passport-no-country", T.PASSPORT, "E12345678", None, [(C, "country")]),
    ("passport-blank-country", T.PASSPORT, "E12345678", " ", [(C, "country")]),
    ("passport-unknown-country", T.PASSPORT, "123456789", "XYZ", [(C, "country")]),
    ("passport-alpha2-country", T.PASSPORT, "123456789", "US", [(C, "country")]),
    ("passport-twn-country", T.PASSPORT, "123456789", "TWN", [(C, "country")]),
    ("passport-bad-number-and-country", T.PASSPORT, "AB-1234", "XYZ", [(N, "characters"), (C, "country")]),
    ("passport-chn-length-8", T.PASSPORT, "E1234567", "CHN", [(N, "length")]),
    ("passport-chn-length-10", T.PASSPORT, "E123456789", "CHN", [(N, "length")]),
    ("passport-chn-prefix-D", T.PASSPORT, "D12345678", "CHN", [(N, "prefix")]),
    ("passport-chn-prefix-digit", T.PASSPORT, "123456789", "CHN", [(N, "prefix")]),
    ("passport-chn-G-letter", T.PASSPORT, "GA1234567", "CHN", [(N, "characters")]),
    ("passport-chn-E-letter-letter", T.PASSPORT, "EAB123456", "CHN", [(N, "characters")]),
    ("passport-chn-symbol", T.PASSPORT, "E1234567#", "CHN", [(N, "characters")]),
    ("passport-foreign-length-4", T.PASSPORT, "AB12", "USA", [(N, "length")]),
    ("passport-foreign-length-21", T.PASSPORT, "A" * 21, "USA", [(N, "length")]),
    ("passport-foreign-characters", T.PASSPORT, "AB/123456", "USA", [(N, "characters")]),
    ("passport-foreign-non-ascii-letter", T.PASSPORT, "AB\u0131123456", "TUR", [(N, "characters")]),
    # type
    ("type-unknown", "driver_licence", "11010519491231002X", None, [(TY, "type")]),
    ("type-empty", "", "11010519491231002X", None, [(TY, "type")]),
    ("type-not-a-string", 1, "11010519491231002X", None, [(TY, "type")]),
]


def _raise(doc_type, raw, country) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        parse_document(doc_type, raw, country=country, today=TODAY)
    return info.value


@pytest.mark.parametrize(
    ("doc_type", "raw", "country", "expected"), [v[1:] for v in INVALID], ids=[v[0] for v in INVALID]
)
def test_invalid_documents_report_exact_violations(doc_type, raw, country, expected):
    error = _raise(doc_type, raw, country)
    assert [(v.field, v.code) for v in error.violations] == expected
    for v in error.violations:
        assert isinstance(v, Violation)
        assert v.code in {c.value for c in ViolationCode}
        assert v.field in {"type", "number", "country"}
        assert v.description and "\n" not in v.description and len(v.description) < 200


def _digit_runs(number: str, length: int = 6) -> set[str]:
    return {number[i:i + length] for i in range(len(number) - length + 1) if number[i:i + length].isdigit()}


@pytest.mark.parametrize(("doc_type", "raw", "country"), [v[1:4] for v in INVALID], ids=[v[0] for v in INVALID])
def test_descriptions_never_contain_the_number(doc_type, raw, country):
    error = _raise(doc_type, raw, country)
    if raw is None:
        return
    forms = {raw, raw.strip(), normalise(raw)}
    texts = [v.description for v in error.violations] + [str(error), repr(error.violations)]
    for text in texts:
        for form in forms:
            if len(form) >= 4:
                assert form not in text
        runs = set().union(*(_digit_runs(re.sub(r"\D", "", f)) for f in forms), *(_digit_runs(f) for f in forms))
        for run in runs:
            assert run not in text, "a 6+ digit run of the number leaked into a description"
        # nor any 6-character piece of the normalised number
        norm = normalise(raw)
        assert not any(norm[i:i + 6] in text for i in range(len(norm) - 5) if len(norm) >= 6)


def test_every_violation_code_is_exercised():
    seen = {code for *_, expected in INVALID for _, code in expected}
    assert seen == {c.value for c in ViolationCode}


def test_violation_code_values_are_stable():
    assert [c.value for c in ViolationCode] == [
        "length", "characters", "check_character", "region", "birth_date",
        "birth_date_in_future", "type", "country", "prefix",
    ]
    assert [t.value for t in DocumentType] == [
        "resident_id", "residence_permit_hmt", "permanent_residence_id",
        "travel_permit_hk_mo", "travel_permit_tw", "passport",
    ]
    assert str(DocumentType.PASSPORT) == "passport" and str(ViolationCode.REGION) == "region"


# --------------------------------------------------------------------------- birth dates and today


@pytest.mark.parametrize(
    ("born", "today", "code"),
    [
        pytest.param(dt.date(2025, 6, 1), dt.date(2025, 6, 1), None, id="born-today"),
        pytest.param(dt.date(2025, 6, 2), dt.date(2025, 6, 1), "birth_date_in_future", id="born-tomorrow"),
        pytest.param(dt.date(2025, 6, 2), dt.date(2025, 6, 2), None, id="same-date-later-today"),
        pytest.param(dt.date(2030, 1, 1), dt.date(2031, 1, 1), None, id="today-is-a-parameter-not-the-clock"),
        pytest.param(dt.date(2024, 2, 29), dt.date(2024, 2, 28), "birth_date_in_future", id="leap-day-tomorrow"),
        pytest.param(dt.date(2024, 2, 29), dt.date(2024, 2, 29), None, id="leap-day-today"),
        pytest.param(dt.date(1880, 1, 1), dt.date(2025, 6, 1), None, id="earliest-allowed"),
        pytest.param(dt.date(1879, 12, 31), dt.date(2025, 6, 1), "birth_date", id="day-before-earliest"),
    ],
)
def test_birth_date_against_passed_today(born, today, code):
    for region in ("110105", "810000"):
        number = make_resident_id(region, born, 1)
        doc_type = T.RESIDENT_ID if region == "110105" else T.RESIDENCE_PERMIT_HMT
        if code is None:
            assert parse_document(doc_type, number, today=today).birth_date == born
        else:
            with pytest.raises(DocumentError) as info:
                parse_document(doc_type, number, today=today)
            assert [v.code for v in info.value.violations] == [code]


@pytest.mark.parametrize(
    ("year", "leap"),
    [(1900, False), (1996, True), (2000, True), (2023, False), (2024, True), (2100, False)],
    ids=lambda v: str(v),
)
def test_feb29_only_in_leap_years(year, leap):
    number = with_check(f"320102{year:04d}0229123")
    today = dt.date(2200, 1, 1)
    if leap:
        assert parse_document(T.RESIDENT_ID, number, today=today).birth_date == dt.date(year, 2, 29)
    else:
        error = _raise_with(T.RESIDENT_ID, number, today)
        assert [v.code for v in error.violations] == ["birth_date"]


def _raise_with(doc_type, number, today) -> DocumentError:
    with pytest.raises(DocumentError) as info:
        parse_document(doc_type, number, today=today)
    return info.value


@pytest.mark.parametrize(
    "today",
    [dt.datetime(2025, 6, 1, 12, 0), "2025-06-01", None],
    ids=["datetime", "string", "none"],
)
def test_today_must_be_a_date(today):
    with pytest.raises(TypeError):
        parse_document(T.RESIDENT_ID, "11010519491231002X", today=today)


def test_today_is_keyword_only_and_required():
    with pytest.raises(TypeError):
        parse_document(T.RESIDENT_ID, "11010519491231002X")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        parse_document(T.RESIDENT_ID, "11010519491231002X", None, TODAY)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("doc_type", "number", "country", "born"),
    [
        pytest.param(T.RESIDENT_ID, "11010519491231002X", None, dt.date(1949, 12, 31), id="resident-id"),
        pytest.param(T.RESIDENCE_PERMIT_HMT, HMT_MO, None, dt.date(1999, 12, 20), id="residence-permit"),
        pytest.param(T.PERMANENT_RESIDENCE_ID, PR_2023, None, None, id="permanent-residence-2023"),
        pytest.param(T.PERMANENT_RESIDENCE_ID, "USA330012345678", None, None, id="permanent-residence-2017"),
        pytest.param(T.TRAVEL_PERMIT_HK_MO, "H12345678", None, None, id="hk-mo-permit"),
        pytest.param(T.TRAVEL_PERMIT_TW, "07257456", None, None, id="tw-permit"),
        pytest.param(T.PASSPORT, "E12345678", "CHN", None, id="passport"),
    ],
)
def test_birth_date_property(doc_type, number, country, born):
    assert parse_document(doc_type, number, country=country, today=TODAY).birth_date == born


# --------------------------------------------------------------------------- canonical form


@pytest.mark.parametrize(
    ("doc_type", "number", "country", "expected"),
    [
        pytest.param(T.RESIDENT_ID, "11010519491231002x", None, b"resident_id:11010519491231002X", id="resident-id"),
        pytest.param(T.RESIDENT_ID, "１１０１０５ １９４９１２３１ ００２ｘ", None, b"resident_id:11010519491231002X",
                     id="resident-id-full-width"),
        pytest.param(T.RESIDENCE_PERMIT_HMT, HMT_HK, None, b"residence_permit_hmt:" + HMT_HK.encode(), id="hmt"),
        pytest.param(T.PERMANENT_RESIDENCE_ID, "usa330012345678", None, b"permanent_residence_id:USA330012345678",
                     id="pr-2017"),
        pytest.param(T.TRAVEL_PERMIT_HK_MO, "H12345678", None, b"travel_permit_hk_mo:H12345678", id="hkmo-card"),
        pytest.param(T.TRAVEL_PERMIT_HK_MO, "H1234567803", None, b"travel_permit_hk_mo:H12345678",
                     id="hkmo-booklet-drops-renewal-count"),
        pytest.param(T.TRAVEL_PERMIT_TW, "f290299977", None, b"travel_permit_tw:F290299977", id="tw"),
        pytest.param(T.PASSPORT, "e12345678", "chn", b"passport:CHN:E12345678", id="passport-chn"),
        pytest.param(T.PASSPORT, "123456789", "USA", b"passport:USA:123456789", id="passport-usa"),
    ],
)
def test_canonical_form(doc_type, number, country, expected):
    assert canonical_form(parse_document(doc_type, number, country=country, today=TODAY)) == expected


def test_canonical_form_separates_types_and_countries():
    same = "123456789"
    forms = {
        canonical_form(parse_document(T.PASSPORT, same, country=c, today=TODAY)) for c in ("USA", "GBR", "CAN")
    }
    assert len(forms) == 3
    assert canonical_form(parse_document(T.RESIDENCE_PERMIT_HMT, HMT_HK, today=TODAY)) != canonical_form(
        parse_document(T.PERMANENT_RESIDENCE_ID, PR_2023, today=TODAY)
    )


def test_canonical_form_needs_a_document():
    with pytest.raises(TypeError):
        canonical_form("resident_id:11010519491231002X")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the Document value


def test_document_cannot_be_built_directly():
    with pytest.raises(TypeError):
        Document(T.RESIDENT_ID, "not validated")
    with pytest.raises(TypeError):
        Document(T.RESIDENT_ID, "not validated", None)


def test_document_is_frozen_and_replace_cannot_bypass_validation():
    doc = parse_document(T.RESIDENT_ID, "11010519491231002X", today=TODAY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.number = "360426199101010071"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dataclasses.replace(doc, number="garbage")


def test_document_equality_and_hash_follow_normalised_value():
    a = parse_document(T.RESIDENT_ID, "11010519491231002x", today=TODAY)
    b = parse_document("resident_id", "１１０１０５１９４９１２３１００２Ｘ", today=TODAY)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


def test_document_repr_hides_the_number():
    doc = parse_document(T.PASSPORT, "E12345678", country="CHN", today=TODAY)
    for text in (repr(doc), str(doc)):
        assert "12345678" not in text
        assert "CHN" in text and "passport" in text


def test_document_error_is_a_value_error_with_a_readable_message():
    error = _raise(T.RESIDENT_ID, bad_check(with_check("11010519491331002")), None)
    assert isinstance(error, ValueError)
    assert str(error) == "; ".join(f"{v.field}: {v.description}" for v in error.violations)
    assert "ISO 7064 MOD 11-2" in str(error)
    assert all(v.description for v in error.violations)


def test_document_error_needs_violations():
    with pytest.raises(ValueError):
        DocumentError([])


def test_number_must_be_a_string():
    with pytest.raises(TypeError):
        parse_document(T.RESIDENT_ID, 11010519491231002, today=TODAY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_document(T.PASSPORT, "E12345678", country=156, today=TODAY)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("abc xyz", "ABCXYZ", id="ascii-lowercase-and-space"),
        pytest.param("０１２３４５６７８９", "0123456789", id="full-width-digits"),
        pytest.param("ＡＢＣｘｙｚ", "ABCXYZ", id="full-width-letters"),
        pytest.param("a\u3000b\tc\nd\u00a0e", "ABCDE", id="unicode-whitespace"),
        pytest.param("\u200bA\ufeff", "A", id="zero-width"),
        pytest.param("\u0131\u00df", "\u0131\u00df", id="dotless-i-and-sharp-s-untouched"),
        pytest.param("\u2460\u216b", "\u2460\u216b", id="circled-digit-and-roman-numeral-untouched"),
        pytest.param("\uff0d", "\uff0d", id="full-width-hyphen-untouched"),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("11010519491231002\u2169", id="roman-numeral-ten-is-not-X"),
        pytest.param("①1010519491231002X", id="circled-digit"),
        pytest.param("11010519491231002\u0445", id="cyrillic-kha"),
    ],
)
def test_lookalikes_are_not_normalised_into_valid_numbers(raw):
    error = _raise(T.RESIDENT_ID, raw, None)
    assert [v.code for v in error.violations] == ["characters"]


# --------------------------------------------------------------------------- check character


@pytest.mark.parametrize(
    ("body", "check"),
    [
        pytest.param("11010519491231002", "X", id="gb11643-example"),
        pytest.param("36042619910101007", "1", id="second-example"),
    ],
)
def test_mod11_2_known_answers(body, check):
    assert mod11_2_check_character(body) == check


@pytest.mark.parametrize(
    "body", ["1101051949123100", "110105194912310021", "1101051949123100A", "１１０１０５１９４９１２３１００２"]
)
def test_mod11_2_needs_17_ascii_digits(body):
    with pytest.raises(ValueError):
        mod11_2_check_character(body)


def test_mod11_2_matches_independent_implementation():
    rng = random.Random(11643)
    for _ in range(2000):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert body + mod11_2_check_character(body) == with_check(body)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(("11010", dt.date(2000, 1, 1), 1), ValueError, id="region-5-digits"),
        pytest.param(("11010A", dt.date(2000, 1, 1), 1), ValueError, id="region-letter"),
        pytest.param(("110105", dt.date(2000, 1, 1), 1000), ValueError, id="sequence-1000"),
        pytest.param(("110105", dt.date(2000, 1, 1), -1), ValueError, id="sequence-negative"),
        pytest.param(("110105", dt.date(2000, 1, 1), True), ValueError, id="sequence-bool"),
        pytest.param(("110105", dt.datetime(2000, 1, 1), 1), TypeError, id="birth-datetime"),
        pytest.param(("110105", "20000101", 1), TypeError, id="birth-string"),
    ],
)
def test_make_resident_id_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        make_resident_id(*args)


def test_make_resident_id_layout():
    assert make_resident_id("110105", dt.date(1949, 12, 31), 2) == "11010519491231002X"
    assert make_resident_id("360426", dt.date(1991, 1, 1), 7) == "360426199101010071"


# --------------------------------------------------------------------------- property-style


def _synthetic_ids(count: int, seed: int) -> list[tuple[str, dt.date]]:
    rng = random.Random(seed)
    provinces = sorted(MAINLAND_PROVINCES)
    span = (TODAY - EARLIEST_BIRTH_DATE).days
    out = []
    for _ in range(count):
        region = rng.choice(provinces) + f"{rng.randint(1, 99):02d}" + f"{rng.randint(0, 99):02d}"
        born = EARLIEST_BIRTH_DATE + dt.timedelta(days=rng.randint(0, span))
        out.append((make_resident_id(region, born, rng.randint(0, 999)), born))
    return out


SYNTHETIC = _synthetic_ids(1000, seed=20251)


def test_synthetic_ids_parse_back():
    assert len({n for n, _ in SYNTHETIC}) > 990
    for number, born in SYNTHETIC:
        doc = parse_document(T.RESIDENT_ID, number, today=TODAY)
        assert doc.number == number
        assert doc.birth_date == born
        assert canonical_form(doc) == b"resident_id:" + number.encode()


def test_synthetic_ids_cover_x_and_every_check_digit():
    assert {n[-1] for n, _ in SYNTHETIC} == set("0123456789X")


def test_any_single_changed_character_fails_the_check():
    """MOD 11-2 catches every single substitution, in the body or in the check character itself."""
    alphabet = "0123456789"
    for number, _ in SYNTHETIC:
        for pos in range(18):
            for replacement in (alphabet + "X" if pos == 17 else alphabet):
                if replacement == number[pos]:
                    continue
                changed = number[:pos] + replacement + number[pos + 1:]
                with pytest.raises(DocumentError) as info:
                    parse_document(T.RESIDENT_ID, changed, today=TODAY)
                codes = [v.code for v in info.value.violations]
                assert "check_character" in codes, (pos, codes)
                assert set(codes) <= {"region", "birth_date", "birth_date_in_future", "check_character"}
