-- One-time use of JWT ids (RFC 7523 §3 item 7; SMART Backend Services; cms_smart's nested
-- id_token "iss+jti never seen before"). The primary key makes "first use wins" atomic
-- across every server process; rows are kept only until the JWT itself would expire.
CREATE TABLE auth_seen_jti (
    issuer     text        NOT NULL,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX auth_seen_jti_expiry ON auth_seen_jti (expires_at);
