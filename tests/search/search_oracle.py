"""A brute-force FHIR R4 search engine over resources held in memory: the test oracle.

Written from the R4 specification (http://hl7.org/fhir/R4/search.html), not from the server:
every resource of the searched type is visited and every parameter is evaluated by running
the SearchParameter's FHIRPath expression on it and applying the search.html rules to the
values found. Slow and simple on purpose.

Where R4 leaves a choice to the server, or contradicts itself, the oracle does not pretend to
know the answer: each resource is judged YES, NO or MAYBE (three-valued logic: AND = min,
OR = max, NOT swaps YES and NO). :meth:`Oracle.expect` returns the resources that certainly
match and those that possibly match; a conforming server returns a set in between. The MAYBE
cases, all narrow:

* ``ap`` (approximately): YES inside the search value's own range (dates: the ranges
  overlap, as search.html's prefix table says); MAYBE within the recommended 10 % (of the
  value, or for dates of the gap between now and the date); NO beyond.
* numbers in exponent form: search.html says ``1e2`` is "1 significant figure" yet gives the
  range [95 … 105); YES inside the narrower reading, MAYBE inside [50 … 150).
* quantities: "the search processor may choose to perform a search based on canonical
  units", so a UCUM quantity that matches only after unit conversion is MAYBE.
* tokens: a code that differs only in case is MAYBE (matching is case-sensitive "unless the
  underlying semantics … indicate" otherwise); a ``system|code`` search on a ``code`` element
  is MAYBE (its system is implicit from a binding the oracle does not know); ContactPoint
  tokens are MAYBE where reading ContactPoint.system as the token's system (or ignoring
  punctuation, "at the discretion of the server") changes the answer.
* several values in one resource under ``ne``: "any value differs" and "no value is equal"
  disagree, MAYBE; likewise ``:not=a,b`` read as "not a or not b".
* uri ``:below``/``:above`` on a prefix that does not end at a path segment.
* a Reference that has only a display: whether it is "missing".

Queries the oracle cannot judge raise :class:`OracleError` (unknown parameter, malformed
value, a feature it does not model such as ``:in`` or ``_text``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any, TypeVar

from healthmesh.fhir import fhirpath
from healthmesh.fhir.dates import Interval, parse_interval
from healthmesh.fhir.definitions import SearchParamDef, search_params, search_params_by_type

V = TypeVar("V")


class Match(IntEnum):
    NO = 0
    MAYBE = 1
    YES = 2


def m_not(m: Match) -> Match:
    return Match(2 - m)


def m_any(matches: Iterable[Match]) -> Match:
    best = Match.NO
    for m in matches:
        if m is Match.YES:
            return m
        if m > best:
            best = m
    return best


def m_all(matches: Iterable[Match]) -> Match:
    return min(matches, default=Match.YES)


def m_agree(a: Match, b: Match) -> Match:
    """Two acceptable readings of the spec: definite only where both agree."""
    return a if a == b else Match.MAYBE


class OracleError(ValueError):
    """The oracle cannot judge this query (unknown parameter, bad value, unmodelled feature)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What a conforming server may return: at least ``certain``, at most ``possible``."""

    certain: frozenset[str]
    possible: frozenset[str]

    @property
    def exact(self) -> bool:
        return self.certain == self.possible

    def admits(self, got: Iterable[str]) -> bool:
        found = set(got)
        return self.certain <= found <= self.possible


@dataclass(frozen=True, slots=True)
class Value:
    """One value an expression found: the JSON value and its FHIR type."""

    value: Any
    fhir_type: str


# Result parameters (search.html#return): they shape the answer, they do not select.
RESULT_PARAMETERS = frozenset(
    {
        "_count",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_contained",
        "_containedType",
        "_format",
        "_pretty",
    }
)
INCLUDE_PARAMETERS = frozenset(
    {
        "_include",
        "_include:iterate",
        "_include:recurse",
        "_revinclude",
        "_revinclude:iterate",
        "_revinclude:recurse",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
UCUM = "http://unitsofmeasure.org"
ISO_4217 = "urn:iso:std:iso:4217"
NUMBER_TYPES = frozenset(
    {"integer", "decimal", "positiveInt", "unsignedInt", "System.Integer", "System.Decimal"}
)
QUANTITY_TYPES = frozenset(
    {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity"}
)
DATE_TYPES = frozenset({"date", "dateTime", "instant"})
STRING_PRIMITIVES = frozenset({"string", "markdown", "code", "id", "uri", "url", "canonical"})
URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid", "string", "System.String"})
NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_LOCAL_REF = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?")
_ABSOLUTE = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)


# --- escaping (search.html#escaping) --------------------------------------------------------


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not escaped with a backslash; parts stay escaped."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


# --- strings (search.html#string) ----------------------------------------------------------


def normalise(text: str) -> str:
    """Case- and accent-insensitive form: decompose, drop combining marks, lower-case."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def string_parts(value: Value) -> list[str]:
    """The strings a string parameter searches in one value (HumanName and Address parts)."""
    v, kind = value.value, value.fhir_type
    if isinstance(v, str):
        return [v] if kind in STRING_PRIMITIVES or kind == "System.String" else []
    names: tuple[str, ...]
    if kind == "HumanName":
        names = NAME_PARTS
    elif kind == "Address":
        names = ADDRESS_PARTS
    else:
        return []
    assert isinstance(v, Mapping)
    out: list[str] = []
    for name in names:
        part = v.get(name)
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, list):
            out.extend(p for p in part if isinstance(p, str))
    return out


