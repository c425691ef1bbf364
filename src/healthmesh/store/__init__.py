"""PostgreSQL storage: connection, schema migrations, the repository of resources and versions."""
