"""verify_ial2_id_token: every refusal reason, and what an accepted token yields."""

from __future__ import annotations

import time
from typing import Any

import pytest

from healthmesh.auth.identity import (
    IdentityClaims,
    IdentityProvider,
    IdentityRefused,
    IdTokenPolicy,
    verify_ial2_id_token,
)
from healthmesh.auth.replay import ReplayGuard
from identity_support import (
    AUDIENCE,
    ISSUER,
    ec_key,
    hs256_with,
    ial2_claims,
    provider,
    providers_of,
    rsa_key,
    sign,
    unsigned,
    with_guard,
)

KEY = rsa_key()
OTHER = rsa_key()
EC = ec_key("P-384")
PROVIDERS = providers_of(provider(KEY, EC))


def verify(
    database_url: str, token: str, policy: IdTokenPolicy | None = None, **kw: Any
) -> IdentityClaims:
    async def body(guard: ReplayGuard) -> IdentityClaims:
        return await verify_ial2_id_token(
            token, providers=PROVIDERS, replay=guard, policy=policy, **kw
        )

    return with_guard(database_url, body)


def refusal(database_url: str, token: str, **kw: Any) -> IdentityRefused:
    with pytest.raises(IdentityRefused) as caught:
        verify(database_url, token, **kw)
    refused = caught.value
    for part in token.split("."):
        assert len(part) < 16 or part not in str(refused)  # the token is never echoed
    return refused


def test_a_fresh_ial2_token_of_an_allow_listed_provider_is_accepted(database_url: str) -> None:
    claims = verify(database_url, sign(ial2_claims(), KEY))
    assert (claims.issuer, claims.assurance_level, claims.shape) == (ISSUER, 2, "csp")
    assert claims.names[0].given == "Ada" and claims.ssn_last4 == "1815"


def test_rs384_es256_and_es384_are_accepted(database_url: str) -> None:
    es256 = ec_key("P-256")
    providers = providers_of(provider(KEY, es256, EC))
    tokens = [
        sign(ial2_claims(), KEY, alg="RS384"),
        sign(ial2_claims(), es256, alg="ES256"),
        sign(ial2_claims(), EC, alg="ES384"),
    ]

    async def body(guard: ReplayGuard) -> list[int]:
        return [
            (await verify_ial2_id_token(t, providers=providers, replay=guard)).assurance_level
            for t in tokens
        ]

    assert with_guard(database_url, body) == [2, 2, 2]


def test_a_bad_signature_is_refused(database_url: str) -> None:
    forged = sign(ial2_claims(), OTHER, kid=KEY.kid)
    assert refusal(database_url, forged).code == "bad_signature"


def test_a_tampered_payload_is_refused(database_url: str) -> None:
    head, _, sig = sign(ial2_claims(), KEY).split(".")
    other_payload = sign(ial2_claims(given_name="Eve"), OTHER).split(".")[1]
    assert refusal(database_url, f"{head}.{other_payload}.{sig}").code == "bad_signature"


def test_alg_none_is_refused(database_url: str) -> None:
    assert refusal(database_url, unsigned(ial2_claims())).code == "algorithm_not_allowed"


def test_hs256_signed_with_the_providers_public_key_is_refused(database_url: str) -> None:
    public_pem = KEY.as_pem(private=False)
    token = hs256_with(public_pem, ial2_claims(), kid=KEY.kid)
    assert refusal(database_url, token).code == "algorithm_not_allowed"


def test_an_unknown_issuer_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(iss="https://evil.example"), KEY)
    assert refusal(database_url, token).code == "unknown_issuer"


def test_an_unknown_kid_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(), OTHER)
    assert refusal(database_url, token).code == "unknown_key"


def test_a_token_for_another_audience_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(aud="some-other-relying-party"), KEY)
    assert refusal(database_url, token).code == "wrong_audience"


def test_an_audience_list_containing_ours_is_accepted(database_url: str) -> None:
    token = sign(ial2_claims(aud=["other", AUDIENCE], azp=AUDIENCE), KEY)
    assert verify(database_url, token).audience == ("other", AUDIENCE)


def test_the_caller_may_name_the_audience(database_url: str) -> None:
    token = sign(ial2_claims(aud="the-apps-client-id"), KEY)
    assert verify(database_url, token, audiences=("the-apps-client-id",)).audience == (
        "the-apps-client-id",
    )


def test_an_expired_token_is_refused(database_url: str) -> None:
    now = int(time.time())
    token = sign(ial2_claims(exp=now - 120, iat=now - 400, auth_time=now - 100), KEY)
    assert refusal(database_url, token).code == "expired"


