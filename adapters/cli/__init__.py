"""The `custate` command line: one module per command group, registered on one app."""

from __future__ import annotations

from custate.adapters.cli.app import app, main

__all__ = ["app", "main"]
