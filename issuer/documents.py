"""Identity documents of the resident main index: types, strict parsing, canonical bytes.

The issuer's main index is built on the 18-digit resident ID number and
supplemented by other documents. Every number enters the system through
:func:`parse_document`, which normalises and validates it; a :class:`Document`
therefore always holds a well-formed number. A failure raises :class:`DocumentError`
(an :class:`~issuer.errors.IssuerError`) with one :class:`Violation` per problem found,
for the gRPC layer to turn into ``google.rpc.BadRequest`` field violations.

Pure: no I/O, no clock. The current date is the ``today`` parameter (in China Standard Time).

Privacy: a violation's description never contains the number or any part of
it, only positions, lengths and the expected form, so violations may be logged
and returned to clients. ``repr(Document)`` hides the number too.

Formats (see docs research, "Identity numbers"):

* ``resident_id``: GB 11643-1999. 6-digit address code, ``YYYYMMDD`` birth
  date, 3-digit sequence, ISO 7064 MOD 11-2 check character (digit or ``X``).
* ``residence_permit_hmt``: residence permit for Hong Kong, Macau and Taiwan
  residents. The same layout as a resident ID with the fixed address code
  ``810000`` (Hong Kong), ``820000`` (Macau) or ``830000`` (Taiwan).
* ``permanent_residence_id``: foreigner's permanent residence ID card. The 2023
  form (issued from 2023-12-01) is 17 digits, the first being ``9``, plus a
  MOD 11-2 check character. The 2017 form is 3 letters + 12 digits, with no
  check character.
* ``travel_permit_hk_mo``: Mainland Travel Permit for Hong Kong and Macau
  residents: ``H``/``M`` + 8 digits (card form), or + 10 digits (older booklet
  form: 8-digit lifetime number + 2-digit renewal count).
* ``travel_permit_tw``: Mainland Travel Permit for Taiwan residents: the
  8-digit lifetime number, or a 10-12 character alphanumeric one-time permit.
* ``passport``: with the issuing country (ISO 3166-1 alpha-3). PRC passports
  (``CHN``) are ``E``/``G`` + 8 digits or ``E`` + letter + 7 digits; other
  countries' passports are 5-20 upper-case letters and digits.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import InitVar, dataclass, field
from typing import Callable, Iterable

from healthcode.model import PROVINCES
from issuer.errors import IssuerError

__all__ = [
    "DocumentType",
    "Document",
    "Violation",
    "ViolationCode",
    "DocumentError",
    "parse_document",
    "canonical_form",
    "normalise",
    "make_resident_id",
    "mod11_2_check_character",
    "MAINLAND_PROVINCES",
    "PASSPORT_COUNTRIES",
    "EARLIEST_BIRTH_DATE",
]


class DocumentType(str, enum.Enum):
    """Kinds of identity document. The values are part of the public contract."""

    RESIDENT_ID = "resident_id"
    RESIDENCE_PERMIT_HMT = "residence_permit_hmt"
    PERMANENT_RESIDENCE_ID = "permanent_residence_id"
    TRAVEL_PERMIT_HK_MO = "travel_permit_hk_mo"
    TRAVEL_PERMIT_TW = "travel_permit_tw"
    PASSPORT = "passport"

    def __str__(self) -> str:
        return self.value


class ViolationCode(str, enum.Enum):
    """Stable machine codes of :class:`Violation`. ``Violation.code`` holds the value."""

    LENGTH = "length"
    CHARACTERS = "characters"
    CHECK_CHARACTER = "check_character"
    REGION = "region"
    BIRTH_DATE = "birth_date"
    BIRTH_DATE_IN_FUTURE = "birth_date_in_future"
    TYPE = "type"
    COUNTRY = "country"
    PREFIX = "prefix"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with a document.

    ``field`` is ``"type"``, ``"number"`` or ``"country"``; ``code`` is a
    :class:`ViolationCode` value; ``description`` is a short English sentence
    that never contains the number or any part of it.
    """

    field: str
    code: str
    description: str


class DocumentError(IssuerError, ValueError):
    """A document was refused. ``violations`` lists every problem found (at least one)."""

    reason = "invalid_document"

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations: list[Violation] = list(violations)
        if not self.violations:
            raise ValueError("DocumentError needs at least one violation")
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


