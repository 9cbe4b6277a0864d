"""The real app in headless Chromium: box-select on the GEM map lists exactly the selected
documents, and hostile document text is shown as text and executes nothing."""
import re

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# plot-area pixels of every point of a plotly graph, with its id (customdata[0])
POINTS_JS = """(gd) => {
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, out = [];
  for (const t of gd._fullData) {
    if (!t.customdata) continue;
    for (let i = 0; i < t.x.length; i++)
      out.push([t.customdata[i][0], xa._offset + xa.l2p(t.x[i]), ya._offset + ya.l2p(t.y[i])]);
  }
  return out;
}"""


def _open_clusters(page, url):
    page.goto(url)
    page.get_by_text("Anisotropy: how much").wait_for()  # home rendered (content arrives over the websocket)
    page.get_by_role("link", name="Clusters", exact=True).click()
    page.get_by_text(re.compile(r"^Run gem-k\d+-auto-s0")).wait_for(timeout=120_000)
    # keyed elements carry the CSS class st-key-<key>
    gem_map = page.locator(".st-key-map_gem .js-plotly-plot")
    base_map = page.locator(".st-key-map_base .js-plotly-plot")
    gem_map.locator(".scatterlayer .point").first.wait_for()
    base_map.locator(".scatterlayer .point").first.wait_for()
    return gem_map


def _box_select(page, gem_map, fx0, fy0, fx1, fy1):
    """Choose the box-select tool in the modebar, then drag over the fraction box of the plot area."""
    gem_map.hover()
    gem_map.locator('.modebar-btn[data-title="Box Select"]').click()
    area = gem_map.locator(".nsewdrag").first.bounding_box()
    x0, y0 = area["x"] + fx0 * area["width"], area["y"] + fy0 * area["height"]
    x1, y1 = area["x"] + fx1 * area["width"], area["y"] + fy1 * area["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=12)
    page.mouse.up()
    graph = gem_map.bounding_box()
    return x0 - graph["x"], y0 - graph["y"], x1 - graph["x"], y1 - graph["y"]


def _shown_ids(page) -> list[str]:
    page.get_by_text("documents selected").wait_for()
    page.get_by_text("Selected ids (to copy)").click()
    code = page.locator('[data-testid="stExpander"] pre').last
    code.wait_for()
    return [s for s in code.inner_text().split("\n") if s.strip()]


def test_box_select_on_gem_map_lists_the_selected_documents(streamlit_app, synthetic_workspace, browser_page,
                                                            artifacts_dir):
    page = browser_page
    url = streamlit_app(synthetic_workspace)
    gem_map = _open_clusters(page, url)
    page.screenshot(path=str(artifacts_dir / "clusters.png"))
    points = gem_map.evaluate(POINTS_JS)
    assert len(points) == 240
    bx0, by0, bx1, by1 = _box_select(page, gem_map, 0.45, 0.35, 0.95, 0.9)
    shown = set(_shown_ids(page))
    page.screenshot(path=str(artifacts_dir / "clusters_selected.png"))
    margin = 2.0  # pixels: points on the box edge may fall either way
    inside = {i for i, x, y in points if bx0 + margin < x < bx1 - margin and by0 + margin < y < by1 - margin}
    edge = {i for i, x, y in points if bx0 - margin <= x <= bx1 + margin and by0 - margin <= y <= by1 + margin}
    assert len(inside) >= 10, "the box should cover a good part of the map"
    assert inside <= shown <= edge
    caption = page.get_by_text("documents selected").inner_text()
    assert int(re.search(r"(\d+) documents selected", caption).group(1)) == len(shown)


def test_hostile_text_is_shown_as_text_and_executes_nothing(streamlit_app, synthetic_workspace, browser_page,
                                                            artifacts_dir):
    page = browser_page
    url = streamlit_app(synthetic_workspace)
    gem_map = _open_clusters(page, url)
    # hover the hostile points: the label shows the markup as literal text
    gem_map.scroll_into_view_if_needed()
    points = {i: (x, y) for i, x, y in gem_map.evaluate(POINTS_JS)}
    graph = gem_map.bounding_box()
    for doc_id, needle in (("hostile-img", "<img src=x onerror="), ("hostile-script", "<script>window.__pwned")):
        x, y = points[doc_id]
        page.mouse.move(graph["x"] + x - 8, graph["y"] + y - 8)
        page.mouse.move(graph["x"] + x, graph["y"] + y, steps=4)
        # SVG text whose content is the literal markup (plotly draws hover labels as SVG text)
        gem_map.locator(".hoverlayer .hovertext", has_text=needle).first.wait_for(timeout=15_000)
        page.mouse.move(graph["x"] + 2, graph["y"] + 2)  # leave, so the next label is a fresh one
    page.screenshot(path=str(artifacts_dir / "clusters_hostile_hover.png"))
    _box_select(page, gem_map, 0.01, 0.01, 0.99, 0.99)  # everything, hostile documents included
    shown = _shown_ids(page)
    assert {"hostile-script", "hostile-img"} <= set(shown)
    page.wait_for_timeout(500)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img[src='x']").count() == 0


# ---------------------------------------------------------------------------- collapse views
TRACES_JS = """(gd) => gd._fullData.map(t => ({name: t.name, meta: t.meta, n: t.customdata ? t.customdata.length : 0,
                                           color: t.marker ? t.marker.color : null}))"""


@pytest.fixture
def model_workspace(tmp_path):
    """300 real sample documents with their MiniLM embeddings (made by the model, so the app can embed
    template passages the same way) and a PCA layout (no UMAP)."""
    from gem.layout import Layout, save_layout
    from gem.store import SAMPLE_DATA_DIR, Workspace, ids_digest, read_json, write_parquet_atomic

    src = Workspace(SAMPLE_DATA_DIR)
    corpus = src.load_corpus()
    rows = np.sort(np.random.default_rng(0).choice(len(corpus), 300, replace=False))
    sub = corpus.iloc[rows].reset_index(drop=True)
    ws = Workspace(tmp_path / "model_ws")
    ws.root.mkdir()
    write_parquet_atomic(ws.corpus_path, sub)
    unit = src.load_embeddings("final")[rows]
    meta = {**read_json(src.embeddings_meta_path("final")), "ids_digest": ids_digest(sub["id"]), "n": 300}
    ws.save_embeddings("final", unit, src.load_norms("final")[rows], meta)
    centred = unit - unit.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    save_layout(ws, Layout(sub["id"].astype(str).to_numpy(), (centred @ vt[:2].T).astype(np.float32), "2d", "final", 300))
    return ws


def test_stress_toggle_rings_the_injected_passages_on_both_maps(streamlit_app, model_workspace, browser_page,
                                                                 artifacts_dir):
    from gem.stress import injected_count

    page = browser_page
    corpus_bytes = model_workspace.corpus_path.read_bytes()
    _open_clusters(page, streamlit_app(model_workspace))
    page.get_by_text("Stress test: inject template textbook passages").click()
    page.get_by_text(re.compile(r"passages injected into 300 documents")).wait_for(timeout=180_000)
    n_inj = injected_count(300, 0.15)
    for key in ("stress_gem_map", "stress_base_map"):
        graph = page.locator(f".st-key-{key} .js-plotly-plot")
        graph.locator(".scatterlayer .point").first.wait_for()
        traces = graph.evaluate(TRACES_JS)
        rings = [t for t in traces if t["name"] == "injected passages"]
        assert len(rings) == 1 and rings[0]["n"] == n_inj
        assert sum(t["n"] for t in traces) == 300 + 2 * n_inj
    assert page.get_by_text("templates, not LLM output").count() >= 1
    page.locator(".st-key-stress_gem_map").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "clusters_stress.png"))
    assert model_workspace.corpus_path.read_bytes() == corpus_bytes


