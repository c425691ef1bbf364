"""The Kill the Clipboard PatientSharedBundle: Patient/[id]/$shared-bundle through real HTTP, and
the Python function the share-link API calls."""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import re
import shutil
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from ips_records import Ids, ada_record, b64, minimal_pdf, put_all
from ips_rules import C4DIC, shared_bundle_problems

from healthmesh.fhir.errors import NotFound
from healthmesh.fhir.validation import validate_resource
from healthmesh.load.loader import Loader
from healthmesh.share.bundle import PatientDocument, shared_bundle
from healthmesh.store.access import RowRule, Visibility
from healthmesh.store.repository import Repository

from conftest import ServerThread
from support import FHIR_JSON

SAMPLE = Path(__file__).resolve().parents[2] / "src/healthmesh/load/sample/synthea-sample.ndjson.gz"
Resource = dict[str, Any]


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base, timeout=60, headers={"Accept": "application/fhir+json"}
    ) as c:
        yield c


@pytest.fixture(scope="module")
def ids(http: httpx.Client) -> Ids:
    made = Ids()
    put_all(http, ada_record(made))
    return made


def _parameters(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parts)}


def _by_type(bundle: Resource, kind: str) -> list[Resource]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _loinc(document: Resource) -> str:
    return str(document["type"]["coding"][0]["code"])


def _attachment(document: Resource) -> bytes:
    return base64.b64decode(document["content"][0]["attachment"]["data"])


def pdf_text(data: bytes) -> str:
    """The text drawn by a PDF's content streams (fpdf2 writes it as ``(…) Tj`` strings)."""
    shown = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            # A stream whose last byte is \r loses it to the regex's \r?\n (1 in 256, the
            # PDF's bytes change with its timestamp): decompress what is there, checksum or not.
            content = zlib.decompressobj().decompress(stream)
        except zlib.error:
            content = stream
        shown += re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", content)
    return " ".join(s.decode("latin-1").replace("\\(", "(").replace("\\)", ")") for s in shown)


