"""The embedkit command line: a thin layer over embedkit.Database and Collection, one module
per command group, each imported when one of its commands runs (cli.base.LazyGroup)."""

from .base import cli

__all__ = ["cli"]
