"""The ``hybrid`` command line (:mod:`hybrid.cli.app`); ``hybrid.cli:main`` is its entry point."""

from hybrid.cli.app import app, main

__all__ = ["app", "main"]
