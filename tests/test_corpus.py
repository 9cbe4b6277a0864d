"""Corpus loading: good files in every format, and each broken case with its message and reject."""
from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gem.corpus import (
    CorpusError, dedup_form, ingest, ingest_file, load_corpus, near_duplicates, read_ingest_report,
)
from gem.store import Workspace


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def read_rejects(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


GOOD = [
    {"id": "d1", "text": "The cat sat on the mat.", "source": "web", "category": "pets", "n": 6},
    {"id": "d2", "text": "Stock markets fell sharply on Monday.", "source": "news", "category": "finance", "n": 7},
    {"id": "d3", "text": "Photosynthesis converts light into chemical energy.", "source": "web", "category": "science", "n": 7},
]


def test_reads_every_format_from_a_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", GOOD[:1])
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(GOOD[1]) + "\n")
    pd.DataFrame([GOOD[2]]).to_csv(folder / "c.csv", index=False)
    pq.write_table(pa.Table.from_pylist([{"text": "A row without an id.", "source": "pq", "category": "misc", "n": 5}]),
                   folder / "d.parquet")
    (folder / "notes.txt").write_text("ignored: not a corpus extension inside a folder")

    frame, report = load_corpus(folder, tokens_field="n", rejects_path=tmp_path / "rejects.jsonl")

    assert list(frame.columns) == ["id", "text", "source", "category", "n_tokens"]
    assert frame["id"].tolist() == ["d1", "d2", "d3", "d:0"]  # Parquet rows are 0-based
    assert frame["source"].tolist() == ["web", "news", "web", "pq"]
    assert frame["n_tokens"].tolist() == [6, 7, 7, 5]
    assert report.n_records == 4 and report.n_accepted == 4 and report.n_rejected == 0
    assert report.n_generated_ids == 1 and len(report.files) == 4
    assert read_rejects(tmp_path / "rejects.jsonl") == []


def test_glob_and_computed_token_counts(tmp_path):
    write_jsonl(tmp_path / "x1.jsonl", GOOD[:2])
    write_jsonl(tmp_path / "x2.jsonl", [{"text": "no id here"}])
    frame, report = load_corpus(str(tmp_path / "x*.jsonl"), label_fields=["source"])
    assert frame["id"].tolist() == ["d1", "d2", "x2:1"]  # JSONL lines are 1-based
    assert report.tokens_computed
    # MiniLM WordPiece: every word here is in the vocabulary, so tokens >= words
    words = frame["text"].str.split().str.len()
    assert (frame["n_tokens"] >= words).all() and (frame["n_tokens"] <= 3 * words).all()
    assert frame["source"].isna().tolist() == [False, False, True]


BROKEN_JSONL = [
    # (line content, category, message fragment)
    (b'{"id": "x", "text": "caf\xe9 au lait"}', "not UTF-8", "not UTF-8 (byte 0xe9"),
    (b'{"id": "x", "text": "unterminated}', "invalid JSON", "invalid JSON"),
    (b'["a", "list"]', "not a JSON object", "expected a JSON object per line, got list"),
    (b'{"id": "x", "body": "no text field"}', "missing text field", "missing text field 'text'"),
    (b'{"id": "x", "text": "   "}', "empty text", "empty text"),
    (b'{"id": "x", "text": {"nested": 1}}', "wrong type", "'text' is an object, expected a string"),
    (b'{"id": ["x"], "text": "list id"}', "wrong type", "'id' is a list"),
    (b'{"id": "x", "text": "bad label", "source": {"a": 1}}', "wrong type", "'source' is an object"),
    (b'{"id": "d1", "text": "same id as line 1"}', "duplicate id", "duplicate id 'd1' (first seen at"),
]


@pytest.mark.parametrize("line,category,fragment", BROKEN_JSONL, ids=[c[1] + str(i) for i, c in enumerate(BROKEN_JSONL)])
def test_broken_jsonl_record_is_rejected_with_reason(tmp_path, line, category, fragment):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + line + b"\n" + json.dumps(GOOD[1]).encode() + b"\n")
    rejects_path = tmp_path / "rejects.jsonl"

    frame, report = load_corpus(path, rejects_path=rejects_path)

    assert frame["id"].tolist() == ["d1", "d2"]  # the good rows around it survive
    assert report.n_rejected == 1 and report.reasons == {category: 1}
    assert report.examples[0].startswith(f"{path}: line 2: ") and fragment in report.examples[0]
    (rej,) = read_rejects(rejects_path)
    assert rej["file"] == str(path) and rej["line"] == 2 and fragment in rej["reason"]
    assert rej["record"] is not None  # the raw record is kept (as text when it did not parse)
    if category == "not UTF-8":
        assert "\\xe9" in rej["record"]


