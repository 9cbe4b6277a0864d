"""The real app in headless Chromium: rename a topic in the Taxonomy table, reload, still renamed."""
import time

import pytest

from gem.taxonomy import Taxonomy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NEW_NAME = "Renamed <i>in</i> the browser"


def _open_taxonomy(page):
    page.get_by_text("Anisotropy: how much").wait_for()  # home rendered (content arrives over the websocket)
    page.get_by_role("link", name="Taxonomy", exact=True).click()
    page.get_by_text("Topics ranked by mean GIS").wait_for(timeout=120_000)
    grid = page.locator("[class*='st-key-tx_editor_'] [data-testid='stDataFrameResizable']").first
    grid.wait_for()
    return grid


def _idle(page, timeout_ms=120_000):
    """Wait until the script run finished (the running indicator is gone) and the page settled."""
    page.wait_for_timeout(500)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=timeout_ms)
    page.wait_for_timeout(500)


def _renamed(tax, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        t = tax.topics()
        hit = t[t["name"] == NEW_NAME]
        if len(hit):
            return hit["id"].iloc[0]
        time.sleep(0.5)
    return None


def test_rename_topic_and_see_it_after_reload(streamlit_app, synthetic_workspace, browser_page, artifacts_dir,
                                              rename_top_topic):
    page = browser_page
    url = streamlit_app(synthetic_workspace)
    page.goto(url)
    name_box = page.locator(".st-key-gem_author input")
    name_box.fill("playwright")
    name_box.press("Enter")
    _open_taxonomy(page)
    _idle(page)
    rename_top_topic(page, NEW_NAME)
    tax = Taxonomy(synthetic_workspace.taxonomy_db)
    tid = _renamed(tax, 30.0)
    page.screenshot(path=str(artifacts_dir / "taxonomy_renamed.png"))
    assert tid is not None, "the edit was not saved (see tests/artifacts/taxonomy_renamed.png)"
    assert tax.audit(tid)["author"].iloc[-1] == "playwright"

    page.reload()
    page.get_by_text("Topics ranked by mean GIS").wait_for(timeout=120_000)
    # the topic panel shows the top-GIS topic's name as plain text: the tag is literal, not markup
    page.get_by_text(f"{tid}: {NEW_NAME}", exact=True).wait_for(timeout=60_000)
    assert page.locator("[data-testid='stMain'] i").count() == 0
    page.screenshot(path=str(artifacts_dir / "taxonomy_after_reload.png"))