# --------------------------------------------------------------------------- tables

#: Province codes a resident ID may start with: GB/T 2260 minus 71 (Taiwan),
#: 81 (Hong Kong) and 82 (Macau). Those three are reserved in GB/T 2260, but
#: the mainland issues no resident IDs under them; residents of those regions
#: hold residence permits under 81/82/83 instead.
MAINLAND_PROVINCES: frozenset[str] = frozenset(PROVINCES) - {"71", "81", "82"}

_HMT_PREFIXES = {"810000": "Hong Kong", "820000": "Macau", "830000": "Taiwan"}

#: ISO 3166-1 alpha-3 codes (the 249 officially assigned), less TWN: in the
#: mainland, Taiwan residents identify with the Taiwan travel permit or the
#: residence permit, not a passport.
PASSPORT_COUNTRIES: frozenset[str] = frozenset(
    """
    ABW AFG AGO AIA ALA ALB AND ARE ARG ARM ASM ATA ATF ATG AUS AUT AZE BDI BEL BEN BES BFA BGD
    BGR BHR BHS BIH BLM BLR BLZ BMU BOL BRA BRB BRN BTN BVT BWA CAF CAN CCK CHE CHL CHN CIV CMR
    COD COG COK COL COM CPV CRI CUB CUW CXR CYM CYP CZE DEU DJI DMA DNK DOM DZA ECU EGY ERI ESH
    ESP EST ETH FIN FJI FLK FRA FRO FSM GAB GBR GEO GGY GHA GIB GIN GLP GMB GNB GNQ GRC GRD GRL
    GTM GUF GUM GUY HKG HMD HND HRV HTI HUN IDN IMN IND IOT IRL IRN IRQ ISL ISR ITA JAM JEY JOR
    JPN KAZ KEN KGZ KHM KIR KNA KOR KWT LAO LBN LBR LBY LCA LIE LKA LSO LTU LUX LVA MAC MAF MAR
    MCO MDA MDG MDV MEX MHL MKD MLI MLT MMR MNE MNG MNP MOZ MRT MSR MTQ MUS MWI MYS MYT NAM NCL
    NER NFK NGA NIC NIU NLD NOR NPL NRU NZL OMN PAK PAN PCN PER PHL PLW PNG POL PRI PRK PRT PRY
    PSE PYF QAT REU ROU RUS RWA SAU SDN SEN SGP SGS SHN SJM SLB SLE SLV SMR SOM SPM SRB SSD STP
    SUR SVK SVN SWE SWZ SXM SYC SYR TCA TCD TGO THA TJK TKL TKM TLS TON TTO TUN TUR TUV TZA UGA
    UKR UMI URY USA UZB VAT VCT VEN VGB VIR VNM VUT WLF WSM YEM ZAF ZMB ZWE
    """.split()
)

#: Birth dates before this are refused.
EARLIEST_BIRTH_DATE = _dt.date(1880, 1, 1)

#: Upper bound on the raw input, checked before normalising anything.
_MAX_RAW_LENGTH = 64

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = _DIGITS | _LETTERS

# ISO 7064 MOD 11-2 as GB 11643 uses it: weight of position i (1-based) is
# 2**(18-i) mod 11; the check character is _CHECK_MAP[sum mod 11].
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_MAP = "10X98765432"

# Full-width digits and letters to ASCII, lower-case ASCII to upper case. Only
# these: str.upper() and NFKC would also turn other characters (dotless i,
# circled digits, Roman numerals...) into ASCII letters and digits.
_NORMALISE = {cp: cp - 0xFEE0 for cp in range(0xFF10, 0xFF1A)}
_NORMALISE.update({cp: cp - 0xFEE0 - 0x20 for cp in range(0xFF41, 0xFF5B)})  # ａ-ｚ -> A-Z
_NORMALISE.update({cp: cp - 0xFEE0 for cp in range(0xFF21, 0xFF3B)})  # Ａ-Ｚ -> A-Z
_NORMALISE.update({cp: cp - 0x20 for cp in range(ord("a"), ord("z") + 1)})
# Spacing dropped anywhere: Unicode whitespace (incl. U+3000 ideographic space,
# NBSP) and the invisible zero-width space / BOM that copy-paste brings along.
_INVISIBLE = {0x200B: None, 0xFEFF: None}


