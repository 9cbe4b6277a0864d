"""Label corpora far larger than one machine embeds: the fastText student (or the exact teacher)
over JSONL(.gz) / Parquet shards, with a local process pool or Ray.

Per input shard ``<stem>.jsonl[.gz]|.parquet`` the output is ``<out>/<stem>.parquet`` with
columns (id: string, topic_id: string, probability: float32), written atomically, so an output
exists only when complete: a killed run restarts by skipping finished shards (and removes the
temporary files it left). Its Parquet schema metadata (key ``gem.label``) holds the shard's counts
(documents, rejects, documents and tokens per topic), so ``summary.json`` is rebuilt from finished
shards alone. Bad records (invalid UTF-8, invalid JSON, nested too deep, an integer past Python's
digit limit, not an object, missing / non-string / empty text or id) are counted and written with
the reason and line number to ``<out>/rejects/<stem>.jsonl``, never silently dropped or repaired
(one bad record never aborts a shard); both engines run the same
:func:`label_shard`, so their outputs and rejects are identical.

Outputs are byte-reproducible: the same input and model give the same bytes in every
``<stem>.parquet`` and in ``summary.json`` (which describes the output only). Wall-clock facts go to
the append-only log ``<out>/timings.jsonl``: one line per labelled shard and one per run (engine,
workers, shards skipped, seconds); :func:`label_corpus` also returns them with the summary.

A student model is checked against its sidecar's size and sha256 before any work starts (see
:func:`gem.distill.verify_student_file`). Pool workers exit when the driver dies (even by SIGKILL).

Tokens per document: the ``tokens_field`` value when the record has a non-negative int64 there,
else the whitespace word count (``summary.json`` says which, per document count).
"""
from __future__ import annotations

import glob as globlib
import gzip
import json
import logging
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from gem.corpus import MAX_TOKENS, json_problem, show_path
from gem.distill import Student, run_topic_ids, verify_student_file
from gem.embed import SentenceTransformerEmbedder, parse_representation
from gem.runs import load_run
from gem.store import Workspace, write_json_atomic, write_parquet_atomic, write_text_atomic
from gem.taxonomy import Taxonomy

META_KEY = b"gem.label"
REJECTS_DIR = "rejects"
TIMINGS = "timings.jsonl"
SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet")
BATCH = 8192
MAX_REJECT_CHARS = 2000  # a reject line keeps this much of the raw record


# ---------------------------------------------------------------------------- models
class Labeller:
    """Anything with ``predict(texts) -> (topic ids: str array (n,), probabilities float32 (n,))``."""

    name: str = "labeller"

    def predict(self, texts: Sequence[str]):  # pragma: no cover - protocol
        raise NotImplementedError


class StudentLabeller(Labeller):
    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.student = Student.load(path, verify=verify)
        self.name = f"student:{Path(path).name}"

    def predict(self, texts):
        return self.student.predict(texts)


class TeacherLabeller(Labeller):
    """Exact but slow: embed with the run's encoder, then the fitted model's ``predict_proba``
    (GEM: softmax(l - v) with the fitted potentials, so new documents get the fit's balance)."""

    def __init__(self, run_dir: str | os.PathLike, batch_size: int = 64):
        run_dir = Path(run_dir)
        ws = Workspace(run_dir.parent.parent)  # <workspace>/runs/<name>
        run = load_run(ws, run_dir.name)
        self.model = run.model
        self.embedder = SentenceTransformerEmbedder(layer=parse_representation(run.representation), batch_size=batch_size)
        tid, _, source = run_topic_ids(ws, run_dir.name, int(np.asarray(self.model.mean_directions_).shape[0]))
        self.topic_ids = np.asarray(tid, dtype=object)
        self.router = None
        if source == "taxonomy":  # merged and split topics decide each document's stable id
            self.router = Taxonomy(ws.taxonomy_db).router()
        self.name = f"teacher:{run_dir.name}"

    def predict(self, texts):
        unit, _ = self.embedder.encode(list(texts))
        proba = self.model.predict_proba(unit)
        k = np.argmax(proba, axis=1)
        ids = self.topic_ids[k] if self.router is None else self.router.route(self.topic_ids[k], unit)
        return ids, proba[np.arange(len(k)), k].astype(np.float32)


def _model_kind(path: Path) -> str:
    """``"run"`` (a teacher run folder) or ``"student"`` (a .bin / .ftz file); else a clear error."""
    if path.is_dir():
        if not (path / "params.json").exists():
            raise ValueError(f"{path}: a directory but not a run (no params.json); pass a .bin/.ftz student or runs/<name>")
        return "run"
    if path.suffix in (".bin", ".ftz"):
        return "student"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model; pass a student .bin/.ftz or a run directory")
    raise ValueError(f"{path}: unknown model type; pass a student .bin/.ftz or a run directory")


