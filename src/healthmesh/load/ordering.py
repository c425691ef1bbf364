"""Which prepared units may be written side by side, so that the later write still wins.

The loader writes units (a Bundle, an NDJSON chunk) over several connections at once:
PostgreSQL's work for one unit's COPY runs on one backend, and on a small machine one
backend at a time leaves a core idle. Loading stays as if sequential: a unit waits for an
earlier unit still being written when they share a resource (the same type and id, so the
later line or file wins, as it would one by one) or when either is a *barrier* — a Bundle
run through the transaction code, whose conditional references may name anything written
before it. Units that share nothing commit in any order; their results are the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

Key = tuple[str, str]  # (resource type, id)


@dataclass(slots=True)
class _Slot:
    keys: frozenset[Key] = frozenset()
    barrier: bool = False
    known: asyncio.Event = field(default_factory=asyncio.Event)  # keys and barrier are set
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WriteOrder:
    """Units in input order: ``enter`` when read, ``declare`` once prepared, ``wait_turn``
    before writing, ``leave`` when written (or given up)."""

    def __init__(self) -> None:
        self._active: dict[int, _Slot] = {}
        self._next = 0

    def enter(self) -> int:
        seq = self._next
        self._next += 1
        self._active[seq] = _Slot()
        return seq

    def declare(self, seq: int, keys: Iterable[Key], *, barrier: bool = False) -> None:
        slot = self._active[seq]
        slot.keys = frozenset(keys)
        slot.barrier = barrier
        slot.known.set()

    async def wait_turn(self, seq: int) -> None:
        """Until every earlier unit this one must follow is written."""
        me = self._active[seq]
        for other_seq, other in list(self._active.items()):
            if other_seq >= seq:
                continue
            await other.known.wait()
            if me.barrier or other.barrier or not me.keys.isdisjoint(other.keys):
                await other.done.wait()

    def leave(self, seq: int) -> None:
        slot = self._active.pop(seq)
        slot.known.set()  # also when it never got to declare: nothing waits on it in vain
        slot.done.set()
