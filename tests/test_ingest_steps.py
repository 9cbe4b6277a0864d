"""The ingest steps of ``gem.corpus`` one at a time, on tiny hand-made batches, and a property:
running them batch by batch, with any batch size, keeps the same rows and rejects the same records
(same file, line and reason) as running them on each file in one batch."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gem.corpus import (
    NESTED_TOO_DEEP, Batch, CheckRecords, CountTokens, DuplicateIds, DuplicateTexts, Ledger, NearDuplicateTexts,
    Source, WriteRows, run_steps,
)
from gem.embed import count_tokens

A = Source(0, "a.jsonl", "line", "a")
B = Source(1, "b.parquet", "row", "b")


def raw(records, start_seq=1, first_pos=1):
    """(seq, pos, record, problem) as the driver hands records to CheckRecords."""
    return [(start_seq + i, first_pos + i, rec, None) for i, rec in enumerate(records)]


def checked(source, records, **kw):
    batch, rejects = CheckRecords(**kw)(source, raw(records))
    assert rejects == []
    return batch


def where(rejects):
    return [(r.file, r.where, r.pos, r.reason) for r in rejects]


# ---------------------------------------------------------------------------- CheckRecords
def test_check_keeps_good_records_and_rejects_the_others_with_file_and_line():
    check = CheckRecords(label_fields=["source"], tokens_field="n")
    records = [
        {"id": "x", "text": "a fine text", "source": "web", "n": 3},
        {"text": "   ", "n": 1},  # blank text
        {"id": "y", "n": 2},  # no text
        {"id": "z", "text": 7, "n": 2},  # not a string
        {"text": "no id here", "n": "4"},  # id generated from the stem and the line
        {"id": "w", "text": "bad count", "n": -1},
        {"id": ["list"], "text": "bad id", "n": 1},
    ]
    batch, rejects = check(A, raw(records))
    assert batch.ids == ["x", "a:5"] and batch.generated == [False, True]
    assert batch.texts == ["a fine text", "no id here"] and batch.tokens == [3, 4]
    assert batch.labels == {"source": ["web", None]} and batch.pos == [1, 5] and batch.seq == [1, 5]
    assert batch.chars == len("a fine text") + len("no id here") and batch.rows is None
    assert check.label_seen == {"source"}
    assert [(r.file, r.where, r.pos, r.category) for r in rejects] == [
        ("a.jsonl", "line", 2, "empty text"), ("a.jsonl", "line", 3, "missing text field"),
        ("a.jsonl", "line", 4, "wrong type"), ("a.jsonl", "line", 6, "wrong type"), ("a.jsonl", "line", 7, "wrong type"),
    ]
    assert rejects[0].reason == "empty text in 'text'"
    assert rejects[0].to_json() == {"file": "a.jsonl", "line": 2, "reason": "empty text in 'text'",
                                    "record": {"text": "   ", "n": 1}}
    assert [r.seq for r in rejects] == [2, 3, 4, 6, 7]


def test_check_passes_on_what_the_reader_could_not_read():
    problem = ("nested too deep", NESTED_TOO_DEEP, "[[[[")
    surrogate = {"id": "s", "text": "caf\udce9"}
    batch, rejects = CheckRecords()(B, [(1, 0, None, problem), (2, 1, surrogate, None), (3, 2, {"text": "ok"}, None)])
    assert batch.ids == ["b:2"]  # Parquet rows are 0-based
    assert where(rejects) == [("b.parquet", "row", 0, NESTED_TOO_DEEP),
                              ("b.parquet", "row", 1, "'text' is not valid Unicode (lone surrogate)")]
    assert rejects[0].record == "[[[[" and rejects[0].to_json()["row"] == 0


# ---------------------------------------------------------------------------- DuplicateIds
def test_a_duplicate_id_inside_one_batch():
    ledger = Ledger()
    kept, rejects = DuplicateIds(ledger)(checked(A, [{"id": "x", "text": "one"}, {"id": "y", "text": "two"},
                                                     {"id": "x", "text": "three"}]))
    assert kept.ids == ["x", "y"] and kept.rows.tolist() == [0, 1] and len(ledger) == 2
    assert where(rejects) == [("a.jsonl", "line", 3, "duplicate id 'x' (first seen at a.jsonl: line 1)")]
    assert rejects[0].category == "duplicate id" and rejects[0].record == {"id": "x", "text": "three"}


def test_a_duplicate_id_across_batches_and_files_names_where_it_was_first_seen():
    ledger = Ledger()
    ids = DuplicateIds(ledger)
    first, _ = ids(checked(A, [{"id": "x", "text": "one"}, {"text": "two"}]))
    second, rejects = ids(Batch(A, [3], [9], [{}], ["x"], [False], ["again"], [None], {}, None, 5))
    assert second.ids == [] and where(rejects) == [("a.jsonl", "line", 9, "duplicate id 'x' (first seen at a.jsonl: line 1)")]
    third, rejects = ids(checked(B, [{"id": "a:2", "text": "clash with a generated id"}, {"id": "z", "text": "new"}]))
    assert where(rejects) == [("b.parquet", "row", 1, "duplicate id 'a:2' (first seen at a.jsonl: line 2)")]
    assert third.ids == ["z"] and third.rows.tolist() == [2]  # rows are numbered over the whole load
    assert [ledger.ids[r] for r in range(len(ledger))] == ["x", "a:2", "z"] and ledger.n_generated == 1
    assert ledger.location(2) == "b.parquet: row 2"


# ---------------------------------------------------------------------------- DuplicateTexts
def _ids_then(step, ids_step, source, records):
    kept, rejects = ids_step(checked(source, records))
    assert rejects == []
    return step(kept)


def test_exact_copies_are_dropped_after_normalising_within_and_across_batches():
    ledger = Ledger()
    ids, texts = DuplicateIds(ledger), DuplicateTexts(ledger)
    kept, rejects = _ids_then(texts, ids, A, [{"id": "x", "text": "The cat sat."}, {"id": "y", "text": "the  CAT sat."},
                                             {"id": "z", "text": "A dog."}])
    assert kept.ids == ["x", "z"] and kept.rows.tolist() == [0, 2]
    assert where(rejects) == [("a.jsonl", "line", 2, "duplicate of x")]
    assert rejects[0].category == "duplicate" and rejects[0].extra == {"duplicate_of": "x"}
    assert rejects[0].record == {"id": "y", "text": "the  CAT sat."}
    kept, rejects = _ids_then(texts, ids, B, [{"id": "w", "text": "a dog."}, {"id": "v", "text": "the cat sat."}])
    assert kept.ids == [] and where(rejects) == [("b.parquet", "row", 1, "duplicate of z"), ("b.parquet", "row", 2, "duplicate of x")]
    assert texts.duplicate_groups() == [["x", "y", "v"], ["z", "w"]]


def test_dedup_none_keeps_the_copies_and_still_groups_them():
    ledger = Ledger()
    texts = DuplicateTexts(ledger, drop=False)
    kept, rejects = _ids_then(texts, DuplicateIds(ledger), A, [{"id": "x", "text": "same"}, {"id": "y", "text": "SAME"}])
    assert kept.ids == ["x", "y"] and rejects == [] and texts.duplicate_groups() == [["x", "y"]]


# ---------------------------------------------------------------------------- NearDuplicateTexts
WORDS = [f"word{i}" for i in range(200)]


def _text(seed: int, n: int = 40) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, n))


def _edited(text: str, k: int = 20) -> str:
    words = text.split()
    words[k] = "edited"
    return " ".join(words)


def test_a_near_duplicate_is_dropped_across_batches_with_its_similarity():
    ledger = Ledger()
    steps = [DuplicateIds(ledger), DuplicateTexts(ledger), NearDuplicateTexts(ledger, 0.8)]
    base, other = _text(1), _text(2)
    kept, rejects = run_steps(checked(A, [{"id": "x", "text": base}, {"id": "y", "text": other},
                                          {"id": "y2", "text": _edited(other)}]), steps)
    assert kept.ids == ["x", "y"] and len(rejects) == 1
    (r,) = rejects
    assert (r.file, r.pos, r.category, r.extra["duplicate_of"]) == ("a.jsonl", 3, "near duplicate", "y")
    assert r.reason.startswith("duplicate of y (near: estimated Jaccard ") and r.reason.endswith(" >= 0.8)")
    assert 0.8 <= r.extra["similarity"] < 1
    # next batch: an exact copy (dropped before the near step) ahead of a near copy of the first text
    kept, rejects = run_steps(checked(B, [{"id": "c", "text": other}, {"id": "z", "text": _edited(base, 5)},
                                          {"id": "n", "text": _text(3)}]), steps)
    assert kept.ids == ["n"] and kept.rows.tolist() == [5]
    assert [(r.pos, r.category, r.extra["duplicate_of"]) for r in rejects] == [(1, "duplicate", "y"),
                                                                              (2, "near duplicate", "x")]


def test_near_step_numbers_its_rows_as_the_ledger_does():
    """Rows dropped before the near step leave gaps in the batch's rows; the next near copy still
    names the right earlier row."""
    ledger = Ledger()
    ids, exact, near = DuplicateIds(ledger), DuplicateTexts(ledger), NearDuplicateTexts(ledger)
    texts = [_text(i) for i in range(4)]
    run_steps(checked(A, [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)] + [{"id": "c", "text": texts[0]}]),
              [ids, exact, near])
    kept, rejects = run_steps(checked(A, [{"id": "e", "text": _edited(texts[3])}]), [ids, exact, near])
    assert kept.ids == [] and rejects[0].extra["duplicate_of"] == "t3"
    assert near.index.sig.n == 6 == len(ledger)


# ---------------------------------------------------------------------------- CountTokens, WriteRows
def test_token_counts_are_read_or_counted_with_the_tokenizer():
    batch = checked(A, [{"text": "hello world", "n": 5}, {"text": "tokenization is fun", "n": 2}], tokens_field="n")
    assert CountTokens("n")(batch) == (batch, []) and batch.tokens == [5, 2]
    counted, rejects = CountTokens()(checked(A, [{"text": "hello world"}, {"text": "tokenization is fun"}]))
    assert rejects == [] and counted.tokens.tolist() == count_tokens(["hello world", "tokenization is fun"]).tolist()


def test_write_hands_one_table_of_the_corpus_schema_per_batch():
    tables = []
    write = WriteRows(tables.append, ["source"])
    batch = checked(A, [{"id": "x", "text": "one", "source": "web", "n": 1}, {"text": "two", "n": 2}],
                    label_fields=["source"], tokens_field="n")
    assert write(batch) == (batch, [])
    write(Batch(A, labels={"source": []}))  # nothing to write: no table
    (table,) = tables
    assert table.schema.names == ["id", "text", "source", "n_tokens"]
    assert table.schema.field("n_tokens").type == pa.int64()
    assert table.to_pydict() == {"id": ["x", "a:2"], "text": ["one", "two"], "source": ["web", None], "n_tokens": [1, 2]}


def test_run_steps_stops_when_no_row_is_left():
    calls = []

    def spy(batch):
        calls.append(len(batch))
        return batch, []

    steps = [DuplicateIds(Ledger()), spy]
    run_steps(checked(A, [{"id": "x", "text": "t"}]), steps)
    kept, rejects = run_steps(checked(A, [{"id": "x", "text": "u"}]), steps)
    assert calls == [1] and len(kept) == 0 and [r.category for r in rejects] == ["duplicate id"]


# ---------------------------------------------------------------------------- property
BASES = [_text(100 + i, 12) for i in range(4)]
KIND = st.sampled_from(["new", "new", "copy", "loud copy", "near", "near", "far", "empty", "no text", "number",
                        "unreadable"])


@st.composite
def corpora(draw):
    """One or two files of records: explicit ids from a small pool (so some repeat) or none; texts
    that are new, exact copies of a few base texts (also in other case and spacing), near copies
    (a word added: shingle Jaccard 10/11), far ones (a middle word changed: 7/13), or broken."""
    files = []
    for f in range(draw(st.integers(1, 2))):
        recs = []
        for k in range(draw(st.integers(0, 14))):
            kind, base = draw(KIND), BASES[draw(st.integers(0, len(BASES) - 1))]
            rid = draw(st.one_of(st.none(), st.integers(0, 24).map("i{}".format)))
            text = {"new": _text(1000 + 100 * f + k, 12), "copy": base, "loud copy": f" {base.upper()}  ",
                    "near": f"{base} {draw(st.sampled_from(WORDS))}", "far": _edited(base, 5), "empty": " ",
                    "number": 3}.get(kind)
            rec = {} if rid is None else {"id": rid}
            if text is not None:
                rec["text"] = text
            recs.append((rec, ("invalid JSON", "invalid JSON (x)", "{") if kind == "unreadable" else None))
        files.append(recs)
    return files


def _run(files, sizes, dedup):
    """Kept ids and every reject as (seq, category, JSON line), the steps run on batches of
    ``sizes[file]`` records."""
    ledger = Ledger()
    check = CheckRecords(tokens_field=None)
    exact = DuplicateTexts(ledger, drop=dedup != "none")
    steps = [DuplicateIds(ledger), exact, *([NearDuplicateTexts(ledger)] if dedup == "near" else [])]
    kept, rejects, seq = [], [], 0
    for fi, (recs, size) in enumerate(zip(files, sizes)):
        source = Source(fi, f"f{fi}.jsonl", "line", f"f{fi}")
        numbered = []
        for pos, (rec, problem) in enumerate(recs, start=1):
            seq += 1
            numbered.append((seq, pos, None if problem else rec, problem))
        for start in range(0, max(len(numbered), 1), size):
            batch, problems = check(source, numbered[start : start + size])
            out, found = run_steps(batch, steps)
            kept += out.ids
            rejects += problems + found
    return kept, sorted((r.seq, r.category, r.to_json()) for r in rejects), exact.duplicate_groups(), ledger.n_generated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=corpora(), sizes=st.lists(st.integers(1, 15), min_size=2, max_size=2),
       dedup=st.sampled_from(["exact", "near", "none"]))
def test_any_batch_size_keeps_and_rejects_the_same_records_as_one_batch(files, sizes, dedup):
    whole = _run(files, [len(recs) or 1 for recs in files], dedup)
    assert _run(files, sizes, dedup) == whole
    kept, rejects, _, _ = whole
    assert len(kept) + len(rejects) == sum(len(recs) for recs in files)
    assert len(set(kept)) == len(kept)
    for category in sorted({c for _, c, _ in rejects}):
        event(f"rejected: {category}")  # --hypothesis-show-statistics: what the examples covered