def load_labeller(model_path: str | os.PathLike, verify: bool = True) -> Labeller:
    """A fastText student (.bin / .ftz file) or a teacher run directory (workspace/runs/<name>).
    A student is checked against its sidecar first (``verify``; StudentFileError, a ValueError
    naming the file and the fix, when it is damaged or incomplete)."""
    path = Path(model_path)
    if _model_kind(path) == "run":
        return TeacherLabeller(path)
    return StudentLabeller(path, verify=verify)


def check_model(model_path: str | os.PathLike) -> None:
    """Refuse an unusable model before any worker starts: a student file must match the size and
    sha256 of its sidecar (one without a recorded sha256 is loaded once here, so fastText must read
    it, with a warning); a directory must be a run."""
    path = Path(model_path)
    if _model_kind(path) == "student":
        _, verified = verify_student_file(path)
        if not verified:
            Student.load(path)  # fastText must read it; its header size check and the warning, once


# ---------------------------------------------------------------------------- shards
def shard_stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suf in SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    raise ValueError(f"{path}: unsupported shard type; use .jsonl, .jsonl.gz or .parquet")


def find_shards(inputs_glob: str | Sequence[str]) -> list[Path]:
    """Sorted input shards; output names (stems) must be unique."""
    patterns = [inputs_glob] if isinstance(inputs_glob, (str, os.PathLike)) else list(inputs_glob)
    paths = sorted({Path(p) for pat in patterns for p in globlib.glob(str(pat), recursive=True) if Path(p).is_file()})
    paths = [p for p in paths if p.name.endswith(SUFFIXES)]
    if not paths:
        raise FileNotFoundError(f"no .jsonl / .jsonl.gz / .parquet shards match {inputs_glob!r}")
    seen: dict[str, Path] = {}
    for p in paths:
        stem = shard_stem(p)
        if stem in seen:
            raise ValueError(f"two shards would write the same output {stem}.parquet: {seen[stem]} and {p}; rename one")
        seen[stem] = p
    return paths


def _reject(rejects: list, line: int, reason: str, raw) -> None:
    if not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except (RecursionError, ValueError, TypeError):  # nested deeper than the encoder follows
            raw = f"<a {type(raw).__name__} too deeply nested to show>"
    rejects.append({"line": line, "reason": reason, "record": raw[:MAX_REJECT_CHARS]})


def _validate(rec, line, rejects, text_field, id_field, tokens_field):
    """(id, text, tokens, token_from_field) or None after recording a reject. Line numbers are
    1-based (JSONL lines, Parquet rows)."""
    if not isinstance(rec, dict):
        _reject(rejects, line, f"not a JSON object ({type(rec).__name__})", rec)
        return None
    text = rec.get(text_field)
    if text is None:
        _reject(rejects, line, f"missing or null text field {text_field!r}", rec)
        return None
    if not isinstance(text, str):
        _reject(rejects, line, f"text field {text_field!r} is {type(text).__name__}, not a string", rec)
        return None
    if not text.strip():
        _reject(rejects, line, f"empty text field {text_field!r}", rec)
        return None
    doc_id = rec.get(id_field)
    if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
        what = "missing" if doc_id is None else f"invalid ({type(doc_id).__name__})"
        _reject(rejects, line, f"{what} id field {id_field!r}", rec)
        return None
    tok = rec.get(tokens_field) if tokens_field else None
    if isinstance(tok, int) and not isinstance(tok, bool) and 0 <= tok <= MAX_TOKENS:  # counts are int64
        return str(doc_id), text, tok, True
    return str(doc_id), text, len(text.split()), False


