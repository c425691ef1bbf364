"""Discovery: SMART's smart-configuration and OpenID Connect's openid-configuration."""

from __future__ import annotations

import httpx

from conftest import ServerThread


def test_smart_configuration_names_every_endpoint_and_capability(server: ServerThread) -> None:
    response = httpx.get(f"{server.base}/.well-known/smart-configuration")  # no bearer token
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["access-control-allow-origin"] == "*"
    config = response.json()
    base = server.base
    assert config["issuer"] == base
    assert config["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert config["authorization_endpoint"] == f"{base}/auth/authorize"
    assert config["token_endpoint"] == f"{base}/auth/token"
    assert config["introspection_endpoint"] == f"{base}/auth/introspect"
    assert config["revocation_endpoint"] == f"{base}/auth/revoke"
    assert config["registration_endpoint"] == f"{base}/auth/register"
    assert {"client_credentials", "refresh_token"} <= set(config["grant_types_supported"])
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["response_types_supported"] == ["code"]
    assert {"permission-v2", "client-confidential-asymmetric", "launch-standalone"} <= set(
        config["capabilities"]
    )
    assert "system/*.rs" in config["scopes_supported"]


def test_the_advertised_endpoints_answer(server: ServerThread) -> None:
    config = httpx.get(f"{server.base}/.well-known/smart-configuration").json()
    assert httpx.get(config["jwks_uri"]).json()["keys"]
    for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        response = httpx.post(config[name], data={})
        assert response.status_code in (400, 401)
        assert "error" in response.json()


def test_openid_configuration_agrees_with_smart_configuration(server: ServerThread) -> None:
    smart = httpx.get(f"{server.base}/.well-known/smart-configuration").json()
    openid = httpx.get(f"{server.base}/.well-known/openid-configuration").json()
    for name in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint"):
        assert openid[name] == smart[name]
    assert openid["subject_types_supported"] == ["public"]
    assert openid["id_token_signing_alg_values_supported"] == ["RS256"]


def test_discovery_follows_the_configured_base_url(database_url: str) -> None:
    from healthmesh.config import Settings

    with ServerThread(
        Settings(database_url=database_url, open=True, base_url="https://node.example/fhir")
    ) as running:
        config = httpx.get(f"{running.base}/.well-known/smart-configuration").json()
    assert config["issuer"] == "https://node.example/fhir"
    assert config["token_endpoint"] == "https://node.example/fhir/auth/token"
