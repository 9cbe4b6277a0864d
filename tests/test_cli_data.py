"""`gem ingest` -> `gem embed` -> `gem info` end to end, through main() and the real console script."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gem.cli import main

DOCS = [
    {"id": "p1", "text": "The cat chased the mouse around the kitchen.", "source": "pets"},
    {"id": "p2", "text": "Dogs love long walks in the park.", "source": "pets"},
    {"id": "f1", "text": "Interest rates rose by a quarter point.", "source": "finance"},
    {"id": "f2", "text": "The central bank held its policy rate steady.", "source": "finance"},
    {"id": "f3", "text": "Bond yields fell after the inflation report.", "source": "finance"},
]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(d) for d in DOCS] + ['{"id": "bad", "text": ""}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gem_script() -> str:
    script = Path(sys.executable).with_name("gem")
    return str(script) if script.exists() else shutil.which("gem")


@pytest.mark.slow
def test_ingest_embed_info_end_to_end(tmp_path, corpus_file, capsys):
    ws = tmp_path / "ws"
    assert main(["ingest", str(corpus_file), "-w", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "6 records from 1 file(s): 5 accepted, 1 rejected" in out and "empty text 1" in out

    assert main(["embed", "-w", str(ws)]) == 0
    captured = capsys.readouterr()
    assert "embedded 5 documents as 'final' (384-d; 5 encoded" in captured.out
    assert "5/5" in captured.err  # tqdm progress bar on stderr
    assert main(["embed", "-w", str(ws), "--layer", "3"]) == 0
    assert "as 'layer3'" in capsys.readouterr().out
    assert main(["embed", "-w", str(ws)]) == 0  # everything cached now
    assert "0 encoded, 5 reused" in capsys.readouterr().out

    # the real console script, in its own process (no model load: info only)
    proc = subprocess.run([gem_script(), "info", "--workspace", str(ws), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["documents"] == 5 and info["labels"]["source"] == {"finance": 3, "pets": 2}
    assert info["tokens"]["total"] > 5 * 6 and info["rejects"] == 1
    final, layer = info["embeddings"]["final"], info["embeddings"]["layer3"]
    assert final["fresh"] and final["n"] == 5 and final["dim"] == 384
    assert layer["anisotropy"]["mean_cosine"] > final["anisotropy"]["mean_cosine"]

    assert main(["info", "-w", str(ws)]) == 0
    text = capsys.readouterr().out
    assert "5 documents" in text and "embeddings 'layer3': 5 x 384" in text and "anisotropy: mean cosine" in text


def test_precomputed_import_and_staleness(tmp_path, corpus_file, capsys):
    ws = tmp_path / "ws"
    assert main(["ingest", str(corpus_file), "-w", str(ws), "--label-field", "source"]) == 0
    rng = np.random.default_rng(0)
    np.save(tmp_path / "vecs.npy", rng.normal(size=(5, 16)))
    assert main(["embed", "-w", str(ws), "--precomputed", str(tmp_path / "vecs.npy")]) == 0
    assert "imported 5 x 16 vectors" in capsys.readouterr().out
    assert main(["info", "-w", str(ws), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["embeddings"]["final"]["fresh"] and info["embeddings"]["final"]["source"] == "precomputed"

    # re-ingest a different corpus: the old embeddings are reported stale
    corpus_file.write_text(json.dumps(DOCS[0]) + "\n")
    assert main(["ingest", str(corpus_file), "-w", str(ws)]) == 0
    assert main(["info", "-w", str(ws)]) == 0
    assert "STALE" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["ingest", "{tmp}/nope.jsonl", "-w", "{tmp}/ws"], "gem ingest: error: {tmp}/nope.jsonl: no such file or folder"),
    (["ingest", "{tmp}/in.txt", "-w", "{tmp}/ws"], "gem ingest: error: {tmp}/in.txt: unknown file type"),
    (["embed", "-w", "{tmp}/empty"], "gem embed: error: {tmp}/empty/corpus.parquet: no corpus in this workspace"),
    (["info", "-w", "{tmp}/empty"], "gem info: error: {tmp}/empty/corpus.parquet: no corpus in this workspace"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, argv, message, capsys):
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "empty").mkdir()  # a workspace folder without a corpus (a missing one: tests/test_integrity.py)
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(tmp=tmp_path)) and err.count("\n") == 1


def test_embed_bad_precomputed_rows(tmp_path, corpus_file, capsys):
    ws = tmp_path / "ws"
    main(["ingest", str(corpus_file), "-w", str(ws)])
    np.save(tmp_path / "short.npy", np.ones((3, 4)))
    assert main(["embed", "-w", str(ws), "--precomputed", str(tmp_path / "short.npy")]) == 2
    assert "short.npy: 3 rows but the corpus has 5" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["ingest", "embed", "info", "layout"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0 and "--workspace" in capsys.readouterr().out


@pytest.mark.slow
def test_layout_computes_caches_and_reuses(tmp_path, capsys):
    """`gem layout` writes both map kinds for a small workspace, then serves them from the cache."""
    import pandas as pd

    from gem.layout import get_layout
    from gem.store import Workspace

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16))
    X = np.repeat(centres, 60, axis=0) + 0.1 * rng.standard_normal((180, 16))
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    pd.DataFrame({"id": [f"d{i}" for i in range(180)], "text": [f"doc {i}" for i in range(180)],
                  "n_tokens": 2}).to_parquet(ws.corpus_path)
    norms = np.linalg.norm(X, axis=1)
    ws.save_embeddings("final", (X / norms[:, None]).astype(np.float32), norms, {"n": 180})
    assert main(["layout", "-w", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "final 2d: 180 points" in out and "final sphere: 180 points" in out
    two_d = get_layout(ws, "final", "2d", compute=False)
    assert two_d is not None and two_d.coords.shape == (180, 2)
    assert get_layout(ws, "final", "sphere", compute=False) is not None
    assert main(["layout", "-w", str(ws.root), "--kind", "2d"]) == 0  # cached: no recompute, same ids
    assert get_layout(ws, "final", "2d", compute=False).ids.tolist() == two_d.ids.tolist()


def _dup_corpus(tmp_path):
    rng = np.random.default_rng(0)
    base = [f"w{int(i)}" for i in rng.integers(0, 5000, 60)]
    near = base.copy()
    near[30] = "edited"  # Jaccard 55/61 = 0.90 with the original
    docs = DOCS + [
        {"id": "b1", "text": " ".join(base), "source": "web"},
        {"id": "b2", "text": "  " + " ".join(base).upper(), "source": "web"},  # exact after normalisation
        {"id": "b3", "text": " ".join(near), "source": "web"},
    ]
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _rejects(ws):
    return [json.loads(line) for line in (ws / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_ingest_dedup_flag(tmp_path, capsys):
    path = _dup_corpus(tmp_path)
    ws = tmp_path / "ws"
    assert main(["ingest", str(path), "-w", str(ws)]) == 0  # default: exact
    out = capsys.readouterr().out
    assert "8 records from 1 file(s): 7 accepted, 1 rejected" in out and "1 extra copies dropped" in out
    assert [(r["line"], r["reason"]) for r in _rejects(ws)] == [(7, "duplicate of b1")]

    assert main(["ingest", str(path), "-w", str(ws), "--dedup", "near", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_accepted"] + report["n_rejected"] == report["n_records"] == 8
    assert report["n_accepted"] == 6 and report["dedup"] == "near" and report["n_near_duplicates_dropped"] == 1
    rejects = _rejects(ws)
    assert [(r["file"], r["line"], r["duplicate_of"]) for r in rejects] == [(str(path), 7, "b1"), (str(path), 8, "b1")]
    assert rejects[1]["reason"].startswith("duplicate of b1 (near: estimated Jaccard")

    assert main(["ingest", str(path), "-w", str(ws), "--dedup", "none"]) == 0
    out = capsys.readouterr().out
    assert "8 accepted, 0 rejected" in out and "1 groups, 1 extra copies kept" in out
    assert main(["ingest", str(path), "-w", str(ws), "--drop-duplicates"]) == 0  # the old flag = exact
    assert "7 accepted, 1 rejected" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--dedup", "exact", "--near-threshold", "0.9"], "--near-threshold applies to --dedup near only"),
    (["--dedup", "near", "--near-threshold", "1.5"], "--near-threshold must be in (0, 1]"),
    (["--dedup", "none", "--drop-duplicates"], "--drop-duplicates means --dedup exact"),
])
def test_ingest_dedup_bad_options(tmp_path, argv, message, capsys):
    path = _dup_corpus(tmp_path)
    assert main(["ingest", str(path), "-w", str(tmp_path / "ws"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_embed_precision_flag(tmp_path, corpus_file, capsys, monkeypatch):
    import gem.embed

    ws = tmp_path / "ws"
    assert main(["ingest", str(corpus_file), "-w", str(ws)]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["embed", "-w", str(ws), "--precision", "fp16"])
    assert exc.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
    monkeypatch.setattr(gem.embed, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma"}))  # no native bf16
    assert main(["embed", "-w", str(ws), "--precision", "auto", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "float32 (auto: no native bf16" in out and "docs/s" in out
    meta = json.loads((ws / "embeddings" / "final.json").read_text())
    assert meta["precision"] == "float32" and meta["precision_requested"] == "auto"
    assert main(["embed", "-w", str(ws), "--precision", "bfloat16", "--no-cache"]) == 0
    meta = json.loads((ws / "embeddings" / "final.json").read_text())
    assert meta["precision"] == meta["precision_requested"] == "bfloat16"
    capsys.readouterr()
    assert main(["info", "-w", str(ws), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embeddings"]["final"]["precision"] == "bfloat16"


def test_ingest_progress_lines_on_request_only(tmp_path, corpus_file, capsys):
    """stderr is not a terminal here: no progress unless --progress, which writes whole lines."""
    assert main(["ingest", str(corpus_file), "-w", str(tmp_path / "ws")]) == 0
    assert "ingest:" not in capsys.readouterr().err
    assert main(["ingest", str(corpus_file), "-w", str(tmp_path / "ws"), "--progress"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ingest: ")]
    size = corpus_file.stat().st_size / 1e6
    assert lines and "\r" not in err
    assert lines[-1].startswith(f"ingest: 6 records, {size:,.1f} of {size:,.1f} MB (100%), ")
    assert main(["ingest", str(corpus_file), "-w", str(tmp_path / "ws"), "--no-progress"]) == 0
    assert "ingest:" not in capsys.readouterr().err


def test_ingest_progress_is_throttled_and_redrawn_on_a_terminal():
    import io

    from gem.cli.data import Progress

    out = io.StringIO()
    progress = Progress(out, "ingest", redraw=True, interval=3600)
    for i in range(1, 1001):
        progress(i * 10, bytes_read=i * 100, bytes_total=100_000)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")  # the first call and the final state only
    assert "ingest: 10,000 records, 0.1 of 0.1 MB (100%)" in text


def test_ingest_progress_shows_the_first_state_whatever_the_clock_reads(monkeypatch):
    # time.monotonic() has no fixed origin (on Linux: seconds since boot); a machine up for 5 s
    # must still see the first line at once.
    import io

    import gem.cli.data as data

    monkeypatch.setattr(data.time, "monotonic", lambda: 5.0)
    out = io.StringIO()
    progress = data.Progress(out, "ingest", redraw=False, interval=3600)
    progress(1, bytes_read=10, bytes_total=100)
    assert out.getvalue().startswith("ingest: 1 records")


def test_embed_progress_is_throttled_and_redrawn_on_a_terminal():
    import io

    from gem.cli.data import Progress

    out = io.StringIO()
    progress = Progress(out, "embed final", "docs", redraw=True, interval=3600)
    for i in range(0, 1001):
        progress(i, 1000)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")  # the first call and the final state only
    assert "embed final: 0/1,000 docs (0%), 0 docs/s" in text
    assert "\rembed final: 1,000/1,000 docs (100%), " in text and " docs/s, " in text


def test_embed_progress_in_a_log_one_line_per_interval_rate_from_the_first_batch(monkeypatch):
    """In a log: whole lines, at most one per interval; the clock (re)starts at the call with nothing
    done, so a model load before it counts in neither the rate nor the seconds shown."""
    import io

    import gem.cli.data as data

    clock = [100.0]
    monkeypatch.setattr(data.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = data.Progress(out, "embed final", "docs", redraw=False, interval=10)
    for t, done in [(105.0, 0), (107.0, 50), (114.0, 100), (116.0, 120), (125.0, 200)]:  # model load: 100 -> 105
        clock[0] = t
        progress(done, 200)
    progress.close()
    assert out.getvalue().splitlines() == [
        "embed final: 0/200 docs (0%), 0 docs/s, 0 s",
        "embed final: 120/200 docs (60%), 11 docs/s, 11 s",  # 107 and 114: within 10 s of the last line
        "embed final: 200/200 docs (100%), 10 docs/s, 20 s",  # 125: 9 s later, written by close()
    ]


class _FakeEmbedder:
    """What cmd_embed needs of SentenceTransformerEmbedder, without a model: 6-d vectors, progress
    per batch of 2 as the real one reports it (0 first)."""

    fingerprint, layer, precision, device, model_path, dim = "f" * 64, None, "float32", "cpu", None, 6

    def __init__(self, **kw):
        self.n_encoded = 0

    def encode(self, texts, progress=None):
        from gem.arrays import unit_rows_and_norms

        n = len(texts)
        X = np.random.default_rng(0).standard_normal((n, self.dim)).astype(np.float32)
        for done in range(0, n + 1, 2) if progress else ():
            progress(done, n)
        if progress and n % 2:
            progress(n, n)
        self.n_encoded += n
        return unit_rows_and_norms(X)


class _Terminal:
    """A stderr that says it is a terminal."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def isatty(self):
        return True

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass


