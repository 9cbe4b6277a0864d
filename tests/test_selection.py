"""A selection is a set of document ids, never row positions. Streamlit keeps a keyed table's
selected row positions when its data changes, so the Documents page's results, the Clusters maps
and the Taxonomy page's member tables are keyed by what produced them: a new search, fit, topic or
workspace starts with nothing selected, the Curate panels name the ids they will act on, and an
action writes exactly those ids (nothing when the table changed between the draw and the click)."""
import re
import shutil

import pytest

from gem.flags import DocFlags


def _clean(at, where: str):
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def _text(element) -> str:
    return element.value.replace("\\", "")  # common.plain escapes markdown


def test_selection_text_names_the_first_ids_cut_and_counts_the_rest():
    from pages.common import plain, selection_key, selection_text

    long_id = "debian:" + "x" * 60
    assert selection_text([]) == "0 selected"
    assert selection_text(["debian:cl-regex", "debian:foo"]) == "2 selected: debian:cl-regex, debian:foo"
    text = selection_text(["debian:cl-regex", long_id, "debian:foo", "a", "b", "c"])
    assert text == f"6 selected: debian:cl-regex, {long_id[:39]}…, debian:foo, … (and 3 more)"
    # ids are untrusted: shown through plain(), markdown and HTML stay text
    assert plain(selection_text(["**bold**", "<b>x</b>"])) == r"2 selected\: \*\*bold\*\*, \<b\>x\</b\>"
    # the widget key is a digest of what produced the table: same parts, same key; any part changed, a new one
    assert selection_key("t", "/ws", "q", ["a", "b"]) == selection_key("t", "/ws", "q", ("a", "b"))
    assert len({selection_key("t", *parts) for parts in [("/ws", "q", ["a", "b"]), ("/ws2", "q", ["a", "b"]),
                                                          ("/ws", "q2", ["a", "b"]), ("/ws", "q", ["b", "a"])]}) == 4


# ---------------------------------------------------------------------------- Documents page
def _documents(app_test, ws):
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 6
    at.run()
    at.switch_page("pages/7_Documents.py").run()
    _clean(at, "documents")
    return at


def _search(at, query: str):
    at.text_input(key="doc_query").set_value(query).run()
    _clean(at, f"search {query!r}")


def _results(at):
    """The search results table (its key carries a digest of what produced it)."""
    tables = [d for d in at.dataframe if d.key and re.fullmatch(r"doc_results(_\w+)?", d.key)]
    assert len(tables) == 1, [d.key for d in at.dataframe]
    return tables[0]


