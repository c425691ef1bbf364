"""Units written side by side keep the order of the input where it matters (load/ordering.py)."""

from __future__ import annotations

import asyncio

from healthmesh.load.ordering import WriteOrder


async def _started(order: WriteOrder, seq: int) -> bool:
    """Whether ``seq`` gets its turn without anything else happening first."""
    try:
        await asyncio.wait_for(order.wait_turn(seq), timeout=0.05)
    except TimeoutError:
        return False
    return True


def test_a_unit_sharing_nothing_with_earlier_ones_goes_at_once() -> None:
    async def go() -> bool:
        order = WriteOrder()
        first, second = order.enter(), order.enter()
        order.declare(first, [("Patient", "a")])
        order.declare(second, [("Patient", "b")])
        return await _started(order, second)

    assert asyncio.run(go())


def test_a_unit_sharing_a_resource_waits_until_the_earlier_one_is_written() -> None:
    async def go() -> tuple[bool, bool]:
        order = WriteOrder()
        first, second = order.enter(), order.enter()
        order.declare(first, [("Patient", "a"), ("Observation", "x")])
        order.declare(second, [("Observation", "x")])
        before = await _started(order, second)
        order.leave(first)
        return before, await _started(order, second)

    assert asyncio.run(go()) == (False, True)


def test_a_unit_waits_for_an_earlier_one_still_being_prepared() -> None:
    async def go() -> tuple[bool, bool]:
        order = WriteOrder()
        first, second = order.enter(), order.enter()
        order.declare(second, [("Patient", "b")])
        before = await _started(order, second)  # the first's resources are not known yet
        order.declare(first, [("Patient", "a")])
        return before, await _started(order, second)

    assert asyncio.run(go()) == (False, True)


def test_a_barrier_waits_for_everything_before_it_and_holds_everything_after() -> None:
    async def go() -> tuple[bool, bool, bool, bool]:
        order = WriteOrder()
        first, barrier, after = order.enter(), order.enter(), order.enter()
        order.declare(first, [("Patient", "a")])
        order.declare(barrier, [], barrier=True)
        order.declare(after, [("Patient", "z")])
        results = [await _started(order, barrier), await _started(order, after)]
        order.leave(first)
        results.append(await _started(order, barrier))
        order.leave(barrier)
        results.append(await _started(order, after))
        return tuple(results)  # type: ignore[return-value]

    assert asyncio.run(go()) == (False, False, True, True)
