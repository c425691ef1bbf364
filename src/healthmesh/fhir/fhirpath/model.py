"""FHIR data as FHIRPath nodes, typed with the R4 definitions (spec §3 "Path selection";
FHIR R4 fhirpath.html "FHIRPath in FHIR").

Navigation works on FHIR JSON: ``valueQuantity`` is the ``value`` element with type Quantity
(R4 formats.html#choice) and ``_given`` carries the id/extensions of the ``given`` primitives
(R4 json.html#primitive). Type knowledge comes from :mod:`healthmesh.fhir.structure`; when a
type or element is unknown, navigation falls back to plain JSON so that extensions, future
elements and unknown resource types still evaluate (non-strict mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

from .. import structure

# Element types whose instances declare their own type in "resourceType" (R4 json.html#resources).
_RESOURCE_SLOTS: Final = frozenset({"Resource", "DomainResource"})


class Node:
    """One element of FHIR data: its JSON value plus its FHIR type.

    ``value`` is the dict of a complex element/resource or the JSON value of a primitive
    (``None`` for a primitive that only has extensions). ``fhir_type`` is the FHIR type name
    (``HumanName``, ``code``, ``BackboneElement``, ``Patient``) or ``None`` when unknown.
    ``type_key`` is where the element's children are defined (a type name, or the element path
    for backbone elements such as ``Patient.contact``). ``ext`` is the ``_name`` sibling object
    of a primitive (its ``id`` and ``extension``).
    """

    __slots__ = ("ext", "fhir_type", "type_key", "value")

    def __init__(
        self,
        value: Any,
        type_key: str | None,
        fhir_type: str | None,
        ext: Mapping[str, Any] | None = None,
    ) -> None:
        self.value = value
        self.type_key = type_key
        self.fhir_type = fhir_type
        self.ext = ext

    def __repr__(self) -> str:
        return f"Node({self.fhir_type or '?'}: {self.value!r})"


def resource_node(resource: Mapping[str, Any]) -> Node:
    rt = resource.get("resourceType")
    rt = rt if isinstance(rt, str) else None
    return Node(resource, rt, rt)


def guess_primitive_type(value: Any) -> str | None:
    """FHIR type of an untyped JSON scalar (for elements the definitions do not know)."""
    if value is True or value is False:
        return "boolean"
    if type(value) is int:
        return "integer"
    if type(value) is float or type(value) is Decimal:
        return "decimal"
    if type(value) is str:
        return "string"
    return None


class Child:
    """How to find one named child in the JSON of a given parent type (cached per type)."""

    __slots__ = (
        "collect",
        "ext_key",
        "fhir_type",
        "key",
        "known",
        "primitive",
        "type_key",
        "typed",
        "undefined",
        "variants",
    )

    def __init__(
        self,
        key: str,
        type_key: str | None,
        fhir_type: str | None,
        *,
        primitive: bool,
        known: bool,
        typed: bool | None = None,
        variants: dict[str, tuple[str, str, bool]] | None = None,
    ) -> None:
        self.key = key
        self.ext_key = "_" + key
        self.type_key = type_key
        self.fhir_type = fhir_type
        self.primitive = primitive
        self.known = known  # False: the definitions do not list this element (strict mode error)
        self.typed = known if typed is None else typed  # type_key/fhir_type are meaningful
        # The parent's type is defined but has no such element: an error in strict mode.
        self.undefined = False
        # Choice elements: JSON key ("valueQuantity") -> (type_key, fhir_type, primitive).
        self.variants = variants
        # collect(parent_json, out): append this child's nodes; specialised per kind of child.
        self.collect: Callable[[Mapping[str, Any], list[Any]], None] = _collector(self)


def _collector(info: Child) -> Callable[[Mapping[str, Any], list[Any]], None]:
    name, ext_key = info.key, info.ext_key
    type_key, fhir_type = info.type_key, info.fhir_type
    variants = info.variants
    if variants is not None:
        n_variants = len(variants)

        def choice(data: Mapping[str, Any], out: list[Any]) -> None:
            if len(data) <= n_variants:
                for key in data:
                    variant = variants.get(key)
                    if variant is not None:
                        _append_value(out, data[key], data.get("_" + key), *variant)
            else:
                for key, variant in variants.items():
                    raw = data.get(key)
                    if raw is not None:
                        _append_value(out, raw, data.get("_" + key), *variant)

        return choice
    if not info.typed:

        def untyped(data: Mapping[str, Any], out: list[Any]) -> None:
            raw = data.get(name)
            if raw is None:
                _untyped_choice(data, name, out)
            else:
                _append_untyped(out, raw, data.get(ext_key))

        return untyped
    if info.primitive:

        def primitive(data: Mapping[str, Any], out: list[Any]) -> None:
            raw = data.get(name)
            ext = data.get(ext_key)
            if ext is None and raw is not None and type(raw) is not list:
                out.append(Node(raw, type_key, fhir_type))  # the common case, inlined
            elif raw is not None or ext is not None:
                _append_value(out, raw, ext, type_key, fhir_type, True)

        return primitive
    if type_key is None:  # Resource slots: the type comes from each value's resourceType

        def resource(data: Mapping[str, Any], out: list[Any]) -> None:
            raw = data.get(name)
            if raw is not None:
                _append_value(out, raw, None, None, fhir_type, False)

        return resource

    def complex_(data: Mapping[str, Any], out: list[Any]) -> None:
        raw = data.get(name)
        if raw is None:
            return
        if type(raw) is list:
            for item in raw:
                if item is not None:
                    out.append(Node(item, type_key, fhir_type))
        else:
            out.append(Node(raw, type_key, fhir_type))

    return complex_


def _untyped(name: str) -> Child:
    return Child(name, None, None, primitive=False, known=False)


def _element_child(el: structure.ElementDef) -> Child:
    name = el.name
    if el.choice:
        variants = {
            structure.choice_key(name, t): (t, t, structure.is_primitive(t)) for t in el.types
        }
        return Child(name, None, None, primitive=False, known=True, variants=variants)
    if el.content_reference is not None:
        target = structure.element(el.content_reference)
        fhir_type = target.types[0] if target is not None and target.types else "BackboneElement"
        return Child(name, el.content_reference, fhir_type, primitive=False, known=True)
    t = el.types[0] if el.types else None
    if t is None:
        return _untyped(name)
    if t in ("BackboneElement", "Element") and structure.has_inline_children(el.path):
        return Child(name, el.path, t, primitive=False, known=True)
    if t in _RESOURCE_SLOTS:
        # The concrete type is read from each value's resourceType.
        return Child(name, None, t, primitive=False, known=True)
    return Child(name, t, t, primitive=structure.is_primitive(t), known=True)


_CHILD_CACHE: dict[tuple[str, str], Child] = {}


def child(type_key: str | None, name: str) -> Child:
    """Navigation info for ``name`` below an element whose children live at ``type_key``."""
    if type_key is None:
        return _untyped(name)
    cache_key = (type_key, name)
    found = _CHILD_CACHE.get(cache_key)
    if found is not None:
        return found
    try:
        elements = structure.children(type_key)
    except KeyError:
        found = _untyped(name)  # a type the definitions do not describe
    else:
        el = elements.get(name)
        if el is not None:
            found = _element_child(el)
        else:
            alias = _choice_for_key(type_key, name)
            if alias is None:
                found = _untyped(name)
                found.undefined = True
            else:
                # "valueQuantity" is JSON, not FHIRPath (the element is "value"), but R4 and US
                # Core search parameters use such names, e.g. extension(...).valueDateTime.
                # Non-strict mode navigates it with the variant's type; strict mode rejects it.
                t_key, t_name, prim = alias[1]
                found = Child(name, t_key, t_name, primitive=prim, known=False, typed=True)
                found.undefined = True
    _CHILD_CACHE[cache_key] = found
    return found


def _append_value(
    out: list[Any], raw: Any, ext: Any, type_key: str | None, fhir_type: str | None, prim: bool
) -> None:
    """Append the node(s) for one JSON property value (a scalar, object or array)."""
    if type(raw) is list:
        if prim:
            exts = ext if type(ext) is list else ()
            n_ext = len(exts)
            for i, item in enumerate(raw):
                e = exts[i] if i < n_ext and type(exts[i]) is dict else None
                if item is not None or e is not None:
                    out.append(Node(item, type_key, fhir_type, e))
            for i in range(len(raw), n_ext):  # "_given" longer than "given"
                if type(exts[i]) is dict:
                    out.append(Node(None, type_key, fhir_type, exts[i]))
            return
        for item in raw:
            if item is not None:
                out.append(_make(item, type_key, fhir_type))
        return
    if raw is None:
        if prim and ext is not None:
            if type(ext) is list:
                out.extend(Node(None, type_key, fhir_type, e) for e in ext if type(e) is dict)
            elif type(ext) is dict:
                out.append(Node(None, type_key, fhir_type, ext))
        return
    if prim:
        out.append(Node(raw, type_key, fhir_type, ext if type(ext) is dict else None))
    else:
        out.append(_make(raw, type_key, fhir_type))


def _make(raw: Any, type_key: str | None, fhir_type: str | None) -> Node:
    if type(raw) is dict:
        if type_key is None:
            rt = raw.get("resourceType")
            if type(rt) is str:
                return Node(raw, rt, rt)
        return Node(raw, type_key, fhir_type)
    # A scalar where the definitions expected an object, or untyped data.
    return Node(raw, type_key, fhir_type or guess_primitive_type(raw))


def navigate_one(node: Node, name: str, info: Child, out: list[Any]) -> None:
    """Append the children called ``name`` of ``node`` to ``out``."""
    data = node.value
    if type(data) is not dict:
        data = node.ext  # a primitive's id/extension live in its "_name" sibling
        if data is None:
            return
    info.collect(data, out)


def _append_untyped(out: list[Any], raw: Any, ext: Any) -> None:
    items = raw if type(raw) is list else [raw]
    exts = ext if type(ext) is list else [ext] * len(items)
    for i, item in enumerate(items):
        if item is None:
            continue
        if type(item) is dict:
            out.append(_make(item, None, None))
        else:
            e = exts[i] if i < len(exts) else None
            out.append(Node(item, None, guess_primitive_type(item), e if type(e) is dict else None))


def _untyped_choice(data: Mapping[str, Any], name: str, out: list[Any]) -> None:
    """``value`` finds ``valueQuantity`` even without definitions (R4 formats.html#choice)."""
    n = len(name)
    for key, raw in data.items():
        if len(key) > n and key.startswith(name) and key[n].isupper():
            suffix = key[n:]
            lower = suffix[0].lower() + suffix[1:]
            type_name = lower if structure.is_primitive(lower) else suffix
            if structure.type_def(type_name) is None:
                continue
            prim = structure.is_primitive(type_name)
            _append_value(out, raw, data.get("_" + key), type_name, type_name, prim)


def children_of(node: Node) -> list[Node]:
    """All child nodes in document order (spec §5.8 children())."""
    data = node.value
    if type(data) is not dict:
        data = node.ext
        if data is None:
            return []
    out: list[Any] = []
    seen: set[str] = set()
    for key in data:
        if key == "resourceType" or key in seen:
            continue
        name = key[1:] if key.startswith("_") else key
        if name in seen:
            continue
        seen.add(name)
        info = child(node.type_key, name)
        if info.known:
            navigate_one(node, name, info, out)
            continue
        choice = _choice_for_key(node.type_key, name)
        if choice is not None:
            element_name, variant = choice
            raw = data.get(name)
            _append_value(out, raw, data.get("_" + name), *variant)
            seen.add(element_name)
            continue
        raw = data.get(name)
        if raw is not None:
            _append_untyped(out, raw, data.get("_" + name))
    return out


_CHOICE_KEYS: dict[str, dict[str, tuple[str, tuple[str, str, bool]]]] = {}


def _choice_for_key(type_key: str | None, key: str) -> tuple[str, tuple[str, str, bool]] | None:
    """Map a JSON key such as ``valueQuantity`` to its choice element and variant."""
    if type_key is None:
        return None
    table = _CHOICE_KEYS.get(type_key)
    if table is None:
        table = {}
        try:
            elements = structure.children(type_key)
        except KeyError:
            elements = {}
        for el in elements.values():
            if el.choice:
                info = _element_child(el)
                assert info.variants is not None
                for json_key, variant in info.variants.items():
                    table[json_key] = (el.name, variant)
        _CHOICE_KEYS[type_key] = table
    return table.get(key)
