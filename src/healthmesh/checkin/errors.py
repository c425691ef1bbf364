"""What can go wrong at check-in, each a 4xx OperationOutcome with a message for the front desk.

``reason`` is a stable machine code (in ``issue.details.coding``, system :data:`SYSTEM`) so the
page can react (ask for the passcode, show attempts left); ``message`` is for people. Messages
never carry the link, its key or a passcode.
"""

from __future__ import annotations

from typing import Any

SYSTEM = "https://healthmesh.example/fhir/CodeSystem/checkin-problem"
REMAINING = "https://healthmesh.example/fhir/StructureDefinition/checkin-remaining-attempts"


class CheckinProblem(Exception):
    def __init__(
        self,
        reason: str,
        message: str,
        *,
        status: int = 422,
        code: str = "processing",
        expression: str | None = None,
        remaining: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason, self.message, self.status, self.code = reason, message, status, code
        self.expression, self.remaining, self.retry_after = expression, remaining, retry_after

    def outcome(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": "error",
            "code": self.code,
            "details": {"coding": [{"system": SYSTEM, "code": self.reason}], "text": self.message},
            "diagnostics": self.message,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        if self.remaining is not None:
            issue["extension"] = [{"url": REMAINING, "valueInteger": self.remaining}]
        return {"resourceType": "OperationOutcome", "issue": [issue]}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def invalid_input(message: str) -> CheckinProblem:
    return CheckinProblem("invalid-input", message, status=400, code="invalid")


def unreadable_photo(message: str) -> CheckinProblem:
    return CheckinProblem("unreadable-photo", message, code="invalid")


def link_expired() -> CheckinProblem:
    return CheckinProblem(
        "link-expired",
        "This link has expired. Ask the patient to create a new one in their app.",
        status=410,
        code="expired",
    )


def link_inactive() -> CheckinProblem:
    # The SHL IG answers 404 for expired, revoked, paused and used-up links alike: the sender
    # tells no more, and neither can we.
    return CheckinProblem(
        "link-inactive",
        "This link is no longer active: it was revoked, has expired or has been used up."
        " Ask the patient to share again.",
        status=410,
        code="not-found",
    )


def passcode_required() -> CheckinProblem:
    return CheckinProblem(
        "passcode-required",
        "This link is protected by a passcode. Ask the patient for it.",
        code="required",
    )


def wrong_passcode(remaining: int) -> CheckinProblem:
    left = "no attempts left" if remaining <= 0 else f"{remaining} attempt(s) left"
    return CheckinProblem(
        "wrong-passcode",
        f"The passcode is wrong: {left}.",
        code="security",
        remaining=remaining,
    )


def throttled(retry_after: int) -> CheckinProblem:
    return CheckinProblem(
        "throttled",
        f"The sharing server asks us to wait {retry_after} s before trying again.",
        status=429,
        code="throttled",
        retry_after=retry_after,
    )


def unreachable(message: str) -> CheckinProblem:
    return CheckinProblem("sender-unreachable", message, code="transient")


def refused_address(message: str) -> CheckinProblem:
    return CheckinProblem("address-refused", message, status=400, code="security")


def unknown_issuer(message: str) -> CheckinProblem:
    return CheckinProblem("unknown-issuer", message, code="security")


def invalid_card(message: str) -> CheckinProblem:
    return CheckinProblem("invalid-card", message, code="security")


def invalid_bundle(message: str, expression: str | None = None) -> CheckinProblem:
    return CheckinProblem("invalid-bundle", message, code="invalid", expression=expression)


def nothing_received(message: str) -> CheckinProblem:
    return CheckinProblem("no-data", message, code="incomplete")
