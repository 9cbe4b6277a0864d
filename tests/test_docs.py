"""The documentation: the mkdocs site builds offline with no warning (broken links or anchors,
pages missing from the navigation), the README stays short and its links resolve, and every `gem`
command is documented on the CLI page."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_CHARS = 8000
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    return out


def test_site_builds_strict_with_every_page(site):
    pages = sorted(p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md"))
    assert pages, "docs/ holds no page"
    for page in pages:
        html = site / "index.html" if page.name == "index" else site / page / "index.html"
        assert html.is_file(), f"docs/{page}.md was not built"


def test_mkdocs_config_fetches_nothing():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True
    assert config["theme"]["font"] is False, "theme.font must be false (no web fonts)"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert set(plugins) <= {"search"}, f"plugins {plugins}: only local ones (social cards, privacy fetch at build time)"


def _readme_links() -> list[str]:
    return [m.group(1) for m in LINK.finditer(README.read_text(encoding="utf-8"))]


def test_readme_is_short():
    size = len(README.read_text(encoding="utf-8"))
    assert size < README_MAX_CHARS, f"README.md has {size:,} characters; keep it under {README_MAX_CHARS:,} (details go to docs/)"


def test_readme_relative_links_resolve(site):
    links = [link for link in _readme_links() if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]
    assert links, "README.md links to nothing"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path).resolve() if path else README
        assert target.exists(), f"README.md links to {link!r}: no such file"
        if anchor and target.suffix == ".md" and DOCS in target.parents:
            page = target.relative_to(DOCS).with_suffix("")
            html = site / "index.html" if page.name == "index" else site / page / "index.html"
            found = f'id="{anchor}"' in html.read_text(encoding="utf-8")
            assert found, f"README.md links to {link!r}: docs/{page}.md has no heading with that anchor"


def _commands() -> dict[str, list[str]]:
    """Every `gem` command and, for command groups (topics, mixlab), their sub-commands."""
    import argparse

    from gem.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    return {name: sorted(subcommands(sub)) for name, sub in subcommands(build_parser()).items()}


def test_every_cli_command_is_documented():
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    commands = _commands()
    assert {"ingest", "embed", "fit", "export", "label"} <= set(commands)
    for name, subs in commands.items():
        assert re.search(rf"`gem {re.escape(name)}\b", page), f"docs/cli.md does not document `gem {name}`"
        lines = "\n".join(line for line in page.splitlines() if f"gem {name}" in line)
        for sub in subs:
            assert re.search(rf"\b{re.escape(sub)}\b", lines), f"docs/cli.md does not document `gem {name} {sub}`"


def test_docs_say_what_and_why_not_history():
    for path in [README, *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"\b(DESIGN|SEED)\.md\b", r"\b[Ii]ssue \d+", r"\bDESIGN \d"):
            hit = re.search(pattern, text)
            assert hit is None, f"{path.relative_to(ROOT)} cites {hit.group(0)!r} (not in the repository, or history)"


def test_code_map_lists_every_module():
    """docs/code-map.md has a line for every module of gem/ and pages/ (a new module needs one)."""
    text = (DOCS / "code-map.md").read_text(encoding="utf-8")
    modules = sorted(p.relative_to(ROOT).as_posix() for folder in ("gem", "pages")
                     for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"add these modules to docs/code-map.md: {', '.join(missing)}"