def iter_records(path: Path, rejects: list, text_field="text", id_field="id", tokens_field="n_tokens",
                 batch_size: int = BATCH) -> Iterator[tuple[list, list, list, int]]:
    """Stream valid records of one shard in batches: (ids, texts, tokens, n_tokens_from_field).
    Invalid records are appended to ``rejects``; memory stays ~ one batch."""
    ids, texts, toks, from_field = [], [], [], 0

    def take(rec, line):
        nonlocal from_field
        v = _validate(rec, line, rejects, text_field, id_field, tokens_field)
        if v is not None:
            ids.append(v[0]); texts.append(v[1]); toks.append(v[2]); from_field += v[3]

    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        with open(path, "rb") as fh:  # a file object: pyarrow cannot open a path whose name is not UTF-8
            pf = pq.ParquetFile(fh)
            names = set(pf.schema_arrow.names)
            for col in (text_field, id_field):
                if col not in names:
                    raise ValueError(f"{show_path(path)}: no column {col!r} (columns: {sorted(names)}); "
                                     "pass --text-field / --id-field")
            cols = [c for c in (id_field, text_field, tokens_field) if c and c in names]
            line = 0
            for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
                for rec in batch.to_pylist():
                    line += 1
                    take(rec, line)
                if len(ids) >= batch_size:
                    yield ids, texts, toks, from_field
                    ids, texts, toks, from_field = [], [], [], 0
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):  # lines end at b"\n" only, as JSONL says
                try:
                    s = raw.decode("utf-8")
                except UnicodeDecodeError as exc:  # rejected, never silently repaired
                    _reject(rejects, line, f"invalid UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                           "of the line", raw.decode("utf-8", "backslashreplace").rstrip("\n"))
                    continue
                if not s.strip():
                    continue  # blank lines are not records
                try:
                    rec = json.loads(s)
                except json.JSONDecodeError as exc:
                    _reject(rejects, line, f"invalid JSON: {exc.msg} at column {exc.colno}", s.rstrip("\n"))
                    continue
                except (RecursionError, ValueError) as exc:  # nested too deep, an over-long integer
                    _reject(rejects, line, json_problem(exc)[1], s.rstrip("\n"))
                    continue
                take(rec, line)
                if len(ids) >= batch_size:
                    yield ids, texts, toks, from_field
                    ids, texts, toks, from_field = [], [], [], 0
    if ids:
        yield ids, texts, toks, from_field


def label_shard(labeller: Labeller, path: str | os.PathLike, out_dir: str | os.PathLike, text_field="text",
                id_field="id", tokens_field="n_tokens", batch_size: int = BATCH) -> dict:
    """Label one shard; write rejects, then the output Parquet (its existence marks completion).
    Returns the shard's stats (also stored in the output's schema metadata)."""
    import pyarrow as pa

    path, out_dir = Path(path), Path(out_dir)
    stem = shard_stem(path)
    start = time.perf_counter()  # reported in the return value only: outputs hold no wall-clock facts
    rejects: list[dict] = []
    id_parts, topic_parts, prob_parts, tok_parts = [], [], [], []
    n_tok_field = 0
    for ids, texts, toks, from_field in iter_records(path, rejects, text_field, id_field, tokens_field, batch_size):
        topic, prob = labeller.predict(texts)
        id_parts.append(pa.array(ids, type=pa.string()))
        topic_parts.append(np.asarray(topic, dtype=object))
        prob_parts.append(np.asarray(prob, dtype=np.float32))
        tok_parts.append(np.asarray(toks, dtype=np.int64))
        n_tok_field += from_field
    topic = np.concatenate(topic_parts) if topic_parts else np.zeros(0, object)
    tokens = np.concatenate(tok_parts) if tok_parts else np.zeros(0, np.int64)
    uniq, inv = np.unique(topic, return_inverse=True)
    reasons: dict[str, int] = {}
    for r in rejects:
        key = r["reason"].split(":")[0] if r["reason"].startswith(("invalid JSON", "invalid UTF-8")) else r["reason"]
        reasons[key] = reasons.get(key, 0) + 1
    stats = {
        "shard": show_path(path), "stem": show_path(stem), "n_docs": int(len(topic)), "n_rejected": len(rejects),
        "reject_reasons": reasons, "n_tokens_from_field": int(n_tok_field),
        "n_tokens_whitespace": int(len(topic) - n_tok_field),
        "topics": {str(t): [int(c), int(s)] for t, c, s in
                   zip(uniq, np.bincount(inv, minlength=len(uniq)), np.bincount(inv, weights=tokens, minlength=len(uniq)))},
        "labeller": labeller.name,
    }
    rej_path = out_dir / REJECTS_DIR / f"{stem}.jsonl"
    if rejects:
        write_text_atomic(rej_path, "".join(json.dumps({"shard": show_path(path.name), **r}, ensure_ascii=False) + "\n"
                                            for r in rejects))
    elif rej_path.exists():
        rej_path.unlink()  # stale rejects of an earlier run of a now-clean shard
    table = pa.table({
        "id": pa.chunked_array(id_parts, type=pa.string()) if id_parts else pa.array([], pa.string()),
        "topic_id": pa.array(topic.tolist(), pa.string()),
        "probability": pa.array(np.concatenate(prob_parts) if prob_parts else np.zeros(0, np.float32), pa.float32()),
    }).replace_schema_metadata({META_KEY: json.dumps(stats).encode()})
    write_parquet_atomic(out_dir / f"{stem}.parquet", table)
    return {**stats, "seconds": round(time.perf_counter() - start, 3)}


def read_shard_stats(output: str | os.PathLike) -> dict:
    import pyarrow.parquet as pq

    with open(output, "rb") as fh:  # a file object: the name need not be UTF-8
        meta = pq.read_schema(fh).metadata or {}
    if META_KEY not in meta:
        raise ValueError(f"{output}: not a gem label output (no {META_KEY.decode()} metadata)")
    return json.loads(meta[META_KEY])


def _clean_leftovers(out_dir: Path, stems: set[str]) -> int:
    """Remove temporary files a killed run left behind: atomic_path names them
    ``.<target name>.<random><suffix>``, for the targets ``<stem>.parquet``, ``summary.json`` and
    ``rejects/<stem>.jsonl`` (stems may hold dots: ``part.001``)."""
    n = 0
    targets = {out_dir: {f"{s}.parquet" for s in stems} | {"summary.json"},
               out_dir / REJECTS_DIR: {f"{s}.jsonl" for s in stems}}
    for folder, names in targets.items():
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if not (f.name.startswith(".") and f.is_file()):
                continue
            rest = f.name[1:]
            prefixes = {rest[:i] for i, ch in enumerate(rest) if ch == "."}  # every "<target>." it may start with
            if prefixes & names:
                f.unlink(missing_ok=True)
                n += 1
    return n


def _log_timing(out_dir: Path, record: dict) -> None:
    """Append one line to ``<out>/timings.jsonl`` (wall-clock facts stay out of the outputs)."""
    line = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, ensure_ascii=False) + "\n"
    with open(out_dir / TIMINGS, "a", encoding="utf-8") as fh:
        fh.write(line)


