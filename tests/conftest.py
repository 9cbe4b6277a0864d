"""Shared fixtures. Reusable by every engineer's page tests:

Workspaces
- ``synthetic_workspace``: a small workspace (240 documents, 24-d "embeddings" drawn from an
  anisotropic mixture, with raw norms, source / category labels, two documents whose text is
  hostile HTML, and precomputed 2-D + sphere layouts so no UMAP runs). Fresh per test (a copy).
- ``sample_workspace``: a temporary copy of the shipped sample (sample_data/), seeded the way
  the app seeds it (corpus, embeddings, layouts copied). Fails if the sample is not built.
- ``make_workspace(n=..., hostile=...)``: factory behind ``synthetic_workspace``.

App under test
- ``app_test(ws)``: an AppTest of app.py bound to workspace ``ws`` via $GEM_WORKSPACE. Switch
  pages with ``at.switch_page("pages/2_Clusters.py").run()``.
- ``streamlit_app(ws) -> url``: a real ``streamlit run app.py`` on 127.0.0.1 at a free port with
  GEM_WORKSPACE=ws (started once per workspace path per test session, stopped at the end).
- ``browser_page``: a Playwright page in headless Debian Chromium (fresh user-data dir). Tests FAIL
  (not skip) when Chromium is missing: ``apt-get install chromium``. Wait for elements (content
  arrives over a websocket after load), e.g. ``page.get_by_text("Clusters on the hypersphere")``.
- ``artifacts_dir``: tests/artifacts/ (git-ignored) for screenshots.

Mark browser tests ``@pytest.mark.browser`` and ``@pytest.mark.slow``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_PATHS = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
from synthetic_ws import HOSTILE_TEXTS, build_synthetic_workspace  # noqa: E402,F401  (re-exported)


@pytest.fixture
def make_workspace(tmp_path):
    counter = iter(range(1000))

    def make(**kw):
        return build_synthetic_workspace(tmp_path / f"ws{next(counter)}", **kw)

    return make


@pytest.fixture(scope="session")
def _synthetic_template(tmp_path_factory):
    return build_synthetic_workspace(tmp_path_factory.mktemp("synthetic") / "ws")


@pytest.fixture
def synthetic_workspace(_synthetic_template, tmp_path):
    from gem.store import Workspace

    dest = tmp_path / "synthetic_ws"
    shutil.copytree(_synthetic_template.root, dest)
    return Workspace(dest)


@pytest.fixture
def sample_workspace(tmp_path):
    from gem.store import SAMPLE_DATA_DIR, seed_sample_workspace

    if not (SAMPLE_DATA_DIR / "corpus.parquet").exists() or not (SAMPLE_DATA_DIR / "embeddings").exists():
        pytest.fail("sample_data/ is not built: run `.venv/bin/python sample_data/build_sample.py --embed`")
    return seed_sample_workspace(tmp_path / "sample")


# ---------------------------------------------------------------------------- AppTest
@pytest.fixture
def app_test(monkeypatch):
    """Factory: ``at = app_test(ws)`` gives an AppTest of app.py (not yet run) bound to ``ws``."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(ROOT)
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))

    def make(ws, timeout: float = 120):
        monkeypatch.setenv("GEM_WORKSPACE", str(ws.root))
        return AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)

    return make


# ---------------------------------------------------------------------------- real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def _servers(tmp_path_factory):
    running: dict[str, tuple[subprocess.Popen, str]] = {}
    yield running
    for proc, _ in running.values():
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def streamlit_app(_servers, tmp_path_factory):
    """Factory: ``url = streamlit_app(ws)`` starts (once per workspace) ``streamlit run app.py``."""

    def start(ws, timeout: float = 60) -> str:
        key = str(ws.root)
        if key in _servers and _servers[key][0].poll() is None:
            return _servers[key][1]
        port = _free_port()
        log = tmp_path_factory.mktemp("streamlit") / "server.log"
        env = {**os.environ, "GEM_WORKSPACE": key, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
               "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        _servers[key] = (proc, url)
                        return url
            except OSError:
                time.sleep(0.3)
        proc.kill()
        pytest.fail(f"streamlit did not become healthy in {timeout} s:\n{log.read_text()[-3000:]}")

    return start


# ---------------------------------------------------------------------------- browser
def chromium_path() -> str:
    for p in CHROMIUM_PATHS:
        if os.path.exists(p):
            return p
    pytest.fail("Chromium not found at " + " or ".join(CHROMIUM_PATHS) +
                ": install it with `apt-get install -y chromium` (the browser tests need it)")


@pytest.fixture(scope="session")
def _playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser_page(_playwright, tmp_path):
    exe = chromium_path()
    context = _playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1600, "height": 1000},
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