def test_csv_rows_and_missing_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(
        b'id,text,source\n'
        b'a,"A quoted, multi\nline text",web\n'   # lines 2-3
        b'b,too,many,fields\n'                     # line 4
        b'c,,web\n'                                # line 5: empty text
        b'd,r\xe9sum\xe9,web\n'                    # line 6: Latin-1
        b'e,Fine text,news\n'                      # line 7
    )
    rejects_path = tmp_path / "rej.jsonl"
    frame, report = load_corpus(path, rejects_path=rejects_path)
    assert frame["id"].tolist() == ["a", "e"]
    assert frame["text"][0] == "A quoted, multi\nline text"
    rejects = read_rejects(rejects_path)
    assert [(r["line"], r["reason"].split(" (")[0]) for r in rejects] == [
        (4, "4 fields but the header has 3"), (5, "empty text in 'text'"), (6, "not UTF-8; re-encode the file as UTF-8"),
    ]
    assert report.reasons == {"wrong number of fields": 1, "empty text": 1, "not UTF-8": 1}

    bad = tmp_path / "nocol.csv"
    bad.write_text("id,body\n1,hello\n")
    with pytest.raises(CorpusError, match=r"nocol\.csv: no column 'text' in the CSV header .*--text-field"):
        load_corpus(bad)


def test_parquet_whole_file_problems(tmp_path):
    p = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"body": ["x"]}), p)
    with pytest.raises(CorpusError, match=r"nocol\.parquet: no column 'text'"):
        load_corpus(p)
    p2 = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), p2)
    with pytest.raises(CorpusError, match=r"ints\.parquet: column 'text' has type int64, expected strings"):
        load_corpus(p2)
    p3 = tmp_path / "garbage.parquet"
    p3.write_bytes(b"this is not parquet")
    with pytest.raises(CorpusError, match=r"garbage\.parquet: cannot read as Parquet"):
        load_corpus(p3)


def test_whole_file_errors_name_the_file(tmp_path):
    with pytest.raises(CorpusError, match=r"missing\.jsonl: no such file or folder"):
        load_corpus(tmp_path / "missing.jsonl")
    (tmp_path / "corpus.txt").write_text("hello")
    with pytest.raises(CorpusError, match=r"corpus\.txt: unknown file type; use one of"):
        load_corpus(tmp_path / "corpus.txt")
    with pytest.raises(CorpusError, match=r"the pattern matches no"):
        load_corpus(str(tmp_path / "nothing*.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match=r"empty\.jsonl: no records in the file"):
        load_corpus(tmp_path / "empty.jsonl")
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join(json.dumps(g) for g in GOOD * 200) + "\n").encode())[:300])
    with pytest.raises(CorpusError, match=r"cut\.jsonl\.gz: unreadable after line \d+ .*corrupt or truncated"):
        load_corpus(gz, tokens_field="n")


def test_no_row_accepted_raises_but_keeps_the_rejects(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": ""}, {"body": "x"}])
    rejects_path = tmp_path / "rej.jsonl"
    with pytest.raises(CorpusError, match=r"bad\.jsonl: no record accepted out of 2; first problem: .*line 1: empty text"):
        load_corpus(path, rejects_path=rejects_path)
    assert [r["line"] for r in read_rejects(rejects_path)] == [1, 2]


def test_tokens_field_validation(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"text": "one", "n": 3}, {"text": "two", "n": "4"}, {"text": "three", "n": -1},
        {"text": "four", "n": 2.5}, {"text": "five", "n": "many"}, {"text": "six"},
    ])
    frame, report = load_corpus(path, tokens_field="n", rejects_path=tmp_path / "r.jsonl")
    assert frame["n_tokens"].tolist() == [3, 4]
    reasons = [r["reason"] for r in read_rejects(tmp_path / "r.jsonl")]
    assert reasons[:3] == [
        "wrong type: 'n' is -1, expected a non-negative integer",
        "wrong type: 'n' is 2.5, expected a non-negative integer",
        "wrong type: 'n' is 'many', expected a non-negative integer",
    ]
    assert reasons[3] == "missing 'n'"


