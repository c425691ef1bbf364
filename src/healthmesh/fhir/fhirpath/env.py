"""Evaluation state shared by the compiled closures of one evaluation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .model import Node

Resolver = Callable[[str], Mapping[str, Any] | None]

# A compiled expression: (focus collection, environment) -> result collection. The focus is
# the collection identifiers navigate from, i.e. $this (spec §5.2: [item] inside where()).
Fn = Callable[[list[Any], "Env"], list[Any]]


class Env:
    """Variables, resolver and iteration state ($index, $total) for one evaluation."""

    __slots__ = ("index", "now", "resolver", "root", "strict", "total", "variables")

    def __init__(
        self,
        root: Node,
        variables: Mapping[str, list[Any]],
        resolver: Resolver | None,
        strict: bool = False,
    ) -> None:
        self.root = root
        self.variables = variables
        self.resolver = resolver
        self.strict = strict
        self.index: int | None = None
        self.total: list[Any] = []
        self.now: Any = None  # now() is fixed for one evaluation (spec §5.9.3)
