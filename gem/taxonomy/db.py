"""The taxonomy database: schema and its versions (migration in place), the connection (WAL,
foreign keys, busy timeout, one short-lived connection per operation), errors, audit rows, ids,
settings, and the checks every curator edit shares (author, text limits).

Curator edits use optimistic concurrency: each topic row has a version, incremented on every save;
an edit made against an older version raises ``StaleEditError`` instead of overwriting someone
else's change. Every change is written to an audit table (who, when, field, old, new). A sync that
flags a topic also bumps its version (an editor open on the old version must reload); so does a
sync that renames a provisional topic after its new keywords (audited as field "name", author
"system").

Schema version 2 added topics.name_unconfirmed / members_sketch and run_topics.jaccard / changed,
version 3 topics.merged_into / split_from / split_direction and run_topics.via (merge and split);
an older database is migrated in place when opened (columns added, nothing lost).

Names, descriptions and notes are plain text: stored verbatim (HTML included), never interpreted.
One short-lived connection per operation, so a Taxonomy can be shared across Streamlit threads.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

SCHEMA_VERSION = 3  # 2: topics.name_unconfirmed / members_sketch, run_topics.jaccard / changed;
# 3: topics.merged_into / split_from / split_direction, run_topics.via (merge and split, gem.taxonomy.regroup)
REVIEW_STATES = ("unreviewed", "approved", "needs_work")
STATUSES = ("active", "new", "retired")
EDITABLE_FIELDS = ("name", "description", "parent", "excluded", "notes", "review")
MAX_TEXT = {"name": 200, "description": 5000, "notes": 20000}
ID_RE = re.compile(r"^[TG][0-9]{3,}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS topics (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'topic' CHECK (kind IN ('topic', 'group')),
    name TEXT NOT NULL DEFAULT '',
    name_provisional INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    parent TEXT REFERENCES topics(id) ON DELETE SET NULL,
    excluded INTEGER NOT NULL DEFAULT 0 CHECK (excluded IN (0, 1)),
    notes TEXT NOT NULL DEFAULT '',
    review TEXT NOT NULL DEFAULT 'unreviewed' CHECK (review IN ('unreviewed', 'approved', 'needs_work')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'new', 'retired')),
    cluster INTEGER,
    run TEXT,
    direction BLOB,
    keywords TEXT NOT NULL DEFAULT '[]',
    n_docs INTEGER,
    name_unconfirmed INTEGER NOT NULL DEFAULT 0 CHECK (name_unconfirmed IN (0, 1)),
    members_sketch BLOB,
    merged_into TEXT REFERENCES topics(id),
    split_from TEXT REFERENCES topics(id),
    split_direction BLOB,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    synced_at TEXT NOT NULL,
    n_clusters INTEGER NOT NULL,
    min_cosine REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_topics (
    run TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    cluster INTEGER NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(id),
    cosine REAL,
    outcome TEXT NOT NULL CHECK (outcome IN ('matched', 'new', 'revived')),
    jaccard REAL,
    changed INTEGER NOT NULL DEFAULT 0,
    via TEXT REFERENCES topics(id),
    PRIMARY KEY (run, cluster)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    author TEXT NOT NULL,
    topic_id TEXT NOT NULL,
    field TEXT NOT NULL,
    old TEXT,
    new TEXT
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_topic ON audit (topic_id, seq);
-- document flags (gem.flags), keyed by document id
CREATE TABLE IF NOT EXISTS doc_flags (
    doc_id TEXT PRIMARY KEY,
    excluded INTEGER NOT NULL DEFAULT 0 CHECK (excluded IN (0, 1)),
    reason TEXT,
    note TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS doc_flags_excluded ON doc_flags (excluded);
CREATE TABLE IF NOT EXISTS doc_flag_batches (
    batch TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    author TEXT NOT NULL,
    action TEXT NOT NULL,
    n_docs INTEGER NOT NULL,
    undone_by TEXT
);
CREATE TABLE IF NOT EXISTS doc_flag_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch TEXT NOT NULL REFERENCES doc_flag_batches(batch),
    at TEXT NOT NULL,
    author TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    field TEXT NOT NULL,
    old TEXT,
    new TEXT
);
CREATE INDEX IF NOT EXISTS doc_flag_audit_batch ON doc_flag_audit (batch);
"""

