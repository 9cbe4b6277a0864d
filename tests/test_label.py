"""Labelling shards: streaming readers, rejects with reasons, resumability, local vs Ray engines."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gem.distill import train_student
from gem.label import find_shards, label_corpus, read_shard_stats
from gem.store import SAMPLE_DATA_DIR

ROOT = Path(__file__).resolve().parent.parent
BAD_LINES = [  # (raw JSONL line, expected reason prefix)
    ('{"id": "bad-1", "text": "unterminated', "invalid JSON"),
    ('[1, 2, 3]', "not a JSON object"),
    ('{"id": "bad-2"}', "missing or null text field"),
    ('{"id": "bad-3", "text": 42}', "text field 'text' is int"),
    ('{"id": "bad-4", "text": "   "}', "empty text field"),
    ('{"text": "no id here"}', "missing id field"),
]


@pytest.fixture(scope="module")
def corpus():
    return pd.read_parquet(SAMPLE_DATA_DIR / "corpus.parquet", columns=["id", "text", "source", "n_tokens"])


@pytest.fixture(scope="module")
def student_path(corpus, tmp_path_factory):
    """A real student (sample texts -> their source), trained in about a second."""
    train = corpus.sample(3000, random_state=1)
    path = tmp_path_factory.mktemp("student") / "student.bin"
    train_student(train["text"].tolist(), train["source"].tolist(), epoch=5, bucket=20_000, dim=16).save(path)
    return path


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    """Five shards of real documents: plain JSONL with malformed lines, gzip JSONL, Parquet (one
    null text), a JSONL with a token-count field, and an empty shard."""
    folder = tmp_path_factory.mktemp("shards")
    docs = corpus.iloc[:2000]

    def records(frame, tokens=False):
        cols = ["id", "text", "n_tokens"] if tokens else ["id", "text"]
        return [json.dumps(r, ensure_ascii=False) for r in frame[cols].to_dict("records")]

    lines = records(docs.iloc[:600])
    for k, (line, _) in enumerate(BAD_LINES):
        lines.insert(50 * k + 7, line)
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(records(docs.iloc[600:1100])) + "\n")
    part = docs.iloc[1100:1500][["id", "text"]].copy()
    part.iloc[3, 1] = None
    pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / "c.parquet", row_group_size=128)
    (folder / "d.jsonl").write_text("\n".join(records(docs.iloc[1500:2000], tokens=True)) + "\n", encoding="utf-8")
    (folder / "e.jsonl").write_text("", encoding="utf-8")
    return folder


def _outputs(out: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))}


@pytest.fixture(scope="module")
def reference(student_path, shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = label_corpus(student_path, str(shards / "*"), out, engine="local", workers=0)
    return out, summary


def test_outputs_summary_and_rejects(reference, shards):
    out, summary = reference
    outputs = _outputs(out)
    assert sorted(outputs) == ["a.parquet", "b.parquet", "c.parquet", "d.parquet", "e.parquet"]
    assert [len(outputs[n]) for n in sorted(outputs)] == [600, 500, 399, 500, 0]
    for frame in outputs.values():
        assert list(frame.columns) == ["id", "topic_id", "probability"]
        assert frame["probability"].between(0, 1).all()
        assert set(frame["topic_id"]) <= {"debian", "wordnet", "kjv", "python-docs"}
    assert summary["n_docs"] == 1999 and summary["n_rejected"] == len(BAD_LINES) + 1
    assert sum(t["docs"] for t in summary["topics"]) == 1999
    assert sum(t["doc_share"] for t in summary["topics"]) == pytest.approx(1.0)
    assert summary["tokens_source"]["field"] == 500 and summary["tokens_source"]["whitespace_words"] == 1499
    # a student on source labels is right about most documents' source
    corpus = pd.read_parquet(SAMPLE_DATA_DIR / "corpus.parquet", columns=["id", "source"]).set_index("id")["source"]
    labelled = pd.concat(outputs.values())
    assert (labelled["topic_id"].to_numpy() == corpus.loc[labelled["id"]].to_numpy()).mean() >= 0.85

    rejects = [json.loads(s) for s in (out / "rejects" / "a.jsonl").read_text().splitlines()]
    assert len(rejects) == len(BAD_LINES)
    source_lines = (shards / "a.jsonl").read_text().splitlines()
    for rej, (line, reason) in zip(rejects, BAD_LINES):
        assert rej["reason"].startswith(reason)
        assert source_lines[rej["line"] - 1] == line  # 1-based line numbers into the shard
    parquet_rej = json.loads((out / "rejects" / "c.jsonl").read_text())
    assert parquet_rej["line"] == 4 and parquet_rej["reason"].startswith("missing or null text")
    assert not (out / "rejects" / "b.jsonl").exists()
    assert json.loads((out / "summary.json").read_text())["n_docs"] == 1999


def test_process_pool_matches_in_process(reference, student_path, shards, tmp_path):
    ref_out, ref_summary = reference
    summary = label_corpus(student_path, str(shards / "*"), tmp_path / "out", engine="local", workers=2)
    for name, frame in _outputs(ref_out).items():
        pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "out" / name))
    assert summary["topics"] == ref_summary["topics"]


def test_interrupted_run_resumes_to_the_same_output(reference, student_path, shards, tmp_path):
    """A killed run leaves finished shards and atomic_path temp files; a restart skips the former,
    removes the latter, and ends identical to an uninterrupted run."""
    ref_out, ref_summary = reference
    out = tmp_path / "out"
    (out / "rejects").mkdir(parents=True)
    shutil.copy(ref_out / "b.parquet", out / "b.parquet")  # finished before the kill
    (out / ".a.parquet.x1y2.parquet").write_bytes(b"PAR1 half-written")  # killed mid-write
    (out / "rejects" / ".a.jsonl.k3.jsonl").write_text('{"partial"')
    stamp = (out / "b.parquet").stat().st_mtime_ns
    seen = []
    summary = label_corpus(student_path, str(shards / "*"), out, workers=0, progress=lambda d, t: seen.append((d, t)))
    assert summary["n_shards_skipped"] == 1 and seen[0] == (1, 5) and seen[-1] == (5, 5)
    assert (out / "b.parquet").stat().st_mtime_ns == stamp  # skipped, not rewritten
    assert not [p for p in out.rglob(".*") if p.is_file()]
    for name, frame in _outputs(ref_out).items():
        pd.testing.assert_frame_equal(frame, pd.read_parquet(out / name))
    assert summary["topics"] == ref_summary["topics"] and summary["n_rejected"] == ref_summary["n_rejected"]


def test_killed_cli_run_restarts_cleanly(reference, student_path, shards, tmp_path):
    """SIGKILL a real `gem label` process, then rerun: the result equals the uninterrupted run."""
    ref_out, _ = reference
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gem", "label", "--model", str(student_path), "--input", str(shards / "*"),
           "--out", str(out), "--workers", "0", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=0.8)  # killed wherever it is: importing, labelling, or done
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["n_docs"] == 1999
    for name, frame in _outputs(ref_out).items():
        pd.testing.assert_frame_equal(frame, pd.read_parquet(out / name))


@pytest.mark.slow
def test_ray_engine_matches_local(reference, student_path, shards, tmp_path):
    """The Ray Data engine, for real on a local Ray runtime (actors with 0.5 CPU each)."""
    ref_out, ref_summary = reference
    summary = label_corpus(student_path, str(shards / "*"), tmp_path / "out", engine="ray", workers=2)
    assert summary["engine"] == "ray"
    for name, frame in _outputs(ref_out).items():
        pd.testing.assert_frame_equal(frame, pd.read_parquet(tmp_path / "out" / name))
    for name in ("a.jsonl", "c.jsonl"):
        assert (tmp_path / "out" / "rejects" / name).read_text() == (ref_out / "rejects" / name).read_text()
    assert summary["topics"] == ref_summary["topics"] and summary["reject_reasons"] == ref_summary["reject_reasons"]
    assert read_shard_stats(tmp_path / "out" / "a.parquet")["n_rejected"] == len(BAD_LINES)


def test_clear_errors(student_path, shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no .jsonl"):
        label_corpus(student_path, str(tmp_path / "nothing" / "*.jsonl"), tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no such model"):
        label_corpus(tmp_path / "missing.ftz", str(shards / "*"), tmp_path / "o")
    with pytest.raises(ValueError, match="engine"):
        label_corpus(student_path, str(shards / "*"), tmp_path / "o", engine="spark")
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "a.jsonl").write_text("")
    with pytest.raises(ValueError, match="same output a.parquet"):
        find_shards([str(shards / "*"), str(twin / "*")])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pq.write_table(pa.table({"id": ["1"], "body": ["x"]}), wrong / "w.parquet")
    with pytest.raises(ValueError, match=r"w\.parquet: no column 'text'"):
        label_corpus(student_path, str(wrong / "*"), tmp_path / "o2", workers=0)
    assert not (tmp_path / "o2" / "w.parquet").exists()
