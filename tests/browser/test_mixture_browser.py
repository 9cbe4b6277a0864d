"""The real app in headless Chromium: on the Mixture page, moving the balance slider re-fits and
changes the chosen weights; the exported bundle downloads as a zip that validates and carries
exactly the weights the page showed."""
import json
import time
import zipfile

import numpy as np
import pytest

from gem.mixture import validate_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _shown_weights(page) -> dict[str, float]:
    """The chosen weights as the page shows them (the JSON under the weights table)."""
    code = page.locator(".st-key-mx_weights_json pre")
    if not code.is_visible():
        page.get_by_text("Chosen weights as JSON (to copy)").click()
    code.wait_for()
    return json.loads(code.inner_text())


def _fit_caption(page):
    return page.locator("[data-testid='stMain'] [data-testid='stCaptionContainer']", has_text="λ used =").first


def _wait_for_lambda(page, idle, value: str, timeout_s=120.0) -> None:
    """Until the fit caption names the new lambda and the run is over."""
    caption = _fit_caption(page)
    end = time.monotonic() + timeout_s
    while f"λ used = {value}." not in caption.inner_text():
        assert time.monotonic() < end, f"no re-fit with λ = {value}: caption {caption.inner_text()!r}"
        page.wait_for_timeout(250)
    idle(page)


def test_balance_slider_refits_and_exported_bundle_validates(streamlit_app, synthetic_workspace, browser_page,
                                                              artifacts_dir, tmp_path, idle, full_screenshot):
    page = browser_page
    page.goto(streamlit_app(synthetic_workspace))
    page.get_by_text("Anisotropy: how much").wait_for()  # home rendered (content arrives over the websocket)
    page.get_by_role("link", name="Mixture", exact=True).click()
    _fit_caption(page).wait_for(timeout=120_000)
    page.locator(".st-key-mx_weights_chart .js-plotly-plot .bars path").first.wait_for(state="attached")
    idle(page)

    # balanced: the chosen weights are GEM's fitted masses, which the balance strength moves
    page.locator(".st-key-mx_strategy").get_by_text("Balanced", exact=True).click()
    page.get_by_text("the fitted GEM mass of each topic").wait_for()
    idle(page)
    # the balance is the current fit's (sidebar): switch automatic balance off, then use the
    # keyboard on the slider's thumb (a visually hidden range input): Home = no balance at all
    page.locator(".st-key-w_fit_auto").get_by_text("Automatic balance").click()
    idle(page)
    thumb = page.locator(".st-key-w_fit_lambda").get_by_role("slider")
    assert thumb.get_attribute("aria-valuetext") == "paper (λ = 5000)"  # the default stop
    thumb.focus()
    thumb.press("Home")
    _wait_for_lambda(page, idle, "0")
    before = _shown_weights(page)
    full_screenshot(page, artifacts_dir / "mixture_before_slider.png")

    # End = the strongest stop, "strict" (lambda 1e5): re-fits warm-started from the auto run
    thumb.press("End")
    _wait_for_lambda(page, idle, "1e+05")
    assert thumb.get_attribute("aria-valuetext") == "strict (λ = 100000)"
    assert "warm-started from gem-k24-auto-s0" in _fit_caption(page).inner_text()
    after = _shown_weights(page)
    full_screenshot(page, artifacts_dir / "mixture_after_slider.png")

    # the taxonomy follows the re-fit: most topics keep their ids (a cluster whose members moved
    # away is refused and gets a new id, see gem.taxonomy)
    shared = before.keys() & after.keys()
    assert len(after) >= 2 and len(shared) >= len(after) // 2
    for w in (before, after):
        assert abs(sum(w.values()) - 1) < 1e-9
    w0, w1 = np.array([before[k] for k in shared]), np.array([after[k] for k in shared])
    assert np.abs(w1 - w0).max() > 1e-3, "the weights did not change with the balance"
    assert max(after.values()) < max(before.values())  # a stronger pull to the uniform target flattens the masses

    # export: written into the workspace, then downloaded as a zip
    page.locator(".st-key-mx_export button").click()
    download_button = page.locator(".st-key-mx_download button")
    download_button.wait_for(timeout=120_000)
    idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    shown = _shown_weights(page)
    assert shown == after  # the export re-used the fit: same weights on screen
    with page.expect_download() as info:
        download_button.click()
    download = info.value
    assert download.suggested_filename.endswith(".zip")
    zpath = tmp_path / download.suggested_filename
    download.save_as(zpath)
    full_screenshot(page, artifacts_dir / "mixture_exported.png")

    out = tmp_path / "unzipped"
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(out)
    (bundle,) = [p for p in out.iterdir() if p.is_dir()]
    report = validate_bundle(bundle)
    # every trainer format the page exports by default was parsed back against mixture.json
    assert {"megatron", "olmo", "hf", "doremi", "regmix", "weborganizer", "dolma", "assignments"} <= set(
        report["formats"])
    mix = json.loads((bundle / "mixture.json").read_text(encoding="utf-8"))
    assert mix["strategy"]["name"] == "balanced"
    assert mix["clustering"]["run"] == "gem-k24-l100000-s0" and mix["clustering"]["params"]["balance"] == 100000.0
    weights = {d["id"]: d["weight"] for d in mix["domains"] if d["weight"] > 0 and not d["excluded"]}
    assert abs(sum(d["weight"] for d in mix["domains"]) - 1) < 1e-9
    assert weights.keys() == shown.keys()
    assert max(abs(weights[k] - shown[k]) for k in shown) < 1e-12
