"""AppTest of the Student page: train from the current GEM fit, see the report, label a folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Student.py")
if str(ROOT) not in sys.path:  # the page imports `pages.common`
    sys.path.insert(0, str(ROOT))


@pytest.mark.slow
def test_student_page_trains_and_labels(synthetic_workspace, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    from gem.model import GEM
    from pages.common import KEY_RUN, FitResult

    ws = synthetic_workspace
    monkeypatch.setenv("GEM_WORKSPACE", str(ws.root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert any("Fit GEM" in w.value for w in at.warning)  # no fit yet: a pointer, not a crash

    X = ws.load_embeddings("final")
    gem = GEM(n_clusters=4, random_state=0).fit(X)
    at.session_state[KEY_RUN] = FitResult("gem", gem, np.asarray(gem.labels_), {"n_clusters": 4}, 0.1)
    at.run()
    at.button[0].click().run()  # "Train student" (form submit)
    assert not at.exception
    # synthetic vectors have no encoder to embed words: the page says so and trains the plain student
    assert any("without teacher word vectors" in i.value for i in at.info)
    labels = [m.label for m in at.metric]
    assert "Top-1 agreement (held out)" in labels
    assert (ws.root / "students" / "current.bin").exists()

    # once the taxonomy names the fit's topics, the confusion heatmap shows the names
    from gem.taxonomy import Taxonomy
    from pages.common import session_run_key

    tax = Taxonomy(ws.taxonomy_db)
    run_key = session_run_key(at.session_state[KEY_RUN])
    tax.sync_run(run_key, gem.mean_directions_)
    tid = tax.run_mapping(run_key)[0]
    tax.update_topic(tid, tax.topic(tid)["version"], "test", name="Cooking & food")
    at.run()
    assert not at.exception
    heatmap = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert "0 Cooking &amp; food" in heatmap["x"] and "0 Cooking &amp; food" in heatmap["y"]

    shard = tmp_path / "in" / "s.jsonl"
    shard.parent.mkdir()
    shard.write_text(json.dumps({"id": "x1", "text": "Document about cooking"}) + "\n{broken\n")
    at.text_input[0].set_value(str(shard.parent / "*.jsonl"))
    at.text_input[1].set_value(str(tmp_path / "labels"))
    at.button[1].click().run()
    assert not at.exception
    assert any("1 documents labelled, 1 rejected" in s.value for s in at.success)
    assert (tmp_path / "labels" / "s.parquet").exists()


@pytest.mark.slow
def test_student_page_uses_the_fits_own_representation(synthetic_workspace, monkeypatch):
    """A fit made on a layer representation is scored on that layer's vectors, not on `final`
    (here the layer has another dimension, so scoring the wrong vectors cannot pass silently)."""
    from streamlit.testing.v1 import AppTest

    from gem.model import GEM
    from pages.common import KEY_RUN, FitResult

    ws = synthetic_workspace
    final = ws.load_embeddings("final")
    layer = np.ascontiguousarray(final[:, : final.shape[1] // 2])
    norms = np.linalg.norm(layer, axis=1)
    ws.save_embeddings("layer2", layer / norms[:, None], norms, {"n": len(layer)})
    monkeypatch.setenv("GEM_WORKSPACE", str(ws.root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    gem = GEM(n_clusters=4, random_state=0).fit(ws.load_embeddings("layer2"))
    at.session_state[KEY_RUN] = FitResult("gem", gem, np.asarray(gem.labels_), {"n_clusters": 4}, 0.1,
                                          representation="layer2")
    at.run()
    at.button[0].click().run()  # "Train student"
    assert not at.exception
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]


@pytest.mark.slow
def test_student_page_reuses_the_taxonomy_pages_gis(app_test, synthetic_workspace, monkeypatch):
    """Same session fit: the Student page trains on the GIS the Taxonomy page already computed
    (pages.common.run_analysis) instead of scoring every document again."""
    import gem.distill
    from pages.common import KEY_ANALYSIS, KEY_RUN, session_run_key

    at = app_test(synthetic_workspace)
    at.session_state["gem_author"] = "alice"
    at.switch_page("pages/3_Taxonomy.py").run()
    at.number_input(key="tx_k").set_value(4).run()
    assert not at.exception, at.exception
    run_key, analysis = at.session_state[KEY_ANALYSIS]
    assert run_key == session_run_key(at.session_state[KEY_RUN])
    assert analysis.gis.shape == (len(synthetic_workspace.load_corpus()),)  # corpus rows, as the Student page's

    def rescoring(*args, **kwargs):
        raise AssertionError("the Student page scored GIS again for the Taxonomy page's fit")

    monkeypatch.setattr(gem.distill, "teacher_scores", rescoring)
    at.switch_page("pages/5_Student.py").run()
    at.button[0].click().run()  # "Train student"
    assert not at.exception, at.exception
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]
