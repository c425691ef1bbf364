"""Index rows for one resource version: what search finds it by.

Today the token index holds ``identifier`` values (conditional create/update/delete and
conditional references in transactions find resources by them). The search issue extends
this module to every parameter type, driven by the SearchParameter definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TokenRow = tuple[str, str | None, str | None]  # (param, system, code)


def token_rows(resource: Mapping[str, Any]) -> list[TokenRow]:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    if not isinstance(identifiers, list):
        return []
    rows: list[TokenRow] = []
    for ident in identifiers:
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if isinstance(value, str) or isinstance(system, str):
            rows.append(
                (
                    "identifier",
                    system if isinstance(system, str) else None,
                    value if isinstance(value, str) else None,
                )
            )
    return rows
