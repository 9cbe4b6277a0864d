"""The Home page shows a progress bar while an uploaded corpus streams in (headless Chromium, the
real ingest with MiniLM token counts)."""
import json
import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_upload_shows_ingest_progress(streamlit_app, synthetic_workspace, browser_page, tmp_path, idle):
    n = 120_000  # two batches of the streaming reader: progress is reported before the end
    corpus = tmp_path / "big.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"d{i}", "text": f"document {i} about topic {i % 97} and item {i % 13}"}) + "\n")
    page = browser_page
    page.goto(streamlit_app(synthetic_workspace))
    idle(page)
    page.locator(".st-key-home_source").get_by_text("Upload a file").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(corpus))
    bar = page.locator("[data-testid='stProgress']").filter(has_text="Validating the corpus:")
    bar.first.wait_for(timeout=120_000)
    seen = set()
    for _ in range(200):  # read the bar while it moves
        try:
            text = bar.first.inner_text(timeout=500)
        except Exception:  # the bar is gone: the ingest finished
            break
        match = re.search(r"([\d,]+) records, ([\d.]+) of ([\d.]+) MB", text)
        if match:
            seen.add(int(match.group(1).replace(",", "")))
        page.wait_for_timeout(100)
    assert seen and min(seen) < n  # shown while the file was still being read
    page.get_by_text("Corpus loaded.").wait_for(timeout=180_000)
    assert page.locator("[data-testid='stProgress']").filter(has_text="Validating the corpus:").count() == 0
