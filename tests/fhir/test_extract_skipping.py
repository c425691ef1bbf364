"""Skipping search parameters whose elements a resource lacks (fhirpath/roots.py) changes no row."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.fhir import fhirpath
from healthmesh.fhir.search import extract as extract_module
from healthmesh.fhir.search.extract import extract
from healthmesh.fhir.search.registry import IndexedParam, indexed_params

from support import SYNTHEA

SAMPLE = Path(extract_module.__file__).resolve().parents[2] / "load/sample/synthea-sample.ndjson.gz"


def _keys(expression: str, resource_type: str) -> set[str] | None:
    found = fhirpath.compile(expression).root_keys(resource_type)
    return None if found is None else set(found)


def test_a_path_needs_its_root_element_and_its_extension_sibling() -> None:
    assert _keys("Patient.name.family", "Patient") == {"name", "_name"}
    assert _keys("Resource.meta.tag", "Observation") == {"meta", "_meta"}
    assert _keys("Observation.subject.where(resolve() is Patient)", "Observation") == {
        "subject",
        "_subject",
    }
    assert _keys("Patient.extension('urn:x').value", "Patient") == {"extension", "_extension"}


def test_a_choice_element_needs_one_of_its_variants_and_as_narrows_them() -> None:
    every = _keys("Observation.value", "Observation")
    assert every is not None and {"valueQuantity", "valueString", "_valueString"} <= every
    assert _keys("Observation.value.as(Quantity)", "Observation") == {
        "valueQuantity",
        "_valueQuantity",
    }
    assert _keys("(Observation.value as Quantity) | Observation.component", "Observation") == {
        "valueQuantity",
        "_valueQuantity",
        "component",
        "_component",
    }
    # as() below the root element narrows nothing: the result still comes from any value[x].
    deeper = _keys("Observation.value.unit.as(string)", "Observation")
    assert deeper == every


def test_shapes_that_do_not_tell_are_always_evaluated() -> None:
    assert _keys("Patient.deceased.exists() and Patient.deceased != false", "Patient") is None
    assert _keys("Observation", "Observation") is None
    assert _keys("Observation.code.exists()", "Observation") is None  # true/false, never empty
    assert _keys("Patient.name.count()", "Patient") is None


def _evaluating_everything(resource_type: str) -> tuple[IndexedParam, ...]:
    return tuple(
        dataclasses.replace(p, keys=None, component_keys=()) for p in indexed_params(resource_type)
    )


def _resources() -> Iterator[dict[str, Any]]:
    with gzip.open(SAMPLE) as lines:
        for line in lines:
            yield orjson.loads(line)
    if SYNTHEA.is_dir():
        for path in sorted(SYNTHEA.glob("*.json"))[:12]:
            for entry in orjson.loads(path.read_bytes())["entry"]:
                yield entry["resource"]


def test_skipping_gives_the_same_rows_as_evaluating_every_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = list(_resources())
    assert len(resources) >= 1000
    skipped = [extract(r) for r in resources]
    monkeypatch.setattr(extract_module, "indexed_params", _evaluating_everything)
    complete = [extract(r) for r in resources]
    assert skipped == complete
    assert sum(rows.total() + len(rows.composite) for rows in complete) > 10 * len(resources)
