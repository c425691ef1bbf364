"""FHIRPath (normative N1, 2.0.0) for FHIR R4 JSON: http://hl7.org/fhirpath/N1/.

Usage::

    from healthmesh.fhir import fhirpath

    fhirpath.evaluate(patient, "Patient.name.where(use='official').family")
    path = fhirpath.compile("Observation.value.as(Quantity)")   # cached by text
    path.evaluate(observation)           # JSON values: dicts, str, bool, int, float …
    path.evaluate_typed(observation)     # Node objects with .value and .fhir_type

Expressions are parsed once and compiled to closures; see docs/fhirpath.md for what is
supported and how the engine deviates from the specification.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from .checker import check
from .compiler import compile_ast
from .env import Env, Fn, Resolver
from .errors import FhirPathError, FhirPathEvaluationError, FhirPathSyntaxError
from .model import Node, resource_node
from .nodes import Expr
from .parser import parse
from .quantity import Quantity
from .roots import root_keys
from .temporal import Temporal
from .typesys import TypeInfo, system_type

__all__ = [
    "CompiledPath",
    "FhirPathError",
    "FhirPathEvaluationError",
    "FhirPathSyntaxError",
    "Node",
    "Quantity",
    "Temporal",
    "TypeInfo",
    "compile",
    "evaluate",
    "evaluate_typed",
]


class CompiledPath:
    """A parsed and compiled expression; evaluate it against many resources."""

    __slots__ = ("_ast", "_checked", "_fn", "expression")

    def __init__(self, expression: str, ast: Expr, fn: Fn) -> None:
        self.expression = expression
        self._ast = ast
        self._fn = fn
        self._checked: set[str | None] = set()  # context types that passed the strict check

    def __repr__(self) -> str:
        return f"CompiledPath({self.expression!r})"

    def root_keys(self, resource_type: str) -> frozenset[str] | None:
        """JSON keys of which a ``resource_type`` resource needs one for this expression to
        select anything; None when the expression's shape does not tell (see roots.py)."""
        return root_keys(self._ast, resource_type)

    def run(
        self,
        resource: Mapping[str, Any] | Node,
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        strict: bool = False,
    ) -> list[Any]:
        """Evaluate and return the raw result collection (nodes and System values)."""
        return self._run(resource, variables, resolver, strict)

    def _run(
        self,
        resource: Mapping[str, Any] | Node,
        variables: Mapping[str, Any] | None,
        resolver: Resolver | None,
        strict: bool,
    ) -> list[Any]:
        root = resource if isinstance(resource, Node) else resource_node(resource)
        env = Env(root, _variables(variables) if variables else _NO_VARIABLES, resolver, strict)
        try:
            if strict and root.type_key not in self._checked:
                check(self._ast, root.type_key)
                self._checked.add(root.type_key)
            return self._fn([root], env)
        except FhirPathError as exc:
            if exc.expression:
                raise
            raise type(exc)(exc.message, expression=self.expression) from None
        except (ArithmeticError, RecursionError) as exc:
            raise FhirPathEvaluationError(
                f"Evaluation failed: {exc}", expression=self.expression
            ) from None

    def evaluate(
        self,
        resource: Mapping[str, Any],
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        strict: bool = False,
    ) -> list[Any]:
        """The result as Python values: the JSON value of each FHIR element (dicts for complex
        elements), System values as ``bool``/``int``/``Decimal``/``str``/:class:`Temporal`/
        :class:`Quantity`. Primitives that only carry extensions are left out."""
        result = self._run(resource, variables, resolver, strict)
        # to_python() inlined: this is the indexer's hot path.
        return [
            v for item in result if (v := item.value if type(item) is Node else item) is not None
        ]

    def evaluate_typed(
        self,
        resource: Mapping[str, Any],
        *,
        variables: Mapping[str, Any] | None = None,
        resolver: Resolver | None = None,
        strict: bool = False,
    ) -> list[Node]:
        """The result as :class:`Node` objects with ``.value`` and ``.fhir_type``. Computed
        System values get ``fhir_type`` ``"System.<Type>"`` (e.g. ``"System.Boolean"``)."""
        out: list[Node] = []
        for item in self._run(resource, variables, resolver, strict):
            if type(item) is Node:
                out.append(item)
            else:
                name = system_type(item)
                out.append(Node(item, None, f"System.{name}" if name else None))
        return out


_NO_VARIABLES: Mapping[str, list[Any]] = MappingProxyType({})


def _item(value: Any) -> Any:
    if type(value) is Node:
        return value
    if isinstance(value, Mapping):
        return resource_node(value)
    if type(value) is float:
        return Decimal(repr(value))
    return value


def _variables(variables: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """User variables (``%name``) as collections; a list/tuple value is a collection."""
    if not variables:
        return {}
    out: dict[str, list[Any]] = {}
    for name, value in variables.items():
        if value is None:
            out[name] = []
        elif isinstance(value, list | tuple):
            out[name] = [_item(v) for v in value if v is not None]
        else:
            out[name] = [_item(value)]
    return out


@lru_cache(maxsize=4096)
def compile(expression: str) -> CompiledPath:
    """Parse and compile ``expression``; raises :class:`FhirPathError` (a ``ValueError``)
    with the error position. Compiled expressions are cached by their text."""
    try:
        ast = parse(expression)
        return CompiledPath(expression, ast, compile_ast(ast, expression))
    except RecursionError:
        raise FhirPathSyntaxError(
            "Expression is nested too deeply", expression=expression
        ) from None


def evaluate(
    resource: Mapping[str, Any],
    expression: str,
    *,
    variables: Mapping[str, Any] | None = None,
    resolver: Callable[[str], Mapping[str, Any] | None] | None = None,
    strict: bool = False,
) -> list[Any]:
    """Evaluate ``expression`` against ``resource`` (FHIR JSON); see
    :meth:`CompiledPath.evaluate` for the result format."""
    return compile(expression).evaluate(
        resource, variables=variables, resolver=resolver, strict=strict
    )


def evaluate_typed(
    resource: Mapping[str, Any],
    expression: str,
    *,
    variables: Mapping[str, Any] | None = None,
    resolver: Callable[[str], Mapping[str, Any] | None] | None = None,
    strict: bool = False,
) -> list[Node]:
    """Like :func:`evaluate` but returns :class:`Node` objects carrying the FHIR type."""
    return compile(expression).evaluate_typed(
        resource, variables=variables, resolver=resolver, strict=strict
    )
