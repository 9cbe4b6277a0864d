"""AppTest of the Taxonomy page on the synthetic workspace (real GEM fits, real SQLite; no mocks)."""
from __future__ import annotations

import numpy as np
import pytest

from gem.taxonomy import Taxonomy

pytest.importorskip("streamlit.testing.v1")

PAGE = "pages/3_Taxonomy.py"
LABEL = "<b>Space</b> & <script>x</script>"


def _open(app_test, ws, author="alice"):
    at = app_test(ws)
    # AppTest runs the page alone (app.py's sidebar name field is not rendered): give the name
    # through the field's session key before the first run, as the sidebar would
    at.session_state["gem_author"] = author
    at.session_state["fit_k"] = 4  # the current fit's K (a sidebar control in the full app)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _editor_key(at) -> str:
    return f"tx_editor_{at.session_state['tx_editor_gen'] if 'tx_editor_gen' in at.session_state else 0}"


def _editor(at):
    return at.data_editor(key=_editor_key(at)).value


def _edit(at, rows: dict) -> None:
    """Seed cell edits into the editor's state, as the browser sends them."""
    at.session_state[_editor_key(at)] = {"edited_rows": rows, "added_rows": [], "deleted_rows": []}


@pytest.mark.slow  # real GEM fits inside AppTest (~10 s on 2 busy cores)
def test_edit_label_refit_and_label_is_kept(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = _open(app_test, ws)
    table = _editor(at)
    assert len(table) == 4
    gis = table["GIS"].to_numpy()
    assert np.all(np.diff(gis) <= 1e-9)  # ranked by mean GIS
    assert any("0 of 4 topics approved" in p.proto.text for p in at.get("progress"))
    first = table["id"].iloc[0]

    # a curator renames the top topic (cell edit seeded into the editor's state) and excludes it
    _edit(at, {0: {"name": LABEL, "excluded": True}})
    at.run()
    assert not at.exception, at.exception
    tax = Taxonomy(ws.taxonomy_db)
    assert tax.topic(first)["name"] == LABEL and tax.topic(first)["excluded"] is True
    assert tax.audit(first)["author"].iloc[-1] == "alice"
    row = _editor(at).set_index("id").loc[first]
    assert row["name"] == LABEL and bool(row["excluded"])
    # shown as text, never as markup
    assert not any("<script>" in m.value for m in at.markdown)

    # re-fit with another seed: the same topic keeps its id, label and exclusion
    at.session_state["fit_seed"] = 3
    at.run()
    assert not at.exception, at.exception
    after = _editor(at).set_index("id")
    assert first in after.index and after.loc[first, "name"] == LABEL and bool(after.loc[first, "excluded"])
    assert len(Taxonomy(ws.taxonomy_db).topics()) >= 4

    # approve-and-next walks the unreviewed topics in GIS order
    at.selectbox(key="tx_topic").set_value(first).run()
    at.button(key="tx_approve").click().run()
    assert not at.exception, at.exception
    assert Taxonomy(ws.taxonomy_db).topic(first)["review"] == "approved"
    assert at.selectbox(key="tx_topic").value != first
    assert any("1 of 4 topics approved" in p.proto.text for p in at.get("progress"))


@pytest.mark.slow
def test_stale_edit_is_refused_on_the_page(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = _open(app_test, ws, author="bob")
    first = _editor(at)["id"].iloc[0]
    # another curator saves the same topic after bob loaded the page
    tax = Taxonomy(ws.taxonomy_db)
    tax.update_topic(first, tax.topic(first)["version"], "carol", name="Carol's name")
    _edit(at, {0: {"name": "Bob's name"}})
    at.run()
    assert any("changed by carol" in e.value for e in at.error)
    assert tax.topic(first)["name"] == "Carol's name"
    # the grid shows the stored value (a new editor key: the browser drops the refused text) ...
    assert _editor_key(at) != "tx_editor_0"
    assert _editor(at).set_index("id").loc[first, "name"] == "Carol's name"  # reloaded, not overwritten
    # ... and the refused edit is listed beside it, so bob can re-apply it
    refused = next(d.value for d in at.dataframe if "your value (not saved)" in d.value.columns)
    row = refused[refused["field"] == "name"].iloc[0]
    assert row["topic"] == first and row["your value (not saved)"] == "Bob's name"
    assert row["stored value"] == "Carol's name" and row["stored by"] == "carol"


@pytest.mark.slow
def test_rename_to_another_topics_name_is_refused_on_the_page(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = _open(app_test, ws)
    table = _editor(at)
    first, second = table["id"].iloc[0], table["id"].iloc[1]
    other_name = table["name"].iloc[1]
    _edit(at, {0: {"name": other_name}})
    at.run()
    assert not at.exception, at.exception
    (err,) = [e.value for e in at.error]
    assert f"{second} is already named" in err and "try" in err
    assert Taxonomy(ws.taxonomy_db).topic(first)["name"] != other_name


@pytest.mark.slow
def test_add_group_and_approve_and_next_say_what_they_did(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = _open(app_test, ws)
    at.text_input(key="tx_group_name").set_value("Science & <b>x</b>").run()
    at.button(key="tx_add_group").click().run()
    assert not at.exception, at.exception
    shown = [s.value.replace("\\", "") for s in at.success]  # markdown-escaped plain text
    assert shown == ["Added group G001: Science & <b>x</b>"]
    assert Taxonomy(ws.taxonomy_db).groups()["name"].tolist() == ["Science & <b>x</b>"]
    assert not any("<b>" in m.value for m in at.markdown)

    order = list(_editor(at)["id"])
    names = dict(zip(_editor(at)["id"], _editor(at)["name"]))
    at.selectbox(key="tx_topic").set_value(order[0]).run()
    at.button(key="tx_approve").click().run()
    assert not at.exception, at.exception
    shown = [s.value.replace("\\", "") for s in at.success]
    assert shown == [f"Approved {order[0]} ({names[order[0]]}); next unreviewed: {order[1]} ({names[order[1]]})"]
    assert at.selectbox(key="tx_topic").value == order[1]
    at.run()  # shown once
    assert not at.success
