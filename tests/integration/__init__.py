"""Integration tests: the store, ingest and the CLI processes on real SQLite files and PostgreSQL."""