# columns added after schema version 1: (table, column, definition); added in place on older databases
_ADDED_COLUMNS = (
    ("topics", "name_unconfirmed", "INTEGER NOT NULL DEFAULT 0 CHECK (name_unconfirmed IN (0, 1))"),
    ("topics", "members_sketch", "BLOB"),
    ("run_topics", "jaccard", "REAL"),
    ("run_topics", "changed", "INTEGER NOT NULL DEFAULT 0"),
    ("topics", "merged_into", "TEXT REFERENCES topics(id)"),
    ("topics", "split_from", "TEXT REFERENCES topics(id)"),
    ("topics", "split_direction", "BLOB"),
    ("run_topics", "via", "TEXT REFERENCES topics(id)"),
)


class StaleEditError(ValueError):
    """A save made against an outdated version of a topic (someone else saved in between)."""


class TaxonomyError(ValueError):
    """The taxonomy database cannot be used (damaged, not a database, read-only, locked): one
    line naming the file and what to do."""


def _database_error(db_path: Path, exc: sqlite3.Error) -> TaxonomyError:
    """A TaxonomyError for an SQLite failure, with the file and the remedy for its kind."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = msg.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        what = (f"{db_path}: the taxonomy database is damaged ({msg}); restore it from a backup, or move it "
                "aside to start a new taxonomy (then re-import a taxonomy JSON export if you have one)")
    elif "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
        what = (f"{db_path}: cannot open the taxonomy database for writing ({msg}); make the file and its "
                "folder writable (SQLite writes -wal and -shm files beside it), or use a writable copy of the "
                "workspace")
    elif "locked" in low or "busy" in low:
        what = f"{db_path}: the taxonomy database is locked by another program ({msg}); retry when it finishes"
    elif "disk i/o" in low or "full" in low:
        what = f"{db_path}: the taxonomy database could not be written ({msg}); check the disk (space, errors)"
    else:
        what = f"{db_path}: taxonomy database error ({msg})"
    return TaxonomyError(what)


def check_author(author) -> str:
    """The author of an edit: required (not blank), stripped, at most 200 characters; else a ValueError.
    The taxonomy's rule, which the document flags follow too."""
    if not isinstance(author, str) or not author.strip():
        raise ValueError("an author name is required for every edit (who made this change?)")
    return author.strip()[:200]


def to_blob(v: np.ndarray) -> bytes:
    """A vector as the database stores it: little-endian float32 bytes."""
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def from_blob(b: bytes | None) -> np.ndarray | None:
    """A vector stored by :func:`to_blob` back as float64 (None stays None)."""
    return None if b is None else np.frombuffer(b, dtype="<f4").astype(np.float64)


def as_text(value: Any) -> str:
    """``value`` as text for a TEXT column: None becomes ""."""
    return "" if value is None else str(value)


def name_key(name: str) -> str:
    """What two topic names are compared by: case folded, runs of whitespace collapsed."""
    return " ".join(str(name).casefold().split())


def distinct_name(name: str, keywords: Sequence[str], taken) -> str:
    """``name`` if no name in ``taken`` (a set of ``name_key`` values) equals it, else ``name`` with
    a distinguishing word: the first of ``keywords`` not already in it ("king, son, israel" taken:
    "king, son, israel, judah"), else a number ("unnamed topic (2)"). Never longer than the
    name limit."""
    limit = MAX_TEXT["name"]
    if name_key(name) not in taken:
        return name
    words = {name_key(w) for w in str(name).split(",")}
    for w in keywords:
        if isinstance(w, str) and w.strip() and name_key(w) not in words:
            candidate = f"{name}, {w.strip()}"
            if len(candidate) <= limit and name_key(candidate) not in taken:
                return candidate
    n = 2
    while True:
        suffix = f" ({n})"
        candidate = name[: limit - len(suffix)] + suffix
        if name_key(candidate) not in taken:
            return candidate
        n += 1