# ---------------------------------------------------------------------------- engines
_WORKER_LABELLER: Labeller | None = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Make this pool worker die with the driver, however the driver dies (a SIGKILL runs none of
    its cleanup, and the pool's pipes stay open while a worker labels a long shard): on Linux the
    kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); everywhere a daemon thread
    checks every WATCHDOG_SECONDS that the parent is still ours (an orphan is re-parented)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watchdog below still works
            pass
    if os.getppid() != parent_pid:  # the driver died before the line above
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="gem-label-parent-watchdog", daemon=True).start()


def _init_worker(model_path: str, parent_pid: int | None = None) -> None:
    global _WORKER_LABELLER
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the driver checked the model (check_model) and warned once
        _WORKER_LABELLER = load_labeller(model_path, verify=False)


def _work(path: str, out_dir: str, text_field: str, id_field: str, tokens_field: str) -> dict:
    return label_shard(_WORKER_LABELLER, path, out_dir, text_field, id_field, tokens_field)


class _RayShardLabeller:
    """Ray actor: loads the model once, labels whole shards (one row = one shard path)."""

    def __init__(self, model_path, out_dir, text_field, id_field, tokens_field):
        self.labeller = load_labeller(model_path)
        self.args = (out_dir, text_field, id_field, tokens_field)

    def __call__(self, batch):
        import pyarrow as pa

        stats = [label_shard(self.labeller, p, *self.args) for p in batch.column("path").to_pylist()]
        return pa.table({"stats": [json.dumps(s) for s in stats]})


def _run_local(model_path, todo, out_dir, workers, fields, progress):
    results = []
    if workers <= 0:  # in-process: for debugging and the app's small jobs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # label_corpus checked the model (check_model) and warned once
            labeller = load_labeller(model_path, verify=False)
        for p in todo:
            results.append(label_shard(labeller, p, out_dir, *fields))
            progress(results[-1])
        return results
    import multiprocessing as mp

    # spawn: no fork of a process holding threads (torch, Ray, Streamlit)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(str(model_path), os.getpid())) as pool:
        futures = [pool.submit(_work, str(p), str(out_dir), *fields) for p in todo]
        try:
            for fut in as_completed(futures):
                results.append(fut.result())
                progress(results[-1])
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _run_ray(model_path, todo, out_dir, workers, fields, progress, ray_address, num_cpus_per_actor):
    """Ray Data: a dataset of shard paths -> ``map_batches`` on an actor pool holding the model.

    Reading happens inside the actors with the same validating reader as the local engine (Ray's
    ``read_json`` aborts on the first invalid line, and its own output file names would break
    per-shard resumability). On a cluster, inputs and ``out_dir`` must be on shared storage and
    the ``gem`` package importable on every node (e.g. a runtime_env)."""
    import ray

    started = False
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        if ray_address:
            ray.init(address=ray_address, **kw)
        else:
            ray.init(num_cpus=max(1, os.cpu_count() or 1), **kw)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"path": str(p)} for p in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            _RayShardLabeller,
            fn_constructor_args=(str(model_path), str(out_dir), *fields),
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=num_cpus_per_actor,  # fractional: never starve Ray's own tasks on small machines
        )
        results = []
        for batch in ds.iter_batches(batch_size=1, batch_format="pyarrow"):
            for s in batch.column("stats").to_pylist():
                results.append(json.loads(s))
                progress(results[-1])
        return results
    finally:
        if started:
            ray.shutdown()


