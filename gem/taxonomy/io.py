"""JSON export and import of a whole taxonomy (``taxonomy.json``): topics and groups with every
curator field, stored directions and member sketches, and each synced run's cluster -> topic mapping."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gem.store import read_json, utc_now_ms, write_json_atomic
from gem.taxonomy.db import EDITABLE_FIELDS, ID_RE, REVIEW_STATES, STATUSES, TaxonomyDB, as_text, from_blob, to_blob

EXPORT_FORMAT = "gem-taxonomy"
EXPORT_VERSION = 1


class JsonMixin(TaxonomyDB):
    """``export_json`` / ``save_json`` / ``load_json`` / ``import_json``."""

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
            for key in ("direction", "split_direction"):
                vec = from_blob(d.pop(key))
                d[key] = None if vec is None else [float(x) for x in vec.astype(np.float32)]
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
                 "jaccard": m["jaccard"], "changed": bool(m["changed"]), "via": m["via"]}
                for m in maps
                if m["run"] == r["name"]
            ]
            run_list.append(rd)
        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_VERSION,
            "exported_at": utc_now_ms(),
            "current_run": None if cur is None else cur[0],
            "topics": topics,
            "runs": run_list,
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.export_json())

    def load_json(self, path: str | os.PathLike, author: str) -> dict:
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
        at = utc_now_ms()
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        system = ("kind", "name_provisional", "status", "cluster", "run", "direction", "keywords", "n_docs",
                  "name_unconfirmed", "members_sketch", "merged_into", "split_from", "split_direction")
        with self._connect(write=True) as con:
            # parents may point forward in the list: insert without parents first, then set them
            con.execute("PRAGMA defer_foreign_keys=ON")
            for t in clean:
                row = con.execute("SELECT * FROM topics WHERE id = ?", (t["id"],)).fetchone()
                if row is None:
                    con.execute(
                        "INSERT INTO topics (id, kind, name, name_provisional, description, parent, excluded, notes,"
                        " review, status, cluster, run, direction, keywords, n_docs, version, created_at, updated_at,"
                        " updated_by, name_unconfirmed, members_sketch, merged_into, split_from, split_direction)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (t["id"], t["kind"], t["name"], t["name_provisional"], t["description"], t["parent"],
                         t["excluded"], t["notes"], t["review"], t["status"], t["cluster"], t["run"], t["direction"],
                         t["keywords"], t["n_docs"], t["version"], t["created_at"] or at, t["updated_at"] or at,
                         t["updated_by"] or author, t["name_unconfirmed"], t["members_sketch"], t["merged_into"],
                         t["split_from"], t["split_direction"]),
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
                        "INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome, jaccard, changed, via)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (r["name"], int(m["cluster"]), str(m["topic_id"]), m.get("cosine"), m.get("outcome", "matched"),
                         m.get("jaccard"), int(bool(m.get("changed", False))), m.get("via")),
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
        if not isinstance(tid, str) or not ID_RE.match(tid):
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
                "updated_by": as_text(t.get("updated_by")),
            }
            for key in ("direction", "split_direction"):
                vec = t.get(key)
                out[key] = None if vec is None else to_blob(np.asarray(vec, dtype=np.float64))
            for key in ("merged_into", "split_from"):
                ref = t.get(key) or None
                if ref is not None and (not isinstance(ref, str) or not ID_RE.match(ref) or not ref.startswith("T")):
                    raise ValueError(f"{key} {ref!r} is not a topic id like 'T001'")
                out[key] = ref
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


