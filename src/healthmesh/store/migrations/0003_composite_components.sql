-- Composite search parameters (R4 search.html#composite), e.g. Observation code-value-quantity.
-- Each component's values go into its type's table as `<param>$<n>`; `elem` numbers the
-- element instance they came from, so a query can demand that all components match on the
-- SAME instance (the code and the value of one Observation.component, not of two).
ALTER TABLE search_token ADD COLUMN elem integer;
ALTER TABLE search_string ADD COLUMN elem integer;
ALTER TABLE search_date ADD COLUMN elem integer;
ALTER TABLE search_number ADD COLUMN elem integer;
ALTER TABLE search_quantity ADD COLUMN elem integer;
ALTER TABLE search_uri ADD COLUMN elem integer;
ALTER TABLE search_reference ADD COLUMN elem integer;
