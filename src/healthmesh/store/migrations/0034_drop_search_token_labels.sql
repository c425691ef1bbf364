-- search_token_labels (0027: a row's `_security` index rows) is covered by
-- search_token_consent (0033: a row's `category` and `_security` rows, with their codes),
-- which PostgreSQL picks for the consent condition's label probe as well: one index for the
-- one question, not two kept on every write.
DROP INDEX IF EXISTS search_token_labels;
