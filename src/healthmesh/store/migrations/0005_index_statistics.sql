-- Index rows' columns are strongly correlated (a param belongs to one type; a code to one
-- param), and the planner, assuming independence, underestimates matches by orders of
-- magnitude and picks nested loops that run millions of times. Extended statistics tell it.
CREATE STATISTICS search_token_stats (dependencies, mcv) ON res_type, param, code, system FROM search_token;
CREATE STATISTICS search_reference_stats (dependencies, mcv) ON res_type, param, target_type FROM search_reference;
CREATE STATISTICS search_string_stats (dependencies, mcv) ON res_type, param FROM search_string;
CREATE STATISTICS search_date_stats (dependencies, mcv) ON res_type, param FROM search_date;
CREATE STATISTICS search_quantity_stats (dependencies, mcv) ON res_type, param, code FROM search_quantity;
CREATE STATISTICS search_uri_stats (dependencies, mcv) ON res_type, param FROM search_uri;
CREATE STATISTICS search_number_stats (dependencies, mcv) ON res_type, param FROM search_number;
