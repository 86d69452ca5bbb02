"""`embedkit check`: whether a database file is sound, whether its collections hold only usable
vectors and valid metadata, and whether what embedkit derives from them (keyword indexes,
quantised indexes, version triggers, bookkeeping) is in step with them.

fix=True rebuilds the derived parts that are not; it never changes or deletes a row of a
collection, whose vectors and metadata are the user's: those problems are reported with what
to do about them.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from . import database, fulltext, quantized, ranking, storage
from .errors import DatabaseCorrupt, DatabaseError

# Collection table columns, in order, as Database.create_collection makes them.
COLUMNS = ["id", "embedding", "content", "metadata", "content_hash", "updated"]
# Lines of SQLite's integrity report, and ids of bad rows, shown.
SHOWN = 5
SCAN_ROWS = 10_000


@dataclass
class Problem:
    """One thing found wrong: in the file ("file") or a collection (its name), in which part."""

    where: str
    part: str
    what: str
    advice: str
    fix: Callable[[], None] | None = None  # rebuilds a derived part; None: the user must act
    fixed: bool = False

    def line(self) -> str:
        status = "fixed" if self.fixed else self.advice
        return f"{self.where}: {self.part}: {self.what}; {status}"

    def to_dict(self) -> dict:
        return {"where": self.where, "part": self.part, "problem": self.what, "advice": self.advice,
                "fixable": self.fix is not None, "fixed": self.fixed}


@dataclass
class Report:
    path: str
    full: bool
    integrity: list = field(default_factory=list)  # SQLite's report: ["ok"] for a sound file
    collections: dict = field(default_factory=dict)  # name -> items
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(problem.fixed for problem in self.problems)

    def lines(self) -> list[str]:
        check = "integrity_check" if self.full else "quick_check"
        sound = self.integrity == ["ok"]
        lines = [f"{self.path}: {'the file is sound' if sound else 'the file is damaged'} ({check})"]
        for name, items in self.collections.items():
            found = [p for p in self.problems if p.where == name]
            lines.append(f"{name}: {items:,} items, " + ("all in step" if not found else
                                                           f"{len(found)} problem{'s' * (len(found) != 1)}"))
        return lines + [problem.line() for problem in self.problems]

    def summary(self) -> str:
        left = sum(not problem.fixed for problem in self.problems)
        fixed = len(self.problems) - left
        if not self.problems:
            return "no problems found"
        return f"{left} problem{'s' * (left != 1)} left" + (f", {fixed} fixed" if fixed else "")

    def to_dict(self) -> dict:
        return {"file": self.path, "check": "integrity_check" if self.full else "quick_check",
                "integrity": self.integrity, "collections": self.collections,
                "problems": [problem.to_dict() for problem in self.problems], "ok": self.ok}


@storage.guarded
def run(db, full: bool = False, fix: bool = False) -> Report:
    """Check db (a Database): PRAGMA quick_check (integrity_check with full), then each
    collection. With fix, rebuild the derived parts found out of step, unless the file itself is
    damaged (repair that first)."""
    if fix:
        db.require_writable()
    report = Report(db.path, full)
    _check_file(db, report)
    damaged = report.integrity != ["ok"]
    try:
        collections = db.collections()
    except DatabaseError as ex:  # the registry itself cannot be read
        _add(report, Problem("file", "registry", ex.what, ex.advice))
        return report
    for collection in collections:
        _check_collection(db, collection, full, report)
    _check_leftovers(db, [c.name for c in collections], report)
    if fix and not damaged:
        for problem in report.problems:
            if problem.fix is not None:
                with storage.faults(db.path, db.lock_timeout):
                    problem.fix()
                problem.fixed = True
    return report


def _add(report, problem):
    report.problems.append(problem)


def _check_file(db, report):
    pragma = "integrity_check" if report.full else "quick_check"
    try:
        with storage.faults(db.path, db.lock_timeout):
            report.integrity = [row[0] for row in db.conn.execute(f"pragma {pragma}")]
    except DatabaseCorrupt as ex:
        report.integrity = [ex.what]
    if report.integrity != ["ok"]:
        shown = "; ".join(report.integrity[:SHOWN]) + (
            f" (and {len(report.integrity) - SHOWN} more)" if len(report.integrity) > SHOWN else "")
        _add(report, Problem("file", pragma, f"SQLite finds damage: {shown}",
                             f"save what is left with `sqlite3 {db.path} .recover | sqlite3 recovered.db`, "
                             "then check that copy"))


def _check_collection(db, collection, full, report):
    name, conn = collection.name, db.conn
    try:
        with storage.faults(db.path, db.lock_timeout):
            columns = [row[1] for row in conn.execute(f"pragma table_info({storage.quote(collection.table)})")]
            if not columns:
                _add(report, Problem(name, "table", f"its table {collection.table!r} is missing",
                                     f"delete the collection (embedkit collections delete {name}) or restore its table"))
                return
            if columns[: len(COLUMNS)] != COLUMNS:
                _add(report, Problem(name, "table", f"its table has the columns {', '.join(columns)}, not "
                                     f"{', '.join(COLUMNS)}", "restore the table embedkit made"))
                return
            report.collections[name] = collection.count()
            usable = _check_vectors(collection, report)
            _check_metadata(collection, report)
            _check_triggers(db, collection, report)
            _check_keyword_index(collection, report)
            _check_quantized_index(collection, full, usable, report)
    except DatabaseError as ex:
        _add(report, Problem(name, "rows", f"cannot be read: {ex.what}", ex.advice))


def _check_vectors(collection, report) -> int:
    """How many of the collection's vectors can be used; a problem for the others."""
    if collection.dimensions is None:
        if report.collections[collection.name]:
            _add(report, Problem(collection.name, "vectors", "the registry does not record their dimensions",
                                 "embed one item again, which records them"))
        return 0
    usable, unusable = 0, []
    cursor = collection.db.conn.execute(f"select id, embedding from {storage.quote(collection.table)} order by id")
    while rows := cursor.fetchmany(SCAN_ROWS):
        kept, _, bad = ranking.decode_rows(rows, collection.dimensions)
        usable += len(kept)
        unusable += bad
    if unusable:
        _add(report, Problem(
            collection.name, "vectors",
            f"{len(unusable)} cannot be used, so searches leave them out: {_named(sorted(unusable))}",
            "embed those items again (embed-multi re-embeds an item whose text is given again) or delete them",
        ))
    return usable


