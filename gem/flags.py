"""Document flags: the curator's per-document decisions (exclude with a reason, include again, tag,
note), stored in the workspace's taxonomy database (``taxonomy.sqlite``) in their own tables and
keyed by document id, so they survive every re-fit.

Tables (part of the taxonomy database's schema, ``gem.taxonomy.db``, created with it or added
when an older database is opened):

- ``doc_flags``: one row per flagged document: doc_id, excluded (0/1), reason, note, tags (a JSON
  list, sorted), updated_at, updated_by.
- ``doc_flag_batches``: one row per call that changed something: batch id, at, author, action,
  number of documents, and ``undone_by`` (the undo batch that reverted it).
- ``doc_flag_audit``: one row per changed field of one document: seq, batch, at, author, doc_id,
  field (excluded / reason / note / tags), old and new value (text; tags as JSON).

Every edit is one transaction on the taxonomy's connection (``TaxonomyDB._connect(write=True)``:
the same WAL mode, busy timeout and one-line error naming the file as the taxonomy's edits):
unknown document ids, a bad reason, tag or note, or a missing author raise ValueError before
anything is written (all-or-nothing). A call that changes nothing writes no batch.

Undo (``undo``) reverts the latest batch not yet undone, of one author when ``author_only`` is
given, else the latest overall, and records the revert as a batch of its own (action "undo").
It refuses (ValueError, nothing changed) when a later batch changed the same field of one of its
documents: undo that one first.

Authors follow the taxonomy's rule (``gem.taxonomy.db.check_author``: required, stripped, at most 200
characters). Reasons: ``REASONS``. Tags: 1-64 characters, no control characters, stored as typed
(stripped); a document's tags are a set. Notes: at most 2,000 characters, no control characters but line breaks and tabs. Corpus text, ids,
tags and notes are stored verbatim and never interpreted.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from gem.store import short, utc_now_ms
from gem.taxonomy.db import TaxonomyDB, check_author

REASONS = ("junk", "boilerplate", "duplicate", "off-topic", "unsafe", "other")
MAX_TAG = 64
MAX_NOTE = 2000
FIELDS = ("excluded", "reason", "note", "tags")
FLAG_COLUMNS = ["id", "excluded", "reason", "tags", "note", "updated_by", "updated_at"]


@dataclass
class FlagResult:
    """What one edit did: its batch id (None when nothing changed), action, author, the documents
    it changed and how many were asked for."""

    batch: str | None
    action: str
    author: str
    changed: list[str]
    requested: int

    def summary(self) -> str:
        if self.batch is None:
            return f"{self.action}: nothing to change ({self.requested} document(s) already so)"
        return f"{self.action}: {len(self.changed)} of {self.requested} document(s) changed (batch {self.batch})"


# ---------------------------------------------------------------------------- validation
def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    return reason


def check_tag(tag) -> str:
    """A tag as stored: stripped, 1-64 characters, no control characters (ValueError otherwise)."""
    if not isinstance(tag, str):
        raise ValueError(f"a tag must be text, got {type(tag).__name__}")
    tag = tag.strip()
    if not tag:
        raise ValueError("a tag cannot be empty")
    if len(tag) > MAX_TAG:
        raise ValueError(f"tag {tag[:20]!r}... is {len(tag)} characters; the limit is {MAX_TAG}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in tag):
        raise ValueError(f"tag {tag!r} contains a control character")
    return tag


def check_note(note) -> str:
    note = "" if note is None else note
    if not isinstance(note, str):
        raise ValueError(f"a note must be text, got {type(note).__name__}")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in note):
        raise ValueError("the note contains a control character (only line breaks and tabs are allowed)")
    if len(note) > MAX_NOTE:
        raise ValueError(f"the note is {len(note)} characters; the limit is {MAX_NOTE}")
    return note


def corpus_ids(ws) -> np.ndarray:
    """The workspace corpus's document ids as strings."""
    return ws.load_corpus(columns=["id"])["id"].astype(str).to_numpy()


def check_ids(ids: Iterable, known: Sequence[str] | np.ndarray) -> list[str]:
    """``ids`` as unique strings in the given order, every one in ``known`` (ValueError naming the
    first unknown ones and how many: nothing is changed)."""
    import pandas as pd

    out = list(dict.fromkeys(str(i) for i in ids))
    if not out:
        raise ValueError("no document ids given")
    pos = pd.Index(np.asarray(known, dtype=object)).get_indexer(out) if len(known) else np.full(len(out), -1)
    bad = [i for i, p in zip(out, pos) if p < 0]
    if bad:
        shown = ", ".join(repr(short(b)) for b in bad[:3])
        raise ValueError(f"{len(bad)} of {len(out)} document id(s) are not in the workspace corpus (first: {shown}); "
                         "nothing was changed")
    return out


