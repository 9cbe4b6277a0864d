"""The fit policy of a workspace: what a new fit starts from, and what moved when it was made.

``fit_with_policy`` is the one way the app's current fit and ``gem fit`` make a run, so the same
settings on the same workspace give the same run from either:

- **documents changed** (exclusions, inclusions, a few new documents) and nothing else: the new
  fit starts from the parameters of the previous fit of the same settings (the same run name, or
  the same settings fitted with / without the excluded documents), over the documents it has
  now. Topics then move only as much as the data did (a cold fit re-partitions: excluding 5 of
  1,500 documents left a cluster at Jaccard 0.30 with its old self). ``cold=True`` refuses this.
- **a manual balance** (a number, not "auto"): it starts from the "auto" run of the same K, seed,
  representation and target (fitted first when missing), never from whatever was fitted last.
- otherwise a cold fit (k-means++ seeding from ``settings.seed``).

A GEM run is then matched to the taxonomy (stable topic ids), and ``TopicMoves`` says, per topic of
the run it started from, how many of its documents it kept (Jaccard), and which topics were
retired or created.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .runs import FitSettings, Run, fit_run, load_run, run_is_current
from .store import Workspace, read_json
from .taxonomy import Taxonomy
from .workspace_ops import sync_saved_run

__all__ = ["WarmStart", "TopicMoves", "FitOutcome", "warm_start_for", "fit_with_policy", "topic_members",
           "topic_moves", "KEPT_JACCARD", "MIN_SHARED"]

KEPT_JACCARD = 0.9  # a topic whose members' Jaccard with its old self is below this "moved"
MIN_SHARED = 0.5  # a previous run is a "documents changed" start only when it holds this share of today's documents


@dataclass(frozen=True)
class WarmStart:
    run: str
    reason: str  # "documents": the previous fit of these settings; "balance": the auto run of the same K and seed

    def describe(self) -> str:
        why = ("the previous fit of these settings, over today's documents" if self.reason == "documents"
               else "the automatic-balance run of the same K, seed and representation")
        return f"warm-started from {self.run} ({why})"


@dataclass
class TopicMoves:
    """Per topic id of the run a re-fit started from: documents before / after and the members'
    Jaccard; ``retired``: topics of the old run the new one lacks; ``created``: the new one's topics
    the old lacked."""

    before: str
    after: str
    rows: list[dict] = field(default_factory=list)  # topic, before, after, jaccard
    retired: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    @property
    def moved(self) -> list[str]:
        return [r["topic"] for r in self.rows if r["jaccard"] < KEPT_JACCARD]

    @property
    def min_jaccard(self) -> float:
        return min((r["jaccard"] for r in self.rows), default=1.0)

    @property
    def anything_moved(self) -> bool:
        return bool(self.retired or self.created or self.moved)

    def summary(self) -> str:
        kept = len(self.rows) - len(self.moved)
        text = (f"{self.after} from {self.before}: {kept} of {len(self.rows)} topics kept at members' Jaccard >= "
                f"{KEPT_JACCARD:g} (lowest {self.min_jaccard:.2f})")
        for label, ids in (("moved", self.moved), ("retired", self.retired), ("new", self.created)):
            if ids:
                text += f"; {label}: {', '.join(ids)}"
        return text

    def table(self):
        import pandas as pd

        rows = [{**r, "status": "moved" if r["jaccard"] < KEPT_JACCARD else "kept"} for r in self.rows]
        rows += [{"topic": t, "before": None, "after": None, "jaccard": None, "status": "new"} for t in self.created]
        return pd.DataFrame(rows, columns=["topic", "status", "before", "after", "jaccard"])


@dataclass
class FitOutcome:
    name: str
    estimator: object
    seconds: float
    warm: WarmStart | None = None
    sync: object | None = None  # gem.taxonomy.SyncReport of a GEM run (None with sync=False)
    analysis: object | None = None  # the gem.gis.RunAnalysis the sync computed
    moves: TopicMoves | None = None  # against the run it started from, when documents changed
    base: "FitOutcome | None" = None  # the auto run fitted first for a manual balance


def _params_without(info: dict, *keys: str) -> dict:
    return {k: v for k, v in (info.get("params") or {}).items() if k not in keys}


def _same_settings_but_documents(ws: Workspace, name: str, settings: FitSettings) -> bool:
    """Run ``name`` is a GEM fit of ``settings`` (with or without the excluded documents) of the
    same representation, holding at least MIN_SHARED of today's documents."""
    path = ws.run_dir(name) / "params.json"
    if not path.exists():
        return False
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return False
    want = json.loads(json.dumps(_params_without({"params": settings.params()}, "exclude_flagged")))
    if info.get("method") != "gem" or _params_without(info, "warm_start_from", "exclude_flagged") != want:
        return False
    import pandas as pd

    ids = ws.load_corpus(columns=["id"])["id"].astype(str)
    old = pd.read_parquet(ws.run_dir(name) / "assignments.parquet", columns=["id"])["id"].astype(str)
    return len(ids) > 0 and ids.isin(old).mean() >= MIN_SHARED


