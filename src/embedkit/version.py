"""The version, in a module of its own: the user agent of every request names it, and the
modules sending requests sit below the package's __init__."""

__version__ = "0.2.0"
USER_AGENT = f"embedkit/{__version__}"