# ---------------------------------------------------------------------------- the store
class DocFlags:
    """The document flags of one workspace (in ``ws.taxonomy_db``). ``known_ids``: the corpus ids
    edits are checked against (default: read from the corpus at each edit)."""

    def __init__(self, ws, known_ids: Sequence[str] | None = None):
        self.ws = ws
        self._known = None if known_ids is None else np.asarray([str(i) for i in known_ids], dtype=object)
        self._tax = None

    # -- connection
    @property
    def exists(self) -> bool:
        return self.ws.taxonomy_db.exists()

    def _taxonomy(self):
        if self._tax is None:  # the flag tables are part of the taxonomy database's schema
            self._tax = TaxonomyDB(self.ws.taxonomy_db)
        return self._tax

    def _read(self, sql: str, params: tuple = ()) -> list:
        """Rows of a query; [] when there is no database or no flag table yet (nothing flagged)."""
        if not self.exists:
            return []
        return self._query(sql, params)

    def _query(self, sql: str, params: tuple = ()) -> list:
        with self._taxonomy()._connect() as con:
            return [tuple(r) for r in con.execute(sql, params).fetchall()]

    # -- edits
    def exclude(self, ids: Iterable, reason: str, author: str, note: str | None = None) -> FlagResult:
        """Exclude documents with ``reason`` (and ``note`` when given)."""
        check_reason(reason)
        changes = {"excluded": 1, "reason": reason}
        if note is not None:
            changes["note"] = check_note(note)
        return self._edit(ids, author, "exclude", lambda row: changes)

    def include(self, ids: Iterable, author: str) -> FlagResult:
        """Un-exclude documents (their tags and notes stay)."""
        return self._edit(ids, author, "include", lambda row: {"excluded": 0, "reason": None})

    def tag(self, ids: Iterable, tag: str, author: str) -> FlagResult:
        tag = check_tag(tag)
        return self._edit(ids, author, f"tag {tag}", lambda row: {"tags": sorted(set(row["tags"]) | {tag})})

    def untag(self, ids: Iterable, tag: str, author: str) -> FlagResult:
        tag = check_tag(tag)
        return self._edit(ids, author, f"untag {tag}", lambda row: {"tags": sorted(set(row["tags"]) - {tag})})

    def note(self, ids: Iterable, note: str, author: str) -> FlagResult:
        note = check_note(note)
        return self._edit(ids, author, "note", lambda row: {"note": note})

    def _edit(self, ids: Iterable, author: str, action: str, change) -> FlagResult:
        author = check_author(author)
        ids = check_ids(ids, corpus_ids(self.ws) if self._known is None else self._known)
        at = utc_now_ms()
        batch = f"{at}-{uuid.uuid4().hex[:8]}"
        with self._taxonomy()._connect(write=True) as con:
            current = _rows(con, ids)
            edits = []
            for doc in ids:
                row = current.get(doc) or _empty_row()
                new = {**row, **change(row)}
                if any(row[f] != new[f] for f in FIELDS):
                    edits.append((doc, row, new))
            if edits:
                _write_batch(con, batch, at, author, action, edits)
        return FlagResult(batch if edits else None, action, author, [doc for doc, _, _ in edits], len(ids))

    def undo(self, author: str, author_only: bool = False) -> FlagResult:
        """Revert the latest batch not yet undone (of ``author`` with ``author_only``, else of
        anyone), recorded as an "undo" batch by ``author``. ValueError when there is nothing to
        undo, or a later batch changed the same document field (nothing is changed then)."""
        author = check_author(author)
        at = utc_now_ms()
        batch = f"{at}-{uuid.uuid4().hex[:8]}"
        with self._taxonomy()._connect(write=True) as con:
            sql = "SELECT batch, action, author FROM doc_flag_batches WHERE undone_by IS NULL AND action != 'undo'"
            params: tuple = ()
            if author_only:
                sql += " AND author = ?"
                params = (author,)
            target = con.execute(sql + " ORDER BY at DESC, rowid DESC LIMIT 1", params).fetchone()
            if target is None:
                raise ValueError("nothing to undo" + (f" by {author}" if author_only else ""))
            entries = con.execute("SELECT seq, doc_id, field, old, new FROM doc_flag_audit WHERE batch = ? "
                                  "ORDER BY seq", (target["batch"],)).fetchall()
            ids = list(dict.fromkeys(e["doc_id"] for e in entries))
            current = _rows(con, ids)
            restored = {doc: dict(current.get(doc) or _empty_row()) for doc in ids}
            for e in entries:
                now = _text(e["field"], restored[e["doc_id"]][e["field"]])
                if now != e["new"]:
                    raise ValueError(f"document {e['doc_id']!r}: its {e['field']} was changed after batch "
                                     f"{target['batch']} ({target['action']}); undo the later edit first")
            for e in reversed(entries):
                restored[e["doc_id"]][e["field"]] = _value(e["field"], e["old"])
            _write_batch(con, batch, at, author, "undo",
                         [(doc, current.get(doc) or _empty_row(), restored[doc]) for doc in ids])
            con.execute("DELETE FROM doc_flags WHERE excluded = 0 AND note = '' AND tags = '[]'")
            con.execute("UPDATE doc_flag_batches SET undone_by = ? WHERE batch = ?", (batch, target["batch"]))
        return FlagResult(batch, f"undo {target['action']} (batch {target['batch']} by {target['author']})", author,
                          ids, len(ids))

    # -- queries
    def table(self, only_excluded: bool = False):
        """Flagged documents (columns ``FLAG_COLUMNS``; tags a list), excluded first, then by id."""
        import pandas as pd

        sql = "SELECT doc_id, excluded, reason, tags, note, updated_by, updated_at FROM doc_flags"
        if only_excluded:
            sql += " WHERE excluded = 1"
        rows = self._read(sql + " ORDER BY excluded DESC, doc_id")
        frame = pd.DataFrame(rows, columns=FLAG_COLUMNS)
        frame["excluded"] = frame["excluded"].astype(bool)
        frame["tags"] = [json.loads(t) for t in frame["tags"]]
        return frame

    def flags_of(self, ids: Sequence[str]):
        """The flags of just these documents (``table()``'s columns; documents without flags absent)."""
        import pandas as pd

        ids = [str(i) for i in ids]
        rows = []
        if ids and self.exists:
            with self._taxonomy()._connect() as con:
                rows = [tuple(r) for r in _select_ids(
                    con, "doc_id, excluded, reason, tags, note, updated_by, updated_at", ids)]
        frame = pd.DataFrame(rows, columns=FLAG_COLUMNS)
        frame["excluded"] = frame["excluded"].astype(bool)
        frame["tags"] = [json.loads(t) for t in frame["tags"]]
        return frame

    def excluded_ids(self) -> list[str]:
        """Ids of the excluded documents, sorted."""
        return [r[0] for r in self._read("SELECT doc_id FROM doc_flags WHERE excluded = 1 ORDER BY doc_id")]

    def n_excluded(self) -> int:
        rows = self._read("SELECT COUNT(*) FROM doc_flags WHERE excluded = 1")
        return int(rows[0][0]) if rows else 0

    def blocklist(self):
        """The excluded documents as the export's blocklist: id, reason, note, author, at (who
        excluded it and when: the latest audit entry that set it excluded)."""
        import pandas as pd

        rows = self._read(
            "SELECT f.doc_id, f.reason, f.note, "
            "(SELECT a.author FROM doc_flag_audit a WHERE a.doc_id = f.doc_id AND a.field = 'excluded' "
            " AND a.new = '1' ORDER BY a.seq DESC LIMIT 1), "
            "(SELECT a.at FROM doc_flag_audit a WHERE a.doc_id = f.doc_id AND a.field = 'excluded' "
            " AND a.new = '1' ORDER BY a.seq DESC LIMIT 1), f.updated_by, f.updated_at "
            "FROM doc_flags f WHERE f.excluded = 1 ORDER BY f.doc_id")
        frame = pd.DataFrame([(r[0], r[1] or "other", r[2], r[3] or r[5], r[4] or r[6]) for r in rows],
                             columns=["id", "reason", "note", "author", "at"])
        return frame

    def tags_of(self) -> dict[str, list[str]]:
        """Document id -> its tags (documents with at least one tag)."""
        return {r[0]: json.loads(r[1]) for r in self._read("SELECT doc_id, tags FROM doc_flags WHERE tags != '[]'")}

    def history(self, limit: int = 200):
        """The latest edits, newest first: one row per batch (batch, at, author, action, n_docs, undone_by)."""
        import pandas as pd

        rows = self._read("SELECT batch, at, author, action, n_docs, undone_by FROM doc_flag_batches "
                          "ORDER BY at DESC, rowid DESC LIMIT ?", (int(limit),))
        frame = pd.DataFrame(rows, columns=["batch", "at", "author", "action", "n_docs", "undone_by"])
        frame["undone_by"] = frame["undone_by"].astype(object).where(frame["undone_by"].notna(), "")
        return frame

    def audit(self, doc_id: str | None = None):
        """Field-level audit entries (seq, batch, at, author, doc_id, field, old, new), oldest first."""
        import pandas as pd

        sql = "SELECT seq, batch, at, author, doc_id, field, old, new FROM doc_flag_audit"
        rows = self._read(sql + (" WHERE doc_id = ? ORDER BY seq" if doc_id else " ORDER BY seq"),
                          (str(doc_id),) if doc_id else ())
        return pd.DataFrame(rows, columns=["seq", "batch", "at", "author", "doc_id", "field", "old", "new"])


