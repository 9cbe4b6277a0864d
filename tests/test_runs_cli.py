"""`gem fit` / `gem compare` and run persistence (JSON + npy + Parquet, no pickle)."""
import json

import numpy as np
import pandas as pd
import pytest

from gem.cli import main
from gem.runs import load_run, save_run
from gem.sphere import planted_cone
from gem.store import Workspace


@pytest.fixture()
def ws(tmp_path):
    k = 6
    sizes = np.round(400 * (30 / 400) ** (np.arange(k) / (k - 1))).astype(int)
    raw, unit, y = planted_cone(sizes, d=16, random_state=0)
    n = len(y)
    w = Workspace(tmp_path / "ws")
    w.root.mkdir()
    corpus = pd.DataFrame({"id": [f"doc-{i}" for i in range(n)], "text": ["t"] * n,
                           "source": np.where(y % 2 == 0, "web", "books"), "category": [f"c{t}" for t in y],
                           "n_tokens": np.arange(n) % 50 + 10})
    corpus.to_parquet(w.corpus_path)
    norms = np.linalg.norm(raw, axis=1)
    w.save_embeddings("final", unit, norms, {"shape": list(unit.shape)})
    return w


@pytest.mark.parametrize("method", ["gem", "kmeans", "spherical-kmeans", "faiss-spherical", "vmf"])
def test_fit_stores_a_loadable_run(ws, method, capsys):
    assert main(["fit", "--workspace", str(ws.root), "--method", method, "--k", "6", "--run", f"r-{method}"]) == 0
    assert "saved run" in capsys.readouterr().out
    folder = ws.run_dir(f"r-{method}")
    assert {"params.json", "model.json", "assignments.parquet"} <= {p.name for p in folder.iterdir()}
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pickle"))
    run = load_run(ws, f"r-{method}")
    assert run.method == method and run.params["k"] == 6
    a = run.assignments
    assert list(a.columns) == ["id", "cluster", "probability"]
    assert a["id"].tolist() == ws.load_corpus()["id"].tolist()
    assert a["probability"].between(0, 1).all()
    X = ws.load_raw_embeddings() if method == "kmeans" else ws.load_embeddings()
    assert np.array_equal(run.model.predict(X), a["cluster"].to_numpy())


def test_fit_json_and_weighting(ws, capsys):
    assert main(["fit", "-w", str(ws.root), "--k", "4", "--balance", "25", "--weight-by-tokens", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "gem-k4" and out["balance"] == 25.0 and 0 < out["normalized_entropy"] <= 1


def test_save_run_replaces_atomically(ws):
    from gem import GEM

    X = ws.load_embeddings()
    ids = ws.load_corpus()["id"].tolist()
    m1 = GEM(n_clusters=3, balance=0.0).fit(X)
    save_run(ws, "same", m1, "gem", {"k": 3}, ids, X=X)
    m2 = GEM(n_clusters=5, balance=0.0).fit(X)
    save_run(ws, "same", m2, "gem", {"k": 5}, ids, X=X)
    run = load_run(ws, "same")
    assert run.params["k"] == 5 and run.model.mean_directions_.shape[0] == 5
    assert ws.runs() == ["same"]
    with pytest.raises(ValueError):
        save_run(ws, "short", m2, "gem", {}, ids[:-1])


def test_compare_json(ws, capsys):
    assert main(["compare", "--workspace", str(ws.root), "--k", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["method"] for r in rows]
    assert names == ["kmeans", "kmeans-unit", "spherical-kmeans", "faiss-spherical", "vmf", "gem (auto)", "gem (5000)"]
    for r in rows:
        assert {"normalized_entropy", "largest_share", "nmi_source", "ari_category"} <= set(r)
    assert main(["compare", "--workspace", str(ws.root), "--k", "6"]) == 0
    assert "gem (auto)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["fit", "--k", "100000"], "larger than the number"),
    (["fit", "--representation", "layer3"], "layer3"),
    (["fit", "--run", "../evil"], "invalid run name"),
])
def test_fit_bad_input_exits_2(ws, argv, needle, capsys):
    assert main(argv[:1] + ["--workspace", str(ws.root)] + argv[1:]) == 2
    assert needle in capsys.readouterr().err


def test_fit_device_is_checked_and_recorded(ws, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not ws.run_dir("gem-k6").exists()
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--method", "kmeans", "--device", "cuda"]) == 2
    assert "only GEM and the vMF mixture run on a GPU" in capsys.readouterr().err
    # auto falls back to the CPU; the device is recorded but is not a setting (same run identity)
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--device", "auto"]) == 0
    info = json.loads((ws.run_dir("gem-k6") / "params.json").read_text())
    assert info["device"] == "cpu" and "device" not in info["params"]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_matches_the_cpu_run(ws):
    from sklearn.metrics import adjusted_rand_score

    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "cpu"]) == 0
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "gpu", "--device", "cuda"]) == 0
    cpu, gpu = load_run(ws, "cpu"), load_run(ws, "gpu")
    assert gpu.info["device"].startswith("cuda")
    assert adjusted_rand_score(cpu.assignments["cluster"], gpu.assignments["cluster"]) > 0.99


