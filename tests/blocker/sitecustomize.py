"""Hides the packages named in EMBEDKIT_BLOCK (comma-separated) from this Python process, as if
they were not installed: tests/test_core.py runs the `embedkit` command this way to see what
a core-only install says when a command needs an extra."""

import os
import sys


class _Blocker:
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


_names = [name for name in os.environ.get("EMBEDKIT_BLOCK", "").split(",") if name]
if _names:
    sys.meta_path.insert(0, _Blocker(_names))
