"""`gem mixlab design|proxy|fit|best` end to end on the small synthetic workspace, and its errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gem import mixture as mx
from gem.cli import main
from gem.mixlab import load_swarm


@pytest.fixture
def fitted(synthetic_workspace):
    from gem.runs import FitSettings, fit_run

    ws = synthetic_workspace
    fit_run(ws, "g4", FitSettings(method="gem", k=4))
    return ws


def _gem(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(map(str, args)))
    out, err = capsys.readouterr()
    return rc, out, err


def test_round_trip_design_proxy_fit_best(fitted, capsys):
    ws = fitted
    rc, out, err = _gem(capsys, "mixlab", "design", "-w", ws.root, "--run", "g4", "--n", 16, "--alpha", 2,
                        "--max-epochs", 3, "--seed", 1)
    assert rc == 0, err
    folder = ws.root / "mixlab" / "g4-n16-a2-s1"
    swarm = load_swarm(folder)
    assert len(swarm.weights) == 19 and "19/19 mixtures" in err
    frame = pd.read_csv(folder / "swarm.csv")
    assert frame.columns[:2].tolist() == ["mixture_id", "kind"]
    np.testing.assert_allclose(frame[swarm.ids].sum(axis=1), 1.0, atol=1e-12)
    for mid in ("natural", "m007"):  # each mixture's trainer files carry its swarm.csv weights
        report = mx.validate_bundle(folder / "mixtures" / mid)
        assert set(report["formats"]) == {"megatron", "olmo", "hf"}
        row = frame.set_index("mixture_id").loc[mid, swarm.ids]
        for dom, w in report["weights"].items():
            assert w == pytest.approx(row[dom], abs=1e-9)

    rc, out, err = _gem(capsys, "mixlab", "proxy", "-w", ws.root, "--swarm", folder.name,
                        "--target", "label:category=cooking", "--tokens", 2000, "--eval-tokens", 500)
    assert rc == 0, err
    results = pd.read_csv(folder / "results.csv")
    assert results["mixture_id"].tolist() == swarm.weights.index.tolist()
    assert np.isfinite(results["xent_bits"]).all() and results["xent_bits"].std() > 0
    assert "proxy: 19/19 mixtures" in err

    rc, out, err = _gem(capsys, "mixlab", "fit", "-w", ws.root, "--swarm", folder)
    assert rc == 0, err
    summary = json.loads((folder / "fit.json").read_text())["xent_bits"]
    assert summary["minimize"] is True and -1 <= summary["spearman_rho_cv"] <= 1
    assert "held-out Spearman rho" in out

    excluded, floor = swarm.ids[0], swarm.ids[1]
    out_dir = ws.exports_dir / "best-cooking"
    rc, out, err = _gem(capsys, "mixlab", "best", "-w", ws.root, "--swarm", folder.name, "--exclude", excluded,
                        "--floor", f"{floor}=0.2", "--candidates", 2000, "--out", out_dir)
    assert rc == 0, err
    report = mx.validate_bundle(out_dir)
    assert excluded not in report["weights"] and report["weights"][floor] >= 0.2 - 1e-9
    doc = json.loads((out_dir / "mixture.json").read_text())
    assert doc["strategy"]["name"] == "imported"
    active = [d for d in doc["domains"] if d["weight"] > 0]
    assert active and {d["weight_source"] for d in active} == {"mixlab"}
    assert doc["extra"]["mixlab"]["metric"] == "xent_bits" and doc["extra"]["mixlab"]["swarm"] == folder.name
    assert all(d["implied_epochs"] <= 3 + 1e-9 for d in active)
    for name in ("natural", "balanced", "unimax", "predicted best"):
        assert name in out


def test_bad_input_exits_2_with_one_line(fitted, capsys, tmp_path):
    ws = fitted
    assert _gem(capsys, "mixlab", "design", "-w", ws.root, "--run", "g4", "--n", 8)[0] == 0
    swarm = "g4-n8-a1-s0"
    bad = tmp_path / "results.csv"
    bad.write_text("mixture_id,val_loss\nnatural,2.0\nm003,oops\n")
    rc, out, err = _gem(capsys, "mixlab", "fit", "-w", ws.root, "--swarm", swarm, "--results", bad)
    assert rc == 2 and "line 3: val_loss of mixture 'm003' is 'oops'" in err and err.count("\n") == 1
    rc, _, err = _gem(capsys, "mixlab", "fit", "-w", ws.root, "--swarm", swarm)
    assert rc == 2 and "no results" in err
    rc, _, err = _gem(capsys, "mixlab", "proxy", "-w", ws.root, "--swarm", swarm, "--target", "label:colour=red")
    assert rc == 2 and "target label column 'colour' is not in the corpus" in err
    rc, _, err = _gem(capsys, "mixlab", "proxy", "-w", ws.root, "--swarm", swarm, "--target", "cooking")
    assert rc == 2 and "topic:<id>" in err
    rc, _, err = _gem(capsys, "mixlab", "design", "-w", ws.root, "--run", "g4", "--budget-tokens", 1e9)
    assert rc == 2 and "lower the token budget" in err
    rc, _, err = _gem(capsys, "mixlab", "fit", "-w", ws.root, "--swarm", "nope")
    assert rc == 2 and "no swarm there" in err


def test_compare_gem_with_kmeans_buckets(fitted, capsys):
    ws = fitted
    rc, out, err = _gem(capsys, "mixlab", "compare", "-w", ws.root, "--run", "g4", "--target", "label:category=cooking",
                        "--n", 10, "--tokens", 2000, "--eval-tokens", 500)
    assert rc == 0, err
    assert "kmeans-k4-s0" in ws.runs()             # the k-means twin: same K and seed, fitted on demand
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[1] for r in rows] == ["GEM", "kmeans-k4-s0"]
    assert all(-1 <= float(r[-2]) <= 1 for r in rows)
    rc, _, err = _gem(capsys, "mixlab", "compare", "-w", ws.root, "--run", "g4", "--target", "topic:t00")
    assert rc == 2 and "label or file target" in err


def test_compare_reads_each_runs_inputs_once(fitted, monkeypatch):
    """The swarm and the proxy of one bucketing share one read of the run's mixture inputs."""
    from gem.mixlab.compare import compare_bucketings
    from gem.mixlab.proxy import parse_target

    reads = []
    real = mx.mixture_inputs_from_run
    monkeypatch.setattr(mx, "mixture_inputs_from_run", lambda ws, run, **kw: reads.append(run) or real(ws, run, **kw))
    table = compare_bucketings(fitted, {"GEM": "g4"}, parse_target("label:category=cooking"), n=6,
                               tokens_per_mixture=2000, eval_tokens=500)
    assert reads == ["g4"] and len(table) == 1


def test_exported_best_mixture_leaves_out_and_lists_excluded_documents(fitted):
    """A Mixture lab bundle treats curator exclusions like `gem export`: the excluded documents are
    missing from assignments.parquet and listed in excluded_documents.jsonl."""
    from gem.flags import DocFlags
    from gem.mixlab import design_run
    from gem.mixlab.design import export_mixture

    ws = fitted
    gone = ws.load_corpus()["id"].astype(str).tolist()[:3]
    DocFlags(ws).exclude(gone, reason="junk", author="tester")
    swarm = design_run(ws, "g4", n=5, seed=0)
    out_dir = ws.exports_dir / "lab-best"
    export_mixture(ws, swarm, {swarm.ids[0]: 0.5, swarm.ids[1]: 0.5}, out_dir)
    listed = [json.loads(line)["id"] for line in (out_dir / "excluded_documents.jsonl").read_text().splitlines()]
    assert sorted(listed) == sorted(gone)
    assert not set(gone) & set(pd.read_parquet(out_dir / "assignments.parquet")["id"].astype(str))
