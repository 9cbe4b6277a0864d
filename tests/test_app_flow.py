"""AppTest of the curator flow across pages: one current fit shared by every page (a saved run that
`gem` commands read), the same visible settings giving the same fit, and the taxonomy (names,
exclusions) following every re-fit into the Mixture page. Real GEM fits, real SQLite; no mocks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gem.runs import load_run
from gem.taxonomy import Taxonomy

pytest.importorskip("streamlit.testing.v1")


def _clean(at, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def _run_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Run "))


def _open(app_test, ws, page: str, **state):
    """The app at ``page`` with K = 4 and curator alice (plus ``state``), checked clean; and the
    workspace taxonomy."""
    at = app_test(ws)
    for key, value in {"fit_k": 4, "gem_author": "alice", **state}.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    _clean(at, page)
    return at, Taxonomy(ws.taxonomy_db)


def _set(at, **state):
    """Change the current fit's settings. AppTest drops the sidebar of an st.navigation app after
    its first run (the browser tests drive the real widgets), so tests set the plain session keys
    the sidebar widgets write (pages.common.KEY_FIT_*)."""
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


@pytest.mark.slow
def test_one_current_fit_is_shared_by_every_page(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["fit_k"] = 5
    at.run()
    assert at.number_input(key="w_fit_k").value == 5  # the sidebar control, drawn on every page
    assert at.sidebar.text[-1].value == "gem-k5-auto-s0"  # the sidebar names the run
    seen = {}
    for page in ("pages/2_Clusters.py", "pages/3_Taxonomy.py", "pages/4_Mixture.py", "pages/5_Student.py"):
        at.switch_page(page).run()
        _clean(at, page)
        seen[page] = _run_caption(at)
        assert at.session_state["fit_k"] == 5  # a page never resets the shared K
    assert all(c.startswith(r"Run gem\-k5\-auto\-s0") for c in seen.values()), seen
    assert ws.runs() == ["gem-k5-auto-s0", "kmeans-k5-s0"]  # fitted once, saved as runs `gem` reads


@pytest.mark.slow
def test_same_visible_settings_give_the_same_fit(app_test, synthetic_workspace):
    """Automatic balance toggled off and on gives the same lambda; a manual lambda gives the same
    run whichever lambda was shown before (it starts from the auto run, not the last fit)."""
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["fit_k"] = 4
    at.run()
    at.switch_page("pages/2_Clusters.py").run()
    _clean(at, "auto")
    lam_auto = load_run(ws, "gem-k4-auto-s0").model.balance_

    _set(at, fit_auto=False, fit_lambda=100.0)
    _clean(at, "lambda 100")
    _set(at, fit_lambda=1000.0)
    _clean(at, "lambda 1000 after 100")
    via_100 = load_run(ws, "gem-k4-l1000-s0")
    assert via_100.params["warm_start_from"] == "gem-k4-auto-s0"

    _set(at, fit_lambda=100.0)  # back to a run on disk: loaded, not fitted again
    _clean(at, "lambda 100 again")
    assert r"(loaded from disk)" in _run_caption(at).replace("\\", "")

    _set(at, fit_auto=True)
    _clean(at, "auto again")
    assert load_run(ws, "gem-k4-auto-s0").model.balance_ == lam_auto
    assert rf"λ used = {lam_auto:.4g}".replace(".", r"\.") in _run_caption(at)

    # a fresh session that goes straight to 1000 gets the same run, label for label
    (ws.run_dir("gem-k4-l1000-s0") / "params.json").unlink()
    at2 = app_test(ws)
    at2.session_state["fit_k"] = 4
    at2.session_state["fit_auto"] = False
    at2.session_state["fit_lambda"] = 1000.0
    at2.run()
    at2.switch_page("pages/2_Clusters.py").run()
    _clean(at2, "direct 1000")
    direct = load_run(ws, "gem-k4-l1000-s0")
    assert np.array_equal(direct.assignments["cluster"].to_numpy(), via_100.assignments["cluster"].to_numpy())
    assert direct.model.objective_ == pytest.approx(via_100.model.objective_, rel=1e-12)


@pytest.mark.slow
def test_taxonomy_follows_a_lambda_change_into_the_mixture(app_test, synthetic_workspace):
    """Rename and exclude on the Taxonomy page, change lambda (sidebar) on the Mixture page: the
    domains keep the names and ids, and the excluded topic stays out of the mix."""
    ws = synthetic_workspace
    at, tax = _open(app_test, ws, "pages/3_Taxonomy.py")
    topics = tax.topics(run="gem-k4-auto-s0").sort_values("n_docs", ascending=False)
    named, dropped = topics["id"].iloc[0], topics["id"].iloc[1]
    tax.update_topic(named, tax.topic(named)["version"], "alice", name="Astronomy **bold**")
    tax.update_topic(dropped, tax.topic(dropped)["version"], "alice", excluded=True)

    at.switch_page("pages/4_Mixture.py").run()
    _clean(at, "mixture")
    _set(at, fit_auto=False, fit_lambda=100000.0)
    _clean(at, "mixture after the lambda change")
    assert _run_caption(at).startswith(r"Run gem\-k4\-l100000\-s0")
    table = at.dataframe[-1].value.set_index("id")  # the weights table
    assert table.loc[named, "label"] == "Astronomy **bold**"
    assert dropped not in table.index or table.loc[dropped, "weight"] == 0
    assert abs(table["weight"].sum() - 1) < 1e-12
    editor = at.data_editor[-1].value.set_index("id")
    assert bool(editor.loc[dropped, "exclude"])


@pytest.mark.slow
def test_a_new_session_reopens_the_workspace_in_the_address(app_test, synthetic_workspace, make_workspace):
    other = make_workspace(n=120)
    at = app_test(synthetic_workspace)
    at.query_params["ws"] = other.root.name
    at.run()
    _clean(at, "home")
    assert at.session_state["gem_workspace"] == str(other.root)
    assert other.root.name in at.selectbox(key="sb_workspace").options
    # a name outside the workspaces folder is ignored (the default opens)
    at2 = app_test(synthetic_workspace)
    at2.query_params["ws"] = "../../etc"
    at2.run()
    assert at2.session_state["gem_workspace"] == str(synthetic_workspace.root)


def _bundle_files(path) -> dict[str, bytes]:
    """Every file of a bundle, with its creation time (and the checksums that cover it) blanked."""
    import json
    import re

    out = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".json":
            data = re.sub(rb'"(created_at|exported_at)": "[^"]*"', rb'"\1": ""', data)
            if f.name == "MANIFEST.json":  # its checksums of the time-stamped files cover the stamps
                obj = json.loads(data)
                for stamped in ("mixture.json", "taxonomy.json"):
                    obj["files"].pop(stamped)
                data = json.dumps(obj, sort_keys=True).encode()
        out[str(f.relative_to(path))] = data
    return out


@pytest.mark.slow
def test_app_bundle_equals_the_cli_bundle(app_test, synthetic_workspace, tmp_path):
    """The Mixture page's export and the `gem export` line it shows write the same bundle, byte for
    byte apart from the creation time: same run, taxonomy ids, names, exclusions, GIS, weights."""
    import shlex

    from gem import mixture as mx
    from gem.cli import main

    ws = synthetic_workspace
    at, tax = _open(app_test, ws, "pages/4_Mixture.py")
    topics = tax.topics(run="gem-k4-auto-s0")
    tid = topics["id"].iloc[0]
    tax.update_topic(tid, tax.topic(tid)["version"], "alice", name='Space "quoted" <b>', excluded=True)
    at.radio(key="mx_strategy").set_value("temperature").run()
    at.number_input(key="mx_budget").set_value(2_000_000_000).run()
    at.button(key="mx_export").click().run()
    _clean(at, "export")
    assert any("Wrote and validated" in s.value for s in at.success)
    command = next(c.value for c in at.code if c.value.startswith("gem export"))
    app_bundle = ws.exports_dir / "gem-k4-auto-s0-temperature"
    report = mx.validate_bundle(app_bundle)
    assert "taxonomy" in report["formats"] and "assignments" in report["formats"]

    argv = shlex.split(command)[1:]
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(tmp_path / "cli")
    assert out == str(app_bundle)
    assert main(argv) == 0
    app_files, cli_files = _bundle_files(app_bundle), _bundle_files(tmp_path / "cli")
    assert app_files.keys() == cli_files.keys()
    differ = [name for name in app_files if app_files[name] != cli_files[name]]
    import difflib
    detail = {n: list(difflib.unified_diff(app_files[n].decode(errors="replace").splitlines(),
                                           cli_files[n].decode(errors="replace").splitlines(), lineterm="", n=0))[:8]
              for n in differ}
    assert not differ, f"these files differ between the app's and the CLI's bundle: {detail}"
    # and the bundle carries the curator's decisions and finite scores
    import pandas as pd

    docs = pd.read_parquet(app_bundle / "assignments.parquet")
    assert docs["gis"].notna().all() and docs["probability"].between(0, 1).all()
    assert docs["excluded"].tolist() == (docs["domain_id"] == tid).tolist() and docs["excluded"].any()
    mix = json.loads((app_bundle / "mixture.json").read_text())
    excluded = {d["id"]: d for d in mix["domains"]}[tid]
    assert excluded["excluded"] and excluded["weight"] == 0 and excluded["label"] == 'Space "quoted" <b>'
    assert mix["clustering"]["run"] == "gem-k4-auto-s0" and mix["clustering"]["params"]["k"] == 4
