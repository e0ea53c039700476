"""Importing this module registers every command on the app."""

from custate.adapters.cli import fold as fold  # noqa: F401
