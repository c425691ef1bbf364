"""A small UCUM unit parser for comparing and converting FHIRPath quantities.

FHIRPath quantities carry UCUM units (spec §2.1.22 "Quantity", §6.1 equality "after conversion
to a common unit"). This covers the UCUM syntax (prefixes, ``.``/``/`` products, exponents,
annotations, ``10*n``) and the units seen in clinical data; units with offsets (Cel, [degF]) are
only comparable with themselves. Calendar durations ``year``/``month`` get their own dimension so
that they are never equal to UCUM ``a``/``mo`` (spec §2.1.22.1 "Time-valued quantities").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Final

# Dimension vector: m, g, s, rad, K, C, cd, calendar-month.
Dims = tuple[int, int, int, int, int, int, int, int]
_NONE: Final[Dims] = (0, 0, 0, 0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Unit:
    factor: Decimal
    dims: Dims
    special: str | None = None  # non-ratio units (offsets) compare only with themselves

    def __mul__(self, other: Unit) -> Unit:
        dims = tuple(a + b for a, b in zip(self.dims, other.dims, strict=True))
        return Unit(self.factor * other.factor, dims, _special(self, other))  # type: ignore[arg-type]

    def __truediv__(self, other: Unit) -> Unit:
        dims = tuple(a - b for a, b in zip(self.dims, other.dims, strict=True))
        return Unit(self.factor / other.factor, dims, _special(self, other))  # type: ignore[arg-type]

    def __pow__(self, exp: int) -> Unit:
        dims = tuple(a * exp for a in self.dims)
        return Unit(self.factor**exp, dims, self.special)  # type: ignore[arg-type]


def _special(a: Unit, b: Unit) -> str | None:
    return a.special or b.special


def _dim(index: int) -> Dims:
    dims = [0] * 8
    dims[index] = 1
    return tuple(dims)  # type: ignore[return-value]


_BASE: Final[dict[str, Unit]] = {
    "m": Unit(Decimal(1), _dim(0)),
    "g": Unit(Decimal(1), _dim(1)),
    "s": Unit(Decimal(1), _dim(2)),
    "rad": Unit(Decimal(1), _dim(3)),
    "K": Unit(Decimal(1), _dim(4)),
    "C": Unit(Decimal(1), _dim(5)),
    "cd": Unit(Decimal(1), _dim(6)),
    "_cal_mo": Unit(Decimal(1), _dim(7)),
}

# (code, factor, definition, metric): code = factor × definition. Metric units take prefixes.
_DERIVED: Final[tuple[tuple[str, str, str, bool], ...]] = (
    ("1", "1", "", False),
    ("10*", "10", "", False),
    ("10^", "10", "", False),
    ("%", "0.01", "", False),
    ("[ppth]", "0.001", "", False),
    ("[ppm]", "0.000001", "", False),
    ("[pi]", "3.1415926535897932384626433832795028841971693993751058209749445923", "", False),
    ("mol", "6.02214076E23", "", True),
    ("eq", "1", "mol", True),
    ("osm", "1", "mol", True),
    ("kat", "1", "mol/s", True),
    ("U", "1", "umol/min", True),
    ("[iU]", "1", "", True),
    ("[IU]", "1", "[iU]", True),
    ("[arb'U]", "1", "", False),
    ("sr", "1", "rad2", True),
    ("deg", "0.01745329251994329576923690768488612713442871888541725456097191440", "rad", False),
    ("'", "1", "deg/60", False),
    ("''", "1", "'/60", False),
    ("gon", "0.9", "deg", False),
    ("Hz", "1", "s-1", True),
    ("N", "1", "kg.m/s2", True),
    ("Pa", "1", "N/m2", True),
    ("J", "1", "N.m", True),
    ("W", "1", "J/s", True),
    ("A", "1", "C/s", True),
    ("V", "1", "J/C", True),
    ("F", "1", "C/V", True),
    ("Ohm", "1", "V/A", True),
    ("S", "1", "Ohm-1", True),
    ("Wb", "1", "V.s", True),
    ("T", "1", "Wb/m2", True),
    ("H", "1", "Wb/A", True),
    ("lm", "1", "cd.sr", True),
    ("lx", "1", "lm/m2", True),
    ("Bq", "1", "s-1", True),
    ("Gy", "1", "J/kg", True),
    ("Sv", "1", "J/kg", True),
    ("Ci", "37E9", "Bq", True),
    ("R", "0.000258", "C/kg", True),
    ("RAD", "100", "erg/g", True),
    ("REM", "1", "RAD", True),
    ("erg", "1", "dyn.cm", True),
    ("dyn", "1", "g.cm/s2", True),
    ("P", "1", "dyn.s/cm2", True),
    ("St", "1", "cm2/s", True),
    ("G", "0.0001", "T", True),
    ("cal", "4.184", "J", True),
    ("[Cal]", "1", "kcal", False),
    ("eV", "1.602176634E-19", "J", True),
    ("u", "1.66053906660E-24", "g", True),
    ("min", "60", "s", False),
    ("h", "60", "min", False),
    ("d", "24", "h", False),
    ("wk", "7", "d", False),
    ("a", "365.25", "d", False),
    ("a_j", "365.25", "d", False),
    ("a_t", "365.24219", "d", False),
    ("a_g", "365.2425", "d", False),
    ("mo", "1", "a/12", False),
    ("mo_j", "1", "a_j/12", False),
    ("mo_g", "1", "a_g/12", False),
    ("mo_s", "29.53059", "d", False),
    ("L", "1", "dm3", True),
    ("l", "1", "dm3", True),
    ("ar", "100", "m2", True),
    ("t", "1000", "kg", True),
    ("bar", "100000", "Pa", True),
    ("atm", "101325", "Pa", False),
    ("m[H2O]", "9.80665", "kPa", True),
    ("m[Hg]", "133.3220", "kPa", True),
    ("[in_i'H2O]", "1", "m[H2O].[in_i]/m", False),
    ("[in_i'Hg]", "1", "m[Hg].[in_i]/m", False),
    ("Ao", "0.1", "nm", False),
    ("[in_i]", "2.54", "cm", False),
    ("[ft_i]", "12", "[in_i]", False),
    ("[yd_i]", "3", "[ft_i]", False),
    ("[mi_i]", "5280", "[ft_i]", False),
    ("[nmi_i]", "1852", "m", False),
    ("[fth_i]", "6", "[ft_i]", False),
    ("[hd_i]", "4", "[in_i]", False),
    ("[mil_i]", "0.001", "[in_i]", False),
    ("[Ch]", "0.3333333333333333333333333333", "mm", False),
    ("[sft_i]", "1", "[ft_i]2", False),
    ("[sin_i]", "1", "[in_i]2", False),
    ("[cft_i]", "1", "[ft_i]3", False),
    ("[cin_i]", "1", "[in_i]3", False),
    ("[gal_us]", "231", "[in_i]3", False),
    ("[qt_us]", "0.25", "[gal_us]", False),
    ("[pt_us]", "0.5", "[qt_us]", False),
    ("[cup_us]", "0.5", "[pt_us]", False),
    ("[foz_us]", "0.0078125", "[gal_us]", False),
    ("[tbs_us]", "0.5", "[foz_us]", False),
    ("[tsp_us]", "1", "[tbs_us]/3", False),
    ("[gal_br]", "4.54609", "l", False),
    ("[pt_br]", "0.125", "[gal_br]", False),
    ("[foz_br]", "0.05", "[pt_br]", False),
    ("[drp]", "1", "ml/20", False),
    ("[lb_av]", "453.59237", "g", False),
    ("[oz_av]", "0.0625", "[lb_av]", False),
    ("[dr_av]", "0.0625", "[oz_av]", False),
    ("[gr]", "64.79891", "mg", False),
    ("[ston_av]", "100", "[lb_av]", False),
    ("[stone_av]", "14", "[lb_av]", False),
    ("[lton_av]", "2240", "[lb_av]", False),
    ("[car_m]", "0.2", "g", False),
    ("[g]", "9.80665", "m/s2", False),
    ("[lbf_av]", "1", "[lb_av].[g]", False),
    ("[psi]", "1", "[lbf_av]/[in_i]2", False),
    ("[mclg'U]", "1", "", False),
    ("g%", "1", "g/dl", True),
    ("[HPF]", "1", "", False),
    ("[LPF]", "100", "", False),
    ("_cal_yr", "12", "_cal_mo", False),
)

_SPECIAL: Final[dict[str, Unit]] = {
    "Cel": Unit(Decimal(1), _dim(4), "Cel"),
    "[degF]": Unit(Decimal(5) / Decimal(9), _dim(4), "[degF]"),
    "[degRe]": Unit(Decimal(5) / Decimal(4), _dim(4), "[degRe]"),
}

_PREFIXES: Final[dict[str, Decimal]] = {
    "Y": Decimal("1E24"),
    "Z": Decimal("1E21"),
    "E": Decimal("1E18"),
    "P": Decimal("1E15"),
    "T": Decimal("1E12"),
    "G": Decimal("1E9"),
    "M": Decimal("1E6"),
    "k": Decimal("1E3"),
    "h": Decimal("1E2"),
    "da": Decimal("1E1"),
    "d": Decimal("1E-1"),
    "c": Decimal("1E-2"),
    "m": Decimal("1E-3"),
    "u": Decimal("1E-6"),
    "n": Decimal("1E-9"),
    "p": Decimal("1E-12"),
    "f": Decimal("1E-15"),
    "a": Decimal("1E-18"),
    "z": Decimal("1E-21"),
    "y": Decimal("1E-24"),
}

_ATOMS: dict[str, Unit] = {}
_METRIC: set[str] = {"m", "g", "s", "rad", "K", "C", "cd"}
_DEFINITIONS: Final = {code: (factor, definition) for code, factor, definition, _ in _DERIVED}
_METRIC.update(code for code, _, _, metric in _DERIVED if metric)

_ANNOTATION_RE: Final = re.compile(r"\{[^}]*\}")
_TOKEN_RE: Final = re.compile(r"[()./]|[^()./]+")
_COMPONENT_RE: Final = re.compile(r"(.*?[^\d+-])([+-]?\d+)?")


class UnitError(ValueError):
    """The text is not a UCUM unit this parser understands."""


def _atom(code: str) -> Unit | None:
    unit = _ATOMS.get(code)
    if unit is not None:
        return unit
    if code in _BASE:
        unit = _BASE[code]
    elif code in _SPECIAL:
        unit = _SPECIAL[code]
    elif code in _DEFINITIONS:
        factor, definition = _DEFINITIONS[code]
        base = _parse(definition) if definition else Unit(Decimal(1), _NONE)
        unit = Unit(Decimal(factor) * base.factor, base.dims, base.special)
    else:
        return None
    _ATOMS[code] = unit
    return unit


def _simple(code: str) -> Unit:
    """One unit symbol, possibly prefixed (``mg``, ``[in_i]``, ``mm[Hg]``)."""
    unit = _atom(code)
    if unit is not None:
        return unit
    for plen in (2, 1):
        prefix, rest = code[:plen], code[plen:]
        if prefix in _PREFIXES and rest in _METRIC:
            base = _atom(rest)
            if base is not None:
                return Unit(_PREFIXES[prefix] * base.factor, base.dims, base.special)
    raise UnitError(f"unknown unit {code!r}")


def _component(text: str) -> Unit:
    if text.isdigit():
        return Unit(Decimal(text), _NONE)
    m = _COMPONENT_RE.fullmatch(text)
    if m is None:
        raise UnitError(f"invalid unit component {text!r}")
    body, exponent = m.group(1), m.group(2)
    unit = _simple(body)
    return unit ** int(exponent) if exponent else unit


def _parse(code: str) -> Unit:
    text = _ANNOTATION_RE.sub("", code)
    tokens = _TOKEN_RE.findall(text)
    pos = 0

    def term() -> Unit:
        nonlocal pos
        # An operator with no operand after it ("mL/min/" once "{1.73_m2}" is stripped) is
        # harmless: annotations stand for unity.
        result = Unit(Decimal(1), _NONE)
        op = "."
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == ")":
                break
            pos += 1
            if tok in (".", "/"):
                op = tok
                continue
            if tok == "(":
                operand = term()
                if pos >= len(tokens) or tokens[pos] != ")":
                    raise UnitError(f"unbalanced parentheses in {code!r}")
                pos += 1
            else:
                operand = _component(tok)
            result = result * operand if op == "." else result / operand
        return result

    unit = term()
    if pos != len(tokens):
        raise UnitError(f"unexpected {tokens[pos]!r} in unit {code!r}")
    return unit


@lru_cache(maxsize=1024)
def parse_unit(code: str) -> Unit:
    """Factor to base units and dimension vector of a UCUM code; raises :class:`UnitError`."""
    if code in ("", "1"):
        return Unit(Decimal(1), _NONE)
    return _parse(code)


def is_valid(code: str) -> bool:
    try:
        parse_unit(code)
    except (UnitError, ArithmeticError):
        return False
    return True
