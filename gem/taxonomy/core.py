"""The curators' taxonomy: topics with stable ids, persisted in SQLite, surviving re-fits.

Topics are keyed by a stable id ("T001"), never by a cluster's row position. Each fitted run is
synced in: its clusters are matched to the active topics (Hungarian assignment over the admissible
pairs, see below). Matched topics keep their id and all curator work; unmatched clusters become
topics with status 'new' and a provisional name from their keywords; topics whose cluster vanished
become 'retired' (kept, with their labels, and revived if a later run brings a matching cluster
back). Parent groups are rows of the same table with kind 'group' ("G001").

This module holds the ``Taxonomy`` class and its editing API (groups and hierarchy, curator edits
with optimistic concurrency, queries); the database lives in ``gem.taxonomy.db``, the matching of
runs in ``gem.taxonomy.matching``, JSON in ``gem.taxonomy.io``, merge and split in ``gem.taxonomy.regroup``.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from gem.store import utc_now_ms
from gem.taxonomy.db import EDITABLE_FIELDS, MAX_TEXT, REVIEW_STATES, StaleEditError, distinct_name, from_blob, name_key
from gem.taxonomy.io import JsonMixin
from gem.taxonomy.matching import SyncMixin, sketch_from_blob
from gem.taxonomy.regroup import RegroupMixin


class Taxonomy(RegroupMixin, JsonMixin, SyncMixin):
    """SQLite-backed taxonomy of one workspace (``ws.taxonomy_db``)."""

    # ------------------------------------------------------------------ groups and hierarchy
    def add_group(self, name: str, author: str, description: str = "") -> str:
        """Create a parent group (kind 'group') and return its id ("G001", ...)."""
        author = self._check_author(author)
        name = self._check_text("name", name)
        at = utc_now_ms()
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
        at = utc_now_ms()
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

    def update_topic(self, topic_id: str, expected_version: int, author: str, **fields: Any) -> int:
        """Save curator fields (name, description, parent, excluded, notes, review) of one topic or
        group, if it is still at ``expected_version``; returns the new version.

        Raises ``StaleEditError`` when someone saved the topic since it was loaded, ``KeyError`` for an
        unknown topic and ``ValueError`` for invalid values. Unchanged fields are not audited; a save
        that changes nothing keeps the version. On a topic flagged ``name_unconfirmed`` (its name was
        kept on a changed match), saving ``name`` (even unchanged) or ``review="approved"`` confirms the
        name and clears the flag. Renaming a topic to the name of another live topic (compared case
        folded) raises ``ValueError`` suggesting a distinct name.
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
        at = utc_now_ms()
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
            if "name" in changes and row["kind"] == "topic" and name_key(changes["name"]):
                self._check_name_free(con, topic_id, changes["name"], json.loads(row["keywords"] or "[]"))
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

    @classmethod
    def _check_name_free(cls, con, topic_id: str, name: str, keywords) -> None:
        """Two live topics never share a name: a rename to another live topic's name is refused,
        with a distinct name to use instead (the name plus the first of the topic's own keywords
        not in it)."""
        taken = cls._live_names(con, exclude=(topic_id,))
        other = taken.get(name_key(name))
        if other is not None:
            suggestion = distinct_name(name, keywords, set(taken))
            raise ValueError(f"topic {other} is already named {name!r}; two topics should not share one name: "
                             f"try {suggestion!r}")

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
            " t.name_unconfirmed AS needs_confirmation, t.merged_into, t.split_from"
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
                    " rt.jaccard AS match_jaccard, rt.changed AS match_changed, rt.via AS match_via"
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
        out["direction"] = from_blob(out["direction"])
        out["members_sketch"] = sketch_from_blob(out["members_sketch"])
        out["split_direction"] = from_blob(out["split_direction"])
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

