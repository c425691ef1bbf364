"""The receiver's parts on their own: photo decoding (our QR → PNG/JPEG → OpenCV), the address
guard for URLs taken from QR codes, the PatientSharedBundle rules, and partial data and
all-or-nothing import against a small real sharing server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from checkin_support import Clinic, reason, two_nodes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healthmesh.checkin import errors
from healthmesh.checkin.bundle_rules import check_shared_bundle
from healthmesh.checkin.fetch import SafeFetcher
from healthmesh.checkin.importer import Importer, transaction_bundle
from healthmesh.checkin.receive import Received, Source
from healthmesh.checkin.scan import classify, decode_photo
from healthmesh.checkin.settings import CheckinSettings
from healthmesh.share import jwe, qr
from healthmesh.share.shl import LinkPayload, new_key

from conftest import ServerThread, free_port

FHIR = "application/fhir+json"
P_URL = "urn:uuid:00000000-0000-4000-8000-000000000001"
LINK = LinkPayload(url="https://share.example/shl/" + "a" * 43, key=new_key(), flag="U", exp=2**31)


def _camera_frame(png: bytes, *, quality: int = 80) -> bytes:
    """Our QR code small and tilted on a grey, noisy 1280×720 'camera frame', as JPEG."""
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None
    code = cv2.resize(decoded, (360, 360), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    frame = (rng.normal(150, 20, (720, 1280))).clip(0, 255).astype(np.uint8)
    frame[180:540, 460:820] = code
    turn = cv2.getRotationMatrix2D((640, 360), 8, 1.0)
    tilted = cv2.warpAffine(frame, turn, (1280, 720), borderValue=150)
    ok, jpeg = cv2.imencode(".jpg", tilted, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(jpeg)


def test_a_png_of_our_own_link_qr_decodes_to_the_link() -> None:
    text = LINK.viewer_url("https://viewer.example/")
    assert decode_photo(qr.link_qr(text, "png")) == text
    assert classify(decode_photo(qr.link_qr(text, "png"))).link == LINK


def test_a_tilted_jpeg_camera_frame_of_the_qr_decodes() -> None:
    text = LINK.encode()
    assert decode_photo(_camera_frame(qr.link_qr(text, "png"))) == text


def test_a_photo_without_a_code_or_not_a_photo_is_unreadable() -> None:
    ok, blank = cv2.imencode(".png", np.full((300, 300), 255, np.uint8))
    assert ok
    for data in (bytes(blank), b"GIF89a", b"\x89PNG\r\n\x1a\n broken"):
        with pytest.raises(errors.CheckinProblem) as caught:
            decode_photo(data)
        assert caught.value.reason == "unreadable-photo"


def test_classify_tells_links_cards_and_junk_apart() -> None:
    assert classify(LINK.encode()).link == LINK
    assert classify(f"https://viewer.example/#{LINK.encode()}").link == LINK
    assert classify("shc:/5676\nshc:/5677").card_chunks == ("shc:/5676", "shc:/5677")
    for junk in ("", "hello", "shlink:/not-base64!"):
        with pytest.raises(errors.CheckinProblem) as caught:
            classify(junk)
        assert caught.value.status == 400


@pytest.mark.parametrize(
    "url",
    [
        "http://share.example/shl/x",  # not https
        "https://127.0.0.1/shl/x",  # loopback
        "https://10.1.2.3/shl/x",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]/shl/x",
        "https://user:pw@share.example/shl/x",  # credentials in the URL
        "file:///etc/passwd",
    ],
)
def test_urls_from_qr_codes_to_local_or_plain_http_addresses_are_refused(url: str) -> None:
    async def check() -> None:
        async with httpx.AsyncClient() as http:
            await SafeFetcher(CheckinSettings(), http).check_url(url)

    with pytest.raises(errors.CheckinProblem) as caught:
        asyncio.run(check())
    assert caught.value.reason == "address-refused"
    assert caught.value.status == 400


def _bundle(*extra: dict[str, Any]) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Doe"}],
        "birthDate": "1990-01-01",
        "gender": "other",
    }
    entries = [{"fullUrl": P_URL, "resource": patient}]
    entries += [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-0000000001{n:02d}", "resource": r}
        for n, r in enumerate(extra)
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def _condition(subject: str = P_URL, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "code": {"text": "Gout"},
        "subject": {"reference": subject},
        **more,
    }


def test_the_shared_bundle_rules_name_what_is_wrong() -> None:
    assert len(check_shared_bundle(_bundle(_condition()))) == 2
    cases: list[tuple[dict[str, Any], str]] = [
        ({**_bundle(_condition()), "type": "document"}, "Bundle.type"),
        (_bundle(), "Bundle.entry"),  # the Patient alone
        (
            _bundle(_condition(), {"resourceType": "Patient", "name": [{"family": "B"}]}),
            "Bundle.entry",
        ),
        (_bundle(_condition("Patient/elsewhere")), "Bundle.entry[1].resource"),
    ]
    no_dob = _bundle(_condition())
    del no_dob["entry"][0]["resource"]["birthDate"]
    cases.append((no_dob, "Bundle.entry[0].resource.birthDate"))
    relative = _bundle(_condition())
    relative["entry"][1]["fullUrl"] = "Condition/1"
    cases.append((relative, "Bundle.entry[1].fullUrl"))
    for bundle, where in cases:
        with pytest.raises(errors.CheckinProblem) as caught:
            check_shared_bundle(bundle)
        assert caught.value.reason == "invalid-bundle"
        assert caught.value.expression == where, (where, caught.value.message)


# --- a sharing server that misbehaves on purpose ------------------------------------------


class OddSender:
    """A real HTTP sharing server whose manifest has a good file, a dead location and a kind
    of file check-in does not read; and, at /bad, a valid Bundle (see the all-or-nothing test)."""

    def __init__(self) -> None:
        self.key = new_key()
        self.port = free_port()
        self.good = _bundle(_condition(code={"text": f"Gout {self.port}"}))
        shot = {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"text": f"Never stored {self.port}"},
            "patient": {"reference": P_URL},
            "occurrenceDateTime": "2024-01-01",
        }
        gout = _condition(code={"text": f"Trouble {self.port}"})
        self.bad = _bundle(shot, gout)
        routes = [
            Route("/shl/odd", self.manifest, methods=["POST"]),
            Route("/shl/bad", self.manifest, methods=["POST"]),
            Route("/missing", lambda r: Response(status_code=404), methods=["GET"]),
            Route("/shl/located", self.located, methods=["POST"]),
            Route("/file", self.file, methods=["GET"]),
            Route("/shl/elsewhere", self.elsewhere, methods=["POST"]),
            Route(
                "/shl/busy",
                lambda r: Response(status_code=429, headers={"Retry-After": "7"}),
                methods=["POST"],
            ),
        ]
        config = uvicorn.Config(
            Starlette(routes=routes), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def manifest(self, request: Request) -> Response:
        bundle = self.bad if request.url.path.endswith("bad") else self.good
        token = jwe.encrypt(orjson.dumps(bundle), self.key, "application/fhir+json")
        files = [
            {"contentType": "application/fhir+json", "embedded": token},
            {"contentType": "application/fhir+json", "location": f"{self.origin}/missing"},
            {"contentType": "application/smart-api-access", "embedded": token},
        ]
        return JSONResponse({"files": files})

    async def located(self, request: Request) -> Response:
        """Every file by location, whatever embeddedLengthMax says (the IG allows it)."""
        return JSONResponse(
            {"files": [{"contentType": "application/fhir+json", "location": f"{self.origin}/file"}]}
        )

    async def file(self, request: Request) -> Response:
        token = jwe.encrypt(orjson.dumps(self.good), self.key, "application/fhir+json")
        return Response(token, media_type="application/jose")

    async def elsewhere(self, request: Request) -> Response:
        return Response(status_code=302, headers={"Location": "http://169.254.169.254/"})

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def link(self, name: str) -> str:
        return LinkPayload(
            url=f"{self.origin}/shl/{name}", key=self.key, exp=int(time.time()) + 600
        ).encode()

    def __enter__(self) -> OddSender:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def odd() -> Iterator[OddSender]:
    with OddSender() as running:
        yield running


@pytest.fixture(scope="module")
def clinic(admin_url: str, database_url: str, server: ServerThread) -> Iterator[Clinic]:
    with two_nodes(admin_url, database_url, server) as nodes:
        front_desk = Clinic(nodes.clinic)
        yield front_desk
        front_desk.http.close()


def test_files_that_fail_are_reported_as_partial_data_and_the_rest_is_shown(
    odd: OddSender, clinic: Clinic
) -> None:
    answer = clinic.scan(text=odd.link("odd"))
    assert answer.status_code == 200, answer.text
    preview = answer.json()
    assert [p["name"] for p in preview["summary"]["problems"]] == [f"Gout {odd.port}"]
    warnings = preview["warnings"]
    assert len(warnings) == 2, warnings
    assert "File 2 could not be used" in warnings[0] and "404" in warnings[0]
    assert "application/smart-api-access" in warnings[1]


def test_an_import_the_store_refuses_writes_nothing_at_all(odd: OddSender, clinic: Clinic) -> None:
    """The clinic already holds two Conditions with the idempotency key the shared Condition
    will get (as a botched earlier import might have left): the conditional create matches
    two, so the transaction fails (412), and the Immunization before it and the new Patient
    are not written either."""
    link = odd.link("bad")
    preview = clinic.scan(text=link).json()
    entries = check_shared_bundle(odd.bad)
    received = Received(source=Source(kind="shl", digest=""), bundle=odd.bad, entries=entries)
    planned, _ = transaction_bundle(
        received, patient_id=None, importer=Importer(fhir_user=None, client_id="x")
    )
    key = next(
        e["resource"]["identifier"]
        for e in planned["entry"]
        if e["resource"]["resourceType"] == "Condition"
    )
    for _ in range(2):
        twin = {**_condition(code={"text": "pre-existing"}), "identifier": key}
        twin["subject"] = {"display": "someone"}
        made = clinic.http.post("/fhir/Condition", json=twin, headers={"Content-Type": FHIR})
        assert made.status_code == 201, made.text
    answer = clinic.import_(text=link, patient="new", reviewed=preview["digest"])
    assert answer.status_code == 412, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    found = clinic.fhir("Immunization", **{"vaccine-code:text": f"Never stored {odd.port}"})
    assert found.get("entry", []) == []
    patients = clinic.fhir("Patient", family="Doe")
    assert patients.get("entry", []) == []
    provenances = clinic.fhir("Provenance", _count="200")
    assert all("Never" not in str(p) for p in provenances.get("entry", []))


def test_a_bundle_that_is_not_valid_r4_is_refused_at_scan_naming_the_element(
    odd: OddSender, clinic: Clinic
) -> None:
    broken = _bundle(
        {
            "resourceType": "Immunization",
            "status": "completed",
            "patient": {"reference": P_URL},
            "occurrenceDateTime": "2024",
        }
    )
    with pytest.raises(errors.CheckinProblem) as caught:
        check_shared_bundle(broken)
    assert caught.value.reason == "invalid-bundle"
    assert caught.value.expression == "Bundle.entry[1].resource.vaccineCode"


def test_a_photo_upload_through_the_api_reads_a_camera_frame(
    clinic: Clinic, odd: OddSender
) -> None:
    frame = _camera_frame(qr.link_qr(odd.link("odd"), "png"))
    answer = clinic.scan(image="data:image/jpeg;base64," + base64.b64encode(frame).decode())
    assert answer.status_code == 200, answer.text
    assert reason(clinic.scan(image="data:image/png;base64,!!!")) == "unreadable-photo"


def test_files_by_location_are_fetched_and_a_redirect_is_not_followed(
    odd: OddSender, clinic: Clinic
) -> None:
    located = clinic.scan(text=odd.link("located"))
    assert located.status_code == 200, located.text
    assert located.json()["warnings"] == []
    assert [p["name"] for p in located.json()["summary"]["problems"]] == [f"Gout {odd.port}"]
    redirected = clinic.scan(text=odd.link("elsewhere"))
    assert redirected.status_code == 422 and reason(redirected) == "sender-unreachable"
    assert "redirected" in redirected.json()["issue"][0]["diagnostics"]


def test_a_sender_asking_to_slow_down_is_passed_on_with_retry_after(
    odd: OddSender, clinic: Clinic
) -> None:
    answer = clinic.scan(text=odd.link("busy"))
    assert answer.status_code == 429 and reason(answer) == "throttled"
    assert answer.headers["retry-after"] == "7"
