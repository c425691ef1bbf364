"""Errors raised by the FHIRPath engine.

Every error is a :class:`FhirPathError`, a :class:`ValueError`, so callers validating
SearchParameter expressions can catch one type. Syntax errors carry the zero-based character
offset of the offending token (spec §2 "Lexical elements", http://hl7.org/fhirpath/N1/#grammar).
"""

from __future__ import annotations


class FhirPathError(ValueError):
    """Any FHIRPath failure: syntax, unknown function/type, or a run-time type error."""

    def __init__(self, message: str, *, position: int | None = None, expression: str = "") -> None:
        self.message = message
        self.position = position
        self.expression = expression
        super().__init__(self._render())

    def _render(self) -> str:
        if self.position is None:
            return self.message
        line = self.expression.count("\n", 0, self.position) + 1
        column = self.position - (self.expression.rfind("\n", 0, self.position) + 1) + 1
        return f"{self.message} at position {self.position} (line {line}, column {column})"


class FhirPathSyntaxError(FhirPathError):
    """The expression text does not match the FHIRPath grammar."""


class FhirPathEvaluationError(FhirPathError):
    """Evaluation failed, e.g. a singleton was expected but a collection was found (spec §4.5)."""
