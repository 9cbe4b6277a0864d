"""The curators' taxonomy: topics with stable ids, persisted in SQLite, surviving re-fits.

Topics are keyed by a stable id ("T001"), never by a cluster's row position. Each fitted run is
synced in: its clusters are matched to the active topics (Hungarian assignment over the admissible
pairs, see below). Matched topics keep their id and all curator work; unmatched clusters become
topics with status 'new' and a provisional name from their keywords; topics whose cluster vanished
become 'retired' (kept, with their labels, and revived if a later run brings a matching cluster
back). Parent groups are rows of the same table with kind 'group' ("G001").

Matching: two tiers. Each pair (cluster of the new run, topic) is judged on the cosine of the mean
directions and, when the sync is given each cluster's member document ids (``members``;
``sync_saved_run`` passes them from the run's assignments) and the topic has a member sketch from
its last sync, on the members' Jaccard |A & B| / |A | B|, estimated from bottom-k MinHash sketches
(the 256 smallest blake2b-64 hashes of the ids, 2 KiB per topic, ``members_sketch``; exact for
topics of <= 256 documents, else standard error <= 0.031):

- refused: cosine < 0.6 (``MIN_COSINE``, the ``min_cosine`` argument) or Jaccard < 0.2
  (``MIN_JACCARD``). The cluster becomes a new topic (or revives a retired one); the topic, if
  nothing else matches it, retires with its labels kept.
- plain match: cosine >= 0.9 (``STRICT_COSINE``) and, when both sides have sketches, Jaccard >= 0.5
  (``STRICT_JACCARD``): id, name and every curator field kept, nothing flagged.
- changed: kept but in between. The topic keeps its id; a provisional (never curator-named) topic
  just follows its new keywords; a curator-named one keeps its name but is flagged
  ``name_unconfirmed`` (``needs_confirmation`` in ``topics()``), its review goes back to
  'unreviewed', it is listed in ``SyncReport.changed`` and audited (old and new keywords, cosine,
  Jaccard). Saving its name (even unchanged) or approving it clears the flag.

Jaccard, not |A & B| / min(|A|, |B|): when a small topic is absorbed into a bigger, different
cluster, most of the small side can lie in the big one (share of the smaller side high) while the
cluster is mostly other content (Jaccard low); that is how the re-pointing below happened.

Calibration (sample_data, final embeddings, GEM K = 24 at balance auto / 100 / 1000 / 5000 for seeds
0, 1, 2 cold, plus per seed the app's warm-started lambda chain auto -> 100 -> 1000 -> 5000 -> 100
-> auto; 27 runs, every ordered pair of runs matched by Hungarian on cosine: 8,424 pairs). Member
agreement against exact Jaccard: 6,272 pairs with J >= 0.5 ("same topic": 79-100 % share >= 3 of
their top-5 keywords), 1,637 with 0.2 <= J < 0.5 (mixed: 47-63 %), 515 with J < 0.2 ("re-pointed":
98-100 % share at most 1 keyword). Cosine of the same-topic pairs: min 0.838, 1 % quantile 0.919,
median 0.996; of the re-pointed ones: median 0.451, 99 % 0.857, max 0.923 (the old rule, cosine >=
0.5 alone, kept 232 of them). No pair with J >= 0.2 has cosine < 0.61, hence the 0.6 floor. Cosine
alone at 0.9: 2 re-pointed pairs (J 0.198, 0.199) would pass plain, 44 same-topic pairs are flagged.
With members (sketch estimates, |error| median 0.010, max 0.085): 0 re-pointed pairs kept plain
(502 refused, 13 near J = 0.2 flagged), 6,208 of 6,272 same-topic pairs plain, 64 flagged (all
cross-seed or cold re-fits; none on the warm lambda steps the app makes). Replaying the runs in
sequence as the app syncs them (curator names every topic; 3 warm chains, 3 cold balance sweeps,
2 seed changes): the old rule kept 12 re-pointed topics silently, among them seed 0, lambda 100 ->
1000 (warm): T019 "test, tests, testing" -> "tryton, debian, module" (cosine 0.700, Jaccard 0.12):
the reported defect. The new rule keeps none silently: cosine alone flags 6 (T019 among them), with
members every re-pointed pair is refused (T019 retires, its cluster becomes a new topic); with
members 42 of 44 partial pairs are flagged and 612 of 612 same-topic pairs keep their names
without a flag.

Curator edits use optimistic concurrency: each topic row has a version, incremented on every save;
an edit made against an older version raises ``StaleEditError`` instead of overwriting someone
else's change. Every change is written to an audit table (who, when, field, old, new). A sync that
flags a topic also bumps its version (an editor open on the old version must reload); so does a
sync that renames a provisional topic after its new keywords (audited as field "name", author
"system").

Schema version 2 added topics.name_unconfirmed / members_sketch and run_topics.jaccard / changed;
an older database is migrated in place when opened (columns added, nothing lost).

Names, descriptions and notes are plain text: stored verbatim (HTML included), never interpreted.
One short-lived connection per operation, so a Taxonomy can be shared across Streamlit threads.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

SCHEMA_VERSION = 2  # 2: topics.name_unconfirmed / members_sketch, run_topics.jaccard / changed
EXPORT_FORMAT = "gem-taxonomy"
EXPORT_VERSION = 1
REVIEW_STATES = ("unreviewed", "approved", "needs_work")
STATUSES = ("active", "new", "retired")
EDITABLE_FIELDS = ("name", "description", "parent", "excluded", "notes", "review")
MAX_TEXT = {"name": 200, "description": 5000, "notes": 20000}
_ID_RE = re.compile(r"^[TG][0-9]{3,}$")

# matching thresholds (see the module docstring for the rule and the measurements behind them)
MIN_COSINE = 0.6  # hard floor on the mean-direction cosine: below it a pair is refused
STRICT_COSINE = 0.9  # a plain match (id and name kept, no flag) needs at least this cosine ...
MIN_JACCARD = 0.2  # hard floor on the members' Jaccard |A & B| / |A | B| (when both sides have sketches)
STRICT_JACCARD = 0.5  # ... and, when both sides have member sketches, at least this Jaccard
SKETCH_SIZE = 256  # bottom-k MinHash: the k smallest 64-bit blake2b hashes of a topic's member ids

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
"""

