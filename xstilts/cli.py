"""The `xstilts` console script."""

from xstilts.launcher.cli import app, main

__all__ = ["app", "main"]
