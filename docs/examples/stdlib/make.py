"""Write functions.csv: the functions of some of Python's standard modules and the first
paragraph of their docstrings, the example collection of docs/explore.md.

    python make.py > functions.csv

The CSV is kept in the repository, so the docs show the same collection whatever Python
runs them.
"""

import csv
import importlib
import inspect
import sys

MODULES = ["math", "statistics", "random", "cmath", "textwrap", "re", "string", "unicodedata", "os.path",
           "shutil", "glob", "time", "calendar", "json", "base64", "binascii", "zlib", "itertools", "functools",
           "operator"]


def first_paragraph(doc, name) -> str:
    """The first paragraph that is not a signature (builtins start with one, like "sleep(seconds)")."""
    lines = []
    for line in inspect.cleandoc(doc).splitlines():
        if not lines and line.startswith((name + "(", "time() ->")):
            continue
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.strip())
    return " ".join(lines)


def main():
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["id", "module", "text"])
    for name in MODULES:
        module = importlib.import_module(name)
        for attribute in sorted(dir(module)):
            value = getattr(module, attribute)
            if attribute.startswith("_") or not callable(value) or inspect.isclass(value):
                continue
            text = first_paragraph(value.__doc__ or "", attribute)
            if len(text.split()) < 4:
                continue
            writer.writerow([f"{name}.{attribute}", name, text])


if __name__ == "__main__":
    main()
