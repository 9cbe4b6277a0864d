"""The page loads nothing from outside this server: the favicon is the PNG shipped in the repo
(served from /media), not a Material Symbols icon fetched from fonts.gstatic.com."""
from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_page_fetches_nothing_from_outside_this_server(streamlit_app, synthetic_workspace, browser_page, idle):
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    url = streamlit_app(synthetic_workspace)
    page.goto(url)
    idle(page)
    page.get_by_text("GEM curation studio").first.wait_for()
    # the app's page_icon replaces Streamlit's default ./favicon.png once the script has run
    page.wait_for_function("() => [...document.querySelectorAll('link[rel~=icon]')]"
                           ".some(l => l.href && !l.href.endsWith('/favicon.png'))", timeout=30_000)
    icons = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
    here = urlsplit(url).netloc
    assert icons and all(urlsplit(h).netloc == here and "/media/" in h for h in icons), icons
    outside = [u for u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).netloc != here]
    assert not outside, outside
