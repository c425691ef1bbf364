-- The SMART authorization server's state (docs/security.md).

-- Signing keys for access tokens (RS256). The active key is the newest one not retired; a
-- retired key stays in the JWKS until every token it signed has expired (publish_until).
CREATE TABLE auth_signing_key (
    kid           text        PRIMARY KEY,  -- RFC 7638 thumbprint of the public key
    private_pem   text        NOT NULL,
    public_jwk    jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz,
    publish_until timestamptz  -- NULL while active
);
CREATE INDEX auth_signing_key_active ON auth_signing_key (created_at) WHERE retired_at IS NULL;

-- Registered clients (RFC 7591 metadata names where there is one).
CREATE TABLE auth_client (
    client_id                  text        PRIMARY KEY,
    name                       text        NOT NULL,
    confidential               boolean     NOT NULL,
    redirect_uris              text[]      NOT NULL DEFAULT '{}',
    token_endpoint_auth_method text        NOT NULL
        CHECK (token_endpoint_auth_method IN ('none', 'private_key_jwt')),
    jwks                       jsonb,
    jwks_uri                   text,
    scope                      text        NOT NULL DEFAULT '',  -- what it may ask for
    grant_types                text[]      NOT NULL DEFAULT '{}',
    disabled                   boolean     NOT NULL DEFAULT false,
    software_id                text,
    organization_id            text,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK (confidential = (token_endpoint_auth_method = 'private_key_jwt')),
    CHECK (NOT confidential OR jwks IS NOT NULL OR jwks_uri IS NOT NULL)
);

-- One authorization: what a client may do, for whom, and until when. Every access token
-- names its grant; revoking the grant (or detecting refresh-token reuse) kills all of them.
CREATE TABLE auth_grant (
    grant_id       text        PRIMARY KEY,
    client_id      text        NOT NULL REFERENCES auth_client (client_id),
    kind           text        NOT NULL,  -- client_credentials, authorization_code, cli, ...
    subject        text        NOT NULL,
    scope          text        NOT NULL,
    patient        text,
    fhir_user      text,
    organization   text,
    purpose_of_use text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,  -- end of the refresh window (90 days) or of the token
    revoked_at     timestamptz
);
CREATE INDEX auth_grant_client ON auth_grant (client_id);

-- Refresh tokens, stored as SHA-256 digests only. Rotation: each use marks the row used and
-- issues a successor in the same grant; presenting a used one revokes the grant (the family).
CREATE TABLE auth_refresh_token (
    digest     bytea       PRIMARY KEY,
    grant_id   text        NOT NULL REFERENCES auth_grant (grant_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz
);
CREATE INDEX auth_refresh_token_grant ON auth_refresh_token (grant_id);

-- Access tokens revoked one by one (RFC 7009), kept until they would have expired anyway.
CREATE TABLE auth_revoked_token (
    jti        text        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX auth_revoked_token_expiry ON auth_revoked_token (expires_at);

-- Fixed-window request counters for the token endpoints, shared by every server process.
CREATE TABLE auth_rate_counter (
    bucket       text        NOT NULL,  -- 'client:<id>' or 'addr:<ip>'
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,  -- when the count stops mattering (purge)
    hits         integer     NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX auth_rate_counter_end ON auth_rate_counter (window_end);
