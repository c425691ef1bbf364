-- consent_sensitive (0024) has had no caller since the sensitive-label default became part
-- of the consent condition itself (store/consent_sql.py `_labelled`, migration 0027): the
-- label test is a sub-select there, through the partial index search_token_labels. A
-- server older than that condition (before 2026-12-02) calls it; run none against this
-- schema.
DROP FUNCTION consent_sensitive(text, text, text[]);