# --- numbers and quantities (search.html#number, #quantity) ---------------------------------


def to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def split_prefix(text: str) -> tuple[str, str]:
    if len(text) > 2 and text[:2] in PREFIXES and not text[2].isalpha():
        return text[:2], text[2:]
    return "eq", text


@dataclass(frozen=True, slots=True)
class NumberQuery:
    prefix: str
    value: Decimal
    half: Decimal  # half a unit in the last significant place: the implicit range is ±half
    narrow_half: Decimal  # the narrower reading search.html's 1e2 example gives (±half/10)

    @staticmethod
    def parse(text: str) -> NumberQuery:
        prefix, number = split_prefix(text)
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", number):
            raise OracleError(f"not a number: {text!r}")
        value = Decimal(number)
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        half = Decimal(5).scaleb(exponent - 1)
        narrow = half / 10 if "e" in number.lower() else half
        return NumberQuery(prefix, value, half, narrow)

    def match(self, target: Decimal) -> Match:
        """A point target against the search value (search.html#number: "100" means the
        range [99.5 … 100.5); with gt/lt/ge/le/sa/eb the precision is ignored)."""
        v, p = self.value, self.prefix
        if p in ("eq", "ne", "ap"):
            if v - self.narrow_half <= target < v + self.narrow_half:
                inside = Match.YES
            elif v - self.half <= target < v + self.half:
                inside = Match.MAYBE
            else:
                inside = Match.NO
            if p == "eq":
                return inside
            if p == "ne":
                return m_not(inside)
            if inside is not Match.NO:
                return Match.YES if inside is Match.YES else Match.MAYBE
            margin = abs(v) / 10 + self.half
            return Match.MAYBE if v - margin <= target <= v + margin else Match.NO
        result = {
            "gt": target > v,
            "sa": target > v,
            "lt": target < v,
            "eb": target < v,
            "ge": target >= v,
            "le": target <= v,
        }[p]
        return Match.YES if result else Match.NO


@dataclass(frozen=True, slots=True)
class QuantityQuery:
    number: NumberQuery
    system: str | None  # None: any system; "": "value||code" (code or unit, any system)
    code: str | None  # None: any unit

    @staticmethod
    def parse(text: str) -> QuantityQuery:
        parts = [unescape(p) for p in split_escaped(text, "|")]
        if len(parts) == 1:
            return QuantityQuery(NumberQuery.parse(parts[0]), None, None)
        if len(parts) != 3 or not parts[2]:
            raise OracleError(f"quantity must be number or number|system|code: {text!r}")
        return QuantityQuery(NumberQuery.parse(parts[0]), parts[1], parts[2])

    def match(self, quantity: Mapping[str, Any], fhir_type: str) -> Match:
        target = to_decimal(quantity.get("value"))
        if target is None:
            return Match.NO
        system: Any
        code: Any
        unit: Any
        if fhir_type == "Money":
            system, code, unit = ISO_4217, quantity.get("currency"), None
        else:
            system, code, unit = quantity.get("system"), quantity.get("code"), quantity.get("unit")
        if self.code is None:
            return self.number.match(target)
        if self.system == "":
            units_match = self.code in (code, unit)
        else:
            units_match = system == self.system and code == self.code
        direct = self.number.match(target) if units_match else Match.NO
        if direct is Match.YES or self.system not in ("", UCUM) or system != UCUM or not code:
            return direct
        converted = fhirpath.Quantity(target, str(code)).convert(self.code)
        if converted is None:
            return direct
        return max(direct, min(Match.MAYBE, self.number.match(converted.value)))


# --- dates (search.html#date, #prefix) -------------------------------------------------------


def date_ranges(value: Value) -> list[Interval]:
    """The time ranges a date-like value covers (Period ends open when absent)."""
    v = value.value
    if value.fhir_type in DATE_TYPES and isinstance(v, str):
        interval = parse_interval(v)
        return [interval] if interval else []
    if value.fhir_type == "Period" and isinstance(v, Mapping):
        start = parse_interval(v["start"]) if isinstance(v.get("start"), str) else None
        end = parse_interval(v["end"]) if isinstance(v.get("end"), str) else None
        if start is None and end is None:
            return []
        return [Interval(start.low if start else EARLIEST, end.high if end else LATEST)]
    if value.fhir_type == "Timing" and isinstance(v, Mapping):
        out = [i for e in v.get("event", []) if isinstance(e, str) and (i := parse_interval(e))]
        bounds = v.get("repeat", {}).get("boundsPeriod")
        if isinstance(bounds, Mapping):
            out += date_ranges(Value(bounds, "Period"))
        return out
    return []


