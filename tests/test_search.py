"""gem.search: full-text over the corpus text column, semantic with the corpus's own model."""
import numpy as np
import pandas as pd
import pytest

from gem.flags import DocFlags
from gem.search import full_text, search, semantic, snippet, top_k_cosine


def test_full_text_is_case_insensitive_and_ranks_phrase_hits_first(synthetic_workspace):
    ws = synthetic_workspace
    corpus = ws.load_corpus()
    r = full_text(ws, "ABOUT Cooking", k=1000)
    expected = corpus["text"].str.lower().str.contains("about cooking", regex=False)
    assert set(r.ids) == set(corpus.loc[expected, "id"]) and r.n_matches == int(expected.sum()) > 0
    assert r.table["rank"].tolist() == list(range(1, len(r.table) + 1))
    # word order swapped: no phrase hit, every word present
    swapped = full_text(ws, "cooking about", k=1000)
    assert set(swapped.ids) == set(r.ids) and (swapped.table["match"] == "all words").all()
    mixed = full_text(ws, "about cooking paragraph 3", k=1000, mode="all")
    has_all = corpus["text"].str.lower().map(lambda t: all(w in t for w in ["about", "cooking", "paragraph", "3"]))
    assert set(mixed.ids) == set(corpus.loc[has_all, "id"])
    assert len(mixed.ids) > 0 and full_text(ws, "about cooking paragraph 3", k=5, mode="phrase").n_matches == 0
    assert full_text(ws, "no such words anywhere", k=5).n_matches == 0


def test_full_text_phrase_first_then_density(make_workspace):
    from gem.store import write_parquet_atomic

    ws = make_workspace(n=40, hostile=False)
    corpus = ws.load_corpus()
    corpus.loc[0, "text"] = "a long text " * 30 + "red apple"
    corpus.loc[1, "text"] = "red apple red apple"
    corpus.loc[2, "text"] = "apple that is red"
    write_parquet_atomic(ws.corpus_path, corpus)
    r = full_text(ws, "Red Apple", k=10)
    assert r.ids[:3] == [corpus.at[1, "id"], corpus.at[0, "id"], corpus.at[2, "id"]]
    assert r.table["match"].tolist()[:3] == ["phrase", "phrase", "all words"]


def test_snippets_are_plain_text_around_the_hit():
    text = "x" * 300 + " the Needle is here " + "y" * 300
    s = snippet(text, "needle")
    assert "Needle" in s and s.startswith("…") and s.endswith("…") and len(s) <= 162
    assert snippet("a\n\nb  needle\tc", "needle") == "a b needle c"
    # terminal escapes and bidi overrides in corpus text never reach a terminal or a table as such
    assert snippet("x \x1b[2J needle \u202e evil", "needle") == "x \ufffd[2J needle \ufffd evil"


def test_bad_queries(synthetic_workspace):
    for q in ("", "   ", "x" * 501):
        with pytest.raises(ValueError):
            full_text(synthetic_workspace, q)
    with pytest.raises(ValueError, match="k must be"):
        full_text(synthetic_workspace, "about", k=0)
    with pytest.raises(ValueError, match="mode"):
        full_text(synthetic_workspace, "about", mode="regex")


def test_semantic_needs_the_corpus_model(synthetic_workspace):
    with pytest.raises(ValueError, match="not made by the app's model"):
        semantic(synthetic_workspace, "cooking")


def test_semantic_search_refuses_embeddings_of_a_reshuffled_corpus(make_workspace):
    """Same documents, same count, another order: the embeddings' rows no longer belong to the ids
    beside them, so semantic search refuses them (the ids digest) instead of naming wrong documents."""
    from gem.store import ids_digest, read_json, write_json_atomic, write_parquet_atomic

    def workspace(shuffled: bool):
        ws = make_workspace(n=40, hostile=False)
        corpus = ws.load_corpus()
        meta_path = ws.embeddings_meta_path("final")
        write_json_atomic(meta_path, {**read_json(meta_path), "ids_digest": ids_digest(corpus["id"])})
        if shuffled:
            write_parquet_atomic(ws.corpus_path, corpus.sample(frac=1, random_state=0).reset_index(drop=True))
        return ws

    # in order: the check passes and the search gets as far as embedding the query
    with pytest.raises(ValueError, match="not made by the app's model"):
        semantic(workspace(shuffled=False), "cooking")
    with pytest.raises(ValueError, match="made for other documents"):
        semantic(workspace(shuffled=True), "cooking")


def test_top_k_cosine_matches_a_full_sort():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    q = X[123]
    rows, scores = top_k_cosine(X, q, 10, chunk=777)
    want = np.argsort(-(X @ q), kind="stable")[:10]
    assert rows[0] == 123 and np.array_equal(np.sort(rows), np.sort(want))
    assert np.all(np.diff(scores) <= 0)


def test_annotations_topic_and_flags(synthetic_workspace):
    from gem.cli import main

    ws = synthetic_workspace
    assert main(["fit", "-w", str(ws.root), "--k", "4", "--run", "r4", "--no-sync"]) == 0
    r = full_text(ws, "about", k=5)
    DocFlags(ws).exclude(r.ids[:2], "junk", "alice")
    DocFlags(ws).tag(r.ids[1:3], "check", "alice")
    out = search(ws, "about", k=5, run="r4").table
    assert out["excluded"].tolist()[:3] == [True, True, False]
    assert out["reason"].tolist()[:2] == ["junk", "junk"] and out["tags"].tolist()[1:3] == ["check", "check"]
    a = pd.read_parquet(ws.run_dir("r4") / "assignments.parquet").set_index("id")["cluster"]
    assert out["topic"].tolist() == [f"c{a[i]}" for i in out["id"]]


@pytest.mark.slow
def test_semantic_search_with_the_real_model(sample_workspace):
    ws = sample_workspace
    corpus = ws.load_corpus()
    r = semantic(ws, "web browser for the internet", k=20)
    assert r.n_matches == len(corpus) and len(r.table) == 20
    assert r.table["score"].is_monotonic_decreasing and r.table["score"].iloc[0] > 0.4
    texts = corpus.set_index("id").loc[r.ids, "text"].str.lower()
    assert texts.str.contains("browser|web|internet|http").mean() >= 0.7
    # a document's own text finds that document first
    doc = corpus.iloc[1234]
    again = semantic(ws, doc["text"][:400], k=3)
    assert again.ids[0] == doc["id"] and again.table["score"].iloc[0] > 0.9
