"""Merge and split topics (gem.taxonomy.regroup): stable ids through re-fits, aggregated domains,
routing a split topic's documents to its children, audit, refusals that change nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from gem.taxonomy import Taxonomy
from gem.workspace_ops import document_topic_ids, propose_topic_split, sync_saved_run

GROUPS = ("astronomy", "cooking", "law", "violin", "piano")  # violin and piano: two halves of one topic


def build_planted_workspace(root, n_per: int = 60, d: int = 24, seed: int = 0):
    """A workspace of 5 planted vMF groups: three far apart and two halves ("violin", "piano") at
    cosine 0.7, which a K = 4 fit puts in one cluster. Each group has its own words."""
    from gem.sphere import sample_vmf
    from gem.store import Workspace, write_parquet_atomic

    rng = np.random.default_rng(seed)
    mus = rng.standard_normal((4, d))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    q, _ = np.linalg.qr(np.vstack([mus, rng.standard_normal(d)]).T)
    ortho = q[:, 4]  # orthogonal to all four centres
    half = 0.7 * mus[3] + np.sqrt(1 - 0.7 ** 2) * ortho  # piano, at cosine 0.7 from violin
    centres = np.vstack([mus[:3], mus[3], half])
    X = np.concatenate([sample_vmf(c, 400.0, n_per, rng) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(5), n_per)
    ids = [f"doc-{i:04d}" for i in range(len(truth))]
    texts = [f"{GROUPS[g]} {GROUPS[g]}s note {i % 5} about {GROUPS[g]} practice" for i, g in enumerate(truth)]
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(ws.corpus_path, pd.DataFrame({
        "id": ids, "text": texts, "n_tokens": np.arange(len(ids), dtype=np.int64) % 17 + 5}))
    ws.save_embeddings("final", X, np.ones(len(ids), dtype=np.float32),
                       {"representation": "final", "source": "synthetic", "n": len(ids), "dim": d})
    return ws, truth


def save_fit(ws, name: str, k: int, seed: int, keep: np.ndarray | None = None):
    """Spherical k-means (best of 3 restarts) of the documents in ``keep`` (default all) saved as
    run ``name``; returns its labels."""
    from gem.baselines import make_estimator
    from gem.runs import save_run

    X, ids = ws.load_embeddings(), ws.load_corpus()["id"].to_numpy()
    if keep is not None:
        X, ids = X[keep], ids[keep]
    best = max((make_estimator("spherical-kmeans", k, random_state=10 * seed + s).fit(X) for s in range(3)),
               key=lambda m: float(np.einsum("ij,ij->", X, m.mean_directions_[m.labels_])))
    save_run(ws, name, best, "spherical-kmeans", {"representation": "final"}, ids, X=X)
    return np.asarray(best.labels_)


@pytest.fixture
def planted_ws(tmp_path):
    ws, truth = build_planted_workspace(tmp_path / "ws")
    labels = save_fit(ws, "a", 4, seed=0)
    # the K = 4 fit keeps the three far groups apart and puts violin and piano together
    assert adjusted_rand_score(np.minimum(truth, 3), labels) > 0.95
    tax, _, _ = sync_saved_run(ws, "a")
    return ws, truth, tax


def _topic_of_group(ws, run, truth, group):
    ids = document_topic_ids(ws, run)
    values, counts = np.unique(ids[truth == group], return_counts=True)
    return values[np.argmax(counts)]


def test_merge_keeps_one_id_survives_a_refit_and_sums_tokens(planted_ws):
    from gem.mixture import mixture_inputs_from_run

    ws, truth, tax = planted_ws
    t_astro, t_cook = _topic_of_group(ws, "a", truth, 0), _topic_of_group(ws, "a", truth, 1)
    v = tax.topic(t_astro)["version"]
    tax.update_topic(t_astro, v, "alice", name="Sky and food", excluded=False)
    assert tax.merge_topics([t_astro, t_cook], "alice") == t_astro  # the first id stays
    survivor, gone = tax.topic(t_astro), tax.topic(t_cook)
    assert survivor["name"] == "Sky and food" and survivor["status"] == "active"
    assert gone["status"] == "retired" and gone["merged_into"] == t_astro
    assert set(tax.audit(t_cook)["field"]) >= {"merged_into", "status"}
    assert "merged" in set(tax.audit(t_astro)["field"])
    assert sorted(tax.run_mapping("a").values()).count(t_astro) == 2  # the synced run is re-pointed at once

    save_fit(ws, "b", 4, seed=1)  # a re-fit of the whole corpus with another seed
    _, report, _ = sync_saved_run(ws, "b")
    ids_b = document_topic_ids(ws, "b")
    assert set(ids_b[truth <= 1]) == {t_astro}  # both merged groups map to the survivor
    assert t_cook not in set(ids_b) and not report.new and not report.retired
    topics_b = tax.topics("b")
    assert (topics_b["id"] == t_astro).sum() == 2 and topics_b["match_via"].eq(t_cook).sum() == 1
    assert tax.topic(t_cook)["status"] == "retired"  # still merged, not revived

    inputs = mixture_inputs_from_run(ws, "b", with_gis=False)
    dom = inputs.domains.set_index("id")
    tokens = ws.load_corpus()["n_tokens"].to_numpy()
    assert len(dom) == 3 and dom.index.is_unique
    assert int(dom.loc[t_astro, "n_tokens"]) == int(tokens[truth <= 1].sum())
    assert int(dom.loc[t_astro, "n_docs"]) == int((truth <= 1).sum()) and dom.loc[t_astro, "label"] == "Sky and food"
    assert set(inputs.assignments()["domain_id"][truth <= 1]) == {t_astro}

    exported = tax.export_json()
    assert {r["via"] for r in exported["runs"][-1]["clusters"]} == {None, t_cook}
    copy = Taxonomy(ws.root / "copy.sqlite")
    copy.import_json(exported, "carol")
    assert copy.topic(t_cook)["merged_into"] == t_astro and copy.run_mapping("b") == tax.run_mapping("b")

    # the student trains on one label per stable id
    from gem.distill import distill_run

    report = distill_run(ws, "b", ws.root / "student.bin", word_vectors=False, compare_kmeans=False)
    assert t_astro in report["training"]["per_topic"] and t_cook not in report["training"]["per_topic"]
    assert len(report["training"]["per_topic"]) == 3

    # unmerge: the topic gets its clusters back
    assert tax.unmerge_topic(t_cook, "bob") == t_astro
    assert tax.topic(t_cook)["status"] == "active" and tax.topic(t_cook)["merged_into"] is None
    assert set(document_topic_ids(ws, "b")[truth == 1]) == {t_cook}


def test_merge_refuses_bad_ids_and_changes_nothing(planted_ws):
    ws, truth, tax = planted_ws
    t = [_topic_of_group(ws, "a", truth, g) for g in (0, 1, 2)]
    gid = tax.add_group("a group", "alice")
    before = tax.export_json()["topics"]
    bad = [([t[0]], "at least two"), ([t[0], t[0]], "listed twice"), ([t[0], "T999"], "no topic T999"),
           ([t[0], gid], "is a group"), ([t[0], t[1]], None)]
    for ids, msg in bad[:-1]:
        with pytest.raises(ValueError, match=msg):
            tax.merge_topics(ids, "alice")
    with pytest.raises(ValueError, match="must be one of"):
        tax.merge_topics([t[0], t[1]], "alice", into=t[2])
    with pytest.raises(ValueError, match="author"):
        tax.merge_topics([t[0], t[1]], " ")
    assert tax.export_json()["topics"] == before
    tax.merge_topics([t[0], t[1]], "alice", into=t[1])
    with pytest.raises(ValueError, match=f"{t[0]} is retired \\(merged into {t[1]}\\)"):
        tax.merge_topics([t[0], t[2]], "alice")
    # merging the survivor on: earlier merges follow it (one step, no chains)
    tax.merge_topics([t[2], t[1]], "alice")
    assert tax.topic(t[0])["merged_into"] == t[2] and tax.topic(t[1])["merged_into"] == t[2]


def test_split_recovers_planted_halves_and_survives_a_refit(planted_ws):
    ws, truth, tax = planted_ws
    parent = _topic_of_group(ws, "a", truth, 3)
    before = tax.export_json()["topics"]
    with pytest.raises(ValueError, match="from 2 to 8"):
        propose_topic_split(ws, tax, "a", parent, 9)
    prop = propose_topic_split(ws, tax, "a", parent, 2)
    assert tax.export_json()["topics"] == before  # a preview changes nothing
    inside = np.isin(ws.load_corpus()["id"].to_numpy(), prop.doc_ids)
    assert set(np.unique(truth[inside])) == {3, 4}
    assert adjusted_rand_score(truth[inside], prop.labels) >= 0.9
    assert sorted(prop.sizes) == sorted(np.bincount(prop.labels).tolist())
    words = {w for kw in prop.keywords for w in kw[:2]}
    assert {"violin", "piano"} <= words or {"violins", "pianos"} <= words
    assert all(len(ex) == 3 for ex in prop.examples)
    assert np.allclose(np.linalg.norm(prop.directions, axis=1), 1.0)

    children = tax.accept_split(prop, "alice")
    assert len(children) == 2 and all(tax.topic(c)["split_from"] == parent for c in children)
    assert all(tax.topic(c)["parent"] == parent for c in children)
    assert "split" in set(tax.audit(parent)["field"]) and "split_from" in set(tax.audit(children[0])["field"])
    with pytest.raises(ValueError, match="was split into"):
        propose_topic_split(ws, tax, "a", parent, 2)
    with pytest.raises(ValueError, match="changed .* since the split was previewed|was split into"):
        tax.accept_split(prop, "alice")  # the same preview twice
    ids_a = document_topic_ids(ws, "a")
    assert parent not in set(ids_a) and set(ids_a[truth >= 3]) == set(children)
    from gem.search import search

    found = search(ws, "violin", k=500, run="a").table  # search results name the child, not the split topic
    assert set(found["topic"]) == {ids_a[truth == 3][0]}
    assert adjusted_rand_score(truth[truth >= 3], ids_a[truth >= 3]) >= 0.9

    save_fit(ws, "b", 4, seed=1)  # re-fit: the parent's cluster is matched, its documents go to the children
    sync_saved_run(ws, "b")
    ids_b = document_topic_ids(ws, "b")
    assert set(ids_b[truth >= 3]) == set(children)
    assert adjusted_rand_score(truth[truth >= 3], ids_b[truth >= 3]) >= 0.9
    for g in (3, 4):
        assert len(set(ids_b[truth == g])) == 1 and ids_b[truth == g][0] == ids_a[truth == g][0]

    from gem.mixture import mixture_inputs_from_run

    dom = mixture_inputs_from_run(ws, "b", with_gis=False).domains
    assert parent not in set(dom["id"]) and set(children) <= set(dom["id"]) and len(dom) == 5
    assert int(dom["n_docs"].sum()) == len(truth)
    assert (dom.set_index("id").loc[children, "parent"] == parent).all()

    # the JSON export carries merges and splits: an imported copy routes the documents the same way
    import json

    copy = Taxonomy(ws.root / "copy.sqlite")
    copy.import_json(json.loads(json.dumps(tax.export_json())), "carol")
    assert copy.split_children()[parent][0] == children
    assert np.allclose(copy.split_children()[parent][1], tax.split_children()[parent][1], atol=1e-6)
    assert copy.run_mapping("b") == tax.run_mapping("b")

    from gem.distill import distill_run

    report = distill_run(ws, "b", ws.root / "student.bin", word_vectors=False, compare_kmeans=False)
    assert set(children) <= set(report["training"]["per_topic"]) and parent not in report["training"]["per_topic"]

    assert tax.unsplit_topic(parent, "bob") == children
    assert set(document_topic_ids(ws, "b")[truth >= 3]) == {parent}


def test_topic_rows_sums_merged_clusters():
    from gem.taxonomy import topic_rows

    table = pd.DataFrame({"cluster": [0, 1, 2], "id": ["T001", "T002", "T001"], "name": ["a", "b", "a"],
                          "n_docs": [10, 5, 30], "n_tokens": [100, 50, 300], "share": [0.2, 0.1, 0.7],
                          "mean_gis": [1.0, 2.0, 3.0], "keywords": [["x"], ["y"], ["z"]]})
    out = topic_rows(table).set_index("id")
    assert list(out.index) == ["T001", "T002"]
    assert out.loc["T001", "n_docs"] == 40 and out.loc["T001", "n_tokens"] == 400
    assert out.loc["T001", "share"] == pytest.approx(0.9) and out.loc["T001", "mean_gis"] == pytest.approx(2.5)
    assert out.loc["T001", "cluster"] == 2 and out.loc["T001", "keywords"] == ["z"]  # from the largest cluster
    assert out.loc["T001", "clusters"] == [0, 2] and out.loc["T002", "clusters"] == [1]


@pytest.mark.slow  # real GEM fits inside AppTest
def test_taxonomy_page_merges_previews_discards_and_accepts_a_split(app_test, synthetic_workspace):
    pytest.importorskip("streamlit.testing.v1")
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 4
    at.switch_page("pages/3_Taxonomy.py").run()
    assert not at.exception, at.exception
    tax = Taxonomy(ws.taxonomy_db)
    table = at.data_editor(key="tx_editor_0").value
    ids = sorted(table["id"])
    docs = dict(zip(table["id"], table["documents"]))
    first = tax.topic(ids[0])
    tax.update_topic(ids[0], first["version"], "alice", name="<b>Kept</b> *name*")

    at.multiselect(key="tx_merge_ids").set_value([ids[0], ids[1]]).run()
    at.checkbox(key="tx_merge_confirm").check().run()
    at.button(key="tx_merge").click().run()
    assert not at.exception, at.exception
    assert tax.topic(ids[1])["merged_into"] == ids[0]
    assert any(f"Merged {ids[1]} into {ids[0]}" in s.value for s in at.success)
    table = at.data_editor(key=f"tx_editor_{at.session_state['tx_editor_gen']}").value
    assert len(table) == 3 and int(table.set_index("id").loc[ids[0], "documents"]) == docs[ids[0]] + docs[ids[1]]
    assert not any("<b>" in m.value for m in at.markdown)

    big = ids[2]
    at.selectbox(key="tx_split_id").set_value(big).run()
    at.button(key="tx_split_preview").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    preview = next(d.value for d in at.dataframe if "child" in d.value.columns)  # the preview table
    assert len(preview) == 2 and int(preview["documents"].sum()) == docs[big]
    at.button(key="tx_split_discard").click().run()
    assert not tax.split_children() and "tx_split_proposal" not in at.session_state
    assert not any("child" in d.value.columns for d in at.dataframe)
    at.button(key="tx_split_preview").click().run()
    at.button(key="tx_split_accept").click().run()
    assert not at.exception, at.exception
    children = tax.split_children()[big][0]
    table = at.data_editor(key=f"tx_editor_{at.session_state['tx_editor_gen']}").value.set_index("id")
    assert set(children) <= set(table.index) and f"split into {', '.join(children)}" in table.loc[big, "status"]
    assert all(f"child of {big}" in table.loc[c, "status"] for c in children)


def test_exclusions_count_against_the_stable_ids_of_merged_and_split_topics(planted_ws):
    """What exclusions removed is reported per stable id: a merged topic counts its clusters'
    documents together, a split topic's go to its children, also for a run fitted without them."""
    from gem.flags import DocFlags
    from gem.mixture import mixture_inputs_from_run

    ws, truth, tax = planted_ws
    t_astro, t_cook = _topic_of_group(ws, "a", truth, 0), _topic_of_group(ws, "a", truth, 1)
    tax.merge_topics([t_astro, t_cook], "alice")
    children = tax.accept_split(propose_topic_split(ws, tax, "a", _topic_of_group(ws, "a", truth, 3), 2), "alice")
    ids = ws.load_corpus()["id"].to_numpy()
    picked = {0: 3, 1: 2, 2: 1, 3: 4}  # planted group -> documents excluded
    excluded = np.concatenate([ids[truth == g][:n] for g, n in picked.items()])
    DocFlags(ws).exclude(excluded, reason="junk", author="alice")
    violin = _topic_of_group(ws, "a", truth, 3)
    assert violin in children

    keep = ~np.isin(ids, excluded)
    assert adjusted_rand_score(np.minimum(truth, 3)[keep], save_fit(ws, "without", 4, 0, keep)) > 0.95
    sync_saved_run(ws, "without")
    for run in ("a", "without"):
        removed = mixture_inputs_from_run(ws, run, with_gis=False).removed.set_index("id")
        assert "(no topic)" not in removed.index and removed.index.is_unique
        assert removed.loc[t_astro, "removed_docs"] == 5  # both merged groups
        assert removed.loc[violin, "removed_docs"] == 4 and removed.loc[_topic_of_group(ws, "a", truth, 2),
                                                                       "removed_docs"] == 1
        assert int(removed["removed_docs"].sum()) == len(excluded)
