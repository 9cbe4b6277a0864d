"""`gem taxonomy`: topics of a fitted run ranked by GIS, with keywords, sizes and representatives.

The run is synced into the workspace taxonomy first (stable topic ids, curator names kept), so the
ids printed here are the ones the app, exports and later re-fits use.
"""
from __future__ import annotations

import argparse
import json
import sys

from gem.cli import add_workspace_arg, existing_workspace
from gem.taxonomy import MIN_COSINE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "taxonomy",
        help="rank a run's topics by GIS (keywords, sizes, representatives) and sync the taxonomy",
        description=(
            "Compute the Geometric Influence Score of every document of a fitted run, rank topics by "
            "mean GIS, print keywords (GIS-weighted class TF-IDF), sizes and top-GIS representatives. "
            "The run is matched into WS/taxonomy.sqlite (Hungarian on mean directions), so topic ids "
            "stay stable across re-fits."
        ),
    )
    add_workspace_arg(p)
    p.add_argument("--run", required=True, metavar="NAME", help="fitted run (see `gem fit`)")
    p.add_argument("--top", type=int, default=10, metavar="M", help="representatives per topic (default 10)")
    p.add_argument("--keywords", type=int, default=10, metavar="N", help="keywords per topic (default 10)")
    p.add_argument("--beta", type=float, default=0.5, help="weight of the local-density term (default 0.5)")
    p.add_argument("--neighbors", type=int, default=10, metavar="M", help="neighbours for local density (default 10)")
    p.add_argument("--min-cosine", type=float, default=MIN_COSINE,
                   help="least cosine between mean directions for a cluster to keep a topic's id "
                        f"(default {MIN_COSINE}; shared members are checked too: see gem.taxonomy.matching)")
    p.add_argument("--no-sync", action="store_true", help="do not write the taxonomy database")
    p.add_argument("--save-json", metavar="FILE", help="also write the taxonomy as JSON (atomic)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run_taxonomy)


def _snippet(text: str, n: int = 100) -> str:
    text = " ".join(str(text).split())  # one line per document in the terminal
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def run_taxonomy(args: argparse.Namespace) -> int:
    from gem.taxonomy import Taxonomy
    from gem.workspace_ops import analyze_run, sync_saved_run

    if args.top < 0 or args.keywords < 1:
        raise ValueError("--top must be >= 0 and --keywords >= 1")
    ws = existing_workspace(args)
    if not args.no_sync or args.save_json:
        Taxonomy(ws.taxonomy_db)  # a damaged database fails here (TaxonomyError), before the GIS work
    analysis = analyze_run(ws, args.run, top=args.top, n_keywords=args.keywords, beta=args.beta,
                           n_neighbors=args.neighbors)
    table = analysis.table.copy()
    report = None
    names = {k: n for k, n in zip(table["cluster"], table["provisional_name"])}
    ids = {int(k): f"c{int(k)}" for k in table["cluster"]}
    status = {int(k): "" for k in table["cluster"]}
    if not args.no_sync:
        tax, report, _ = sync_saved_run(ws, args.run, analysis=analysis, min_cosine=args.min_cosine)
        topics = tax.topics(args.run)
        for r in topics.itertuples(index=False):
            ids[int(r.cluster)], names[int(r.cluster)], status[int(r.cluster)] = r.id, r.name, r.status
            if isinstance(r.match_via, str):  # matched a topic merged into r.id (see `gem topics`)
                status[int(r.cluster)] = f"via merged {r.match_via}"
        if args.save_json:
            tax.save_json(args.save_json)
    elif args.save_json:
        Taxonomy(ws.taxonomy_db).save_json(args.save_json)
    corpus = ws.load_corpus(columns=["id", "text"])
    text_of = dict(zip(corpus["id"].astype(str), corpus["text"]))
    table = table[table["n_docs"] > 0].sort_values("mean_gis", ascending=False)
    out = []
    for r in table.itertuples(index=False):
        k = int(r.cluster)
        rows = analysis.representatives.get(k, [])
        out.append({
            "topic_id": ids[k], "cluster": k, "name": names[k], "status": status[k],
            "n_docs": int(r.n_docs), "n_tokens": int(r.n_tokens), "share": float(r.share),
            "kappa": float(r.kappa), "mean_gis": float(r.mean_gis), "tightness": float(r.tightness),
            "keywords": list(r.keywords),
            "representatives": [{"id": str(analysis.ids[i]), "gis": float(analysis.gis[i]),
                                 "text": _snippet(text_of.get(str(analysis.ids[i]), ""), 300)} for i in rows],
        })
    if args.json:
        payload = {"run": args.run, "topics": out}
        if report is not None:
            payload["sync"] = {"matched": report.matched, "new": report.new, "revived": report.revived,
                               "retired": report.retired}
        json.dump(payload, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if report is not None:
        print(report.summary())
    for rank, t in enumerate(out, 1):
        flag = f" [{t['status']}]" if t["status"] == "new" or t["status"].startswith("via ") else ""
        print(f"{rank:>3}. {t['topic_id']} {t['name']}{flag}")
        print(f"     {t['n_docs']} docs, {t['n_tokens']} tokens ({t['share']:.1%}), kappa {t['kappa']:.0f}, "
              f"mean GIS {t['mean_gis']:.2f}, tightness {t['tightness']:.2f}")
        print(f"     keywords: {', '.join(t['keywords']) or '-'}")
        for rep in t["representatives"]:
            print(f"       {rep['gis']:8.2f}  {rep['id']}: {_snippet(rep['text'])}")
    return 0
