"""AppTest: what a page keeps in session state (a Mixture export, a student, the Mixture lab's
uploaded results and export, the Documents page's search highlight) is shown, downloaded and acted on
only in the workspace and fit it came from (pages.common.output_scope / keep_output / kept_output).

Two synthetic workspaces side by side in one folder (so the sidebar lists both), with the same run
names (gem-k6-auto-s0): what keeps them apart is the scope check, not keys popped on a switch, so
the tests switch the session's workspace without popping anything (AppTest drops the sidebar of an
st.navigation app after its first run; the sidebar's switch would also pop the fit keys)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit.testing.v1")

K = 6  # small K: the 240-document workspaces fit in well under a second
RUN = f"gem-k{K}-auto-s0"


def _clean(at, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def _two(make_workspace):
    a, b = make_workspace(), make_workspace(seed=1)
    assert a.root.parent == b.root.parent  # both listed by the sidebar (common.list_workspaces)
    return a, b


def _open(app_test, ws, page: str):
    at = app_test(ws)
    at.session_state["fit_k"] = K
    at.session_state["gem_author"] = "alice"
    at.run()
    assert ws.root.name in at.selectbox(key="sb_workspace").options  # the sidebar lists both workspaces
    at.switch_page(page).run()
    _clean(at, page)
    return at


def _switch(at, ws, page: str):
    """The session's workspace becomes ``ws`` (nothing popped), then ``page`` opens."""
    at.session_state["gem_workspace"] = str(ws.root)
    at.switch_page(page).run()
    _clean(at, f"{page} in {ws.root.name}")
    return at


def _successes(at) -> list[str]:
    return [s.value.replace("\\", "") for s in at.success]  # plain(): markdown-escaped


def _downloads(at) -> list[str]:
    return [d.proto.id for d in at.get("download_button")]


def _has_download(at, key: str) -> bool:
    return any(key in i for i in _downloads(at))


@pytest.mark.slow
def test_mixture_export_is_not_shown_in_another_workspace_or_after_a_refit(app_test, make_workspace):
    from gem.runs import FitSettings, fit_run

    a, b = _two(make_workspace)
    at = _open(app_test, a, "pages/4_Mixture.py")
    at.button(key="mx_export").click().run()
    _clean(at, "export in A")
    bundle = f"{RUN}-natural"
    assert f"Wrote and validated {bundle} (" in " ".join(_successes(at)) and _has_download(at, "mx_download")
    assert (a.exports_dir / bundle).is_dir()

    # workspace B has a run of the same name: A's bundle is neither announced nor offered
    _switch(at, b, "pages/4_Mixture.py")
    assert any(c.value.replace("\\", "").startswith(f"Run {RUN} (") for c in at.caption)  # B's own fit
    assert not any("Wrote and validated" in s for s in _successes(at))
    assert not _has_download(at, "mx_download")
    assert not (b.exports_dir / bundle).exists()

    # B's own export is B's, and does not follow the session back to A's fit once A's run is re-fitted
    at.button(key="mx_export").click().run()
    _clean(at, "export in B")
    assert f"Wrote and validated {bundle} (" in " ".join(_successes(at)) and _has_download(at, "mx_download")
    at.run()  # reruns keep it
    assert _has_download(at, "mx_download")
    settings = FitSettings(method="gem", k=K, balance="auto", seed=0, representation="final")
    assert settings.slug() == RUN
    fit_run(b, RUN, settings)  # a re-fit under the same name: another fit, another scope
    at.run()
    _clean(at, "after the re-fit")
    assert not any("Wrote and validated" in s for s in _successes(at))
    assert not _has_download(at, "mx_download")


@pytest.mark.slow
def test_student_report_is_not_shown_in_another_workspace(app_test, make_workspace):
    a, b = _two(make_workspace)
    at = _open(app_test, a, "pages/5_Student.py")
    next(x for x in at.button if x.label == "Train student").click().run()
    _clean(at, "train in A")
    assert "Top-1 agreement (held out)" in [m.label for m in at.metric]
    assert _has_download(at, "st_download")
    assert (a.root / "students" / f"{RUN}.bin").exists()

    _switch(at, b, "pages/5_Student.py")
    assert "Top-1 agreement (held out)" not in [m.label for m in at.metric]
    assert not _downloads(at)  # neither A's model nor its report
    assert not any("trained on run" in i.value for i in at.info)
    assert "Label a server-side folder" not in [h.value for h in at.subheader]  # nothing to label with
    assert not (b.root / "students").exists()


