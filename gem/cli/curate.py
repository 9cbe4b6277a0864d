"""`gem search` and `gem flag`: find documents and record per-document decisions (gem.search,
gem.flags). Ids come as arguments, from ``--ids-file FILE`` (one per line) or from stdin with
``--ids-file -``, so ``gem search ... --ids-only | gem flag ... --exclude --ids-file -`` works."""
from __future__ import annotations

import getpass
import json
import os
import sys

from . import add_workspace_arg, existing_workspace, positive_int
from ..search import plain_line


def default_author() -> str:
    """$GEM_AUTHOR, else the OS user name ("" when neither is known)."""
    env = os.environ.get("GEM_AUTHOR", "").strip()
    if env:
        try:
            env.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("$GEM_AUTHOR is not valid UTF-8: set it in UTF-8, or pass --author NAME") from None
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def register(subparsers) -> None:
    from gem.flags import REASONS
    from gem.search import MODES

    s = subparsers.add_parser("search", help="full-text or semantic search over the workspace corpus",
                              description="Find documents: case-insensitive full-text (phrase, then all words) or "
                                          "semantic (the query embedded with the corpus's own model, nearest "
                                          "documents by cosine). Prints rank, id, score, topic, flags, snippet.")
    add_workspace_arg(s)
    s.add_argument("query", help="words or a phrase")
    s.add_argument("--semantic", action="store_true", help="rank by cosine to the embedded query")
    s.add_argument("--k", type=positive_int, default=20, help="number of results (default 20)")
    s.add_argument("--mode", choices=MODES, default="auto",
                   help="full-text: auto (phrase hits, then documents with all the words; default), phrase, all")
    s.add_argument("--representation", default="final", help="embeddings for --semantic (default final)")
    s.add_argument("--run", default=None, metavar="NAME",
                   help="show each document's topic in this run (default: the taxonomy's current run, if any)")
    s.add_argument("--gis", action="store_true", help="also show each document's GIS in that run (computes it: slower)")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument("--ids-only", action="store_true", help="print only the ids, one per line (to pipe into gem flag)")
    s.set_defaults(handler=cmd_search)

    f = subparsers.add_parser("flag", help="exclude, include, tag or annotate documents; list flags; undo",
                              description="Per-document curation, stored in the workspace taxonomy database with "
                                          "author, time and audit, keyed by document id (survives re-fits). Unknown "
                                          "ids: an error and nothing changed. Excluded documents leave the next fit "
                                          "(`gem fit --exclude-flagged`, the default once any exist), GIS, the "
                                          "student's training set and every export (which lists them in "
                                          "excluded_documents.jsonl).")
    add_workspace_arg(f)
    action = f.add_mutually_exclusive_group()
    action.add_argument("--exclude", action="store_true", help="exclude the documents (needs --reason)")
    action.add_argument("--include", action="store_true", help="include excluded documents again")
    action.add_argument("--tag", metavar="TAG", help="add a free label (1-64 characters)")
    action.add_argument("--untag", metavar="TAG", help="remove a label")
    action.add_argument("--list", action="store_true", help="list the flagged documents")
    action.add_argument("--history", action="store_true", help="list the latest edits (batches)")
    action.add_argument("--undo", action="store_true",
                        help="revert the latest edit (of anyone; with --mine, the latest of --author)")
    f.add_argument("ids", nargs="*", metavar="ID", help="document ids")
    f.add_argument("--ids-file", metavar="FILE", help="read ids from FILE, one per line ('-': stdin)")
    f.add_argument("--reason", choices=REASONS, help="why excluded (with --exclude)")
    f.add_argument("--note", metavar="TEXT",
                   help="a note: stored with --exclude; on its own, sets the documents' note ('' clears it)")
    f.add_argument("--author", default=None, help="who makes the edit (default: $GEM_AUTHOR or the OS user)")
    f.add_argument("--mine", action="store_true", help="with --undo: only the author's own latest edit")
    f.add_argument("--excluded-only", action="store_true", help="with --list: only excluded documents")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(handler=cmd_flag)


def _current_run(ws, name: str | None) -> str | None:
    if name:
        from gem.store import validate_name

        validate_name(name, "run name")
        if not (ws.run_dir(name) / "params.json").exists():
            raise ValueError(f"{ws.run_dir(name)}: no such run (see `gem fit`)")
        return name
    if not ws.taxonomy_db.exists():
        return None
    from gem.taxonomy import Taxonomy

    run = Taxonomy(ws.taxonomy_db).current_run
    return run if run and (ws.run_dir(run) / "params.json").exists() else None


