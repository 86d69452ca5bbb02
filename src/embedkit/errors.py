"""embedkit's exceptions: every one is a message a person can act on, one line long.

EmbedkitError is a problem with the user's input or data. DatabaseError and its subclasses
are faults of the SQLite file itself (locked, full disk, damaged, read-only...), raised by the
Python API where SQLite would raise its own error, so callers can catch them by kind; their
message is `FILE: what happened; what to do`.
"""


import os


class EmbedkitError(Exception):
    """A problem with the user's input or data, reported as one line without a traceback."""


class DatabaseError(EmbedkitError):
    """The database file could not be used: path names it, what says what happened and advice
    what to do about it."""

    def __init__(self, path: str, what: str, advice: str):
        super().__init__(f"{path}: {what}; {advice}")
        self.path, self.what, self.advice = path, what, advice


class DatabaseLocked(DatabaseError):
    """Another connection kept the database locked for longer than the lock timeout."""


class DiskFull(DatabaseError):
    """The disk (or the file system's quota) is full."""


class DatabaseIOError(DatabaseError):
    """The operating system could not read or write the file (a failing disk, a file size limit)."""


class NotADatabase(DatabaseError):
    """The file is not a SQLite database."""


class DatabaseCorrupt(DatabaseError):
    """The file is a damaged SQLite database."""


class ReadOnlyDatabase(DatabaseError):
    """A write to a database that is read-only: its file or folder, or opened read_only=True."""


class CannotOpen(DatabaseError):
    """The file cannot be opened at all (a missing folder, no permission to read it)."""


# SQLite's primary result codes (https://sqlite.org/rescode.html) for the faults above.
BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
# The same, by message, for drivers that do not give the code.
_MESSAGES = {
    "database is locked": BUSY,
    "database table is locked": LOCKED,
    "database schema is locked": LOCKED,
    "attempt to write a readonly database": READONLY,
    "disk i/o error": IOERR,
    "database disk image is malformed": CORRUPT,
    "database or disk is full": FULL,
    "unable to open database file": CANTOPEN,
    "file is not a database": NOTADB,
}


def is_sqlite_error(ex: BaseException) -> bool:
    """Whether ex is an error of a DB-API sqlite3 module: the stdlib's, pysqlite3's or sqlean's."""
    return type(ex).__module__.split(".")[0] in ("sqlite3", "pysqlite3", "sqlean") and isinstance(ex, Exception)


def sqlite_code(ex: BaseException):
    """SQLite's primary result code of a sqlite3 error, or None if it is not a fault."""
    code = getattr(ex, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return _MESSAGES.get(str(ex).strip().lower())


def from_sqlite(ex: BaseException, path: str, lock_timeout: float | None = None):
    """The DatabaseError for a sqlite3 error that is a fault of the file at path, else None
    (a mistake in SQL, a constraint: those are not the file's)."""
    if not is_sqlite_error(ex):
        return None
    code = sqlite_code(ex)
    if code in (BUSY, LOCKED):
        waited = f" (waited {lock_timeout:g} s)" if lock_timeout else ""
        return DatabaseLocked(
            path,
            f"another program kept the database locked{waited}",
            "re-run when it has finished, or wait longer with --lock-timeout SECONDS (EMBEDKIT_LOCK_TIMEOUT)",
        )
    if code == FULL:
        return DiskFull(path, "the disk is full (database or disk is full)",
                        "free some space and re-run: what was finished is kept")
    if code == IOERR:
        return DatabaseIOError(path, f"the file could not be written or read (disk I/O error{_size_limit()})",
                               "check the disk's space and health and re-run: what was finished is kept")
    if code == NOTADB:
        return NotADatabase(path, "this file is not a SQLite database (or is encrypted)",
                            "check the path (-d/--database): embedkit leaves files that are not databases alone")
    if code == CORRUPT:
        return DatabaseCorrupt(
            path,
            "the database file is damaged (database disk image is malformed)",
            f"run `embedkit check {path}` to see what is damaged, and `sqlite3 {path} .recover` to save what is left",
        )
    if code == READONLY:
        return ReadOnlyDatabase(path, "the database is read-only here, so nothing was changed",
                                "make the file and its folder writable, or work on a writable copy")
    if code == CANTOPEN:
        return CannotOpen(path, "the database file cannot be opened",
                          "check that its folder exists and that you may read (and, to change it, write) both")
    return None


def cannot_write(path: str) -> DatabaseError:
    """The error for a write to a database this process may not write: its folder is missing,
    or the file or its folder is read-only."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return CannotOpen(path, "its folder does not exist, so nothing was written",
                          "create the folder first, or check the path (-d/--database)")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return ReadOnlyDatabase(path, "the file is read-only here, so nothing was changed",
                                "make it writable (chmod u+w) or work on a writable copy")
    return ReadOnlyDatabase(path, "its folder is read-only here (SQLite writes its journal beside the file), "
                            "so nothing was changed", "make the folder writable or work on a copy elsewhere")


def _size_limit() -> str:
    """A file size limit (ulimit -f) in force, which SQLite reports only as an I/O error."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return ""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "" if limit == resource.RLIM_INFINITY else f"; files may not grow beyond {limit:,} bytes here (ulimit -f)"


def first_line(ex) -> str:
    """An exception's message cut to its first line (its type's name if it has none): other
    libraries' errors are often pages long, and embedkit reports in one line."""
    return (str(ex).strip().splitlines() or [type(ex).__name__])[0]
