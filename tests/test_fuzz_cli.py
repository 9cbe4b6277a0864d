"""Property test: the CLI's arguments, fuzzed, never let a traceback reach the user.

On one small fitted workspace (``build_synthetic_workspace``, a GEM run synced into the taxonomy,
a mixlab swarm; searches on the shipped sample, whose model embeds semantic queries), ``gem.cli.main`` runs in-process with arguments drawn from hypothesis strategies:
document ids, tags, notes, queries, topic ids, run names, manual weights and result metric names,
as text of every kind (empty, whitespace, control and bidi characters, very long values, values
that look like options) and as bytes that are not UTF-8 (the lone surrogates Python's argv
decoding makes of them, and the ones it never makes), plus id files of arbitrary bytes. The rule:
``main`` returns (or argparse exits with) 0 or 2, never raises, writes no "Traceback", and
every stderr line is short (values are cut in messages). GEM_DEBUG is unset.
"""
from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gem.cli import main

FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MAX_LINE = 500  # stderr line length bound: messages cut quoted values to 80 characters, lines to 400

surrogate_escape = st.integers(0x80, 0xFF).map(lambda b: chr(0xDC00 + b))  # argv bytes that are not UTF-8
special = st.sampled_from([
    "", " ", "\t", "\n", "-", "--", "--x", "-w", "=", "doc-0005", "doc-0006", "hostile-img", "t00", "T001", "g4",
    "natural", "\x1b[31m", "\u202e", "\ufeff", "\x00", "🙂", "é", "\ud800", "'", '"', "..", "/", "*", "%s", "{0}",
])
piece = st.one_of(st.text(max_size=12), surrogate_escape, special)
value = st.one_of(
    st.lists(piece, min_size=0, max_size=5).map("".join),
    st.integers(81, 3000).map(lambda n: "x" * n),  # long values
    st.builds(lambda s, n: s * n, special.filter(bool), st.integers(20, 400)),
)
real_id = st.sampled_from(["doc-0005", "doc-0006", "doc-0100", "hostile-img", "hostile-script"])
ids = st.lists(st.one_of(real_id, real_id, value), min_size=0, max_size=4)
word = st.text(min_size=1, max_size=16)  # plain text of every script, valid more often than not
text_value = st.one_of(word, word, value)


@pytest.fixture(scope="module")
def fuzz_ws(tmp_path_factory):
    from synthetic_ws import build_synthetic_workspace
    from gem.runs import FitSettings, fit_run

    ws = build_synthetic_workspace(tmp_path_factory.mktemp("fuzz_cli") / "ws")
    fit_run(ws, "g4", FitSettings(method="gem", k=4))
    saved = {k: os.environ.pop(k, None) for k in ("GEM_DEBUG", "GEM_AUTHOR")}
    os.environ["GEM_AUTHOR"] = "fuzzer"
    try:
        for argv in (["taxonomy", "-w", str(ws.root), "--run", "g4", "--top", "1"],
                     ["mixlab", "design", "-w", str(ws.root), "--run", "g4", "--n", "4"]):
            assert _run(argv)[0] == 0
        yield ws
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory, fuzz_ws):
    """The shipped sample (embedded with the bundled MiniLM): semantic search embeds each query."""
    from gem.store import SAMPLE_DATA_DIR, seed_sample_workspace

    if not (SAMPLE_DATA_DIR / "corpus.parquet").exists():
        pytest.fail("sample_data/ is not built: run `.venv/bin/python sample_data/build_sample.py --embed`")
    return seed_sample_workspace(tmp_path_factory.mktemp("fuzz_sample") / "sample")


def _stream(errors: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors=errors)  # as a real stdout / stderr


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = _stream("strict"), _stream("backslashreplace")
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2, --help 0
            rc = exc.code if isinstance(exc.code, int) else 2
    err.flush()
    return rc, err.buffer.getvalue().decode("utf-8", "replace")


