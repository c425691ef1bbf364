"""Demographic normalisation for patient matching (SPECS.md §4, CMS Patient Matching proposal):
case-insensitive, whitespace and punctuation stripped, diacritics folded, phones in E.164,
addresses standardised (USPS Publication 28 abbreviations), placeholders treated as absent.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

# Values that stand for "not known" in registration systems: they must never make a match.
PLACEHOLDER_TEXT = frozenset(
    {
        "unknown", "unk", "none", "null", "na", "nfn", "nln", "fnu", "lnu", "nmn",
        "test", "patient", "xxx", "xx", "x", "noname", "anonymous", "baby",
        "babyboy", "babygirl", "notgiven", "notprovided", "refused", "declined",
    }
)  # fmt: skip
PLACEHOLDER_DATES = frozenset(
    {"1900-01-01", "1800-01-01", "1901-01-01", "0001-01-01", "9999-12-31"}
)
PLACEHOLDER_SSN4 = frozenset({"0000"})  # SSA never issues serial number 0000
PLACEHOLDER_PHONES = frozenset({"+10000000000", "+11111111111", "+19999999999", "+15555555555"})

# USPS Publication 28, Appendix C1 (street suffixes) and C2 (secondary units), plus directionals.
_STREET_WORDS = {
    "street": "st", "str": "st", "avenue": "ave", "av": "ave", "avn": "ave", "road": "rd",
    "drive": "dr", "drv": "dr", "lane": "ln", "boulevard": "blvd", "court": "ct",
    "place": "pl", "circle": "cir", "parkway": "pkwy", "highway": "hwy", "terrace": "ter",
    "square": "sq", "trail": "trl", "crossing": "xing", "expressway": "expy", "freeway": "fwy",
    "heights": "hts", "junction": "jct", "mount": "mt", "mountain": "mtn", "point": "pt",
    "ridge": "rdg", "route": "rte", "station": "sta", "turnpike": "tpke", "valley": "vly",
    "village": "vlg", "view": "vw", "alley": "aly", "center": "ctr", "centre": "ctr",
    "creek": "crk", "estates": "est", "extension": "ext", "grove": "grv", "harbor": "hbr",
    "hill": "hl", "hollow": "holw", "island": "is", "lake": "lk", "manor": "mnr",
    "meadows": "mdws", "park": "park", "pike": "pike", "plaza": "plz", "spring": "spg",
    "springs": "spgs", "way": "way", "apartment": "apt", "suite": "ste", "building": "bldg",
    "floor": "fl", "room": "rm", "department": "dept", "unit": "unit", "number": "",
    "no": "", "north": "n", "south": "s", "east": "e", "west": "w", "northeast": "ne",
    "northwest": "nw", "southeast": "se", "southwest": "sw",
}  # fmt: skip
_SUFFIXES = {
    "jr": "jr", "junior": "jr", "sr": "sr", "senior": "sr", "i": "i", "1st": "i",
    "ii": "ii", "2nd": "ii", "iii": "iii", "3rd": "iii", "iv": "iv", "4th": "iv",
    "v": "v", "5th": "v",
}  # fmt: skip
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def fold(value: str) -> str:
    """Lower case, diacritics folded (é -> e, ß -> ss), everything else kept."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name(value: str | None) -> str | None:
    """A name part for comparison: folded, letters and digits only; placeholders -> None."""
    if value is None:
        return None
    out = _NON_ALNUM.sub("", fold(value))
    return out if out and out not in PLACEHOLDER_TEXT else None


def suffix(value: str | None) -> str | None:
    if value is None:
        return None
    word = _NON_ALNUM.sub("", fold(value))
    return _SUFFIXES.get(word, word or None)


def street(value: str | None) -> str | None:
    """A street line standardised: USPS abbreviations, then whitespace and punctuation removed
    ("123 North Main Street, Apt. 4" and "123 N Main St Apt 4" both become "123nmainstapt4")."""
    if value is None:
        return None
    words = [w for w in _NON_ALNUM.split(fold(value).replace("#", " number ")) if w]
    out = "".join(_STREET_WORDS.get(w, w) for w in words)
    return out if out and out not in PLACEHOLDER_TEXT else None


def postal_code(value: str | None) -> str | None:
    """US ZIP (first five digits); other postal codes folded."""
    if value is None:
        return None
    digits = re.sub(r"\D", "", value)
    if len(digits) in (5, 9):
        return digits[:5]
    out = _NON_ALNUM.sub("", fold(value))
    return out or None


def phone(value: str | None, default_country: str = "1") -> str | None:
    """E.164 (ITU-T E.164; NANP default): "(555) 123-4567" -> "+15551234567"."""
    if value is None:
        return None
    text = value.strip()
    text = re.split(r"(?i)\s*(?:ext\.?|x|#)\s*\d+$", text)[0]  # extensions do not identify
    digits = re.sub(r"\D", "", text)
    if len(set(digits)) <= 1:
        return None  # 000-000-0000, 999-999-9999: placeholders
    if text.startswith("+"):
        out = "+" + digits
    elif text.startswith("00"):
        out = "+" + digits[2:]
    elif default_country == "1" and len(digits) == 11 and digits.startswith("1"):
        out = "+" + digits
    elif default_country == "1" and len(digits) == 10:
        out = "+1" + digits
    else:
        return None
    if not 8 <= len(out) <= 16 or out[1] == "0" or out in PLACEHOLDER_PHONES:
        return None
    return out


def email(value: str | None) -> str | None:
    if value is None or "@" not in value:
        return None
    return value.strip().casefold()


def birthdate(value: str | None) -> date | None:
    """A full date (YYYY-MM-DD, time part ignored); partial dates and placeholders -> None."""
    if value is None:
        return None
    text = value.strip()[:10]
    if text in PLACEHOLDER_DATES:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def ssn_last4(value: str | None) -> str | None:
    if value is None:
        return None
    digits = re.sub(r"\D", "", value)
    if len(digits) < 4 or digits[-4:] in PLACEHOLDER_SSN4:
        return None
    if len(digits) == 9 and (digits[:3] in ("000", "666") or digits[3:5] == "00"):
        return None  # never-issued SSNs are placeholders (SSA area/group rules)
    return digits[-4:]


def identifier(value: str | None) -> str | None:
    """Member ids, MBIs: upper-case letters and digits only."""
    if value is None:
        return None
    out = re.sub(r"[^0-9A-Z]", "", value.upper())
    return out if out and out.lower() not in PLACEHOLDER_TEXT else None


def damerau_levenshtein(a: str, b: str, limit: int = 1) -> int:
    """Optimal-string-alignment distance (adjacent transpositions count one), capped at
    ``limit + 1`` so comparisons stay cheap."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)
