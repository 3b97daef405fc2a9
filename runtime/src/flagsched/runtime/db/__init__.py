"""PostgreSQL access: connections, migrations and the schedule repository."""
