"""fastText student: normalisation, GIS-balanced training sets, and distillation of a real GEM run
fitted on real text (the shipped sample corpus)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gem.distill import (DROP_LABEL, LABEL_PREFIX, Student, distill_labels, distill_run, evaluate,
                         normalize_text, select_training_set, train_student)
from gem.store import SAMPLE_DATA_DIR, Workspace, write_parquet_atomic

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("text", [
    "Hello,\tWorld!\r\nSecond line",
    "__label__7 injected label\x00 and NUL",
    "zero\u200bwidth \u2028separator \ufeffBOM  Café",
    "   ",
])
def test_normalize_text_is_one_safe_line_and_idempotent(text):
    out = normalize_text(text)
    assert out == out.lower() and out == out.strip()
    assert not any(c in out for c in "\n\r\t\x00\u200b\u2028\ufeff")
    assert "  " not in out and LABEL_PREFIX not in out
    assert normalize_text(out) == out


def test_normalize_text_splits_punctuation_and_rejects_non_strings():
    assert normalize_text("Python, fast!") == "python , fast !"
    with pytest.raises(TypeError):
        normalize_text(None)


# ---------------------------------------------------------------------------- training set
def test_select_training_set_is_balanced_and_takes_top_scores():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], [400, 100, 40])
    scores = rng.normal(size=labels.size)
    chosen = select_training_set(labels, scores, top_fraction=0.5, per_topic=30)
    assert chosen.per_topic == {"a": 30, "b": 30, "c": 20}  # c has only ceil(0.5 * 40) candidates
    for topic in "abc":
        members = np.flatnonzero(labels == topic)
        picked = chosen.indices[chosen.labels == topic]
        # every picked document outscores every unpicked member of its topic
        assert scores[picked].min() >= scores[np.setdiff1d(members, picked)].max()
    default = select_training_set(labels, scores, top_fraction=0.5)
    # cap: 75th percentile of candidate counts (200, 50, 20) = 125
    assert default.per_topic == {"a": 125, "b": 50, "c": 20}


def test_select_training_set_excluded_modes_and_candidates():
    labels = np.repeat([0, 1, 2], 50)
    scores = np.arange(150, dtype=float)
    dropped = select_training_set(labels, scores, 1.0, excluded=[2])
    assert set(dropped.labels) == {"0", "1"}
    relabelled = select_training_set(labels, scores, 1.0, excluded=[2], excluded_mode="label")
    assert relabelled.per_topic[DROP_LABEL] == 50
    pool = np.arange(0, 150, 2)
    sub = select_training_set(labels, scores, 1.0, candidates=pool)
    assert set(sub.indices) <= set(pool)


@pytest.mark.parametrize("kw, match", [
    (dict(top_fraction=0.0), "top_fraction"),
    (dict(per_topic=0), "per_topic"),
    (dict(excluded_mode="maybe"), "excluded_mode"),
    (dict(excluded=[0, 1]), "every topic is excluded"),
])
def test_select_training_set_rejects_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        select_training_set([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], **kw)


def test_topic_ids_must_be_valid_fasttext_labels():
    with pytest.raises(ValueError, match="cannot be a fastText label"):
        train_student(["a b", "c d"], ["T 1", "T2"])


# ---------------------------------------------------------------------------- a real teacher
@pytest.fixture(scope="module")
def teacher_ws(tmp_path_factory):
    """A workspace on 3,000 real sample documents with 48-d LSA embeddings (TF-IDF + SVD: real
    text, seconds to build instead of minutes of MiniLM on 2 cores) and a real GEM run."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from gem.model import GEM
    from gem.runs import save_run

    corpus = pd.read_parquet(SAMPLE_DATA_DIR / "corpus.parquet").sample(3000, random_state=0).reset_index(drop=True)
    raw = TruncatedSVD(48, random_state=0).fit_transform(
        TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(corpus["text"])).astype(np.float32)
    norms = np.linalg.norm(raw, axis=1)
    unit = raw / norms[:, None]
    ws = Workspace(tmp_path_factory.mktemp("teacher") / "ws")
    write_parquet_atomic(ws.corpus_path, corpus)
    ws.save_embeddings("final", unit, norms, {"model": "lsa-48"})
    gem = GEM(n_clusters=8, random_state=0).fit(unit)
    save_run(ws, "gem8", gem, "gem", {"n_clusters": 8, "representation": "final"}, corpus["id"], X=unit)
    return ws


