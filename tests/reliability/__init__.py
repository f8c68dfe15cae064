"""Reliability tests: real PostgreSQL, real processes, real git, under failure."""
