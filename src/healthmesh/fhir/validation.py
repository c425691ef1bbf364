"""Structural validation of one resource in the R4 JSON format.

Checks what the R4 definitions and the JSON format (http://hl7.org/fhir/R4/json.html) fix:
known resource type, known element names, choice-element suffixes, cardinality, JSON types
and lexical rules of primitives, "_name" primitive-extension siblings, Reference.reference
syntax, and contained / Bundle / Parameters resources recursively. FHIRPath invariants
(constraints such as ele-1 or dom-2), terminology bindings and profiles are not checked.

Speed: on first use every type and backbone element is compiled into a table from JSON
property name to a small tuple (what kind of value, array or not, how to check it), with
precompiled regexes, so validating is dict lookups and type checks. Issue locations are kept
as cheap (parent, name, index) tuples and only formatted when an issue is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, TypeAlias, cast

from healthmesh.fhir import structure
from healthmesh.fhir.errors import InvalidResource, Issue

# A primitive check returns None when the value is fine, else (issue code, diagnostics).
Checker = Callable[[object], tuple[str, str] | None]

# Slot kinds: what a JSON property holds.
_STRING = 0  # a primitive sent as a JSON string; data: a C-level "surely valid" predicate
_PRIMITIVE = 1  # other primitives (numbers, booleans, references, xhtml): the Checker decides
_COMPLEX = 2  # data: _Table
_RESOURCE = 3  # data: required resource type name, or None for any
_PRIMITIVE_EXT = 4  # "_name" sibling of a primitive (json.html#primitive); data: "name"
_PROHIBITED = 5  # max "0"
_IGNORED = 6  # resourceType at a resource root; fhir_comments (json.html, DSTU2 legacy)

# (kind, is_array, data, choice group: the element path of a [x] element else None, Checker)
_Slot = tuple[int, bool, Any, str | None, Checker | None]

# An issue location, built lazily: the root path, or (parent, element name, array index or -1).
# Formatting "Patient.name[0].given" for every node would cost more than checking it.
_Loc: TypeAlias = "str | tuple[_Loc, str, int]"

MAX_ISSUES = 100
MAX_DEPTH = 100  # nested JSON objects; deeper input is refused rather than recursed into

_INT_MIN, _INT_MAX = -2_147_483_648, 2_147_483_647  # R4 datatypes.html#integer: 32 bit

# R4 references.html#literal: relative "Type/id[/_history/vid]", conditional "Type?query"
# (transactions, http.html#trules), "#id" into contained ("#" alone is the container), an
# absolute http(s) URL, or a urn:uuid / urn:oid (Bundle fullUrls).
_REFERENCE = re.compile(
    r"(?P<type>[A-Z][A-Za-z]+)"
    r"(?:/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?|\?.+)"
    r"|#[A-Za-z0-9\-.]{0,64}"
    r"|https?://\S+"
    r"|urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+",
    re.ASCII,
)


class _Table:
    """The compiled form of one type or backbone element: JSON property name -> slot."""

    __slots__ = ("choices", "label", "required", "slots")

    def __init__(self, label: str) -> None:
        self.label = label
        self.slots: dict[str, _Slot] = {}
        # (element name as reported, JSON names any of which satisfies min >= 1)
        self.required: tuple[tuple[str, tuple[str, ...]], ...] = ()
        # choice name -> allowed type codes, only for explaining unknown names
        self.choices: dict[str, tuple[str, ...]] = {}


def _render(loc: _Loc) -> str:
    """The FHIRPath-style text of a location: Bundle.entry[3].resource.status."""
    parts: list[str] = []
    while not isinstance(loc, str):
        loc, key, i = loc
        parts.append(f".{key}[{i}]" if i >= 0 else f".{key}")
    parts.append(loc)
    return "".join(reversed(parts))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _expected(type_code: str, json_type: str, value: object) -> tuple[str, str]:
    return (
        "structure",
        f"Expected a JSON {json_type} for a {type_code} value, found {_json_kind(value)}",
    )


def _string_checker(type_code: str, regex: str | None, extra: Checker | None = None) -> Checker:
    # re.ASCII: the R4 regexes come from Java, where \s and \S are ASCII-only; in Python's
    # Unicode mode \S would reject e.g. a no-break space inside a string.
    match = re.compile(regex, re.ASCII).fullmatch if regex else None

    def check(value: object) -> tuple[str, str] | None:
        if type(value) is not str:
            return _expected(type_code, "string", value)
        if not value:
            return ("value", f"Empty string is not a valid {type_code} (json.html)")
        if match is not None and match(value) is None:
            return ("value", f"{_short(value)} is not a valid {type_code}")
        return extra(value) if extra is not None else None

    return check


def _xhtml_checker() -> Checker:
    def check(value: object) -> tuple[str, str] | None:
        if type(value) is not str:
            return _expected("xhtml", "string", value)
        # R4 narrative.html#xhtml: the narrative is one XHTML <div>. Not parsed further.
        if not value.startswith("<div"):
            return ("value", "Narrative div must be XHTML starting with '<div'")
        return None

    return check


def _integer_checker(type_code: str, low: int) -> Checker:
    def check(value: object) -> tuple[str, str] | None:
        # type() rather than isinstance(): bool is an int subclass, and True is not 1 here.
        if type(value) is not int:
            if type(value) is float:
                return ("value", f"{value!r} is not a valid {type_code}: not a whole number")
            return _expected(type_code, "number", value)
        if value < low or value > _INT_MAX:
            return ("value", f"{value} is out of range for {type_code} ({low}..{_INT_MAX})")
        return None

    return check


def _check_decimal(value: object) -> tuple[str, str] | None:
    if type(value) is float or type(value) is int:
        return None
    return _expected("decimal", "number", value)


def _check_boolean(value: object) -> tuple[str, str] | None:
    return None if type(value) is bool else _expected("boolean", "boolean (true or false)", value)


def _reference_syntax(value: object) -> tuple[str, str] | None:
    m = _REFERENCE.fullmatch(cast(str, value))
    if m is None:
        return (
            "value",
            f"{_short(value)} is not a valid reference: expected Type/id, "
            "an absolute URL, #id, urn:uuid: or urn:oid:",
        )
    type_name = m.group("type")
    if type_name is not None and not structure.is_resource_type(type_name):
        return ("value", f"Reference to unknown resource type {type_name!r}")
    return None


@cache
def _checker(type_code: str) -> Checker:
    if type_code == "boolean":
        return _check_boolean
    if type_code == "decimal":
        return _check_decimal
    if type_code == "integer":
        return _integer_checker(type_code, _INT_MIN)
    if type_code == "unsignedInt":
        return _integer_checker(type_code, 0)
    if type_code == "positiveInt":
        return _integer_checker(type_code, 1)
    if type_code == "xhtml":
        return _xhtml_checker()
    if structure.primitive_json_type(type_code) != "string":
        raise ValueError(f"not a string primitive: {type_code}")
    return _string_checker(type_code, structure.primitive_regex(type_code))


@cache
def _fast_predicate(type_code: str) -> Callable[[str], object]:
    """A C-level test that a non-empty string is surely valid; when it says no, the Checker
    decides (and explains). For string and markdown the R4 regex [ \\r\\n\\t\\S]+ accepts every
    printable string, and str.isprintable is several times faster than the regex."""
    regex = structure.primitive_regex(type_code)
    if regex is None:
        return bool
    if regex == r"[ \r\n\t\S]+":
        return str.isprintable
    return re.compile(regex, re.ASCII).fullmatch


@cache
def _reference_checker() -> Checker:
    return _string_checker("string", structure.primitive_regex("string"), _reference_syntax)


class _Compiler:
    def __init__(self) -> None:
        self.tables: dict[str, _Table] = {}

    def table(self, key: str) -> _Table:
        """The table for a type name or backbone path; registered before it is filled so
        recursive definitions (Extension.extension, Questionnaire.item.item) terminate."""
        found = self.tables.get(key)
        if found is not None:
            return found
        table = _Table(key)
        self.tables[key] = table
        self._fill(table, key)
        return table

    def _fill(self, table: _Table, key: str) -> None:
        slots = table.slots
        required: list[tuple[str, tuple[str, ...]]] = []
        if structure.is_resource_type(key):
            slots["resourceType"] = (_IGNORED, False, None, None, None)
        slots["fhir_comments"] = (_IGNORED, False, None, None, None)
        for el in structure.children(key).values():
            names: list[str] = []
            if el.choice:
                table.choices[el.name] = el.types
                for t in el.types:
                    name = structure.choice_key(el.name, t)
                    self._add(table, name, el, t, el.path)
                    names += [name, "_" + name]
            else:
                self._add(table, el.name, el, el.types[0] if el.types else "", None)
                names += [el.name, "_" + el.name]
            if el.min >= 1:
                label = el.name + "[x]" if el.choice else el.name
                required.append((label, tuple(n for n in names if n in slots)))
        table.required = tuple(required)

    def _add(
        self, table: _Table, name: str, el: structure.ElementDef, type_code: str, group: str | None
    ) -> None:
        is_array = el.is_array
        slot: _Slot
        if el.max == "0":
            slot = (_PROHIBITED, False, None, group, None)
        elif el.content_reference is not None:
            slot = (_COMPLEX, is_array, self.table(el.content_reference), group, None)
        elif structure.has_inline_children(el.path):
            # BackboneElement / Element typed: children are defined inline under this path.
            slot = (_COMPLEX, is_array, self.table(el.path), group, None)
        elif type_code == "Resource" or structure.is_resource_type(type_code):
            expected = None if type_code == "Resource" else type_code
            slot = (_RESOURCE, is_array, expected, group, None)
        elif structure.is_primitive(type_code):
            if el.path == "Reference.reference":
                slot = (_PRIMITIVE, is_array, None, group, _reference_checker())
            elif type_code == "xhtml" or structure.primitive_json_type(type_code) != "string":
                slot = (_PRIMITIVE, is_array, None, group, _checker(type_code))
            else:
                fast = _fast_predicate(type_code)
                slot = (_STRING, is_array, fast, group, _checker(type_code))
            if not el.xml_attribute and type_code != "xhtml":
                table.slots["_" + name] = (_PRIMITIVE_EXT, is_array, name, group, None)
        elif structure.is_complex_type(type_code):
            slot = (_COMPLEX, is_array, self.table(type_code), group, None)
        else:
            raise ValueError(f"{el.path}: cannot compile type {type_code!r}")
        table.slots[name] = slot


@cache
def _compiled() -> tuple[dict[str, _Table], _Table]:
    """Tables for every concrete resource type, plus the one for "_name" objects (Element)."""
    compiler = _Compiler()
    resources = {name: compiler.table(name) for name in sorted(structure.resource_types())}
    return resources, compiler.table("Element")


def validate_resource(resource: object, *, expected_type: str | None = None) -> list[Issue]:
    """All structural issues of one parsed JSON resource (empty when valid).

    Issue expressions are FHIRPath-style locations rooted at the resource type, e.g.
    ``Patient.name[0].given[1]`` or ``Bundle.entry[3].resource.status``.
    """
    issues: list[Issue] = []
    _validate(resource, expected_type, None, issues, 0)
    if len(issues) > MAX_ISSUES:
        dropped = len(issues) - MAX_ISSUES
        del issues[MAX_ISSUES:]
        issues.append(
            Issue(
                severity="information",
                code="informational",
                diagnostics=f"{dropped} further issues not listed",
            )
        )
    return issues


def check_resource(resource: object, *, expected_type: str | None = None) -> dict[str, Any]:
    """The resource itself when it is structurally valid; else raises InvalidResource (400)."""
    issues = validate_resource(resource, expected_type=expected_type)
    if any(i.severity in ("error", "fatal") for i in issues):
        raise InvalidResource(issues)
    return cast(dict[str, Any], resource)


def _validate(
    resource: object, expected: str | None, path: _Loc | None, issues: list[Issue], depth: int
) -> None:
    """Validate a resource at the root (path None) or nested in another (contained, Bundle)."""
    where = _render(path) if path is not None else expected
    if not isinstance(resource, dict):
        issues.append(
            Issue(
                code="structure",
                diagnostics=f"A resource must be a JSON object, found {_json_kind(resource)}",
                expression=where,
            )
        )
        return
    rt = resource.get("resourceType")
    if rt is None:
        issues.append(Issue(code="required", diagnostics="Missing resourceType", expression=where))
        return
    tables, _ = _compiled()
    table = tables.get(rt) if isinstance(rt, str) else None
    if table is None:
        diagnostics = (
            f"Unknown resource type {_short(rt)}"
            if isinstance(rt, str)
            else f"resourceType must be a string, found {_json_kind(rt)}"
        )
        issues.append(Issue(code="code-invalid", diagnostics=diagnostics, expression=where))
        return
    if expected is not None and rt != expected:
        issues.append(
            Issue(
                code="invalid",
                diagnostics=f"Expected resourceType {expected!r}, found {rt!r}",
                expression=where,
            )
        )
    _walk(resource, table, rt if path is None else path, issues, depth)


def _walk(obj: dict[str, Any], table: _Table, path: _Loc, issues: list[Issue], depth: int) -> None:
    if depth > MAX_DEPTH:
        issues.append(
            Issue(
                code="too-costly", diagnostics="Content nested too deeply", expression=_render(path)
            )
        )
        return
    depth += 1
    slots = table.slots
    chosen: dict[str, str] | None = None
    for key, value in obj.items():
        slot = slots.get(key)
        if slot is None:
            _unknown(obj, key, table, path, issues)
            continue
        kind, is_array, data, group, check = slot
        if group is not None:
            # Exactly one variant of a choice element (formats.html#choice); "_valueString"
            # belongs to the same variant as "valueString".
            variant = key[1:] if key[0] == "_" else key
            if chosen is None:
                chosen = {group: variant}
            else:
                previous = chosen.setdefault(group, variant)
                if previous != variant:
                    issues.append(
                        Issue(
                            code="structure",
                            diagnostics=f"Only one of {previous!r} and {variant!r} may be "
                            f"present: both are {group.rpartition('.')[2]}",
                            expression=_render((path, key, -1)),
                        )
                    )
        if kind == _STRING:
            # The hot path: most values are strings that the fast predicate accepts.
            if not is_array:
                if type(value) is str and value and data(value):
                    continue
                if value is None:
                    _null(key, path, issues)
                elif type(value) is list:
                    _unexpected_array(key, path, issues)
                else:
                    _primitive_problem(check, value, (path, key, -1), issues)
                continue
            if type(value) is not list:
                _not_array(key, value, path, issues)
                continue
            if not value:
                _empty_array(key, path, issues)
                continue
            for i, item in enumerate(value):
                if type(item) is str and item and data(item):
                    continue
                if item is None:
                    _null_item(obj, key, i, path, issues)
                else:
                    _primitive_problem(check, item, (path, key, i), issues)
            continue
        if value is None:
            if kind != _IGNORED:
                _null(key, path, issues)
            continue
        if kind == _PRIMITIVE:
            if is_array:
                if type(value) is not list:
                    _not_array(key, value, path, issues)
                    continue
                if not value:
                    _empty_array(key, path, issues)
                    continue
                for i, item in enumerate(value):
                    if item is None:
                        _null_item(obj, key, i, path, issues)
                    else:
                        _primitive_problem(check, item, (path, key, i), issues)
            elif type(value) is list:
                _unexpected_array(key, path, issues)
            else:
                _primitive_problem(check, value, (path, key, -1), issues)
        elif kind == _COMPLEX:
            if is_array:
                if type(value) is not list:
                    _not_array(key, value, path, issues)
                    continue
                if not value:
                    _empty_array(key, path, issues)
                    continue
                for i, item in enumerate(value):
                    where = (path, key, i)
                    if type(item) is dict and item:
                        _walk(item, data, where, issues, depth)
                    else:
                        _bad_object(item, data, where, issues)
            elif type(value) is dict and value:
                _walk(value, data, (path, key, -1), issues, depth)
            elif type(value) is list:
                _unexpected_array(key, path, issues)
            else:
                _bad_object(value, data, (path, key, -1), issues)
        elif kind == _RESOURCE:
            if is_array:
                if type(value) is not list:
                    _not_array(key, value, path, issues)
                    continue
                if not value:
                    _empty_array(key, path, issues)
                    continue
                for i, item in enumerate(value):
                    _validate(item, data, (path, key, i), issues, depth)
            elif type(value) is list:
                _unexpected_array(key, path, issues)
            else:
                _validate(value, data, (path, key, -1), issues, depth)
        elif kind == _PRIMITIVE_EXT:
            _primitive_extension(obj, key, value, data, is_array, path, issues, depth)
        elif kind == _PROHIBITED:
            issues.append(
                Issue(
                    code="structure",
                    diagnostics=f"{key!r} is not allowed here (cardinality 0..0)",
                    expression=_render((path, key, -1)),
                )
            )
    for name, keys in table.required:
        for k in keys:
            if k in obj:
                break
        else:
            issues.append(
                Issue(
                    code="required",
                    diagnostics=f"Missing required element {name!r}",
                    expression=_render((path, name, -1)),
                )
            )


def _primitive_extension(
    obj: dict[str, Any],
    key: str,
    value: object,
    name: str,
    is_array: bool,
    path: _Loc,
    issues: list[Issue],
    depth: int,
) -> None:
    """Check a "_name" sibling: id/extension of a primitive (json.html#primitive)."""
    _, element_table = _compiled()
    if not is_array:
        if type(value) is dict and value:
            _walk(value, element_table, (path, name, -1), issues, depth)
        elif type(value) is list:
            _unexpected_array(key, path, issues)
        else:
            _bad_object(value, element_table, (path, key, -1), issues)
        return
    if type(value) is not list:
        _not_array(key, value, path, issues)
        return
    if not value:
        _empty_array(key, path, issues)
        return
    values = obj.get(name)
    if type(values) is list and len(values) != len(value):
        issues.append(
            Issue(
                code="structure",
                diagnostics=f"{key!r} has {len(value)} items but {name!r} has {len(values)}: "
                "the arrays must align (json.html#primitive)",
                expression=_render((path, name, -1)),
            )
        )
    for i, item in enumerate(value):
        where = (path, name, i)
        if item is None:
            # Both null at one index is reported once, by the value array's own check.
            if type(values) is not list or i >= len(values):
                issues.append(
                    Issue(
                        code="structure",
                        diagnostics=f"{key!r}[{i}] is null but {name!r} has no value there",
                        expression=_render(where),
                    )
                )
        elif type(item) is dict and item:
            _walk(item, element_table, where, issues, depth)
        else:
            _bad_object(item, element_table, where, issues)


def _primitive_problem(check: Any, value: object, where: _Loc, issues: list[Issue]) -> None:
    problem: tuple[str, str] | None = check(value)
    if problem is not None:
        issues.append(Issue(code=problem[0], diagnostics=problem[1], expression=_render(where)))


def _null(key: str, path: _Loc, issues: list[Issue]) -> None:
    issues.append(
        Issue(
            code="structure",
            diagnostics=f"null is not allowed for {key!r} (json.html: null only appears "
            "inside arrays aligned with a '_' array)",
            expression=_render((path, key, -1)),
        )
    )


def _null_item(obj: dict[str, Any], key: str, i: int, path: _Loc, issues: list[Issue]) -> None:
    ext = obj.get("_" + key)
    if type(ext) is list and i < len(ext) and type(ext[i]) is dict:
        return  # the value is absent but the item carries extensions
    issues.append(
        Issue(
            code="structure",
            diagnostics=f"null in {key!r} is only allowed where '_{key}' has an extension",
            expression=_render((path, key, i)),
        )
    )


def _unknown(obj: dict[str, Any], key: str, table: _Table, path: _Loc, issues: list[Issue]) -> None:
    bare = key[1:] if key.startswith("_") else key
    diagnostics = f"Unknown element {key!r} in {table.label}"
    if key.startswith("_") and bare in table.slots:
        diagnostics = f"{key!r}: '_' extension siblings only exist for primitive elements"
    elif bare in table.choices:
        variants = ", ".join(structure.choice_key(bare, t) for t in table.choices[bare][:4])
        diagnostics = f"{key!r} is a choice element: use a typed name such as {variants}"
    else:
        for choice, types in table.choices.items():
            if bare.startswith(choice) and bare[len(choice) : len(choice) + 1].isupper():
                allowed = ", ".join(types)
                diagnostics = (
                    f"{bare[len(choice) :]!r} is not an allowed type for {choice}[x] "
                    f"(allowed: {allowed})"
                )
                break
    if key == "resourceType":
        diagnostics = (
            f"resourceType is only allowed at the root of a resource, not in {_render(path)}"
        )
    issues.append(
        Issue(code="structure", diagnostics=diagnostics, expression=_render((path, key, -1)))
    )


def _not_array(key: str, value: object, path: _Loc, issues: list[Issue]) -> None:
    if value is None:
        _null(key, path, issues)
        return
    issues.append(
        Issue(
            code="structure",
            diagnostics=f"{key!r} repeats and must be a JSON array, found {_json_kind(value)}",
            expression=_render((path, key, -1)),
        )
    )


def _unexpected_array(key: str, path: _Loc, issues: list[Issue]) -> None:
    issues.append(
        Issue(
            code="structure",
            diagnostics=f"{key!r} has cardinality 0..1 or 1..1 and must not be an array",
            expression=_render((path, key, -1)),
        )
    )


def _empty_array(key: str, path: _Loc, issues: list[Issue]) -> None:
    issues.append(
        Issue(
            code="structure",
            diagnostics=f"{key!r} is an empty array; omit the element instead (json.html)",
            expression=_render((path, key, -1)),
        )
    )


def _bad_object(value: object, table: _Table, where: _Loc, issues: list[Issue]) -> None:
    if type(value) is dict:
        diagnostics = "Empty object; omit the element instead (json.html)"
    elif value is None:
        diagnostics = "null is not allowed here"
    else:
        diagnostics = f"Expected a JSON object ({table.label}), found {_json_kind(value)}"
    issues.append(Issue(code="structure", diagnostics=diagnostics, expression=_render(where)))
