"""The one way identity verification and matching say no."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healthmesh.auth.identity.matching import MatchDecision


class IdentityRefused(Exception):
    """An id_token or a match we will not turn into a Patient id.

    ``code`` is stable and machine-readable (tests and audit key on it); ``reason`` is for the
    OAuth ``error_description`` and logs. Neither ever contains the token or any claim value.
    ``decision`` carries the matching record when the refusal came from matching.
    """

    def __init__(self, reason: str, *, code: str, decision: MatchDecision | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.decision = decision

    def __repr__(self) -> str:
        return f"IdentityRefused(code={self.code!r}, reason={self.reason!r})"
