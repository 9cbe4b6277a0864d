"""Helpers shared by the browser tests (the fixtures they build on are in tests/conftest.py).

- ``idle(page)``: wait until the Streamlit script run is over (running indicator hidden).
- ``rename_top_topic(page, name)``: on the Taxonomy page, type ``name`` into the top row's name
  cell of the topic grid (committing it saves at once).
- ``full_screenshot(page, path)``: the whole page, not just the viewport. Streamlit scrolls
  inside ``<main data-testid="stMain">`` rather than the document, so Playwright's
  ``full_page=True`` only sees one screen: grow the viewport to the content height instead.
"""
import pytest

MAX_SCREENSHOT_HEIGHT = 12_000  # px: the sample's longest page is ~5,000


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_timeout(300)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=timeout_ms)
    page.wait_for_timeout(300)


def take_full_screenshot(page, path) -> None:
    size = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight ?? 0")
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(height) + 20, MAX_SCREENSHOT_HEIGHT)})
        page.wait_for_timeout(400)  # let the layout (and plotly's resize handlers) settle
    try:
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)


@pytest.fixture
def idle():
    return wait_idle


@pytest.fixture
def full_screenshot():
    return take_full_screenshot


def type_top_topic_name(page, name: str) -> None:
    """The first row is the top-GIS topic; double-click its name cell (2nd column, ~50 px in; the
    header is ~35 px high, rows ~35 px) to open the grid's cell editor, then replace the text."""
    grid = page.locator("[class*='st-key-tx_editor_'] [data-testid='stDataFrameResizable']").first
    grid.wait_for()
    box = grid.bounding_box()
    page.mouse.dblclick(box["x"] + 150, box["y"] + 35 + 17)
    page.wait_for_timeout(700)
    page.keyboard.press("Control+a")
    page.keyboard.type(name, delay=20)
    page.keyboard.press("Enter")  # commit: the app reruns and saves at once


@pytest.fixture
def rename_top_topic():
    return type_top_topic_name