@dataclass(frozen=True, slots=True)
class DateQuery:
    prefix: str
    range: Interval
    now: datetime

    @staticmethod
    def parse(text: str, now: datetime) -> DateQuery:
        prefix, date = split_prefix(text)
        interval = parse_interval(date)
        if interval is None:
            raise OracleError(f"not a date: {text!r}")
        return DateQuery(prefix, interval, now)

    def match(self, target: Interval) -> Match:
        """search.html's prefix table, on the search value's range S and the target's T."""
        s, t = self.range, target
        eq = s.low <= t.low and t.high <= s.high
        gt = t.high > s.high  # the range above S intersects T
        lt = t.low < s.low  # the range below S intersects T
        result = {
            "eq": eq,
            "ne": not eq,
            "gt": gt,
            "lt": lt,
            "ge": gt or eq,
            "le": lt or eq,
            "sa": t.low >= s.high,  # T starts after S ends
            "eb": t.high <= s.low,  # T ends before S starts
            "ap": t.low < s.high and s.low < t.high,  # the ranges overlap
        }[self.prefix]
        if result:
            return Match.YES
        if self.prefix != "ap":
            return Match.NO
        gap = max(abs(self.now - s.low), abs(self.now - s.high)) / 10
        try:
            low, high = s.low - gap, s.high + gap
        except OverflowError:
            return Match.MAYBE
        return Match.MAYBE if t.low < high and low < t.high else Match.NO


# --- tokens (search.html#token) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenQuery:
    system: str | None  # None: any system; "": no system
    code: str | None  # None: any code

    @staticmethod
    def parse(text: str) -> TokenQuery:
        parts = split_escaped(text, "|")
        if len(parts) == 1:
            if not parts[0]:
                raise OracleError("empty token")
            return TokenQuery(None, unescape(parts[0]))
        if len(parts) != 2 or (not parts[0] and not parts[1]):
            raise OracleError(f"malformed token: {text!r}")
        return TokenQuery(unescape(parts[0]), unescape(parts[1]) or None)


def _code_match(query: str | None, code: Any) -> Match:
    if not isinstance(code, str):
        return Match.NO
    if query is None or code == query:
        return Match.YES
    return Match.MAYBE if code.casefold() == query.casefold() else Match.NO


def _coded(query: TokenQuery, system: Any, code: Any) -> Match:
    """A Coding-like (system, code) pair against ``system|code`` forms."""
    if not isinstance(code, str) and query.code is not None:
        return Match.NO
    if query.system is None:
        pass
    elif query.system == "":
        if isinstance(system, str):
            return Match.NO
    elif system != query.system:
        return Match.NO
    if query.code is None:
        return Match.YES if isinstance(code, str) or query.system else Match.NO
    return _code_match(query.code, code)


def _primitive(query: TokenQuery, value: str) -> Match:
    """A value without a system (string, id, uri, boolean) against the token forms."""
    if query.system:
        return Match.NO
    return _code_match(query.code, value) if query.code is not None else Match.NO


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isalnum()).casefold()


def token_match(query: TokenQuery, value: Value) -> Match:
    v, kind = value.value, value.fhir_type
    if kind == "Coding" and isinstance(v, Mapping):
        return _coded(query, v.get("system"), v.get("code"))
    if kind == "CodeableConcept" and isinstance(v, Mapping):
        return m_any(
            _coded(query, c.get("system"), c.get("code"))
            for c in v.get("coding", [])
            if isinstance(c, Mapping)
        )
    if kind == "Identifier" and isinstance(v, Mapping):
        return _coded(query, v.get("system"), v.get("value"))
    if kind == "ContactPoint" and isinstance(v, Mapping):
        number = v.get("value")
        if not isinstance(number, str):
            return Match.NO
        no_system = _primitive(query, number)
        as_system = _coded(query, v.get("system"), number)
        result = m_agree(no_system, as_system)
        if result is Match.NO and query.code and _digits(query.code) == _digits(number):
            system_ok = query.system in (None, "") or query.system == v.get("system")
            return Match.MAYBE if system_ok else Match.NO
        return result
    if isinstance(v, bool):
        return _primitive(query, "true" if v else "false")
    if isinstance(v, str):
        if kind == "code":
            if query.system is None:
                return _code_match(query.code, v)
            # "the system is implicit from the value set binding": unknown here.
            return min(Match.MAYBE, _code_match(query.code, v))
        return _primitive(query, v)
    return Match.NO