def _select_rows(at, rows: list[int]):
    """What a click on the rows' left edge sends: the table's selection state, set by its key."""
    at.session_state[_results(at).key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()


def _selected_rows(at) -> list[int]:
    return list(at.session_state[_results(at).key]["selection"]["rows"])


def _curate(at) -> str:
    """The Curate panel's line naming what its actions act on."""
    lines = [_text(c) for c in at.caption if re.match(r"[\d,]+ (documents )?selected", _text(c))]
    assert len(lines) == 1, [c.value for c in at.caption]
    return lines[0]


def _banners(at) -> list[str]:
    return [_text(s) for s in at.success]


def test_documents_new_search_kind_count_or_workspace_starts_with_nothing_selected(app_test, synthetic_workspace,
                                                                                  tmp_path, monkeypatch):
    import gem.search

    ws = synthetic_workspace
    # semantic search without the model (the synthetic embeddings have none): the query is a document's vector
    monkeypatch.setattr(gem.search, "embed_query", lambda ws_, query, representation="final":
                        gem.search.embeddings_matrix(ws_, representation)[3].astype("float32"))
    at = _documents(app_test, ws)
    _search(at, "about law")
    ids = _results(at).value["id"].astype(str).tolist()
    assert len(ids) > 8
    _select_rows(at, [0, 1, 2, 3, 4, 5])
    _clean(at, "select")
    assert _selected_rows(at) == [0, 1, 2, 3, 4, 5]
    # the panel names the ids it will act on (the first three, then how many more)
    assert _curate(at) == f"6 selected: {ids[0]}, {ids[1]}, {ids[2]}, … (and 3 more)."
    assert not at.button(key="doc_exclude").disabled

    _search(at, "about music")  # a new search: a new table, nothing ticked
    assert _selected_rows(at) == []
    assert _curate(at) == "0 selected."
    assert at.button(key="doc_exclude").disabled

    for change in (lambda: at.radio(key="doc_kind").set_value("semantic").run(),  # another kind
                   lambda: at.number_input(key="doc_k").set_value(20).run()):     # another number of results
        _select_rows(at, [0, 1])
        assert _curate(at).startswith("2 selected: ")
        change()
        _clean(at, "change")
        assert _selected_rows(at) == [] and _curate(at) == "0 selected."

    # the same search in another workspace (same ids, same results) starts with nothing selected
    _select_rows(at, [0, 1, 2])
    assert _curate(at).startswith("3 selected: ")
    other = tmp_path / "other_ws"
    shutil.copytree(ws.root, other)
    at.session_state["gem_workspace"] = str(other)
    at.run()
    _clean(at, "other workspace")
    assert _selected_rows(at) == [] and _curate(at) == "0 selected."


def test_documents_add_tag_writes_exactly_the_selected_ids_and_the_banner_stays(app_test, synthetic_workspace,
                                                                               tmp_path):
    ws = synthetic_workspace
    at = _documents(app_test, ws)
    _search(at, "about law")
    ids = _results(at).value["id"].astype(str).tolist()
    at.text_input(key="doc_tag").set_value("needs-review").run()
    _select_rows(at, [1, 3, 4])
    picked = [ids[1], ids[3], ids[4]]
    assert _curate(at) == f"3 selected: {', '.join(picked)}."
    at.button(key="doc_add_tag").click().run()
    _clean(at, "add tag")
    flagged = DocFlags(ws).table()
    assert sorted(flagged["id"]) == sorted(picked)
    assert all(list(t) == ["needs-review"] for t in flagged["tags"])
    # the flags changed, so did the table (its flag columns): nothing is selected any more
    assert _curate(at) == "0 selected."
    banner = _banners(at)
    assert len(banner) == 1 and "tag" in banner[0] and "3 of 3" in banner[0], banner
    # the banner of the last action stays until the next one: another search, a rerun
    _search(at, "about music")
    at.run()
    assert _banners(at) == banner
    # ... but only for its workspace
    other = tmp_path / "other_ws"
    shutil.copytree(ws.root, other)
    at.session_state["gem_workspace"] = str(other)
    at.run()
    _clean(at, "other workspace")
    assert _banners(at) == []


def test_documents_table_changed_between_draw_and_click_writes_nothing(app_test, synthetic_workspace):
    """The curator ticks rows; before the click, another curator's flag edit changes the table (its
    flag columns). The click must not tag what the rows are now: nothing is written, an error says so."""
    ws = synthetic_workspace
    at = _documents(app_test, ws)
    _search(at, "about law")
    ids = _results(at).value["id"].astype(str).tolist()
    at.text_input(key="doc_tag").set_value("mine").run()
    _select_rows(at, [0, 1])
    assert _curate(at) == f"2 selected: {ids[0]}, {ids[1]}."
    DocFlags(ws).exclude([ids[5]], "junk", "bob")  # between the draw and the click
    at.button(key="doc_add_tag").click().run()
    assert not at.exception
    flagged = DocFlags(ws).table()
    assert flagged["id"].tolist() == [ids[5]] and list(flagged["tags"].iloc[0]) == []  # bob's exclusion only
    assert any("selection changed" in _text(e) and "nothing was written" in _text(e) for e in at.error), \
        [e.value for e in at.error]
    assert _curate(at) == "0 selected."


# ---------------------------------------------------------------------------- Clusters maps
def _map_key(at, name: str) -> str:
    from streamlit.runtime.state.common import user_key_from_element_id

    keys = [user_key_from_element_id(c.proto.id) for c in at.get("plotly_chart")]
    keys = [k for k in keys if k and re.fullmatch(rf"{name}(_[0-9a-f]+)?", k)]
    assert len(keys) == 1, keys
    return keys[0]


def _select_points(at, name: str, ids: list[str]):
    """What a box selection on the map sends: the points, each with its customdata (raw id first)."""
    points = [{"curve_number": 0, "point_number": i, "point_index": i, "x": 0.0, "y": 0.0,
               "customdata": [doc_id, doc_id, "0"]} for i, doc_id in enumerate(ids)]
    at.session_state[_map_key(at, name)] = {"selection": {"points": points, "point_indices": list(range(len(ids))),
                                                          "box": [], "lasso": []}}
    at.run()


def _selected_table(at):
    """The Clusters page's table of the selected documents (its cluster columns name it)."""
    return next((d.value for d in at.dataframe if "GEM cluster" in d.value.columns), None)


def _flag_caption(at) -> str:
    lines = [_text(c) for c in at.caption if _text(c).startswith("Curate the ")]
    assert len(lines) == 1, [c.value for c in at.caption]
    return lines[0]


def test_clusters_map_selection_is_ids_and_a_new_fit_starts_with_nothing_selected(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 6
    at.run()
    at.switch_page("pages/2_Clusters.py").run()
    _clean(at, "clusters")
    key_before = _map_key(at, "map_gem")
    corpus_ids = ws.load_corpus()["id"].astype(str).tolist()
    picked = [corpus_ids[7], corpus_ids[100], corpus_ids[42]]
    # a point whose id is no document of these fits (a stale or forged selection) is dropped, not
    # read as some other row
    _select_points(at, "map_gem", picked + ["no-such-document"])
    _clean(at, "select")
    assert _selected_table(at)["id"].tolist() == picked
    assert _flag_caption(at).startswith(f"Curate the 3 selected documents: {picked[0]}, {picked[1]}, {picked[2]} (")
    at.text_input(key="cl_flag_tag").set_value("map-pick")
    at.button[[b.label for b in at.button].index("Tag the selected documents")].click().run()
    _clean(at, "tag")
    flagged = DocFlags(ws).table()
    assert sorted(flagged["id"]) == sorted(picked) and all(list(t) == ["map-pick"] for t in flagged["tags"])

    # a new fit (another K) is a new map: its key changed and nothing is selected
    at.session_state["fit_k"] = 5
    at.run()
    _clean(at, "K=5")
    assert _map_key(at, "map_gem") != key_before
    assert _selected_table(at) is None
    assert any("Box- or lasso-select points" in _text(c) for c in at.caption)


# ---------------------------------------------------------------------------- Taxonomy members
def _members(at):
    tables = [d for d in at.dataframe if d.key and d.key.startswith("tx_members_")]
    assert len(tables) == 1, [d.key for d in at.dataframe]
    return tables[0]


def test_taxonomy_member_selection_is_ids_keyed_by_run_and_topic(app_test, synthetic_workspace):
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 6
    at.run()
    at.switch_page("pages/3_Taxonomy.py").run()
    _clean(at, "taxonomy")
    members = _members(at)
    ids = members.value["id"].astype(str).tolist()
    assert len(ids) > 3
    at.session_state[members.key] = {"selection": {"rows": [0, 2], "columns": [], "cells": []}}
    at.run()
    assert _flag_caption(at).startswith(f"Curate the 2 selected documents: {ids[0]}, {ids[2]} (")
    at.text_input(key="tx_flag_tag").set_value("odd-one")
    at.button[[b.label for b in at.button].index("Tag the selected documents")].click().run()
    _clean(at, "tag")
    flagged = DocFlags(ws).table()
    assert sorted(flagged["id"]) == sorted([ids[0], ids[2]])
    topic = at.session_state["tx_topic"]

    # another run of the same topic (a re-fit with another seed keeps the matched topic ids): a new
    # table, nothing selected
    at.session_state[members.key] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert _flag_caption(at).startswith("Curate the 1 selected documents")
    at.session_state["fit_seed"] = 1
    at.run()
    _clean(at, "seed 1")
    assert at.session_state["tx_topic"] == topic
    assert _flag_caption(at).startswith("Curate the 0 selected documents (")
    assert _members(at).key != members.key


# ---------------------------------------------------------------------------- in a real browser
def _idle(page, timeout_ms: int = 60_000) -> None:
    page.wait_for_timeout(300)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=timeout_ms)
    page.wait_for_timeout(300)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_documents_selection_names_the_ticked_ids_and_a_new_search_clears_it(streamlit_app,
                                                                                     synthetic_workspace,
                                                                                     browser_page):
    """Tick two rows of the results in Chromium: the Curate panel names exactly those two ids; a new
    search shows a table with nothing ticked (ticking one row then selects that one alone)."""
    from gem.search import search

    ws, page = synthetic_workspace, browser_page
    law = search(ws, "about law", k=50).table["id"].astype(str).tolist()
    music = search(ws, "about music", k=50).table["id"].astype(str).tolist()
    page.goto(streamlit_app(ws))
    page.get_by_text("Anisotropy: how much").wait_for()
    page.get_by_role("link", name="Documents", exact=True).click()

    def run_search(query: str, n: int):
        box = page.get_by_placeholder("words or a phrase, then Enter")
        box.fill(query)
        box.press("Enter")
        page.get_by_text(f"{n} documents match").wait_for()
        _idle(page)

    def tick(row: int):  # the row-marker column (left edge); header and rows ~35 px high
        grid = page.locator("[data-testid='stDataFrameResizable']").first  # the results: the page's first table
        grid.wait_for()
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17 + 35 * row)
        _idle(page)

    run_search("about law", len(law))
    page.get_by_text("0 selected.", exact=True).wait_for()
    tick(0)
    tick(2)
    page.get_by_text(f"2 selected: {law[0]}, {law[2]}.", exact=True).wait_for()

    run_search("about music", len(music))
    page.get_by_text("0 selected.", exact=True).wait_for(timeout=15_000)
    assert page.get_by_role("button", name="Exclude", exact=True).is_disabled()
    tick(1)  # a new table: this row alone is selected, none carried over from the last one
    page.get_by_text(f"1 selected: {music[1]}.", exact=True).wait_for(timeout=15_000)
