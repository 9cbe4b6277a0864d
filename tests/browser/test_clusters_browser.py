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