def test_duplicate_texts_reported_and_dropped_on_request(tmp_path):
    recs = [{"id": f"r{i}", "text": t} for i, t in enumerate(["alpha", "beta", "alpha", "gamma", "alpha", "beta"])]
    path = write_jsonl(tmp_path / "dup.jsonl", recs)
    frame, report = load_corpus(path, tokens_field=None, dedup="none")
    assert len(frame) == 6  # reported, kept with dedup="none"
    assert sorted(map(sorted, report.duplicate_groups)) == [["r0", "r2", "r4"], ["r1", "r5"]]
    assert report.n_duplicate_texts == 3 and report.n_duplicates_dropped == 0
    assert "kept (dedup none)" in report.summary()

    for kwargs in ({}, {"dedup": "exact"}, {"drop_duplicates": True}):  # exact is the default
        frame, report = load_corpus(path, rejects_path=tmp_path / "r.jsonl", **kwargs)
        assert frame["id"].tolist() == ["r0", "r1", "r3"]
        assert report.n_duplicates_dropped == 3 and report.n_rejected == 3 and report.reasons == {"duplicate": 3}
        assert report.n_records == report.n_accepted + report.n_rejected == 6
        dropped = read_rejects(tmp_path / "r.jsonl")
        assert [(r["line"], r["record"]["id"], r["reason"]) for r in dropped] == [
            (3, "r2", "duplicate of r0"), (5, "r4", "duplicate of r0"), (6, "r5", "duplicate of r1"),
        ]
        assert all(r["file"] == str(path) and r["duplicate_of"] in ("r0", "r1") for r in dropped)