@pytest.mark.parametrize("flag, tty, expect", [
    (None, True, "redrawn"), (None, False, "lines"), ("--progress", False, "lines"),
    ("--no-progress", True, None), ("--no-progress", False, None),
])
def test_embed_progress_on_a_terminal_or_a_log(tmp_path, corpus_file, capsys, monkeypatch, flag, tty, expect):
    """gem embed reports docs done / total, docs/s and seconds on stderr: on a terminal one line
    redrawn in place, in a log (file or pipe) whole lines; --no-progress never."""
    import gem.embed

    ws = tmp_path / "ws"
    assert main(["ingest", str(corpus_file), "-w", str(ws)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(gem.embed, "SentenceTransformerEmbedder", _FakeEmbedder)
    terminal = _Terminal()
    if tty:
        monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["embed", "-w", str(ws), "--no-cache"] + ([flag] if flag else [])) == 0
    captured = capsys.readouterr()
    err = terminal.buffer.getvalue() if tty else captured.err
    assert "embedded 5 documents as 'final' (6-d; 5 encoded" in captured.out
    if expect is None:
        assert "embed final" not in err
        return
    assert "embed final: 5/5 docs (100%), " in err and " docs/s, " in err
    if expect == "redrawn":
        assert err.startswith("\rembed final: 0/5 docs (0%)") and err.endswith("\x1b[K\n") and "\n" not in err[:-1]
    else:
        lines = err.splitlines()
        assert "\r" not in err and lines[0].startswith("embed final: 0/5 docs (0%)")
        assert lines[-1].startswith("embed final: 5/5 docs (100%), ")  # the final state, written by close