def cmd_search(args) -> int:
    from gem.search import search

    ws = existing_workspace(args)
    run = _current_run(ws, args.run)
    analysis = None
    if args.gis:
        if run is None:
            raise ValueError("--gis needs a run: pass --run NAME")
        from gem.workspace_ops import analyze_run

        analysis = analyze_run(ws, run)
    result = search(ws, args.query, k=args.k, semantic_search=args.semantic, mode=args.mode,
                    representation=args.representation, run=run, analysis=analysis)
    t = result.table
    if args.ids_only:
        for i in t["id"]:
            print(plain_line(i))
        return 0
    if args.json:
        print(json.dumps({"query": result.query, "kind": result.kind, "run": run, "n_matches": result.n_matches,
                          "seconds": round(result.seconds, 4),
                          "results": json.loads(t.to_json(orient="records", force_ascii=False))},
                         indent=2, ensure_ascii=False))
        return 0
    what = "matching" if result.kind == "full-text" else "searched"
    print(f"{result.kind} search {result.query!r}: {result.n_matches:,} documents {what}, top {len(t)} "
          f"({result.seconds * 1000:.0f} ms)" + (f"; topics of run {run}" if run else ""))
    for r in t.itertuples(index=False):
        flag = f" [excluded: {r.reason}]" if r.excluded else ""
        tags = f" [tags: {r.tags}]" if r.tags else ""
        topic = f" {getattr(r, 'topic', '')}" if run else ""
        gis = f" gis {r.gis:.2f}" if analysis is not None and r.gis == r.gis else ""
        print(plain_line(f"{r.rank:>4} {r.id}  {r.score:.3f}{topic}{gis}{flag}{tags}") + f"\n       {r.snippet}")
    return 0


def read_ids(args) -> list[str]:
    """Ids from the arguments plus ``--ids-file`` (blank lines and lines starting with # skipped),
    decoded once here: UTF-8, a leading byte order mark dropped."""
    from gem.store import show_path

    ids = list(args.ids)
    if args.ids_file:
        where = "stdin" if args.ids_file == "-" else show_path(args.ids_file)
        if args.ids_file == "-":
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        else:
            with open(args.ids_file, "rb") as fh:
                raw = fh.read()
        try:
            text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ValueError(f"{where} line {line}: not UTF-8 text ({exc.reason}); give one id per line") from None
        ids += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return ids


def cmd_flag(args) -> int:
    from gem.flags import DocFlags

    ws = existing_workspace(args)
    flags = DocFlags(ws)
    if args.list or args.history:
        table = flags.table(only_excluded=args.excluded_only) if args.list else flags.history()
        if args.json:
            print(json.dumps(json.loads(table.to_json(orient="records", force_ascii=False)), indent=2,
                             ensure_ascii=False))
        elif args.list:
            print(f"{len(table)} flagged document(s), {int(table['excluded'].sum())} excluded")
            for r in table.itertuples(index=False):
                state = f"excluded ({r.reason})" if r.excluded else "included"
                extra = (f"  tags: {', '.join(r.tags)}" if r.tags else "") + (f"  note: {r.note}" if r.note else "")
                print(plain_line(f"{r.id}  {state}  by {r.updated_by} at {r.updated_at}{extra}"))
        else:
            for r in table.itertuples(index=False):
                undone = f"  (undone by {r.undone_by})" if r.undone_by else ""
                print(plain_line(f"{r.at}  {r.author}  {r.action}  {r.n_docs} document(s)  batch {r.batch}{undone}"))
        return 0
    if not (args.exclude or args.include or args.tag is not None or args.untag is not None or args.undo
            or args.note is not None):
        raise ValueError("say what to do: --exclude, --include, --tag, --untag, --note, --list, --history or --undo")
    author = args.author if args.author is not None else default_author()
    if args.undo:
        result = flags.undo(author, author_only=args.mine)
    else:
        ids = read_ids(args)
        if not ids:
            raise ValueError("give document ids as arguments or with --ids-file FILE (or - for stdin)")
        if args.exclude:
            if not args.reason:
                raise ValueError("--exclude needs --reason (one of junk, boilerplate, duplicate, off-topic, unsafe, other)")
            result = flags.exclude(ids, args.reason, author, note=args.note)
        elif args.include:
            result = flags.include(ids, author)
        elif args.tag is not None:
            result = flags.tag(ids, args.tag, author)
        elif args.untag is not None:
            result = flags.untag(ids, args.untag, author)
        else:
            result = flags.note(ids, args.note, author)
    if args.json:
        print(json.dumps({"batch": result.batch, "action": result.action, "author": result.author,
                          "changed": result.changed, "requested": result.requested}, indent=2, ensure_ascii=False))
    else:
        print(plain_line(result.summary()))
    return 0
