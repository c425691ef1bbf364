-- The SMART authorization-code flow (SMART App Launch 2.2 §app-launch; RFC 6749 §4.1; RFC 7636).
-- Everything a later step needs lives here, not in process memory, so any server process may
-- serve the next request of a browser's flow.

-- An authorization request between /auth/authorize and the consent decision (≤ 10 min).
-- The browser holding it is identified by a cookie secret (browser_hash); the identity
-- provider round trip by its own state (idp_state_hash); the consent form by a CSRF token
-- (csrf_hash). Only hashes of those secrets are stored.
CREATE TABLE auth_pending (
    id             text        PRIMARY KEY,
    browser_hash   text        NOT NULL,
    client_id      text        NOT NULL,
    redirect_uri   text        NOT NULL,
    scope          text        NOT NULL,
    state          text        NOT NULL,
    code_challenge text        NOT NULL,
    nonce          text,
    launch_patient text,
    idp_state_hash text        UNIQUE,
    idp_nonce      text,
    idp_verifier   text,
    patient        text,
    fhir_user      text,
    csrf_hash      text,
    stage          text        NOT NULL CHECK (stage IN ('login', 'consent')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX auth_pending_expiry ON auth_pending (expires_at);

-- Authorization codes (RFC 6749 §4.1.2: short-lived, single use, bound to client and
-- redirect_uri; RFC 7636 §4.4: bound to the code_challenge). Only the SHA-256 of the code is
-- kept. used_at marks the one redemption; grant_id names what was issued from it, so that a
-- second redemption can revoke it (RFC 6749 §4.1.2, §10.5); reused_at marks a second
-- redemption that arrived before grant_id was recorded, so the first one revokes on recording.
CREATE TABLE auth_code (
    code_hash      text        PRIMARY KEY,
    client_id      text        NOT NULL,
    redirect_uri   text        NOT NULL,
    code_challenge text        NOT NULL,
    scope          text        NOT NULL,
    patient        text,
    fhir_user      text,
    nonce          text,
    issued_at      timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    reused_at      timestamptz,
    grant_id       text
);
CREATE INDEX auth_code_expiry ON auth_code (expires_at);

-- EHR launch contexts (SMART App Launch 2.2 §launch-ehr): an opaque launch id, minted for an
-- operator, naming the Patient in context. Only the hash of the id is kept.
CREATE TABLE auth_launch (
    id_hash    text        PRIMARY KEY,
    patient    text        NOT NULL,
    issued_by  text        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