def test_baseline_colours_match_gem(streamlit_app, synthetic_workspace, browser_page):
    import pandas as pd

    page = browser_page
    gem_map = _open_clusters(page, streamlit_app(synthetic_workspace))
    base_map = page.locator(".st-key-map_base .js-plotly-plot")
    gem_colors = {str(t["meta"]): t["color"] for t in gem_map.evaluate(TRACES_JS)}  # named by topic id
    base_colors = {t["name"]: t["color"] for t in base_map.evaluate(TRACES_JS)}
    runs = {n: pd.read_parquet(synthetic_workspace.run_dir(n) / "assignments.parquet")["cluster"].to_numpy()
            for n in ("gem-k24-auto-s0", "kmeans-k24-s0")}
    g, b = runs["gem-k24-auto-s0"], runs["kmeans-k24-s0"]
    C = np.bincount(b * 24 + g, minlength=24 * 24).reshape(24, 24)
    i, j = np.unravel_index(np.argmax(C), C.shape)  # the largest overlap is always matched
    assert base_colors[str(i)] == gem_colors[str(j)]


def test_sweep_point_becomes_the_current_fit(streamlit_app, synthetic_workspace, browser_page, artifacts_dir, idle):
    page = browser_page
    _open_clusters(page, streamlit_app(synthetic_workspace))
    page.get_by_text("Trade-off: balance vs meaning vs stability across λ").click()
    page.get_by_role("button", name="Compute the sweep").click()
    chart = page.locator(".st-key-cl_sweep_chart .js-plotly-plot")
    chart.wait_for(timeout=180_000)
    names = {t["name"] for t in chart.evaluate(TRACES_JS)}
    assert "normalised entropy" in names and "stability (ARI between seeds)" in names
    page.screenshot(path=str(artifacts_dir / "clusters_sweep.png"))
    page.get_by_role("button", name=re.compile(r"moderate λ = 1000")).click()
    page.get_by_text(re.compile(r"^Run gem-k24-l1000-s0")).wait_for(timeout=120_000)
    idle(page)
    # the sidebar shows the fit the page shows, and keeps it: an unrelated control (the colour
    # match) once silently switched the fit back to the sidebar's stale stop
    toggle = page.locator(".st-key-w_fit_auto input")
    assert not toggle.is_checked()
    thumb = page.locator(".st-key-w_fit_lambda").get_by_role("slider")
    assert thumb.get_attribute("aria-valuetext") == "moderate (λ = 1000)"
    page.locator(".st-key-cl_match_colors").get_by_text("Match").click()
    idle(page)
    assert page.get_by_text(re.compile(r"^Run gem-k24-l1000-s0")).count() == 1
    assert thumb.get_attribute("aria-valuetext") == "moderate (λ = 1000)"
    # "auto" turns automatic balance on, and the sidebar names the lambda in use (no stale stop)
    page.get_by_role("button", name="auto", exact=True).click()
    page.get_by_text(re.compile(r"^Run gem-k24-auto-s0")).wait_for(timeout=120_000)
    idle(page)
    assert toggle.is_checked() and page.locator(".st-key-w_fit_lambda").count() == 0
    used = re.search(r"λ used = ([0-9.e+]+)", page.get_by_text(re.compile(r"^Run gem-k24-auto-s0")).inner_text())
    sidebar = page.locator("[data-testid='stSidebar']").get_by_text(re.compile(r"^λ in use: "))
    assert sidebar.inner_text() == f"λ in use: {used.group(1)} (chosen by GEM)"
