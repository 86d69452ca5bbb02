class EmbedkitError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


def first_line(ex) -> str:
    """An exception's message cut to its first line (its type's name if it has none): other
    libraries' errors are often pages long, and embedkit reports in one line."""
    return (str(ex).strip().splitlines() or [type(ex).__name__])[0]
