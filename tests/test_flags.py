"""gem.flags: per-document exclusions, tags and notes in the taxonomy database (real SQLite)."""
import sqlite3
import threading

import numpy as np
import pytest

from gem.flags import REASONS, DocFlags, check_tag, exclusions_digest, keep_mask


def _ids(ws, n=None):
    ids = ws.load_corpus(columns=["id"])["id"].astype(str).tolist()
    return ids if n is None else ids[:n]


def test_exclude_include_tag_note_with_audit(synthetic_workspace):
    ws = synthetic_workspace
    f = DocFlags(ws)
    assert f.excluded_ids() == [] and not ws.taxonomy_db.exists()  # reading creates nothing
    ids = _ids(ws, 5)
    r = f.exclude(ids[:3], "junk", "alice", note="menus only")
    assert r.batch and r.changed == ids[:3]
    assert f.excluded_ids() == sorted(ids[:3]) and f.n_excluded() == 3
    f.tag(ids[2:5], "needs-review", "bob")
    t = f.table().set_index("id")
    assert t.loc[ids[0], "reason"] == "junk" and t.loc[ids[0], "note"] == "menus only"
    assert t.loc[ids[4], "tags"] == ["needs-review"] and not t.loc[ids[4], "excluded"]
    assert t.loc[ids[2], "updated_by"] == "bob" and t.loc[ids[2], "excluded"]
    f.include(ids[:1], "carol")
    assert f.excluded_ids() == sorted(ids[1:3])
    audit = f.audit(ids[0])
    assert list(audit["field"]) == ["excluded", "reason", "note", "excluded", "reason"]
    assert list(audit["author"]) == ["alice"] * 3 + ["carol"] * 2
    # one batch per call, whatever the number of documents
    assert f.history()["action"].tolist() == ["include", "tag needs-review", "exclude"]
    assert f.history()["n_docs"].tolist() == [1, 3, 3]
    # the blocklist names who excluded each document and when
    block = f.blocklist()
    assert block["id"].tolist() == sorted(ids[1:3]) and set(block["author"]) == {"alice"}
    assert set(block["reason"]) == {"junk"} and block["at"].str.len().min() > 10


def test_a_call_that_changes_nothing_writes_no_batch(synthetic_workspace):
    f = DocFlags(synthetic_workspace)
    ids = _ids(synthetic_workspace, 2)
    f.exclude(ids, "duplicate", "alice")
    again = f.exclude(ids, "duplicate", "alice")
    assert again.batch is None and again.changed == [] and "nothing to change" in again.summary()
    assert len(f.history()) == 1


@pytest.mark.parametrize("call, match", [
    (lambda f, ids: f.exclude(ids + ["no-such-doc"], "junk", "alice"), "not in the workspace corpus"),
    (lambda f, ids: f.exclude(ids, "spam", "alice"), "not one of"),
    (lambda f, ids: f.exclude(ids, "junk", "  "), "author"),
    (lambda f, ids: f.tag(ids, "bad\ntag", "alice"), "control character"),
    (lambda f, ids: f.tag(ids, "x" * 65, "alice"), "limit is 64"),
    (lambda f, ids: f.tag(ids, "   ", "alice"), "empty"),
    (lambda f, ids: f.note(ids, "a\x00b", "alice"), "control character"),
    (lambda f, ids: f.note(ids, "red \x1b[31m text", "alice"), "control character"),
    (lambda f, ids: f.exclude([], "junk", "alice"), "no document ids"),
])
def test_bad_input_changes_nothing(synthetic_workspace, call, match):
    f = DocFlags(synthetic_workspace)
    ids = _ids(synthetic_workspace, 4)
    f.tag(ids[:1], "keep", "alice")
    before = (f.table().to_dict("records"), len(f.audit()), len(f.history()))
    with pytest.raises(ValueError, match=match):
        call(f, ids)
    assert (f.table().to_dict("records"), len(f.audit()), len(f.history())) == before


def test_undo_last_batch_of_anyone_or_of_one_author(synthetic_workspace):
    f = DocFlags(synthetic_workspace)
    ids = _ids(synthetic_workspace, 6)
    f.exclude(ids[:3], "junk", "alice")
    f.tag(ids[3:6], "music", "bob")
    # alice's own latest edit is the exclusion, though bob edited since (other documents)
    r = f.undo("alice", author_only=True)
    assert "exclude" in r.action and f.excluded_ids() == []
    assert f.table()["tags"].map(len).sum() == 3  # bob's tags stay
    # the latest overall not yet undone (undos themselves are never undone by undo)
    f.undo("carol")
    assert len(f.table()) == 0
    with pytest.raises(ValueError, match="nothing to undo"):
        f.undo("carol")
    assert f.history()["undone_by"].ne("").sum() == 2


def test_undo_refuses_when_a_later_edit_touched_the_same_field(synthetic_workspace):
    f = DocFlags(synthetic_workspace)
    ids = _ids(synthetic_workspace, 2)
    f.exclude(ids, "junk", "alice")
    f.exclude(ids[:1], "unsafe", "bob")  # changes the reason of ids[0]
    state = f.table().to_dict("records")
    with pytest.raises(ValueError, match="changed after batch"):
        f.undo("alice", author_only=True)
    assert f.table().to_dict("records") == state
    f.undo("bob", author_only=True)
    f.undo("alice", author_only=True)
    assert f.excluded_ids() == []


def test_flags_live_beside_the_taxonomy_and_survive_its_use(synthetic_workspace):
    from gem.taxonomy import Taxonomy

    ws = synthetic_workspace
    f = DocFlags(ws)
    f.exclude(_ids(ws, 1), "boilerplate", "alice")
    tax = Taxonomy(ws.taxonomy_db)  # reopening the taxonomy keeps the flag tables
    gid = tax.add_group("Science", "alice")
    assert gid.startswith("G") and DocFlags(ws).n_excluded() == 1
    with sqlite3.connect(ws.taxonomy_db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"doc_flags", "doc_flag_audit", "doc_flag_batches", "topics", "audit"} <= tables


def test_concurrent_bulk_edits_lose_nothing(synthetic_workspace):
    ws = synthetic_workspace
    ids = _ids(ws)
    errors = []

    def work(part, who):
        try:
            f = DocFlags(ws)
            for chunk in np.array_split(np.asarray(part, dtype=object), 5):
                f.tag(list(chunk), who, who)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::3], f"t{i}")) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    table = DocFlags(ws).table()
    assert len(table) == len(ids) and table["tags"].map(len).eq(1).all()
    assert len(DocFlags(ws).history()) == 15


def test_helpers():
    assert check_tag("  spaced tag ") == "spaced tag"
    assert exclusions_digest(["b", "a"]) == exclusions_digest(["a", "b"]) != exclusions_digest(["a"])
    assert keep_mask(["a", "b", "c"], ["b"]).tolist() == [True, False, True]
    assert keep_mask(["a"], []).tolist() == [True]
    assert "junk" in REASONS and len(REASONS) == 6