def _use_wal(con: sqlite3.Connection, timeout_s: float) -> None:
    """Put the database in WAL mode (persistent; a no-op once set). Switching a new file's mode needs
    a lock SQLite's busy handler does not wait for, so connections opening the same new database at
    once retry here until ``timeout_s`` instead of failing with "database is locked"."""
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.1)


class TaxonomyDB:
    """The connection, schema and shared helpers of one taxonomy database (``Taxonomy`` builds on it)."""

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(transaction=False) as con:
            con.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); executescript commits by itself
            version = self._schema_version(con)
            missing = self._missing_columns(con)
        self._check_version(version)
        if version is None or version < SCHEMA_VERSION or missing:
            # create or migrate under the write lock, re-checking there (another process may be at it too)
            with self._connect(write=True) as con:
                version = self._schema_version(con)
                self._check_version(version)
                for table, column, definition in self._missing_columns(con):
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                if version is None:
                    con.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                elif version < SCHEMA_VERSION:
                    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.db_path}: taxonomy schema version {version} is newer than this program "
                f"understands ({SCHEMA_VERSION}); upgrade gem"
            )

    @staticmethod
    def _schema_version(con) -> int | None:
        row = con.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @staticmethod
    def _missing_columns(con) -> list[tuple[str, str, str]]:
        have = {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")} for t in ("topics", "run_topics")}
        return [(t, c, d) for t, c, d in _ADDED_COLUMNS if c not in have[t]]

    def __repr__(self) -> str:
        return f"Taxonomy({str(self.db_path)!r})"

    # ------------------------------------------------------------------ connection
    @contextlib.contextmanager
    def _connect(self, write: bool = False, transaction: bool = True) -> Iterator[sqlite3.Connection]:
        """One connection (WAL, foreign keys, busy timeout), in a transaction unless told not to.
        SQLite failures of the file itself (damaged, not a database, read-only, locked) become a
        :class:`TaxonomyError` naming the file and the remedy; constraint errors pass unchanged."""
        try:
            con = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise _database_error(self.db_path, exc) from exc
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=10000")
            _use_wal(con, timeout_s=10.0)
            con.execute("PRAGMA foreign_keys=ON")
            if not transaction:
                yield con
                return
            # BEGIN IMMEDIATE takes the write lock up front, so read-check-write is atomic
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a damaged file may refuse the rollback too
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.db_path, exc) from exc
        finally:
            con.close()

    @staticmethod
    def _next_id(con: sqlite3.Connection, prefix: str) -> str:
        rows = con.execute("SELECT id FROM topics WHERE id LIKE ?", (prefix + "%",)).fetchall()
        nums = [int(r[0][1:]) for r in rows if r[0][1:].isdigit()]
        return f"{prefix}{(max(nums) + 1) if nums else 1:03d}"

    @staticmethod
    def _live_names(con: sqlite3.Connection, exclude: Sequence[str] = ()) -> dict[str, str]:
        """``name_key`` -> id of the live (not retired) topics other than ``exclude``."""
        rows = con.execute("SELECT id, name FROM topics WHERE kind = 'topic' AND status != 'retired'").fetchall()
        return {name_key(r["name"]): r["id"] for r in rows if r["id"] not in exclude and r["name"]}

    @staticmethod
    def _audit(con, author: str, topic_id: str, field_name: str, old: Any, new: Any, at: str) -> None:
        con.execute(
            "INSERT INTO audit (at, author, topic_id, field, old, new) VALUES (?, ?, ?, ?, ?, ?)",
            (at, author, topic_id, field_name, None if old is None else str(old), None if new is None else str(new)),
        )

    # ------------------------------------------------------------------ settings
    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        with self._connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def current_run(self) -> str | None:
        return self.get_setting("current_run")

    # ------------------------------------------------------------------ edits
    _check_author = staticmethod(check_author)

    @staticmethod
    def _check_text(name: str, value: Any) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}")
        if "\x00" in value:
            raise ValueError(f"{name} contains a NUL character")
        if len(value) > MAX_TEXT[name]:
            raise ValueError(f"{name} is {len(value)} characters; the limit is {MAX_TEXT[name]}")
        return value

