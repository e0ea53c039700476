"""Benchmarks and the activity-history generator (not part of the installed package)."""
