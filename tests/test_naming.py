"""The optional LLM namer keeps its API key to itself: no cross-origin redirect carries it, reprs and
UI text hide it, credentials in the URL are refused (real HTTP servers on 127.0.0.1)."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

from gem.naming import LLMNamer, NamerSettings, NamingError, redact_url, settings_from_env

KEY = "sk-test-SECRET-123"
REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Guitar Music"}}]}).encode()


class _Server:
    """An HTTP server on 127.0.0.1 recording every request (method, path, Authorization)."""

    def __init__(self, respond):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen.append({"method": self.command, "path": self.path,
                             "auth": self.headers.get("Authorization"), "body": body})
                status, headers, payload = respond(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _ok(handler):
    return 200, {"Content-Type": "application/json"}, REPLY


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_api_key_never_follows_a_redirect_to_another_origin(code):
    """The endpoint redirects to another port of 127.0.0.1 (another origin): the Bearer key must not
    arrive there; the namer refuses with a clear error and never shows the key."""
    with _Server(_ok) as elsewhere:
        target = f"http://127.0.0.1:{elsewhere.port}/v1/chat/completions"

        def redirect(handler):
            return code, {"Location": target}, b""

        with _Server(redirect) as endpoint:
            settings = NamerSettings(url=f"http://127.0.0.1:{endpoint.port}/v1", model="tiny", api_key=KEY, timeout=5)
            with pytest.raises(NamingError) as info:
                LLMNamer(settings).name(["guitar"], ["a doc about guitars"])
            assert endpoint.seen and endpoint.seen[0]["auth"] == f"Bearer {KEY}"  # the endpoint itself gets it
    assert all(r["auth"] is None for r in elsewhere.seen), elsewhere.seen
    assert KEY not in str(info.value)
    if code in (301, 302, 303):  # urllib would have followed these (as a GET, with the key)
        assert "another host" in str(info.value) and not elsewhere.seen


def test_same_origin_redirect_is_followed_with_the_key():
    def respond(handler):
        if handler.path == "/old/chat/completions":
            return 302, {"Location": "/v1/chat/completions"}, b""
        return _ok(handler)

    with _Server(respond) as endpoint:
        settings = NamerSettings(url=f"http://127.0.0.1:{endpoint.port}/old", model="tiny", api_key=KEY, timeout=5)
        assert LLMNamer(settings).name(["guitar"], ["doc"]) == "Guitar Music"
    assert [r["path"] for r in endpoint.seen] == ["/old/chat/completions", "/v1/chat/completions"]
    assert all(r["auth"] == f"Bearer {KEY}" for r in endpoint.seen)


def test_settings_repr_and_display_endpoint_hide_secrets():
    s = NamerSettings(url="https://llm.example:8443/v1?api-key=QUERYSECRET&v=2", model="m", api_key=KEY)
    for text in (repr(s), str(s), f"{s}", s.display_endpoint):
        assert KEY not in text and "QUERYSECRET" not in text
    assert "api_key='***'" in repr(s) and "model='m'" in repr(s)
    assert s.display_endpoint == "https://llm.example:8443/v1/chat/completions?api-key=***&v=***"
    assert s.endpoint == "https://llm.example:8443/v1/chat/completions?api-key=QUERYSECRET&v=2"  # what is requested
    assert "api_key=None" in repr(NamerSettings(url="http://h/v1", model="m"))
    assert redact_url("http://user:pass@h:81/p?q=1#frag") == "http://h:81/p?q=***"


def test_credentials_in_the_url_are_refused_without_echoing_them():
    env = {"GEM_NAMER_URL": "https://user:URLSECRET@llm.example/v1", "GEM_NAMER_MODEL": "m"}
    with pytest.raises(ValueError, match="GEM_NAMER_API_KEY") as info:
        settings_from_env(env)
    assert "URLSECRET" not in str(info.value)
    with pytest.raises(ValueError, match="http:// or https://") as info:
        settings_from_env({"GEM_NAMER_URL": "ftp://u:URLSECRET@h/", "GEM_NAMER_MODEL": "m"})
    assert "URLSECRET" not in str(info.value)
    direct = NamerSettings(url="http://user:URLSECRET@127.0.0.1:9/v1", model="m")
    with pytest.raises(NamingError, match="must not hold credentials") as info:
        LLMNamer(direct).name([], ["d"])
    assert "URLSECRET" not in str(info.value)
    ok = settings_from_env({"GEM_NAMER_URL": "http://127.0.0.1:9/v1", "GEM_NAMER_MODEL": "m",
                            "GEM_NAMER_API_KEY": KEY})
    assert ok.api_key == KEY and KEY not in repr(ok)
