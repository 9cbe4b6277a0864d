"""AppTest of the Mixture page on a small synthetic workspace (real GEM fits, no mocks)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gem import mixture as mx
from gem.store import Workspace, file_sha256, write_parquet_atomic

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "4_Mixture.py")
if str(ROOT) not in sys.path:  # the page imports `pages.common`
    sys.path.insert(0, str(ROOT))

pytest.importorskip("streamlit.testing.v1")


@pytest.fixture
def ws_env(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    K, d = 4, 16
    centers = rng.normal(size=(K, d))
    sizes = [80, 40, 25, 15]  # unequal topics, so balance and strategies move the weights
    labels = np.repeat(np.arange(K), sizes)
    X = centers[labels] * 3 + rng.normal(size=(labels.size, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    corpus = pd.DataFrame({"id": [f"d{i}" for i in range(labels.size)],
                           "text": [f"<b>doc</b> {i} of topic {k}" for i, k in enumerate(labels)],
                           "n_tokens": rng.integers(20, 120, labels.size)})
    write_parquet_atomic(ws.corpus_path, corpus)
    ws.save_embeddings("final", X, np.ones(labels.size, np.float32), {"fingerprint": "synthetic"})
    monkeypatch.setenv("GEM_WORKSPACE", str(ws.root))
    return ws


def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["fit_k"] = 4  # the current fit's K (a sidebar control in the full app)
    at.run()
    return at


def _lambda(at) -> float:
    text = " ".join(c.value for c in at.caption).replace("\\", "")  # captions escape markdown
    return float(re.search(r"λ used = ([0-9.e+\-]+)", text).group(1).rstrip("."))


def _weights(at) -> np.ndarray:
    return at.dataframe[-1].value["weight"].to_numpy(np.float64)  # the weights table (after the editor)


@pytest.mark.slow
def test_mixture_page_balance_strategy_and_export(ws_env):
    at = _app()
    assert not at.exception, at.exception
    w_nat = _weights(at)
    assert abs(w_nat.sum() - 1) < 1e-12

    # balanced weights follow the fitted mass; moving the balance control changes lambda and the weights
    at.radio(key="mx_strategy").set_value("balanced").run()
    lam0, w0 = _lambda(at), _weights(at)
    at.session_state["fit_auto"] = False  # the sidebar's balance controls (pages.common.KEY_FIT_*)
    at.session_state["fit_lambda"] = 100000.0
    at.run()
    assert not at.exception, at.exception
    lam1, w1 = _lambda(at), _weights(at)
    assert lam1 == 100000.0 and lam0 != lam1
    assert w1.max() < w0.max()  # a stronger pull to uniform flattens the fitted mass
    assert abs(w1.sum() - 1) < 1e-12

    # UniMax with a budget beyond max epochs warns instead of hiding it
    at.radio(key="mx_strategy").set_value("unimax").run()
    at.number_input(key="mx_budget").set_value(10_000_000).run()
    assert not at.exception, at.exception
    assert any("epochs" in w.value for w in at.warning)

    # export: written into the workspace, validated, offered as a zip
    at.button(key="mx_export").click().run()
    assert not at.exception, at.exception
    name = at.text_input[0].value
    bundle = ws_env.exports_dir / name
    report = mx.validate_bundle(bundle)
    assert {"megatron", "olmo", "hf", "doremi", "regmix", "weborganizer", "assignments", "dolma"} <= set(report["formats"])
    assert abs(sum(report["weights"].values()) - 1) < 1e-12
    assert any("Wrote and validated" in s.value for s in at.success)
    # provenance of the session fit (mx.run_metadata): corpus hash, embedder, settings and lambda used
    obj = json.loads((bundle / "mixture.json").read_text(encoding="utf-8"))
    assert obj["corpus_fingerprint"] == "sha256:" + file_sha256(ws_env.corpus_path)
    assert obj["embedding_model"] == {"name": None, "fingerprint": "synthetic"}
    assert obj["clustering"]["run"] == "gem-k4-l100000-s0" and obj["clustering"]["n_clusters"] == 4
    assert obj["clustering"]["params"]["balance"] == lam1 and obj["clustering"]["params"]["k"] == 4


@pytest.mark.slow
def test_mixture_page_shows_engine_errors(ws_env):
    at = _app()
    at.radio(key="mx_strategy").set_value("unimax").run()  # no budget: UniMax cannot run
    assert not at.exception, at.exception
    assert any("budget" in e.value for e in at.error)


@pytest.mark.slow
def test_mixture_page_saved_run_uses_taxonomy_ids_and_parents(ws_env):
    from gem import runs
    from gem.model import GEM
    from gem.taxonomy import Taxonomy

    X = ws_env.load_embeddings("final")
    ids = pd.read_parquet(ws_env.corpus_path)["id"].to_numpy()
    est = GEM(n_clusters=4, balance=10.0, random_state=0).fit(X)
    runs.save_run(ws_env, "r1", est, "gem", {"n_clusters": 4, "representation": "final"}, ids, X=X)
    tax = Taxonomy(ws_env.taxonomy_db)
    tax.sync_run("r1", est.mean_directions_, author="test")
    m = tax.run_mapping("r1")
    g = tax.add_group("Group <i>A</i>", "test")
    for k in (0, 1):
        tax.update_topic(m[k], tax.topic(m[k])["version"], "test", parent=g)

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["fit_k"] = 4
    at.run()
    at.selectbox(key="mx_source").set_value("r1").run()
    assert not at.exception, at.exception
    assert at.dataframe[-1].value["id"].tolist() == [m[k] for k in range(4)]  # stable taxonomy ids
    at.toggle(key="mx_parent").set_value(True).run()
    table = at.dataframe[-1].value
    assert table["id"].tolist() == [g, m[2], m[3]] and table["label"].iloc[0] == "Group <i>A</i>"
    at.button(key="mx_export").click().run()
    assert not at.exception, at.exception
    assert at.text_input[0].value == "r1-natural-parent"
    report = mx.validate_bundle(ws_env.exports_dir / "r1-natural-parent")
    assert list(report["weights"]) == [g, m[2], m[3]]


@pytest.mark.slow
def test_mixture_page_shows_the_taxonomy_names_of_the_session_fit(app_test, synthetic_workspace):
    """Name a topic on the Taxonomy page; the Mixture page (same session fit) shows its stable id and name."""
    name = "Night <i>sky</i>"
    at = app_test(synthetic_workspace)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 4
    at.switch_page("pages/3_Taxonomy.py").run()
    first = at.data_editor(key="tx_editor_0").value["id"].iloc[0]
    at.session_state["tx_editor_0"] = {"edited_rows": {0: {"name": name}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception, at.exception

    at.switch_page("pages/4_Mixture.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert first in table["id"].tolist() and not any(i.startswith("t0") for i in table["id"])
    assert table.set_index("id").loc[first, "label"] == name
    assert set(table["implied_epochs"]) == {"—"}  # no token budget: a dash, not "None"
    axis = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["xaxis"]
    assert first in axis["tickvals"] and "Night &lt;i&gt;sky&lt;/i&gt;" in axis["ticktext"]  # labels, escaped


@pytest.mark.slow
def test_mixture_page_shows_what_exclusions_removed(ws_env):
    """Excluded documents (gem.flags) leave the current fit and the mixture; the page shows how
    many documents and tokens they removed, per topic."""
    from gem.flags import DocFlags

    corpus = ws_env.load_corpus()
    gone = corpus["id"].iloc[[0, 1, 2, 90, 150]].tolist()
    DocFlags(ws_env).exclude(gone, "junk", "alice")
    at = _app()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["documents removed"] == "5"
    assert metrics["tokens removed"] == f"{int(corpus.set_index('id').loc[gone, 'n_tokens'].sum()):,}"
    removed = next(d.value for d in at.dataframe if "removed_docs" in d.value.columns)
    assert int(removed["removed_docs"].sum()) == 5 and (removed["removed_docs"] > 0).all()
    weights = at.dataframe[-1].value
    assert int(weights["n_docs"].sum()) == len(corpus) - 5
