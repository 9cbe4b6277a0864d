"""`gem topics list|merge|split|unmerge|unsplit`: round trips, and bad input exits 2 with one line
and changes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_topics import build_planted_workspace, save_fit

from gem.cli import main
from gem.taxonomy import Taxonomy
from gem.workspace_ops import document_topic_ids


@pytest.fixture
def ws_truth(tmp_path):
    ws, truth = build_planted_workspace(tmp_path / "ws")
    save_fit(ws, "a", 4, seed=0)
    assert main(["taxonomy", "-w", str(ws.root), "--run", "a", "--json"]) == 0
    return ws, truth


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _topic_of(ws, truth, group, run="a"):
    ids = document_topic_ids(ws, run)
    return str(np.unique(ids[truth == group])[0])


def test_cli_list_merge_split_round_trip(ws_truth, capsys):
    ws, truth = ws_truth
    w = ["topics", "-w", str(ws.root)]
    listed = _json(capsys, w + ["list", "--json"])
    assert listed["current_run"] == "a" and len(listed["topics"]) == 4
    a, b, v = (_topic_of(ws, truth, g) for g in (0, 1, 3))
    capsys.readouterr()
    assert main(w + ["merge", a, b, "--into", b, "--author", "carol"]) == 0
    assert f"merged {a} into {b}" in capsys.readouterr().out
    rows = {r["id"]: r for r in _json(capsys, w + ["list", "--json"])["topics"]}
    assert rows[a]["merged_into"] == b and rows[a]["status"] == "retired" and rows[b]["status"] == "active"

    prev = _json(capsys, w + ["split", v, "--k", "2", "--preview", "--json"])
    assert prev["children"] is None and len(prev["sizes"]) == 2 and sum(prev["sizes"]) == int((truth >= 3).sum())
    assert all(isinstance(e["text"], str) for ex in prev["examples"] for e in ex)
    assert not Taxonomy(ws.taxonomy_db).split_children()  # the preview stored nothing
    capsys.readouterr()
    assert main(w + ["split", v, "--k", "2", "--author", "carol"]) == 0
    out = capsys.readouterr().out
    children = sorted(Taxonomy(ws.taxonomy_db).split_children()[v][0])
    assert len(children) == 2 and all(c in out for c in children)
    rows = {r["id"]: r for r in _json(capsys, w + ["list", "--json"])["topics"]}
    assert rows[v]["split_into"] == children and rows[children[0]]["split_from"] == v
    capsys.readouterr()
    assert main(w + ["list"]) == 0
    text = capsys.readouterr().out
    assert f"merged into {b}" in text and f"split into {', '.join(children)}" in text

    # a re-fit through the CLI keeps both decisions
    save_fit(ws, "b", 4, seed=1)
    assert main(["taxonomy", "-w", str(ws.root), "--run", "b", "--json"]) == 0
    ids_b = document_topic_ids(ws, "b")
    assert set(ids_b[truth <= 1]) == {b} and set(ids_b[truth >= 3]) == set(children)

    capsys.readouterr()
    assert main(w + ["unmerge", a, "--author", "dave"]) == 0 and main(w + ["unsplit", v, "--author", "dave"]) == 0
    ids_b = document_topic_ids(ws, "b")
    assert set(ids_b[truth == 0]) == {a} and set(ids_b[truth >= 3]) == {v}


@pytest.mark.parametrize("argv, message", [
    (["merge", "T001", "--author", "x"], "at least two"),
    (["merge", "T001", "T001", "--author", "x"], "listed twice"),
    (["merge", "T001", "T777", "--author", "x"], "no topic T777"),
    (["merge", "T001", "G001", "--author", "x"], "G001 is a group"),
    (["merge", "T001", "T002", "--into", "T003", "--author", "x"], "must be one of"),
    (["split", "T001", "--k", "9", "--author", "x"], "from 2 to 8"),
    (["split", "T001", "--k", "1", "--preview"], "from 2 to 8"),
    (["split", "T777", "--k", "2", "--author", "x"], "no topic T777"),
    (["split", "T001", "--k", "2"], "--author is required"),
    (["split", "T001", "--k", "2", "--run", "nope", "--author", "x"], "nope"),
    (["unmerge", "T001", "--author", "x"], "not merged"),
    (["unsplit", "T001", "--author", "x"], "not split"),
])
def test_cli_bad_input_exits_2_with_one_line_and_changes_nothing(ws_truth, capsys, monkeypatch, argv, message):
    ws, _ = ws_truth
    monkeypatch.delenv("GEM_DEBUG", raising=False)
    tax = Taxonomy(ws.taxonomy_db)
    tax.add_group("g", "alice")
    before = tax.export_json()
    capsys.readouterr()
    assert main(["topics", "-w", str(ws.root)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gem topics: error: ") and message in err[0]
    after = tax.export_json()
    assert after["topics"] == before["topics"] and after["runs"] == before["runs"]


def test_cli_topics_without_a_taxonomy(tmp_path, capsys):
    ws, _ = build_planted_workspace(tmp_path / "ws")
    assert main(["topics", "-w", str(ws.root), "list"]) == 2
    assert "no taxonomy yet" in capsys.readouterr().err
    assert not ws.taxonomy_db.exists()


def test_cli_taxonomy_marks_clusters_matched_through_a_merged_topic(ws_truth, capsys):
    ws, truth = ws_truth
    a, b = _topic_of(ws, truth, 0), _topic_of(ws, truth, 1)
    assert main(["topics", "-w", str(ws.root), "merge", a, b, "--author", "carol"]) == 0
    save_fit(ws, "b", 4, seed=1)
    capsys.readouterr()
    assert main(["taxonomy", "-w", str(ws.root), "--run", "b", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert f"[via merged {b}]" in out and out.count(f" {a} ") == 2
