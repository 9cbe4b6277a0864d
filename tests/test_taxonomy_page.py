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
    at.switch_page(PAGE).run()
    at.number_input(key="tx_k").set_value(4).run()
    assert not at.exception, at.exception
    return at


def _editor(at):
    return at.data_editor(key="tx_editor").value


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
    at.session_state["tx_editor"] = {"edited_rows": {0: {"name": LABEL, "excluded": True}}, "added_rows": [],
                                     "deleted_rows": []}
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
    at.number_input(key="tx_seed").set_value(3).run()
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
    at.session_state["tx_editor"] = {"edited_rows": {0: {"name": "Bob's name"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert any("changed by carol" in e.value for e in at.error)
    assert tax.topic(first)["name"] == "Carol's name"
    assert _editor(at).set_index("id").loc[first, "name"] == "Carol's name"  # reloaded, not overwritten