def test_load_missing_run(ws):
    with pytest.raises(FileNotFoundError, match="no such run"):
        load_run(ws, "nope")


def test_load_run_documents_in_assignment_order_and_stale_workspaces(ws):
    from gem.runs import load_run_documents

    assert main(["fit", "--workspace", str(ws.root), "--method", "gem", "--k", "6", "--run", "r"]) == 0
    corpus = ws.load_corpus()
    unit = ws.load_embeddings("final")
    # a run whose documents are listed in another order than the corpus
    run = load_run(ws, "r")
    run.assignments = run.assignments.iloc[::-1].reset_index(drop=True)
    save_run(ws, "rev", run.model, "gem", run.params, run.assignments["id"], X=None)
    loaded, docs, rows, X = load_run_documents(ws, "rev", columns=["id", "text"])
    assert loaded.representation == "final" and list(docs.columns) == ["id", "text"]
    assert list(docs["id"]) == list(run.assignments["id"]) == list(corpus["id"].iloc[rows])
    assert X.dtype == np.float32 and np.array_equal(X, unit[rows])
    # the corpus lost a document the run assigned
    corpus.iloc[1:].to_parquet(ws.corpus_path)
    ws.save_embeddings("final", unit[1:], np.ones(len(unit) - 1, dtype=np.float32), {})
    with pytest.raises(ValueError, match="'doc-0' is not in the workspace corpus"):
        load_run_documents(ws, "r")
    # embeddings no longer aligned with the corpus
    ws.save_embeddings("final", unit[2:], np.ones(len(unit) - 2, dtype=np.float32), {})
    with pytest.raises(ValueError, match="re-embed with `gem embed"):
        load_run_documents(ws, "r")


def test_fit_matches_a_gem_run_to_the_taxonomy_and_warm_starts(ws, capsys):
    """`gem fit` gives a GEM run the taxonomy's stable ids at once (as the app does), so `gem export`,
    `gem distill` and `gem label` speak T001...; --warm-from starts from a saved run, as the app's
    manual-balance fits do, and records it."""
    from gem.runs import FitSettings, fit_run
    from gem.taxonomy import Taxonomy

    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "auto", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["taxonomy"].startswith("run auto: 0 matched, 6 new")
    mapping = Taxonomy(ws.taxonomy_db).run_mapping("auto")
    assert sorted(mapping) == list(range(6)) and all(t.startswith("T") for t in mapping.values())

    assert main(["fit", "-w", str(ws.root), "--k", "6", "--balance", "1000", "--warm-from", "auto",
                 "--run", "l1000"]) == 0
    run = load_run(ws, "l1000")
    assert run.params["warm_start_from"] == "auto" and run.model.balance_ == 1000.0
    # the same settings and start through the library give the same run
    same = fit_run(ws, "again", FitSettings(k=6, balance=1000.0), warm_from=load_run(ws, "auto"))
    assert np.array_equal(same.labels_, run.assignments["cluster"].to_numpy())
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "plain", "--no-sync"]) == 0
    assert not Taxonomy(ws.taxonomy_db).run_mapping("plain")


