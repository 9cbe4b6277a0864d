"""Reading and validating corpora: JSONL (optionally gzipped), CSV, Parquet, folders and globs.

``load_corpus`` returns a frame with columns ``id`` (str, unique), ``text`` (str), the label
columns, and ``n_tokens`` (int), plus a ``LoadReport``; ``ingest`` writes the same columns to a
workspace's corpus.parquet. Both stream: the input is read, checked, deduplicated and token-counted
a batch at a time (``STREAM_BATCH_ROWS``), each batch piped through small steps (``CheckRecords``,
``DuplicateIds``, ``DuplicateTexts``, ``NearDuplicateTexts``, ``CountTokens``, ``WriteRows``: see
"ingest steps" below), and ``ingest`` appends each batch to the Parquet file, so only fixed-size
state per record stays in memory (digests of ids and texts, positions, the ids; MinHash signatures
and LSH band keys with ``dedup="near"``). The result does not depend on the batch size.

Problems in one record never abort a load: the record goes to the rejects file (JSONL, one object
per reject: ``file``, ``line`` (JSONL/CSV, 1-based, as an editor shows it) or ``row`` (Parquet,
0-based), ``reason``, ``record``) and is counted. That includes input Python itself cannot read:
JSON nested deeper than its recursion limit ("nested too deep"), integers past its int max str
digits or token counts past int64 ("number too large"), a stray CSV quote (see ``_iter_csv``), an
empty CSV row. A problem with a whole file (unreadable, unknown extension, corrupt gzip/Parquet,
CSV/Parquet without the text column or with a column it reads twice, no record accepted) raises
``CorpusError`` naming the file; the rejects file is written first so nothing is lost. File names
that are not UTF-8 appear with ``\\xNN`` escapes (``show_path``). ``ingest`` writes a workspace's
files only when the whole load succeeded.

Records without an id get ``"<file stem>:<line or row>"``: stable as long as the file is. When two
inputs share a stem (``data.jsonl`` and ``data.csv``, ``a/part.jsonl`` and ``b/part.jsonl``), every
generated id starts with the file's path relative to the inputs' common folder, suffix included
(``data.csv:2``), so generated ids never collide.

Duplicates (``dedup``): texts are compared after ``dedup_form`` (Unicode NFKC, case folded,
runs of whitespace collapsed to one space). ``"exact"`` (the default) drops every later copy of a
normalised text; ``"near"`` also drops texts whose word-3-gram shingle sets have a MinHash-estimated
Jaccard similarity >= ``NEAR_DUPLICATE_THRESHOLD`` (0.8) with an earlier kept text; ``"none"`` keeps
them (exact copies are still reported as ``duplicate_groups``). The first occurrence is kept, and
each dropped row goes to the rejects file with reason ``"duplicate of <id>"`` (near: plus the
estimated similarity) and ``duplicate_of``, so ``n_records = n_accepted + n_rejected`` always.
"""
from __future__ import annotations

import contextlib
import csv
import glob as globlib
import gzip
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import unicodedata
import zlib
from array import array
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np  # gem.store imports it anyway

# gem.embed imports transformers only inside count_tokens, so importing it here stays light.
# pyarrow, pandas and scikit-learn are imported where they are used, so that importing this module
# (the pages and the CLI do, for its constants) loads none of them.
from .embed import count_tokens
from .store import (
    UMASK, Workspace, atomic_path, disk_full, file_sha256, is_disk_full, read_json, show_path, validate_name,
    write_json_atomic,
)

