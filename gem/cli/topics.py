"""`gem topics`: list, merge and split the workspace taxonomy's topics (see gem.taxonomy.regroup).

    gem topics -w WS list [--json]
    gem topics -w WS merge T003 T007 [--into T007] --author NAME
    gem topics -w WS split T012 --k 3 [--run NAME] [--preview] --author NAME
    gem topics -w WS unmerge T007 --author NAME
    gem topics -w WS unsplit T012 --author NAME

A bad id (unknown, retired, a group, a split topic, the same id twice, fewer than two to merge) or a
k outside 2..8 exits 2 with one line; nothing is changed.
"""
from __future__ import annotations

import argparse
import json
import sys

from gem.cli import add_workspace_arg, existing_workspace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "topics", help="list, merge and split the taxonomy's topics (stable ids that survive re-fits)",
        description="Merge topics under one stable id, or split a topic by fitting GEM inside it. Both are "
                    "audited and survive re-fits of the whole corpus (see docs/taxonomy.md).")
    add_workspace_arg(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    ls = sub.add_parser("list", help="every topic with its status, merges and splits")
    ls.add_argument("--json", action="store_true", help="print JSON instead of text")
    ls.add_argument("--all", action="store_true", help="also list retired topics")

    m = sub.add_parser("merge", help="merge two or more topics under one stable id")
    m.add_argument("ids", nargs="+", metavar="ID", help="topic ids, e.g. T003 T007")
    m.add_argument("--into", metavar="ID", help="the id that stays (one of ID...; default the first)")
    m.add_argument("--author", required=True, help="who makes the change (recorded in the audit)")

    s = sub.add_parser("split", help="split a topic by fitting GEM inside it (preview with --preview)")
    s.add_argument("id", metavar="ID", help="topic id, e.g. T012")
    s.add_argument("--k", type=int, required=True, help="number of children, 2..8")
    s.add_argument("--run", metavar="NAME", help="run whose documents are split (default: the taxonomy's current run)")
    s.add_argument("--seed", type=int, default=0, help="GEM random seed (default 0)")
    s.add_argument("--preview", action="store_true", help="show the children without storing anything")
    s.add_argument("--author", help="who makes the change (required unless --preview)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")

    for name, what in (("unmerge", "undo a merge: the topic gets its clusters back"),
                       ("unsplit", "undo a split: the children retire, their documents return")):
        u = sub.add_parser(name, help=what)
        u.add_argument("id", metavar="ID")
        u.add_argument("--author", required=True, help="who makes the change (recorded in the audit)")
    p.set_defaults(handler=run_topics)


def _taxonomy(args):
    from gem.taxonomy import Taxonomy

    ws = existing_workspace(args)
    if not ws.taxonomy_db.exists():
        raise ValueError(f"{ws.taxonomy_db}: no taxonomy yet; sync a run first "
                         f"(`gem taxonomy -w {ws.root} --run NAME`)")
    return ws, Taxonomy(ws.taxonomy_db)


def run_topics(args: argparse.Namespace) -> int:
    ws, tax = _taxonomy(args)
    if args.action == "list":
        return _list(tax, args)
    if args.action == "merge":
        survivor = tax.merge_topics(args.ids, args.author, into=args.into)
        others = [t for t in args.ids if t != survivor]
        print(f"merged {', '.join(others)} into {survivor}")
        return 0
    if args.action == "unmerge":
        print(f"{args.id} is no longer merged into {tax.unmerge_topic(args.id, args.author)}")
        return 0
    if args.action == "unsplit":
        print(f"{args.id}: children {', '.join(tax.unsplit_topic(args.id, args.author))} retired")
        return 0
    # split
    if not args.preview and not (args.author or "").strip():
        raise ValueError("--author is required to split (or use --preview)")
    run = args.run or tax.current_run
    if not run:
        raise ValueError("no run synced into the taxonomy yet: give --run NAME")
    from gem.workspace_ops import propose_topic_split

    proposal = propose_topic_split(ws, tax, run, args.id, args.k, random_state=args.seed)
    children = None if args.preview else tax.accept_split(proposal, args.author)
    if args.json:
        out = proposal.to_json()
        out["children"] = children
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print(f"{'preview: ' if args.preview else ''}{args.id} in run {run} -> {proposal.k} children")
    for j in range(proposal.k):
        label = children[j] if children else f"child {j + 1}"
        print(f"  {label}: {proposal.sizes[j]} documents; keywords: {', '.join(proposal.keywords[j]) or '-'}")
        for doc_id, text in proposal.examples[j]:
            text = " ".join(text.split())
            print(f"      {doc_id}: {text[:99] + '…' if len(text) > 100 else text}")
    if args.preview:
        print("nothing stored (drop --preview and add --author to accept)")
    return 0


def _list(tax, args) -> int:
    import pandas as pd

    topics = tax.topics()
    if not args.all:
        topics = topics[(topics["status"] != "retired") | topics["merged_into"].notna()]
    rows = []
    for r in topics.itertuples(index=False):
        rows.append({"id": r.id, "name": r.name, "status": r.status,
                     "merged_into": r.merged_into if isinstance(r.merged_into, str) else None,
                     "split_from": r.split_from if isinstance(r.split_from, str) else None,
                     "parent": r.parent if isinstance(r.parent, str) else None,
                     "excluded": bool(r.excluded), "review": r.review,
                     "n_docs": None if pd.isna(r.n_docs) else int(r.n_docs)})
    live_children: dict[str, list[str]] = {}  # split topic -> its live children, built in one pass
    for x in rows:
        if x["split_from"] and x["status"] != "retired":
            live_children.setdefault(x["split_from"], []).append(x["id"])
    for r in rows:
        r["split_into"] = sorted(live_children.get(r["id"], []))
    if args.json:
        json.dump({"current_run": tax.current_run, "topics": rows}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    for r in rows:
        extra = []
        if r["merged_into"]:
            extra.append(f"merged into {r['merged_into']}")
        if r["split_into"]:
            extra.append(f"split into {', '.join(r['split_into'])}")
        if r["split_from"]:
            extra.append(f"child of {r['split_from']}")
        if r["excluded"]:
            extra.append("excluded")
        name = " ".join(str(r["name"]).split())
        print(f"{r['id']}  {r['status']:<7}  {name}" + (f"  [{'; '.join(extra)}]" if extra else ""))
    return 0
