"""Untrusted strings never become markup in another curator's browser: an
upload's file name, ids quoted by the ingest report, a co-curator's name in the stale-save error,
topic names imported from a taxonomy.json, and server paths / label globs typed into the pages.
Each carries bold text and an external image; the test checks that no such element appears and
that no request leaves for the image's address."""
import json

import pytest

from gem.taxonomy import Taxonomy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMG = "http://127.0.0.1:9/pwned.png"  # a closed port: any request to it would be the payload working
PAYLOAD = f"**bold** <b>tag</b> ![x]({IMG}) [link](http://127.0.0.1:9/)"
FILE_PAYLOAD = "**bold** <img src=pwned.png> ![x](pwned.png)"  # a file name holds no "/": a relative image


def _no_markup(page, requests) -> None:
    main = page.locator("[data-testid='stMain'], [data-testid='stSidebar']")
    assert main.locator(f"img[src='{IMG}']").count() == 0
    assert page.locator("strong", has_text="bold").count() == 0 and page.locator("b", has_text="tag").count() == 0
    links = page.locator("a[href='http://127.0.0.1:9/']")
    assert links.count() == 0, links.first.evaluate("a => a.closest('[data-testid]').outerHTML.slice(0, 600)")
    assert not [r for r in requests if "127.0.0.1:9/" in r or "pwned" in r], requests


def test_payloads_stay_text_everywhere(streamlit_app, synthetic_workspace, browser_page, tmp_path, idle,
                                       rename_top_topic, artifacts_dir):
    page = browser_page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(streamlit_app(synthetic_workspace))
    page.get_by_text("Anisotropy: how much").wait_for()

    # 1. an upload whose file name and ids carry the payload, with duplicate texts quoted by the report
    upload = tmp_path / f"{FILE_PAYLOAD}.jsonl"
    rows = [{"id": f"{PAYLOAD} {i}", "text": f"same text {i % 3}"} for i in range(6)]
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    page.locator(".st-key-home_source").get_by_text("Upload a file").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(upload))
    page.get_by_text("Corpus loaded.").wait_for(timeout=120_000)
    idle(page)
    page.get_by_text("Ingest report").first.click()
    idle(page)
    _no_markup(page, requests)

    # 2. a server path and the refusal
    page.locator(".st-key-home_source").get_by_text("Server-side path").click()
    page.locator(".st-key-home_path input").fill(f"/tmp/{PAYLOAD}")
    page.locator(".st-key-home_path input").press("Enter")
    page.locator(".st-key-home_open button").click()
    page.get_by_text("not available here").wait_for()
    _no_markup(page, requests)

    # 3. back on the synthetic corpus: a co-curator with a hostile name saves first, our save is refused
    page.goto(streamlit_app(synthetic_workspace))
    page.get_by_text("Anisotropy: how much").wait_for()
    page.locator(".st-key-gem_author input").fill("playwright")
    page.locator(".st-key-gem_author input").press("Enter")
    idle(page)
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Taxonomy", exact=True).click()
    page.get_by_text("Topics ranked by mean GIS").wait_for(timeout=120_000)
    idle(page)
    tax = Taxonomy(synthetic_workspace.taxonomy_db)
    top = tax.topics()
    for tid in top["id"]:  # every topic changed by the co-curator (and named with the payload)
        tax.update_topic(tid, tax.topic(tid)["version"], PAYLOAD, name=f"{PAYLOAD} {tid}")
    rename_top_topic(page, "mine")
    page.get_by_text("Not saved: another curator changed these topics first").wait_for(timeout=60_000)
    idle(page)
    page.screenshot(path=str(artifacts_dir / "untrusted_stale.png"))
    assert page.get_by_text("changed by **bold**", exact=False).count() >= 1  # the name, literally
    _no_markup(page, requests)