# columns added after schema version 1: (table, column, definition); added in place on older databases
_ADDED_COLUMNS = (
    ("topics", "name_unconfirmed", "INTEGER NOT NULL DEFAULT 0 CHECK (name_unconfirmed IN (0, 1))"),
    ("topics", "members_sketch", "BLOB"),
    ("run_topics", "jaccard", "REAL"),
    ("run_topics", "changed", "INTEGER NOT NULL DEFAULT 0"),
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


@dataclass
class SyncReport:
    """Outcome of syncing a run: cluster -> topic id for matched / new / revived, retired topic ids.

    ``changed`` (cluster -> topic id) is the subset of ``matched`` and ``revived`` whose curator-given
    name was kept on a weaker match (between the floors and the strict thresholds): the topic is
    flagged (``needs_confirmation`` in ``Taxonomy.topics()``) until a curator renames or approves it.
    ``cosine`` and ``jaccard`` (cluster -> value; ``jaccard``, the members' estimated Jaccard, only
    where both sides have member sketches) are the figures of every kept pair."""

    run: str
    matched: dict[int, str] = field(default_factory=dict)
    new: dict[int, str] = field(default_factory=dict)
    revived: dict[int, str] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    changed: dict[int, str] = field(default_factory=dict)
    cosine: dict[int, float] = field(default_factory=dict)
    jaccard: dict[int, float] = field(default_factory=dict)

    @property
    def mapping(self) -> dict[int, str]:
        return dict(sorted({**self.matched, **self.new, **self.revived}.items()))

    def summary(self) -> str:
        text = (
            f"run {self.run}: {len(self.matched)} matched, {len(self.new)} new, "
            f"{len(self.revived)} revived, {len(self.retired)} retired"
        )
        if self.changed:
            text += f"; {len(self.changed)} changed, confirm their names: {', '.join(self.changed.values())}"
        return text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _unit_rows(M, what: str = "mean_directions") -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (K, d) array, got shape {M.shape}")
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    if not np.all(np.isfinite(M)) or np.any(norms == 0):
        raise ValueError(f"{what} rows must be finite and non-zero")
    return M / norms


def _to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def _from_blob(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype="<f4").astype(np.float64)


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------- member sketches
def hash_ids(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of document ids (blake2b of the UTF-8 text; the same on every machine
    and Python process, unlike ``hash()``)."""
    blake = hashlib.blake2b
    raw = b"".join(blake(str(i).encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def member_sketch(ids: Sequence[str], size: int = SKETCH_SIZE) -> np.ndarray:
    """Bottom-k MinHash sketch of a set of document ids: the ``size`` smallest distinct hashes,
    sorted (2 KiB at 256). A set of at most ``size`` ids is held exactly."""
    return np.unique(hash_ids(ids))[:size]


def _sketch_to_blob(sketch: np.ndarray) -> bytes:
    return np.ascontiguousarray(sketch, dtype="<u8").tobytes()


def _sketch_from_blob(b: bytes | None) -> np.ndarray | None:
    return None if b is None else np.frombuffer(b, dtype="<u8").astype(np.uint64)


def sketch_jaccard(a: np.ndarray, b: np.ndarray, size: int = SKETCH_SIZE) -> float:
    """Estimated Jaccard |A & B| / |A | B| of two id sets from their bottom-k sketches: of the
    ``size`` smallest hashes of A | B (all among the two sketches), the fraction in both. Exact when
    both sets have at most ``size`` members; standard error about sqrt(J (1 - J) / size) otherwise
    (<= 0.031 at 256)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    union = np.union1d(a, b)[:size]
    both = np.intersect1d(a, b, assume_unique=True)
    return float(np.isin(union, both, assume_unique=True).sum()) / union.size


class Taxonomy:
    """SQLite-backed taxonomy of one workspace (``ws.taxonomy_db``)."""

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
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=10000")
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

    # ------------------------------------------------------------------ sync
    def sync_run(
        self,
        run_name: str,
        mean_directions: np.ndarray,
        keywords: Mapping[int, Sequence[str]] | Sequence[Sequence[str]] | None = None,
        sizes: Sequence[int] | None = None,
        min_cosine: float = MIN_COSINE,
        author: str = "system",
        members: Mapping[int, Sequence[str]] | Sequence[Sequence[str]] | None = None,
        strict_cosine: float = STRICT_COSINE,
        min_jaccard: float = MIN_JACCARD,
        strict_jaccard: float = STRICT_JACCARD,
    ) -> SyncReport:
        """Match a run's clusters to the taxonomy and record the mapping (see the module docstring).

        ``members``: per cluster, the ids of its documents (K sequences of str). Each topic keeps a
        bottom-k sketch of them, so the next sync can check that a matched pair shares members.

        Pairs are classed by the two-tier rule: refused below ``min_cosine`` (cosine) or
        ``min_jaccard`` (members' Jaccard, when both sides have sketches); a plain match at or above
        ``strict_cosine`` and (with sketches) ``strict_jaccard``; in between, kept but changed (a
        curator-named topic is flagged ``name_unconfirmed``, its review reset to unreviewed).
        Pass 1: Hungarian over the admissible pairs of clusters and active/new topics (plain pairs
        preferred, then cosine; refused pairs never chosen, so a cluster refused by one topic may
        still match another).
        Pass 2: the clusters left over against retired topics (revival, so curator work comes back
        when a cluster returns). The rest become new topics. Active topics left unmatched are
        retired. Syncing the same run again is idempotent.
        """
        from scipy.optimize import linear_sum_assignment

        from gem.gis import provisional_name

        if not isinstance(run_name, str) or not run_name:
            raise ValueError("run_name must be a non-empty string")
        for name, value in (("min_cosine", min_cosine), ("strict_cosine", strict_cosine)):
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [-1, 1], got {value}")
        for name, value in (("min_jaccard", min_jaccard), ("strict_jaccard", strict_jaccard)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        M = _unit_rows(mean_directions)
        K, d = M.shape
        kw = self._keywords_list(keywords, K)
        sketches = self._sketches(members, K)
        if sizes is None and members is not None:
            sizes = [n for _, n in sketches]
        if sizes is not None:
            sizes = [int(s) for s in sizes]
            if len(sizes) != K:
                raise ValueError(f"sizes has {len(sizes)} entries for {K} clusters")
        report = SyncReport(run=run_name)
        at = _now()
        with self._connect(write=True) as con:
            # topics this run flagged when it was last synced: a re-sync reports them again
            prev_changed = {
                r[0] for r in con.execute("SELECT topic_id FROM run_topics WHERE run = ? AND changed = 1", (run_name,))
            }
            # a re-sync of the same run replaces its previous mapping
            con.execute("DELETE FROM runs WHERE name = ?", (run_name,))
            rows = con.execute(
                "SELECT id, status, direction, members_sketch FROM topics"
                " WHERE kind = 'topic' AND direction IS NOT NULL"
            ).fetchall()
            for r in rows:
                if len(r["direction"]) != 4 * d:
                    raise ValueError(
                        f"run {run_name!r} has {d}-dimensional directions but topic {r['id']} was fitted on "
                        f"{len(r['direction']) // 4} dimensions (another embedding); use a new workspace "
                        "or the same representation"
                    )
            live = [r for r in rows if r["status"] != "retired"]
            retired = [r for r in rows if r["status"] == "retired"]
            first_sync = not rows
            unmatched = list(range(K))
            tiers: dict[int, str] = {}
            for pool, bucket in ((live, report.matched), (retired, report.revived)):
                if not pool or not unmatched:
                    continue
                D = np.stack([_from_blob(r["direction"]) for r in pool])
                D /= np.linalg.norm(D, axis=1, keepdims=True)
                S = M[unmatched] @ D.T
                J = np.full(S.shape, np.nan)  # members' Jaccard, NaN where a side has no sketch
                if sketches is not None:
                    for b, r in enumerate(pool):
                        if not r["members_sketch"]:
                            continue
                        sk = _sketch_from_blob(r["members_sketch"])
                        for a, c in enumerate(unmatched):
                            if sketches[c][0].size and S[a, b] >= min_cosine:  # pairs refused by cosine: moot
                                J[a, b] = sketch_jaccard(sketches[c][0], sk)
                known = ~np.isnan(J)
                admissible = (S >= min_cosine) & ~(known & (np.nan_to_num(J) < min_jaccard))
                plain = admissible & (S >= strict_cosine) & ~(known & (np.nan_to_num(J) < strict_jaccard))
                # every admissible pair scores in [1, 4] (plain ones 1 higher), refused ones 0
                score = np.where(admissible, 2.0 + S + plain, 0.0)
                ri, ci = linear_sum_assignment(score, maximize=True)
                for a, b in zip(ri, ci):
                    if admissible[a, b]:
                        c = unmatched[a]
                        bucket[c] = pool[b]["id"]
                        tiers[c] = "plain" if plain[a, b] else "changed"
                        report.cosine[c] = float(S[a, b])
                        if known[a, b]:
                            report.jaccard[c] = float(J[a, b])
                unmatched = [c for c in unmatched if c not in bucket]
            con.execute(
                "INSERT INTO runs (name, synced_at, n_clusters, min_cosine) VALUES (?, ?, ?, ?)",
                (run_name, at, K, float(min_cosine)),
            )

            def sketch_of(c):  # a sync without members leaves no sketch (it would describe older content)
                return None if sketches is None or not sketches[c][0].size else _sketch_to_blob(sketches[c][0])

            for outcome, bucket in (("matched", report.matched), ("revived", report.revived)):
                for c, tid in list(bucket.items()):
                    old = con.execute(
                        "SELECT status, name, name_provisional, run, review, keywords, name_unconfirmed"
                        " FROM topics WHERE id = ?",
                        (tid,),
                    ).fetchone()
                    # a still-provisional name follows the keywords; a curator's name never changes here
                    name = provisional_name(kw[c]) if old["name_provisional"] and kw[c] else old["name"]
                    # re-syncing the run that created a topic keeps it flagged new (idempotent re-sync)
                    resync_new = old["status"] == "new" and old["run"] == run_name
                    status = "new" if resync_new else "active"
                    con.execute(
                        "UPDATE topics SET status = ?, cluster = ?, run = ?, direction = ?, keywords = ?,"
                        " n_docs = ?, name = ?, members_sketch = ? WHERE id = ?",
                        (status, c, run_name, _to_blob(M[c]), json.dumps(kw[c]), None if sizes is None else sizes[c],
                         name, sketch_of(c), tid),
                    )
                    if old["status"] != status:
                        self._audit(con, author, tid, "status", old["status"], status, at)
                    if name != old["name"]:  # a provisional name followed the keywords: audited, editors reload
                        con.execute("UPDATE topics SET version = version + 1, updated_at = ?, updated_by = ? WHERE id = ?",
                                    (at, "system", tid))
                        self._audit(con, "system", tid, "name", old["name"], name, at)
                    changed = False
                    if tiers[c] == "changed" and not old["name_provisional"]:
                        # the content moved: keep the id, but the curator must confirm the name
                        changed = True
                        shared = f", members' Jaccard {report.jaccard[c]:.2f}" if c in report.jaccard else ""
                        old_kw = ", ".join(json.loads(old["keywords"])[:5])
                        con.execute(
                            "UPDATE topics SET name_unconfirmed = 1, review = 'unreviewed', version = version + 1,"
                            " updated_at = ?, updated_by = ? WHERE id = ?",
                            (at, author, tid),
                        )
                        self._audit(
                            con, author, tid, "name_unconfirmed", old["name_unconfirmed"],
                            f"1 (run {run_name}: cosine {report.cosine[c]:.2f}{shared}; keywords were "
                            f"[{old_kw}], now [{', '.join(kw[c][:5])}])", at,
                        )
                        if old["review"] != "unreviewed":
                            self._audit(con, author, tid, "review", old["review"], "unreviewed", at)
                    elif tid in prev_changed and old["name_unconfirmed"]:
                        changed = True  # re-sync of the run that flagged it, not confirmed since
                    if changed:
                        report.changed[c] = tid
                    if resync_new:
                        del report.matched[c]
                        report.new[c] = tid
                    con.execute(
                        "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome, jaccard, changed)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (run_name, c, tid, report.cosine[c], "new" if resync_new else outcome, report.jaccard.get(c),
                         int(changed)),
                    )
            for c in unmatched:
                tid = self._next_id(con, "T")
                status = "active" if first_sync else "new"
                con.execute(
                    "INSERT INTO topics (id, kind, name, status, cluster, run, direction, keywords, n_docs,"
                    " members_sketch, created_at, updated_at, updated_by)"
                    " VALUES (?, 'topic', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (tid, provisional_name(kw[c]), status, c, run_name, _to_blob(M[c]), json.dumps(kw[c]),
                     None if sizes is None else sizes[c], sketch_of(c), at, at, author),
                )
                self._audit(con, author, tid, "status", None, status, at)
                con.execute(
                    "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome) VALUES (?, ?, ?, NULL, 'new')",
                    (run_name, c, tid),
                )
                report.new[c] = tid
            kept = set(report.matched.values()) | set(report.new.values())  # new: re-synced ones too
            for r in live:
                if r["id"] not in kept:
                    con.execute("UPDATE topics SET status = 'retired', cluster = NULL WHERE id = ?", (r["id"],))
                    self._audit(con, author, r["id"], "status", r["status"], "retired", at)
                    report.retired.append(r["id"])
            con.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('current_run', ?)", (run_name,))
        return report

    @staticmethod
    def _sketches(members, K: int) -> list[tuple[np.ndarray, int]] | None:
        """(bottom-k sketch, number of ids) per cluster, or None without members."""
        if members is None:
            return None
        if isinstance(members, Mapping):
            members = [members.get(k, members.get(str(k), ())) for k in range(K)]
        members = list(members)
        if len(members) != K:
            raise ValueError(f"members has {len(members)} entries for {K} clusters")
        out = []
        for k, ids in enumerate(members):
            if isinstance(ids, (str, bytes)):
                raise ValueError(f"members[{k}] must be a sequence of document ids, not a single string")
            ids = [str(i) for i in ids]
            out.append((member_sketch(ids), len(ids)))
        return out

    @staticmethod
    def _keywords_list(keywords, K: int) -> list[list[str]]:
        if keywords is None:
            return [[] for _ in range(K)]
        if isinstance(keywords, Mapping):
            return [[str(w) for w in keywords.get(k, keywords.get(str(k), []))] for k in range(K)]
        keywords = list(keywords)
        if len(keywords) != K:
            raise ValueError(f"keywords has {len(keywords)} entries for {K} clusters")
        return [[str(w) for w in ks] for ks in keywords]

    def run_mapping(self, run_name: str | None = None) -> dict[int, str]:
        """cluster index -> topic id for a synced run (default: the current run)."""
        run_name = run_name or self.current_run
        with self._connect() as con:
            rows = con.execute("SELECT cluster, topic_id FROM run_topics WHERE run = ? ORDER BY cluster", (run_name,))
            return {int(r[0]): r[1] for r in rows}

    # ------------------------------------------------------------------ groups and hierarchy
    def add_group(self, name: str, author: str, description: str = "") -> str:
        """Create a parent group (kind 'group') and return its id ("G001", ...)."""
        author = self._check_author(author)
        name = self._check_text("name", name)
        at = _now()
        with self._connect(write=True) as con:
            gid = self._next_id(con, "G")
            con.execute(
                "INSERT INTO topics (id, kind, name, name_provisional, description, status, created_at, updated_at,"
                " updated_by) VALUES (?, 'group', ?, 0, ?, 'active', ?, ?, ?)",
                (gid, name, self._check_text("description", description), at, at, author),
            )
            self._audit(con, author, gid, "created", None, name, at)
        return gid

    def apply_hierarchy(self, cluster_parents: Sequence[int], author: str = "system", run_name: str | None = None) -> dict[int, str]:
        """Propose parents from ``gem.gis.topic_hierarchy`` (a group index per cluster of the run):
        creates one group per index, named after its members, and sets it as the parent of the run's
        topics that have no parent yet. Parents a curator chose are never overwritten."""
        mapping = self.run_mapping(run_name)
        parents = [int(p) for p in cluster_parents]
        if len(parents) != len(mapping):
            raise ValueError(f"cluster_parents has {len(parents)} entries for {len(mapping)} clusters")
        topics = self.topics(run_name)
        names = dict(zip(topics["id"], topics["name"]))
        group_ids: dict[int, str] = {}
        for g in sorted(set(parents)):
            members = [mapping[c] for c, p in enumerate(parents) if p == g]
            if len(members) < 2:
                continue  # a singleton group adds nothing
            label = " | ".join(names[t].split(",")[0] for t in members[:3]) + (" ..." if len(members) > 3 else "")
            group_ids[g] = self.add_group(label[: MAX_TEXT["name"]], author)
        at = _now()
        with self._connect(write=True) as con:
            for c, g in enumerate(parents):
                if g in group_ids:
                    tid = mapping[c]
                    cur = con.execute("SELECT parent FROM topics WHERE id = ?", (tid,)).fetchone()
                    if cur["parent"] is None:
                        con.execute(
                            "UPDATE topics SET parent = ?, version = version + 1, updated_at = ?, updated_by = ?"
                            " WHERE id = ?",
                            (group_ids[g], at, author, tid),
                        )
                        self._audit(con, author, tid, "parent", None, group_ids[g], at)
        return group_ids

    # ------------------------------------------------------------------ edits
    @staticmethod
    def _check_author(author: str) -> str:
        if not isinstance(author, str) or not author.strip():
            raise ValueError("an author name is required for every edit (who made this change?)")
        return author.strip()[:200]

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

    def update_topic(self, topic_id: str, expected_version: int, author: str, **fields: Any) -> int:
        """Save curator fields (name, description, parent, excluded, notes, review) of one topic or
        group, if it is still at ``expected_version``; returns the new version.

        Raises ``StaleEditError`` when someone saved the topic since it was loaded, ``KeyError`` for an
        unknown topic and ``ValueError`` for invalid values. Unchanged fields are not audited; a save
        that changes nothing keeps the version. On a topic flagged ``name_unconfirmed`` (its name was
        kept on a changed match), saving ``name`` (even unchanged) or ``review="approved"`` confirms the
        name and clears the flag.
        """
        author = self._check_author(author)
        unknown = set(fields) - set(EDITABLE_FIELDS)
        if unknown:
            raise ValueError(f"cannot edit {sorted(unknown)}; editable fields: {', '.join(EDITABLE_FIELDS)}")
        clean: dict[str, Any] = {}
        for k, v in fields.items():
            if k in MAX_TEXT:
                clean[k] = self._check_text(k, v)
            elif k == "excluded":
                if isinstance(v, (bool, np.bool_)) or v in (0, 1):
                    clean[k] = int(bool(v))
                else:
                    raise ValueError(f"excluded must be true or false, got {v!r}")
            elif k == "review":
                if v not in REVIEW_STATES:
                    raise ValueError(f"review must be one of {', '.join(REVIEW_STATES)}, got {v!r}")
                clean[k] = v
            elif k == "parent":
                clean[k] = None if v in (None, "") else str(v)
        at = _now()
        with self._connect(write=True) as con:
            row = con.execute("SELECT * FROM topics WHERE id = ?", (topic_id,)).fetchone()
            if row is None:
                raise KeyError(f"no topic {topic_id!r} in {self.db_path}")
            if int(row["version"]) != int(expected_version):
                raise StaleEditError(
                    f"topic {topic_id} was changed by {row['updated_by'] or 'someone'} at {row['updated_at']} "
                    f"since you loaded it (version {expected_version}, now {row['version']}); "
                    "reload and re-apply your edit"
                )
            if "parent" in clean and clean["parent"] is not None:
                self._check_parent(con, topic_id, clean["parent"])
            changes = {k: v for k, v in clean.items() if row[k] != v}
            # saving a name (even the same one) or approving confirms a name kept on a changed match
            confirm = bool(row["name_unconfirmed"]) and ("name" in clean or clean.get("review") == "approved")
            if not changes and not confirm:
                return int(row["version"])
            sets = ", ".join([f"{k} = ?" for k in changes] + (["name_unconfirmed = 0"] if confirm else []))
            extra = ", name_provisional = 0" if "name" in changes else ""
            cur = con.execute(
                f"UPDATE topics SET {sets}{extra}, version = version + 1, updated_at = ?, updated_by = ?"
                " WHERE id = ? AND version = ?",
                (*changes.values(), at, author, topic_id, int(expected_version)),
            )
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; kept as a guard
                raise StaleEditError(f"topic {topic_id} changed while saving; reload and re-apply your edit")
            for k, v in changes.items():
                self._audit(con, author, topic_id, k, row[k], v, at)
            if confirm:
                self._audit(con, author, topic_id, "name_unconfirmed", 1, 0, at)
            return int(row["version"]) + 1

    @staticmethod
    def _check_parent(con, topic_id: str, parent: str) -> None:
        if parent == topic_id:
            raise ValueError(f"topic {topic_id} cannot be its own parent")
        seen = {topic_id}
        node = parent
        while node is not None:
            r = con.execute("SELECT id, parent FROM topics WHERE id = ?", (node,)).fetchone()
            if r is None:
                raise ValueError(f"parent {parent!r} does not exist; create the group first")
            if r["id"] in seen:
                raise ValueError(f"making {parent} the parent of {topic_id} would create a cycle")
            seen.add(r["id"])
            node = r["parent"]

    # ------------------------------------------------------------------ queries
    def topics(self, run: str | None = None, include_groups: bool = False):
        """Topics as a DataFrame. ``run=None``: every topic (retired included; cluster = index in the
        current run); ``run`` given: the topics of that run, one per cluster, ordered by cluster, with
        the match figures (``outcome``, ``match_cosine``, ``match_jaccard``, ``match_changed``).
        ``needs_confirmation``: the name was kept on a changed match; ask the curator to confirm it."""
        import pandas as pd

        cols = (
            "t.id, t.kind, t.name, t.description, t.parent, p.name AS parent_name, t.excluded, t.notes, t.review,"
            " t.status, t.keywords, t.n_docs, t.version, t.updated_at, t.updated_by, t.name_provisional,"
            " t.name_unconfirmed AS needs_confirmation"
        )
        with self._connect() as con:
            if run is None:
                kinds = "('topic', 'group')" if include_groups else "('topic')"
                rows = con.execute(
                    f"SELECT {cols}, t.cluster AS cluster FROM topics t LEFT JOIN topics p ON p.id = t.parent"
                    f" WHERE t.kind IN {kinds} ORDER BY t.kind DESC, t.id"
                ).fetchall()
            else:
                if con.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
                    raise KeyError(f"run {run!r} has not been synced into {self.db_path}")
                rows = con.execute(
                    f"SELECT {cols}, rt.cluster AS cluster, rt.outcome AS outcome, rt.cosine AS match_cosine,"
                    " rt.jaccard AS match_jaccard, rt.changed AS match_changed"
                    " FROM run_topics rt JOIN topics t ON t.id = rt.topic_id LEFT JOIN topics p ON p.id = t.parent"
                    " WHERE rt.run = ? ORDER BY rt.cluster",
                    (run,),
                ).fetchall()
        frame = pd.DataFrame([dict(r) for r in rows])
        if frame.empty:
            frame = pd.DataFrame(columns=[c.split(" AS ")[-1].split(".")[-1] for c in cols.split(", ")] + ["cluster"])
        frame["excluded"] = frame["excluded"].astype(bool)
        frame["name_provisional"] = frame["name_provisional"].astype(bool)
        frame["needs_confirmation"] = frame["needs_confirmation"].astype(bool)
        if "match_changed" in frame.columns:
            frame["match_changed"] = frame["match_changed"].astype(bool)
        frame["keywords"] = [json.loads(k) if isinstance(k, str) else [] for k in frame["keywords"]]
        frame["cluster"] = frame["cluster"].astype("Int64")
        frame["n_docs"] = frame["n_docs"].astype("Int64")
        return frame

    def groups(self):
        frame = self.topics(include_groups=True)
        return frame[frame["kind"] == "group"].reset_index(drop=True)

    def topic(self, topic_id: str) -> dict:
        with self._connect() as con:
            row = con.execute("SELECT * FROM topics WHERE id = ?", (topic_id,)).fetchone()
        if row is None:
            raise KeyError(f"no topic {topic_id!r} in {self.db_path}")
        out = dict(row)
        out["direction"] = _from_blob(out["direction"])
        out["members_sketch"] = _sketch_from_blob(out["members_sketch"])
        out["keywords"] = json.loads(out["keywords"])
        out["excluded"] = bool(out["excluded"])
        out["name_unconfirmed"] = bool(out["name_unconfirmed"])
        out["needs_confirmation"] = out["name_unconfirmed"]
        return out

    def review_progress(self) -> dict:
        """Review counts over the live (non-retired) topics, with a sentence for the UI."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT review, COUNT(*) FROM topics WHERE kind = 'topic' AND status != 'retired' GROUP BY review"
            ).fetchall()
        counts = {s: 0 for s in REVIEW_STATES}
        counts.update({r[0]: int(r[1]) for r in rows})
        total = sum(counts.values())
        return {
            **counts,
            "total": total,
            "fraction_approved": counts["approved"] / total if total else 0.0,
            "text": f"{counts['approved']} of {total} topics approved",
        }

    def audit(self, topic_id: str | None = None):
        import pandas as pd

        with self._connect() as con:
            if topic_id is None:
                rows = con.execute("SELECT * FROM audit ORDER BY seq").fetchall()
            else:
                rows = con.execute("SELECT * FROM audit WHERE topic_id = ? ORDER BY seq", (topic_id,)).fetchall()
        return pd.DataFrame([dict(r) for r in rows], columns=["seq", "at", "author", "topic_id", "field", "old", "new"])

    # ------------------------------------------------------------------ JSON
    def export_json(self) -> dict:
        """The whole taxonomy as a JSON-ready dict (``taxonomy.json``): topics and groups with all
        curator fields, stored directions, and each synced run's cluster -> topic mapping."""
        with self._connect() as con:
            rows = con.execute("SELECT * FROM topics ORDER BY kind DESC, id").fetchall()
            runs = con.execute("SELECT * FROM runs ORDER BY synced_at, name").fetchall()
            maps = con.execute("SELECT * FROM run_topics ORDER BY run, cluster").fetchall()
            cur = con.execute("SELECT value FROM settings WHERE key = 'current_run'").fetchone()
        topics = []
        for r in rows:
            d = dict(r)
            vec = _from_blob(d.pop("direction"))
            d["direction"] = None if vec is None else [float(x) for x in vec.astype(np.float32)]
            d["keywords"] = json.loads(d["keywords"])
            d["excluded"] = bool(d["excluded"])
            d["name_provisional"] = bool(d["name_provisional"])
            d["name_unconfirmed"] = bool(d["name_unconfirmed"])
            d["members_sketch"] = None if d["members_sketch"] is None else bytes(d["members_sketch"]).hex()
            topics.append(d)
        run_list = []
        for r in runs:
            rd = dict(r)
            rd["clusters"] = [
                {"cluster": m["cluster"], "topic_id": m["topic_id"], "cosine": m["cosine"], "outcome": m["outcome"],
                 "jaccard": m["jaccard"], "changed": bool(m["changed"])}
                for m in maps
                if m["run"] == r["name"]
            ]
            run_list.append(rd)
        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "exported_at": _now(),
            "current_run": None if cur is None else cur[0],
            "topics": topics,
            "runs": run_list,
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        from gem.store import write_json_atomic

        return write_json_atomic(path, self.export_json())

    def load_json(self, path: str | os.PathLike, author: str) -> dict:
        from gem.store import read_json

        try:
            data = read_json(path)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc
        return self.import_json(data, author)

    def import_json(self, data: Mapping[str, Any], author: str) -> dict:
        """Merge an ``export_json`` dict: topics are upserted by id (curator fields changed on an
        existing topic are audited under ``author`` and bump its version), runs' mappings replaced.
        Returns counts {inserted, updated, unchanged}."""
        author = self._check_author(author)
        if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not a taxonomy export: expected \"format\": \"{EXPORT_FORMAT}\"")
        if int(data.get("format_version", 0)) > EXPORT_VERSION:
            raise ValueError(f"taxonomy export version {data.get('format_version')} is newer than supported ({EXPORT_VERSION})")
        topics = data.get("topics")
        if not isinstance(topics, list):
            raise ValueError("taxonomy export has no \"topics\" list")
        clean = [self._clean_import_topic(i, t) for i, t in enumerate(topics)]
        ids = [t["id"] for t in clean]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"taxonomy export lists topic {dup} twice")
        at = _now()
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        system = ("kind", "name_provisional", "status", "cluster", "run", "direction", "keywords", "n_docs",
                  "name_unconfirmed", "members_sketch")
        with self._connect(write=True) as con:
            # parents may point forward in the list: insert without parents first, then set them
            con.execute("PRAGMA defer_foreign_keys=ON")
            for t in clean:
                row = con.execute("SELECT * FROM topics WHERE id = ?", (t["id"],)).fetchone()
                if row is None:
                    con.execute(
                        "INSERT INTO topics (id, kind, name, name_provisional, description, parent, excluded, notes,"
                        " review, status, cluster, run, direction, keywords, n_docs, version, created_at, updated_at,"
                        " updated_by, name_unconfirmed, members_sketch)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (t["id"], t["kind"], t["name"], t["name_provisional"], t["description"], t["parent"],
                         t["excluded"], t["notes"], t["review"], t["status"], t["cluster"], t["run"], t["direction"],
                         t["keywords"], t["n_docs"], t["version"], t["created_at"] or at, t["updated_at"] or at,
                         t["updated_by"] or author, t["name_unconfirmed"], t["members_sketch"]),
                    )
                    self._audit(con, author, t["id"], "imported", None, t["name"], at)
                    counts["inserted"] += 1
                    continue
                changes = {k: t[k] for k in EDITABLE_FIELDS if row[k] != t[k]}
                sys_changes = {k: t[k] for k in system if row[k] != t[k]}
                if not changes and not sys_changes:
                    counts["unchanged"] += 1
                    continue
                assign = {**changes, **sys_changes}
                sets = ", ".join(f"{k} = ?" for k in assign)
                bump = ", version = version + 1, updated_at = ?, updated_by = ?" if changes else ""
                params = [*assign.values()] + ([at, author] if changes else []) + [t["id"]]
                con.execute(f"UPDATE topics SET {sets}{bump} WHERE id = ?", params)
                for k, v in changes.items():
                    self._audit(con, author, t["id"], k, row[k], v, at)
                counts["updated"] += 1
            for r in data.get("runs") or []:
                if not isinstance(r, Mapping) or not isinstance(r.get("name"), str):
                    raise ValueError("taxonomy export: every run needs a \"name\"")
                con.execute("DELETE FROM runs WHERE name = ?", (r["name"],))
                con.execute(
                    "INSERT INTO runs (name, synced_at, n_clusters, min_cosine) VALUES (?, ?, ?, ?)",
                    (r["name"], str(r.get("synced_at") or at), int(r.get("n_clusters", 0)), float(r.get("min_cosine", 0.5))),
                )
                for m in r.get("clusters") or []:
                    con.execute(
                        "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome, jaccard, changed)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (r["name"], int(m["cluster"]), str(m["topic_id"]), m.get("cosine"), m.get("outcome", "matched"),
                         m.get("jaccard"), int(bool(m.get("changed", False)))),
                    )
            if data.get("current_run"):
                con.execute(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES ('current_run', ?)", (str(data["current_run"]),)
                )
            problems = con.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise ValueError(f"taxonomy export refers to missing topic(s): {sorted({p[0] for p in problems})}")
        return counts

    def _clean_import_topic(self, i: int, t: Any) -> dict:
        where = f"taxonomy export, topics[{i}]"
        if not isinstance(t, Mapping):
            raise ValueError(f"{where}: expected an object")
        tid = t.get("id")
        if not isinstance(tid, str) or not _ID_RE.match(tid):
            raise ValueError(f"{where}: id {tid!r} is not a topic id like 'T001' or a group id like 'G001'")
        kind = t.get("kind", "topic")
        if kind not in ("topic", "group") or (kind == "group") != tid.startswith("G"):
            raise ValueError(f"{where} ({tid}): kind {kind!r} does not match the id")
        try:
            out = {
                "id": tid,
                "kind": kind,
                "name": self._check_text("name", t.get("name", "")),
                "description": self._check_text("description", t.get("description", "")),
                "notes": self._check_text("notes", t.get("notes", "")),
                "parent": t.get("parent") or None,
                "excluded": int(bool(t.get("excluded", False))),
                "name_provisional": int(bool(t.get("name_provisional", False))),
                "review": t.get("review", "unreviewed"),
                "status": t.get("status", "active"),
                "cluster": None if t.get("cluster") is None else int(t["cluster"]),
                "run": t.get("run"),
                "keywords": json.dumps([str(w) for w in t.get("keywords") or []]),
                "n_docs": None if t.get("n_docs") is None else int(t["n_docs"]),
                "version": int(t.get("version", 1)),
                "created_at": t.get("created_at"),
                "updated_at": t.get("updated_at"),
                "updated_by": _as_text(t.get("updated_by")),
            }
            vec = t.get("direction")
            out["direction"] = None if vec is None else _to_blob(np.asarray(vec, dtype=np.float64))
            out["name_unconfirmed"] = int(bool(t.get("name_unconfirmed", False)))
            sketch = t.get("members_sketch")
            if sketch is not None:
                try:
                    sketch = bytes.fromhex(sketch)
                except (TypeError, ValueError):
                    sketch = b"?"
                if len(sketch) % 8:
                    raise ValueError("members_sketch is not a hex string of 64-bit hashes")
            out["members_sketch"] = sketch
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} ({tid}): {exc}") from exc
        if out["review"] not in REVIEW_STATES:
            raise ValueError(f"{where} ({tid}): review {out['review']!r} is not one of {REVIEW_STATES}")
        if out["status"] not in STATUSES:
            raise ValueError(f"{where} ({tid}): status {out['status']!r} is not one of {STATUSES}")
        return out