def _check_metadata(collection, report):
    table = storage.quote(collection.table)
    bad = collection.db.conn.execute(
        f"select id, case when json_valid(metadata) then 'not a JSON object' else 'not valid JSON' end "
        f"from {table} where metadata is not null and not (json_valid(metadata) and json_type(metadata) = 'object') "
        "order by id"
    ).fetchall()
    if bad:
        _add(report, Problem(collection.name, "metadata", f"{len(bad)} rows hold metadata that is not a JSON "
                             f"object: {_named(bad)}",
                             "write valid JSON objects into them (or NULL), as JSON.parse and json_valid() read it"))


def _check_triggers(db, collection, report):
    names = database.version_triggers(collection.name)
    missing = [name for name in names if not _exists(db.conn, "trigger", name)]
    if missing:
        _add(report, Problem(
            collection.name, "version triggers", f"{', '.join(missing)} missing, so cached searches miss changes",
            "run embedkit check --fix, which creates them",
            lambda: _in_transaction(db, lambda: database.create_version_triggers(db.conn, collection.name,
                                                                                  collection.table)),
        ))


def _check_keyword_index(collection, report):
    if not fulltext.available(collection.db.conn):
        return  # this SQLite has no FTS5: nothing to compare
    found = fulltext.problem(collection.db.conn, collection.name, collection.table)
    if found is not None:
        _add(report, Problem(collection.name, "keyword index", f"out of step with the table ({found})",
                             "run embedkit check --fix, which rebuilds it", lambda: fulltext.rebuild(collection)))


