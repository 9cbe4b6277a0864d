"""Property test: `gem ingest` on generated corpus files of every format never lets an exception
out of ``gem.cli.main``, exits 0 or 2 as predicted, and accounts for every record.

Each example writes one to three files (JSONL, JSONL.gz, CSV, Parquet; stems that collide across
suffixes, a non-UTF-8 file name sometimes, a whole-file breakage sometimes) whose rows are drawn
from per-format kinds: valid records and broken ones (nesting ~3,000-8,000 deep, integers past
Python's 4,300-digit limit, token counts past int64, bad UTF-8, wrong types, empty text, duplicate
ids, invalid JSON, stray CSV quotes, empty CSV rows, wrong CSV widths). The generator knows
which records must be accepted, so the check is exact:

- exit 2 with one line on stderr exactly when a file is broken or has no accepted record, and
  then the workspace holds nothing;
- otherwise exit 0, records read = the generated records, accepted + rejected = records read, the
  rejects file lists exactly the expected (file, line / row) pairs, and the corpus holds the
  accepted records in input order (explicit ids kept, generated ids ending in ``:<line or row>``);
- ``gem.corpus.load_corpus`` on the same files agrees.

One known ambiguity is kept out of the generator: a CSV file with stray quotes holds no genuine
multi-line (quoted line break) record, and a file with a stray quote that a later stray quote
closes holds no wrong-width row, because such a merge is valid CSV in which the rows cannot be
told from text (see ``gem.corpus._iter_csv``).

``benchmarks/bench_fuzz.py`` runs the same property on thousands of examples and prints counts.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gem.cli import main
from gem.corpus import CorpusError, load_corpus

FORMATS = ("jsonl", "jsonl.gz", "csv", "parquet")
JSON_OK = ("valid", "valid_no_id", "valid_nested", "int_id", "long_int_id")
JSON_BAD = ("empty_text", "blank_text", "missing_text", "text_int", "text_list", "label_object", "invalid_json",
            "not_object", "too_deep", "huge_int", "tokens_too_large", "tokens_nan", "tokens_negative", "bad_utf8",
            "dup_id")
CSV_OK = ("valid", "valid_no_id", "valid_comma", "stray_close", "multiline")
CSV_BAD = ("empty_text", "empty_row", "blank_row", "commas_row", "extra_field", "tokens_word", "tokens_digits",
           "bad_utf8", "dup_id", "stray_open")
PARQUET_OK = ("valid", "valid_no_id")
PARQUET_BAD = ("null_text", "empty_text", "tokens_null", "tokens_negative", "dup_id")


def _weighted(ok: tuple, bad: tuple) -> tuple:
    """About two valid rows for each broken one (so most examples ingest and their checks run)."""
    return ("valid",) * len(bad) + ok * (len(bad) // len(ok) or 1) + bad


KINDS = {"jsonl": _weighted(JSON_OK, JSON_BAD + ("blank_line",)), "jsonl.gz": _weighted(JSON_OK, JSON_BAD + ("blank_line",)),
         "csv": _weighted(CSV_OK, CSV_BAD), "parquet": _weighted(PARQUET_OK, PARQUET_BAD)}
ACCEPTED = set(JSON_OK) | set(CSV_OK) | set(PARQUET_OK)
STEMS = ("data", "part", "caf\udce9")  # the last one is the bytes b"caf\xe9": not UTF-8

CSV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters='"\r\n,'), max_size=20)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@dataclass
class FileSpec:
    fmt: str
    stem: str
    broken: bool
    rows: list  # (kind, text tail, token count, source label or None)
    dictionary: bool = False  # Parquet: dictionary-encoded text and source columns


@st.composite
def corpus_files(draw):
    files, names = [], set()
    for i in range(draw(st.integers(1, 3))):
        fmt = draw(st.sampled_from(FORMATS))
        stem = draw(st.sampled_from(STEMS))
        if (stem, fmt) in names:
            stem = f"{stem}{i}"
        names.add((stem, fmt))
        text = CSV_TEXT if fmt == "csv" else ANY_TEXT
        row = st.tuples(st.sampled_from(KINDS[fmt]), text, st.integers(0, 10**6),
                        st.sampled_from([None, "web", "news"]))
        broken = draw(st.sampled_from((False,) * 15 + (True,)))  # a whole-file problem now and then
        files.append(FileSpec(fmt, stem, broken, draw(st.lists(row, min_size=1, max_size=12)), draw(st.booleans())))
    return files


# ---------------------------------------------------------------------------- writing + expectations
@dataclass
class Expected:
    path: Path
    records: int = 0
    rejected: set = field(default_factory=set)  # positions (line or row)
    accepted: list = field(default_factory=list)  # (position, explicit id or None)
    fails: bool = False  # the whole ingest stops at this file (exit 2)


def _csv_rules(kinds: list[str]) -> list[str]:
    """Keep the generator clear of the CSV ambiguity described in the module docstring."""
    stray = {"stray_open", "stray_close"} & set(kinds)
    out = []
    for k in kinds:
        if k == "multiline" and stray:
            k = "valid"
        if k == "extra_field" and stray == {"stray_open", "stray_close"}:
            k = "valid"
        out.append(k)
    return out


def write_files(specs: list[FileSpec], folder: Path) -> list[Expected]:
    ids: list[str] = []  # explicit ids accepted so far (a duplicate repeats one of them)
    out = []
    serial = 0
    for spec in specs:
        suffix = spec.fmt
        path = folder / f"{spec.stem}.{suffix}"
        exp = Expected(path)
        kinds = [r[0] for r in spec.rows]
        if spec.fmt == "csv":
            kinds = _csv_rules(kinds)
        body: list = []
        pos = 1 if spec.fmt != "parquet" else 0
        if spec.fmt == "csv":
            pos = 2  # line 1 is the header
        for kind, tail, n, source in ((k, *r[1:]) for k, r in zip(kinds, spec.rows)):
            serial += 1
            if kind == "dup_id" and not ids:
                kind = "valid"
            doc_id = ids[serial % len(ids)] if kind == "dup_id" else f"doc-{serial}"
            text = f"row {serial}: {tail}"
            explicit = None if kind == "valid_no_id" else doc_id
            if kind == "int_id":
                explicit = str(10**20 + serial)
            if kind == "long_int_id":
                explicit = str(10**4000 + serial)
            if spec.fmt in ("jsonl", "jsonl.gz"):
                line = _json_line(kind, doc_id, text, n, source, explicit)
                body.append(line)
                if kind == "blank_line":
                    pos += 1
                    continue
                height = 1
            elif spec.fmt == "csv":
                line = _csv_line(kind, doc_id, text, n, source)
                body.append(line)
                height = line.count(b"\n") + 1
            else:
                body.append(_parquet_row(kind, doc_id, text, n, source))
                height = 1
            exp.records += 1
            if kind in ACCEPTED:
                exp.accepted.append((pos, explicit))
                if explicit is not None:
                    ids.append(explicit)
            else:
                exp.rejected.add(pos)
            pos += height
        exp.fails = spec.broken or not exp.accepted
        _write(spec, path, body)
        out.append(exp)
    return out


def _json_line(kind, doc_id, text, n, source, explicit) -> bytes:
    rec = {"id": doc_id, "text": text, "n": n}
    if source is not None:
        rec["source"] = source
    if kind in ("valid_no_id",):
        del rec["id"]
    if kind == "blank_line":
        return b"   "
    special = {
        "int_id": lambda: rec.update(id=int(explicit)),
        "long_int_id": lambda: rec.update(id=int(explicit)),
        "valid_nested": lambda: rec.update(extra=json.loads("[" * 30 + "]" * 30)),
        "empty_text": lambda: rec.update(text=""),
        "blank_text": lambda: rec.update(text=" \t "),
        "missing_text": lambda: rec.pop("text"),
        "text_int": lambda: rec.update(text=n),
        "text_list": lambda: rec.update(text=[text]),
        "label_object": lambda: rec.update(source={"name": "web"}),
        "tokens_too_large": lambda: rec.update(n=10**25 + n),
        "tokens_negative": lambda: rec.update(n=-1 - n),
    }
    if kind in special:
        special[kind]()
    line = json.dumps(rec, ensure_ascii=False)
    if kind == "invalid_json":
        return line[:-1].encode()
    if kind == "not_object":
        return json.dumps([rec]).encode()
    if kind == "too_deep":
        depth = 3000 + n % 5000
        return (line[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == "huge_int":
        return (line[:-1] + ', "x": ' + "7" * (4301 + n % 300) + "}").encode()
    if kind == "tokens_nan":
        return line.replace(f'"n": {n}', '"n": NaN').encode()
    if kind == "bad_utf8":
        return line.encode().replace(b"row ", b"r\xf6w ", 1)  # Latin-1
    return line.encode()


def _csv_line(kind, doc_id, text, n, source) -> bytes:
    src = source or ""
    lines = {
        "valid": f"{doc_id},{text},{n},{src}",
        "dup_id": f"{doc_id},{text},{n},{src}",
        "valid_no_id": f",{text},{n},{src}",
        "valid_comma": f'{doc_id},"{text}, and more",{n},{src}',
        "stray_close": f'{doc_id},{text}",{n},{src}',  # a literal quote: accepted as part of the text
        "multiline": f'{doc_id},"{text}\nsecond line of it",{n},{src}',
        "empty_text": f"{doc_id},,{n},{src}",
        "empty_row": "",
        "blank_row": "   ",
        "commas_row": ",,,",
        "extra_field": f"{doc_id},{text},{n},{src},extra",
        "tokens_word": f"{doc_id},{text},many,{src}",
        "tokens_digits": f"{doc_id},{text},{'9' * 5000},{src}",
        "stray_open": f'{doc_id},"{text},{n},{src}',  # the quote never closes on its line
    }
    if kind == "bad_utf8":
        return f"{doc_id},{text},{n},{src}".encode().replace(b"row ", b"r\xf6w ", 1)
    return lines[kind].encode()


def _parquet_row(kind, doc_id, text, n, source) -> dict:
    row = {"id": doc_id, "text": text, "n": n, "source": source}
    row.update({"valid_no_id": {"id": None}, "null_text": {"text": None}, "empty_text": {"text": " "},
                "tokens_null": {"n": None}, "tokens_negative": {"n": -n - 1}}.get(kind, {}))
    return row


def _write(spec: FileSpec, path: Path, body: list) -> None:
    raw_path = os.fsencode(path)
    if spec.fmt == "parquet":
        if spec.broken:
            data = b"PAR1 this is not a Parquet file"
        else:
            cols = {c: [r[c] for r in body] for c in ("id", "text", "n", "source")}
            table = pa.table({"id": pa.array(cols["id"], pa.string()), "text": pa.array(cols["text"], pa.string()),
                              "n": pa.array(cols["n"], pa.int64()), "source": pa.array(cols["source"], pa.string())})
            if spec.dictionary:
                table = table.set_column(1, "text", table["text"].dictionary_encode())
                table = table.set_column(3, "source", table["source"].dictionary_encode())
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            data = sink.getvalue().to_pybytes()
    elif spec.fmt == "csv":
        header = b"id,text,text,source" if spec.broken else b"id,text,n,source"  # broken: a column twice
        data = b"\n".join([header, *body]) + (b"\n" if body else b"")
    else:
        data = b"\n".join(body) + (b"\n" if body else b"")
        if spec.fmt == "jsonl.gz":
            data = gzip.compress(data, mtime=0)
            if spec.broken:
                data = data[: max(0, len(data) - 12)]  # truncated: end-of-stream marker and more cut off
        elif spec.broken:
            data = b""  # no record at all
    with open(raw_path, "wb") as fh:
        fh.write(data)


# ---------------------------------------------------------------------------- the property
def _shown(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_ingest(specs: list[FileSpec], stats: Counter | None = None) -> None:
    """Write the files, run `gem ingest` through main() and load_corpus; assert the property."""
    with tempfile.TemporaryDirectory(prefix="gem-fuzz-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        expected = write_files(specs, folder)
        ws = Path(tmp) / "ws"
        out, err = io.StringIO(), io.StringIO()
        argv = ["ingest", *[str(e.path) for e in expected], "-w", str(ws), "--tokens-field", "n", "--json"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)  # an exception escaping main fails the example
        fails = any(e.fails for e in expected)
        if stats is not None:
            stats["examples"] += 1
            stats[f"exit {rc}"] += 1
            for spec in specs:
                stats[f"files {spec.fmt}"] += 1
                stats["files broken"] += spec.broken
        if fails:
            assert rc == 2, out.getvalue()
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("gem ingest: error: "), err.getvalue()
            # nothing in place: no folder (a failed ingest takes back the one it made), or only the rejects
            assert not ws.exists() or not [p.name for p in ws.iterdir() if not p.name == "rejects.failed.jsonl"]
            with pytest.raises(CorpusError):
                load_corpus([str(e.path) for e in expected], tokens_field="n")
            return
        assert rc == 0, err.getvalue()
        report = json.loads(out.getvalue())
        n_records = sum(e.records for e in expected)
        n_rejected = sum(len(e.rejected) for e in expected)
        assert report["n_records"] == n_records
        assert report["n_accepted"] + report["n_rejected"] == report["n_records"]
        assert report["n_rejected"] == n_rejected, report["reasons"]
        with open(ws / "rejects.jsonl", encoding="utf-8") as fh:
            rejects = [json.loads(line) for line in fh]
        got = sorted((r["file"], r.get("line", r.get("row"))) for r in rejects)
        assert got == sorted((_shown(e.path), p) for e in expected for p in e.rejected)
        corpus = pq.read_table(ws / "corpus.parquet").to_pandas()
        wanted = [(e, p, i) for e in expected for p, i in e.accepted]
        assert len(corpus) == len(wanted) and corpus["id"].is_unique
        for doc_id, (e, p, explicit) in zip(corpus["id"], wanted):
            assert doc_id == explicit if explicit is not None else doc_id.endswith(f":{p}"), (doc_id, explicit, p)
        frame, again = load_corpus([str(e.path) for e in expected], tokens_field="n")
        assert frame["id"].tolist() == corpus["id"].tolist() and again.n_rejected == n_rejected
        if stats is not None:
            stats["records"] += n_records
            stats["accepted"] += report["n_accepted"]
            stats["rejected"] += report["n_rejected"]
            for reason, count in report["reasons"].items():
                stats[f"reject: {reason}"] += count


FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(corpus_files())
def test_ingest_accounts_for_every_record_and_never_raises(specs):
    check_ingest(specs)
