"""The whole curator flow in the real app (headless Chromium, real MiniLM, real SQLite): upload a
corpus -> embed it -> Clusters -> rename a topic on the Taxonomy page (another curator excludes
one) -> change lambda (sidebar) on the Mixture page -> export and download the bundle -> train the
student -> label a shard. The exported files and the labelled output carry the same stable topic
ids, the curator's name and the exclusion."""
import json
import re
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from gem.mixture import validate_bundle
from gem.taxonomy import Taxonomy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOPICS = {
    "astronomy": "star galaxy telescope orbit planet nebula comet astronomer light years cosmic",
    "cooking": "recipe oven flour butter sugar bake dough simmer garlic onion sauce kitchen",
    "law": "court judge contract statute plaintiff appeal lawyer verdict liability clause",
    "music": "guitar melody chord rhythm symphony piano concert singer album tempo",
}
NEW_NAME = "Night sky <b>bold</b>"
SLOW_MS = 300_000


def _corpus(path, n_per: int = 40) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as fh:
        for t, (topic, vocab) in enumerate(TOPICS.items()):
            words = vocab.split()
            for i in range(n_per):
                text = " ".join(rng.choice(words, size=12)) + f" about {topic}, note {i}."
                fh.write(json.dumps({"id": f"{topic}-{i}", "text": text.capitalize()}) + "\n")


def _fit_caption(page):
    return page.locator("[data-testid='stMain'] [data-testid='stCaptionContainer']", has_text="λ used =").first


def _wait_caption(page, idle, needle: str, timeout_s: float = 180.0) -> str:
    end = time.monotonic() + timeout_s
    while True:
        caption = _fit_caption(page)
        if caption.count() and needle in caption.inner_text():
            idle(page, timeout_ms=SLOW_MS)
            return caption.inner_text()
        if time.monotonic() > end:
            page.screenshot(path="tests/artifacts/flow_FAILED.png")
            raise AssertionError(f"no caption with {needle!r} (see tests/artifacts/flow_FAILED.png)")
        page.wait_for_timeout(300)


def _nav(page, name: str) -> None:
    """Open a page from the sidebar; on a loaded box a click that lands while a script run ends can
    be lost, so it is repeated until the address names the page."""
    link = page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=name, exact=True)
    url = "**/" + name.replace(" ", "_")
    for _ in range(3):
        link.click()
        try:
            page.wait_for_url(url, timeout=15_000)
            return
        except Exception:  # playwright's TimeoutError: click again
            continue
    page.wait_for_url(url, timeout=SLOW_MS)