def token_texts(value: Value) -> list[tuple[str, Match]]:
    """Text associated with a code (:text): CodeableConcept.text, Coding.display and
    Identifier.type.text; Identifier.type.coding.display is not named, so only MAYBE."""
    v, kind = value.value, value.fhir_type
    if not isinstance(v, Mapping):
        return []
    out: list[tuple[str, Match]] = []
    if kind == "Coding" and isinstance(v.get("display"), str):
        out.append((v["display"], Match.YES))
    if kind == "CodeableConcept":
        if isinstance(v.get("text"), str):
            out.append((v["text"], Match.YES))
        out += [
            (c["display"], Match.YES)
            for c in v.get("coding", [])
            if isinstance(c, Mapping) and isinstance(c.get("display"), str)
        ]
    if kind == "Identifier" and isinstance(v.get("type"), Mapping):
        kind_of = v["type"]
        if isinstance(kind_of.get("text"), str):
            out.append((kind_of["text"], Match.YES))
        out += [
            (c["display"], Match.MAYBE)
            for c in kind_of.get("coding", [])
            if isinstance(c, Mapping) and isinstance(c.get("display"), str)
        ]
    return out


# --- references (search.html#reference) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference target: a local ``(type, id)`` or an external URL."""

    res_type: str | None
    id: str | None
    url: str | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        return (self.res_type, self.id) if self.res_type and self.id else None


def parse_reference(text: str, base: str) -> Ref | None:
    """Local when relative or under this server's base; None for a contained ``#id``."""
    if text.startswith("#"):
        return None
    if base and text.startswith(base + "/"):
        text = text[len(base) + 1 :]
    local = _LOCAL_REF.fullmatch(text)
    if local:
        return Ref(local.group(1), local.group(2))
    history = text.find("/_history/")
    return Ref(None, None, text[:history] if history >= 0 else text)


# --- the oracle -----------------------------------------------------------------------------


Predicate = Callable[[Sequence[Value]], Match]


