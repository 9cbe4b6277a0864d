"""The real app in headless Chromium on the shipped sample corpus: every page renders its main
content with no exception box, and a full-page screenshot of each lands in tests/artifacts/
(page_<name>.png) for people to look at.

The pages are visited in one browser session, in the order a curator would (Clusters fits GEM
once; Taxonomy, Mixture and Student re-use that fit), so the sample is fitted only once."""
import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FIT_CAPTION = re.compile(r"^Run gem-k24-auto-s0")  # every page shows the one current fit
FIT_TIMEOUT_MS = 240_000  # GEM + k-means on 11.5k x 384 on a loaded 2-core box
# a plotly graph with data drawn (the sample's maps are WebGL, so there are no SVG points to find)
PLOTTED_JS = """(sel) => { const gd = document.querySelector(sel);
  return !!(gd && gd._fullData && gd._fullData.some(t => (t.x || t.labels || []).length > 0)); }"""


def _plotted(page, key, timeout=60_000):
    page.wait_for_function(PLOTTED_JS, arg=f".st-key-{key} .js-plotly-plot", timeout=timeout)


def _main_content(page, name):
    """Wait for what the page is for (not just its title): its charts / tables filled in."""
    if name == "Home":
        page.get_by_text("Anisotropy: how much").wait_for()
        page.locator(".st-key-home_cosines .js-plotly-plot .bars path").first.wait_for(state="attached")
    elif name == "Clusters":
        page.get_by_text(FIT_CAPTION).wait_for(timeout=FIT_TIMEOUT_MS)
        for key in ("map_gem", "map_base"):
            _plotted(page, key, FIT_TIMEOUT_MS)
            page.locator(f".st-key-{key}_sizes .js-plotly-plot .bars path").first.wait_for(state="attached")
    elif name == "Taxonomy":
        page.get_by_text("Topics ranked by mean GIS").wait_for(timeout=FIT_TIMEOUT_MS)
        page.locator("[class*='st-key-tx_editor_'] [data-testid='stDataFrameResizable']").first.wait_for()
        _plotted(page, "tx_tree")
    elif name == "Mixture":
        page.get_by_text(FIT_CAPTION).wait_for(timeout=FIT_TIMEOUT_MS)
        page.locator(".st-key-mx_weights_chart .js-plotly-plot .bars path").first.wait_for(state="attached")
        # the domain editor, then the weights table (a keyed st.dataframe gets no st-key-* class)
        page.locator("[data-testid='stMain'] [data-testid='stDataFrame']").nth(1).wait_for()
    elif name == "Mixture lab":
        page.get_by_text(FIT_CAPTION).wait_for(timeout=FIT_TIMEOUT_MS)
        page.get_by_role("button", name="Design swarm").wait_for()
    elif name == "Documents":
        page.get_by_text("Search the corpus").wait_for()
    elif name == "Student":
        # the student learns from the current fit (made on the Clusters page): train it
        page.get_by_role("button", name="Train student").click()
        page.get_by_text("Top-1 agreement (held out)").wait_for(timeout=FIT_TIMEOUT_MS)
        # the sample's embeddings came from the bundled encoder: the student starts from its word vectors
        page.get_by_text("Started from teacher word vectors").wait_for()
        heatmap = page.locator("[data-testid='stMain'] .js-plotly-plot").first
        heatmap.wait_for()
        # topic ids are categories: read as numbers ("0", "10", "2", ...) the cells land out of order
        assert heatmap.evaluate("gd => [gd._fullLayout.xaxis.type, gd._fullLayout.yaxis.type]") == ["category"] * 2


def test_every_page_renders_on_the_sample(streamlit_app, sample_workspace, browser_page, artifacts_dir, idle,
                                          full_screenshot):
    page = browser_page
    page.goto(streamlit_app(sample_workspace))
    problems = []
    for name in ("Home", "Clusters", "Taxonomy", "Mixture", "Mixture lab", "Documents", "Student"):
        if name != "Home":
            page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=name, exact=True).click()
        failed_shot = artifacts_dir / f"page_{name.lower().replace(' ', '_')}_FAILED.png"
        failed_shot.unlink(missing_ok=True)  # not a stale one from an earlier run
        t0 = time.monotonic()
        try:
            _main_content(page, name)
        except Exception:
            page.screenshot(path=str(failed_shot))
            raise
        print(f"{name}: main content in {time.monotonic() - t0:.1f} s")
        idle(page, timeout_ms=FIT_TIMEOUT_MS)
        full_screenshot(page, artifacts_dir / f"page_{name.lower().replace(' ', '_')}.png")
        exceptions = page.locator("[data-testid='stException']")
        if exceptions.count():
            problems.append(f"{name}: {exceptions.first.inner_text()[:500]}")
    assert not problems, "exception box shown (see tests/artifacts/page_*.png):\n" + "\n".join(problems)
