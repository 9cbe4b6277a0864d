"""The real app in headless Chromium: rename a topic in the Taxonomy table, reload, still renamed."""
import time

import pytest
from playwright.sync_api import expect

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


def _poll(check, deadline_s=120.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    return None


def _open_as_playwright(page, url: str) -> None:
    """Open the app and type the curator name every edit is saved with."""
    page.goto(url)
    name_box = page.locator(".st-key-gem_author input")
    name_box.fill("playwright")
    name_box.press("Enter")


def _pick(page, key: str, tid: str) -> None:
    """Choose the option of topic ``tid`` ("T003 · name") in the select / multiselect ``key``."""
    import re

    option = page.get_by_role("option", name=re.compile(rf"^{tid} ")).first
    for attempt in range(4):  # a click that lands while the expander or a rerun redraws opens nothing
        page.locator(f".st-key-{key} input").first.click()
        try:
            option.wait_for(timeout=10_000)
            break
        except Exception:
            if attempt == 3:
                raise
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
    option.click()
    page.wait_for_timeout(300)


def test_merge_and_split_in_the_page_survive_a_refit(streamlit_app, synthetic_workspace, browser_page,
                                                      artifacts_dir, idle, full_screenshot):
    from gem.workspace_ops import document_topic_ids

    page, ws = browser_page, synthetic_workspace
    _open_as_playwright(page, streamlit_app(ws))
    page.get_by_text("Anisotropy: how much").wait_for()
    idle(page)
    k_box = page.locator(".st-key-w_fit_k input")  # K = 4: the synthetic corpus has four planted groups
    k_box.fill("4")
    k_box.press("Enter")
    idle(page)
    _open_taxonomy(page)
    idle(page)
    tax = Taxonomy(ws.taxonomy_db)
    run1 = _poll(lambda: tax.current_run)
    ids = sorted(set(tax.run_mapping(run1).values()))
    assert len(ids) == 4, ids
    a, b, c = ids[0], ids[1], ids[2]

    page.get_by_text("Merge or split topics").click()
    for tid in (a, b):
        _pick(page, "tx_merge_ids", tid)
        page.keyboard.press("Escape")
        idle(page)
    # on a loaded box the rerun that enables the confirmation lags the second pick: wait for it
    expect(page.locator(".st-key-tx_merge_confirm input")).to_be_enabled(timeout=60_000)
    page.locator(".st-key-tx_merge_confirm").get_by_text("Yes, merge these topics").click()
    idle(page)
    expect(page.locator(".st-key-tx_merge button")).to_be_enabled(timeout=60_000)
    page.locator(".st-key-tx_merge button").click()
    page.get_by_text(f"Merged {b} into {a}").wait_for(timeout=60_000)
    assert tax.topic(b)["merged_into"] == a and tax.topic(b)["status"] == "retired"
    assert tax.audit(b)["author"].iloc[-1] == "playwright"

    idle(page)
    _pick(page, "tx_split_id", c)
    page.locator(".st-key-tx_split_preview button").click()
    page.get_by_text(f"Preview: {c} into 2 children").wait_for(timeout=120_000)
    assert not tax.split_children()  # a preview stores nothing
    full_screenshot(page, artifacts_dir / "taxonomy_split_preview.png")
    page.locator(".st-key-tx_split_accept button").click()
    page.get_by_text(f"Split {c} into").wait_for(timeout=60_000)
    children = tax.split_children()[c][0]
    assert len(children) == 2

    # re-fit from the sidebar (another seed): the page fits and syncs the new run
    idle(page)
    seed_box = page.locator(".st-key-w_fit_seed input")
    seed_box.fill("1")
    seed_box.press("Enter")
    run2 = _poll(lambda: tax.current_run if tax.current_run != run1 else None, 180.0)
    idle(page, timeout_ms=180_000)
    full_screenshot(page, artifacts_dir / "taxonomy_after_refit.png")
    assert run2 is not None, "the re-fit was not synced (see tests/artifacts/taxonomy_after_refit.png)"
    mapped = list(tax.run_mapping(run2).values())
    assert b not in mapped and mapped.count(a) == 2 and c in mapped  # still merged; the split topic matched
    routed = set(document_topic_ids(ws, run2))
    assert set(children) <= routed and c not in routed and b not in routed
    # the grid (canvas; its cells are in the DOM, hidden) shows the split topic with its children
    page.get_by_text(f"split into {', '.join(children)}").first.wait_for(state="attached", timeout=30_000)


def test_a_topics_least_typical_members_excluded_from_the_taxonomy_page(streamlit_app, synthetic_workspace,
                                                                        browser_page, idle):
    """Rows picked in a topic's member table (lowest GIS first) are excluded with the curator's name."""
    from gem.flags import DocFlags

    page, ws = browser_page, synthetic_workspace
    _open_as_playwright(page, streamlit_app(ws))
    _open_taxonomy(page)
    idle(page)
    page.get_by_text("Curate the members of").click()
    grid = page.locator("[data-testid='stExpander']").filter(has_text="Curate the members of") \
        .locator("[data-testid='stDataFrameResizable']").first
    grid.wait_for()
    box = grid.bounding_box()
    for row in (0, 1):  # the row-marker column (left edge) selects a row; header and rows ~35 px high
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17 + 35 * row)
        idle(page)
    page.get_by_text("Curate the 2 selected documents").wait_for(timeout=60_000)
    page.get_by_role("button", name="Exclude the selected documents").click()
    page.get_by_text("Re-fit without them").wait_for(timeout=60_000)
    flags = DocFlags(ws).table()
    assert len(flags) == 2 and flags["excluded"].all() and set(flags["updated_by"]) == {"playwright"}
    assert set(flags["reason"]) == {"junk"}
