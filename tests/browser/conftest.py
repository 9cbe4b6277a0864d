"""Helpers shared by the browser tests (the fixtures they build on are in tests/conftest.py).

- ``idle(page)``: wait until the Streamlit script run is over (running indicator hidden).
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