def test_a_token_issued_in_the_future_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(iat=int(time.time()) + 3600), KEY)
    assert refusal(database_url, token).code == "issued_in_future"


def test_an_auth_time_older_than_300_seconds_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(auth_time=int(time.time()) - 301 - 30 - 5), KEY)
    assert refusal(database_url, token).code == "auth_time_too_old"


def test_the_auth_age_is_configurable(database_url: str) -> None:
    token = sign(ial2_claims(auth_time=int(time.time()) - 200), KEY)
    strict = IdTokenPolicy(max_auth_age_seconds=60, leeway_seconds=0)
    assert refusal(database_url, token, policy=strict).code == "auth_time_too_old"


def test_an_ial1_identity_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(identity_assurance_level=1), KEY)
    refused = refusal(database_url, token)
    assert refused.code == "assurance_too_low" and "IAL1" in refused.reason


def test_a_token_without_any_assurance_level_is_refused(database_url: str) -> None:
    claims = ial2_claims()
    del claims["identity_assurance_level"]
    assert refusal(database_url, sign(claims, KEY)).code == "assurance_too_low"


def test_a_replayed_jti_is_refused_the_second_time(database_url: str) -> None:
    token = sign(ial2_claims(), KEY)
    verify(database_url, token)
    assert refusal(database_url, token).code == "replayed"


def test_a_refused_token_does_not_use_up_its_jti(database_url: str) -> None:
    claims = ial2_claims()
    refusal(database_url, sign({**claims, "identity_assurance_level": 1}, KEY))
    assert verify(database_url, sign(claims, KEY)).jwt_id == claims["jti"]


@pytest.mark.parametrize("name", ["iss", "sub", "aud", "exp", "iat", "jti", "auth_time"])
def test_each_required_claim_is_required(database_url: str, name: str) -> None:
    claims = ial2_claims()
    del claims[name]
    refused = refusal(database_url, sign(claims, KEY))
    # Without iss the token cannot even be attributed to a provider.
    assert refused.code == ("unknown_issuer" if name == "iss" else "missing_claim")
    if name != "iss":
        assert name in refused.reason


def test_a_wrong_nonce_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(nonce="n-1"), KEY)
    assert refusal(database_url, token, nonce="n-2").code == "nonce_mismatch"


def test_garbage_is_refused_as_malformed(database_url: str) -> None:
    assert refusal(database_url, "not.a.jwt").code == "malformed"
    assert refusal(database_url, "onlyonepart").code == "malformed"


def test_a_claim_of_the_wrong_type_is_refused(database_url: str) -> None:
    token = sign(ial2_claims(given_name={"first": "Ada"}), KEY)
    assert refusal(database_url, token).code == "malformed_claim"


def test_a_provider_key_of_the_wrong_type_for_the_alg_is_not_used(database_url: str) -> None:
    # An ES384 header naming the RSA key's kid: the key is never tried with the wrong family.
    token = sign(ial2_claims(), EC, alg="ES384", kid=KEY.kid)
    assert refusal(database_url, token).code == "unknown_key"


def test_a_token_without_kid_uses_the_only_key_of_its_type(database_url: str) -> None:
    assert verify(database_url, sign(ial2_claims(), KEY, kid=None)).subject == "user-1"


def test_a_key_published_for_another_algorithm_is_not_used(database_url: str) -> None:
    key = rsa_key()
    jwk = {**key.as_dict(private=False), "alg": "RS384"}
    providers = providers_of(
        IdentityProvider(issuer=ISSUER, audiences=(AUDIENCE,), jwks={"keys": [jwk]})
    )

    async def body(guard: ReplayGuard) -> list[str]:
        out = []
        for alg in ("RS256", "RS384"):
            try:
                await verify_ial2_id_token(
                    sign(ial2_claims(), key, alg=alg), providers=providers, replay=guard
                )
                out.append("ok")
            except IdentityRefused as refused:
                out.append(refused.code)
        return out

    assert with_guard(database_url, body) == ["unknown_key", "ok"]


def test_an_oversized_token_is_refused_unread(database_url: str) -> None:
    token = sign(ial2_claims(padding="x" * 20_000), KEY)
    assert refusal(database_url, token).code == "malformed"


def test_a_subject_that_is_not_a_string_is_refused(database_url: str) -> None:
    assert refusal(database_url, sign(ial2_claims(sub=12345), KEY)).code == "malformed_claim"
