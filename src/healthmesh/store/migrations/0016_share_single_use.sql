-- One-time SMART Health Links (docs/sharing.md "For the patient"): a link the patient makes
-- for a single check-in works for the first receiver that resolves it and answers 404 after
-- (the IG's answer for a link that is "used up"). used_at is set in the transaction that
-- serves it, under the link's row lock, so two receivers can never both get it.
ALTER TABLE shl_link
    ADD COLUMN single_use boolean NOT NULL DEFAULT false,
    ADD COLUMN used_at    timestamptz;
