"""`gem ingest`, `gem embed`, `gem info`: getting a corpus and its embeddings into a workspace."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import add_workspace_arg, existing_workspace

EMBED_LOG_INTERVAL = 10.0  # seconds between two progress lines of `gem embed` in a log (a file or pipe)


def register(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="read and validate corpus files into a workspace",
        description="Read .jsonl, .jsonl.gz, .csv or .parquet files (or folders / globs of them), validate every "
        "record and write WS/corpus.parquet. Rejected records go to WS/rejects.jsonl with the reason. The input "
        "is streamed in batches of 65,536 records: memory holds ~70 bytes + the id per record (plus MinHash "
        "state with --dedup near), not the texts.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="file, folder or glob pattern")
    add_workspace_arg(p)
    p.add_argument("--text-field", default="text", help="field holding the document text (default: text)")
    p.add_argument("--id-field", default="id", help="field holding a unique id (default: id; generated when absent)")
    p.add_argument(
        "--label-field", action="append", dest="label_fields", metavar="FIELD",
        help="label field to keep (repeatable; default: source and category when present)",
    )
    p.add_argument("--tokens-field", default=None, help="field holding token counts (default: count with the MiniLM tokenizer)")
    p.add_argument(
        "--dedup", choices=["exact", "near", "none"], default=None,
        help="duplicate texts, compared after NFKC, case folding and whitespace collapsing: 'exact' (default) "
        "drops later copies, 'near' also drops texts whose word-3-gram Jaccard (MinHash estimate) with an "
        "earlier text is >= --near-threshold, 'none' keeps them; dropped rows go to the rejects file as "
        "'duplicate of <id>'",
    )
    p.add_argument("--near-threshold", type=float, default=None, metavar="J",
                   help="Jaccard threshold of --dedup near (default: 0.8)")
    p.add_argument("--drop-duplicates", action="store_true", help="same as --dedup exact (kept for old scripts)")
    p.add_argument("--json", action="store_true", help="print the load report as JSON")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="report records read, bytes read and rate on stderr, at most once a second (default: when "
        "stderr is a terminal, as one line redrawn in place; --progress also writes them to a file or "
        "pipe, one line each; --no-progress never)",
    )
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser(
        "embed",
        help="embed the workspace corpus (cached) or import precomputed embeddings",
        description="Embed WS/corpus.parquet with a local sentence-transformers model (default: the offline "
        "all-MiniLM-L6-v2) into WS/embeddings/<representation>.npy. Already-embedded texts come from the cache.",
    )
    add_workspace_arg(p)
    p.add_argument("--model", default=None, metavar="PATH", help="local sentence-transformers folder (default: MiniLM)")
    p.add_argument("--layer", type=int, default=None, metavar="N",
                   help="mean-pooled hidden states of transformer layer N instead of the final output "
                   "(saved as 'layerN'; layer 3 is the demo cone)")
    p.add_argument("--precomputed", default=None, metavar="FILE",
                   help="import vectors from an aligned .npy or a Parquet list column instead of running a model")
    p.add_argument("--column", default=None, help="Parquet column holding the precomputed vectors")
    p.add_argument("--representation", default=None, metavar="NAME",
                   help="name to save under: 'final' or 'layerN' (default: from --layer)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="most texts per forward pass (default: 256; batches are also capped at 2048 tokens)")
    from gem.embed import PRECISIONS  # light: numpy and gem.store

    p.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="auto (default): on a CPU bfloat16 when it has native bf16 (avx512_bf16 or amx_bf16 in "
                   "/proc/cpuinfo), else float32 (bf16 without it is emulated and slower); on CUDA bfloat16 "
                   "where the GPU supports it, else float16 (float16: CUDA only)")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="cpu (default), cuda, cuda:N, or auto (CUDA when this torch sees a GPU)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True,
        help=f"report documents encoded of those to encode, docs/s and the seconds elapsed on stderr (default: "
        f"on; on a terminal as one line redrawn in place at most once a second, in a file or pipe one line every "
        f"{EMBED_LOG_INTERVAL:.0f} s; --no-progress never)",
    )
    p.set_defaults(handler=cmd_embed)

    p = sub.add_parser(
        "info",
        help="sizes, sources, labels, embeddings and anisotropy of a workspace",
        description="Summarise a workspace: documents, tokens, label counts, embeddings present and the anisotropy "
        "(cone) diagnostics of each representation.",
    )
    add_workspace_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser(
        "layout",
        help="compute and cache the 2-D and sphere maps the app shows",
        description="Compute the UMAP layouts (2-D, cosine metric; sphere, haversine output metric) of a "
        "workspace's embeddings on a stratified sample and cache them in WS/layouts/, so the app opens "
        "without waiting (the first UMAP in a process pays ~20 s of numba JIT).",
    )
    add_workspace_arg(p)
    p.add_argument("--representation", action="append", metavar="REP",
                   help="final or layerN (repeatable; default: every embedded representation)")
    p.add_argument("--kind", choices=("2d", "sphere"), action="append", help="default: both")
    p.set_defaults(handler=cmd_layout)


def _require_corpus(ws) -> None:
    if not ws.has_corpus():
        raise ValueError(f"{ws.corpus_path}: no corpus in this workspace; run `gem ingest INPUT -w {ws.root}` first")


def _workspace(args):
    """The workspace `gem ingest` writes: made when missing (the only command that makes one)."""
    from gem.store import Workspace

    return Workspace(args.workspace)


def cmd_ingest(args) -> int:
    from gem.corpus import DEFAULT_DEDUP, NEAR_DUPLICATE_THRESHOLD, ingest, show_path

    if args.drop_duplicates and args.dedup not in (None, "exact"):
        raise ValueError(f"--drop-duplicates means --dedup exact; it contradicts --dedup {args.dedup}")
    dedup = args.dedup or DEFAULT_DEDUP
    if args.near_threshold is not None and dedup != "near":
        raise ValueError("--near-threshold applies to --dedup near only")
    threshold = NEAR_DUPLICATE_THRESHOLD if args.near_threshold is None else args.near_threshold
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--near-threshold must be in (0, 1], not {threshold}")
    from gem.store import make_folder, remove_empty

    ws = _workspace(args)
    created = make_folder(ws.root)  # a failed ingest takes back the folders it made (when left empty)
    progress = _progress(sys.stderr, args.progress, "ingest", "records")
    ok = False
    try:
        report = ingest(
            args.inputs, ws,
            progress=None if progress is None else lambda n, read, size: progress(n, bytes_read=read, bytes_total=size),
            text_field=args.text_field,
            id_field=args.id_field or None,
            label_fields=args.label_fields,
            tokens_field=args.tokens_field,
            dedup=dedup,
            near_threshold=threshold,
        )
        ok = True
    except (ValueError, OSError, KeyError):
        raise  # explained in one line by gem.cli.main
    except Exception as exc:  # input the readers did not foresee: still one line, never a traceback
        if os.environ.get("GEM_DEBUG"):
            raise
        raise ValueError(
            f"unexpected {type(exc).__name__} while reading the input ({exc}); nothing was written to "
            f"{show_path(ws.root)}; please report it (GEM_DEBUG=1 shows the traceback)"
        ) from None
    finally:
        if progress is not None:
            progress.close()
        if not ok:
            remove_empty(created)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.summary())
        print(f"wrote {show_path(ws.corpus_path)}")
    return 0


class Progress:
    """Progress lines on ``stream`` (stderr) for a long command, a terminal or a log: at most one line
    every ``interval`` seconds (the last state is written by ``close``); ``redraw``: one line
    rewritten in place (a terminal), else one line each (a log).

    ``progress(done, total=None, bytes_read=None, bytes_total=None)``: ``done`` ``unit`` so far, of
    ``total`` when known ("5/12 docs (42%)"), and where the input is measured in bytes, how much of it
    was read ("0.3 of 1.2 MB (25%)"); then ``unit``/s and the seconds elapsed. The clock starts at
    construction and again at a call with nothing done (``done == 0``: the work itself starts now,
    after a model load say), so the rate is the work's."""

    def __init__(self, stream, label: str, unit: str = "records", redraw: bool = False, interval: float = 1.0):
        self.stream, self.label, self.unit, self.redraw, self.interval = stream, label, unit, redraw, interval
        self.start = time.monotonic()
        self.last_shown: float | None = None  # the first call always shows (monotonic time is not since boot)
        self.state = None
        self.shown = None

    def __call__(self, done: int, total: int | None = None, bytes_read: int | None = None,
                 bytes_total: int | None = None) -> None:
        now = time.monotonic()
        if done == 0 and (self.state is None or self.state[0] != 0):
            self.start = now
        self.state = (done, total, bytes_read, bytes_total)
        if self.last_shown is None or now - self.last_shown >= self.interval:
            self.last_shown = now
            self._show()

    def _show(self) -> None:
        if self.state is None or self.state == self.shown:
            return
        self.shown = self.state
        done, total, bytes_read, bytes_total = self.state
        seconds = max(time.monotonic() - self.start, 1e-9)
        line = f"{self.label}: {done:,}" + (f"/{total:,}" if total is not None else "") + f" {self.unit}"
        line += _share(done, total)
        if bytes_total is not None:
            read = bytes_read or 0
            line += f", {read / 1e6:,.1f} of {bytes_total / 1e6:,.1f} MB{_share(read, bytes_total)}"
        line += f", {done / seconds:,.0f} {self.unit}/s, {seconds:.0f} s"
        self.stream.write(f"\r{line}\x1b[K" if self.redraw else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._show()
        if self.redraw and self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def _share(done: int, total: int | None) -> str:
    return f" ({100 * done / total:.0f}%)" if total else ""


def _progress(stream, wanted: bool | None, label: str, unit: str, log_interval: float = 1.0) -> Progress | None:
    """The Progress of a command's ``--progress`` / ``--no-progress`` (None: on a terminal only):
    redrawn in place at most once a second on a terminal, else one line every ``log_interval``
    seconds; None when off."""
    tty = stream.isatty()
    if not (wanted if wanted is not None else tty):
        return None
    return Progress(stream, label, unit, redraw=tty, interval=1.0 if tty else log_interval)


def cmd_embed(args) -> int:
    from gem.embed import (
        DEFAULT_BATCH_SIZE, SentenceTransformerEmbedder, describe_precision, embed_workspace, load_precomputed,
        parse_representation, representation_name,
    )
    from gem.store import ids_digest

    ws = existing_workspace(args)
    _require_corpus(ws)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, not {args.batch_size}")
    rep = args.representation or representation_name(args.layer)
    parse_representation(rep)
    if args.precomputed:
        ids = ws.load_corpus(columns=["id"])["id"]
        unit, norms = load_precomputed(args.precomputed, expected_rows=len(ids), column=args.column, ids=list(ids))
        meta = {
            "representation": rep, "source": "precomputed", "path": str(args.precomputed),
            "fingerprint": None, "layer": None, "precision": None,
            "ids_digest": ids_digest(ids), "n": int(unit.shape[0]), "dim": int(unit.shape[1]),
        }
        ws.save_embeddings(rep, unit, norms, meta)
        print(f"imported {unit.shape[0]} x {unit.shape[1]} vectors from {args.precomputed} as '{rep}'")
        return 0

    embedder = SentenceTransformerEmbedder(
        model_path=args.model, layer=args.layer,
        batch_size=args.batch_size or DEFAULT_BATCH_SIZE, precision=args.precision, device=args.device,
    )
    bar = _progress(sys.stderr, args.progress, f"embed {rep}", "docs", log_interval=EMBED_LOG_INTERVAL)

    def progress(done: int, total: int) -> None:
        if bar is not None and total:  # total 0: nothing to encode (all cached), nothing to show
            bar(done, total)

    try:
        unit, norms = embed_workspace(ws, embedder, representation=rep, progress=progress, use_cache=not args.no_cache)
    finally:
        if bar is not None:
            bar.close()
    from gem.store import read_json

    meta = read_json(ws.embeddings_meta_path(rep))
    rate = f", {meta['docs_per_second']:.0f} docs/s" if meta.get("docs_per_second") else ""
    print(
        f"embedded {meta['n']} documents as '{rep}' ({meta['dim']}-d; {meta['n_encoded']} encoded, "
        f"{meta['n'] - meta['n_encoded']} reused from the cache or duplicate texts; "
        f"{describe_precision(args.precision, embedder.device)} on {embedder.device}{rate}) -> {ws.embeddings_path(rep)}"
    )
    return 0


def workspace_info(ws) -> dict:
    """Everything `gem info` prints, as a dict (the app reuses it)."""
    import numpy as np
    import pyarrow.parquet as pq

    from gem.store import ids_digest, read_json

    # every column but the text: info never reads it, and it is most of the file's bytes
    corpus = ws.load_corpus(columns=[c for c in pq.read_schema(ws.corpus_path).names if c != "text"])
    info: dict = {"workspace": str(ws.root), "documents": int(len(corpus))}
    if "n_tokens" in corpus:
        tok = corpus["n_tokens"].to_numpy()
        info["tokens"] = {"total": int(tok.sum()), "median": float(np.median(tok)) if len(tok) else 0.0,
                          "max": int(tok.max()) if len(tok) else 0}
    labels = {}
    for col in corpus.columns:
        if col in ("id", "text", "n_tokens"):
            continue
        counts = corpus[col].value_counts(dropna=False)
        if len(counts) > 200:  # free-text-like column: summarise
            labels[col] = {"distinct": int(len(counts))}
        else:
            labels[col] = {("<missing>" if k != k or k is None else str(k)): int(v) for k, v in counts.items()}
    info["labels"] = labels
    digest = ids_digest(corpus["id"])
    reps = {}
    for rep in ws.representations():
        entry: dict = {}
        meta_path = ws.embeddings_meta_path(rep)
        meta = read_json(meta_path) if meta_path.exists() else {}
        X = ws.load_embeddings(rep, mmap=True)
        entry.update(n=int(X.shape[0]), dim=int(X.shape[1]) if X.ndim == 2 else None,
                     source=meta.get("source"), layer=meta.get("layer"), precision=meta.get("precision"))
        entry["fresh"] = bool(meta.get("ids_digest") == digest and X.shape[0] == len(corpus))
        if entry["fresh"]:
            entry["anisotropy"] = _anisotropy(np.asarray(X, dtype=np.float32))
            if ws.norms_path(rep).exists():
                norms = ws.load_norms(rep)
                entry["norms"] = {"mean": float(norms.mean()), "std": float(norms.std()),
                                  "min": float(norms.min()), "max": float(norms.max())}
        reps[rep] = entry
    info["embeddings"] = reps
    if ws.rejects_path.exists():
        with open(ws.rejects_path, encoding="utf-8") as fh:
            info["rejects"] = sum(1 for line in fh if line.strip())
    return info


def _anisotropy(X):
    from gem.metrics import anisotropy  # engine module, imported lazily

    return anisotropy(X)


def cmd_info(args) -> int:
    ws = existing_workspace(args)
    _require_corpus(ws)
    info = workspace_info(ws)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    out = [f"workspace {info['workspace']}: {info['documents']} documents"]
    if "tokens" in info:
        t = info["tokens"]
        out.append(f"tokens: {t['total']} in all, median {t['median']:.0f}, max {t['max']} per document")
    for col, counts in info["labels"].items():
        if "distinct" in counts and len(counts) == 1:
            out.append(f"{col}: {counts['distinct']} distinct values")
        else:
            top = sorted(counts.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{k} {v}" for k, v in top[:12]) + (f", ... ({len(top)} in all)" if len(top) > 12 else "")
            out.append(f"{col}: {shown}")
    if not info["embeddings"]:
        out.append("embeddings: none (run `gem embed`)")
    for rep, e in info["embeddings"].items():
        line = f"embeddings '{rep}': {e['n']} x {e['dim']} ({e.get('source') or 'unknown source'})"
        if not e["fresh"]:
            line += " STALE: corpus changed, run `gem embed` again"
        out.append(line)
        if "anisotropy" in e:
            a = e["anisotropy"]
            out.append(
                f"  anisotropy: mean cosine {a['mean_cosine']:.3f}, mean direction norm {a['mean_direction_norm']:.3f}, "
                f"first PC share {a['first_pc_share']:.3f}, effective rank {a['effective_rank']:.1f}"
            )
        if "norms" in e:
            nm = e["norms"]
            out.append(f"  raw norms: mean {nm['mean']:.3f} +- {nm['std']:.3f} (min {nm['min']:.3f}, max {nm['max']:.3f})")
    if info.get("rejects"):
        out.append(f"rejected records at ingest: {info['rejects']} (see {ws.rejects_path})")
    print("\n".join(out))
    return 0


def cmd_layout(args) -> int:
    import time

    from gem.layout import KINDS, get_layout, layout_path

    ws = existing_workspace(args)
    reps = args.representation or ws.representations()
    if not reps:
        raise ValueError(f"{ws.root}: no embeddings; run `gem embed` first")
    for rep in reps:
        for kind in args.kind or KINDS:
            start = time.perf_counter()
            layout = get_layout(ws, rep, kind)
            print(f"{rep} {kind}: {len(layout.ids):,} points in {time.perf_counter() - start:.1f} s "
                  f"-> {layout_path(ws, rep, kind)}")
    return 0
