"""`gem search` and `gem flag`: pipelines and review scripts."""
import io
import json

import pandas as pd

from gem.cli import main
from gem.flags import DocFlags


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_search_json_and_ids_only(synthetic_workspace, capsys):
    ws = synthetic_workspace
    assert main(["search", "-w", str(ws.root), "about LAW", "--k", "7", "--json"]) == 0
    out = _json(capsys)
    assert out["kind"] == "full-text" and len(out["results"]) == 7 and out["n_matches"] >= 7
    texts = ws.load_corpus().set_index("id")["text"]
    assert all("about law" in texts[r["id"]].lower() for r in out["results"])
    assert {"rank", "id", "score", "snippet", "excluded", "reason", "tags"} <= set(out["results"][0])
    assert main(["search", "-w", str(ws.root), "about law", "--k", "7", "--ids-only"]) == 0
    assert capsys.readouterr().out.split() == [r["id"] for r in out["results"]]


def test_search_piped_into_flag_then_list_and_undo(synthetic_workspace, capsys, monkeypatch, tmp_path):
    ws = synthetic_workspace
    monkeypatch.setenv("GEM_AUTHOR", "pipeline")
    assert main(["search", "-w", str(ws.root), "about music", "--k", "5", "--ids-only"]) == 0
    ids = capsys.readouterr().out.split()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(ids) + "\n\n"))
    assert main(["flag", "-w", str(ws.root), "--exclude", "--reason", "off-topic", "--note", "not music",
                 "--ids-file", "-", "--json"]) == 0
    out = _json(capsys)
    assert out["author"] == "pipeline" and sorted(out["changed"]) == sorted(ids)
    # tags from a file, one id per line, comments skipped
    f = tmp_path / "ids.txt"
    f.write_text("# reviewed\n" + ids[0] + "\n")
    assert main(["flag", "-w", str(ws.root), "--tag", "reviewed", "--ids-file", str(f), "--author", "bob"]) == 0
    assert "1 of 1" in capsys.readouterr().out
    assert main(["flag", "-w", str(ws.root), "--list", "--json"]) == 0
    listed = pd.DataFrame(_json(capsys)).set_index("id")
    assert set(listed.index) == set(ids) and listed["excluded"].all()
    assert set(listed["reason"]) == {"off-topic"} and listed.loc[ids[0], "tags"] == ["reviewed"]
    # the search shows the flags
    assert main(["search", "-w", str(ws.root), "about music", "--k", "5"]) == 0
    assert capsys.readouterr().out.count("[excluded: off-topic]") == 5
    # undo: the latest of anyone (bob's tag), then pipeline's own exclusion
    assert main(["flag", "-w", str(ws.root), "--undo"]) == 0
    assert "undo tag reviewed" in capsys.readouterr().out
    assert main(["flag", "-w", str(ws.root), "--undo", "--mine"]) == 0
    assert DocFlags(ws).excluded_ids() == []
    assert main(["flag", "-w", str(ws.root), "--history"]) == 0
    assert "undone by" in capsys.readouterr().out


def test_bad_ids_and_missing_options_exit_2_and_change_nothing(synthetic_workspace, capsys, tmp_path):
    ws = synthetic_workspace
    good = ws.load_corpus()["id"].iloc[:2].tolist()
    argv = ["flag", "-w", str(ws.root), "--author", "alice"]
    assert main(argv + ["--exclude", "--reason", "junk", *good, "ghost-1", "ghost-2"]) == 2
    err = capsys.readouterr().err
    assert "2 of 4 document id(s) are not in the workspace corpus" in err and "'ghost-1'" in err
    assert err.count("\n") == 1 and DocFlags(ws).table().empty
    assert main(argv + ["--exclude", *good]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main(argv + ["--tag", "x"]) == 2
    assert "give document ids" in capsys.readouterr().err
    assert main(argv + [*good]) == 2
    assert "say what to do" in capsys.readouterr().err
    bad = tmp_path / "ids.bin"
    bad.write_bytes(b"\xff\xfe\x00")
    assert main(argv + ["--tag", "x", "--ids-file", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["flag", "-w", str(ws.root), "--undo", "--author", "alice"]) == 2
    assert "nothing to undo" in capsys.readouterr().err
    assert main(["search", "-w", str(ws.root), "  "]) == 2
    assert "empty" in capsys.readouterr().err
    assert DocFlags(ws).table().empty


def test_search_shows_the_topic_of_a_run(synthetic_workspace, capsys):
    ws = synthetic_workspace
    assert main(["fit", "-w", str(ws.root), "--k", "4", "--run", "r4"]) == 0  # synced: taxonomy ids
    capsys.readouterr()
    assert main(["search", "-w", str(ws.root), "about", "--k", "4", "--run", "r4", "--gis", "--json"]) == 0
    out = _json(capsys)
    assert out["run"] == "r4" and all(r["topic"].startswith("T") for r in out["results"])
    assert all(isinstance(r["gis"], float) for r in out["results"])
    assert main(["search", "-w", str(ws.root), "about", "--run", "nope"]) == 2