def test_shared_bundle_follows_the_kill_the_clipboard_rules(http: httpx.Client, ids: Ids) -> None:
    letter = minimal_pdf("A letter from Ada")
    response = http.post(
        f"/Patient/{ids('ada')}/$shared-bundle",
        json=_parameters(
            {
                "name": "document",
                "valueAttachment": {
                    "contentType": "application/pdf",
                    "data": b64(letter),
                    "title": "My story",
                },
            }
        ),
        headers=FHIR_JSON,
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert shared_bundle_problems(bundle) == []
    assert validate_resource(bundle) == []
    assert not _by_type(bundle, "Composition")
    (patient,) = _by_type(bundle, "Patient")
    assert patient["id"] == ids("ada") and bundle["entry"][0]["resource"] is not None
    documents = _by_type(bundle, "DocumentReference")
    assert sorted(_loinc(d) for d in documents) == ["51855-5", "60591-5"]
    (story,) = [d for d in documents if _loinc(d) == "51855-5"]
    assert _attachment(story) == letter
    assert story["content"][0]["attachment"]["title"] == "My story"
    # the summary's content is there, and its references point inside the bundle
    urls = {
        e["resource"]["resourceType"] + "/" + e["resource"]["id"]: e["fullUrl"]
        for e in bundle["entry"]
    }
    statement = next(r for r in _by_type(bundle, "MedicationStatement"))
    assert statement["medicationReference"]["reference"] == urls[f"Medication/{ids('salbutamol')}"]
    assert statement["subject"]["reference"] == urls[f"Patient/{ids('ada')}"]
    assert {f"Condition/{ids('asthma')}", f"AllergyIntolerance/{ids('peanut')}"} <= urls.keys()


def test_the_insurance_card_is_a_c4dic_coverage_with_its_payer(
    http: httpx.Client, ids: Ids
) -> None:
    bundle = http.get(f"/Patient/{ids('ada')}/$shared-bundle").json()
    (coverage,) = _by_type(bundle, "Coverage")
    assert C4DIC in coverage["meta"]["profile"]
    assert coverage["subscriberId"] == "M123456"
    urls = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    payer = urls[coverage["payor"][0]["reference"]]
    assert payer["resourceType"] == "Organization" and payer["name"] == f"Acme Health {ids.run}"
    assert urls[coverage["beneficiary"]["reference"]]["id"] == ids("ada")


def test_the_pdf_rendering_shows_the_patient_and_each_section(
    http: httpx.Client, ids: Ids, tmp_path: Path
) -> None:
    bundle = http.get(f"/Patient/{ids('ada')}/$shared-bundle").json()
    (rendering,) = [d for d in _by_type(bundle, "DocumentReference") if _loinc(d) == "60591-5"]
    data = _attachment(rendering)
    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    for shown in (
        "Patient Summary",
        "Ada Lovelace",
        "1985-12-10",
        "Active Problems",
        "Asthma",
        "Allergy to peanut",
        "Salbutamol inhaler",
        f"Acme Health {ids.run}",
        "member ID M123456",
    ):
        assert shown in text, shown
    assert "Leprosy" not in text  # entered in error
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: the PDF was not rasterised")
    source = tmp_path / "summary.pdf"
    source.write_bytes(data)
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "40",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            str(source),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    from PIL import Image  # Pillow comes with fpdf2

    with Image.open(tmp_path / "page.png") as page:
        extrema: Any = page.convert("L").getextrema()  # (min, max) for one band
    darkest, lightest = extrema
    assert lightest > 200 and darkest < 60  # a white page with text drawn on it


def test_without_rendering_and_without_documents_only_fhir_content_remains(
    http: httpx.Client, ids: Ids
) -> None:
    bundle = http.get(f"/Patient/{ids('ada')}/$shared-bundle", params={"rendering": "false"}).json()
    assert shared_bundle_problems(bundle) == []
    assert not _by_type(bundle, "DocumentReference")
    posted = http.post(
        f"/Patient/{ids('ada')}/$shared-bundle",
        json=_parameters({"name": "rendering", "valueBoolean": False}),
        headers=FHIR_JSON,
    ).json()
    assert not _by_type(posted, "DocumentReference")


@pytest.mark.parametrize(
    ("part", "where"),
    [
        (
            {
                "name": "document",
                "valueAttachment": {"contentType": "text/plain", "data": b64(b"hi")},
            },
            "Parameters.parameter[0].valueAttachment.contentType",
        ),
        (
            {
                "name": "document",
                "valueAttachment": {"contentType": "application/pdf", "data": b64(b"not a pdf")},
            },
            "Parameters.parameter[0].valueAttachment.data",
        ),
        ({"name": "colour", "valueString": "blue"}, "Parameters.parameter[0].name"),
        ({"name": "rendering", "valueString": "yes"}, "Parameters.parameter[0]"),
    ],
)
def test_bad_parameters_are_400_saying_where(
    http: httpx.Client, ids: Ids, part: dict[str, Any], where: str
) -> None:
    response = http.post(
        f"/Patient/{ids('ada')}/$shared-bundle", json=_parameters(part), headers=FHIR_JSON
    )
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


def test_a_bad_rendering_flag_in_the_query_is_400(http: httpx.Client, ids: Ids) -> None:
    response = http.get(f"/Patient/{ids('ada')}/$shared-bundle", params={"rendering": "maybe"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["rendering"]


def test_a_patient_without_demographics_cannot_be_shared_and_is_told_why(
    http: httpx.Client,
) -> None:
    pid = f"anon-{uuid.uuid4().hex[:8]}"
    put_all(http, [{"resourceType": "Patient", "id": pid, "gender": "other"}])
    response = http.get(f"/Patient/{pid}/$shared-bundle")
    assert response.status_code == 422
    expressions = [e for i in response.json()["issue"] for e in i.get("expression", [])]
    assert expressions == ["Patient.name", "Patient.birthDate"]


def test_the_shared_bundle_of_an_unknown_patient_is_404(http: httpx.Client) -> None:
    response = http.get(f"/Patient/nobody-{uuid.uuid4().hex[:8]}/$shared-bundle")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def _run_session(database_url: str, visibility: Visibility | None, work: Any) -> Any:
    async def go() -> Any:
        repository = Repository(database_url, min_size=1, max_size=1)
        await repository.open()
        try:
            async with repository.session(write=False, visibility=visibility) as session:
                return await work(session)
        finally:
            await repository.close()

    return asyncio.run(go())


def test_the_python_function_takes_documents_and_keeps_to_the_callers_visibility(
    database_url: str, ids: Ids
) -> None:
    base = "https://node.example/fhir"
    own = Visibility({"s": [RowRule(patient=ids("ada"))], "r": [RowRule(patient=ids("ada"))]})
    letter = minimal_pdf("Letter")

    async def mine(session: Any) -> Resource:
        return await shared_bundle(
            session, ids("ada"), base=base, documents=[PatientDocument(letter, "Letter")]
        )

    bundle = _run_session(database_url, own, mine)
    assert shared_bundle_problems(bundle) == []
    (story,) = [d for d in _by_type(bundle, "DocumentReference") if _loinc(d) == "51855-5"]
    assert _attachment(story) == letter
    (rendering,) = [d for d in _by_type(bundle, "DocumentReference") if _loinc(d) == "60591-5"]
    assert "node.example" in pdf_text(_attachment(rendering))  # the base the data came from

    async def bobs(session: Any) -> Resource:
        return await shared_bundle(session, ids("bob"), base=base)

    with pytest.raises(NotFound):
        _run_session(database_url, own, bobs)
    with pytest.raises(Exception, match="PDF"):
        PatientDocument(b"GIF89a", "not a pdf")


def test_the_shared_bundle_rules_catch_broken_bundles(http: httpx.Client, ids: Ids) -> None:
    good = http.get(f"/Patient/{ids('ada')}/$shared-bundle").json()

    def broken(change: Any) -> list[str]:
        bundle = copy.deepcopy(good)
        change(bundle)
        return shared_bundle_problems(bundle)

    def second_patient(b: Resource) -> None:
        b["entry"].append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {"resourceType": "Patient", "id": "x"},
            }
        )

    def external_reference(b: Resource) -> None:
        b["entry"][1]["resource"]["subject"] = {"reference": "Patient/" + ids("ada")}

    def restful_url(b: Resource) -> None:
        b["entry"][1]["fullUrl"] = "http://node.example/fhir/Condition/1"

    def not_patast(b: Resource) -> None:
        _by_type(b, "DocumentReference")[0]["meta"]["security"] = []

    def uncarded(b: Resource) -> None:
        _by_type(b, "Coverage")[0]["meta"]["profile"] = []

    assert any("Patients" in p for p in broken(second_patient))
    assert any("not internal" in p for p in broken(external_reference))
    assert any("urn:uuid" in p for p in broken(restful_url))
    assert any("PATAST" in p for p in broken(not_patast))
    assert any("C4DIC" in p for p in broken(uncarded))


def test_shared_bundles_of_the_bundled_synthea_sample_follow_the_rules(
    http: httpx.Client, database_url: str
) -> None:
    async def load() -> None:
        repository = Repository(database_url, min_size=1, max_size=2)
        await repository.open()
        try:
            assert not (await Loader(repository).load([SAMPLE])).errors
        finally:
            await repository.close()

    asyncio.run(load())
    with gzip.open(SAMPLE, "rb") as f:
        patients = [r["id"] for r in map(orjson.loads, f) if r["resourceType"] == "Patient"]
    for pid in patients:
        response = http.get(f"/Patient/{pid}/$shared-bundle")
        assert response.status_code == 200, response.text
        assert shared_bundle_problems(response.json()) == [], pid