class Oracle:
    """Brute-force R4 search over ``resources`` (as the server stores them).

    ``base`` is the server's base URL, so absolute references to it count as local; ``now``
    is used by the ``ap`` prefix on dates.
    """

    def __init__(
        self, resources: Iterable[Mapping[str, Any]], *, base: str = "", now: datetime | None = None
    ) -> None:
        self.base = base.rstrip("/")
        self.now = now or datetime.now(UTC)
        self._store: dict[str, dict[str, Mapping[str, Any]]] = {}
        for resource in resources:
            self._store.setdefault(resource["resourceType"], {})[resource["id"]] = resource
        self._defs = search_params_by_type()
        self._by_url = {p.url: p for p in search_params()}
        self._values: dict[tuple[str, str], dict[str, list[Value]]] = {}
        self._composites: dict[tuple[str, str], dict[str, list[list[list[Value]]]]] = {}
        self._matches: dict[tuple[str, str, str], dict[str, Match]] = {}
        self._refs: dict[tuple[str, str], dict[str, list[Ref]]] = {}
        self._referrers: dict[tuple[str, str], dict[str, set[str]]] = {}

    # -- the data ---------------------------------------------------------------------------

    def types(self) -> list[str]:
        return sorted(self._store)

    def ids(self, res_type: str) -> list[str]:
        return sorted(self._store.get(res_type, {}))

    def resource(self, res_type: str, res_id: str) -> Mapping[str, Any] | None:
        return self._store.get(res_type, {}).get(res_id)

    def param(self, res_type: str, code: str) -> SearchParamDef | None:
        for key in (res_type, "Resource", "DomainResource"):
            found = self._defs.get(key, {}).get(code)
            if found is not None:
                return found
        return None

    def values(self, res_type: str, code: str) -> dict[str, list[Value]]:
        """The values of a (non-composite) parameter for every resource of ``res_type``."""
        cached = self._values.get((res_type, code))
        if cached is not None:
            return cached
        param = self._require(res_type, code)
        if param.expression is None or param.type == "composite":
            raise OracleError(f"{res_type}.{code} has no plain expression")
        path = fhirpath.compile(param.expression)
        out = {
            rid: [v for item in path.run(res) if (v := _value(item)) is not None]
            for rid, res in self._store.get(res_type, {}).items()
        }
        self._values[(res_type, code)] = out
        return out

    def references(self, res_type: str, code: str) -> dict[str, list[Ref]]:
        """Reference targets of a reference parameter, per resource."""
        cached = self._refs.get((res_type, code))
        if cached is None:
            cached = {}
            for rid, values in self.values(res_type, code).items():
                refs = [r for v in values if (r := self._ref(v)) is not None]
                if refs:
                    cached[rid] = refs
            self._refs[(res_type, code)] = cached
        return cached

    def referrers(self, res_type: str, code: str) -> dict[str, set[str]]:
        """Target id (or URL) -> the resources whose parameter ``code`` points at it."""
        cached = self._referrers.get((res_type, code))
        if cached is None:
            cached = {}
            for rid, refs in self.references(res_type, code).items():
                for r in refs:
                    key = r.id if r.id is not None else r.url
                    if key is not None:
                        cached.setdefault(key, set()).add(rid)
            self._referrers[(res_type, code)] = cached
        return cached

    def _ref(self, value: Value) -> Ref | None:
        v = value.value
        if isinstance(v, Mapping):
            text = v.get("reference")
            return parse_reference(text, self.base) if isinstance(text, str) else None
        if isinstance(v, str):  # canonical / uri references
            return Ref(None, None, v.split("|", 1)[0])
        return None

    def _require(self, res_type: str, code: str) -> SearchParamDef:
        param = self.param(res_type, code)
        if param is None:
            raise OracleError(f"unknown search parameter {code!r} for {res_type}")
        return param

    # -- searching --------------------------------------------------------------------------

    def search(self, res_type: str, params: Sequence[tuple[str, str]]) -> set[str]:
        """Ids that certainly match (the spec's answer where it has one)."""
        return set(self.expect(res_type, params).certain)

    def expect(self, res_type: str, params: Sequence[tuple[str, str]]) -> Expected:
        """Repeated parameters are AND (search.html#combining): a resource's match is the
        least of its matches on each parameter."""
        filters = [
            (name, value)
            for name, value in params
            if name not in RESULT_PARAMETERS and name not in INCLUDE_PARAMETERS
        ]
        if not filters:
            everything = frozenset(self._store.get(res_type, {}))
            return Expected(everything, everything)
        # Parameters judged on the whole type first (cached: references through an index,
        # chains, _has); the others are then judged only on the resources still in.
        filters.sort(key=lambda f: 0 if self._whole(res_type, *f) else 1)
        current: dict[str, Match] | None = None
        for name, value in filters:
            if current is None or self._whole(res_type, name, value):
                found = self.match_param(res_type, name, value)
            else:
                found = self._match_param(res_type, name, value, current.keys())
            if current is None:
                current = found
            else:
                current = {
                    rid: m
                    for rid, m0 in current.items()
                    if (m := min(m0, found.get(rid, Match.NO))) is not Match.NO
                }
        assert current is not None
        return Expected(
            frozenset(rid for rid, m in current.items() if m is Match.YES),
            frozenset(current),
        )

    def _whole(self, res_type: str, name: str, value: str) -> bool:
        """Judged once for the whole type: already known, a reference looked up in an index,
        or a chain or _has (computed from the other type's matches)."""
        if (res_type, name, value) in self._matches or "." in name or name.startswith("_has:"):
            return True
        code, _, modifier = name.partition(":")
        param = self.param(res_type, code)
        return (
            param is not None
            and param.type == "reference"
            and modifier not in ("identifier", "missing")
        )

    def match_param(self, res_type: str, name: str, value: str) -> dict[str, Match]:
        """Resources of ``res_type`` that ``name=value`` selects (NO entries left out)."""
        key = (res_type, name, value)
        cached = self._matches.get(key)
        if cached is None:
            cached = self._match_param(res_type, name, value)
            self._matches[key] = cached
        return cached

    def _match_param(
        self, res_type: str, name: str, value: str, within: Collection[str] | None = None
    ) -> dict[str, Match]:
        """As :meth:`match_param`; with ``within``, only those resources are judged."""
        if name.startswith("_has:"):
            return self._reverse_chain(res_type, name, value)
        if "." in name:
            return self._chain(res_type, name, value)
        code, _, modifier = name.partition(":")
        param = self._require(res_type, code)
        if param.expression is None:
            raise OracleError(f"{code} is not modelled (no expression)")
        if modifier == "missing":
            return self._missing(res_type, param, value, within)
        if param.type == "composite":
            if modifier:
                raise OracleError(f"modifier :{modifier} on composite {code}")
            return self._composite(res_type, param, value, within)
        if param.type == "reference" and modifier != "identifier":
            return self._reference_match(res_type, param, modifier, value)
        predicate = self._predicate(param.type, modifier, value, res_type, param)
        out: dict[str, Match] = {}
        for rid, values in _restrict(self.values(res_type, code), within):
            m = predicate(values)
            if m is not Match.NO:
                out[rid] = m
        return out

    def _missing(
        self, res_type: str, param: SearchParamDef, value: str, within: Collection[str] | None
    ) -> dict[str, Match]:
        if value not in ("true", "false"):
            raise OracleError(f":missing takes true or false, not {value!r}")
        if param.type == "composite":
            raise OracleError(":missing on a composite parameter is not modelled")
        want_missing = value == "true"
        out: dict[str, Match] = {}
        for rid, values in _restrict(self.values(res_type, param.code), within):
            present = m_any(_presence(v) for v in values)
            m = m_not(present) if want_missing else present
            if m is not Match.NO:
                out[rid] = m
        return out

    def _predicate(
        self, kind: str, modifier: str, text: str, res_type: str, param: SearchParamDef
    ) -> Predicate:
        """Comma-separated values are OR (search.html#combining); one predicate over all the
        values one resource has for the parameter."""
        alternatives = split_escaped(text, ",")
        if kind == "token" and modifier == "not":
            positives = [self._single(kind, "", alt, res_type, param) for alt in alternatives]

            def negated(values: Sequence[Value]) -> Match:
                each = [p(values) for p in positives]
                return m_agree(m_not(m_any(each)), m_any(m_not(m) for m in each))

            return negated
        singles = [self._single(kind, modifier, alt, res_type, param) for alt in alternatives]
        return lambda values: m_any(p(values) for p in singles)

    def _single(
        self, kind: str, modifier: str, text: str, res_type: str, param: SearchParamDef
    ) -> Predicate:
        if kind == "string":
            return _string_predicate(modifier, unescape(text))
        if kind == "token":
            return _token_predicate(modifier, text)
        if kind == "date":
            _no_modifier(kind, modifier)
            date = DateQuery.parse(unescape(text), self.now)
            return _ordered(date.prefix, lambda v: [date.match(r) for r in date_ranges(v)])
        if kind == "number":
            _no_modifier(kind, modifier)
            number = NumberQuery.parse(unescape(text))
            return _ordered(
                number.prefix,
                lambda v: (
                    [number.match(d)]
                    if v.fhir_type in NUMBER_TYPES and (d := to_decimal(v.value)) is not None
                    else []
                ),
            )
        if kind == "quantity":
            _no_modifier(kind, modifier)
            quantity = QuantityQuery.parse(text)
            return _ordered(
                quantity.number.prefix,
                lambda v: (
                    [quantity.match(v.value, v.fhir_type)]
                    if (v.fhir_type in QUANTITY_TYPES or v.fhir_type == "Money")
                    and isinstance(v.value, Mapping)
                    else []
                ),
            )
        if kind == "uri":
            return _uri_predicate(modifier, unescape(text))
        if kind == "reference":
            return self._reference_predicate(modifier, text, param)
        raise OracleError(f"parameter type {kind} is not modelled")

    def _reference_predicate(self, modifier: str, text: str, param: SearchParamDef) -> Predicate:
        if modifier == "identifier":
            token = TokenQuery.parse(text)
            return lambda values: m_any(
                token_match(token, Value(v.value["identifier"], "Identifier"))
                for v in values
                if isinstance(v.value, Mapping) and isinstance(v.value.get("identifier"), Mapping)
            )
        test, _ = self._reference_test(modifier, text, param)
        return lambda values: m_any(
            Match.YES if test(r) else Match.NO for v in values if (r := self._ref(v)) is not None
        )

    def _reference_match(
        self, res_type: str, param: SearchParamDef, modifier: str, text: str
    ) -> dict[str, Match]:
        """``[param]=[id]``, ``Type/id``, an absolute URL, or ``:Type`` with an id; through
        an index of the references (the same rules as :meth:`_reference_test`)."""
        refs = self.references(res_type, param.code)
        index = self.referrers(res_type, param.code)
        out: dict[str, Match] = {}
        for alt in split_escaped(text, ","):
            test, target = self._reference_test(modifier, alt, param)
            key = target.id if target.id is not None else target.url
            for rid in index.get(key or "", set()):
                if any(test(r) for r in refs[rid]):
                    out[rid] = Match.YES
        return out

    def _reference_test(
        self, modifier: str, text: str, param: SearchParamDef
    ) -> tuple[Callable[[Ref], bool], Ref]:
        """A test for one reference value, and the target it names."""
        if modifier and not (modifier[0].isupper() and modifier.isalpha()):
            raise OracleError(f"modifier :{modifier} on a reference is not modelled")
        wanted = unescape(text)
        if "/_history/" in wanted:
            raise OracleError("version-specific reference searches are not modelled")
        target = parse_reference(wanted, self.base)
        if target is None:
            raise OracleError(f"bad reference {wanted!r}")
        if modifier:
            if target.key is not None and target.res_type != modifier:
                return (lambda ref: False), target
            if target.url is not None and "/" not in wanted and ":" not in wanted:
                target = Ref(modifier, wanted)
            elif target.key is None:
                raise OracleError(f"{wanted!r} with :{modifier} is not an id")
        types = param.target
        final = target

        def matches(ref: Ref) -> bool:
            if final.key is not None:
                return ref.key == final.key
            if final.url is not None and _ABSOLUTE.match(final.url):
                return ref.url == final.url
            # A bare id: a reference to a resource of any of the allowed types with that id.
            return ref.id == final.url and (not types or ref.res_type in types)

        return matches, final

    def _composite(
        self, res_type: str, param: SearchParamDef, text: str, within: Collection[str] | None
    ) -> dict[str, Match]:
        components = [self._by_url.get(url) for url, _ in param.components]
        if not components or any(c is None for c in components):
            raise OracleError(f"composite {param.code}: unknown component definitions")
        per_node = self._composite_values(res_type, param)
        alternatives: list[list[Predicate]] = []
        for alt in split_escaped(text, ","):
            pieces = split_escaped(alt, "$")
            if len(pieces) != len(components):
                raise OracleError(f"{param.code} needs {len(components)} $-separated values")
            alternatives.append(
                [
                    self._single(c.type, "", piece, res_type, c)
                    for c, piece in zip(components, pieces, strict=True)
                    if c is not None
                ]
            )
        out: dict[str, Match] = {}
        for rid, nodes in _restrict(per_node, within):
            # The components must match within the same element instance (search.html#combining).
            m = m_any(
                m_all(pred(node[i]) for i, pred in enumerate(preds))
                for preds in alternatives
                for node in nodes
            )
            if m is not Match.NO:
                out[rid] = m
        return out

    def _composite_values(
        self, res_type: str, param: SearchParamDef
    ) -> dict[str, list[list[list[Value]]]]:
        key = (res_type, param.code)
        cached = self._composites.get(key)
        if cached is not None:
            return cached
        assert param.expression is not None
        base = fhirpath.compile(param.expression)
        parts = [fhirpath.compile(expr) for _, expr in param.components]
        out: dict[str, list[list[list[Value]]]] = {}
        for rid, res in self._store.get(res_type, {}).items():
            nodes: list[list[list[Value]]] = []
            for node in base.run(res):
                if not isinstance(node, fhirpath.Node):
                    continue
                nodes.append(
                    [[v for item in part.run(node) if (v := _value(item))] for part in parts]
                )
            out[rid] = nodes
        self._composites[key] = out
        return out

    # -- chains (search.html#chaining, #has) ------------------------------------------------

    def _chain(self, res_type: str, name: str, value: str) -> dict[str, Match]:
        head, rest = name.split(".", 1)
        code, _, type_modifier = head.partition(":")
        param = self._require(res_type, code)
        if param.type != "reference":
            raise OracleError(f"cannot chain through {code}: not a reference parameter")
        next_code = re.split(r"[.:]", rest, maxsplit=1)[0]
        if type_modifier:
            if not type_modifier[0].isupper():
                raise OracleError(f"chain modifier :{type_modifier} is not a type")
            candidates = [type_modifier]
        else:
            targets = param.target or tuple(self._store)
            candidates = [t for t in targets if self._defines(t, next_code)]
        if not candidates:
            raise OracleError(f"no target of {res_type}.{code} has a parameter {next_code!r}")
        for t in candidates:
            self._require(t, next_code)
        found = {t: self.match_param(t, rest, value) for t in candidates}
        out: dict[str, Match] = {}
        for rid, refs in self.references(res_type, code).items():
            m = m_any(
                found[r.res_type].get(r.id, Match.NO)
                for r in refs
                if r.res_type in found and r.id is not None
            )
            if m is not Match.NO:
                out[rid] = m
        return out

    def _defines(self, res_type: str, code: str) -> bool:
        return code.startswith("_has") or self.param(res_type, code) is not None

    def _reverse_chain(self, res_type: str, name: str, value: str) -> dict[str, Match]:
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise OracleError(f"_has needs _has:Type:reference:parameter, not {name!r}")
        _, source, ref_code, rest = parts
        param = self._require(source, ref_code)
        if param.type != "reference":
            raise OracleError(f"_has through {source}.{ref_code}: not a reference parameter")
        inner = self.match_param(source, rest, value)
        refs = self.references(source, ref_code)
        out: dict[str, Match] = {}
        for sid, m in inner.items():
            for r in refs.get(sid, []):
                if r.res_type == res_type and r.id is not None and m > out.get(r.id, Match.NO):
                    out[r.id] = m
        return out

    # -- _include / _revinclude (search.html#include) ---------------------------------------

    def includes(
        self,
        res_type: str,
        params: Sequence[tuple[str, str]],
        matched: Iterable[str] | None = None,
    ) -> set[str]:
        """``Type/id`` of every resource the ``_include``/``_revinclude`` parameters add to
        ``matched`` (by default the certain matches). ``:iterate`` ones are applied again to
        what was included, until nothing new appears."""
        directives = [(n, v) for n, v in params if n in INCLUDE_PARAMETERS]
        ids = self.search(res_type, params) if matched is None else set(matched)
        frontier = {(res_type, i) for i in ids}
        included: set[tuple[str, str]] = set()
        first = True
        while frontier:
            found: set[tuple[str, str]] = set()
            for name, value in directives:
                if first or name.endswith((":iterate", ":recurse")):
                    found |= self._include_step(name.startswith("_revinclude"), value, frontier)
            frontier = found - included
            included |= found
            first = False
        return {f"{t}/{i}" for t, i in included}

    def _include_step(
        self, reverse: bool, value: str, frontier: set[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise OracleError(f"include value must be Type:param[:Target], not {value!r}")
        source, code = parts[0], parts[1]
        target_type = parts[2] if len(parts) == 3 else None
        if code == "*":
            codes = [
                c
                for c in {**self._defs.get("Resource", {}), **self._defs.get(source, {})}
                if (p := self.param(source, c)) is not None and p.type == "reference"
            ]
        else:
            param = self._require(source, code)
            if param.type != "reference":
                raise OracleError(f"{source}:{code} is not a reference parameter")
            codes = [code]
        out: set[tuple[str, str]] = set()
        for c in codes:
            refs = self.references(source, c)
            if not reverse:
                for t, i in frontier:
                    if t != source:
                        continue
                    for r in refs.get(i, []):
                        key = r.key
                        if key and (target_type in (None, key[0])) and self.resource(*key):
                            out.add(key)
            else:
                for sid, targets in refs.items():
                    if any(
                        r.key in frontier and target_type in (None, r.res_type) for r in targets
                    ):
                        out.add((source, sid))
        return out


# --- predicates ------------------------------------------------------------------------------


def _value(item: Any) -> Value | None:
    if isinstance(item, fhirpath.Node):
        if item.value is None:
            return None
        return Value(item.value, item.fhir_type or "")
    if isinstance(item, bool):
        return Value(item, "System.Boolean")
    if isinstance(item, int):
        return Value(item, "System.Integer")
    if isinstance(item, Decimal):
        return Value(item, "System.Decimal")
    if isinstance(item, str):
        return Value(item, "System.String")
    return None


def _restrict(table: Mapping[str, V], within: Collection[str] | None) -> Iterable[tuple[str, V]]:
    if within is None:
        return table.items()
    return ((rid, table[rid]) for rid in within if rid in table)


def _presence(value: Value) -> Match:
    """Whether a value counts as "present" for :missing."""
    v = value.value
    if value.fhir_type == "Reference" and isinstance(v, Mapping):
        if "reference" in v or "identifier" in v:
            return Match.YES
        return Match.MAYBE  # display only: an index may or may not count it
    return Match.YES


def _no_modifier(kind: str, modifier: str) -> None:
    if modifier:
        raise OracleError(f"modifier :{modifier} is not defined for {kind} parameters")


def _ordered(prefix: str, judge: Callable[[Value], list[Match]]) -> Predicate:
    """Any value matching selects the resource. For ``ne`` with several values, "some value
    is not equal" and "no value is equal" are both readings: MAYBE where they differ."""

    def predicate(values: Sequence[Value]) -> Match:
        each = [m for v in values for m in judge(v)]
        anyone = m_any(each)
        if prefix != "ne" or len(each) < 2:
            return anyone
        return m_agree(anyone, m_all(each))

    return predicate


def _string_predicate(modifier: str, text: str) -> Predicate:
    if modifier not in ("", "exact", "contains"):
        raise OracleError(f"modifier :{modifier} is not modelled for string parameters")
    wanted = normalise(text)

    def test(part: str) -> bool:
        if modifier == "exact":
            return part == text
        if modifier == "contains":
            return wanted in normalise(part)
        return normalise(part).startswith(wanted)

    return lambda values: m_any(
        Match.YES if test(part) else Match.NO for v in values for part in string_parts(v)
    )


def _token_predicate(modifier: str, text: str) -> Predicate:
    if modifier == "text":
        wanted = normalise(unescape(text))
        return lambda values: m_any(
            level if normalise(t).startswith(wanted) else Match.NO
            for v in values
            for t, level in token_texts(v)
        )
    if modifier == "of-type":
        parts = [unescape(p) for p in split_escaped(text, "|")]
        if len(parts) != 3 or not all(parts):
            raise OracleError(":of-type needs system|code|value")
        return lambda values: m_any(_of_type(parts, v) for v in values)
    if modifier:
        raise OracleError(f"modifier :{modifier} is not modelled for token parameters")
    query = TokenQuery.parse(text)
    return lambda values: m_any(token_match(query, v) for v in values)


def _of_type(parts: list[str], value: Value) -> Match:
    v = value.value
    if value.fhir_type != "Identifier" or not isinstance(v, Mapping):
        return Match.NO
    codings = v.get("type", {}).get("coding", [])
    typed = any(
        isinstance(c, Mapping) and c.get("system") == parts[0] and c.get("code") == parts[1]
        for c in codings
    )
    return _code_match(parts[2], v.get("value")) if typed else Match.NO


def _uri_predicate(modifier: str, text: str) -> Predicate:
    if modifier not in ("", "below", "above"):
        raise OracleError(f"modifier :{modifier} is not modelled for uri parameters")

    def prefix_match(prefix: str, whole: str) -> Match:
        if not whole.startswith(prefix):
            return Match.NO
        rest = whole[len(prefix) :]
        at_segment = not rest or prefix.endswith("/") or rest.startswith(("/", "|"))
        return Match.YES if at_segment else Match.MAYBE

    def test(uri: str) -> Match:
        if modifier == "below":
            return prefix_match(text, uri)
        if modifier == "above":
            return prefix_match(uri, text)
        return Match.YES if uri == text else Match.NO

    return lambda values: m_any(
        test(v.value) for v in values if isinstance(v.value, str) and v.fhir_type in URI_TYPES
    )
