"""String normalisation for search: case- and accent-insensitive (R4 search.html#string)."""

from __future__ import annotations

import unicodedata


def normalize(value: str) -> str:
    """Lower-case (Unicode casefold), accents removed, white space collapsed."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
