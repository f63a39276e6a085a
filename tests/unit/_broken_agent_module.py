"""A worker module that fails to import, for the CLI tests."""

BROKEN = 1 / 0
