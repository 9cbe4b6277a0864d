"""Reading and validating corpora: JSONL (optionally gzipped), CSV, Parquet, folders and globs.

``load_corpus`` returns a frame with columns ``id`` (str, unique), ``text`` (str), the label
columns, and ``n_tokens`` (int), plus a ``LoadReport``.

Problems in one record never abort a load: the record goes to the rejects file (JSONL, one object
per reject: ``file``, ``line`` (JSONL/CSV, 1-based, as an editor shows it) or ``row`` (Parquet,
0-based), ``reason``, ``record``) and is counted. A problem with a whole file (unreadable, unknown
extension, corrupt gzip/Parquet, CSV/Parquet without the text column, no record accepted) raises
``CorpusError`` naming the file; the rejects file is written first so nothing is lost.

Records without an id get ``"<file stem>:<line or row>"``: stable as long as the file is.
"""
from __future__ import annotations

import csv
import glob as globlib
import gzip
import io
import json
import math
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

SUPPORTED_SUFFIXES = (".jsonl.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".csv", ".parquet")
DEFAULT_LABEL_FIELDS = ("source", "category")  # used when label_fields is None and present
_MAX_RECORD_CHARS = 100_000  # cap on what a reject line echoes back


class CorpusError(ValueError):
    """A whole-file problem: the message names the file and says what to do."""


@dataclass
class LoadReport:
    files: list[str] = field(default_factory=list)
    n_records: int = 0  # records read (non-blank lines / rows)
    n_accepted: int = 0  # rows in the returned frame
    n_rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reject category -> count
    examples: list[str] = field(default_factory=list)  # first rejects as "file: line N: reason"
    duplicate_groups: list[list[str]] = field(default_factory=list)  # ids sharing an exact text
    n_duplicates_dropped: int = 0
    n_generated_ids: int = 0
    tokens_computed: bool = False
    rejects_path: str | None = None

    @property
    def n_duplicate_texts(self) -> int:
        """Rows whose text repeats an earlier row's (group size - 1, summed)."""
        return sum(len(g) - 1 for g in self.duplicate_groups)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_duplicate_texts"] = self.n_duplicate_texts
        return d

    def summary(self) -> str:
        lines = [
            f"read {self.n_records} records from {len(self.files)} file(s): "
            f"{self.n_accepted} accepted, {self.n_rejected} rejected"
        ]
        if self.reasons:
            lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())))
            lines.extend("  " + e for e in self.examples[:5])
        if self.duplicate_groups:
            verb = "dropped" if self.n_duplicates_dropped else "kept (use --drop-duplicates to drop)"
            lines.append(
                f"exact duplicate texts: {len(self.duplicate_groups)} groups, {self.n_duplicate_texts} extra copies {verb}"
            )
        if self.n_generated_ids:
            lines.append(f"generated ids for {self.n_generated_ids} records without one")
        if self.rejects_path and self.n_rejected:
            lines.append(f"rejects written to {self.rejects_path}")
        return "\n".join(lines)


@dataclass
class _Reject:
    file: str
    where: str  # "line" or "row"
    pos: int
    category: str
    reason: str
    record: object = None

    def message(self) -> str:
        return f"{self.file}: {self.where} {self.pos}: {self.reason}"

    def to_json(self) -> dict:
        rec = self.record
        if isinstance(rec, str) and len(rec) > _MAX_RECORD_CHARS:
            rec = rec[:_MAX_RECORD_CHARS] + "...[truncated]"
        return {"file": self.file, self.where: self.pos, "reason": self.reason, "record": rec}


# ---------------------------------------------------------------------------- inputs
def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for s in SUPPORTED_SUFFIXES:
        if name.endswith(s):
            return s
    return None


def _stem(path: Path) -> str:
    s = _suffix(path)
    return path.name[: -len(s)] if s else path.stem