def normalise(value: str) -> str:
    """Drop spaces anywhere, map full-width digits/letters to ASCII, upper-case ASCII letters."""
    value = value.translate(_INVISIBLE)
    return "".join(ch for ch in value if not ch.isspace()).translate(_NORMALISE)


# --------------------------------------------------------------------------- check character


def mod11_2_check_character(body: str) -> str:
    """The ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``) of 17 ASCII digits."""
    if len(body) != 17 or not _DIGITS.issuperset(body):
        raise ValueError("MOD 11-2 check needs exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(body, _WEIGHTS))
    return _CHECK_MAP[total % 11]


def make_resident_id(region: str, birth: _dt.date, sequence: int) -> str:
    """Build an 18-character number with its check character, for tests, load tools and benchmarks.

    ``region`` is a 6-digit address code, ``sequence`` 0-999 (odd = male). Only
    the form is checked here: the result parses as a resident ID when ``region``
    is a mainland address and ``birth`` is in range (with ``"810000"`` etc. it
    is a residence permit number), and it fails with the matching violation
    otherwise, which tests can use.
    """
    if not isinstance(region, str) or len(region) != 6 or not _DIGITS.issuperset(region):
        raise ValueError("region must be a 6-digit address code")
    if not isinstance(birth, _dt.date) or isinstance(birth, _dt.datetime):
        raise TypeError("birth must be a datetime.date")
    if type(sequence) is not int or not 0 <= sequence <= 999:
        raise ValueError("sequence must be an integer in 0..999")
    body = f"{region}{birth.year:04d}{birth.month:02d}{birth.day:02d}{sequence:03d}"
    return body + mod11_2_check_character(body)


# --------------------------------------------------------------------------- the document


_PARSE_KEY = object()


@dataclass(frozen=True, slots=True)
class Document:
    """A validated identity document. Build it with :func:`parse_document` only.

    ``number`` is the normalised number (ASCII, upper case, no spaces);
    ``country`` is the ISO 3166-1 alpha-3 issuing country for passports and
    ``None`` for every other type. The number is left out of ``repr``.
    """

    type: DocumentType
    number: str = field(repr=False)
    country: str | None = None
    _key: InitVar[object] = None

    def __post_init__(self, _key: object) -> None:
        if _key is not _PARSE_KEY:
            raise TypeError("build a Document with parse_document(), which validates it")

    @property
    def birth_date(self) -> _dt.date | None:
        """The birth date the number carries (resident ID, residence permit), else ``None``."""
        if self.type in (DocumentType.RESIDENT_ID, DocumentType.RESIDENCE_PERMIT_HMT):
            n = self.number
            return _dt.date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
        return None


def canonical_form(doc: Document) -> bytes:
    """The exact bytes to blind-index (e.g. HMAC) a document by: ASCII, ``type:number``.

    * passports: ``b"passport:" + country + b":" + number``;
    * HK/Macau travel permits: ``b"travel_permit_hk_mo:"`` + the letter and the
      8-digit lifetime number, i.e. the 2-digit renewal count of the 11-character
      form is dropped, so a renewed permit (or the 9-character card) indexes to
      the same person;
    * everything else: ``type.value + b":" + number``.

    Numbers are normalised (upper case, so a resident ID ends in ``X``, never
    ``x``). Type values, countries and numbers contain no ``:``, so the form is
    unambiguous.
    """
    if not isinstance(doc, Document):
        raise TypeError("canonical_form needs a Document from parse_document()")
    if doc.type is DocumentType.PASSPORT:
        text = f"passport:{doc.country}:{doc.number}"
    elif doc.type is DocumentType.TRAVEL_PERMIT_HK_MO:
        text = f"{doc.type.value}:{doc.number[:9]}"
    else:
        text = f"{doc.type.value}:{doc.number}"
    return text.encode("ascii")


# --------------------------------------------------------------------------- parsing


def parse_document(
    type: DocumentType | str,
    number: str,
    *,
    country: str | None = None,
    today: _dt.date,
) -> Document:
    """Normalise and validate a document; return it or raise :class:`DocumentError`.

    ``type`` is a :class:`DocumentType` or its value. ``country`` is required
    for passports and must be absent (``None`` or blank) otherwise. ``today``
    is the current date, against which birth dates must not be in the future.

    Every violation found is reported, except that a number with the wrong
    length or the wrong kind of characters is not checked further.
    """
    if not isinstance(today, _dt.date) or isinstance(today, _dt.datetime):
        raise TypeError("today must be a datetime.date (the current date in China Standard Time)")
    if number is not None and not isinstance(number, str):
        raise TypeError("number must be a str")
    if country is not None and not isinstance(country, str):
        raise TypeError("country must be a str or None")

    doc_type = _parse_type(type)
    if doc_type is None:
        expected = ", ".join(t.value for t in DocumentType)
        raise DocumentError([Violation("type", "type", f"unknown document type; expected one of: {expected}")])

    violations: list[Violation] = []
    if number is None or len(number) > _MAX_RAW_LENGTH:
        normalised = None
        problem = "number is missing" if number is None else f"number is longer than {_MAX_RAW_LENGTH} characters"
        violations.append(Violation("number", "length", problem))
    else:
        normalised = normalise(number)
        if not normalised:
            violations.append(Violation("number", "length", "number is empty"))
            normalised = None

    country_norm = normalise(country) if country is not None and len(country) <= _MAX_RAW_LENGTH else country
    country_norm = country_norm or None
    country_violations: list[Violation] = []
    if doc_type is DocumentType.PASSPORT:
        if country_norm is None:
            country_violations.append(
                Violation("country", "country", "passport needs the issuing country (ISO 3166-1 alpha-3)")
            )
        elif country_norm == "TWN":
            country_violations.append(
                Violation(
                    "country", "country",
                    "TWN passports are not accepted; use travel_permit_tw or residence_permit_hmt",
                )
            )
        elif country_norm not in PASSPORT_COUNTRIES:
            country_violations.append(
                Violation("country", "country", "country is not an ISO 3166-1 alpha-3 code (e.g. CHN, USA)")
            )
    elif country_norm is not None:
        country_violations.append(
            Violation("country", "country", f"country applies only to passports, not to {doc_type.value}")
        )

    if normalised is not None:
        if doc_type is DocumentType.PASSPORT:
            # An unusable country is reported above; the number is then held to
            # the foreign-passport rule rather than not checked at all.
            violations += _check_passport(normalised, today, country_norm if not country_violations else None)
        else:
            violations += _CHECKERS[doc_type](normalised, today)
    violations += country_violations

    if violations:
        raise DocumentError(violations)
    assert normalised is not None  # every path that leaves it None adds a violation
    return Document(
        doc_type, normalised, country_norm if doc_type is DocumentType.PASSPORT else None, _PARSE_KEY
    )


def _parse_type(value: DocumentType | str) -> DocumentType | None:
    if isinstance(value, DocumentType):
        return value
    if isinstance(value, str):
        try:
            return DocumentType(value.strip().lower())
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- checks per type
#
# Each returns the list of violations of an already normalised, non-empty number.
# Positions in descriptions are 1-based; descriptions never quote the number.


def _v(code: str, description: str) -> Violation:
    return Violation("number", code, description)


def _positions(number: str, allowed: frozenset[str], start: int = 0, end: int | None = None) -> list[int]:
    end = len(number) if end is None else end
    return [i + 1 for i in range(start, end) if number[i] not in allowed]


def _position_text(positions: list[int]) -> str:
    """``"the character at position 3 is"`` / ``"the characters at positions 3, 7 are"``."""
    if len(positions) == 1:
        return f"the character at position {positions[0]} is"
    shown = ", ".join(str(p) for p in positions[:5]) + (", ..." if len(positions) > 5 else "")
    return f"the characters at positions {shown} are"


def _eighteen_form(number: str, label: str, *, short_hint: str = "") -> list[Violation] | None:
    """Length and characters of a 17 digits + check character number; ``None`` if fine."""
    if len(number) != 18:
        return [_v("length", f"{label} must be 18 characters, got {len(number)}{short_hint}")]
    bad = _positions(number, _DIGITS, 0, 17)
    if number[17] not in _DIGITS and number[17] != "X":
        bad.append(18)
    if bad:
        return [
            _v(
                "characters",
                f"{label} must be 17 digits and a final digit or X; {_position_text(bad)} not allowed",
            )
        ]
    return None


def _birth_date(number: str, today: _dt.date) -> list[Violation]:
    """Positions 7-14 as ``YYYYMMDD``: a real date, from 1880-01-01, not after ``today``."""
    try:
        born = _dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return [_v("birth_date", "birth date (positions 7-14) is not a real calendar date")]
    if born < EARLIEST_BIRTH_DATE:
        return [_v("birth_date", "birth date (positions 7-14) is before 1880-01-01")]
    if born > today:
        return [_v("birth_date_in_future", "birth date (positions 7-14) is in the future")]
    return []


def _check_character(number: str) -> list[Violation]:
    if mod11_2_check_character(number[:17]) != number[17]:
        return [_v("check_character", "check character (position 18) does not match (ISO 7064 MOD 11-2)")]
    return []


def _check_resident_id(number: str, today: _dt.date) -> list[Violation]:
    """GB 11643-1999.

    The address check is deliberately rough: the first two digits must be a
    mainland GB/T 2260 province (:data:`MAINLAND_PROVINCES`) and digits 3-4 (the
    prefecture) must not be ``00``. A full GB/T 2260 county table is not used:
    it changes every year and old IDs keep abolished county codes for life.
    """
    stop = _eighteen_form(
        number, "resident ID number",
        short_hint=" (first-generation 15-digit numbers are no longer valid)" if len(number) == 15 else "",
    )
    if stop:
        return stop
    violations: list[Violation] = []
    province = number[:2]
    if province in ("81", "82", "83"):
        violations.append(
            _v(
                "region",
                "address code of Hong Kong, Macau or Taiwan (81, 82, 83) is used by residence permits, "
                "not resident IDs; use type residence_permit_hmt",
            )
        )
    elif province == "71":
        violations.append(_v("region", "no resident IDs are issued under the Taiwan province code (71)"))
    elif number[0] == "9":
        violations.append(
            _v("region", "numbers starting with 9 are foreigners' permanent residence IDs; "
                         "use type permanent_residence_id")
        )
    elif province not in MAINLAND_PROVINCES:
        violations.append(_v("region", "address code (positions 1-2) is not a GB/T 2260 province code"))
    elif number[2:4] == "00":
        violations.append(_v("region", "address code (positions 3-4) does not name a prefecture"))
    violations += _birth_date(number, today)
    violations += _check_character(number)
    return violations


def _check_residence_permit_hmt(number: str, today: _dt.date) -> list[Violation]:
    stop = _eighteen_form(number, "residence permit number")
    if stop:
        return stop
    violations: list[Violation] = []
    if number[:6] not in _HMT_PREFIXES:
        violations.append(
            _v(
                "prefix",
                "residence permit number must start with the Hong Kong, Macau or Taiwan address code "
                "(81, 82 or 83 followed by four zeros)",
            )
        )
    violations += _birth_date(number, today)
    violations += _check_character(number)
    return violations


def _check_permanent_residence_id(number: str, today: _dt.date) -> list[Violation]:
    """2023 form: ``9`` + 16 digits + MOD 11-2 check; 2017 form: 3 letters + 12 digits.

    The positions of the nationality, location and birth date inside the 2023
    form are not in a public source we could read, so only the leading ``9``
    and the check character are verified; the 2017 form has no check character.
    """
    if len(number) == 15:
        bad = _positions(number, _LETTERS, 0, 3) + _positions(number, _DIGITS, 3, 15)
        if bad:
            return [
                _v(
                    "characters",
                    "15-character (2017) permanent residence ID must be 3 letters and 12 digits; "
                    f"{_position_text(bad)} not allowed",
                )
            ]
        return []
    if len(number) != 18:
        return [
            _v("length", f"permanent residence ID must be 18 characters (2023 form) or 15 (2017 form), "
                         f"got {len(number)}")
        ]
    stop = _eighteen_form(number, "18-character (2023) permanent residence ID")
    if stop:
        return stop
    violations: list[Violation] = []
    if number[0] != "9":
        violations.append(_v("prefix", "18-character (2023) permanent residence ID must start with 9"))
    violations += _check_character(number)
    return violations


def _check_travel_permit_hk_mo(number: str, today: _dt.date) -> list[Violation]:
    if len(number) not in (9, 11):
        return [_v("length", f"Hong Kong/Macau travel permit number must be 9 or 11 characters, got {len(number)}")]
    bad = _positions(number, _LETTERS, 0, 1) + _positions(number, _DIGITS, 1)
    if bad:
        return [
            _v(
                "characters",
                f"Hong Kong/Macau travel permit number must be a letter and 8 or 10 digits; "
                f"{_position_text(bad)} not allowed",
            )
        ]
    if number[0] not in ("H", "M"):
        return [_v("prefix", "Hong Kong/Macau travel permit number must start with H (Hong Kong) or M (Macau)")]
    return []


def _check_travel_permit_tw(number: str, today: _dt.date) -> list[Violation]:
    """8-digit lifetime number, or a 10-12 character alphanumeric one-time permit.

    The rule of util-helpers ``isTWCard`` with ``loose`` on: ``^\\d{8}$`` or
    ``^[0-9A-Z]{10,12}$``. There is no check character.
    """
    if len(number) == 8:
        bad = _positions(number, _DIGITS)
        if bad:
            return [
                _v("characters", f"8-character Taiwan travel permit number must be all digits; "
                                 f"{_position_text(bad)} not allowed")
            ]
        return []
    if 10 <= len(number) <= 12:
        bad = _positions(number, _ALNUM)
        if bad:
            return [
                _v("characters", f"one-time Taiwan travel permit number must be letters and digits; "
                                 f"{_position_text(bad)} not allowed")
            ]
        return []
    return [
        _v("length", f"Taiwan travel permit number must be 8 characters (or 10-12 for a one-time permit), "
                     f"got {len(number)}")
    ]


def _check_passport(number: str, today: _dt.date, country: str | None) -> list[Violation]:
    if country == "CHN":
        return _check_prc_passport(number)
    if not 5 <= len(number) <= 20:
        return [_v("length", f"passport number must be 5-20 characters, got {len(number)}")]
    bad = _positions(number, _ALNUM)
    if bad:
        return [_v("characters", f"passport number must be letters and digits; {_position_text(bad)} not allowed")]
    return []


def _check_prc_passport(number: str) -> list[Violation]:
    """PRC ordinary passports: ``E`` + 8 digits, ``E`` + letter + 7 digits, or ``G`` + 8 digits."""
    if len(number) != 9:
        return [_v("length", f"PRC passport number must be 9 characters, got {len(number)}")]
    bad = _positions(number, _ALNUM)
    if bad:
        return [_v("characters", f"PRC passport number must be letters and digits; {_position_text(bad)} not allowed")]
    if number[0] not in ("E", "G"):
        return [_v("prefix", "PRC passport number must start with E or G")]
    second = _DIGITS | _LETTERS if number[0] == "E" else _DIGITS
    bad = _positions(number, second, 1, 2) + _positions(number, _DIGITS, 2)
    if bad:
        return [
            _v(
                "characters",
                "PRC passport number must be E or G and 8 digits, or E, a letter and 7 digits; "
                f"{_position_text(bad)} not allowed",
            )
        ]
    return []


# The number's checker for every type but the passport (checked with its issuing country).
_CHECKERS: dict[DocumentType, Callable[[str, _dt.date], list[Violation]]] = {
    DocumentType.RESIDENT_ID: _check_resident_id,
    DocumentType.RESIDENCE_PERMIT_HMT: _check_residence_permit_hmt,
    DocumentType.PERMANENT_RESIDENCE_ID: _check_permanent_residence_id,
    DocumentType.TRAVEL_PERMIT_HK_MO: _check_travel_permit_hk_mo,
    DocumentType.TRAVEL_PERMIT_TW: _check_travel_permit_tw,
}
