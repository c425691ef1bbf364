"""A patient's decision binds tokens already issued, refresh tokens included.

An app gets access and refresh tokens through the real authorization-code flow (test IdP
login, consent page); the patient then denies that app in a Consent; the app's existing
access token and a freshly refreshed one both reach nothing of the patient's record, and
revoking the Consent gives the next request its data back.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from authcode_support import Browser, Pkce, authorize_params, exchange, person, public_client

from healthmesh.config import Settings
from healthmesh.fhir.consent import CLIENT_ID_SYSTEM

from conftest import ServerThread
from support import FHIR_JSON, privacy_consent

SCOPE = "openid fhirUser launch/patient offline_access patient/Observation.rs patient/Consent.cruds"


@pytest.fixture(scope="module")
def node(database_url: str) -> Iterator[ServerThread]:
    settings = Settings(database_url=database_url, open=False, test_identity_provider=True)
    with ServerThread(settings) as running:
        yield running


def test_a_consent_denying_an_app_binds_its_issued_and_refreshed_tokens(
    node: ServerThread, database_url: str, server: ServerThread
) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as open_fhir:
        who = person(database_url, open_fhir)
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{who.patient_id}"},
        }
        assert (
            open_fhir.post("/Observation", json=observation, headers=FHIR_JSON).status_code == 201
        )
    app = public_client(database_url, scope=SCOPE)
    pkce = Pkce()
    params = authorize_params(app, node.base, pkce, scope=SCOPE)
    with Browser(node.base) as browser:
        code = browser.code_for(params, who)
    with httpx.Client(timeout=30) as http:
        tokens = exchange(http, node.base, app, code, pkce).json()
        assert tokens["patient"] == who.patient_id and "refresh_token" in tokens

        def observations(access_token: str) -> int:
            response = http.get(
                f"{node.base}/Observation",
                params={"patient": who.patient_id},
                headers={"Authorization": f"Bearer {access_token}"},
            )
            assert response.status_code == 200, response.text
            return len(response.json().get("entry", []))

        assert observations(tokens["access_token"]) == 1
        # The patient, with another app of theirs, denies this app their record.
        own = {"Authorization": f"Bearer {tokens['access_token']}", **FHIR_JSON}
        consent = privacy_consent(
            f"Patient/{who.patient_id}",
            {
                "type": "deny",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "IRCP",
                                }
                            ]
                        },
                        "reference": {
                            "identifier": {"system": CLIENT_ID_SYSTEM, "value": app.client_id}
                        },
                    }
                ],
            },
        )
        created = http.post(f"{node.base}/Consent", json=consent, headers=own)
        assert created.status_code == 201, created.text
        assert observations(tokens["access_token"]) == 0  # the token already issued
        refreshed = http.post(
            f"{node.base}/auth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": app.client_id,
            },
        ).json()
        assert observations(refreshed["access_token"]) == 0  # and the refreshed one
        # Revoking the Consent (its deletion) restores access on the very next request.
        # The denied app cannot see the Consent either, so the patient's portal does it:
        with httpx.Client(base_url=server.base, timeout=30) as portal:
            assert portal.delete(f"/Consent/{created.json()['id']}").status_code in (200, 204)
        assert observations(refreshed["access_token"]) == 1