def resolve_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (recursively, supported extensions only) and glob patterns."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        s = str(item)
        path = Path(s)
        if any(ch in s for ch in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in globlib.glob(s, recursive=True))
            matches = [m for m in matches if m.is_file() and _suffix(m)]
            if not matches:
                raise CorpusError(f"{s}: the pattern matches no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(matches)
        elif path.is_dir():
            matches = sorted(
                p for p in path.rglob("*") if p.is_file() and _suffix(p) and not any(x.startswith(".") for x in p.relative_to(path).parts)
            )
            if not matches:
                raise CorpusError(f"{path}: the folder holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(matches)
        elif path.exists():
            if not _suffix(path):
                raise CorpusError(
                    f"{path}: unknown file type; use one of {', '.join(SUPPORTED_SUFFIXES)} (or a folder of them)"
                )
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or folder")
    if not files:
        raise CorpusError("no input files given")
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


# ---------------------------------------------------------------------------- readers
# Each reader yields (where, pos, record-or-None, reject-or-None); a record is a dict.
def _iter_jsonl(path: Path, gz: bool) -> Iterator[tuple[str, int, dict | None, tuple[str, str, object] | None]]:
    opener = gzip.open if gz else open
    try:
        fh = opener(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
    lineno = 0
    try:
        with fh:
            for raw in fh:
                lineno += 1
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield "line", lineno, None, (
                        "not UTF-8",
                        f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); re-encode the file as UTF-8",
                        raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n"),
                    )
                    continue
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # UTF-8 byte-order mark
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield "line", lineno, None, ("invalid JSON", f"invalid JSON ({exc.msg} at column {exc.colno})", line.rstrip("\r\n"))
                    continue
                if not isinstance(obj, dict):
                    yield "line", lineno, None, (
                        "not a JSON object",
                        f"expected a JSON object per line, got {type(obj).__name__}",
                        line.rstrip("\r\n"),
                    )
                    continue
                yield "line", lineno, obj, None
    except (OSError, EOFError, zlib.error) as exc:  # corrupt / truncated gzip, read errors
        raise CorpusError(f"{path}: unreadable after line {lineno} ({exc}); the file is corrupt or truncated") from None


def _iter_csv(path: Path, text_field: str):
    csv.field_size_limit(1 << 30)  # documents can be long
    try:
        fh = open(path, "r", encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise CorpusError(f"{path}: empty CSV file (no header row)") from None
        except csv.Error as exc:
            raise CorpusError(f"{path}: line 1: cannot parse the CSV header ({exc})") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]  # UTF-8 byte-order mark
        if any(_has_surrogates(h) for h in header):
            raise CorpusError(f"{path}: line 1: the header is not UTF-8; re-encode the file as UTF-8")
        if text_field not in header:
            raise CorpusError(
                f"{path}: no column {text_field!r} in the CSV header (columns: {header}); pass --text-field"
            )
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield "line", start, None, ("invalid CSV", f"invalid CSV ({exc})", None)
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            raw = ",".join(row)
            if any(_has_surrogates(v) for v in row):
                yield "line", start, None, (
                    "not UTF-8",
                    "not UTF-8; re-encode the file as UTF-8",
                    raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                )
                continue
            if len(row) != len(header):
                yield "line", start, None, (
                    "wrong number of fields",
                    f"{len(row)} fields but the header has {len(header)}",
                    raw,
                )
                continue
            yield "line", start, dict(zip(header, row)), None


def _iter_parquet(path: Path, text_field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise CorpusError(f"{path}: cannot read as Parquet ({exc})") from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise CorpusError(f"{path}: no column {text_field!r} (columns: {schema.names}); pass --text-field")
    ttype = schema.field(text_field).type
    if not (pa.types.is_string(ttype) or pa.types.is_large_string(ttype) or pa.types.is_string_view(ttype)):
        raise CorpusError(f"{path}: column {text_field!r} has type {ttype}, expected strings")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=65536):
            for rec in batch.to_pylist():
                yield "row", row, rec, None
                row += 1
    except Exception as exc:
        raise CorpusError(f"{path}: unreadable at row {row} ({exc}); the file is corrupt") from None


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


# ---------------------------------------------------------------------------- validation
def _check_value(v, name: str) -> tuple[str | None, str | None]:
    """A label / id value as a string; returns (value, error)."""
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return None, None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None, f"wrong type: {name!r} is {_typename(v)}, expected a string or number"
    s = v if isinstance(v, str) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    if _has_surrogates(s):
        return None, f"{name!r} is not valid Unicode (lone surrogate)"
    return s, None


def _typename(v) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _parse_tokens(v, name: str) -> tuple[int | None, str | None]:
    if isinstance(v, bool):
        return None, f"wrong type: {name!r} is a boolean, expected a non-negative integer"
    if isinstance(v, str):
        try:
            v = float(v.strip()) if v.strip() else None
        except ValueError:
            return None, f"wrong type: {name!r} is {v[:40]!r}, expected a non-negative integer"
    if v is None:
        return None, f"missing {name!r}"
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or int(v) != v:
        return None, f"wrong type: {name!r} is {v!r}, expected a non-negative integer"
    return int(v), None


def load_corpus(
    inputs,
    text_field: str = "text",
    id_field: str | None = "id",
    label_fields: Sequence[str] | None = None,
    tokens_field: str | None = None,
    drop_duplicates: bool = False,
    rejects_path: str | os.PathLike | None = None,
    model_path: str | os.PathLike | None = None,
):
    """Read, validate and combine corpus files. Returns (pandas.DataFrame, LoadReport).

    inputs: a file, folder or glob (or a list of them). label_fields None = those of
    ``("source", "category")`` that occur. tokens_field None = count tokens with the model's
    tokenizer (``gem.embed.count_tokens``).
    """
    import pandas as pd

    files = resolve_inputs(inputs)
    stems = [_stem(f) for f in files]
    if len(set(stems)) < len(stems):  # same stem in two folders: keep generated ids unique
        common = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
        stems = [str(f.resolve().relative_to(common).with_name(_stem(f)).as_posix()) for f in files]

    report = LoadReport(files=[str(f) for f in files])
    rejects: list[_Reject] = []
    cols: dict[str, list] = {"id": [], "text": []}
    origins: list[tuple[str, str, int]] = []  # (file, "line"/"row", position) of accepted rows
    labels_explicit = label_fields is not None
    label_fields = list(label_fields) if labels_explicit else list(DEFAULT_LABEL_FIELDS)
    label_values: dict[str, list] = {k: [] for k in label_fields}
    label_seen: set[str] = set()
    tokens: list[int] = []
    seen_ids: dict[str, str] = {}
    reserved = {"id", "text", "n_tokens"}
    bad_labels = [k for k in label_fields if k in reserved]
    if bad_labels:
        raise ValueError(f"label field(s) {bad_labels} clash with the corpus columns id/text/n_tokens")

    def reject(fname, where, pos, category, reason, record):
        rejects.append(_Reject(fname, where, pos, category, reason, record))

    try:
        for path, stem in zip(files, stems):
            fname = str(path)
            suffix = _suffix(path)
            if suffix in (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"):
                records = _iter_jsonl(path, gz=suffix.endswith(".gz"))
            elif suffix == ".csv":
                records = _iter_csv(path, text_field)
            else:
                records = _iter_parquet(path, text_field)
            accepted_before, records_before = report.n_accepted, report.n_records
            first_problem = None
            for where, pos, rec, problem in records:
                report.n_records += 1
                if problem is not None:
                    reject(fname, where, pos, *problem)
                    first_problem = first_problem or rejects[-1].message()
                    continue
                err = None
                text = rec.get(text_field)
                if text is None:
                    err = ("missing text field", f"missing text field {text_field!r}")
                elif not isinstance(text, str):
                    err = ("wrong type", f"wrong type: {text_field!r} is {_typename(text)}, expected a string")
                elif not text.strip():
                    err = ("empty text", f"empty text in {text_field!r}")
                elif _has_surrogates(text):
                    err = ("not UTF-8", f"{text_field!r} is not valid Unicode (lone surrogate)")
                doc_id = None
                if err is None and id_field and rec.get(id_field) not in (None, ""):
                    doc_id, e = _check_value(rec.get(id_field), id_field)
                    if e:
                        err = ("wrong type", e)
                labs = {}
                if err is None:
                    for k in label_fields:
                        v, e = _check_value(rec.get(k), k)
                        if e:
                            err = ("wrong type", e)
                            break
                        labs[k] = v
                        if k in rec:
                            label_seen.add(k)
                ntok = None
                if err is None and tokens_field:
                    ntok, e = _parse_tokens(rec.get(tokens_field), tokens_field)
                    if e:
                        err = ("wrong type" if "wrong type" in e else "missing tokens field", e)
                generated = False
                if err is None and doc_id is None:
                    doc_id, generated = f"{stem}:{pos}", True
                if err is None and doc_id in seen_ids:
                    err = ("duplicate id", f"duplicate id {doc_id!r} (first seen at {seen_ids[doc_id]})")
                if err is not None:
                    reject(fname, where, pos, err[0], err[1], rec)
                    first_problem = first_problem or rejects[-1].message()
                    continue
                seen_ids[doc_id] = f"{fname}: {where} {pos}"
                report.n_generated_ids += generated
                cols["id"].append(doc_id)
                cols["text"].append(text)
                origins.append((fname, where, pos))
                for k in label_fields:
                    label_values[k].append(labs[k])
                if tokens_field:
                    tokens.append(ntok)
                report.n_accepted += 1
            if report.n_accepted == accepted_before:
                if report.n_records == records_before:
                    raise CorpusError(f"{fname}: no records in the file")
                raise CorpusError(
                    f"{fname}: no record accepted out of {report.n_records - records_before}; first problem: {first_problem}"
                )
    finally:
        report.n_rejected = len(rejects)
        report.reasons = dict(Counter(r.category for r in rejects))
        report.examples = [r.message() for r in rejects[:20]]
        if rejects_path is not None:
            _write_rejects(rejects_path, rejects)
            report.rejects_path = str(rejects_path)

    frame = pd.DataFrame({"id": cols["id"], "text": cols["text"]})
    for k in label_fields:
        if labels_explicit or k in label_seen:
            frame[k] = pd.Series(label_values[k], dtype="str")  # missing labels become NA
    if labels_explicit:
        missing = [k for k in label_fields if k not in label_seen]
        if missing:
            raise CorpusError(
                f"label field(s) {missing} occur in no record of {', '.join(report.files)}; check --label-field"
            )

    # exact duplicate texts: report groups; drop all but the first copy only on request
    dup_mask = frame["text"].duplicated(keep=False)
    if dup_mask.any():
        groups = frame.loc[dup_mask].groupby("text", sort=False)["id"].agg(list)
        report.duplicate_groups = [list(g) for g in groups]
        if drop_duplicates:
            extra = frame["text"].duplicated(keep="first")
            first_id = dict(zip(groups.index, (g[0] for g in groups)))
            for i in map(int, extra.to_numpy().nonzero()[0]):
                doc_id, text = frame.at[i, "id"], frame.at[i, "text"]
                fname, where, pos = origins[i]
                rejects.append(
                    _Reject(fname, where, pos, "duplicate text", f"duplicate text of id {first_id[text]!r} (dropped on request)",
                            {"id": doc_id, "text": text})
                )
            report.n_duplicates_dropped = int(extra.sum())
            keep = ~extra.to_numpy()
            frame = frame.loc[keep].reset_index(drop=True)
            if tokens_field:
                tokens = [t for t, k in zip(tokens, keep) if k]
            if rejects_path is not None:
                _write_rejects(rejects_path, rejects)

    if tokens_field:
        frame["n_tokens"] = pd.Series(tokens, dtype="int64")
    else:
        from .embed import count_tokens

        frame["n_tokens"] = count_tokens(frame["text"].tolist(), model_path=model_path)
        report.tokens_computed = True
    frame["id"] = frame["id"].astype("str")
    frame["text"] = frame["text"].astype("str")
    report.n_accepted = len(frame)  # n_records = n_accepted + n_rejected + n_duplicates_dropped
    return frame, report


def _write_rejects(path, rejects: list[_Reject]) -> None:
    from .store import write_text_atomic

    buf = io.StringIO()
    for r in rejects:
        d = r.to_json()
        try:
            buf.write(json.dumps(d, ensure_ascii=False, default=str) + "\n")
        except (TypeError, ValueError):
            d["record"] = None  # not printable
            buf.write(json.dumps(d, ensure_ascii=False, default=str) + "\n")
    text = buf.getvalue().encode("utf-8", "backslashreplace").decode("utf-8")
    write_text_atomic(path, text)


def ingest(inputs, ws, **opts) -> LoadReport:
    """Load ``inputs`` and write the workspace corpus and its rejects file atomically."""
    from .store import write_parquet_atomic

    frame, report = load_corpus(inputs, rejects_path=ws.rejects_path, **opts)
    write_parquet_atomic(ws.corpus_path, frame)
    return report
