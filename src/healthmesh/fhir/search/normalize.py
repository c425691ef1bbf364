"""String normalisation for search: case- and accent-insensitive (R4 search.html#string)."""

from __future__ import annotations

import unicodedata
from functools import lru_cache


@lru_cache(maxsize=65536)
def normalize(value: str) -> str:
    """Lower-case (Unicode casefold), accents removed, white space collapsed.

    Cached: indexing normalises the same displays and names ("Body Height") over and over.
    """
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