def test_runs_refuse_embeddings_of_another_corpus(ws, capsys):
    """Same row count, other documents: the ids digest stored beside the embeddings no longer
    matches the corpus, and fitting refuses with the command that fixes it."""
    from gem.store import ids_digest

    corpus = ws.load_corpus()
    meta = {"ids_digest": ids_digest(corpus["id"])}
    ws.save_embeddings("final", ws.load_embeddings("final"), ws.load_norms("final"), meta)
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "ok", "--no-sync"]) == 0
    corpus.iloc[::-1].to_parquet(ws.corpus_path)  # reshuffled: same rows, other order
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "stale", "--no-sync"]) == 2
    err = capsys.readouterr().err
    assert "was made for other documents (or another order)" in err and "gem embed -w" in err
    with pytest.raises(ValueError, match="made for other documents"):
        from gem.runs import load_run_documents

        load_run_documents(ws, "ok")


def test_export_refuses_embeddings_of_another_corpus(ws, capsys):
    from gem.store import ids_digest

    corpus = ws.load_corpus()
    ws.save_embeddings("final", ws.load_embeddings("final"), ws.load_norms("final"),
                       {"ids_digest": ids_digest(corpus["id"])})
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "r"]) == 0
    corpus.iloc[::-1].to_parquet(ws.corpus_path)
    capsys.readouterr()
    assert main(["export", "-w", str(ws.root), "--run", "r", "--out", str(ws.root / "b")]) == 2
    assert "made for other documents" in capsys.readouterr().err
    assert not (ws.root / "b").exists()


def test_a_run_lost_mid_replace_is_recovered_on_open(ws):
    """A kill between moving the old run folder away and moving the new one in leaves only the
    hidden old copy: opening the run restores it (gem.store.recover_dir)."""
    import os

    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "r", "--no-sync"]) == 0
    folder = ws.run_dir("r")
    hidden = folder.with_name(f".r.old-{2**22 + 12345}-0123abcd")  # a pid that is not running
    os.rename(folder, hidden)
    assert load_run(ws, "r").params["k"] == 6
    assert folder.is_dir() and not hidden.exists()


def test_fit_without_excluded_documents_and_run_is_current_notices_new_flags(ws, capsys):
    """Once documents are excluded (gem flag), `gem fit` leaves them out by default: the run's
    assignments lack them, params.json records the exclusions, and a new flag makes the run stale."""
    from gem.flags import DocFlags
    from gem.runs import FitSettings, fit_run, load_run_documents, run_is_current

    ids = ws.load_corpus()["id"].astype(str).tolist()
    out = ids[5:35]
    DocFlags(ws).exclude(out, "junk", "alice")
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "x", "--no-sync", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["excluded_documents"] == 30
    run = load_run(ws, "x")
    assert run.params["exclude_flagged"] is True and run.info["exclusions"]["n_excluded"] == 30
    assert run.assignments["id"].tolist() == [i for i in ids if i not in set(out)]
    # readers align by id: the documents of the run are the kept ones, embeddings row for row
    _, docs, rows, X = load_run_documents(ws, "x", columns=["id"])
    assert docs["id"].tolist() == run.assignments["id"].tolist()
    assert np.array_equal(X, ws.load_embeddings()[rows])
    assert main(["fit", "-w", str(ws.root), "--k", "6", "--run", "all", "--no-sync", "--no-exclude-flagged"]) == 0
    assert len(load_run(ws, "all").assignments) == len(ids)

    settings = FitSettings(k=6, exclude_flagged=True)
    assert settings.slug().endswith("-x") and FitSettings(k=6).params() == {
        k: v for k, v in settings.params().items() if k != "exclude_flagged"}
    fit_run(ws, settings.slug(), settings)
    assert run_is_current(ws, settings.slug(), settings)
    assert not run_is_current(ws, settings.slug(), FitSettings(k=6))  # other settings
    DocFlags(ws).exclude(ids[:1], "duplicate", "bob")
    assert not run_is_current(ws, settings.slug(), settings)
    DocFlags(ws).undo("bob")
    assert run_is_current(ws, settings.slug(), settings)
    DocFlags(ws).exclude(ids[:len(ids) - 3], "junk", "alice")
    with pytest.raises(ValueError, match="fewer than K"):
        fit_run(ws, "tiny", settings)