SUPPORTED_SUFFIXES = (".jsonl.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".csv", ".parquet")
DEFAULT_LABEL_FIELDS = ("source", "category")  # used when label_fields is None and present
_MAX_RECORD_CHARS = 100_000  # cap on what a reject line echoes back
INGEST_REPORT_NAME = "ingest_report.json"  # the LoadReport of the last ingest, in the workspace folder

DEDUP_MODES = ("exact", "near", "none")
DEFAULT_DEDUP = "exact"  # exact copies carry no information, inflate a topic's mass and fill its representatives
NEAR_DUPLICATE_THRESHOLD = 0.8  # estimated Jaccard of word-3-gram shingle sets (one edited word in ~50)
SHINGLE_WORDS = 3
MINHASH_PERMUTATIONS = 120
MINHASH_BANDS = 20  # 20 bands x 6 rows: a pair at Jaccard 0.8 becomes a candidate with p = 0.998


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
    duplicate_groups: list[list[str]] = field(default_factory=list)  # ids sharing a normalised text
    dedup: str = "none"  # the mode used: "none", "exact" or "near"
    near_threshold: float | None = None  # Jaccard threshold of dedup="near"
    n_duplicates_dropped: int = 0  # exact + near copies dropped (they are counted in n_rejected too)
    n_near_duplicates_dropped: int = 0
    n_generated_ids: int = 0
    n_multiline_records: int = 0  # CSV records whose quoted field spans lines (accepted or not)
    multiline_examples: list[str] = field(default_factory=list)  # "file: lines A-B" of the first ones
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

    @classmethod
    def from_dict(cls, d: dict) -> "LoadReport":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        lines = [
            f"read {self.n_records} records from {len(self.files)} file(s): "
            f"{self.n_accepted} accepted, {self.n_rejected} rejected"
        ]
        if self.reasons:
            lines.append("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())))
            lines.extend("  " + e for e in self.examples[:5])
        if self.duplicate_groups:
            verb = "kept (dedup none)" if self.dedup == "none" else "dropped"
            lines.append(
                f"exact duplicate texts (after NFKC, case folding, whitespace collapsing): "
                f"{len(self.duplicate_groups)} groups, {self.n_duplicate_texts} extra copies {verb}"
            )
        if self.dedup == "near":
            lines.append(
                f"near duplicates (word {SHINGLE_WORDS}-gram Jaccard >= {self.near_threshold:g}, MinHash): "
                f"{self.n_near_duplicates_dropped} dropped"
            )
        if self.n_multiline_records:
            lines.append(
                f"{self.n_multiline_records} CSV record(s) hold a quoted line break and span several lines "
                f"({', '.join(self.multiline_examples[:3])}); if a stray quote merged rows there, fix it and ingest again"
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
    extra: dict | None = None  # more fields for the JSON line (duplicate_of, similarity)
    seq: int = 0  # the record's number over the whole load: orders the rejects of a batch

    def message(self) -> str:
        return f"{self.file}: {self.where} {self.pos}: {self.reason}"

    def to_json(self) -> dict:
        rec = self.record
        if isinstance(rec, str) and len(rec) > _MAX_RECORD_CHARS:
            rec = rec[:_MAX_RECORD_CHARS] + "...[truncated]"
        return {"file": self.file, self.where: self.pos, "reason": self.reason, **(self.extra or {}), "record": rec}


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


def _id_prefixes(files: Sequence[Path]) -> list[str]:
    """What generated ids start with, per file: ``<stem>:<line or row>`` while the stems of the
    inputs are unique (ids stay as they were for a file ingested on its own), else the file's path
    relative to the inputs' common folder, full name with its suffix (``a/part.jsonl``,
    ``data.csv``), so ``data.jsonl`` and ``data.csv`` side by side never share an id. Non-UTF-8
    names appear with ``\\xNN`` escapes."""
    stems = [show_path(_stem(f)) for f in files]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    return [show_path(r.relative_to(common).as_posix()) for r in resolved]


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
                raise CorpusError(f"{show_path(s)}: the pattern matches no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(matches)
        elif path.is_dir():
            matches = sorted(
                p for p in path.rglob("*") if p.is_file() and _suffix(p) and not any(x.startswith(".") for x in p.relative_to(path).parts)
            )
            if not matches:
                raise CorpusError(f"{show_path(path)}: the folder holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(matches)
        elif path.exists():
            if not _suffix(path):
                raise CorpusError(
                    f"{show_path(path)}: unknown file type; use one of {', '.join(SUPPORTED_SUFFIXES)} (or a folder of them)"
                )
            files.append(path)
        else:
            raise CorpusError(f"{show_path(path)}: no such file or folder")
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
# Each reader yields (where, pos, record-or-None, reject-or-None, last line-or-None); a record is a
# dict, a reject (category, reason, raw record); the last line is set for a CSV record whose quoted
# field spans several lines (pos is its first line).
def json_record(line: str) -> tuple[object, tuple[str, str] | None]:
    """``json.loads`` of one line of untrusted JSON: (value, None), or (None, (category, reason))
    when it cannot be read (see :func:`json_problem`). Never raises for any string."""
    try:
        return json.loads(line), None
    except (RecursionError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return None, json_problem(exc)


def json_problem(exc: BaseException) -> tuple[str, str]:
    """(category, reason) of ``json.loads`` failing on untrusted input: invalid JSON, nested
    deeper than the reader's recursion allows (RecursionError), or an integer longer than Python's
    int max str digits (ValueError)."""
    if isinstance(exc, json.JSONDecodeError):
        # some of json's messages end in "at" ("Unterminated string starting at"): say it once
        msg = exc.msg[:-3] if exc.msg.endswith(" at") else exc.msg
        return "invalid JSON", f"invalid JSON ({msg} at column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "nested too deep", NESTED_TOO_DEEP
    if "integer string conversion" in str(exc):
        return "number too large", number_too_large()
    return "invalid JSON", f"invalid JSON ({exc})"


NESTED_TOO_DEEP = "nested too deep (more levels of arrays / objects inside one another than the JSON reader follows)"


def number_too_large() -> str:
    return f"number too large (an integer of more than {sys.get_int_max_str_digits():,} digits)"


def _iter_jsonl(path: Path, gz: bool, tell=None) -> Iterator[tuple[str, int, dict | None, tuple[str, str, object] | None, None]]:
    opener = gzip.open if gz else open
    try:
        fh = opener(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{show_path(path)}: cannot open ({exc.strerror or exc})") from None
    if tell is not None:  # bytes of the file read so far (compressed bytes for gzip)
        tell.fn = fh.fileobj.tell if gz else fh.tell
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
                    ), None
                    continue
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # UTF-8 byte-order mark
                obj, problem = json_record(line)
                if problem is not None:
                    yield "line", lineno, None, (*problem, line.rstrip("\r\n")), None
                    continue
                if not isinstance(obj, dict):
                    yield "line", lineno, None, (
                        "not a JSON object",
                        f"expected a JSON object per line, got {type(obj).__name__}",
                        line.rstrip("\r\n"),
                    ), None
                    continue
                yield "line", lineno, obj, None, None
    except (OSError, EOFError, zlib.error) as exc:  # corrupt / truncated gzip, read errors
        raise CorpusError(f"{show_path(path)}: unreadable after line {lineno} ({exc}); the file is corrupt or truncated") from None


class _Lines:
    """The physical lines of a text file opened with ``newline=""`` (endings kept), numbered from 1,
    as ``csv.reader`` input; ``taken`` holds the (number, line) pairs handed out since it was last
    emptied, so the lines of each record are known."""

    def __init__(self, fh):
        self._fh = fh
        self.count = 0
        self.taken: list[tuple[int, str]] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._fh.readline()
        if not line:
            raise StopIteration
        self.count += 1
        self.taken.append((self.count, line))
        return line


def _row_like(line: str, n_fields: int) -> bool:
    """Whether one physical line, read alone, is a complete CSV row of ``n_fields`` fields: parsed
    as CSV, or with its quote characters taken literally (how a line with a stray quote reads)."""
    body = line.rstrip("\r\n")
    if body.count(",") + 1 == n_fields:
        return True
    try:
        rows = list(csv.reader([body], strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == n_fields


def _times(n: int) -> str:
    return {2: "twice", 3: "three times"}.get(n, f"{n} times")


def _duplicated_column(names: Sequence[str], wanted: Sequence[str | None]) -> str | None:
    """The first of the columns the loader reads that occurs more than once in ``names``."""
    for c in dict.fromkeys(w for w in wanted if w):
        if list(names).count(c) > 1:
            return c
    return None


def _printable(raw: str) -> str:
    """CSV text read with surrogateescape, its undecodable bytes shown as ``\\xe9`` escapes."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _csv_row(header: list[str], lineno: int, row: list[str], raw: str, last: int | None = None):
    """One parsed CSV row as a reader item: a record, or an empty / non-UTF-8 / wrong-width reject."""
    if not any(v.strip() for v in row):
        return "line", lineno, None, ("empty row", "empty row (no field holds anything)", _printable(raw)), last
    if any(_has_surrogates(v) for v in row):
        return "line", lineno, None, ("not UTF-8", "not UTF-8; re-encode the file as UTF-8", _printable(raw)), last
    if len(row) != len(header):
        return "line", lineno, None, (
            "wrong number of fields", f"{len(row)} fields but the header has {len(header)}", _printable(raw),
        ), last
    return "line", lineno, dict(zip(header, row)), None, last


def _iter_csv(path: Path, text_field: str, columns: Sequence[str | None] = (), tell=None):
    """CSV rows (RFC 4180 quoting, read strictly: a quote must close before a comma or line end).

    A quoted field may hold line breaks, so a record can span several physical lines; a stray
    quote (a field that opens with ``"`` by mistake) makes one span the rows after it. A record
    spanning lines s..e is taken for a stray quote when it cannot be a record (the parser fails, or
    its field count differs from the header's) or when each of its non-blank lines reads, alone, as
    a complete row of the header's width (not applied to one-column files, where every line would).
    Then line s alone is rejected (reason ``stray quote``, naming the span) and lines s+1..e are
    read again one at a time, each one a record or a reject of its own; reading goes on after e as
    usual. So each swallowed row comes back and accepted + rejected = the rows of the file. Records
    that do span lines are counted in the load report, so a merge that passed these tests is never
    silent. A row whose fields are all blank is rejected as ``empty row``.
    """
    csv.field_size_limit(1 << 30)  # documents can be long
    try:
        fh = open(path, "r", encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise CorpusError(f"{show_path(path)}: cannot open ({exc.strerror or exc})") from None
    if tell is not None:
        tell.fn = fh.buffer.tell
    with fh:
        lines = _Lines(fh)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise CorpusError(f"{show_path(path)}: empty CSV file (no header row)") from None
        except csv.Error as exc:
            raise CorpusError(f"{show_path(path)}: line 1: cannot parse the CSV header ({exc})") from None
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]  # UTF-8 byte-order mark
        if any(_has_surrogates(h) for h in header):
            raise CorpusError(f"{show_path(path)}: line 1: the header is not UTF-8; re-encode the file as UTF-8")
        twice = _duplicated_column(header, [text_field, *columns])
        if twice is not None:
            raise CorpusError(
                f"{show_path(path)}: column {twice!r} appears {_times(header.count(twice))} in the header; rename the copies"
            )
        if text_field not in header:
            raise CorpusError(
                f"{show_path(path)}: no column {text_field!r} in the CSV header (columns: {header}); pass --text-field"
            )
        width = len(header)
        again: deque[tuple[int, str]] = deque()  # lines a stray quote had swallowed, to read one by one
        while True:
            if again:
                lineno, line = again.popleft()
                try:
                    rows = list(csv.reader([line], strict=True))
                except csv.Error as exc:
                    yield "line", lineno, None, ("invalid CSV", f"invalid CSV ({exc})", _printable(line.rstrip("\r\n"))), None
                    continue
                yield _csv_row(header, lineno, rows[0] if rows else [], line.rstrip("\r\n"))
                continue
            lines.taken = []
            try:
                row, error = next(reader), None
            except StopIteration:
                return
            except csv.Error as exc:
                row, error = None, exc
            taken = lines.taken
            if not taken:  # pragma: no cover - the reader always takes a line before it yields or fails
                return
            start, end = taken[0][0], taken[-1][0]
            raw = "".join(line for _, line in taken).rstrip("\r\n")
            if end > start:
                why = None
                if error is not None:
                    why = f"invalid CSV: {error}"
                elif len(row) != width:
                    why = f"{len(row)} fields but the header has {width}"
                elif width > 1 and all(_row_like(line, width) for _, line in taken if line.strip()):
                    why = "each of its lines reads as a complete row by itself"
                if why is not None:
                    yield "line", start, None, (
                        "stray quote",
                        f"stray quote: a quoted field opened on this line runs to line {end} ({why}); this line is "
                        f"rejected and lines {start + 1}-{end} are read again one by one",
                        _printable(taken[0][1].rstrip("\r\n")),
                    ), None
                    again.extend(taken[1:])
                    continue
                yield _csv_row(header, start, row, raw, last=end)
                continue
            if error is not None:
                yield "line", start, None, ("invalid CSV", f"invalid CSV ({error})", _printable(raw)), None
                continue
            yield _csv_row(header, start, row, raw)


def _is_string_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _iter_parquet(path: Path, text_field: str, columns: Sequence[str | None] = (), tell=None):
    with _parquet_source(path) as source:
        yield from _parquet_rows(path, source, text_field, columns, tell)


@contextlib.contextmanager
def _parquet_source(path: Path):
    """What pyarrow opens: the path, or an open binary file when the path is not UTF-8 (pyarrow
    encodes paths as UTF-8 and fails on such a name)."""
    if not _has_surrogates(os.fspath(path)):
        yield path
        return
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CorpusError(f"{show_path(path)}: cannot open ({exc.strerror or exc})") from None
    with fh:
        yield fh


def _parquet_rows(path: Path, source, text_field: str, columns: Sequence[str | None], tell=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise CorpusError(f"{show_path(path)}: cannot read as Parquet ({exc})") from None
    schema = pf.schema_arrow
    twice = _duplicated_column(schema.names, [text_field, *columns])
    if twice is not None:
        raise CorpusError(
            f"{show_path(path)}: column {twice!r} appears {_times(schema.names.count(twice))} in the schema; rename the copies"
        )
    if text_field not in schema.names:
        raise CorpusError(f"{show_path(path)}: no column {text_field!r} (columns: {schema.names}); pass --text-field")
    ttype = schema.field(text_field).type
    # dictionary-encoded strings (pandas categoricals, Spark / DuckDB output) decode to plain strings
    value_type = ttype.value_type if pa.types.is_dictionary(ttype) else ttype
    if not _is_string_type(value_type):
        raise CorpusError(f"{show_path(path)}: column {text_field!r} has type {ttype}, expected strings")
    row = 0
    if tell is not None:  # bytes read, estimated from the rows read
        size, total = os.stat(path).st_size, max(1, pf.metadata.num_rows)
        tell.fn = lambda: size * row // total
    try:
        for batch in pf.iter_batches(batch_size=65536):
            for rec in batch.to_pylist():
                yield "row", row, rec, None, None
                row += 1
    except Exception as exc:
        raise CorpusError(f"{show_path(path)}: unreadable at row {row} ({exc}); the file is corrupt") from None


def peek_columns(path: str | os.PathLike, n_records: int = 50) -> list[str]:
    """The column names of a corpus file, for choosing the text / id / label columns before
    loading: a CSV header, a Parquet schema, or the keys of the first ``n_records`` JSON objects
    (first-seen order). Raises CorpusError when the file cannot be read at all."""
    path = Path(path)
    kind = (_suffix(path) or "").lstrip(".").replace("ndjson", "jsonl")
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with _parquet_source(path) as source:
                return list(pq.ParquetFile(source).schema_arrow.names)
        except CorpusError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise CorpusError(f"{show_path(path.name)}: cannot read as Parquet ({exc})") from None
    if kind == "csv":
        try:
            with open(path, "r", encoding="utf-8", newline="") as fh:
                header = next(csv.reader(fh), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CorpusError(f"{show_path(path.name)}: cannot read the CSV header ({exc})") from None
        if not header:
            raise CorpusError(f"{show_path(path.name)}: empty CSV file (no header row)")
        return [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(header)]
    if kind in ("jsonl", "jsonl.gz"):
        seen: dict[str, None] = {}
        found = 0
        for _, _, obj, _, _ in _iter_jsonl(path, gz=kind == "jsonl.gz"):
            if obj is not None:
                seen.update(dict.fromkeys(str(k) for k in obj))
                found += 1
                if found >= n_records:
                    break
        if not seen:
            raise CorpusError(f"{show_path(path.name)}: no JSON object with fields in the file; expected one object per line")
        return list(seen)
    raise CorpusError(f"{show_path(path.name)}: not a corpus file (use {', '.join(SUPPORTED_SUFFIXES)})")


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
    try:
        s = v if isinstance(v, str) else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
    except ValueError:  # an integer longer than Python's int max str digits
        return None, f"{name!r}: {number_too_large()}"
    if _has_surrogates(s):
        return None, f"{name!r} is not valid Unicode (lone surrogate)"
    return s, None


def _value_category(error: str) -> str:
    return "number too large" if "number too large" in error else "wrong type"


def _typename(v) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


MAX_TOKENS = 2**63 - 1  # token counts are stored as int64


def _parse_tokens(v, name: str) -> tuple[int | None, tuple[str, str] | None]:
    """A token count: (count, None) or (None, (category, reason))."""
    wrong = "wrong type"
    if isinstance(v, bool):
        return None, (wrong, f"wrong type: {name!r} is a boolean, expected a non-negative integer")
    if isinstance(v, str):
        text = v.strip()
        digits = text.lstrip("+-")
        try:  # integers exactly (a float would round above 2**53), anything else as a float
            v = (int(text) if digits.isascii() and digits.isdigit() else float(text)) if text else None
        except ValueError:
            if digits.isascii() and digits.isdigit():
                return None, ("number too large", f"{name!r}: {number_too_large()}")
            return None, (wrong, f"wrong type: {name!r} is {v[:40]!r}, expected a non-negative integer")
    if v is None:
        return None, ("missing tokens field", f"missing {name!r}")
    if not isinstance(v, (int, float)):
        return None, (wrong, f"wrong type: {name!r} is {_typename(v)}, expected a non-negative integer")
    if math.isnan(v) or v < 0 or (isinstance(v, float) and math.isfinite(v) and not v.is_integer()):
        shown = repr(v) if v > -10**40 else "a large negative number"
        return None, (wrong, f"wrong type: {name!r} is {shown}, expected a non-negative integer")
    if v > MAX_TOKENS:  # inf included
        return None, ("number too large", f"number too large: {name!r} is above {MAX_TOKENS:,} (64-bit integers)")
    return int(v), None


# ---------------------------------------------------------------------------- duplicates
def dedup_form(text: str) -> str:
    """The form duplicates are compared in: Unicode NFKC, case folded, whitespace runs collapsed
    to one space, no leading / trailing space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_fingerprints(texts: Sequence[str]):
    """A 16-byte blake2b digest of each ``dedup_form(text)`` (numpy ``S16`` array): equal
    exactly when the normalised texts are equal (up to a 2^-128 collision). Use it as the per-row
    key that keeps copies of one text apart (``gem.gis.representatives(..., keys=)``)."""
    return np.array(
        [hashlib.blake2b(dedup_form(t).encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts],
        dtype="S16",
    )


def minhash_signatures(
    texts: Sequence[str],
    num_perm: int = MINHASH_PERMUTATIONS,
    shingle_words: int = SHINGLE_WORDS,
    seed: int = 0,
    chunk_size: int = 8192,
):
    """MinHash signatures of the word-``shingle_words``-gram sets of the normalised texts.

    Shingles are hashed by scikit-learn's ``HashingVectorizer`` (murmurhash3 into 2^30 buckets;
    words = ``\\w+`` runs, so punctuation is ignored); permutation p is the multiply-shift hash
    ``(a_p * h + b_p) mod 2^64 >> 32`` (``a_p`` odd). Returns (signatures uint32 (n, num_perm),
    empty bool (n,)): texts with fewer than ``shingle_words`` words have no shingle and an
    all-ones signature; only exact matching applies to them. Memory is the signatures
    (4 * num_perm bytes per text) plus one chunk.
    """
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(
        analyzer="word", ngram_range=(shingle_words, shingle_words), token_pattern=r"(?u)\b\w+\b",
        preprocessor=dedup_form, n_features=1 << 30, alternate_sign=False, norm=None, binary=True,
        dtype=np.float32,
    )
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    texts = list(texts)
    n = len(texts)
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    empty = np.ones(n, dtype=bool)
    block = 8  # permutations per pass: (nnz x 8) uint64 temporaries
    shift = np.uint64(32)
    for start in range(0, n, chunk_size):
        X = hv.transform(texts[start : start + chunk_size])
        counts = np.diff(X.indptr)
        full = np.flatnonzero(counts > 0)
        if full.size == 0:
            continue
        empty[start + full] = False
        starts = X.indptr[:-1][full]
        h = X.indices.astype(np.uint64)[:, None]
        for p in range(0, num_perm, block):
            with np.errstate(over="ignore"):
                perm = ((h * a[None, p : p + block] + b[None, p : p + block]) >> shift).astype(np.uint32)
            sig[start + full, p : p + block] = np.minimum.reduceat(perm, starts, axis=0)
    return sig, empty


def near_duplicates(
    texts: Sequence[str],
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    candidates=None,
    num_perm: int = MINHASH_PERMUTATIONS,
    bands: int = MINHASH_BANDS,
    shingle_words: int = SHINGLE_WORDS,
    seed: int = 0,
):
    """Near-duplicate rows, first occurrence kept. Returns (dup_of int64 (n,): the earlier kept row a
    row duplicates, -1 when kept; similarity float (n,): its estimated Jaccard, NaN when kept).

    MinHash LSH: ``bands`` bands of ``num_perm // bands`` rows; rows sharing a band bucket are
    candidates (each paired with the bucket's first row, so a bucket costs its size, not its size
    squared), and a candidate pair counts only when the share of equal signature entries (the
    Jaccard estimate, standard deviation ~0.04 at 0.8 with 120 permutations) is >= ``threshold``.
    Then, in row order, a row is dropped when it matches an earlier row that was kept. Time and
    memory grow linearly with the number of texts (bounded by ``bands`` candidate pairs per text).
    ``candidates``: bool mask of rows to consider (e.g. not already exact copies); others are kept.
    """
    return _NearIndex(threshold, num_perm=num_perm, bands=bands, shingle_words=shingle_words, seed=seed).add(
        list(texts), candidates)


# ---------------------------------------------------------------------------- streamed loading
STREAM_BATCH_ROWS = 65536  # records checked, deduplicated, token-counted and written together (a row group)
STREAM_BATCH_CHARS = 32 << 20  # ... or fewer, when their texts hold more characters than this
PROGRESS_EVERY = 8192  # records read between two calls of the progress callback


def _digest16(values: Sequence[str]):
    """16-byte blake2b digests (numpy ``S16``) of strings, as UTF-8."""
    return np.array([hashlib.blake2b(v.encode("utf-8", "surrogatepass"), digest_size=16).digest() for v in values],
                    dtype="S16")


class _Rows:
    """Per-row values (numpy ``dtype``, scalars or rows of ``width``) appended in chunks of
    ``chunk`` rows: no copy when it grows and at most one chunk reserved beyond what is stored."""

    def __init__(self, dtype, width: int | None = None, chunk: int = 65536):
        self.dtype, self.shape, self.chunk = dtype, () if width is None else (width,), chunk
        self.chunks: list = []
        self.n = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self.dtype)
        done = 0
        while done < len(values):
            at = self.n % self.chunk
            if at == 0:
                self.chunks.append(np.empty((self.chunk, *self.shape), dtype=self.dtype))
            k = min(self.chunk - at, len(values) - done)
            self.chunks[-1][at : at + k] = values[done : done + k]
            done += k
            self.n += k

    def __getitem__(self, row: int):
        return self.chunks[row // self.chunk][row % self.chunk]

    def __setitem__(self, row: int, value) -> None:
        self.chunks[row // self.chunk][row % self.chunk] = value

    def take(self, rows):
        """The values of ``rows`` (an int array), as one array."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape), dtype=self.dtype)
        which, at = np.divmod(rows, self.chunk)
        for c in np.unique(which).tolist():
            sel = which == c
            out[sel] = self.chunks[c][at[sel]]
        return out


class _KeyIndex:
    """A map from fixed-size keys (``S16`` digests or ``uint64``) to row numbers, kept as a few
    sorted numpy runs (merged when a new run is at least half the size of the one before, so there
    are O(log n) of them): 16 + 8 or 8 + 8 bytes a key, looked up and added a batch at a time."""

    def __init__(self):
        self._runs: list[tuple] = []

    def lookup(self, keys):
        """The row stored for each key, -1 where the key is absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        for k, v in self._runs:
            pos = np.searchsorted(k, keys)
            at = np.minimum(pos, len(k) - 1)
            hit = (pos < len(k)) & (k[at] == keys)
            out[hit] = v[at[hit]]
        return out

    def add(self, keys, rows) -> None:
        """Store keys that are not in the index yet (and unique among themselves)."""
        if len(keys) == 0:
            return
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], np.asarray(rows, dtype=np.int64)[order]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (k2, v2), (k1, v1) = self._runs.pop(), self._runs.pop()
            k, v = np.concatenate([k1, k2]), np.concatenate([v1, v2])
            order = np.argsort(k, kind="stable")
            self._runs.append((k[order], v[order]))

    def first_in_batch(self, keys):
        """(row already stored or -1, index of the first equal key within ``keys``) per key."""
        found = self.lookup(keys)
        if len(keys) == 0:
            return found, found
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return found, first[inverse.reshape(-1)]


class _Ids:
    """The ids of the rows kept so far, as UTF-8 bytes plus an 8-byte end offset each."""

    def __init__(self):
        self._buf = bytearray()
        self._ends = array("q")

    def extend(self, ids: Sequence[str]) -> None:
        for s in ids:
            self._buf += s.encode("utf-8")
            self._ends.append(len(self._buf))

    def __getitem__(self, row: int) -> str:
        start = self._ends[row - 1] if row else 0
        return self._buf[start : self._ends[row]].decode("utf-8")


class _NearIndex:
    """Streamed MinHash LSH near-duplicate detection (see :func:`near_duplicates`): rows arrive in
    batches, in order; each keeps its signature (4 * ``num_perm`` bytes) and, per band, a bucket key
    with the bucket's first row (16 bytes a band), so a row is compared with the first row of each
    bucket it falls in, whatever batch that row came in."""

    def __init__(self, threshold: float, num_perm: int = MINHASH_PERMUTATIONS, bands: int = MINHASH_BANDS,
                 shingle_words: int = SHINGLE_WORDS, seed: int = 0):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], not {threshold}")
        self.threshold, self.num_perm, self.shingle_words, self.seed = threshold, num_perm, shingle_words, seed
        self.r = max(1, num_perm // bands)
        self.n_bands = min(bands, num_perm // self.r)
        self.mult = np.random.default_rng(seed + 1).integers(1, np.iinfo(np.uint64).max, self.r, dtype=np.uint64) | np.uint64(1)
        self.sig = _Rows(np.uint32, num_perm)
        self.dropped = _Rows(bool)
        self.buckets = [_KeyIndex() for _ in range(self.n_bands)]

    def add(self, texts: Sequence[str], candidates=None):
        """Add the next ``len(texts)`` rows; returns (dup_of: earlier kept row or -1, similarity or
        NaN) for them. Rows outside ``candidates`` (bool mask) are kept and never compared."""
        m, r0 = len(texts), self.sig.n
        dup_of = np.full(m, -1, dtype=np.int64)
        similarity = np.full(m, np.nan)
        cand = np.arange(m) if candidates is None else np.flatnonzero(np.asarray(candidates, dtype=bool))
        sig = np.full((m, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        empty = np.ones(m, dtype=bool)
        if cand.size:
            sig[cand], empty[cand] = minhash_signatures([texts[i] for i in cand], num_perm=self.num_perm,
                                                        shingle_words=self.shingle_words, seed=self.seed)
        self.sig.extend(sig)
        self.dropped.extend(np.zeros(m, dtype=bool))
        live = np.flatnonzero(~empty)  # batch rows, ascending: a bucket's first row is its earliest
        rows = r0 + live
        pairs = []
        for band, index in enumerate(self.buckets):
            cols = sig[live, band * self.r : (band + 1) * self.r].astype(np.uint64)
            with np.errstate(over="ignore"):
                key = (cols * self.mult[None, : cols.shape[1]]).sum(axis=1, dtype=np.uint64) ^ np.uint64(band)
            found, first = index.first_in_batch(key)
            head = np.where(found >= 0, found, rows[first])
            same = head != rows
            if same.any():
                pairs.append(np.stack([head[same], rows[same]], axis=1))
            new = (found < 0) & (first == np.arange(live.size))
            index.add(key[new], rows[new])
        if not pairs:
            return dup_of, similarity
        pairs = np.unique(np.concatenate(pairs), axis=0)  # sorted by (i, j); i < j
        sim = np.empty(len(pairs))
        for s in range(0, len(pairs), 65536):
            p = pairs[s : s + 65536]
            sim[s : s + 65536] = (self.sig.take(p[:, 0]) == self.sig.take(p[:, 1])).mean(axis=1)
        ok = sim >= self.threshold - 1e-12
        pairs, sim = pairs[ok], sim[ok]
        order = np.lexsort((pairs[:, 0], pairs[:, 1]))  # by later row, then earlier row
        dropped = self.dropped
        for (i, j), v in zip(pairs[order].tolist(), sim[order].tolist()):
            if not dropped[j] and not dropped[i]:  # j matches an earlier row that was kept
                dropped[j] = True
                dup_of[j - r0] = i
                similarity[j - r0] = v
        return dup_of, similarity


def _corpus_schema(label_columns: Sequence[str]):
    """The Arrow schema of corpus.parquet (pandas metadata included): id, text, the label columns
    (strings, missing = null), n_tokens (int64)."""
    import pandas as pd
    import pyarrow as pa

    frame = pd.DataFrame({"id": pd.Series(["x"], dtype="str"), "text": pd.Series(["x"], dtype="str")})
    for k in label_columns:
        frame[k] = pd.Series([None], dtype="str")
    frame["n_tokens"] = pd.Series([0], dtype="int64")
    return pa.Schema.from_pandas(frame, preserve_index=False)


class _RejectsFile:
    """Rejects written as they come: checks of each record go straight to the file, duplicates
    dropped by ``dedup`` to a spool appended at the end (so the file lists them after the others,
    in row order). Counts, reasons and examples go into the report. ``path`` None: counted only."""

    def __init__(self, report: LoadReport, path):
        self.report, self.path = report, path
        self.reasons: Counter = Counter()
        self.examples = ([], [])  # first messages: record checks, duplicates
        self.files = [None, None]
        self.tmp: list[Path] = []
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            for kind in ("", ".dup"):
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{kind}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                self.tmp.append(Path(tmp))
            self.files = [open(t, "w", encoding="utf-8", errors="backslashreplace") for t in self.tmp]

    def add(self, rejects: Sequence[_Reject], duplicates: bool = False) -> None:
        kind = int(duplicates)
        fh, examples = self.files[kind], self.examples[kind]
        for r in rejects:
            self.reasons[r.category] += 1
            if len(examples) < 20:
                examples.append(r.message())
            if fh is not None:
                fh.write(_reject_line(r))

    def close(self) -> None:
        """Complete the report's reject fields and move the file into place (also after a failure)."""
        self.report.n_rejected = sum(self.reasons.values())
        self.report.reasons = dict(self.reasons)
        self.report.examples = (self.examples[0] + self.examples[1])[:20]
        if self.path is None:
            return
        main, spool = self.files
        try:
            spool.close()
            with open(self.tmp[1], "r", encoding="utf-8") as fh:
                shutil.copyfileobj(fh, main, 1 << 20)
            main.flush()
            os.fsync(main.fileno())
            main.close()
            os.chmod(self.tmp[0], 0o666 & ~UMASK)
            os.replace(self.tmp[0], self.path)
            self.report.rejects_path = str(self.path)
        finally:
            main.close()
            for t in self.tmp:
                t.unlink(missing_ok=True)


def _reject_line(r: _Reject) -> str:
    d = r.to_json()
    try:
        line = json.dumps(d, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested deeper than the encoder follows
        d["record"] = None  # not printable
        line = json.dumps(d, ensure_ascii=False, default=str)
    return line + "\n"


class _Tell:
    """Bytes of the current input file read so far (set by its reader), for progress reports."""

    def __init__(self):
        self.fn = None

    def __call__(self) -> int:
        try:
            return int(self.fn()) if self.fn is not None else 0
        except (OSError, ValueError):  # closed file
            return 0


class _Progress:
    """Calls ``progress(records_read, bytes_read, bytes_total)``: the bytes of the files done plus
    what the current file's reader has read (``tell``, which the reader sets)."""

    def __init__(self, progress, report: LoadReport, total: int):
        self.progress, self.report, self.total = progress, report, total
        self.done = 0
        self.tell = _Tell()

    def __call__(self) -> None:
        if self.progress is not None:
            self.progress(self.report.n_records, min(self.done + self.tell(), self.total), self.total)

    def file_done(self, path: Path) -> None:
        self.done += os.stat(path).st_size
        self.tell.fn = None
        self()


# ---------------------------------------------------------------------------- ingest steps
# Each batch of one file's records goes through small steps, as datatrove's filters do:
# CheckRecords -> DuplicateIds -> DuplicateTexts -> NearDuplicateTexts (dedup="near") -> CountTokens
# -> WriteRows. A step takes a Batch and returns (the rows it keeps, in order, as a Batch; its
# rejects). What a step must remember across batches (digests, signatures, the ledger of rows) it
# keeps itself, so the rows kept and the rejects do not depend on where the batches are cut.
DUPLICATE_CATEGORIES = ("duplicate", "near duplicate")  # dropped copies: the rejects file lists them last


@dataclass(frozen=True)
class Source:
    """One input file as the steps name it."""

    index: int  # position among the inputs
    name: str  # what the report and the rejects call it
    where: str = "line"  # "line" (JSONL, CSV: 1-based) or "row" (Parquet: 0-based)
    stem: str = ""  # what its generated ids start with: "<stem>:<line or row>"

    def at(self, pos: int) -> str:
        return f"{self.name}: {self.where} {pos}"


@dataclass
class Batch:
    """Checked records of one file in reading order, a list per column. ``rows`` is set by
    ``DuplicateIds``: the rows' numbers in the ``Ledger``, by which later steps name earlier rows."""

    source: Source
    seq: list[int] = field(default_factory=list)  # record number over the whole load (orders the rejects)
    pos: list[int] = field(default_factory=list)  # line or row in the file
    records: list[dict] = field(default_factory=list)  # as read (a duplicate id's reject echoes it)
    ids: list[str] = field(default_factory=list)
    generated: list[bool] = field(default_factory=list)  # id made from the file's stem and the position
    texts: list[str] = field(default_factory=list)
    tokens: list = field(default_factory=list)  # read from tokens_field, else None until CountTokens
    labels: dict[str, list] = field(default_factory=dict)  # label field -> values (None: missing)
    rows: np.ndarray | None = None
    chars: int = 0  # characters of the texts

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep) -> "Batch":
        """The rows at the ascending positions ``keep``, as a new batch."""
        keep = np.asarray(keep, dtype=np.int64)
        at = keep.tolist()

        def pick(column):
            return [column[k] for k in at]

        texts = pick(self.texts)
        return Batch(self.source, pick(self.seq), pick(self.pos), pick(self.records), pick(self.ids),
                     pick(self.generated), texts, pick(self.tokens), {k: pick(v) for k, v in self.labels.items()},
                     None if self.rows is None else self.rows[keep], sum(map(len, texts)))


class Ledger:
    """The rows that passed the id check, numbered in reading order over the whole load: each row's
    id, file and position, so that a later reject can name the row it repeats. Per row: the id's
    UTF-8 bytes + 8 (``_Ids``), 8 for the position, 4 for the file."""

    def __init__(self):
        self.ids = _Ids()
        self.pos = _Rows(np.int64)
        self.file = _Rows(np.int32)
        self.sources: dict[int, Source] = {}
        self.n_generated = 0  # rows whose id was generated

    def __len__(self) -> int:
        return self.pos.n

    def add(self, batch: Batch) -> np.ndarray:
        """Append the batch's rows; returns their numbers."""
        r0 = len(self)
        self.sources.setdefault(batch.source.index, batch.source)
        self.ids.extend(batch.ids)
        self.pos.extend(batch.pos)
        self.file.extend(np.full(len(batch), batch.source.index))
        self.n_generated += sum(batch.generated)
        return r0 + np.arange(len(batch), dtype=np.int64)

    def location(self, row: int) -> str:
        """``"<file>: line N"`` (``row N`` for Parquet) of a row."""
        return self.sources[int(self.file[row])].at(int(self.pos[row]))


def _check_record(rec: dict, text_field, id_field, label_fields, tokens_field, label_seen: set):
    """(error or None, id or None, labels, token count) of one parsed record; an error is
    (category, reason). The id is checked for duplicates later, a batch at a time."""
    text = rec.get(text_field)
    if text is None:
        return ("missing text field", f"missing text field {text_field!r}"), None, None, None
    if not isinstance(text, str):
        return ("wrong type", f"wrong type: {text_field!r} is {_typename(text)}, expected a string"), None, None, None
    if not text.strip():
        return ("empty text", f"empty text in {text_field!r}"), None, None, None
    if _has_surrogates(text):
        return ("not UTF-8", f"{text_field!r} is not valid Unicode (lone surrogate)"), None, None, None
    doc_id = None
    if id_field and rec.get(id_field) not in (None, ""):
        doc_id, e = _check_value(rec.get(id_field), id_field)
        if e:
            return (_value_category(e), e), None, None, None
    labs = {}
    for k in label_fields:
        v, e = _check_value(rec.get(k), k)
        if e:
            return (_value_category(e), e), None, None, None
        labs[k] = v
        if k in rec:
            label_seen.add(k)
    ntok = None
    if tokens_field:
        ntok, err = _parse_tokens(rec.get(tokens_field), tokens_field)
        if err is not None:
            return err, None, None, None
    return None, doc_id, labs, ntok


class CheckRecords:
    """Step 1, on the records as read: a record is kept when its reader could read it (UTF-8, JSON
    not nested too deep, an object, a CSV row of the header's width...: the reader's problem
    otherwise) and ``_check_record`` accepts it (a text that is a non-blank valid string; id,
    labels and token count of usable types). A kept record gets its id (generated ones
    ``<stem>:<line or row>``), text, labels and token count. ``label_seen``: the label fields that
    some record holds."""

    def __init__(self, text_field: str = "text", id_field: str | None = "id", label_fields: Sequence[str] = (),
                 tokens_field: str | None = None):
        self.text_field, self.id_field, self.tokens_field = text_field, id_field, tokens_field
        self.label_fields = list(label_fields)
        self.label_seen: set[str] = set()

    def __call__(self, source: Source, records) -> tuple[Batch, list[_Reject]]:
        """``records``: (seq, pos, record, problem) as read; problem is the reader's (category,
        reason, raw record) or None."""
        batch, rejects = self.empty(source), []
        for seq, pos, rec, problem in records:
            reject = self.add(batch, seq, pos, rec, problem)
            if reject is not None:
                rejects.append(reject)
        return batch, rejects

    def empty(self, source: Source) -> Batch:
        return Batch(source, labels={k: [] for k in self.label_fields})

    def add(self, batch: Batch, seq: int, pos: int, rec, problem=None) -> _Reject | None:
        """Check one record: append it to ``batch``, or return its reject."""
        src = batch.source
        if problem is not None:
            return _Reject(src.name, src.where, pos, *problem, seq=seq)
        err, doc_id, labs, ntok = _check_record(rec, self.text_field, self.id_field, self.label_fields,
                                                self.tokens_field, self.label_seen)
        if err is not None:
            return _Reject(src.name, src.where, pos, err[0], err[1], rec, seq=seq)
        text = rec[self.text_field]
        batch.seq.append(seq)
        batch.pos.append(pos)
        batch.records.append(rec)
        batch.ids.append(f"{src.stem}:{pos}" if doc_id is None else doc_id)
        batch.generated.append(doc_id is None)
        batch.texts.append(text)
        batch.tokens.append(ntok)
        for k in self.label_fields:
            batch.labels[k].append(labs[k])
        batch.chars += len(text)
        return None


class DuplicateIds:
    """Step 2: a record whose id an earlier record has (in this batch or an earlier one) is rejected
    (``duplicate id 'x' (first seen at FILE: line N)``); the others join the ledger, which numbers
    them (``Batch.rows``). Memory: 16 + 8 bytes per id (``_KeyIndex``)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.index = _KeyIndex()

    def __call__(self, batch: Batch) -> tuple[Batch, list[_Reject]]:
        keys = _digest16(batch.ids)
        found, first = self.index.first_in_batch(keys)
        ok = (found < 0) & (first == np.arange(len(batch)))
        src, rejects = batch.source, []
        for k in np.flatnonzero(~ok).tolist():
            seen = self.ledger.location(int(found[k])) if found[k] >= 0 else src.at(batch.pos[first[k]])
            rejects.append(_Reject(src.name, src.where, batch.pos[k], "duplicate id",
                                   f"duplicate id {batch.ids[k]!r} (first seen at {seen})", batch.records[k],
                                   seq=batch.seq[k]))
        keep = np.flatnonzero(ok)
        kept = replace(batch) if keep.size == len(batch) else batch.take(keep)
        kept.rows = self.ledger.add(kept)
        self.index.add(keys[keep], kept.rows)
        return kept, rejects


def _copy_reject(batch: Batch, k: int, of: str, category: str = "duplicate", note: str = "",
                 extra: dict | None = None) -> _Reject:
    src = batch.source
    return _Reject(src.name, src.where, batch.pos[k], category, f"duplicate of {of}{note}",
                   {"id": batch.ids[k], "text": batch.texts[k]}, {"duplicate_of": of, **(extra or {})}, seq=batch.seq[k])


class DuplicateTexts:
    """Step 3: exact copies, compared after ``dedup_form`` by a 16-byte digest (``_KeyIndex``:
    16 + 8 bytes per distinct text). The first row of a text is kept; with ``drop`` every later
    copy is rejected (``duplicate of <id>``), without it (dedup "none") kept. Either way the ids
    sharing a text are collected (``duplicate_groups``, for the report)."""

    def __init__(self, ledger: Ledger, drop: bool = True):
        self.ledger, self.drop = ledger, drop
        self.index = _KeyIndex()
        self.groups: dict[int, list[str]] = {}  # first row -> ids sharing its text (texts with copies only)

    def __call__(self, batch: Batch) -> tuple[Batch, list[_Reject]]:
        rows = batch.rows
        keys = text_fingerprints(batch.texts)
        found, first = self.index.first_in_batch(keys)
        first_of = np.where(found >= 0, found, rows[first])
        new = (found < 0) & (first == np.arange(len(batch)))
        self.index.add(keys[new], rows[new])
        copies = np.flatnonzero(first_of != rows).tolist()
        for k in copies:
            f = int(first_of[k])
            self.groups.setdefault(f, [self.ledger.ids[f]]).append(batch.ids[k])
        if not self.drop or not copies:
            return batch, []
        rejects = [_copy_reject(batch, k, self.ledger.ids[int(first_of[k])]) for k in copies]
        return batch.take(np.flatnonzero(first_of == rows)), rejects

    def duplicate_groups(self) -> list[list[str]]:
        """The ids sharing a normalised text, a list per text with copies, in the order of their first rows."""
        return [self.groups[f] for f in sorted(self.groups)]


class NearDuplicateTexts:
    """Step 4 (dedup "near"): a row whose MinHash-estimated Jaccard similarity of word-3-gram
    shingles with an earlier kept row is >= ``threshold`` is rejected (``duplicate of <id> (near:
    estimated Jaccard 0.86 >= 0.8)``); see ``_NearIndex``. The index numbers its rows as the ledger
    does: rows that did not reach this step (exact copies) join it as rows never compared, their
    signature stored like any other (4 * ``MINHASH_PERMUTATIONS`` bytes)."""

    def __init__(self, ledger: Ledger, threshold: float = NEAR_DUPLICATE_THRESHOLD):
        self.ledger, self.threshold = ledger, threshold
        self.index = _NearIndex(threshold)

    def __call__(self, batch: Batch) -> tuple[Batch, list[_Reject]]:
        if not len(batch):
            return batch, []
        at = batch.rows - self.index.sig.n  # rows arrive in ascending order, each once
        texts = [""] * (int(at[-1]) + 1)
        for a, t in zip(at.tolist(), batch.texts):
            texts[a] = t
        candidates = np.zeros(len(texts), dtype=bool)
        candidates[at] = True
        dup_of, similarity = self.index.add(texts, candidates=candidates)
        dup_of, similarity = dup_of[at], similarity[at]
        rejects = []
        for k in np.flatnonzero(dup_of >= 0).tolist():
            sim = float(similarity[k])
            rejects.append(_copy_reject(batch, k, self.ledger.ids[int(dup_of[k])], "near duplicate",
                                        f" (near: estimated Jaccard {sim:.2f} >= {self.threshold:g})",
                                        {"similarity": round(sim, 4)}))
        return (batch.take(np.flatnonzero(dup_of < 0)) if rejects else batch), rejects


class CountTokens:
    """Step 5: each row's token count: the one read from ``tokens_field``, or else counted with the
    model's tokenizer (``gem.embed.count_tokens``, ``model_path``)."""

    def __init__(self, tokens_field: str | None = None, model_path=None):
        self.tokens_field, self.model_path = tokens_field, model_path

    def __call__(self, batch: Batch) -> tuple[Batch, list[_Reject]]:
        if self.tokens_field or not len(batch):
            return batch, []
        return replace(batch, tokens=count_tokens(batch.texts, model_path=self.model_path)), []


class WriteRows:
    """Step 6: hands the rows to ``write`` as one pyarrow Table of the ``_corpus_schema`` of
    ``label_fields`` (``_ParquetSink.write`` for ``ingest``, a list's append for ``load_corpus``)."""

    def __init__(self, write, label_fields: Sequence[str] = ()):
        self.write, self.label_fields = write, list(label_fields)
        self.schema = _corpus_schema(self.label_fields)

    def __call__(self, batch: Batch) -> tuple[Batch, list[_Reject]]:
        import pyarrow as pa  # lazy: see the imports at the top

        if len(batch):
            columns = {"id": batch.ids, "text": batch.texts, **{k: batch.labels[k] for k in self.label_fields},
                       "n_tokens": batch.tokens}
            self.write(pa.Table.from_pydict(columns, schema=self.schema))
        return batch, []


def run_steps(batch: Batch, steps) -> tuple[Batch, list[_Reject]]:
    """Pipe ``batch`` through ``steps`` in order, stopping once no row is left. Returns the rows
    the last step kept and the rejects of every step, step by step."""
    rejects: list[_Reject] = []
    for step in steps:
        if not len(batch):
            break
        batch, out = step(batch)
        rejects.extend(out)
    return batch, rejects


def _by_seq(r: _Reject) -> int:
    return r.seq


def _checked_batches(records, check: CheckRecords, source: Source, batch_size: int):
    """``check`` applied to the records of one file as they are read, in batches of (Batch, its
    rejects): a batch ends at ``batch_size`` kept records, at ``batch_size`` rejects, past
    ``STREAM_BATCH_CHARS`` characters of text, and at the end of the file (the last may be empty)."""
    batch, rejects = check.empty(source), []
    for seq, pos, rec, problem in records:
        reject = check.add(batch, seq, pos, rec, problem)
        if reject is not None:
            rejects.append(reject)
        if len(batch) >= batch_size or len(rejects) >= batch_size or batch.chars >= STREAM_BATCH_CHARS:
            yield batch, rejects
            batch, rejects = check.empty(source), []
    yield batch, rejects


def _numbered(records, report: LoadReport, name: str, tick):
    """A reader's records as (seq, pos, record, problem), ``seq`` their number over the whole load;
    counts them and the CSV records that span several lines in ``report``, and calls ``tick``
    every ``PROGRESS_EVERY`` records."""
    for _where, pos, rec, problem, last in records:
        report.n_records += 1
        if report.n_records % PROGRESS_EVERY == 0:
            tick()
        if last is not None:  # a CSV record whose quoted field spans lines pos..last
            report.n_multiline_records += 1
            if len(report.multiline_examples) < 5:
                report.multiline_examples.append(f"{name}: lines {pos}-{last}")
        yield report.n_records, pos, rec, problem


def _read_file(path: Path, text_field: str, columns: Sequence[str | None], tell: _Tell):
    """The records of one input file, by its reader; ``columns``: those that must not occur twice."""
    suffix = _suffix(path)
    tell.fn = None
    if suffix in (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"):
        return _iter_jsonl(path, gz=suffix.endswith(".gz"), tell=tell)
    if suffix == ".csv":
        return _iter_csv(path, text_field, columns, tell=tell)
    return _iter_parquet(path, text_field, columns, tell=tell)


def _sources(inputs, display_name: str | None = None) -> tuple[list[Path], list[Source]]:
    """The input files and how the steps name them: ``display_name`` (one file only) stands for the
    file's path in the report, the rejects and the generated ids."""
    files = resolve_inputs(inputs)
    stems, names = _id_prefixes(files), [show_path(f) for f in files]
    if display_name is not None:
        if len(files) != 1:
            raise ValueError(f"display_name names one input file, not {len(files)}")
        stems, names = [show_path(_stem(Path(display_name)))], [show_path(display_name)]
    return files, [Source(i, name, "row" if _suffix(f) == ".parquet" else "line", stem)
                   for i, (f, name, stem) in enumerate(zip(files, names, stems))]


def _stream_corpus(inputs, write, *, text_field="text", id_field="id", label_fields=None, tokens_field=None,
                   rejects_path=None, model_path=None, dedup=DEFAULT_DEDUP, near_threshold=NEAR_DUPLICATE_THRESHOLD,
                   progress=None, batch_size=STREAM_BATCH_ROWS, display_name=None):
    """Read ``inputs`` a batch at a time and pipe each batch through the ingest steps, the last
    handing the kept rows to ``write`` (a pyarrow Table of the ``_corpus_schema`` of every label
    field asked for); rejects go to ``rejects_path`` as they come. ``display_name``: the name the
    report, the rejects and the messages give a single input file (an upload's own name, not the
    temporary copy read); generated ids start with its stem. Returns (LoadReport, the corpus
    columns: label fields that occur in no record are left out unless asked for by name). Memory:
    one batch plus the per-row state of the steps (docs/cli.md, ingest)."""
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {', '.join(DEDUP_MODES)}, not {dedup!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    files, sources = _sources(inputs, display_name)
    report = LoadReport(files=[s.name for s in sources], dedup=dedup,
                        near_threshold=float(near_threshold) if dedup == "near" else None)
    labels_explicit = label_fields is not None
    label_fields = list(label_fields) if labels_explicit else list(DEFAULT_LABEL_FIELDS)
    bad_labels = [k for k in label_fields if k in ("id", "text", "n_tokens")]
    if bad_labels:
        raise ValueError(f"label field(s) {bad_labels} clash with the corpus columns id/text/n_tokens")
    ledger = Ledger()
    check = CheckRecords(text_field, id_field, label_fields, tokens_field)
    texts = DuplicateTexts(ledger, drop=dedup != "none")
    steps = [DuplicateIds(ledger), texts, *([NearDuplicateTexts(ledger, near_threshold)] if dedup == "near" else []),
             CountTokens(tokens_field, model_path), WriteRows(write, label_fields)]
    tick = _Progress(progress, report, sum(os.stat(f).st_size for f in files))
    rejects = _RejectsFile(report, rejects_path)
    try:
        for path, source in zip(files, sources):
            records = _numbered(_read_file(path, text_field, [id_field, tokens_field, *label_fields], tick.tell),
                                report, source.name, tick)
            records_before, rows_before, first_problem = report.n_records, len(ledger), None
            for batch, problems in _checked_batches(records, check, source, batch_size):
                kept, out = run_steps(batch, steps)
                problems = sorted(problems + [r for r in out if r.category not in DUPLICATE_CATEGORIES], key=_by_seq)
                copies = sorted((r for r in out if r.category in DUPLICATE_CATEGORIES), key=_by_seq)
                rejects.add(problems)
                rejects.add(copies, duplicates=True)
                first_problem = first_problem or (problems[0].message() if problems else None)
                report.n_accepted += len(kept)
                report.n_duplicates_dropped += len(copies)
                report.n_near_duplicates_dropped += sum(r.category == "near duplicate" for r in copies)
                del batch, problems, kept, out, copies  # so the next batch is read without this one in memory
            tick.file_done(path)
            if len(ledger) == rows_before:
                if report.n_records == records_before:
                    raise CorpusError(f"{source.name}: no records in the file")
                raise CorpusError(f"{source.name}: no record accepted out of {report.n_records - records_before}; "
                                  f"first problem: {first_problem}")
        missing = [k for k in label_fields if k not in check.label_seen] if labels_explicit else []
        if missing:
            raise CorpusError(f"label field(s) {missing} occur in no record of {', '.join(report.files)}; check --label-field")
    except CorpusError as exc:  # the readers name the file they opened: name it as the caller does
        if display_name is None:
            raise
        raise CorpusError(str(exc).replace(show_path(files[0]), sources[0].name)) from None
    finally:
        rejects.close()
    report.n_generated_ids = ledger.n_generated
    report.duplicate_groups = texts.duplicate_groups()
    report.tokens_computed = not tokens_field
    return report, ["id", "text", *[k for k in label_fields if labels_explicit or k in check.label_seen], "n_tokens"]


def load_corpus(
    inputs,
    text_field: str = "text",
    id_field: str | None = "id",
    label_fields: Sequence[str] | None = None,
    tokens_field: str | None = None,
    drop_duplicates: bool | None = None,
    rejects_path: str | os.PathLike | None = None,
    model_path: str | os.PathLike | None = None,
    dedup: str = DEFAULT_DEDUP,
    near_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    progress=None,
    batch_size: int = STREAM_BATCH_ROWS,
    display_name: str | None = None,
):
    """Read, validate and combine corpus files. Returns (pandas.DataFrame, LoadReport).

    inputs: a file, folder or glob (or a list of them). label_fields None = those of
    ``("source", "category")`` that occur. tokens_field None = count tokens with the model's
    tokenizer (``gem.embed.count_tokens``).
    dedup: "exact" (default) drops later copies of a normalised text, "near" also drops texts
    whose estimated word-3-gram Jaccard with an earlier kept text is >= ``near_threshold``, "none"
    keeps them (exact copies are still reported). Dropped rows go to the rejects file with reason
    ``"duplicate of <id>"``. ``drop_duplicates`` is the old switch: True = "exact", False = "none".
    progress: called as ``progress(records_read, bytes_read, bytes_total)`` while reading.
    display_name: what the report and rejects call a single input file (an upload's name).
    The input is read in batches of ``batch_size`` records, as ``ingest`` does, but the frame
    returned holds the whole corpus: use :func:`ingest` for corpora larger than memory.
    """
    import pyarrow as pa

    if drop_duplicates is not None:
        dedup = "exact" if drop_duplicates else "none"
    tables: list = []
    report, columns = _stream_corpus(
        inputs, tables.append, text_field=text_field, id_field=id_field, label_fields=label_fields,
        tokens_field=tokens_field, rejects_path=rejects_path, model_path=model_path, dedup=dedup,
        near_threshold=near_threshold, progress=progress, batch_size=batch_size, display_name=display_name,
    )
    schema = _corpus_schema(columns[2:-1])
    table = pa.concat_tables(tables).select(columns).cast(schema) if tables else schema.empty_table()
    return table.to_pandas(), report


class _ParquetSink:
    """corpus.parquet written as it comes: batches collected into row groups of at least
    ``STREAM_BATCH_ROWS`` rows."""

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        self.path, self.schema = path, schema
        self._fh = open(path, "wb")
        self._writer = pq.ParquetWriter(self._fh, schema)
        self._pending: list = []
        self._rows = 0

    def write(self, table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= STREAM_BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._pending, self._rows = [], 0

    def close(self, columns: Sequence[str]) -> None:
        """Finish the file; label columns left out of ``columns`` are dropped (one more pass)."""
        import pyarrow.parquet as pq

        self._flush()
        self._writer.close()
        self._fh.close()
        if list(columns) == self.schema.names:
            return
        schema = _corpus_schema(columns[2:-1])
        tmp = self.path.with_name(self.path.name + ".cols")
        try:
            with open(self.path, "rb") as src, open(tmp, "wb") as dst:
                pf = pq.ParquetFile(src)
                with pq.ParquetWriter(dst, schema) as writer:
                    for i in range(pf.num_row_groups):
                        writer.write_table(pf.read_row_group(i, columns=list(columns)).cast(schema))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        self._fh.close()


FAILED_REJECTS_NAME = "rejects.failed.jsonl"  # the rejects of the last ingest that failed, in the workspace folder


def ingest(inputs, ws, progress=None, **opts) -> LoadReport:
    """Load ``inputs`` (``load_corpus`` options in ``opts``, e.g. ``dedup=``, ``batch_size=``) and
    write the workspace corpus, its rejects file and the load report (``ingest_report.json``).

    The corpus is streamed: read a batch at a time and written as Parquet row groups, so memory
    does not hold the texts (docs/limits.md says what grows with the input). ``progress``: called
    as ``progress(records_read, bytes_read, bytes_total)`` every few thousand records.
    ``opts["display_name"]``: what the report, the rejects and the messages call a single input
    file (an upload's own name instead of the temporary copy's path).
    All three files are written to temporary files first and moved into place (one rename each)
    only when the whole ingest succeeded, so a failed ingest leaves the workspace's corpus, rejects
    and report exactly as they were. The rejects of a failed attempt go to ``rejects.failed.jsonl``
    (named in the error); a later successful ingest removes that file."""
    drop_duplicates = opts.pop("drop_duplicates", None)
    if drop_duplicates is not None:  # the old switch, as load_corpus takes it
        opts["dedup"] = "exact" if drop_duplicates else "none"
    root = Path(ws.root)
    failed = root / FAILED_REJECTS_NAME
    label_fields = opts.get("label_fields")
    # leaving the with block renames rejects, then the report, then the corpus (the innermost first)
    try:
        return _ingest_files(inputs, ws, failed, label_fields, progress, opts)
    except OSError as exc:  # out of space: the corpus is what was being written (the innermost file saw it first)
        if is_disk_full(exc):
            raise disk_full(exc, ws.corpus_path) from exc
        raise


def _ingest_files(inputs, ws, failed: Path, label_fields, progress, opts) -> LoadReport:
    with atomic_path(ws.corpus_path, suffix=".parquet") as corpus_tmp, \
            atomic_path(ingest_report_path(ws)) as report_tmp, atomic_path(ws.rejects_path) as rejects_tmp:
        sink = _ParquetSink(corpus_tmp, _corpus_schema(list(label_fields) if label_fields is not None
                                                       else list(DEFAULT_LABEL_FIELDS)))
        try:
            report, columns = _stream_corpus(inputs, sink.write, rejects_path=rejects_tmp, progress=progress, **opts)
        except CorpusError as exc:
            sink.abort()
            if rejects_tmp.exists() and rejects_tmp.stat().st_size:
                os.replace(rejects_tmp, failed)
                raise CorpusError(f"{exc} (the rejects of this attempt: {show_path(failed)})") from None
            raise
        except BaseException:
            sink.abort()
            raise
        sink.close(columns)
        report.rejects_path = show_path(ws.rejects_path)
        write_json_atomic(report_tmp, report.to_dict())
    failed.unlink(missing_ok=True)
    return report


def ingest_report_path(ws) -> Path:
    return Path(ws.root) / INGEST_REPORT_NAME


def read_ingest_report(ws) -> LoadReport | None:
    """The report of the ingest that wrote this workspace's corpus, or None (older workspace, sample)."""
    path = ingest_report_path(ws)
    if not path.exists():
        return None
    try:
        return LoadReport.from_dict(read_json(path))
    except (ValueError, TypeError, OSError):
        return None


def ingest_file(path, parent, display_name: str | None = None, dedup: str = DEFAULT_DEDUP, progress=None, **opts):
    """Ingest one corpus file into its own workspace under ``parent``, named after the file
    (``display_name`` for uploads), its content hash and the dedup mode, so each (file, mode) is
    ingested once; the report and the rejects name the file ``display_name`` too (an upload's
    name, not the temporary copy's path). ``progress``: as for :func:`ingest`. Returns (Workspace, LoadReport, or None
    when that workspace already existed)."""
    path = Path(path)
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {', '.join(DEDUP_MODES)}, not {dedup!r}")
    if not path.is_file():
        raise CorpusError(f"{show_path(path)}: no such file")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(display_name or path.name).stem)[:40] or "corpus"
    name = f"{stem}-{file_sha256(path)[:10]}-{dedup}"
    if opts:  # other columns chosen: another workspace
        name += "-" + hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:6]
    ws = Workspace(Path(parent) / validate_name(name, "workspace name"))
    if ws.has_corpus():
        return ws, None
    created = not ws.root.exists()
    ws.root.mkdir(parents=True, exist_ok=True)
    try:
        return ws, ingest([str(path)], ws, dedup=dedup, progress=progress, display_name=display_name, **opts)
    except BaseException:
        if created:  # a failed ingest leaves no half-made workspace behind
            shutil.rmtree(ws.root, ignore_errors=True)
        raise