def warm_start_for(ws: Workspace, settings: FitSettings, name: str | None = None, cold: bool = False) -> WarmStart | None:
    """Where a fit of ``settings`` saved as ``name`` (default ``settings.slug()``) starts (module
    docstring); None for a cold fit. Call it only when the run is not current."""
    if settings.method != "gem":
        return None
    name = name or settings.slug()
    if not cold:
        other = settings.replace(exclude_flagged=not settings.exclude_flagged).slug()
        for candidate in dict.fromkeys((name, settings.slug(), other)):
            if _same_settings_but_documents(ws, candidate, settings):
                return WarmStart(candidate, "documents")
    if settings.balance != "auto":
        return WarmStart(settings.replace(balance="auto").slug(), "balance")
    return None


def topic_members(ws: Workspace, name: str) -> dict[str, set[str]]:
    """Topic id -> member ids of a saved run synced to the taxonomy (cluster indices where it is
    not), read into memory so a re-fit of the same name can be compared with it afterwards."""
    assignments = load_run(ws, name).assignments
    mapping = Taxonomy(ws.taxonomy_db).run_mapping(name) if ws.taxonomy_db.exists() else {}
    out: dict[str, set[str]] = {}
    for cluster, ids in assignments.groupby("cluster")["id"]:
        out.setdefault(mapping.get(int(cluster), f"cluster {int(cluster)}"), set()).update(ids.astype(str))
    return out


def topic_moves(before: dict[str, set[str]], after: dict[str, set[str]], before_name: str, after_name: str) -> TopicMoves:
    """Compare two runs' topics by id (``topic_members`` of each)."""
    moves = TopicMoves(before_name, after_name)
    for topic in sorted(before):
        if topic not in after:
            moves.retired.append(topic)
            continue
        a, b = before[topic], after[topic]
        union = len(a | b)
        moves.rows.append({"topic": topic, "before": len(a), "after": len(b),
                           "jaccard": round(len(a & b) / union, 4) if union else 1.0})
    moves.created = sorted(set(after) - set(before))
    return moves


def fit_with_policy(ws: Workspace, settings: FitSettings, name: str | None = None, device: str = "cpu",
                    cold: bool = False, sync: bool = True, warm_from: str | None = None) -> FitOutcome:
    """Fit ``settings`` as run ``name`` (default ``settings.slug()``), starting where the policy
    says (module docstring; ``warm_from`` names the start explicitly), match a GEM run to the
    taxonomy (``sync``) and report what moved against the run it started from."""
    name = name or settings.slug()
    if warm_from is not None:
        warm = WarmStart(warm_from, "given")
    else:
        warm = warm_start_for(ws, settings, name, cold=cold)
    base = None
    if warm is not None and warm.reason == "balance":
        base_settings = settings.replace(balance="auto")
        if not run_is_current(ws, warm.run, base_settings):
            base = fit_with_policy(ws, base_settings, warm.run, device=device, cold=cold, sync=False)
    source: Run | None = load_run(ws, warm.run) if warm is not None else None
    before = topic_members(ws, warm.run) if warm is not None and warm.reason == "documents" else None
    start = time.perf_counter()
    est = fit_run(ws, name, settings, warm_from=source, device=device)
    outcome = FitOutcome(name, est, time.perf_counter() - start, warm, base=base)
    if settings.method == "gem" and sync:
        _, outcome.sync, outcome.analysis = sync_saved_run(ws, name)
        if before is not None:
            outcome.moves = topic_moves(before, topic_members(ws, name), warm.run, name)
    return outcome

