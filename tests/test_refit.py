"""The fit policy (gem.refit): a re-fit after a small change of the documents starts from the
previous fit, so topics move only as much as the data did; `gem fit` and the app share it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gem.cli import main
from gem.flags import DocFlags
from gem.refit import KEPT_JACCARD, topic_members, topic_moves, warm_start_for
from gem.runs import FitSettings, load_run
from gem.store import SAMPLE_DATA_DIR, Workspace, write_parquet_atomic


def _sample_slice(root, n: int = 1500, seed: int = 0) -> Workspace:
    """n real documents of the sample (MiniLM embeddings), drawn at random across its sources."""
    corpus = pd.read_parquet(SAMPLE_DATA_DIR / "corpus.parquet")
    unit = np.load(SAMPLE_DATA_DIR / "embeddings" / "final.npy")
    norms = np.load(SAMPLE_DATA_DIR / "embeddings" / "final.norms.npy")
    rows = np.sort(np.random.default_rng(seed).choice(len(corpus), n, replace=False))
    ws = Workspace(root)
    root.mkdir(parents=True)
    write_parquet_atomic(ws.corpus_path, corpus.iloc[rows].reset_index(drop=True))
    ws.save_embeddings("final", unit[rows], norms[rows], {"representation": "final", "n": n, "dim": unit.shape[1]})
    return ws


@pytest.fixture
def real_ws(tmp_path):
    return _sample_slice(tmp_path / "slice")


def _fit(ws, *extra) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fit", "-w", str(ws.root), "--k", "24", "--run", "r", "--json", *extra]) == 0
    return json.loads(out.getvalue())


def _exclude(ws, n: int, seed: int = 1) -> list[str]:
    ids = ws.load_corpus(columns=["id"])["id"].astype(str).to_numpy()
    picked = np.random.default_rng(seed).choice(ids, n, replace=False).tolist()
    DocFlags(ws).exclude(picked, "boilerplate", "ana")
    return picked


def test_excluding_5_of_1500_keeps_every_topic(real_ws):
    """The issue's goal: after excluding 5 of 1,500 real documents, `gem fit` (default) keeps every
    topic at members' Jaccard >= 0.9 and retires none; the CLI says what moved."""
    _fit(real_ws)
    before = topic_members(real_ws, "r")
    _exclude(real_ws, 5)
    summary = _fit(real_ws)
    assert summary["warm_start_from"] == "r" and summary["excluded_documents"] == 5
    assert "what_moved" in summary and "24 of 24 topics kept" in summary["what_moved"]
    moves = topic_moves(before, topic_members(real_ws, "r"), "before", "after")
    assert not moves.retired and not moves.created
    assert moves.min_jaccard >= KEPT_JACCARD
    assert "0 retired" in summary["taxonomy"] and "0 new" in summary["taxonomy"]
    assert load_run(real_ws, "r").params["warm_start_from"] == "r"


def test_cold_fit_and_warm_from_are_the_callers_choice(real_ws, capsys):
    _fit(real_ws)
    _exclude(real_ws, 5)
    summary = _fit(real_ws, "--cold")
    assert "warm_start_from" not in summary and "what_moved" not in summary
    assert "warm_start_from" not in load_run(real_ws, "r").params
    assert main(["fit", "-w", str(real_ws.root), "--k", "24", "--run", "x", "--cold", "--warm-from", "r"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_a_manual_balance_starts_from_the_auto_run_in_the_cli_as_in_the_app(real_ws):
    """`gem fit --balance 1000` fits (or reuses) the auto run of the same K and seed first and
    starts there, so the CLI and the app give one run for one set of settings."""
    summary = _fit(real_ws, "--balance", "1000")
    auto = FitSettings(k=24).slug()
    assert summary["fitted_first"] == auto and summary["warm_start_from"] == auto
    via_cli = load_run(real_ws, "r")
    from gem.runs import fit_run

    same = fit_run(real_ws, "lib", FitSettings(k=24, balance=1000.0), warm_from=load_run(real_ws, auto))
    assert np.array_equal(same.labels_, via_cli.assignments["cluster"].to_numpy())
    # the auto run is reused when current: not fitted a second time
    assert "fitted_first" not in _fit(real_ws, "--balance", "100")


def test_warm_start_source_follows_the_settings(real_ws):
    s = FitSettings(k=24)
    assert warm_start_for(real_ws, s) is None  # nothing on disk: cold
    _fit(real_ws, "--run", s.slug())
    _exclude(real_ws, 3)
    x = s.replace(exclude_flagged=True)
    # the fit without the excluded documents starts from the fit with them (another run name)
    start = warm_start_for(real_ws, x)
    assert start is not None and (start.run, start.reason) == (s.slug(), "documents")
    assert warm_start_for(real_ws, x, cold=True) is None
    # other settings are never a "documents changed" start
    assert warm_start_for(real_ws, s.replace(seed=1)) is None
    assert warm_start_for(real_ws, s.replace(k=12, exclude_flagged=True)) is None
    manual = warm_start_for(real_ws, x.replace(balance=100.0), cold=True)
    assert (manual.run, manual.reason) == (x.slug(), "balance")


def test_topic_moves_counts_kept_moved_retired_and_new():
    before = {"T001": {"a", "b", "c", "d"}, "T002": {"e", "f"}, "T003": {"g"}}
    after = {"T001": {"a", "b", "c", "d", "x"}, "T002": {"e", "y", "z"}, "T004": {"g"}}
    moves = topic_moves(before, after, "old", "new")
    assert [r["topic"] for r in moves.rows] == ["T001", "T002"]
    assert moves.rows[0]["jaccard"] == 0.8 and moves.rows[1]["jaccard"] == 0.25
    assert moves.moved == ["T001", "T002"] and moves.retired == ["T003"] and moves.created == ["T004"]
    assert moves.anything_moved and "retired: T003" in moves.summary()
    assert not topic_moves(before, before, "a", "b").anything_moved
