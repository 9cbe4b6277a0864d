"""AppTest of the Student page: train from the current fit, see the report, label a folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Student.py")
if str(ROOT) not in sys.path:  # the page imports `pages.common`
    sys.path.insert(0, str(ROOT))


def _page(ws, monkeypatch, **state):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GEM_WORKSPACE", str(ws.root))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["fit_k"] = 4  # the current fit's K (a sidebar control in the full app)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_student_page_trains_on_stable_topic_ids_and_labels(synthetic_workspace, monkeypatch, tmp_path):
    """The student learns the taxonomy's topic ids (T001, ...), leaves excluded topics out, and a
    labelled shard carries those ids, so it joins the mixture's domains."""
    from gem.taxonomy import Taxonomy

    ws = synthetic_workspace
    at = _page(ws, monkeypatch)
    run_name = "gem-k4-auto-s0"
    assert (ws.run_dir(run_name) / "params.json").exists()  # the current fit is a saved run
    tax = Taxonomy(ws.taxonomy_db)
    topics = tax.topics(run=run_name)
    assert list(topics["id"]) and all(t.startswith("T") for t in topics["id"])
    named, dropped = topics["id"].iloc[0], topics["id"].iloc[1]
    tax.update_topic(named, tax.topic(named)["version"], "test", name="Cooking & food")
    tax.update_topic(dropped, tax.topic(dropped)["version"], "test", excluded=True)

    at.button[0].click().run()  # "Train student" (form submit)
    assert not at.exception, at.exception
    # synthetic vectors have no encoder to embed words: the page says so and trains the plain student
    assert any("without teacher word vectors" in i.value for i in at.info)
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]
    assert (ws.root / "students" / f"{run_name}.bin").exists()
    report = at.session_state["gem_student"][2]
    assert set(report["labels"]) <= set(topics["id"]) and dropped not in report["labels"]
    assert report["teacher"]["topic_ids"] == "taxonomy" and report["teacher"]["excluded"] == [dropped]
    assert any(dropped in t.value for t in at.text)  # the page says which topics were left out
    # the confusion heatmap names topics by id and curator name (escaped: never markup)
    heatmap = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert f"{named} Cooking &amp; food" in heatmap["x"] and f"{named} Cooking &amp; food" in heatmap["y"]
    # the model can be downloaded from the page
    labels = [b.proto.label for b in at.get("download_button")]
    assert any(x.startswith("Download the student") for x in labels) and "Download its report (JSON)" in labels

    shard = tmp_path / "in" / "s.jsonl"
    shard.parent.mkdir()
    shard.write_text(json.dumps({"id": "x1", "text": "Document 3 about astronomy, paragraph 3."}) + "\n{broken\n")
    at.text_input[0].set_value(str(shard.parent / "*.jsonl"))
    at.text_input[1].set_value("batch1")
    at.button[1].click().run()
    assert not at.exception, at.exception
    assert any("1 documents labelled, 1 rejected" in s.value for s in at.success)
    out = pd.read_parquet(ws.root / "labels" / "batch1" / "s.parquet")
    assert list(out["id"]) == ["x1"]
    assert out["topic_id"].iloc[0] in set(topics["id"]) - {dropped}


@pytest.mark.slow
def test_student_page_output_folder_stays_in_the_workspace(synthetic_workspace, monkeypatch, tmp_path):
    ws = synthetic_workspace
    at = _page(ws, monkeypatch)
    at.button[0].click().run()
    shard = tmp_path / "in" / "s.jsonl"
    shard.parent.mkdir()
    shard.write_text(json.dumps({"id": "x1", "text": "hello"}) + "\n")
    at.text_input[0].set_value(str(shard))
    at.text_input[1].set_value("../../escape")
    at.button[1].click().run()
    assert not at.exception, at.exception
    assert any("invalid output folder name" in e.value for e in at.error)
    assert not (ws.root.parent / "escape").exists()
    # inputs only from the server's data folders: one message, whatever exists there
    from gem.access import REFUSED

    for pattern in ("/etc/*", "/dev/zero", str(ws.root.parent / "none-*.jsonl")):
        at.text_input[0].set_value(pattern)
        at.text_input[1].set_value("batch")
        at.button[1].click().run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == [REFUSED], pattern
    assert not (ws.root / "labels" / "batch").exists()


@pytest.mark.slow
def test_student_page_uses_the_fits_own_representation(synthetic_workspace, monkeypatch):
    """A fit made on a layer representation is scored on that layer's vectors, not on `final`
    (here the layer has another dimension, so scoring the wrong vectors cannot pass silently)."""
    ws = synthetic_workspace
    final = ws.load_embeddings("final")
    layer = np.ascontiguousarray(final[:, : final.shape[1] // 2])
    norms = np.linalg.norm(layer, axis=1)
    ws.save_embeddings("layer2", layer / norms[:, None], norms, {"n": len(layer)})
    at = _page(ws, monkeypatch, fit_rep="layer2")
    assert (ws.run_dir("gem-k4-auto-s0-layer2") / "params.json").exists()
    at.button[0].click().run()  # "Train student"
    assert not at.exception, at.exception
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]
    assert at.session_state["gem_student"][2]["teacher"]["representation"] == "layer2"


@pytest.mark.slow
def test_student_training_draws_its_stages_in_the_progress_bar(synthetic_workspace, monkeypatch):
    """While the student trains, the page's bar names each of distill_run's stages in order (the
    synthetic workspace has no encoder for word vectors, and the k-means comparison is off)."""
    from streamlit.elements.progress import ProgressMixin

    texts = []
    real = ProgressMixin.progress

    def spy(self, value, text=None, *args, **kwargs):
        texts.append(text)
        return real(self, value, text, *args, **kwargs)

    monkeypatch.setattr(ProgressMixin, "progress", spy)
    at = _page(synthetic_workspace, monkeypatch)
    texts.clear()
    at.button[0].click().run()  # "Train student"
    assert not at.exception, at.exception
    assert texts == ["Training the student: loading the run…",
                     "Training the student: scoring GIS (1 of 4)",
                     "Training the student: picking the training set (2 of 4)",
                     "Training the student: training (3 of 4)",
                     "Training the student: evaluating (4 of 4)",
                     "Training the student: done (4 of 4)"]
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]
