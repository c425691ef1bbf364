"""One error hierarchy for the whole server, carrying FHIR OperationOutcome issue codes.

Every failure a client can cause is raised as a :class:`FhirError` subclass somewhere below
the web layer; the web layer turns it into an HTTP status and an OperationOutcome in one
place. Issue codes come from the R4 value set ``issue-type``
(http://hl7.org/fhir/R4/valueset-issue-type.html); severities from ``issue-severity``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, kw_only=True)
class Issue:
    """One OperationOutcome.issue: what went wrong, and where (a FHIRPath-style location)."""

    severity: Severity = "error"
    code: str = "invalid"
    diagnostics: str
    expression: str | None = None

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


@dataclass
class FhirError(Exception):
    """A client-visible failure. ``status`` is the HTTP status the web layer answers with."""

    issues: Sequence[Issue]
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(
            f"{i.expression}: {i.diagnostics}" if i.expression else i.diagnostics
            for i in self.issues
        )

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def _one(
    status: int, code: str, diagnostics: str, expression: str | None = None
) -> tuple[list[Issue], int]:
    return [Issue(code=code, diagnostics=diagnostics, expression=expression)], status


class InvalidRequest(FhirError):
    """400: the request itself is malformed (bad parameter, bad header, bad URL)."""

    def __init__(self, diagnostics: str, *, expression: str | None = None, code: str = "invalid"):
        super().__init__(*_one(400, code, diagnostics, expression))


class InvalidResource(FhirError):
    """422 (or 400): the resource body breaks the R4 structure rules; one issue per fault."""

    def __init__(self, issues: Sequence[Issue], *, status: int = 400):
        super().__init__(list(issues), status)


class NotFound(FhirError):
    """404: no such resource, or one the caller may not learn exists."""

    def __init__(self, diagnostics: str, *, code: str = "not-found"):
        super().__init__(*_one(404, code, diagnostics))


class Unauthorized(FhirError):
    """401: no valid bearer token (RFC 6750 §3); the header tells the client what went wrong."""

    def __init__(self, diagnostics: str, *, error: str = "invalid_token", realm: str = "fhir"):
        super().__init__(*_one(401, "login", diagnostics))
        challenge = f'Bearer realm="{realm}"'
        if error:
            challenge += f', error="{error}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(FhirError):
    """403: the token is valid but its scopes do not allow this kind of access at all.

    Used for a whole resource type or interaction; a single row the caller may not see is a
    404 instead, so that its existence is not revealed.
    """

    def __init__(self, diagnostics: str, *, expression: str | None = None):
        super().__init__(*_one(403, "forbidden", diagnostics, expression))
        self.headers = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


class Gone(FhirError):
    """410: the resource existed and was deleted (R4 http.html#read)."""

    def __init__(self, diagnostics: str):
        super().__init__(*_one(410, "deleted", diagnostics))


class Conflict(FhirError):
    """409: the request conflicts with the current state (e.g. id in use for another type)."""

    def __init__(self, diagnostics: str):
        super().__init__(*_one(409, "conflict", diagnostics))


class PreconditionFailed(FhirError):
    """412: If-Match names a stale version, or conditional criteria match several resources."""

    def __init__(self, diagnostics: str, *, code: str = "conflict"):
        super().__init__(*_one(412, code, diagnostics))


class MethodNotAllowed(FhirError):
    def __init__(self, diagnostics: str):
        super().__init__(*_one(405, "not-supported", diagnostics))


class NotAcceptable(FhirError):
    def __init__(self, diagnostics: str):
        super().__init__(*_one(406, "not-supported", diagnostics))


class UnsupportedMediaType(FhirError):
    def __init__(self, diagnostics: str):
        super().__init__(*_one(415, "not-supported", diagnostics))


class PayloadTooLarge(FhirError):
    def __init__(self, diagnostics: str):
        super().__init__(*_one(413, "too-costly", diagnostics))


class NotSupported(FhirError):
    """400/501-class refusals of features the server does not implement, said plainly."""

    def __init__(self, diagnostics: str, *, status: int = 400, expression: str | None = None):
        super().__init__(*_one(status, "not-supported", diagnostics, expression))
