-- SMART Health Links and Cards (docs/sharing.md; HL7 SMART Health Cards and Links IG STU1).

-- One SMART Health Link. The id is the last segment of the link's url: 32 random bytes,
-- base64url (256 bits of entropy, IG "url"). The decryption key is NOT stored: the server
-- encrypts the files once, at creation, and hands the key to the patient inside the shlink,
-- so a copy of this database alone never reveals what was shared.
CREATE TABLE shl_link (
    id               text        PRIMARY KEY,
    patient_id       text        NOT NULL,  -- the owner: AccessGrant.patient of the creator
    flag             text        NOT NULL DEFAULT '' CHECK (flag IN ('', 'L', 'P', 'U', 'LP', 'LU')),
    label            text        CHECK (char_length(label) <= 80),
    exp              timestamptz,
    status           text        NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'revoked')),
    passcode_hash    bytea,      -- scrypt(passcode, salt); P flag only
    passcode_salt    bytea,
    attempts_left    integer     CHECK (attempts_left >= 0),  -- lifetime wrong-passcode budget
    poll_window      timestamptz,  -- L links: start of the current polling window
    poll_hits        integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((passcode_hash IS NOT NULL) = (position('P' IN flag) > 0)),
    CHECK ((attempts_left IS NOT NULL) = (position('P' IN flag) > 0))
);
CREATE INDEX shl_link_patient ON shl_link (patient_id, created_at DESC);

-- The encrypted files of a link (JWE compact strings), in manifest order.
CREATE TABLE shl_file (
    link_id      text        NOT NULL REFERENCES shl_link (id) ON DELETE CASCADE,
    seq          integer     NOT NULL,
    content_type text        NOT NULL,
    jwe          text        NOT NULL,
    last_updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (link_id, seq)
);

-- Short-lived file locations handed out in manifests (IG: valid at most one hour). Only the
-- SHA-256 of the ticket is kept; the recipient is the one the manifest request named.
CREATE TABLE shl_location (
    digest     bytea       PRIMARY KEY,
    link_id    text        NOT NULL REFERENCES shl_link (id) ON DELETE CASCADE,
    seq        integer     NOT NULL,
    recipient  text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX shl_location_expiry ON shl_location (expires_at);

-- Every access to a link, whatever its outcome (the audit issue turns these into AuditEvents).
CREATE TABLE shl_access (
    id         bigserial   PRIMARY KEY,
    link_id    text        NOT NULL REFERENCES shl_link (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    recipient  text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('manifest', 'file', 'direct')),
    outcome    text        NOT NULL
);
CREATE INDEX shl_access_link ON shl_access (link_id, at DESC);

-- SMART Health Card issuer keys (ES256, P-256); kid = RFC 7638 thumbprint.
CREATE TABLE shc_issuer_key (
    kid         text        PRIMARY KEY,
    private_pem text        NOT NULL,
    public_jwk  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);

-- Issued cards, by revocation id (rid, 64 random bits base64url); a revoked rid is listed in
-- /.well-known/crl/<kid>.json.
CREATE TABLE shc_card (
    rid        text        PRIMARY KEY,
    kid        text        NOT NULL REFERENCES shc_issuer_key (kid),
    patient_id text        NOT NULL,
    kind       text        NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX shc_card_patient ON shc_card (patient_id, issued_at DESC);
CREATE INDEX shc_card_revoked ON shc_card (kid, revoked_at) WHERE revoked_at IS NOT NULL;