def test_upload_to_labelled_shard(streamlit_app, synthetic_workspace, browser_page, artifacts_dir, tmp_path, idle,
                                  full_screenshot, rename_top_topic):
    page = browser_page
    corpus = tmp_path / "my corpus.jsonl"
    _corpus(corpus)
    page.goto(streamlit_app(synthetic_workspace))
    name_box = page.locator(".st-key-gem_author input")
    name_box.fill("playwright")
    name_box.press("Enter")
    idle(page)

    # Home: upload, then embed with the bundled encoder
    page.locator(".st-key-home_source").get_by_text("Upload a file").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(corpus))
    page.get_by_text("Corpus loaded.").wait_for(timeout=SLOW_MS)
    idle(page)
    page.locator(".st-key-home_embed button").click()
    page.get_by_text("Embedded 160 documents (final)").wait_for(timeout=SLOW_MS)
    idle(page, timeout_ms=SLOW_MS)
    (ws_root,) = [p for p in synthetic_workspace.root.parent.iterdir() if p.name.startswith("my_corpus-")]
    full_screenshot(page, artifacts_dir / "flow_home.png")

    # Clusters, with K = 4 from the sidebar (the current fit of every page)
    _nav(page, "Clusters")
    k_box = page.locator(".st-key-w_fit_k input")
    k_box.wait_for(timeout=SLOW_MS)
    k_box.fill("4")
    k_box.press("Enter")
    _wait_caption(page, idle, "Run gem-k4-auto-s0")
    assert page.locator(".st-key-w_fit_k input").input_value() == "4"
    full_screenshot(page, artifacts_dir / "flow_clusters.png")

    # Taxonomy: rename the top-GIS topic in the grid; another curator excludes a second topic
    _nav(page, "Taxonomy")
    page.get_by_text("Topics ranked by mean GIS").wait_for(timeout=SLOW_MS)
    idle(page)
    rename_top_topic(page, NEW_NAME)
    tax = Taxonomy(ws_root / "taxonomy.sqlite")
    end = time.monotonic() + 60
    while not (tax.topics()["name"] == NEW_NAME).any():
        assert time.monotonic() < end, "the rename was not saved"
        time.sleep(0.5)
    idle(page)
    topics = tax.topics(run="gem-k4-auto-s0")
    named = topics.loc[topics["name"] == NEW_NAME, "id"].iloc[0]
    dropped = topics.loc[topics["id"] != named, "id"].iloc[0]
    tax.update_topic(dropped, tax.topic(dropped)["version"], "carol", excluded=True)
    assert tax.audit(named)["author"].iloc[-1] == "playwright"

    # Mixture: a stronger balance (sidebar) re-fits warm-started from the auto run; names follow
    _nav(page, "Mixture")
    _wait_caption(page, idle, "Run gem-k4-auto-s0")
    page.locator(".st-key-w_fit_auto").get_by_text("Automatic balance").click()
    idle(page, timeout_ms=SLOW_MS)
    thumb = page.locator(".st-key-w_fit_lambda").get_by_role("slider")
    thumb.focus()
    thumb.press("End")
    caption = _wait_caption(page, idle, "λ used = 1e+05")
    assert "Run gem-k4-l100000-s0" in caption and "warm-started from gem-k4-auto-s0" in caption
    page.locator(".st-key-mx_export button").click()
    download_button = page.locator(".st-key-mx_download button")
    download_button.wait_for(timeout=SLOW_MS)
    idle(page)
    with page.expect_download() as info:
        download_button.click()
    zpath = tmp_path / info.value.suggested_filename
    info.value.save_as(zpath)
    full_screenshot(page, artifacts_dir / "flow_mixture.png")
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(tmp_path / "bundle")
    (bundle,) = [p for p in (tmp_path / "bundle").iterdir() if p.is_dir()]
    report = validate_bundle(bundle)
    assert {"taxonomy", "assignments", "dolma"} <= set(report["formats"])
    mix = json.loads((bundle / "mixture.json").read_text(encoding="utf-8"))
    assert mix["clustering"]["run"] == "gem-k4-l100000-s0"
    domains = {d["id"]: d for d in mix["domains"]}
    refit = tax.topics(run="gem-k4-l100000-s0")
    assert set(domains) == set(refit["id"])  # the domains are the taxonomy's ids for this run
    for tid, row in refit.set_index("id").iterrows():
        assert domains[tid]["excluded"] == bool(row["excluded"]) and domains[tid]["label"] == row["name"]
        if row["excluded"]:
            assert domains[tid]["weight"] == 0
    if named in domains:  # kept its id through the re-fit (else refused: see gem.taxonomy)
        assert domains[named]["label"] == NEW_NAME
    assignments = pd.read_parquet(bundle / "assignments.parquet")
    assert len(assignments) == 160 and assignments["gis"].notna().all()
    assert set(assignments["domain_id"]) <= set(domains) | {d["id"] for d in mix["domains"]}

    # Student: trained on this fit's stable ids, then it labels a shard
    _nav(page, "Student")
    page.get_by_role("button", name="Train student").click()
    page.get_by_text("Top-1 agreement (held out)").wait_for(timeout=SLOW_MS)
    idle(page, timeout_ms=SLOW_MS)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "a.jsonl").write_text("".join(
        json.dumps({"id": f"new-{t}", "text": f"{vocab} and more"}) + "\n" for t, vocab in TOPICS.items()))
    page.get_by_role("textbox", name="Input shards (glob: *.jsonl, *.jsonl.gz, *.parquet)").fill(str(shard_dir / "*.jsonl"))
    page.get_by_role("textbox", name="Output folder name (inside this workspace's labels/ folder)").fill("batch1")
    page.get_by_role("button", name="Label", exact=True).click()
    page.get_by_text(re.compile(r"4 documents labelled")).wait_for(timeout=SLOW_MS)
    full_screenshot(page, artifacts_dir / "flow_student.png")
    labelled = pd.read_parquet(ws_root / "labels" / "batch1" / "a.parquet")
    assert sorted(labelled["id"]) == sorted(f"new-{t}" for t in TOPICS)
    # joinable to the mixture's domains: the student speaks the taxonomy's topic ids
    assert set(labelled["topic_id"]) <= set(refit["id"]) - set(refit.loc[refit["excluded"], "id"])
    assert page.locator("[data-testid='stException']").count() == 0
