"""Utility functions: trace, now/today/timeOfDay (spec §5.9) and the FHIRPath 2.1 precision
functions exercised by the official R4 suite (lowBoundary, highBoundary, precision,
comparable)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ..collections_ import single_value
from ..decimals import boundary as decimal_boundary
from ..decimals import places
from ..env import Env, Fn
from ..errors import FhirPathEvaluationError
from ..quantity import Quantity
from ..temporal import DATE, TIME, Temporal, now_datetime
from ..temporal import boundary as temporal_boundary
from ..values import to_python
from .registry import function

_log = logging.getLogger("healthmesh.fhir.fhirpath.trace")


@function("trace", 1, 2, lazy=True)
def trace(inp: list[Any], env: Env, focus: list[Any], args: Sequence[Fn]) -> list[Any]:
    if _log.isEnabledFor(logging.DEBUG):
        name = args[0](focus, env)
        shown = args[1](inp, env) if len(args) > 1 else inp
        _log.debug("%s: %r", name[0] if name else "", [to_python(x) for x in shown])
    return inp


def _now(env: Env) -> Temporal:
    """The evaluation's moment: repeated calls within one evaluation agree (spec §5.9.3)."""
    if env.now is None:
        env.now = now_datetime()
    moment: Temporal = env.now
    return moment


@function("now")
def now(inp: list[Any], env: Env) -> list[Any]:
    return [_now(env)]


@function("today")
def today(inp: list[Any], env: Env) -> list[Any]:
    return [Temporal(DATE, _now(env).parts[:3])]


@function("timeOfDay")
def time_of_day(inp: list[Any], env: Env) -> list[Any]:
    return [Temporal(TIME, _now(env).parts[3:])]


def _precision_arg(arg: list[Any] | None) -> int | None:
    if arg is None:
        return None
    value = single_value(arg, "boundary precision")
    if value is not None and type(value) is not int:
        raise FhirPathEvaluationError("Boundary precision must be an Integer")
    return value


def _boundary(inp: list[Any], arg: list[Any] | None, *, high: bool) -> list[Any]:
    value = single_value(inp, "boundary function")
    if value is None:
        return []
    digits = _precision_arg(arg)
    result: Any
    if type(value) is int or type(value) is Decimal:
        result = decimal_boundary(Decimal(value), digits, high=high)
    elif type(value) is Quantity:
        number = decimal_boundary(value.value, digits, high=high)
        result = None if number is None else Quantity(number, value.unit)
    elif type(value) is Temporal:
        result = temporal_boundary(value, digits, high=high)
    else:
        return []
    return [] if result is None else [result]


@function("lowBoundary", 0, 1)
def low_boundary(inp: list[Any], env: Env, precision: list[Any] | None = None) -> list[Any]:
    return _boundary(inp, precision, high=False)


@function("highBoundary", 0, 1)
def high_boundary(inp: list[Any], env: Env, precision: list[Any] | None = None) -> list[Any]:
    return _boundary(inp, precision, high=True)


@function("precision")
def precision(inp: list[Any], env: Env) -> list[Any]:
    value = single_value(inp, "precision()")
    if type(value) is Decimal:
        return [places(value)]
    if type(value) is int:
        return [0]
    if type(value) is Temporal:
        return [value.precision_digits]
    if type(value) is Quantity:
        return [places(value.value)]
    return []


@function("comparable", 1)
def comparable(inp: list[Any], env: Env, other: list[Any]) -> list[Any]:
    a = single_value(inp, "comparable()")
    b = single_value(other, "comparable()")
    if a is None or b is None:
        return []
    if type(a) is not Quantity or type(b) is not Quantity:
        raise FhirPathEvaluationError("comparable() expects quantities")
    return [a.comparable(b)]