def sync_saved_run(ws, run_name: str, analysis=None, min_cosine: float = MIN_COSINE, author: str = "system"):
    """Sync a saved run into the workspace taxonomy (``ws.taxonomy_db``), with keywords and sizes
    from ``gem.gis.analyze_run`` (computed when not given) and each cluster's member ids from the
    run's assignments (so matching checks shared members). Returns (Taxonomy, SyncReport, analysis)."""
    from gem.gis import analyze_run
    from gem.runs import load_run

    if analysis is None:
        analysis = analyze_run(ws, run_name)
    assignments = load_run(ws, run_name).assignments
    K = int(np.asarray(analysis.mean_directions).shape[0])
    ids = assignments["id"].astype(str).to_numpy()
    clusters = assignments["cluster"].to_numpy().astype(np.int64)
    if clusters.size and (clusters.min() < 0 or clusters.max() >= K):
        raise ValueError(f"run {run_name!r}: assignments name clusters outside 0..{K - 1}")
    order = np.argsort(clusters, kind="stable")
    members = np.split(ids[order], np.searchsorted(clusters[order], np.arange(1, K)))
    tax = Taxonomy(ws.taxonomy_db)
    table = analysis.table
    report = tax.sync_run(
        run_name,
        analysis.mean_directions,
        keywords={int(k): list(v) for k, v in analysis.keywords.items()},
        sizes=table["n_docs"].tolist(),
        min_cosine=min_cosine,
        author=author,
        members=members,
    )
    return tax, report, analysis