@pytest.mark.slow
def test_distilled_student_agrees_with_teacher_on_held_out(teacher_ws, tmp_path):
    out = tmp_path / "student.bin"
    report = distill_run(teacher_ws, "gem8", out, holdout=0.2, quantize=True, quantize_cutoff=5000)
    # stated threshold: 78% top-1 agreement with the teacher on 600 held-out documents (8 topics,
    # chance 12.5%) with the default recipe; measured 0.847-0.848 (macro-F1 0.856-0.859) over
    # repeated runs (multi-threaded fastText varies slightly), so the margin is ~7 points
    assert report["n"] == 600
    assert report["agreement"] >= 0.78 and report["macro_f1"] >= 0.78
    # more confident predictions agree more: the top confidence bin beats the overall rate
    top = [b for b in report["agreement_by_confidence"] if b["n"] >= 20][-1]
    assert top["agreement"] >= report["agreement"]
    conf = np.asarray(report["confusion"])
    assert conf.sum() == 600 and np.trace(conf) / 600 == pytest.approx(report["agreement"])
    assert 0.0 < report["kmeans"]["agreement"] <= 1.0
    # the quantised model is far smaller and nearly as good
    assert report["quantized"]["bytes"] < report["model"]["bytes"] / 5
    assert report["quantized"]["agreement"] >= report["agreement"] - 0.05
    # a reloaded student: top-1 equals the first of top-3, and top-k is sorted
    texts = teacher_ws.load_corpus()["text"].tolist()[:200]
    loaded = Student.load(out)
    assert loaded.meta["teacher"]["run"] == "gem8"
    ids_a, p_a = loaded.predict(texts)
    ids_b, p_b = loaded.predict(texts, k=3)
    assert list(ids_a) == list(ids_b[:, 0]) and np.allclose(p_a, p_b[:, 0])
    assert np.all(np.diff(p_b, axis=1) <= 1e-6)  # top-k sorted by probability


@pytest.mark.slow
def test_gem_distill_cli_json(teacher_ws, tmp_path):
    out = tmp_path / "cli.bin"
    proc = subprocess.run(
        [sys.executable, "-m", "gem", "distill", "--workspace", str(teacher_ws.root), "--run", "gem8", "--out", str(out),
         "--top-fraction", "1.0", "--no-kmeans", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # quantisation is opt-in: no .ftz without --quantize
    assert report["agreement"] >= 0.78 and out.exists() and not out.with_suffix(".ftz").exists()
    bad = subprocess.run([sys.executable, "-m", "gem", "distill", "--workspace", str(teacher_ws.root), "--run", "nope",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "no such run" in bad.stderr


def test_evaluate_reports_perfect_and_chance_agreement():
    texts = [f"alpha word{i}" if i % 2 else f"beta word{i}" for i in range(200)]
    truth = ["1" if i % 2 else "0" for i in range(200)]
    student = train_student(texts, truth, epoch=10)
    good = evaluate(student, texts, truth)
    assert good["agreement"] == 1.0 and good["macro_f1"] == 1.0 and good["docs_per_second"] > 0
    flipped = evaluate(student, texts, ["0" if t == "1" else "1" for t in truth])
    assert flipped["agreement"] == 0.0


def test_distill_labels_excluded_label_mode_predicts_drop():
    texts = [f"{w} text number {i}" for i in range(300) for w in ["alpha", "beta", "gamma"]][:900]
    labels = [str(i % 3) for i in range(900)]
    student, report = distill_labels(texts, labels, np.ones(900), top_fraction=1.0, excluded=["2"],
                                     excluded_mode="label", epoch=10)
    assert set(student.topic_ids) == {"0", "1", DROP_LABEL}
    assert report["agreement"] >= 0.95