def check(argv: list[str]) -> None:
    rc, err = _run(argv)
    assert rc in (0, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    long = [line for line in err.splitlines() if len(line) > MAX_LINE and not line.startswith("usage:")]
    assert not long, (argv, long[0][:200])


# ---------------------------------------------------------------------------- document flags
@FUZZ
@given(action=st.sampled_from(["--tag", "--untag", "--note"]), text=text_value, ids=ids)
def test_flag_tags_notes_and_ids(fuzz_ws, action, text, ids):
    check(["flag", "-w", str(fuzz_ws.root), action, text, *ids])


@FUZZ
@given(note=st.none() | text_value, ids=ids, include=st.booleans(), author=st.none() | text_value)
def test_flag_exclude_include(fuzz_ws, note, ids, include, author):
    argv = ["flag", "-w", str(fuzz_ws.root)] + (["--include"] if include else ["--exclude", "--reason", "junk"])
    argv += ([] if note is None or include else ["--note", note]) + ([] if author is None else ["--author", author])
    check(argv + ["--", *ids])


@FUZZ
@given(content=st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"doc-0005", b"doc-0006", b"\xef\xbb\xbf", b"\xe9", b"#c", b"", b"\r"]),
             max_size=6).map(b"\n".join)))
def test_flag_ids_files_of_any_bytes(fuzz_ws, tmp_path_factory, content):
    path = tmp_path_factory.mktemp("ids") / "ids.txt"
    path.write_bytes(content)
    check(["flag", "-w", str(fuzz_ws.root), "--tag", "fuzz", "--ids-file", str(path)])


# ---------------------------------------------------------------------------- search, topics, export, mixlab
@FUZZ
@given(query=st.one_of(st.sampled_from(["document", "about cooking", "paragraph 3", "<script>"]), text_value),
       semantic=st.booleans(), mode=st.sampled_from(["auto", "phrase", "all"]))
def test_search_queries(sample_ws, query, semantic, mode):
    check(["search", "-w", str(sample_ws.root), "--mode", mode, "--k", "3", *(["--semantic"] if semantic else []),
           "--", query])


@FUZZ
@given(action=st.sampled_from(["merge", "unmerge", "unsplit", "split"]), a=st.one_of(st.just("T001"), value),
       b=st.one_of(st.just("T002"), value), author=text_value)
def test_topics_ids_and_authors(fuzz_ws, action, a, b, author):
    argv = ["topics", "-w", str(fuzz_ws.root), action]
    if action == "merge":
        argv += ["--author", author, "--", a, b]
    elif action == "split":
        argv += ["--k", "2", "--preview", "--", a]
    else:
        argv += ["--author", author, "--", a]
    check(argv)


@FUZZ
@given(run=st.one_of(st.just("g4"), value),
       manual=st.lists(st.builds("{}={}".format, st.one_of(st.just("T001"), value),
                                 st.one_of(st.just("0.25"), value)), max_size=2),
       data_root=st.one_of(st.just("data"), text_value))
def test_export_names_and_manual_weights(fuzz_ws, tmp_path_factory, run, manual, data_root):
    out = tmp_path_factory.mktemp("out") / "bundle"
    argv = ["export", "-w", str(fuzz_ws.root), "--run", run, "--no-gis", "--formats", "megatron,regmix",
            "--out", str(out), "--data-root", data_root]
    check(argv + (["--strategy", "manual", "--manual", *manual] if manual else []))


@FUZZ
@given(target=st.one_of(st.sampled_from(["label:category=cooking", "topic:T001", "file:/nonexistent"]), value),
       metric=st.one_of(st.just("xent_bits"), value), swarm=st.one_of(st.just("g4-n4-a1-s0"), value))
def test_mixlab_targets_swarms_and_metrics(fuzz_ws, target, metric, swarm):
    check(["mixlab", "proxy", "-w", str(fuzz_ws.root), "--swarm", swarm, "--target", target,
           "--tokens", "1000", "--eval-tokens", "100"])
    check(["mixlab", "fit", "-w", str(fuzz_ws.root), "--swarm", swarm, "--metric", metric])


@FUZZ
@given(workspace=value, command=st.sampled_from([["info"], ["flag", "--list"], ["search", "q"], ["topics", "list"]]))
def test_any_workspace_path(fuzz_ws, workspace, command):
    here = os.getcwd()
    os.chdir(fuzz_ws.root.parent)  # relative names land beside the workspace, never in the repository
    try:
        check([command[0], "-w", workspace, *command[1:]])
    finally:
        os.chdir(here)
    assert not any(p.name.startswith("x" * 81) for p in fuzz_ws.root.parent.iterdir())
