"""Which optional extra installs what: a missing one is named in one line."""

import importlib

from .errors import EmbedkitError


def require(module: str, extra: str, what: str):
    """The module imported, or an EmbedkitError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EmbedkitError(f"{what} needs the {extra!r} extra: pip install 'embedkit-sqlite[{extra}]'") from None
