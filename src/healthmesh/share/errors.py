"""Errors of the sharing endpoints, each with the HTTP answer the IG asks for.

The SHL IG fixes three answers (404 inactive, 401 ``{"remainingAttempts": n}``, 429 with
Retry-After); everything else is an RFC 6749-style ``{error, error_description}`` body, which
never says more than the caller already knows (no other patient's links, no existence leak).
"""

from __future__ import annotations

from typing import Any


class ShareError(Exception):
    status = 400
    error = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ShareError):
    pass


class LinkNotFound(ShareError):
    """Unknown, expired, paused, revoked or exhausted: the IG answers 404 for all of them, so a
    receiver learns nothing about why (and a guesser nothing about which ids exist)."""

    status = 404
    error = "not_found"

    def __init__(self, description: str = "no active SMART Health Link at this address") -> None:
        super().__init__(description)


class WrongPasscode(ShareError):
    status = 401
    error = "invalid_passcode"

    def __init__(self, remaining: int) -> None:
        super().__init__("the passcode is missing or wrong")
        self.remaining = remaining

    def body(self) -> dict[str, Any]:
        return {"remainingAttempts": self.remaining}


class TooManyRequests(ShareError):
    status = 429
    error = "slow_down"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"this link is polled too often; retry after {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Forbidden(ShareError):
    status = 403
    error = "insufficient_scope"


class MethodNotAllowed(ShareError):
    status = 405
    error = "invalid_request"


class NotRecorded(ShareError):
    """The access could not be recorded in the audit trail, so it was not performed (the
    node's infrastructure failed, not the caller: 503)."""

    status = 503
    error = "temporarily_unavailable"

    def __init__(self) -> None:
        super().__init__("the access could not be recorded; try again later")
