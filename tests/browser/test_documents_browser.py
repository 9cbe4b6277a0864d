"""The real app in headless Chromium, the curator's loop: search on the Documents page, exclude
every result in bulk, the sidebar re-fits without them (its option on by itself), the documents are
gone from the Clusters map, the Mixture page shows them removed, and the exported bundle's
assignments lack them while its blocklist lists them."""
import json

import pandas as pd
import pytest

from gem.flags import DocFlags
from gem.mixture import validate_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _map_ids(page, key: str) -> set[str]:
    """Document ids of every point drawn on a plotly map (customdata's first column)."""
    return set(page.evaluate(
        """(sel) => { const el = document.querySelector(sel + ' .js-plotly-plot');
                      return el.data.flatMap(t => (t.customdata || []).map(c => String(c[0]))); }""",
        f".st-key-{key}"))


def test_search_exclude_refit_mixture_export(streamlit_app, synthetic_workspace, browser_page, artifacts_dir,
                                             idle, full_screenshot):
    ws = synthetic_workspace
    corpus = ws.load_corpus()
    hits = set(corpus.loc[corpus["text"].str.lower().str.contains("about law", regex=False), "id"])
    assert 3 <= len(hits) < len(corpus) // 2
    page = browser_page
    page.goto(streamlit_app(ws))
    page.get_by_text("Anisotropy: how much").wait_for()
    page.get_by_placeholder("type your name").fill("alice")
    page.keyboard.press("Enter")
    idle(page)

    # search, select every result, exclude them
    page.get_by_role("link", name="Documents", exact=True).click()
    box = page.get_by_placeholder("words or a phrase, then Enter")
    box.wait_for()
    box.fill("about law")
    box.press("Enter")
    page.get_by_text(f"{len(hits)} documents match").wait_for()
    idle(page)
    page.get_by_text("Apply to every result shown").click()
    idle(page)
    page.get_by_role("button", name="Exclude", exact=True).click()
    page.get_by_text(f"exclude: {len(hits)} of {len(hits)} document(s) changed").wait_for()
    idle(page)
    assert set(DocFlags(ws).excluded_ids()) == hits
    full_screenshot(page, artifacts_dir / "documents_after_exclude.png")
    # the sidebar's option is on by itself now that exclusions exist
    assert page.locator(".st-key-w_fit_exclude input").is_checked()

    # the Clusters page re-fits without them: none of them is on the GEM map
    page.get_by_role("link", name="Clusters", exact=True).click()
    page.get_by_text(f"{len(hits)} excluded documents are not in these fits").wait_for(timeout=180_000)
    page.locator(".st-key-map_gem .js-plotly-plot").wait_for()
    idle(page)
    drawn = _map_ids(page, "map_gem")
    assert drawn and not drawn & hits and len(drawn) == len(corpus) - len(hits)
    run = pd.read_parquet(ws.run_dir("gem-k24-auto-s0-x") / "assignments.parquet")
    assert not set(run["id"]) & hits and len(run) == len(corpus) - len(hits)

    # the Mixture page shows what they removed, and the export leaves them out and lists them
    page.get_by_role("link", name="Mixture", exact=True).click()
    page.get_by_text(f"Excluded documents: {len(hits)} left out of this mixture").wait_for(timeout=180_000)
    idle(page)
    removed = page.locator("[data-testid='stMetric']", has_text="documents removed")
    assert removed.locator("[data-testid='stMetricValue']").inner_text().strip() == str(len(hits))
    full_screenshot(page, artifacts_dir / "mixture_exclusions.png")
    page.get_by_role("button", name="Export bundle").click()
    page.get_by_text("Wrote and validated").wait_for(timeout=180_000)
    bundles = [p for p in ws.exports_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(bundles) == 1
    bundle = bundles[0]
    report = validate_bundle(bundle)
    assert report["excluded_documents"] == len(hits)
    a = pd.read_parquet(bundle / "assignments.parquet")
    assert not set(a["id"]) & hits and len(a) == len(corpus) - len(hits)
    listed = [json.loads(line) for line in (bundle / "excluded_documents.jsonl").read_text().splitlines()]
    assert {x["id"] for x in listed} == hits and {x["author"] for x in listed} == {"alice"}
    assert {x["reason"] for x in listed} == {"junk"}


def test_box_selection_on_the_clusters_map_excluded_in_bulk(streamlit_app, synthetic_workspace, browser_page, idle):
    """A box selection on the GEM map, excluded with the form under the selected documents: exactly
    those documents are flagged (with the sidebar's name), and the next fit leaves them out."""
    from test_clusters_browser import _box_select, _open_clusters, _shown_ids

    ws = synthetic_workspace
    page = browser_page
    gem_map = _open_clusters(page, streamlit_app(ws))
    page.get_by_placeholder("type your name").fill("bob")
    page.keyboard.press("Enter")
    idle(page)
    _box_select(page, gem_map, 0.05, 0.05, 0.5, 0.5)
    shown = set(_shown_ids(page))
    assert 0 < len(shown) < 240
    page.get_by_role("button", name="Exclude the selected documents").click()
    page.get_by_text(f"exclude: {len(shown)} of {len(shown)} document(s) changed").wait_for()
    block = DocFlags(ws).blocklist()
    assert set(block["id"]) == shown and set(block["author"]) == {"bob"} and set(block["reason"]) == {"junk"}
    # the next run of any page fits without them (the sidebar's option is on by itself)
    page.get_by_role("link", name="Clusters", exact=True).click()
    page.get_by_text(f"{len(shown)} excluded documents are not in these fits").wait_for(timeout=180_000)
    page.locator(".st-key-map_gem .js-plotly-plot").wait_for()
    idle(page)
    assert not _map_ids(page, "map_gem") & shown


def test_sidebar_search_opens_the_documents_page(streamlit_app, synthetic_workspace, browser_page, idle):
    page = browser_page
    page.goto(streamlit_app(synthetic_workspace))
    page.get_by_text("Anisotropy: how much").wait_for()
    box = page.get_by_placeholder("words, then Enter")
    box.fill("about music")
    box.press("Enter")
    page.get_by_role("heading", name="Documents", exact=True).wait_for()
    corpus = synthetic_workspace.load_corpus()
    n = int(corpus["text"].str.lower().str.contains("about music", regex=False).sum())
    page.get_by_text(f"{n} documents match").wait_for()
    assert page.get_by_placeholder("words or a phrase, then Enter").input_value() == "about music"
