"""Labelling shards: streaming readers, rejects with reasons, resumability, local vs Ray engines."""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

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


# ---------------------------------------------------------------------------- hostile and broken input
def test_invalid_utf8_is_rejected_with_line_and_reason(student_path, corpus, tmp_path):
    """Undecodable bytes reject their record (file, line, reason), counted in the summary: never
    silently replaced by U+FFFD and labelled."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = [json.dumps({"id": r.id, "text": r.text}).encode() for r in corpus.iloc[:20].itertuples()]
    bad = b'{"id": "latin1", "text": "caf\xe9 au lait"}'  # Latin-1, not UTF-8
    lines = good[:5] + [bad] + good[5:]
    (folder / "u.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(folder / "v.jsonl.gz", "wb") as fh:
        fh.write(b"\n".join(good[:3] + [b'{"id": "x", "text": "\xff\xfe"}']) + b"\n")
    out = tmp_path / "out"
    summary = label_corpus(student_path, str(folder / "*"), out, workers=0)
    assert summary["n_docs"] == 23 and summary["n_rejected"] == 2
    assert summary["reject_reasons"] == {"invalid UTF-8": 2}
    assert json.loads((out / "summary.json").read_text())["reject_reasons"] == {"invalid UTF-8": 2}
    assert "latin1" not in set(pd.read_parquet(out / "u.parquet")["id"])
    rej = json.loads((out / "rejects" / "u.jsonl").read_text())
    assert rej["shard"] == "u.jsonl" and rej["line"] == 6
    assert rej["reason"] == "invalid UTF-8: byte 0xe9 at byte 30 of the line"
    assert "\\xe9" in rej["record"] and "\ufffd" not in rej["record"]
    rej_v = json.loads((out / "rejects" / "v.jsonl").read_text())
    assert rej_v["line"] == 4 and rej_v["reason"].startswith("invalid UTF-8: byte 0xff")


def test_leftovers_of_shard_names_with_dots_are_removed(student_path, corpus, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    records = "".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in corpus.iloc[:30].itertuples())
    (folder / "part.001.jsonl").write_text(records + "not json\n")
    (folder / "web.2024-01.jsonl").write_text(records)
    out = tmp_path / "out"
    (out / "rejects").mkdir(parents=True)
    left = [out / ".part.001.parquet.k2j4h6g8.parquet", out / ".web.2024-01.parquet.abcdefgh.parquet",
            out / "rejects" / ".part.001.jsonl.zz11yy22.tmp", out / ".summary.json.q1w2e3r4.tmp"]
    for f in left:
        f.write_bytes(b"half-written")
    keep = out / ".part.002.parquet.k2j4h6g8.parquet"  # not a shard of this run: left alone
    keep.write_bytes(b"other")
    summary = label_corpus(student_path, str(folder / "*"), out, workers=0)
    assert summary["n_docs"] == 60 and summary["n_rejected"] == 1
    assert not [f for f in left if f.exists()] and keep.exists()
    assert sorted(p.name for p in out.glob("[!.]*.parquet")) == ["part.001.parquet", "web.2024-01.parquet"]


def test_outputs_are_byte_reproducible_and_timings_go_to_their_own_log(student_path, shards, tmp_path):
    """Two runs on the same input (in-process and with a process pool) write identical bytes to
    every output and to summary.json; wall-clock seconds live in timings.jsonl only."""
    first = label_corpus(student_path, str(shards / "*"), tmp_path / "one", workers=0)
    second = label_corpus(student_path, str(shards / "*"), tmp_path / "two", workers=2)
    names = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*")
                   if p.is_file() and p.name != "timings.jsonl")
    assert "summary.json" in {str(n) for n in names} and len([n for n in names if n.suffix == ".parquet"]) == 5
    assert names == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*")
                           if p.is_file() and p.name != "timings.jsonl")
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert "seconds" not in json.loads((tmp_path / "one" / "summary.json").read_text())
    assert "seconds" not in read_shard_stats(tmp_path / "one" / "a.parquet")
    assert first["seconds"] >= 0 and second["workers"] == 2 and first["n_shards_skipped"] == 0
    log = [json.loads(s) for s in (tmp_path / "two" / "timings.jsonl").read_text().splitlines()]
    assert sorted(r["shard"] for r in log if "shard" in r) == ["a", "b", "c", "d", "e"]
    assert all(r["seconds"] >= 0 for r in log) and log[-1]["run"] == "label" and log[-1]["workers"] == 2


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, from /proc (psutil may be absent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _proc(pid: int, name: str) -> bytes:
    try:
        return (Path("/proc") / str(pid) / name).read_bytes()
    except OSError:  # gone meanwhile
        return b""


def _running(pid: int) -> bool:
    stat = _proc(pid, "stat")
    return bool(stat) and stat.rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie has exited, unreaped


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_the_driver_stops_its_pool_workers(student_path, corpus, tmp_path):
    """SIGKILL only the `gem label` driver while two workers label long shards: the workers must
    not run on (they used to, labelling to the end, then wait on the dead driver's queue forever)."""
    import os
    import signal
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    texts = [t[:120] for t in corpus["text"].iloc[:40]]
    block = "".join(json.dumps({"id": f"d{i}", "text": texts[i % 40]}) + "\n" for i in range(20_000)).encode()
    member = gzip.compress(block, compresslevel=6)  # a multi-member gzip: long shards, small files
    for name in ("s1", "s2", "s3"):
        with open(folder / f"{name}.jsonl.gz", "wb") as fh:
            fh.write(member * 30)  # 600k records (2 MB): about 15 s of labelling per shard
    cmd = [sys.executable, "-m", "gem", "label", "--model", str(student_path), "--input", str(folder / "*"),
           "--out", str(tmp_path / "out"), "--workers", "2", "--json"]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until both workers have loaded the model
            workers = [p for p in _children(driver.pid)
                       if b"spawn_main" in _proc(p, "cmdline") and b"fasttext" in _proc(p, "maps")]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, "the pool did not start"
        time.sleep(1.0)  # labelling now
        assert driver.poll() is None and all(_running(p) for p in workers)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _running(p)], "pool workers outlived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for p in workers:  # never leave them behind, even when the test fails
            if _running(p):
                os.kill(p, signal.SIGKILL)