def test_exact_duplicates_compare_normalised_text(tmp_path):
    texts = [
        "Terms of Service: by using this site you agree.",
        "terms   of service: BY USING this site\tyou agree.\n",  # case and whitespace
        "Ｔｅｒｍｓ of Service: by using this site you agree.",  # fullwidth letters (NFKC)
        "Terms of Service: by using this site you agree!",  # different punctuation: not exact
        "A different document altogether.",
    ]
    path = write_jsonl(tmp_path / "n.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])
    frame, report = load_corpus(path, tokens_field=None, rejects_path=tmp_path / "r.jsonl")
    assert frame["id"].tolist() == ["t0", "t3", "t4"]
    assert report.duplicate_groups == [["t0", "t1", "t2"]]
    rejects = read_rejects(tmp_path / "r.jsonl")
    assert [(r["file"], r["line"], r["reason"]) for r in rejects] == [
        (str(path), 2, "duplicate of t0"), (str(path), 3, "duplicate of t0"),
    ]
    assert dedup_form(texts[2]) == dedup_form(texts[0]) == "terms of service: by using this site you agree."


def _words(rng, n):
    return [f"w{int(i)}" for i in rng.integers(0, 5000, n)]


def test_near_duplicates_dropped_first_kept_with_rejects_lines(tmp_path):
    rng = np.random.default_rng(1)
    base = _words(rng, 80)
    edited = base.copy()
    edited[40] = "changed"  # one word in 80: 3 of 78 shingles differ, Jaccard 75/81 = 0.93
    far = base.copy()
    far[10:30] = _words(rng, 20)  # a quarter rewritten: Jaccard ~0.6, kept
    others = [" ".join(_words(rng, 60)) for _ in range(30)]
    texts = others[:10] + [" ".join(base), " ".join(far)] + others[10:20] + [" ".join(edited).upper()] + others[20:]
    recs = [{"id": f"n{i}", "text": t} for i, t in enumerate(texts)]
    path = write_jsonl(tmp_path / "near.jsonl", recs)
    frame, report = load_corpus(path, tokens_field=None, dedup="near", rejects_path=tmp_path / "r.jsonl")
    assert report.n_records == report.n_accepted + report.n_rejected == len(texts)
    assert report.n_near_duplicates_dropped == 1 and report.reasons == {"near duplicate": 1}
    assert "n22" not in set(frame["id"]) and {"n10", "n11"} <= set(frame["id"])
    (rej,) = read_rejects(tmp_path / "r.jsonl")
    assert rej["file"] == str(path) and rej["line"] == 23 and rej["duplicate_of"] == "n10"
    assert rej["reason"].startswith("duplicate of n10 (near: estimated Jaccard ") and rej["similarity"] >= 0.8
    assert "near duplicates (word 3-gram Jaccard >= 0.8, MinHash): 1 dropped" in report.summary()
    # exact dedup keeps the edited copy; a stricter threshold too
    frame, _ = load_corpus(path, tokens_field=None, dedup="exact")
    assert len(frame) == len(texts)
    frame, _ = load_corpus(path, tokens_field=None, dedup="near", near_threshold=0.99)
    assert len(frame) == len(texts)


def test_near_duplicates_recall_precision_and_first_occurrence_kept():
    rng = np.random.default_rng(2)
    texts = [" ".join(_words(rng, int(rng.integers(40, 120)))) for _ in range(3000)]
    planted = {}
    for j in range(3000, 3200):  # copies with one word replaced: Jaccard >= 0.87
        src = int(rng.integers(0, 3000))
        w = texts[src].split()
        w[int(rng.integers(0, len(w)))] = "edit"
        texts.append(" ".join(w))
        planted[j] = src
    dup_of, sim = near_duplicates(texts)
    found = {int(i): int(dup_of[i]) for i in np.flatnonzero(dup_of >= 0)}
    assert set(found) <= set(planted)  # no unrelated text dropped, no first occurrence dropped
    assert len(found) >= 0.97 * len(planted)  # MinHash LSH misses at most a few
    assert all(found[j] == planted[j] for j in found)  # the original, not an earlier dropped copy
    assert np.nanmin(sim) >= 0.8


def test_dedup_mode_is_checked(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", GOOD)
    with pytest.raises(ValueError, match="dedup must be one of"):
        load_corpus(path, tokens_field="n", dedup="fuzzy")


def test_ingest_file_names_the_workspace_by_content_and_dedup(tmp_path):
    path = write_jsonl(tmp_path / "my corpus.jsonl", GOOD + [GOOD[0] | {"id": "copy"}])
    ws, report = ingest_file(path, tmp_path / "spaces", tokens_field="n")
    assert ws.root.parent == tmp_path / "spaces" and "-exact-" in ws.root.name  # + a hash of the options
    assert ws.root.name.startswith("my_corpus-") and report.n_accepted == 3 and report.n_rejected == 1
    assert read_ingest_report(ws).to_dict() == report.to_dict()  # persisted for the app
    again, none = ingest_file(path, tmp_path / "spaces", tokens_field="n", progress=print)
    assert again.root == ws.root and none is None  # a progress callback is no loader option
    calls = []
    with_progress, report = ingest_file(path, tmp_path / "spaces", dedup="none", tokens_field="n",
                                        progress=lambda *a: calls.append(a))
    assert with_progress.root.name.endswith("-none-" + ws.root.name.rsplit("-", 1)[1]) and calls[-1][0] == 4
    shutil.rmtree(with_progress.root)
    kept, report = ingest_file(path, tmp_path / "spaces", dedup="none", tokens_field="n")
    assert kept.root != ws.root and report.n_accepted == 4
    plain, _ = ingest_file(path, tmp_path / "spaces")  # other loader options: another workspace
    assert plain.root.name.endswith("-exact") and plain.root != ws.root


def test_peek_columns_of_every_format(tmp_path):
    from gem.corpus import CorpusError, peek_columns

    (tmp_path / "a.jsonl").write_text('{"body": "x", "key": 1}\n{bad\n{"body": "y", "genre": "z"}\n')
    (tmp_path / "a.csv").write_text("\ufeffbody,key\nx,1\n", encoding="utf-8")
    pd.DataFrame({"t": ["a"], "u": [1]}).to_parquet(tmp_path / "a.parquet")
    assert peek_columns(tmp_path / "a.jsonl") == ["body", "key", "genre"]
    assert peek_columns(tmp_path / "a.csv") == ["body", "key"]
    assert peek_columns(tmp_path / "a.parquet") == ["t", "u"]
    for name, data in (("e.csv", ""), ("e.jsonl", "[1]\n"), ("e.txt", "x")):
        (tmp_path / name).write_text(data)
        with pytest.raises(CorpusError, match=name):
            peek_columns(tmp_path / name)


def test_generated_ids_stable_and_unique_across_same_stems(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_jsonl(tmp_path / sub / "part.jsonl", [{"text": f"doc from {sub}"}])
    f1, _ = load_corpus(tmp_path, tokens_field=None)
    f2, _ = load_corpus(tmp_path, tokens_field=None)
    assert f1["id"].tolist() == f2["id"].tolist() == ["a/part.jsonl:1", "b/part.jsonl:1"]


def test_label_field_that_never_occurs_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", GOOD)
    with pytest.raises(CorpusError, match=r"label field\(s\) \['topic'\] occur in no record"):
        load_corpus(path, label_fields=["topic"], tokens_field="n")


def test_ingest_writes_workspace_files(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", GOOD + [{"text": ""}])
    ws = Workspace(tmp_path / "ws")
    report = ingest(path, ws, tokens_field="n")
    assert report.n_accepted == 3 and report.n_rejected == 1
    stored = ws.load_corpus()
    assert stored["id"].tolist() == ["d1", "d2", "d3"] and stored["n_tokens"].dtype == "int64"
    assert len(read_rejects(ws.rejects_path)) == 1
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".")]  # no temp files left behind


# ---------------------------------------------------------------------------- hostile and broken input found by an audit
def _counts_add_up(report):
    assert report.n_accepted + report.n_rejected == report.n_records


def test_deep_nesting_and_huge_numbers_are_per_record_rejects(tmp_path):
    deep = '{"id": "deep", "text": "too deep", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    huge = '{"id": "huge", "text": "huge int", "n": ' + "7" * 4301 + "}"
    lines = [
        json.dumps(GOOD[0] | {"n": 6}), deep, huge,
        json.dumps({"id": "big", "text": "64-bit overflow", "n": 10**30}),
        '{"id": "inf", "text": "float overflow", "n": 1e400}',
        '{"id": "nan", "text": "not a number", "n": NaN}',
        json.dumps(GOOD[1] | {"n": 7}),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    frame, report = load_corpus(path, tokens_field="n", rejects_path=tmp_path / "r.jsonl")
    assert frame["id"].tolist() == ["d1", "d2"] and frame["n_tokens"].tolist() == [6, 7]
    _counts_add_up(report)
    rejects = {r["line"]: r for r in read_rejects(tmp_path / "r.jsonl")}
    assert sorted(rejects) == [2, 3, 4, 5, 6]
    assert rejects[2]["reason"].startswith("nested too deep") and rejects[2]["file"] == str(path)
    assert rejects[3]["reason"].startswith("number too large (an integer of more than 4,300 digits)")
    assert "number too large" in rejects[4]["reason"] and "number too large" in rejects[5]["reason"]
    assert "wrong type" in rejects[6]["reason"]
    assert report.reasons == {"nested too deep": 1, "number too large": 3, "wrong type": 1}

    # the same through the CLI, gzipped: exit 0, the summary names both, no traceback
    from gem.cli import main

    gz = tmp_path / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert main(["ingest", str(gz), "-w", str(tmp_path / "ws"), "--tokens-field", "n"]) == 0


def test_huge_numbers_in_csv_token_counts(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,n\nfine,3\nlong digits," + "9" * 5000 + "\nexponent,1e400\nbig,99999999999999999999\n"
                    "exact,9007199254740993\n", encoding="utf-8")
    frame, report = load_corpus(path, tokens_field="n", rejects_path=tmp_path / "r.jsonl")
    assert frame["n_tokens"].tolist() == [3, 9007199254740993]  # integers are read exactly, not via float
    assert [r["line"] for r in read_rejects(tmp_path / "r.jsonl")] == [3, 4, 5]
    assert report.reasons == {"number too large": 3}


def test_cli_ingest_of_a_deeply_nested_line_exits_0_with_the_reject(tmp_path, capsys):
    from gem.cli import main

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n" + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    assert main(["ingest", str(path), "-w", str(tmp_path / "ws"), "--tokens-field", "n"]) == 0
    out = capsys.readouterr().out
    assert "1 accepted, 1 rejected" in out and "line 2: nested too deep" in out


def test_same_stem_different_suffix_gets_distinct_generated_ids(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", [{"text": "first json doc"}, {"text": "second json doc"}])
    (tmp_path / "data.csv").write_text("text\nfirst csv doc\n", encoding="utf-8")  # line 2, like the JSON's 2nd
    frame, report = load_corpus(tmp_path, tokens_field=None)
    assert frame["id"].tolist() == ["data.csv:2", "data.jsonl:1", "data.jsonl:2"]
    assert report.n_rejected == 0 and report.n_generated_ids == 3


STRAY_UNCLOSED = 'id,text\n1,one\n2,"two\n3,three\n4,four\n5,five\n6,six\n'  # the quote never closes
STRAY_CLOSED = 'id,text\n1,one\n2,"two\n3,three\n4,four"\n5,five\n6,six\n'  # a second stray quote closes it


@pytest.mark.parametrize("content", [STRAY_UNCLOSED, STRAY_CLOSED], ids=["unclosed", "closed"])
def test_csv_stray_quote_rejects_its_line_and_keeps_the_rows_after_it(tmp_path, content):
    path = tmp_path / "s.csv"
    path.write_text(content, encoding="utf-8")
    frame, report = load_corpus(path, tokens_field=None, rejects_path=tmp_path / "r.jsonl")
    assert frame["id"].tolist() == ["1", "3", "4", "5", "6"]
    assert report.n_records == 6 and report.n_rejected == 1 and report.reasons == {"stray quote": 1}
    (rej,) = read_rejects(tmp_path / "r.jsonl")
    assert rej["line"] == 3 and rej["reason"].startswith("stray quote: a quoted field opened on this line runs to line")
    assert rej["record"] == '2,"two'


def test_csv_quoted_line_breaks_are_kept_and_counted(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('id,text,source\na,"first line\nsecond line",web\nb,plain,news\n', encoding="utf-8")
    frame, report = load_corpus(path, tokens_field=None)
    assert frame["text"].tolist() == ["first line\nsecond line", "plain"]
    assert report.n_multiline_records == 1 and report.multiline_examples == [f"{path}: lines 2-3"]
    assert "1 CSV record(s) hold a quoted line break" in report.summary()


def test_csv_empty_rows_are_rejects(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("id,text\n1,one\n\n   \n,\n2,two\n", encoding="utf-8")
    frame, report = load_corpus(path, tokens_field=None, rejects_path=tmp_path / "r.jsonl")
    assert frame["id"].tolist() == ["1", "2"]
    assert [(r["line"], r["reason"]) for r in read_rejects(tmp_path / "r.jsonl")] == [
        (3, "empty row (no field holds anything)"), (4, "empty row (no field holds anything)"),
        (5, "empty row (no field holds anything)"),
    ]
    _counts_add_up(report)


def test_non_utf8_file_name_is_shown_escaped(tmp_path, capsys):
    import os

    from gem.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.jsonl"
    with open(raw, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "a document"}) + "\n{broken\n")
    frame, report = load_corpus(folder, tokens_field=None, rejects_path=tmp_path / "r.jsonl")
    assert frame["id"].tolist() == ["caf\\xe9:1"]
    assert report.files == [f"{folder}/caf\\xe9.jsonl"]
    assert read_rejects(tmp_path / "r.jsonl")[0]["file"] == f"{folder}/caf\\xe9.jsonl"
    assert main(["ingest", str(folder), "-w", str(tmp_path / "ws")]) == 0
    assert "caf\\xe9.jsonl: line 2: invalid JSON" in capsys.readouterr().out


def test_a_column_read_twice_is_named(tmp_path):
    (tmp_path / "d.csv").write_text("id,text,text\n1,one,uno\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"d\.csv: column 'text' appears twice in the header"):
        load_corpus(tmp_path / "d.csv")
    (tmp_path / "i.csv").write_text("id,text,id\n1,one,2\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"column 'id' appears twice"):
        load_corpus(tmp_path / "i.csv")
    table = pa.Table.from_arrays([pa.array(["a b"]), pa.array(["c d"])], names=["text", "text"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(CorpusError, match=r"d\.parquet: column 'text' appears twice"):
        load_corpus(tmp_path / "d.parquet")


def test_dictionary_encoded_parquet_strings_are_read(tmp_path):
    path = tmp_path / "dict.parquet"
    texts = pa.array(["alpha beta", "gamma delta", "epsilon zeta"]).dictionary_encode()
    sources = pa.array(["web", "news", "web"]).dictionary_encode()
    pq.write_table(pa.table({"text": texts, "source": sources, "n": [2, 2, 2]}), path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("text").type)
    frame, report = load_corpus(path, tokens_field="n")
    assert frame["text"].tolist() == ["alpha beta", "gamma delta", "epsilon zeta"]
    assert frame["source"].tolist() == ["web", "news", "web"] and report.n_rejected == 0


def test_failed_ingest_leaves_the_workspace_as_it_was(tmp_path):
    from gem.corpus import ingest_report_path

    ws = Workspace(tmp_path / "ws")
    good = write_jsonl(tmp_path / "good.jsonl", GOOD + [{"text": ""}])
    ingest(good, ws, tokens_field="n")
    files = [ws.corpus_path, ws.rejects_path, ingest_report_path(ws)]
    before = [p.read_bytes() for p in files]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": ""}, {"body": "no text"}])
    with pytest.raises(CorpusError, match=r"no record accepted out of 2") as failure:
        ingest(bad, ws, tokens_field="n")
    assert [p.read_bytes() for p in files] == before  # corpus, rejects and report untouched
    assert str(failure.value).endswith(f"(the rejects of this attempt: {ws.root / 'rejects.failed.jsonl'})")
    assert [r["line"] for r in read_rejects(ws.root / "rejects.failed.jsonl")] == [1, 2]
    with pytest.raises(CorpusError):
        ingest(tmp_path / "missing.jsonl", ws)
    assert [p.read_bytes() for p in files] == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".")]  # no temp files left behind
    ingest(good, ws, tokens_field="n")  # a later success clears the failed attempt's rejects
    assert not (ws.root / "rejects.failed.jsonl").exists()


def test_cli_ingest_turns_an_unforeseen_error_into_one_line(tmp_path, monkeypatch, capsys):
    import gem.corpus
    from gem.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("something no reader foresaw")

    path = write_jsonl(tmp_path / "in.jsonl", GOOD)
    monkeypatch.setattr(gem.corpus, "_stream_corpus", broken)
    monkeypatch.delenv("GEM_DEBUG", raising=False)
    assert main(["ingest", str(path), "-w", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gem ingest: error: unexpected RuntimeError while reading the input")
    assert not (tmp_path / "ws").exists()  # nothing written, not even the folder it made
    monkeypatch.setenv("GEM_DEBUG", "1")
    with pytest.raises(RuntimeError):  # GEM_DEBUG=1 shows the traceback
        main(["ingest", str(path), "-w", str(tmp_path / "ws")])


# ---------------------------------------------------------------------------- streaming
def _multi_file_input(folder):
    """Three files, 26 records: copies of one text across files and batches, an id repeated in
    another file, rejects of every stage, 'category' only in the last file, 'source' nowhere."""
    folder.mkdir()
    a = [{"id": f"a{i}", "text": f"alpha document number {i} about cats"} for i in range(10)]
    a[4]["text"] = ""  # empty text: a reject read in the first file
    a[7]["text"] = "  ALPHA document number 2   about CATS "  # a copy of a2 after normalisation
    write_jsonl(folder / "a.jsonl", a + ["{broken"])
    pd.DataFrame({"id": [f"b{i}" for i in range(8)] + ["a3"],  # a3: the id of a record in a.jsonl
                  "text": [f"beta text {i} on dogs" for i in range(7)] + ["alpha document number 2 about cats",
                                                                           "a repeated id"]}).to_csv(folder / "b.csv", index=False)
    pq.write_table(pa.table({"text": [f"gamma row {i} about birds" for i in range(5)] + ["beta text 3 on dogs"],
                             "category": ["x", None, "y", "x", "y", "z"]}), folder / "c.parquet")
    return folder


def test_streamed_ingest_over_files_and_batches_matches_expectations(tmp_path):
    folder = _multi_file_input(tmp_path / "in")
    results = []
    for batch_size in (1, 2, 3, 1000):
        ws = Workspace(tmp_path / f"ws{batch_size}")
        report = ingest(folder, ws, tokens_field=None, batch_size=batch_size)
        frame = ws.load_corpus()
        rejects = read_rejects(ws.rejects_path)
        results.append((frame, {**report.to_dict(), "rejects_path": None}, rejects))
        assert list(frame.columns) == ["id", "text", "category", "n_tokens"]  # 'source' occurs nowhere
        assert frame["id"].tolist() == [f"a{i}" for i in (0, 1, 2, 3, 5, 6, 8, 9)] + [f"b{i}" for i in range(7)] + [
            "c:0", "c:1", "c:2", "c:3", "c:4"]
        assert frame["category"].isna().tolist() == [True] * 15 + [False, True, False, False, False]
        assert frame["category"].dropna().tolist() == ["x", "y", "x", "y"]
        assert report.n_records == 26 == report.n_accepted + report.n_rejected and report.n_accepted == 20
        assert report.reasons == {"empty text": 1, "invalid JSON": 1, "duplicate id": 1, "duplicate": 3}
        assert [(r["file"].rsplit("/", 1)[-1], r.get("line", r.get("row")), r["reason"].split(" (")[0]) for r in rejects] == [
            ("a.jsonl", 5, "empty text in 'text'"), ("a.jsonl", 11, "invalid JSON"),
            ("b.csv", 10, "duplicate id 'a3'"),  # checks of each record first, in reading order ...
            ("a.jsonl", 8, "duplicate of a2"), ("b.csv", 9, "duplicate of a2"),  # ... then dropped copies, in row order
            ("c.parquet", 5, "duplicate of b3"),
        ]
        assert "first seen at" in rejects[2]["reason"] and "a.jsonl: line 4" in rejects[2]["reason"]
        assert report.duplicate_groups == [["a2", "a7", "b7"], ["b3", "c:5"]]
        assert (frame["n_tokens"] >= frame["text"].str.split().str.len()).all()
        assert pq.ParquetFile(ws.corpus_path).schema_arrow.names == list(frame.columns)
    for frame, report, rejects in results[1:]:  # the batch size changes nothing that is written
        pd.testing.assert_frame_equal(frame, results[0][0])
        assert report == results[0][1] and rejects == results[0][2]
    frame, report = load_corpus(folder, batch_size=2)  # the in-memory loader streams the same way
    pd.testing.assert_frame_equal(frame, results[0][0])


def test_streamed_near_duplicates_across_batches_and_files_equal_the_whole_list(tmp_path):
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(400)]
    base = [" ".join(rng.choice(vocab, 40)) for _ in range(30)]
    texts = []
    for t in base:  # each text, then a copy with one word changed further down (Jaccard ~0.86)
        texts.append(t)
    for i, t in enumerate(base[:12]):
        w = t.split()
        w[20] = f"edit{i}"
        texts.append(" ".join(w))
    rng.shuffle(texts[10:])
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "p1.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts[:20])])
    write_jsonl(tmp_path / "in" / "p2.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts) if i >= 20])
    dup_of, _ = near_duplicates(texts)
    expected = [f"t{i}" for i in range(len(texts)) if dup_of[i] < 0]
    assert len(expected) < len(texts) - 6  # the test has near copies to find
    for batch_size in (4, 1000):
        frame, report = load_corpus(tmp_path / "in", dedup="near", tokens_field=None, batch_size=batch_size)
        assert frame["id"].tolist() == expected
        assert report.n_near_duplicates_dropped == len(texts) - len(expected) == report.n_rejected


def test_failed_ingest_mid_stream_leaves_the_old_corpus(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ingest(write_jsonl(tmp_path / "good.jsonl", GOOD), ws, tokens_field="n")
    before = ws.corpus_path.read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"id": f"x{i}", "text": f"document {i} is fine", "n": 3} for i in range(50)])
    gz = folder / "b.jsonl.gz"  # truncated: unreadable after rows that were already read
    gz.write_bytes(gzip.compress("".join(json.dumps({"text": f"later {i} row", "n": 3}) + "\n" for i in range(5000)).encode())[:2000])
    progress = []
    with pytest.raises(CorpusError, match=r"b\.jsonl\.gz: unreadable after line \d+"):
        ingest(folder, ws, tokens_field="n", batch_size=8, progress=lambda *a: progress.append(a))
    assert progress and progress[-1][0] >= 50  # batches of the first file were written before the failure
    assert ws.corpus_path.read_bytes() == before
    assert not [p for p in ws.root.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_progress_is_reported_monotonically_up_to_the_total(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    n = 20_000
    write_jsonl(folder / "a.jsonl", [{"text": f"document {i}", "n": 2} for i in range(n)])
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"text": f"more {i}", "n": 2}) + "\n" for i in range(n)))
    pd.DataFrame({"text": [f"csv {i}" for i in range(n)], "n": 2}).to_csv(folder / "c.csv", index=False)
    pq.write_table(pa.table({"text": [f"pq {i}" for i in range(n)], "n": [2] * n}), folder / "d.parquet", row_group_size=5000)
    calls = []
    report = ingest(folder, Workspace(tmp_path / "ws"), tokens_field="n", progress=lambda *a: calls.append(a))
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert report.n_accepted == 4 * n and len(calls) >= 8  # several calls per file
    records, done, totals = (np.array(c) for c in zip(*calls))
    assert (np.diff(records) >= 0).all() and (np.diff(done) >= 0).all() and set(totals) == {total}
    assert records[-1] == 4 * n and done[-1] == total
    assert ((done > 0) & (done < total)).sum() >= 4  # progress inside the files, not only at their ends


def test_an_upload_is_reported_under_its_own_name_and_says_at_column_once(tmp_path):
    """The Home page ingests an upload from a temporary copy: the report, the rejects and the
    messages name the uploaded file, never the copy's path; json's "... starting at" message
    gives one "at column", not "at at column"."""
    tmp = tmp_path / "tmpabc123"
    tmp.mkdir()
    path = tmp / "copy.jsonl"
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + json.dumps({"text": "no id here"}).encode()
                     + b'\n{"id": "x", "text": "unterminated')  # the last line, with no line break
    ws, report = ingest_file(path, tmp_path / "spaces", display_name="my upload.jsonl", tokens_field=None)
    assert report.files == ["my upload.jsonl"]
    assert report.examples == [report.examples[0]] and report.examples[0].startswith("my upload.jsonl: line 3: invalid JSON")
    assert "at at" not in report.summary() and "starting at column" in report.summary()
    assert str(tmp) not in json.dumps(read_ingest_report(ws).to_dict())
    (rej,) = read_rejects(ws.rejects_path)
    assert rej["file"] == "my upload.jsonl" and rej["line"] == 3
    assert "at at" not in rej["reason"] and "at column" in rej["reason"]
    assert pd.read_parquet(ws.corpus_path)["id"].tolist() == ["d1", "my upload:2"]  # generated from the upload's name
    empty = tmp / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(CorpusError) as err:
        ingest_file(empty, tmp_path / "spaces", display_name="mine.jsonl")
    assert str(err.value) == "mine.jsonl: no records in the file"
    bad = tmp / "bad.csv"
    bad.write_text("body\nx\n")
    with pytest.raises(CorpusError) as err:
        ingest_file(bad, tmp_path / "spaces", display_name="theirs.csv")
    assert str(tmp) not in str(err.value) and str(err.value).startswith("theirs.csv: no column 'text'")
