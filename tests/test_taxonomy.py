"""Taxonomy: stable ids across re-fits, optimistic concurrency, audit, verbatim text, JSON round-trip."""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from gem.taxonomy import SCHEMA_VERSION, StaleEditError, Taxonomy


def _unit(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """7 well separated directions in 24-D; 80 noisy documents around each."""
    rng = np.random.default_rng(0)
    centers = _unit(rng.standard_normal((7, 24)))
    X = np.vstack([_unit(c + 0.35 * rng.standard_normal((80, 24)) / np.sqrt(24) * 3) for c in centers])
    truth = np.repeat(np.arange(7), 80)
    return X.astype(np.float32), truth


def _fit(X, k, seed):
    """Spherical k-means (the project's baseline), best of 4 restarts by total cosine to the means."""
    from gem.baselines import SphericalKMeans

    best = None
    for s in range(4):
        m = SphericalKMeans(n_clusters=k, random_state=100 * seed + s).fit(X)
        score = float(np.einsum("ij,ij->", X, m.mean_directions_[m.labels_]))
        if best is None or score > best[0]:
            best = (score, m.labels_, _unit(m.mean_directions_))
    return best[1], best[2]


def _cluster_to_truth(labels, truth):
    return {int(c): int(np.bincount(truth[labels == c]).argmax()) for c in np.unique(labels)}


def test_refit_with_new_seed_keeps_ids_and_labels(tmp_path, planted):
    X, truth = planted
    keep = truth < 6
    tax = Taxonomy(tmp_path / "t.sqlite")
    lab1, M1 = _fit(X[keep], 6, seed=0)
    assert sorted(_cluster_to_truth(lab1, truth[keep]).values()) == list(range(6))
    rep1 = tax.sync_run("run1", M1, keywords={c: [f"w{c}", "x", "y"] for c in range(6)}, sizes=np.bincount(lab1))
    assert len(rep1.new) == 6 and not rep1.matched and not rep1.retired
    topics1 = tax.topics("run1")
    assert (topics1["status"] == "active").all()  # the first run has nothing to be new against
    truth_to_id1 = {_cluster_to_truth(lab1, truth[keep])[c]: tid for c, tid in rep1.mapping.items()}

    # a curator names every topic, with HTML in one label
    for _, row in topics1.iterrows():
        tax.update_topic(row["id"], row["version"], "alice", name=f"<b>topic {row['id']}</b>", notes="checked")

    lab2, M2 = _fit(X[keep], 6, seed=7)
    perm = _cluster_to_truth(lab2, truth[keep])
    assert sorted(perm.values()) == list(range(6))
    rep2 = tax.sync_run("run2", M2)
    assert len(rep2.matched) == 6 and not rep2.new and not rep2.retired
    for c, tid in rep2.mapping.items():
        assert truth_to_id1[perm[c]] == tid  # same planted topic -> same stable id
    t2 = tax.topics("run2")
    assert (t2["name"] == [f"<b>topic {t}</b>" for t in t2["id"]]).all()  # HTML kept verbatim
    assert (t2["notes"] == "checked").all()
    assert tax.current_run == "run2"

    # a genuinely new topic appears: flagged new, the others keep their ids
    lab3, M3 = _fit(X, 7, seed=3)
    rep3 = tax.sync_run("run3", M3, keywords={c: ["fresh", "words", "here"] for c in range(7)})
    assert len(rep3.matched) == 6 and len(rep3.new) == 1 and not rep3.retired
    (new_cluster, new_id), = rep3.new.items()
    assert _cluster_to_truth(lab3, truth)[new_cluster] == 6
    t3 = tax.topics("run3").set_index("id")
    assert t3.loc[new_id, "status"] == "new" and t3.loc[new_id, "name"] == "fresh, words, here"
    assert new_id not in set(rep1.mapping.values())

    # one planted topic vanishes: retired, with its curator label kept; coming back revives it
    gone = 2
    keep2 = truth != gone
    lab4, M4 = _fit(X[keep2], 6, seed=5)
    rep4 = tax.sync_run("run4", M4)
    assert rep4.retired == [truth_to_id1[gone]]
    retired = tax.topic(truth_to_id1[gone])
    assert retired["status"] == "retired" and retired["name"] == f"<b>topic {truth_to_id1[gone]}</b>"
    assert truth_to_id1[gone] in set(tax.topics()["id"])  # kept in the full listing
    lab5, M5 = _fit(X, 7, seed=11)
    rep5 = tax.sync_run("run5", M5)
    assert list(rep5.revived.values()) == [truth_to_id1[gone]] and not rep5.new
    assert tax.topic(truth_to_id1[gone])["status"] == "active"
    # mappings of every run are kept
    assert tax.run_mapping("run1") == rep1.mapping and tax.run_mapping("run3") == rep3.mapping


def test_min_cosine_controls_matching(tmp_path):
    tax = Taxonomy(tmp_path / "t.sqlite")
    e = np.eye(4)
    tax.sync_run("a", e[:2])
    # cluster 1 rotated 60 degrees (cos 0.5) away from topic 2's direction
    rot = _unit(np.vstack([e[0], 0.5 * e[1] + np.sqrt(0.75) * e[2]]))
    strict = Taxonomy(tmp_path / "s.sqlite")
    strict.sync_run("a", e[:2])
    r = strict.sync_run("b", rot, min_cosine=0.6)
    assert list(r.matched) == [0] and list(r.new) == [1] and r.retired == ["T002"]
    loose = tax.sync_run("b", rot, min_cosine=0.4)
    assert len(loose.matched) == 2
    # re-syncing the same run is idempotent
    again = strict.sync_run("b", rot, min_cosine=0.6)
    assert again.mapping == r.mapping and again.new == r.new
    with pytest.raises(ValueError, match="dimensions"):
        tax.sync_run("c", np.eye(5)[:2])


def test_stale_edit_is_refused_and_audited(tmp_path):
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r", np.eye(3))
    v = int(tax.topics().set_index("id").loc["T001", "version"])
    v_alice = tax.update_topic("T001", v, "alice", name="Sports")
    assert v_alice == v + 1
    with pytest.raises(StaleEditError, match=r"T001 was changed by alice at .* reload and re-apply"):
        tax.update_topic("T001", v, "bob", name="Football")
    assert tax.topic("T001")["name"] == "Sports"
    # a no-op save keeps the version; a real one after reload works
    assert tax.update_topic("T001", v_alice, "bob", name="Sports") == v_alice
    tax.update_topic("T001", v_alice, "bob", name="Football", review="approved", excluded=True)
    audit = tax.audit("T001")
    edits = audit[audit["field"].isin(["name", "review", "excluded"])]
    assert edits[["author", "field", "new"]].values.tolist() == [
        ["alice", "name", "Sports"],
        ["bob", "name", "Football"],
        ["bob", "review", "approved"],
        ["bob", "excluded", "1"],
    ]
    assert edits["old"].tolist()[1:] == ["Sports", "unreviewed", "0"]
    assert list(edits["author"]) == ["alice", "bob", "bob", "bob"]
    assert set(edits[edits["author"] == "bob"]["field"]) == {"name", "review", "excluded"}
    assert edits[edits["field"] == "name"]["new"].tolist() == ["Sports", "Football"]
    assert all(audit["at"].str.len() > 10)
    with pytest.raises(ValueError, match="author"):
        tax.update_topic("T002", 1, "  ", name="x")
    with pytest.raises(ValueError, match="review must be one of"):
        tax.update_topic("T002", 1, "bob", review="done")
    with pytest.raises(ValueError, match="cannot edit"):
        tax.update_topic("T002", 1, "bob", status="retired")
    with pytest.raises(KeyError):
        tax.update_topic("T999", 1, "bob", name="x")


def test_concurrent_writers_exactly_one_wins(tmp_path):
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r", np.eye(2))
    v = int(tax.topic("T001")["version"])
    results = []

    def edit(who):
        try:
            Taxonomy(tmp_path / "t.sqlite").update_topic("T001", v, who, name=f"by {who}")
            results.append(("ok", who))
        except StaleEditError:
            results.append(("stale", who))

    threads = [threading.Thread(target=edit, args=(f"user{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [w for s, w in results if s == "ok"]
    assert len(wins) == 1 and len(results) == 6
    assert tax.topic("T001")["name"] == f"by {wins[0]}"


def test_concurrent_first_open_of_a_new_database(tmp_path):
    # Several curators (or app threads) opening a database that does not exist yet all race to
    # switch it to WAL; SQLite's busy handler does not cover that switch, so it must be retried.
    for trial in range(60):
        path = tmp_path / f"t{trial}.sqlite"
        errors = []

        def open_it():
            try:
                Taxonomy(path).set_setting("k", "v")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"trial {trial}: {errors[0]!r}"
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_groups_parents_and_review_progress(tmp_path):
    from gem.gis import topic_hierarchy

    tax = Taxonomy(tmp_path / "t.sqlite")
    rng = np.random.default_rng(1)
    fam = _unit(rng.standard_normal((2, 8)))
    M = np.vstack([_unit(f + 0.1 * rng.standard_normal((3, 8))) for f in fam])
    tax.sync_run("r", M, keywords=[[f"k{i}"] for i in range(6)])
    groups = tax.apply_hierarchy(topic_hierarchy(M, n_parents=2), author="system")
    assert len(groups) == 2
    t = tax.topics("r")
    assert t["parent"].nunique() == 2 and t["parent"].notna().all()
    assert t.groupby("parent").size().tolist() == [3, 3]
    # a curator's own parent is not overwritten by a later proposal
    gid = tax.add_group("My group", "carol")
    row = t.iloc[0]
    tax.update_topic(row["id"], row["version"], "carol", parent=gid)
    tax.apply_hierarchy(topic_hierarchy(M, n_parents=2), author="system")
    assert tax.topic(row["id"])["parent"] == gid
    with pytest.raises(ValueError, match="cycle"):
        tax.update_topic(gid, tax.topic(gid)["version"], "carol", parent=row["id"])
    with pytest.raises(ValueError, match="does not exist"):
        tax.update_topic(row["id"], tax.topic(row["id"])["version"], "carol", parent="G999")
    assert tax.review_progress()["text"] == "0 of 6 topics approved"
    for _, r in t.iloc[:4].iterrows():
        tax.update_topic(r["id"], tax.topic(r["id"])["version"], "dan", review="approved")
    prog = tax.review_progress()
    assert prog["text"] == "4 of 6 topics approved" and prog["unreviewed"] == 2


def test_json_round_trip_and_verbatim_text(tmp_path):
    tax = Taxonomy(tmp_path / "a.sqlite")
    tax.sync_run("r1", np.eye(4)[:3], keywords=[["a", "b"], ["c"], []], sizes=[5, 6, 7])
    html = '<script>alert("x")</script> & <b>bold</b> \u00e9\u4e2d'
    tax.update_topic("T002", 1, "eve", name=html, description="line1\nline2", excluded=True)
    gid = tax.add_group("Parent <i>group</i>", "eve")
    tax.update_topic("T001", 1, "eve", parent=gid)
    tax.sync_run("r2", np.eye(4)[1:4])
    path = tax.save_json(tmp_path / "taxonomy.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert any(t["name"] == html for t in data["topics"])

    other = Taxonomy(tmp_path / "b.sqlite")
    counts = other.load_json(path, author="importer")
    assert counts["inserted"] == len(data["topics"])
    again = other.export_json()
    for key in ("exported_at",):
        data.pop(key), again.pop(key)
    assert again == data
    assert other.topic("T002")["name"] == html and other.topic("T002")["excluded"] is True
    assert other.run_mapping("r1") == tax.run_mapping("r1")
    assert other.current_run == "r2"
    # importing the same file again changes nothing
    assert other.import_json(tax.export_json(), "importer")["unchanged"] == len(data["topics"])
    # an edited import bumps the version and is audited
    data["topics"] = [dict(t, notes="from file") if t["id"] == "T003" else t for t in data["topics"]]
    v = other.topic("T003")["version"]
    assert other.import_json(data, "importer")["updated"] == 1
    assert other.topic("T003")["version"] == v + 1
    assert other.audit("T003")["author"].iloc[-1] == "importer"


def test_import_rejects_bad_files_with_location(tmp_path):
    tax = Taxonomy(tmp_path / "t.sqlite")
    with pytest.raises(ValueError, match="not a taxonomy export"):
        tax.import_json({"topics": []}, "x")
    base = {"format": "gem-taxonomy", "format_version": 1}
    with pytest.raises(ValueError, match=r"topics\[1\].*not a topic id"):
        tax.import_json({**base, "topics": [{"id": "T001"}, {"id": "../etc"}]}, "x")
    with pytest.raises(ValueError, match=r"topics\[0\].*review"):
        tax.import_json({**base, "topics": [{"id": "T001", "review": "maybe"}]}, "x")
    with pytest.raises(ValueError, match="missing topic"):
        tax.import_json({**base, "topics": [{"id": "T001", "parent": "G404"}]}, "x")
    assert tax.topics().empty  # a refused import leaves nothing behind
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        tax.load_json(bad, "x")


def test_database_settings(tmp_path):
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r", np.eye(2))
    con = sqlite3.connect(tmp_path / "t.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3
    con.close()
    # reopening an existing database keeps everything
    assert len(Taxonomy(tmp_path / "t.sqlite").topics()) == 2


# ---------------------------------------------------------------------------- re-pointed topics
def _planted_topics(k=4, d=16, n=60, seed=0):
    """k random unit directions in d dimensions and k disjoint sets of n document ids."""
    rng = np.random.default_rng(seed)
    M = _unit(rng.standard_normal((k, d)))
    members = [[f"doc-{c}-{i}" for i in range(n)] for c in range(k)]
    return M, members


def _at_cosine(M, j, cos, seed=1):
    """M with row j turned to cosine ``cos`` from itself, away from every other row (so the new
    direction is not closer to another topic than its own was)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(M.shape[1])
    q, _ = np.linalg.qr(M.T)  # orthonormal basis of the topics' span
    u -= q @ (q.T @ u)
    u /= np.linalg.norm(u)
    out = M.copy()
    out[j] = cos * M[j] + np.sqrt(1 - cos**2) * u
    return out


def _named(tax, run, author="alice", approve=True):
    """A curator names (and approves) every topic of ``run``; returns {topic id: name}."""
    names = {}
    for _, row in tax.topics(run).iterrows():
        names[row["id"]] = f"curated {row['id']}"
        tax.update_topic(row["id"], row["version"], author, name=names[row["id"]],
                         **({"review": "approved"} if approve else {}))
    return names


def test_repointed_topic_is_refused_with_members_and_flagged_without(tmp_path):
    M, members = _planted_topics()
    kw = [[f"kw{c}", "a", "b"] for c in range(4)]
    others = [[f"other-{i}" for i in range(60)]] + members[1:]  # cluster 0 now holds other documents

    # with members: cluster 0 at cosine 0.95 (a plain match by direction alone) but no shared member
    tax = Taxonomy(tmp_path / "m.sqlite")
    tax.sync_run("r1", M, keywords=kw, members=members)
    names = _named(tax, "r1")
    rep = tax.sync_run("r2", _at_cosine(M, 0, 0.95), keywords=[["tryton", "sys", "sale"]] + kw[1:], members=others)
    assert rep.retired == ["T001"] and list(rep.new) == [0] and rep.new[0] != "T001"
    assert rep.matched == {1: "T002", 2: "T003", 3: "T004"} and not rep.changed
    assert rep.jaccard == {1: 1.0, 2: 1.0, 3: 1.0}
    old = tax.topic("T001")
    assert old["status"] == "retired" and old["name"] == names["T001"] and old["review"] == "approved"
    fresh = tax.topic(rep.new[0])
    assert fresh["name"] == "tryton, sys, sale" and fresh["name_provisional"] == 1
    assert not tax.topics()["needs_confirmation"].any()

    # without members: cosine alone; 0.65 is above the floor but below the strict threshold
    tax = Taxonomy(tmp_path / "c.sqlite")
    tax.sync_run("r1", M, keywords=kw)
    names = _named(tax, "r1")
    v_before = tax.topic("T001")["version"]
    M2 = _at_cosine(M, 0, 0.65)
    rep = tax.sync_run("r2", M2, keywords=[["tryton", "sys", "sale"]] + kw[1:])
    assert rep.changed == {0: "T001"} and rep.matched[0] == "T001" and not rep.new and not rep.retired
    assert abs(rep.cosine[0] - 0.65) < 1e-6 and not rep.jaccard
    assert "1 changed, confirm their names: T001" in rep.summary()
    t = tax.topics("r2").set_index("id")
    assert t.loc["T001", "name"] == names["T001"]  # the curated name is kept ...
    assert t.loc["T001", "needs_confirmation"] and t.loc["T001", "match_changed"]  # ... but flagged
    assert t.loc["T001", "review"] == "unreviewed"  # approval withdrawn
    assert t.loc["T001", "version"] == v_before + 1  # an editor open on the old version must reload
    assert not t.drop(index="T001")["needs_confirmation"].any()
    assert (t.drop(index="T001")["review"] == "approved").all()
    audit = tax.audit("T001")
    flag = audit[audit["field"] == "name_unconfirmed"].iloc[-1]
    assert flag["new"].startswith("1 (run r2: cosine 0.65") and "kw0, a, b" in flag["new"] and "tryton" in flag["new"]
    assert audit[audit["field"] == "review"][["old", "new"]].values.tolist()[-1] == ["approved", "unreviewed"]
    assert tax.review_progress()["text"] == "3 of 4 topics approved"
    # below the cosine floor (0.6) the pair is refused even without members
    rep = tax.sync_run("r3", _at_cosine(M2, 0, 0.55), keywords=kw)
    assert rep.retired == ["T001"] and list(rep.new) == [0]


def test_refused_pair_leaves_the_cluster_free_for_its_real_topic(tmp_path):
    """A cluster that points at topic A but holds topic B's documents goes to B (flagged), not new."""
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, members=members)
    _named(tax, "r1")
    # run 2 has three clusters: cluster 0 points almost at T001 (cos ~0.98 to it) but holds T002's
    # documents and is at cosine ~0.7 to T002; T001's documents are gone
    d0 = _unit(0.95 * M[0] + 0.8 * M[1])
    new_M = np.vstack([d0, M[2], M[3]])
    cos = new_M @ M.T
    assert cos[0, 0] > cos[0, 1] > 0.6
    rep = tax.sync_run("r2", new_M, members=[members[1], members[2], members[3]])
    assert rep.matched[0] == "T002" and rep.changed == {0: "T002"} and rep.jaccard[0] == 1.0
    assert rep.retired == ["T001"] and not rep.new


def test_members_decide_at_the_same_direction(tmp_path):
    """Same mean directions, members partly replaced: Jaccard 1/3 is kept but flagged, 1/11 refused."""
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, members=members)
    _named(tax, "r1")
    half = members[0][:30] + [f"new-{i}" for i in range(30)]  # Jaccard 30 / 90
    few = members[1][:10] + [f"more-{i}" for i in range(50)]  # Jaccard 10 / 110
    rep = tax.sync_run("r2", M, members=[half, few, members[2], members[3]])
    assert rep.jaccard[0] == pytest.approx(1 / 3) and rep.cosine[0] == pytest.approx(1.0)
    assert rep.changed == {0: "T001"} and tax.topic("T001")["needs_confirmation"]
    assert rep.retired == ["T002"] and list(rep.new) == [1]
    assert rep.matched == {0: "T001", 2: "T003", 3: "T004"}


def test_identical_resync_is_idempotent_and_same_content_keeps_names(tmp_path):
    M, members = _planted_topics(k=5, n=400)  # more than 256 members: estimated, not exact, sketches
    kw = [[f"kw{c}"] for c in range(5)]
    tax = Taxonomy(tmp_path / "t.sqlite")
    rep1 = tax.sync_run("r1", M, keywords=kw, members=members)
    names = _named(tax, "r1")
    before = tax.topics().set_index("id")
    again = tax.sync_run("r1", M, keywords=kw, members=members)
    assert again.mapping == rep1.mapping and not again.changed and not again.new and not again.retired
    assert again.jaccard == {c: 1.0 for c in range(5)}
    after = tax.topics().set_index("id")
    assert (after["version"] == before["version"]).all() and (after["name"] == before["name"]).all()
    assert not after["needs_confirmation"].any() and (after["review"] == "approved").all()
    # the same content as another run name: all plain matches
    rep2 = tax.sync_run("r2", M, keywords=kw, members=members)
    assert rep2.matched == rep1.mapping and not rep2.changed and not rep2.new

    # a small perturbation: directions moved slightly, 5 % of each cluster's members swapped
    rng = np.random.default_rng(3)
    M3 = _unit(M + 0.05 * rng.standard_normal(M.shape) / np.sqrt(M.shape[1]))
    moved = [m[20:] + members[(c + 1) % 5][:20] for c, m in enumerate(members)]
    rep3 = tax.sync_run("r3", M3, keywords=kw, members=moved)
    assert rep3.matched == rep1.mapping and not rep3.changed and not rep3.new and not rep3.retired
    assert all(0.8 < j < 1.0 for j in rep3.jaccard.values())  # true Jaccard 380 / 420 = 0.905
    t3 = tax.topics("r3").set_index("id")
    assert dict(t3["name"]) == names and (t3["review"] == "approved").all()
    assert not t3["needs_confirmation"].any() and not t3["match_changed"].any()
    assert (t3["version"] == after["version"]).all()
    assert (t3["match_jaccard"] > 0.8).all() and (t3["match_cosine"] > 0.99).all()
    # a run with one more topic, synced twice: the new topic stays new, nothing retires
    extra = _unit(np.random.default_rng(9).standard_normal((1, M.shape[1])))
    M4, members4 = np.vstack([M, extra]), members + [[f"fresh-{i}" for i in range(50)]]
    rep4 = tax.sync_run("r4", M4, keywords=kw + [["fresh"]], members=members4)
    again4 = tax.sync_run("r4", M4, keywords=kw + [["fresh"]], members=members4)
    assert list(rep4.new) == [5] and again4.new == rep4.new and again4.mapping == rep4.mapping
    assert not again4.retired and not again4.changed and tax.topic(rep4.new[5])["status"] == "new"


def test_confirmation_flag_cleared_by_rename_or_approval(tmp_path):
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, members=members)
    names = _named(tax, "r1", approve=False)
    stale = tax.topic("T001")["version"]
    # every topic keeps its members but three moved to cosine 0.8: kept, but changed
    M2 = _at_cosine(_at_cosine(_at_cosine(M, 0, 0.8), 1, 0.8, seed=2), 2, 0.8, seed=3)
    rep = tax.sync_run("r2", M2, members=members)
    assert rep.changed == {0: "T001", 1: "T002", 2: "T003"} and rep.jaccard[0] == 1.0
    with pytest.raises(StaleEditError, match="changed by system"):
        tax.update_topic("T001", stale, "bob", review="approved")
    # a re-sync of the same run reports them again (not yet confirmed) without flagging anew
    n_audit = len(tax.audit())
    again = tax.sync_run("r2", M2, members=members)
    assert again.changed == rep.changed and len(tax.audit()) == n_audit

    t = tax.topic("T001")
    tax.update_topic("T001", t["version"], "bob", name="Renamed")  # a new name confirms
    t = tax.topic("T002")
    tax.update_topic("T002", t["version"], "bob", review="approved")  # approval confirms
    t = tax.topic("T003")
    v = tax.update_topic("T003", t["version"], "bob", name=names["T003"])  # saving the same name confirms
    assert v == t["version"] + 1
    assert tax.update_topic("T003", v, "bob", name=names["T003"]) == v  # once confirmed: a no-op again
    t = tax.topic("T004")
    tax.update_topic("T004", t["version"], "bob", review="needs_work")  # not a confirmation (never flagged)
    flags = tax.topics().set_index("id")["needs_confirmation"]
    assert not flags.any()
    assert tax.topic("T001")["name"] == "Renamed" and tax.topic("T003")["name"] == names["T003"]
    cleared = tax.audit()[lambda a: (a["field"] == "name_unconfirmed") & (a["new"] == "0")]
    assert cleared[["topic_id", "author", "old"]].values.tolist() == [["T001", "bob", "1"], ["T002", "bob", "1"],
                                                                     ["T003", "bob", "1"]]
    # confirmed: a further re-sync of r2 no longer lists them
    assert not tax.sync_run("r2", M2, members=members).changed
    # a flagged topic that is only given notes stays flagged
    tax.sync_run("r3", M, members=members)  # back to the first directions: cosine 0.8 again
    t = tax.topic("T001")
    assert t["needs_confirmation"]
    tax.update_topic("T001", t["version"], "bob", notes="looked at it")
    assert tax.topic("T001")["needs_confirmation"]


def test_provisional_topics_follow_keywords_without_flag(tmp_path):
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, keywords=[[f"kw{c}"] for c in range(4)], members=members)
    rep = tax.sync_run("r2", _at_cosine(M, 0, 0.8), keywords=[["moved"]] + [[f"kw{c}"] for c in range(1, 4)],
                       members=members)
    assert rep.matched[0] == "T001" and not rep.changed
    t = tax.topic("T001")
    assert t["name"] == "moved" and not t["needs_confirmation"] and t["version"] == 2  # the rename bumps it


def test_members_validation_and_sizes(tmp_path):
    M, members = _planted_topics(k=3)
    tax = Taxonomy(tmp_path / "t.sqlite")
    with pytest.raises(ValueError, match="members has 2 entries for 3 clusters"):
        tax.sync_run("r", M, members=members[:2])
    with pytest.raises(ValueError, match="single string"):
        tax.sync_run("r", M, members=["doc-1", members[1], members[2]])
    with pytest.raises(ValueError, match="min_jaccard"):
        tax.sync_run("r", M, members=members, min_jaccard=1.5)
    assert tax.topics().empty
    tax.sync_run("r", M, members={0: members[0], 1: members[1][:7], 2: np.array(members[2])})
    assert tax.topics("r")["n_docs"].tolist() == [60, 7, 60]  # sizes default to the member counts
    assert tax.topic("T002")["members_sketch"].size == 7


def test_member_sketch_is_stable_and_estimates_jaccard():
    import subprocess
    import sys

    from gem.taxonomy import SKETCH_SIZE, member_sketch, sketch_jaccard

    a = [f"id-{i}" for i in range(5000)]
    b = [f"id-{i}" for i in range(2000, 7000)]  # Jaccard 3000 / 7000
    sa, sb = member_sketch(a), member_sketch(b)
    assert sa.size == SKETCH_SIZE and sa.dtype == np.uint64 and np.all(np.diff(sa) > 0)
    assert abs(sketch_jaccard(sa, sb) - 3 / 7) < 0.1
    assert sketch_jaccard(sa, sa) == 1.0
    assert sketch_jaccard(sa, member_sketch([f"x-{i}" for i in range(5000)])) == 0.0
    assert sketch_jaccard(sa, member_sketch([])) == 0.0
    small = member_sketch(["p", "q", "r", "s"])
    assert small.size == 4 and sketch_jaccard(small, member_sketch(["r", "s", "t", "u", "r"])) == 2 / 6  # exact
    # the same sketch in another process with another str-hash seed (blake2b, not hash())
    code = "from gem.taxonomy import member_sketch; print(member_sketch(['p', 'q', 'r', 's']).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=str(Path(__file__).resolve().parent.parent))
    assert json.loads(out.stdout) == small.tolist()


_OLD_SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE topics (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'topic' CHECK (kind IN ('topic', 'group')),
    name TEXT NOT NULL DEFAULT '',
    name_provisional INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    parent TEXT REFERENCES topics(id) ON DELETE SET NULL,
    excluded INTEGER NOT NULL DEFAULT 0 CHECK (excluded IN (0, 1)),
    notes TEXT NOT NULL DEFAULT '',
    review TEXT NOT NULL DEFAULT 'unreviewed' CHECK (review IN ('unreviewed', 'approved', 'needs_work')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'new', 'retired')),
    cluster INTEGER, run TEXT, direction BLOB, keywords TEXT NOT NULL DEFAULT '[]', n_docs INTEGER,
    version INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE runs (name TEXT PRIMARY KEY, synced_at TEXT NOT NULL, n_clusters INTEGER NOT NULL,
                   min_cosine REAL NOT NULL);
CREATE TABLE run_topics (
    run TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    cluster INTEGER NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(id),
    cosine REAL,
    outcome TEXT NOT NULL CHECK (outcome IN ('matched', 'new', 'revived')),
    PRIMARY KEY (run, cluster)
);
CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, author TEXT NOT NULL,
                    topic_id TEXT NOT NULL, field TEXT NOT NULL, old TEXT, new TEXT);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX audit_topic ON audit (topic_id, seq);
INSERT INTO schema_version (version) VALUES (1);
"""


def test_schema_migration_of_a_version_1_database(tmp_path):
    """A database written by the previous version (schema 1, as its code created it) opens, gains the
    new columns, keeps everything, and then matches with members."""
    M, members = _planted_topics(k=2)
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(_OLD_SCHEMA_V1)
    at = "2024-01-01T00:00:00.000+00:00"
    for i in range(2):
        con.execute(
            "INSERT INTO topics (id, name, name_provisional, review, status, cluster, run, direction, keywords,"
            " n_docs, version, created_at, updated_at, updated_by) VALUES (?, ?, 0, 'approved', 'active', ?, 'old',"
            " ?, '[\"w\"]', 60, 2, ?, ?, 'alice')",
            (f"T00{i + 1}", f"Curated {i}", i, M[i].astype("<f4").tobytes(), at, at),
        )
    con.execute("INSERT INTO runs VALUES ('old', ?, 2, 0.5)", (at,))
    con.executemany("INSERT INTO run_topics VALUES ('old', ?, ?, NULL, 'new')", [(0, "T001"), (1, "T002")])
    con.execute("INSERT INTO audit (at, author, topic_id, field, old, new)"
                " VALUES (?, 'alice', 'T001', 'name', '', 'Curated 0')", (at,))
    con.commit()
    con.close()

    tax = Taxonomy(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    cols = {r[1] for r in con.execute("PRAGMA table_info(topics)")}
    assert {"name_unconfirmed", "members_sketch"} <= cols
    assert {"jaccard", "changed"} <= {r[1] for r in con.execute("PRAGMA table_info(run_topics)")}
    con.close()
    t = tax.topics("old").set_index("id")
    assert t["name"].tolist() == ["Curated 0", "Curated 1"] and (t["version"] == 2).all()
    assert not t["needs_confirmation"].any() and not t["match_changed"].any() and t["match_jaccard"].isna().all()
    assert len(tax.audit("T001")) == 1
    assert len(Taxonomy(path).topics()) == 2  # opening again: nothing to migrate
    # old topics have no member sketch: cosine alone decides, so a cosine-0.7 pair is flagged
    rep = tax.sync_run("new", _at_cosine(M, 1, 0.7), members=members)
    assert rep.matched == {0: "T001", 1: "T002"} and rep.changed == {1: "T002"} and not rep.jaccard
    # from now on they have sketches
    rep = tax.sync_run("newer", M, members=[members[0], [f"other-{i}" for i in range(60)]])
    assert rep.jaccard == {0: 1.0} and rep.retired == ["T002"]
    # a database from a newer program is refused, not modified
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="newer than this program"):
        Taxonomy(path)


def test_json_round_trip_keeps_sketches_and_flags(tmp_path):
    M, members = _planted_topics(k=3)
    tax = Taxonomy(tmp_path / "a.sqlite")
    tax.sync_run("r1", M, members=members)
    _named(tax, "r1")
    tax.sync_run("r2", _at_cosine(M, 0, 0.8), members=members)
    data = tax.export_json()
    json.dumps(data)  # JSON-ready (sketches as hex)
    other = Taxonomy(tmp_path / "b.sqlite")
    other.import_json(data, "importer")
    again = other.export_json()
    data.pop("exported_at"), again.pop("exported_at")
    assert again == data
    assert other.topic("T001")["needs_confirmation"] and not other.topic("T002")["needs_confirmation"]
    assert np.array_equal(other.topic("T002")["members_sketch"], tax.topic("T002")["members_sketch"])
    assert [c["changed"] for c in again["runs"][1]["clusters"]] == [True, False, False]
    # the sketches work after the import: disjoint members refuse the match
    rep = other.sync_run("r3", M, members=[[f"x{i}" for i in range(60)], members[1], members[2]])
    assert rep.retired == ["T001"]
    # an export of the previous version (no sketch / flag fields) still imports
    old = {k: v for k, v in data.items()}
    old["topics"] = [{k: v for k, v in t.items() if k not in ("members_sketch", "name_unconfirmed")}
                     for t in data["topics"]]
    third = Taxonomy(tmp_path / "c.sqlite")
    assert third.import_json(old, "importer")["inserted"] == 3
    assert not third.topics()["needs_confirmation"].any() and third.topic("T001")["members_sketch"] is None
    with pytest.raises(ValueError, match="members_sketch"):
        third.import_json({**old, "topics": [{"id": "T009", "members_sketch": "abc"}]}, "x")


def _save_two_runs(ws) -> None:
    """Runs "a" and "b": spherical k-means, K = 4, seeds 0 and 1, on the workspace's embeddings."""
    from gem.baselines import make_estimator
    from gem.runs import save_run

    X = ws.load_embeddings()
    ids = ws.load_corpus()["id"]
    for name, seed in (("a", 0), ("b", 1)):
        est = make_estimator("spherical-kmeans", 4, random_state=seed).fit(X)
        save_run(ws, name, est, "spherical-kmeans", {"representation": "final"}, ids, X=X)


def test_sync_saved_run_passes_members(synthetic_workspace):
    from gem.runs import load_run
    from gem.taxonomy import member_sketch, sync_saved_run

    ws = synthetic_workspace
    _save_two_runs(ws)
    tax, rep_a, _ = sync_saved_run(ws, "a")
    assign = load_run(ws, "a").assignments
    for c, tid in rep_a.mapping.items():
        expected = member_sketch(assign.loc[assign["cluster"] == c, "id"].astype(str).tolist())
        assert np.array_equal(tax.topic(tid)["members_sketch"], expected)
    _, rep_b, _ = sync_saved_run(ws, "b")
    assert set(rep_b.jaccard) == set(rep_b.matched) and rep_b.matched
    assign_b = load_run(ws, "b").assignments
    for c, tid in rep_b.matched.items():
        c_a = next(k for k, t in rep_a.mapping.items() if t == tid)
        A = set(assign.loc[assign["cluster"] == c_a, "id"])
        B = set(assign_b.loc[assign_b["cluster"] == c, "id"])
        assert rep_b.jaccard[c] == pytest.approx(len(A & B) / len(A | B), abs=0.1)


def test_member_sketches_leave_out_documents_excluded_after_the_fit(synthetic_workspace):
    """A run fitted with documents curators later excluded: its topics' sketches drop them, as
    GIS and the exports do (every topic here has <= 256 documents, so a sketch holds one hash per
    member)."""
    from gem.flags import DocFlags
    from gem.runs import load_run
    from gem.taxonomy import member_sketch, sync_saved_run

    ws = synthetic_workspace
    _save_two_runs(ws)
    tax, rep, _ = sync_saved_run(ws, "a")
    assign = load_run(ws, "a").assignments
    c, tid = max(rep.mapping.items(), key=lambda kv: (assign["cluster"] == kv[0]).sum())
    members = assign.loc[assign["cluster"] == c, "id"].astype(str).tolist()
    before = tax.topic(tid)["members_sketch"]
    assert before.size == len(members) <= 256
    gone = members[:7]
    DocFlags(ws).exclude(gone, "junk", "alice")
    tax, rep, _ = sync_saved_run(ws, "a")
    assert rep.mapping[c] == tid
    after = tax.topic(tid)["members_sketch"]
    assert after.size == before.size - len(gone)
    assert np.array_equal(after, member_sketch(members[7:]))


# ---------------------------------------------------------------------------- CLI
def test_cli_taxonomy_ranks_and_keeps_ids_across_refits(synthetic_workspace, capsys):
    from gem.cli import main

    ws = synthetic_workspace
    _save_two_runs(ws)
    assert main(["taxonomy", "-w", str(ws.root), "--run", "a", "--top", "3", "--json"]) == 0
    out_a = json.loads(capsys.readouterr().out)
    gis = [t["mean_gis"] for t in out_a["topics"]]
    assert gis == sorted(gis, reverse=True) and len(gis) == 4
    for t in out_a["topics"]:
        assert len(t["representatives"]) == 3 and t["keywords"]
        rg = [r["gis"] for r in t["representatives"]]
        assert rg == sorted(rg, reverse=True)
    tax = Taxonomy(ws.taxonomy_db)
    first = tax.topics("a").iloc[0]
    tax.update_topic(first["id"], first["version"], "alice", name="<i>Renamed</i>")
    assert main(["taxonomy", "-w", str(ws.root), "--run", "b", "--save-json", str(ws.root / "tax.json")]) == 0
    text = capsys.readouterr().out
    assert "run b: 4 matched, 0 new" in text and "<i>Renamed</i>" in text
    assert json.loads((ws.root / "tax.json").read_text())["current_run"] == "b"
    assert main(["taxonomy", "-w", str(ws.root), "--run", "missing"]) == 2
    assert "no such run" in capsys.readouterr().err


# ---------------------------------------------------------------------------- optional LLM namer
def test_namer_prompt_and_parsing_against_a_local_server():
    import http.server

    from gem.naming import LLMNamer, NamerSettings, NamingError, build_messages, parse_response, settings_from_env

    msgs = build_messages(["guitar", "chord"], ["  first   doc\nwith lines ", "x" * 5000, ""], max_docs=5,
                          max_chars_per_doc=100)
    user = msgs[1]["content"]
    assert msgs[0]["role"] == "system" and "guitar, chord" in user
    assert "<doc 1>first doc with lines</doc 1>" in user and "<doc 3>" not in user
    assert len(user) < 600  # the long document was truncated
    assert parse_response({"choices": [{"message": {"content": '\n**"Music Theory".**\nexplanation'}}]}) == "Music Theory"
    assert parse_response({"choices": [{"message": {"content": "Topic name: Sports"}}]}) == "Sports"
    with pytest.raises(NamingError, match="unexpected response shape"):
        parse_response({"error": "x"})
    assert settings_from_env({}) is None

    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen["path"], seen["auth"], seen["body"] = self.path, self.headers.get("Authorization"), json.loads(body)
            status = 200 if seen["body"]["model"] == "tiny" else 500
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Guitar Music"}}]})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        namer = LLMNamer(NamerSettings(url=url, model="tiny", api_key="k", timeout=5))
        assert namer.name(["guitar"], ["a doc about guitars"]) == "Guitar Music"
        assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer k"
        assert seen["body"]["messages"][1]["content"].count("<doc 1>") == 1
        with pytest.raises(NamingError, match="HTTP 500"):
            LLMNamer(NamerSettings(url=url, model="other", timeout=5)).name([], ["d"])
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(NamingError, match="cannot reach"):
        LLMNamer(NamerSettings(url=url, model="tiny", timeout=2)).name([], ["d"])


# ---------------------------------------------------------------------------- plot builders
def test_taxonomy_plots_escape_names_and_sum_sizes():
    from gem.plots import gis_by_topic_chart, taxonomy_tree

    ids, names = ["T001", "T002", "T003"], ["<script>x</script>", "B", "C"]
    for kind in ("sunburst", "treemap"):
        fig = taxonomy_tree(ids, names, ["G001", "G001", None], [5, 3, 2], {"G001": "<b>grp</b>"}, kind=kind,
                            highlight="T002")
        tr = fig.data[0]
        assert not any("<script>" in lb or "<b>" in lb for lb in tr.labels)
        vals = dict(zip(tr.ids, tr.values))
        assert vals["all topics"] == 10 and vals["G001"] == 8
        assert dict(zip(tr.ids, tr.parents))["T003"] == "all topics"
    bars = gis_by_topic_chart(ids, names, [1.0, 3.0, 2.0], [5, 3, 2]).data[0]
    assert list(bars.y) == ["T002", "T003", "T001"]
    assert all("<script>" not in str(c[0]) for c in bars.customdata)
    with pytest.raises(ValueError, match="same length"):
        taxonomy_tree(ids, names[:2], [None] * 3, [1, 2, 3])


# ---------------------------------------------------------------------------- damaged / read-only database
def test_corrupt_database_raises_one_clear_error(tmp_path):
    from gem.taxonomy import TaxonomyError

    path = tmp_path / "taxonomy.sqlite"
    path.write_bytes(np.random.default_rng(0).bytes(8192))  # random bytes: not a database
    with pytest.raises(TaxonomyError, match="taxonomy.sqlite: the taxonomy database is damaged") as info:
        Taxonomy(path)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert str(path) in str(info.value) and "backup" in str(info.value)

    good = Taxonomy(tmp_path / "good.sqlite")
    good.add_group("g", "alice")
    with sqlite3.connect(tmp_path / "good.sqlite") as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = (tmp_path / "good.sqlite").read_bytes()
    (tmp_path / "cut.sqlite").write_bytes(data[: len(data) // 3])  # truncated: pages missing
    with pytest.raises(TaxonomyError, match="cut.sqlite: the taxonomy database is damaged"):
        Taxonomy(tmp_path / "cut.sqlite").topics(include_groups=True)


def test_read_only_database_raises_one_clear_error(tmp_path, monkeypatch):
    """A database that cannot be written: for real (0444 file in a 0555 folder) when not running as
    root, and always emulated with SQLite's read-only mode (root ignores file permissions)."""
    import os

    import gem.taxonomy.db as taxonomy_mod
    from gem.taxonomy import TaxonomyError

    folder = tmp_path / "ws"
    folder.mkdir()
    path = folder / "taxonomy.sqlite"
    Taxonomy(path).add_group("g", "alice")
    real_connect = sqlite3.connect

    def read_only(db, *args, **kwargs):
        return real_connect(f"file:{db}?mode=ro", *args, uri=True, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(taxonomy_mod.sqlite3, "connect", read_only)
        tax = Taxonomy(path)
        assert len(tax.groups()) == 1  # reading still works
        with pytest.raises(TaxonomyError, match="taxonomy.sqlite: cannot open the taxonomy database for writing"):
            tax.add_group("h", "alice")
        with pytest.raises(TaxonomyError, match="new.sqlite: cannot open .* make the file and its folder writable"):
            Taxonomy(folder / "new.sqlite")
    if os.geteuid() != 0:
        path.chmod(0o444)
        folder.chmod(0o555)
        try:
            with pytest.raises(TaxonomyError, match="taxonomy.sqlite: cannot open"):
                Taxonomy(path).add_group("h", "alice")
        finally:
            folder.chmod(0o755)
            path.chmod(0o644)


def test_cli_taxonomy_on_a_damaged_database_prints_one_line(synthetic_workspace, capsys, monkeypatch):
    from gem.baselines import make_estimator
    from gem.cli import main
    from gem.runs import save_run
    from gem.taxonomy import TaxonomyError

    ws = synthetic_workspace
    X = ws.load_embeddings()
    est = make_estimator("spherical-kmeans", 4, random_state=0).fit(X)
    save_run(ws, "a", est, "spherical-kmeans", {"representation": "final"}, ws.load_corpus()["id"], X=X)
    ws.taxonomy_db.write_bytes(b"this is not an SQLite file " * 100)
    monkeypatch.delenv("GEM_DEBUG", raising=False)
    assert main(["taxonomy", "-w", str(ws.root), "--run", "a"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gem taxonomy: error: ") and str(ws.taxonomy_db) in err[0]
    assert "damaged" in err[0] and "Traceback" not in err[0]
    assert main(["export", "-w", str(ws.root), "--run", "a", "--out", str(ws.root / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gem export: error: ") and str(ws.taxonomy_db) in err[0]
    monkeypatch.setenv("GEM_DEBUG", "1")
    with pytest.raises(TaxonomyError):  # GEM_DEBUG=1 shows the traceback
        main(["taxonomy", "-w", str(ws.root), "--run", "a"])


def test_resync_renaming_a_provisional_topic_is_audited_and_bumps_its_version(tmp_path):
    """A provisional name follows the keywords on a re-sync: that rename gets an audit row (field
    'name', old, new, author 'system') and a new version, so an editor open on the old one reloads
    (before: the name changed silently, version and audit untouched)."""
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, keywords=[[f"kw{c}", "old"] for c in range(4)], members=members)
    v1 = tax.topic("T002")["version"]
    tax.sync_run("r2", M, keywords=[[f"kw{c}", "old"] for c in range(4)], members=members)  # same keywords
    assert tax.topic("T002")["version"] == v1 and "name" not in set(tax.audit("T002")["field"])
    tax.sync_run("r3", M, keywords=[["kw0", "old"], ["fresh", "words"], ["kw2", "old"], ["kw3", "old"]],
                 members=members)
    t = tax.topic("T002")
    assert t["name"] == "fresh, words" and t["version"] == v1 + 1
    rows = tax.audit("T002")
    row = rows[rows["field"] == "name"].iloc[-1]
    assert (row["old"], row["new"], row["author"]) == ("kw1, old", "fresh, words", "system")
    with pytest.raises(StaleEditError):  # an editor still on the old version must reload
        tax.update_topic("T002", v1, "alice", name="Mine")
    assert tax.topic("T001")["version"] == v1  # unchanged names: no bump


def test_schema_migration_of_a_version_2_database(tmp_path):
    """A schema-2 database (before merge and split) opens, gains merged_into / split_from /
    split_direction and run_topics.via, keeps its topics and mappings, and can merge at once."""
    M, members = _planted_topics(k=3)
    path = tmp_path / "v2.sqlite"
    con = sqlite3.connect(path)
    con.executescript(_OLD_SCHEMA_V1)
    for table, column, definition in (("topics", "name_unconfirmed", "INTEGER NOT NULL DEFAULT 0"),
                                      ("topics", "members_sketch", "BLOB"), ("run_topics", "jaccard", "REAL"),
                                      ("run_topics", "changed", "INTEGER NOT NULL DEFAULT 0")):
        con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    con.execute("UPDATE schema_version SET version = 2")
    at = "2025-01-01T00:00:00.000+00:00"
    for i in range(3):
        con.execute("INSERT INTO topics (id, name, name_provisional, status, cluster, run, direction, keywords,"
                    " n_docs, version, created_at, updated_at, updated_by) VALUES (?, ?, 0, 'active', ?, 'old', ?,"
                    " '[]', 60, 1, ?, ?, 'alice')", (f"T00{i + 1}", f"Named {i}", i, M[i].astype("<f4").tobytes(), at, at))
    con.execute("INSERT INTO runs VALUES ('old', ?, 3, 0.6)", (at,))
    con.executemany("INSERT INTO run_topics (run, cluster, topic_id, cosine, outcome) VALUES ('old', ?, ?, NULL, 'new')",
                    [(i, f"T00{i + 1}") for i in range(3)])
    con.execute("INSERT INTO settings VALUES ('current_run', 'old')")
    con.commit()
    con.close()

    tax = Taxonomy(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 3
    assert {"merged_into", "split_from", "split_direction"} <= {r[1] for r in con.execute("PRAGMA table_info(topics)")}
    assert "via" in {r[1] for r in con.execute("PRAGMA table_info(run_topics)")}
    con.close()
    assert tax.run_mapping("old") == {0: "T001", 1: "T002", 2: "T003"}
    assert tax.topics()["name"].tolist() == ["Named 0", "Named 1", "Named 2"]
    assert tax.merge_topics(["T003", "T001"], "alice") == "T003"
    assert tax.run_mapping("old") == {0: "T003", 1: "T002", 2: "T003"}
    rep = tax.sync_run("new", M, members=members)  # the merged topic's cluster maps to the survivor
    assert rep.mapping == {0: "T003", 1: "T002", 2: "T003"} and not rep.new and not rep.revived


def test_provisional_names_never_coincide_on_sync(tmp_path):
    """Clusters whose top keywords agree get distinct provisional names: the later topic adds its
    first keyword not in the other's name; a re-sync keeps the names; a curator's name is never
    shared silently either (a provisional topic steps aside)."""
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    kw = [["king", "son", "israel", "prophet"], ["king", "son", "israel", "judah"], ["bread", "flour"], []]
    tax.sync_run("r1", M, keywords=kw, members=members)
    names = dict(zip(tax.topics("r1")["id"], tax.topics("r1")["name"]))
    assert names["T001"] == "king, son, israel" and names["T002"] == "king, son, israel, judah"
    assert len(set(names.values())) == 4
    tax.sync_run("r1", M, keywords=kw, members=members)  # idempotent
    assert dict(zip(tax.topics("r1")["id"], tax.topics("r1")["name"])) == names
    # a curator names T003 "Bread": a provisional topic whose keywords now read "bread" is told apart
    # from it (no keyword left to add: a number)
    v = tax.topic("T003")["version"]
    tax.update_topic("T003", v, "alice", name="Bread")
    kw2 = [["king", "son", "israel", "prophet"], ["bread", "rye"], ["bread", "flour"], ["bread"]]
    tax.sync_run("r2", M, keywords=kw2, members=members)
    names2 = dict(zip(tax.topics("r2")["id"], tax.topics("r2")["name"]))
    assert names2 == {"T001": "king, son, israel", "T002": "bread, rye", "T003": "Bread", "T004": "bread (2)"}


def test_rename_to_a_live_topics_name_is_refused_with_a_distinct_suggestion(tmp_path):
    M, members = _planted_topics()
    tax = Taxonomy(tmp_path / "t.sqlite")
    tax.sync_run("r1", M, keywords=[["king", "son", "israel"], ["king", "son", "judah"], ["a"], ["b"]], members=members)
    v = tax.topic("T002")["version"]
    with pytest.raises(ValueError) as err:
        tax.update_topic("T002", v, "alice", name="King, Son, Israel")  # case folded: the same name
    assert "T001 is already named 'King, Son, Israel'" in str(err.value)
    assert "try 'King, Son, Israel, judah'" in str(err.value)
    assert tax.topic("T002")["name"] == "king, son, judah" and tax.topic("T002")["version"] == v  # nothing saved
    assert tax.update_topic("T002", v, "alice", name="King, Son, Israel, judah") == v + 1  # the suggestion is free
    # a retired topic's name is free again; saving a topic's own name (confirming) is no clash
    tax.sync_run("r2", M[:3], keywords=[["king", "son", "israel"], ["x"], ["a"]], members=members[:3])
    retired = tax.topic("T004")
    assert retired["status"] == "retired"
    v1 = tax.topic("T001")["version"]
    tax.update_topic("T001", v1, "alice", name=retired["name"])
    assert tax.topic("T001")["name"] == "b"
    tax.update_topic("T001", v1 + 1, "alice", name="b", review="approved")
