"""OAuth 2.0 error responses (RFC 6749 §5.2): what the token endpoints answer when they refuse."""

from __future__ import annotations


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``error`` is the registered code, ``description`` says why.

    The description goes to the client and may go to logs: it never contains a token, a
    code, a secret or an assertion, only what was wrong with it.
    """

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        # §5.2: invalid_client is 401 when the client tried to authenticate; 429 for rate limits.
        self.status = 401 if error == "invalid_client" else status
        self.retry_after: int | None = None

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class RateLimited(OAuthError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "slow_down", "too many token requests; retry later", status=429
        )  # "slow_down" is RFC 8628's code for exactly this; clients also get Retry-After
        self.retry_after = retry_after
