"""Plain member paths walked without the evaluator select what the evaluator selects."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from healthmesh.fhir.fhirpath.model import resource_node
from healthmesh.fhir.search import extract as extract_module
from healthmesh.fhir.search.extract import extract
from healthmesh.fhir.search.plain_paths import plain_steps, walk
from healthmesh.fhir.search.registry import IndexedParam, indexed_params

from support import SYNTHEA

SAMPLE = Path(extract_module.__file__).resolve().parents[2] / "load/sample/synthea-sample.ndjson.gz"


def _resources() -> Iterator[dict[str, Any]]:
    with gzip.open(SAMPLE) as lines:
        for line in lines:
            yield orjson.loads(line)
    if SYNTHEA.is_dir():
        for path in sorted(SYNTHEA.glob("*.json"))[:4]:
            for entry in orjson.loads(path.read_bytes())["entry"]:
                yield entry["resource"]


def test_only_plain_paths_of_the_resources_own_type_are_walked() -> None:
    assert plain_steps("Observation.code", "Observation") is not None
    assert plain_steps("Resource.meta.tag", "Observation") is not None
    assert plain_steps("DomainResource.text", "Bundle") is None  # a Bundle is no DomainResource
    assert plain_steps("Observation.subject.where(resolve() is Patient)", "Observation") is None
    assert plain_steps("(Observation.value as Quantity)", "Observation") is None
    assert plain_steps("Observation.code | Observation.component.code", "Observation") is None
    assert plain_steps("Patient.name", "Observation") is None


def test_walked_paths_select_the_evaluators_nodes() -> None:
    walked = 0
    for resource in _resources():
        root = resource_node(resource)
        for param in indexed_params(resource["resourceType"]):
            if param.steps is None:
                continue
            expected = [(n.value, n.fhir_type, n.ext) for n in param.path.run(root)]
            found = [(n.value, n.fhir_type, n.ext) for n in walk(param.steps, root)]
            assert found == expected, (resource["resourceType"], param.code)
            walked += bool(found)
    assert walked > 1000


def _without_steps(resource_type: str) -> tuple[IndexedParam, ...]:
    return tuple(dataclasses.replace(p, steps=None) for p in indexed_params(resource_type))


def test_indexing_gives_the_same_rows_with_and_without_walking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources = list(_resources())
    walked = [extract(r) for r in resources]
    monkeypatch.setattr(extract_module, "indexed_params", _without_steps)
    assert walked == [extract(r) for r in resources]
