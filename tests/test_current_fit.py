"""AppTest of the one current fit: a small change of the documents re-fits from the previous fit and
the page that triggered it says what moved; controls outside the sidebar write the one fit."""
from __future__ import annotations

import pytest

from gem.flags import DocFlags
from gem.runs import load_run

pytest.importorskip("streamlit.testing.v1")


def _clean(at, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def _texts(at) -> list[str]:
    return [c.value.replace("\\", "") for c in at.caption] + [t.value for t in at.text]


def test_excluding_a_few_documents_refits_warm_and_the_page_says_what_moved(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["fit_k"] = 4
    at.run()
    at.switch_page("pages/4_Mixture.py").run()
    _clean(at, "mixture")
    assert any(t.startswith("Run gem-k4-auto-s0 (fitted in") for t in _texts(at))
    ids = ws.load_corpus(columns=["id"])["id"].astype(str).tolist()
    DocFlags(ws).exclude(ids[10:15], "boilerplate", "alice")  # 5 of 240, as the Documents page does
    at.run()  # the next page run: "Fit without excluded documents" is on by default now
    _clean(at, "after exclusion")
    texts = _texts(at)
    run = next(t for t in texts if t.startswith("Run "))
    assert run.startswith("Run gem-k4-auto-s0-x (fitted in") and "warm-started from gem-k4-auto-s0" in run
    assert load_run(ws, "gem-k4-auto-s0-x").params["warm_start_from"] == "gem-k4-auto-s0"
    report = [t for t in texts if "topics kept at members' Jaccard" in t]
    assert report and "4 of 4 topics kept" in report[0], texts
    # a re-run without a new fit shows the same report (kept for this run), not a new one
    at.run()
    assert [t for t in _texts(at) if "topics kept" in t] == report


def test_sweep_use_writes_the_current_fit(app_test, synthetic_workspace):
    """"Use this λ" sets the current fit's own keys, and the run follows them on later reruns."""
    at = app_test(synthetic_workspace)
    at.session_state["fit_k"] = 4
    at.run()
    at.switch_page("pages/2_Clusters.py").run()
    at.number_input(key="cl_sweep_seeds").set_value(2).run()
    at.button(key="cl_sweep_run").click().run()
    _clean(at, "sweep")
    assert at.button(key="cl_sweep_run").label == "Recompute"
    at.button(key="cl_sweep_use_3").click().run()  # λ = 1000
    assert at.session_state["fit_auto"] is False and at.session_state["fit_lambda"] == 1000.0
    at.toggle(key="cl_match_colors").set_value(False).run()  # an unrelated control
    assert any(t.startswith("Run gem-k4-l1000-s0") for t in _texts(at))