def _results_csv(ws, swarm_name: str) -> bytes:
    weights = pd.read_csv(ws.root / "mixlab" / swarm_name / "swarm.csv", dtype={"mixture_id": str, "kind": str})
    domains = [c for c in weights.columns if c not in ("mixture_id", "kind")]
    coef = np.random.default_rng(0).normal(size=len(domains))
    loss = 3.0 - weights[domains].to_numpy(np.float64) @ coef
    return pd.DataFrame({"mixture_id": weights["mixture_id"], "val_loss": loss}).to_csv(index=False).encode()


def _design(at, n: int = 16) -> str:
    at.number_input(key="ml_n").set_value(n)
    next(x for x in at.button if x.label == "Design swarm").click().run()
    _clean(at, "design")
    return at.session_state["ml_swarm"]


@pytest.mark.slow
def test_mixture_lab_results_and_export_are_not_used_in_another_workspace(app_test, make_workspace):
    a, b = _two(make_workspace)
    at = _open(app_test, b, "pages/6_Mixture_lab.py")
    swarm_b = _design(at)  # B has a swarm of the same name as A's (named after the run and settings)

    _switch(at, a, "pages/6_Mixture_lab.py")
    swarm_a = _design(at)
    assert swarm_a == swarm_b
    at.radio(key="ml_mode").set_value("upload measured results (CSV)").run()
    at.file_uploader[0].upload("results.csv", _results_csv(a, swarm_a)).run()
    _clean(at, "upload in A")
    assert any(c.value == "Using the uploaded results." for c in at.caption)
    at.button(key="ml_export_button").click().run()
    _clean(at, "export in A")
    assert any(s.startswith("Wrote and validated") for s in _successes(at)) and _has_download(at, "ml_download")

    # B: the same swarm name, no results of its own: A's upload, best mixture and bundle stay in A
    _switch(at, b, "pages/6_Mixture_lab.py")
    assert not any(c.value == "Using the uploaded results." for c in at.caption)
    assert any("No results for this swarm yet" in i.value for i in at.info)
    assert not any("Wrote and validated" in s for s in _successes(at))
    assert not _has_download(at, "ml_download")


@pytest.mark.slow
def test_search_highlight_is_drawn_only_in_its_workspace(app_test, make_workspace):
    """The Documents page's "Ring these results" rings them on the Clusters maps of the same
    workspace; another workspace's maps (whose ids are the same doc-0001, ...) ring nothing."""
    import json

    a, b = _two(make_workspace)
    at = _open(app_test, a, "pages/7_Documents.py")
    at.text_input(key="doc_query").set_value("law").run()
    at.button(key="doc_show_map").click().run()  # switches to the Clusters page
    assert at.title[0].value == "Clusters on the hypersphere"
    _clean(at, "clusters in A")

    def ringed() -> list:
        spec = json.loads(next(c for c in at.get("plotly_chart") if "map_gem" in c.proto.id).proto.spec)
        return [t for t in spec["data"] if t.get("name") == "search results"]

    assert any("Ringed: the" in c.value.replace("\\", "") for c in at.caption) and ringed()

    _switch(at, b, "pages/2_Clusters.py")
    assert not any("Ringed: the" in c.value.replace("\\", "") for c in at.caption)
    assert not ringed()


@pytest.mark.slow
def test_split_proposal_is_not_offered_in_another_workspace(app_test, make_workspace):
    """A split previewed on A's Taxonomy page (run gem-k6-auto-s0, topic T00x) cannot be accepted
    into B's taxonomy, which has a run and topic ids of the same names."""
    from gem.taxonomy import Taxonomy

    a, b = _two(make_workspace)
    at = _open(app_test, a, "pages/3_Taxonomy.py")
    at.button(key="tx_split_preview").click().run()
    _clean(at, "split preview in A")
    assert any(t.value.startswith("Preview: ") for t in at.text)
    assert any(x.key == "tx_split_accept" for x in at.button)

    _switch(at, b, "pages/3_Taxonomy.py")
    assert not any(t.value.startswith("Preview: ") for t in at.text)
    assert not any(x.key in ("tx_split_accept", "tx_split_discard") for x in at.button)
    assert not Taxonomy(b.taxonomy_db).split_children()
