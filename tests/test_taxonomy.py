"""Taxonomy: stable ids across re-fits, optimistic concurrency, audit, verbatim text, JSON round-trip."""
from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

from gem.taxonomy import StaleEditError, Taxonomy


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
    assert con.execute("SELECT version FROM schema_version").fetchone()[0] == 1
    con.close()
    # reopening an existing database keeps everything
    assert len(Taxonomy(tmp_path / "t.sqlite").topics()) == 2


# ---------------------------------------------------------------------------- CLI
def test_cli_taxonomy_ranks_and_keeps_ids_across_refits(synthetic_workspace, capsys):
    from gem.baselines import make_estimator
    from gem.cli import main
    from gem.runs import save_run

    ws = synthetic_workspace
    X = ws.load_embeddings()
    ids = ws.load_corpus()["id"]
    for name, seed in (("a", 0), ("b", 1)):
        est = make_estimator("spherical-kmeans", 4, random_state=seed).fit(X)
        save_run(ws, name, est, "spherical-kmeans", {"representation": "final"}, ids, X=X)
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