def test_deep_nesting_and_huge_numbers_are_rejects_not_a_crash(student_path, corpus, tmp_path, capsys):
    """A line nested ~5,000 deep (RecursionError in json.loads), a 4,301-digit integer (ValueError
    past Python's int max str digits) and a token count past int64 are per-record problems: the CLI
    exits 0 and the rejects name line and reason (before: a traceback and exit 1)."""
    from gem.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    good = [json.dumps({"id": r.id, "text": r.text}) for r in corpus.iloc[:10].itertuples()]
    lines = good[:3] + [
        '{"id": "deep", "text": "x", "extra": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"id": "huge", "text": "x", "n_tokens": ' + "1" * 4301 + "}",
        json.dumps({"id": "big", "text": "a count past int64", "n_tokens": 10**30}),
    ] + good[3:]
    (folder / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["label", "--model", str(student_path), "--input", str(folder / "*"), "--out", str(out),
                 "--workers", "0", "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_docs"] == 11 and summary["n_rejected"] == 2
    assert summary["tokens_source"]["whitespace_words"] == 11  # the overflowing count falls back to words
    rejects = [json.loads(line) for line in (out / "rejects" / "d.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"].split(" (")[0]) for r in rejects] == [(4, "nested too deep"), (5, "number too large")]
    capsys.readouterr()


def test_shard_names_that_are_not_utf8_are_labelled(student_path, corpus, tmp_path):
    """A shard whose file name is not valid UTF-8 (Latin-1 bytes) is read and labelled like any
    other, JSONL and Parquet alike; its output keeps the same name bytes."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    docs = corpus.iloc[:40]
    jsonl = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jsonl")
    with open(jsonl, "w", encoding="utf-8") as fh:
        fh.write("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in docs.iloc[:20].itertuples()))
        fh.write("not json\n")
    parquet = os.fsdecode(os.fsencode(folder) + b"/r\xe9sum\xe9.parquet")
    with open(parquet, "wb") as fh:
        pq.write_table(pa.Table.from_pandas(docs.iloc[20:][["id", "text"]], preserve_index=False), fh)
    out = tmp_path / "out"
    summary = label_corpus(student_path, str(folder / "*"), out, workers=0)
    assert summary["n_docs"] == 40 and summary["n_rejected"] == 1
    names = sorted(os.fsencode(p.name) for p in out.glob("*.parquet"))
    assert names == [b"caf\xe9.parquet", b"r\xe9sum\xe9.parquet"]
    with open(os.fsdecode(os.fsencode(out) + b"/r\xe9sum\xe9.parquet"), "rb") as fh:
        labelled = pq.read_table(fh).to_pandas()
    assert labelled["id"].tolist() == docs.iloc[20:]["id"].tolist()
    assert (out / "summary.json").exists()
    assert label_corpus(student_path, str(folder / "*"), out, workers=0)["n_docs"] == 40  # a rerun skips both


@pytest.mark.slow
def test_teacher_routes_split_topics_to_their_children(sample_workspace, tmp_path):
    """The exact teacher gives the stable ids the taxonomy gives the run's own documents: a split
    topic's documents get its children's ids, never the split topic's."""
    from gem.label import load_labeller
    from gem.runs import FitSettings, fit_run
    from gem.taxonomy import Taxonomy
    from gem.workspace_ops import document_topic_ids, propose_topic_split, sync_saved_run

    ws = sample_workspace
    fit_run(ws, "t", FitSettings(k=6, balance=0.0, seed=0))
    sync_saved_run(ws, "t")
    tax = Taxonomy(ws.taxonomy_db)
    parent = tax.topics(run="t").sort_values("n_docs").iloc[-1]["id"]
    children = tax.accept_split(propose_topic_split(ws, tax, "t", parent, 2), "alice")

    corpus = ws.load_corpus().set_index("id")
    run_ids = pd.read_parquet(ws.run_dir("t") / "assignments.parquet", columns=["id"])["id"].astype(str)
    truth = pd.Series(document_topic_ids(ws, "t"), index=run_ids)
    probe = truth[truth.isin(children)].index[:100].append(truth[~truth.isin(children)].index[:100])
    ids, _ = load_labeller(ws.run_dir("t")).predict(corpus.loc[probe, "text"].tolist())
    assert parent not in set(ids) and set(children) <= set(ids)
    assert (ids == truth.loc[probe].to_numpy()).mean() >= 0.95
