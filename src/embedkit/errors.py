class EmbedkitError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""
