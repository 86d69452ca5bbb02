"""A labelled text set built from this machine's Debian package lists, embedded once.

Every binary package of the apt lists (`apt-cache dumpavail`, after `apt-get update`) with its
section and its English description (short and long, from the lists' Translation-en), read
with apt's own tools. Written to benchmarks/data/ (git-ignored):

- debian-packages.csv: package, section, text
- explore.db: the collection `packages`, embedded with all-MiniLM-L6-v2-int8, text stored:
  one item per package (id = package name, metadata {"section"}; those of the labelled set
  also {"set": "labelled"}), then, to 100,000 items, the short description alone of the first
  packages by name (id "NAME:short"). The labelled set is embedded first. Re-runs embed
  nothing that is already there.

The labelled set: the packages of SECTIONS, sections about what a package is for (not
libs, doc or a language's ecosystem), at most PER_SECTION of each: those whose names have
the smallest SHA-256, a sample that does not depend on the alphabet.

    nice -n 10 python benchmarks/debian_packages.py
"""

import csv
import glob
import hashlib
import subprocess
import sys

from _common import data_dir

import embedkit
from embedkit import Item

MODEL = "all-MiniLM-L6-v2-int8"
LISTS = "/var/lib/apt/lists"
BIG = 100_000
SECTIONS = ["admin", "comm", "database", "editors", "electronics", "fonts", "games", "graphics", "hamradio",
            "httpd", "kernel", "mail", "math", "net", "science", "sound", "tex", "text", "vcs", "video", "web"]
PER_SECTION = 400


def _stanzas(text):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def _translations() -> dict:
    """Description-md5 -> the English description (first line, then the long text)."""
    found = {}
    for path in sorted(glob.glob(f"{LISTS}/*Translation-en*")):
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, text=True,
                              check=True).stdout
        for fields in _stanzas(text):
            if "Description-md5" in fields and "Description-en" in fields:
                found[fields["Description-md5"]] = fields["Description-en"]
    return found


def _plain(description) -> str:
    lines = [" " if line.strip() == "." else line.strip() for line in description.splitlines()]
    return " ".join(" ".join(lines).split())


def packages() -> list:
    """[(package, section, short description, full text)] sorted by package name."""
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    translations = _translations()
    rows = {}
    for fields in _stanzas(dump):
        name, section = fields.get("Package"), fields.get("Section", "")
        if not name or name in rows:
            continue
        description = translations.get(fields.get("Description-md5"), fields.get("Description", ""))
        short = description.splitlines()[0].strip() if description else ""
        if short:
            rows[name] = (name, section.rsplit("/", 1)[-1], short, _plain(description))
    if not rows:
        raise SystemExit("no packages in the apt lists: run apt-get update first")
    return [rows[name] for name in sorted(rows)]


def build(path=None):
    """(path of explore.db, rows): the CSV and both collections, embedding what is missing."""
    directory = data_dir()
    rows = packages()
    with open(directory / "debian-packages.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["package", "section", "text"])
        writer.writerows((name, section, text) for name, section, _, text in rows)
    path = path or directory / "explore.db"
    chosen = labelled(rows)
    items = [Item(name, text, {"section": section, **({"set": "labelled"} if name in chosen else {})})
             for name, section, _, text in rows]
    extra = [Item(f"{name}:short", short, {"section": section}) for name, section, short, _ in rows]
    with embedkit.Database(path) as db:
        _embed(db, "packages", [item for item in items if item.id in chosen])
        _embed(db, "packages", (items + extra)[:BIG])
    return path, rows


def labelled(rows) -> set:
    """Names of the labelled set's packages."""
    by_section = {}
    for name, section, _, _ in rows:
        if section in SECTIONS:
            by_section.setdefault(section, []).append(name)
    key = lambda name: hashlib.sha256(name.encode()).digest()  # noqa: E731
    return {name for names in by_section.values() for name in sorted(names, key=key)[:PER_SECTION]}


def _embed(db, name, items):
    collection = db.get_or_create_collection(name, model=MODEL)
    done = [0]

    def progress(n, total):
        done[0] += n
        if done[0] // 5000 != (done[0] - n) // 5000:
            print(f"{name}: {done[0]:,}/{total:,}", file=sys.stderr, flush=True)

    stats = collection.embed_multi(items, store=True, progress=progress)
    print(f"{name}: {stats.summary()}", file=sys.stderr)


if __name__ == "__main__":
    path, rows = build()
    print(f"{len(rows):,} packages; collections in {path}")
