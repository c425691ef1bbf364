"""Search compiled to SQL: one module per parameter type, each turning clauses into conditions.

Every condition is a correlated EXISTS over that type's index table, so AND, OR, :not, chains
and _has compose as boolean SQL and PostgreSQL's planner picks the join order (docs/search.md).
"""
