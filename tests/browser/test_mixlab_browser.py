"""The real app in headless Chromium, Mixture lab page: design a small swarm, run the proxy, read
the fit, see the best mixture beside natural / balanced / UniMax, export it and download a bundle
that validates with weight_source "mixlab"."""
import io
import json
import zipfile

import pytest

from gem.mixture import validate_bundle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_design_proxy_fit_best_export(streamlit_app, synthetic_workspace, browser_page, artifacts_dir, tmp_path,
                                      idle, full_screenshot):
    page = browser_page
    page.goto(streamlit_app(synthetic_workspace))
    page.get_by_text("Anisotropy: how much").wait_for()
    page.get_by_role("link", name="Mixture lab", exact=True).click()
    page.get_by_text("1. Design a swarm").wait_for(timeout=120_000)
    idle(page)
    page.get_by_text("No swarm yet").wait_for()

    n_input = page.locator(".st-key-ml_n input")
    n_input.fill("16")
    n_input.press("Tab")
    page.get_by_role("button", name="Design swarm").click()
    page.get_by_text("No results for this swarm yet").wait_for(timeout=120_000)
    page.get_by_text("19 mixtures over").wait_for()
    idle(page)

    page.locator(".st-key-ml_run_proxy button").click()
    page.get_by_text("Scored 19 mixtures").wait_for(timeout=120_000)
    idle(page)
    page.get_by_text("Held-out Spearman ρ", exact=True).wait_for()
    points = page.locator(".st-key-ml_fit_chart .js-plotly-plot .scatterlayer .point")
    points.first.wait_for(state="attached")
    assert points.count() == 19
    bars = page.locator(".st-key-ml_best_chart .js-plotly-plot .bars path")
    bars.first.wait_for(state="attached")
    legend = page.locator(".st-key-ml_best_chart .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert {"natural", "balanced", "unimax", "predicted best"} <= set(legend)

    page.locator(".st-key-ml_export_button button").click()
    page.get_by_text("Wrote and validated").wait_for(timeout=120_000)
    idle(page)
    full_screenshot(page, artifacts_dir / "mixlab_page.png")
    with page.expect_download() as info:
        page.locator(".st-key-ml_download button").click()
    data = open(info.value.path(), "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(tmp_path / "bundle")
    (folder,) = list((tmp_path / "bundle").iterdir())
    report = validate_bundle(folder)
    doc = json.loads((folder / "mixture.json").read_text())
    active = [d for d in doc["domains"] if d["weight"] > 0]
    assert {d["weight_source"] for d in active} == {"mixlab"} and report["weights"]
    assert doc["extra"]["mixlab"]["metric"] == "xent_bits"
    assert page.evaluate("() => window.__pwned === undefined")