def _check_quantized_index(collection, full, usable, report):
    conn, name = collection.db.conn, collection.name
    index = quantized.settings(collection)
    found = quantized.names(name)
    if index is None:
        leftovers = [found["vec"], found["log"], *(found[event] for event in quantized.EVENTS)]
        if any(_exists(conn, None, table) for table in leftovers):
            _add(report, Problem(name, "quantised index", "an unfinished build left its tables behind",
                                 "run embedkit check --fix, which drops them",
                                 lambda: _in_transaction(collection.db,
                                                         lambda: quantized.drop_objects(conn, name))))
        return
    rebuild = lambda: quantized.build(collection, index["quantize"], index.get("oversample"))  # noqa: E731
    advice = "run embedkit check --fix, which rebuilds it"
    if not (_exists(conn, None, found["vec"]) and _exists(conn, None, found["log"])):
        _add(report, Problem(name, "quantised index", "its tables are missing", advice, rebuild))
        return
    if not storage.load_sqlite_vec(conn):
        _add(report, Problem(name, "quantised index", "cannot be checked: sqlite-vec is not available here",
                             "check it where sqlite-vec loads (pip install pysqlite3)"))
        return
    if index["dimensions"] != collection.dimensions:
        _add(report, Problem(name, "quantised index", f"built for {index['dimensions']} dimensions, the "
                             f"collection has {collection.dimensions}", advice, rebuild))
        return
    vec, log = storage.quote(found["vec"]), storage.quote(found["log"])
    with storage.snapshot(conn):
        if conn.execute(f"select exists (select 1 from {log})").fetchone()[0]:
            return  # changes waiting for the next search to apply: nothing to compare yet
        indexed = conn.execute(f"select count(*) from {vec}").fetchone()[0]
        if indexed != usable:
            _add(report, Problem(name, "quantised index", f"holds {indexed:,} items, the collection {usable:,} "
                                 "with usable vectors", advice, rebuild))
            return
        if full:
            ids = {row[0] for row in conn.execute(f"select id from {vec}")}
            rows = {row[0] for row in conn.execute(f"select id from {storage.quote(collection.table)}")}
            if not ids <= rows:
                _add(report, Problem(name, "quantised index", f"holds items the collection does not: "
                                     f"{_named([(id, None) for id in sorted(ids - rows)])}", advice, rebuild))


def _check_leftovers(db, names, report):
    """embedkit's bookkeeping rows of collections that no longer exist."""
    conn = db.conn
    for table in (storage.SOURCES, storage.RELATED, storage.RELATED_ITEMS):
        if not storage.table_exists(conn, table):
            continue
        stale = [row[0] for row in conn.execute(
            f"select distinct collection from {table} where collection not in "
            f"(select name from {storage.REGISTRY})")] if storage.table_exists(conn, storage.REGISTRY) else []
        if stale:
            _add(report, Problem("file", table, f"rows of collections that no longer exist: {', '.join(map(repr, stale))}",
                                 "run embedkit check --fix, which deletes those rows",
                                 lambda table=table, stale=stale: _in_transaction(db, lambda: conn.executemany(
                                     f"delete from {table} where collection = ?", [[name] for name in stale]))))


def _named(pairs) -> str:
    shown = ", ".join(f"{id!r}" + (f" ({why})" if why else "") for id, why in pairs[:SHOWN])
    return shown + (f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else "")


def _exists(conn, kind, name) -> bool:
    return conn.execute(
        "select 1 from sqlite_master where name = ? and (? is null or type = ?)", [name, kind, kind]
    ).fetchone() is not None


def _in_transaction(db, fn):
    with storage.transaction(db.conn):
        fn()
