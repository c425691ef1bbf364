"""Resource ids, references and their syntax (R4 datatypes.html#id, references.html)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATIVE = re.compile(
    r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?"
)


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class RelativeReference:
    """``Type/id`` or ``Type/id/_history/vid``: a reference to a resource on this server."""

    resource_type: str
    id: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.resource_type}/{self.id}"


def parse_relative(reference: str, *, base: str | None = None) -> RelativeReference | None:
    """Parse a literal reference to this server; absolute URLs count when they start with base."""
    if base is not None and reference.startswith(base):
        reference = reference[len(base) :].lstrip("/")
    match = _RELATIVE.fullmatch(reference)
    if match is None:
        return None
    return RelativeReference(match.group(1), match.group(2), match.group(3))