def label_corpus(
    model_path: str | os.PathLike,
    inputs_glob: str | Sequence[str],
    out_dir: str | os.PathLike,
    engine: str = "local",
    workers: int = 2,
    text_field: str = "text",
    id_field: str = "id",
    tokens_field: str | None = "n_tokens",
    ray_address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    num_cpus_per_actor: float = 0.5,
) -> dict:
    """Label every shard matching ``inputs_glob`` into ``out_dir``; skip finished shards; write
    ``summary.json`` and return it with this run's facts (engine, workers, n_shards_labelled,
    n_shards_skipped, seconds; also logged to ``timings.jsonl``). ``progress(done_shards,
    total_shards)`` is called as shards end. The model is checked before any work starts."""
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    model_path = Path(model_path)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: no such model; pass a student .bin/.ftz or a run directory")
    shards = find_shards(inputs_glob)
    check_model(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out_dir, {shard_stem(p) for p in shards})
    todo = [p for p in shards if not (out_dir / f"{shard_stem(p)}.parquet").exists()]
    total, done = len(shards), len(shards) - len(todo)
    if progress:
        progress(done, total)

    def tick(stats):
        nonlocal done
        done += 1
        _log_timing(out_dir, {"shard": stats["stem"], "seconds": stats.get("seconds"), "n_docs": stats["n_docs"],
                              "n_rejected": stats["n_rejected"], "labeller": stats["labeller"]})
        if progress:
            progress(done, total)

    start = time.perf_counter()
    fields = (text_field, id_field, tokens_field or "")
    if todo:
        if engine == "local":
            _run_local(model_path, todo, out_dir, workers, fields, tick)
        else:
            _run_ray(model_path, todo, out_dir, workers, fields, tick, ray_address, num_cpus_per_actor)
    summary = summarize(out_dir, shards)
    summary["model"] = str(model_path)
    write_json_atomic(out_dir / "summary.json", summary)  # the output's description: no run facts
    run = {"engine": engine, "workers": workers, "n_shards_labelled": len(todo), "n_shards_skipped": total - len(todo),
           "seconds": round(time.perf_counter() - start, 3)}
    _log_timing(out_dir, {"run": "label", "model": str(model_path), **run})
    return {**summary, **run}


def summarize(out_dir: str | os.PathLike, shards: Sequence[str | os.PathLike]) -> dict:
    """Topic masses (documents and tokens) and counts over the finished outputs of ``shards``."""
    out_dir = Path(out_dir)
    docs: dict[str, int] = {}
    toks: dict[str, int] = {}
    n_docs = n_rej = tf = tw = 0
    reasons: dict[str, int] = {}
    finished = 0
    for p in shards:
        out = out_dir / f"{shard_stem(p)}.parquet"
        if not out.exists():
            continue
        s = read_shard_stats(out)
        finished += 1
        n_docs += s["n_docs"]; n_rej += s["n_rejected"]
        tf += s["n_tokens_from_field"]; tw += s["n_tokens_whitespace"]
        for r, c in s["reject_reasons"].items():
            reasons[r] = reasons.get(r, 0) + c
        for t, (c, k) in s["topics"].items():
            docs[t] = docs.get(t, 0) + c
            toks[t] = toks.get(t, 0) + k
    tot_tok = sum(toks.values())
    topics = [{"topic_id": t, "docs": docs[t], "tokens": toks[t],
               "doc_share": docs[t] / n_docs if n_docs else 0.0,
               "token_share": toks[t] / tot_tok if tot_tok else 0.0} for t in sorted(docs)]
    return {
        "n_shards": len(shards), "n_shards_finished": finished, "n_docs": n_docs, "n_rejected": n_rej,
        "reject_reasons": reasons, "n_tokens": tot_tok,
        "tokens_source": {"field": tf, "whitespace_words": tw,
                          "note": "tokens are the record's token-count field when present, else whitespace words"},
        "topics": topics,
    }
