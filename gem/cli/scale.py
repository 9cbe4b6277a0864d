"""`gem distill` (teacher -> fastText student) and `gem label` (label shards, local or Ray)."""
from __future__ import annotations

import argparse
import json

from gem.cli import add_workspace_arg, existing_workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="train a fastText student on a fitted run's GIS-selected labels",
                       description="Train a fastText student from a run: per topic the top-GIS documents, the same "
                                   "count per topic; report agreement with the teacher on held-out documents.")
    add_workspace_arg(p)
    p.add_argument("--run", required=True, help="fitted run name (workspace/runs/NAME)")
    p.add_argument("--out", required=True, metavar="MODEL", help="student path (.bin); with --quantize the .ftz goes beside it")
    p.add_argument("--top-fraction", type=float, default=1.0, metavar="Q", help="per topic, candidates are the top Q by GIS (default 1.0: the student is data-limited)")
    p.add_argument("--per-topic", type=int, default=None, metavar="N", help="at most N documents per topic (default: the 75th percentile of topic sizes)")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction held out for the report (default 0.2)")
    p.add_argument("--excluded-mode", choices=["drop", "label"], default="drop",
                   help="excluded topics: leave out (drop) or train as __label__drop (label)")
    p.add_argument("--no-kmeans", action="store_true", help="skip the k-means-labels comparison")
    # opt-in: quantising takes ~0.3 ms per kept row (seconds at 20k rows, a minute on a loaded box at 50k)
    p.add_argument("--quantize", action="store_true", help="also write the product-quantised .ftz (~20x smaller)")
    p.add_argument("--quantize-cutoff", type=int, default=20_000, metavar="ROWS", help="word/n-gram rows kept in the .ftz (default 20000)")
    p.add_argument("--no-word-vectors", action="store_true",
                   help="train from scratch instead of from teacher word vectors (the default when the run's "
                        "embeddings came from the bundled encoder)")
    p.add_argument("--epoch", type=int, default=None, help="fastText epochs (default 10 with word vectors, else 25)")
    p.add_argument("--lr", type=float, default=None, help="fastText learning rate (default 0.1 with word vectors, else 0.5)")
    p.add_argument("--dim", type=int, default=None, help="vector size without word vectors (default 64; with them: K)")
    p.add_argument("--bucket", type=int, default=None, help="hashed n-gram rows without word vectors (default 200000)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(handler=_distill)

    p = sub.add_parser("label", help="label JSONL/Parquet shards with a student or a teacher run",
                       description="Label every shard matching --input into --out/<shard>.parquet (id, topic_id, "
                                   "probability); finished shards are skipped, so a killed run resumes.")
    p.add_argument("--model", required=True, metavar="STUDENT_OR_RUN", help="student .bin/.ftz, or a run directory (exact teacher, slow)")
    p.add_argument("--input", required=True, metavar="GLOB", help="shards: *.jsonl, *.jsonl.gz, *.parquet (quote the glob)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=2, help="processes (local; 0 = in-process) or Ray actors")
    p.add_argument("--ray-address", default=None, metavar="ADDR", help="existing Ray cluster (default: start a local one)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--id-field", default="id")
    p.add_argument("--tokens-field", default="n_tokens", help="token-count field, if records have one (else whitespace words)")
    p.add_argument("--json", action="store_true", help="print summary.json")
    p.set_defaults(handler=_label)


def _distill(args) -> int:
    import sys

    from tqdm import tqdm

    from gem.distill import distill_run, report_text

    ws = existing_workspace(args)
    bars = []

    def progress(done: int, total: int) -> None:  # the teacher encoder embedding the vocabulary (once; then cached)
        if not total:
            return
        if not bars or bars[-1].total != total:
            bars.append(tqdm(total=total, unit="word", desc="teacher word vectors", file=sys.stderr, disable=args.json))
        bars[-1].update(done - bars[-1].n)

    try:
        report = distill_run(ws, args.run, args.out, top_fraction=args.top_fraction, per_topic=args.per_topic,
                             holdout=args.holdout, excluded_mode=args.excluded_mode, compare_kmeans=not args.no_kmeans,
                             quantize=args.quantize, quantize_cutoff=args.quantize_cutoff,
                             word_vectors=not args.no_word_vectors, progress=progress,
                             epoch=args.epoch, lr=args.lr, dim=args.dim, bucket=args.bucket)
    finally:
        for bar in bars:
            bar.close()
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def _label(args) -> int:
    from tqdm import tqdm

    from gem.label import label_corpus

    bars = []  # created on the first report, so input errors print without an empty bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=done, unit="shard", desc="labelling", disable=args.json))
        bars[0].update(done - bars[0].n)

    try:
        summary = label_corpus(args.model, args.input, args.out, engine=args.engine, workers=args.workers,
                               text_field=args.text_field, id_field=args.id_field, tokens_field=args.tokens_field,
                               ray_address=args.ray_address, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"labelled {summary['n_docs']:,} documents in {summary['n_shards']} shards "
              f"({summary['n_shards_skipped']} already done) in {summary['seconds']:.1f} s; "
              f"{summary['n_rejected']:,} rejected (see {args.out}/rejects/); summary: {args.out}/summary.json")
    return 0