def _empty_row() -> dict:
    return {"excluded": 0, "reason": None, "note": "", "tags": []}


def _select_ids(con, columns: str, ids: Sequence[str]):
    """``SELECT columns FROM doc_flags`` of the documents ``ids`` (rows in no particular order)."""
    for s in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[s:s + 500]
        yield from con.execute(f"SELECT {columns} FROM doc_flags WHERE doc_id IN ({','.join('?' * len(chunk))})", chunk)


def _rows(con, ids: Sequence[str]) -> dict[str, dict]:
    return {r["doc_id"]: {"excluded": int(r["excluded"]), "reason": r["reason"], "note": r["note"],
                          "tags": json.loads(r["tags"])}
            for r in _select_ids(con, "doc_id, excluded, reason, note, tags", ids)}


def _write_batch(con, batch: str, at: str, author: str, action: str, edits: list[tuple[str, dict, dict]]) -> None:
    """Record one batch: each ``(doc, before, after)``'s flags set to ``after``, the batch row
    (``n_docs``: the number of edits) and one audit row per field that differs."""
    audit = []
    for doc, before, after in edits:
        con.execute(
            "INSERT INTO doc_flags (doc_id, excluded, reason, note, tags, updated_at, updated_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET excluded = excluded.excluded, "
            "reason = excluded.reason, note = excluded.note, tags = excluded.tags, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (doc, int(after["excluded"]), after["reason"], after["note"], json.dumps(after["tags"]), at, author))
        audit += [(batch, at, author, doc, f, _text(f, before[f]), _text(f, after[f]))
                  for f in FIELDS if before[f] != after[f]]
    con.execute("INSERT INTO doc_flag_batches (batch, at, author, action, n_docs) VALUES (?, ?, ?, ?, ?)",
                (batch, at, author, action, len(edits)))
    con.executemany("INSERT INTO doc_flag_audit (batch, at, author, doc_id, field, old, new) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", audit)


def _text(field: str, value) -> str | None:
    if value is None:
        return None
    if field == "tags":
        return json.dumps(list(value))
    return str(int(value)) if field == "excluded" else str(value)


def _value(field: str, text: str | None):
    if field == "tags":
        return json.loads(text) if text else []
    if field == "excluded":
        return int(text or 0)
    if field == "note":
        return text or ""
    return text


# ---------------------------------------------------------------------------- for the pipeline
def excluded_ids(ws) -> list[str]:
    """Ids of the workspace's excluded documents (sorted; [] when nothing is flagged)."""
    return DocFlags(ws).excluded_ids()


def exclusions_digest(ids: Sequence[str]) -> str:
    """A short digest of a set of excluded ids (a run records the one it was fitted without)."""
    h = hashlib.sha256()
    for i in sorted(str(x) for x in ids):
        h.update(i.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def keep_mask(ids: Sequence[str], excluded: Iterable[str]) -> np.ndarray:
    """Boolean mask over ``ids``: True where the document is not excluded."""
    excluded = np.asarray(list(excluded), dtype=object)
    if excluded.size == 0:
        return np.ones(len(ids), dtype=bool)
    return ~np.isin(np.asarray(ids, dtype=object).astype(str), excluded.astype(str))
