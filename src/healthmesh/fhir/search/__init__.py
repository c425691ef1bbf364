"""Search parameters: which values a resource is found by (index extraction), per R4 search.html."""
