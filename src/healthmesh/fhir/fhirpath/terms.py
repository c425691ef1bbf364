"""Terms that do not navigate: literals, ``{}``, environment variables and $this/$index/$total
(spec §4 "Expressions", §7 "Environment variables"; R4 fhirpath.html#vars)."""

from __future__ import annotations

from typing import Any, Final

from .env import Env, Fn
from .errors import FhirPathEvaluationError

# Environment constants of FHIR (R4 fhirpath.html#vars; FHIRPath spec §7).
_CONSTANTS: Final[dict[str, str]] = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
_PREFIXED_CONSTANTS: Final[tuple[tuple[str, str], ...]] = (
    ("vs-", "http://hl7.org/fhir/ValueSet/"),
    ("ext-", "http://hl7.org/fhir/StructureDefinition/"),
    ("cs-", "http://hl7.org/fhir/"),
)
_ROOT_VARIABLES: Final = frozenset({"resource", "context", "rootResource"})


def constant(name: str) -> str | None:
    if name in _CONSTANTS:
        return _CONSTANTS[name]
    for prefix, base in _PREFIXED_CONSTANTS:
        if name.startswith(prefix):
            return base + name[len(prefix) :]
    return None


def this(focus: list[Any], env: Env) -> list[Any]:
    return focus


def literal(value: Any) -> Fn:
    def constant_value(focus: list[Any], env: Env) -> list[Any]:
        return [value]

    return constant_value


def empty(focus: list[Any], env: Env) -> list[Any]:
    return []


def variable(name: str) -> Fn:
    value = constant(name)

    def lookup(focus: list[Any], env: Env) -> list[Any]:
        bound = env.variables.get(name)
        if bound is not None:
            return bound
        if name in _ROOT_VARIABLES:
            return [env.root]
        if value is not None:
            return [value]
        raise FhirPathEvaluationError(f"Unknown variable '%{name}'")

    return lookup


def special(name: str) -> Fn:
    if name == "$this":
        return this
    if name == "$index":

        def index(focus: list[Any], env: Env) -> list[Any]:
            return [] if env.index is None else [env.index]

        return index

    def total(focus: list[Any], env: Env) -> list[Any]:
        return env.total

    return total
