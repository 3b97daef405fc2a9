"""Operator actions: topics, migrations, schedules. Talks to Kafka and PostgreSQL as a client."""
