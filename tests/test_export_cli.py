"""`gem export` end to end on a small synthetic workspace, and the run -> domains glue."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gem import mixture as mx
from gem.cli import main
from gem.store import Workspace, write_parquet_atomic

K = 4


def _clustered(n_per=30, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(K), n_per)
    X = centers[labels] * 8 + rng.normal(size=(labels.size, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), labels, centers


def _corpus(labels, seed=0):
    rng = np.random.default_rng(seed)
    n = labels.size
    words = ["alpha", "beta", "gamma", "delta"]
    return pd.DataFrame({
        "id": [f"doc{i:04d}" for i in range(n)],
        "text": [f"{words[k]} document {i} " * (1 + i % 3) for i, k in enumerate(labels)],
        "n_tokens": rng.integers(10, 200, n).astype(np.int64),
    })


# ---------------------------------------------------------------------------- glue, no run files
def test_run_domains_counts_tokens_and_uses_taxonomy_ids(tmp_path):
    from gem.taxonomy import Taxonomy

    X, labels, centers = _clustered()
    corpus = _corpus(labels)
    assignments = pd.DataFrame({"id": corpus["id"][::-1].to_numpy(), "cluster": labels[::-1],
                                "probability": np.full(labels.size, 0.9)})
    doms, docs, _ = mx.run_domains(assignments, corpus, K, mass=[0.25] * K)
    assert doms["id"].tolist() == ["t00", "t01", "t02", "t03"]
    for k in range(K):
        assert doms.at[k, "n_tokens"] == corpus["n_tokens"][labels == k].sum()
        assert doms.at[k, "n_docs"] == (labels == k).sum()
    assert (docs["n_chars"].to_numpy() == corpus["text"].str.len().to_numpy()[::-1]).all()

    tax = Taxonomy(tmp_path / "taxonomy.sqlite")
    tax.sync_run("r1", centers, author="test")
    mapping = tax.run_mapping("r1")
    g = tax.add_group("Greek letters", author="test")
    t0 = mapping[0]
    tax.update_topic(t0, tax.topic(t0)["version"], "test", name="Alpha <b>docs</b>", parent=g)
    t1 = mapping[1]
    tax.update_topic(t1, tax.topic(t1)["version"], "test", parent=g)
    t3 = mapping[3]
    tax.update_topic(t3, tax.topic(t3)["version"], "test", excluded=True)
    doms, docs, parent_labels = mx.run_domains(assignments, corpus, K, mass=[0.25] * K, topics=tax.topics(run="r1"))
    assert doms["id"].tolist() == [mapping[k] for k in range(K)]
    assert doms.set_index("id").at[t0, "label"] == "Alpha <b>docs</b>"  # verbatim text, rendered as text
    assert parent_labels == {g: "Greek letters"}
    inputs = mx.RunMixtureInputs(doms, docs, parent_labels, {"corpus_fingerprint": "x"}, None, [])
    mix, a = inputs.build("natural", level="parent")
    tok = doms.set_index("id")["n_tokens"]
    want = {g: tok[t0] + tok[t1], mapping[2]: tok[mapping[2]]}
    total = sum(want.values())
    assert mix.weights() == pytest.approx({k: v / total for k, v in want.items()}, abs=1e-15)
    assert set(a["domain_id"]) == {g, mapping[2], t3}  # excluded topic keeps its own (zero) domain
    assert mix.domains.set_index("id").at[g, "label"] == "Greek letters"


def test_run_domains_errors():
    X, labels, _ = _clustered(n_per=3)
    corpus = _corpus(labels)
    a = pd.DataFrame({"id": corpus["id"], "cluster": labels})
    with pytest.raises(mx.MixtureError, match="not in the workspace corpus"):
        mx.run_domains(a.assign(id=a["id"] + "x"), corpus, K)
    with pytest.raises(mx.MixtureError, match="cluster 3 but the model has 2"):
        mx.run_domains(a, corpus, 2)
    with pytest.raises(mx.MixtureError, match="n_tokens"):
        mx.run_domains(a, corpus.drop(columns="n_tokens"), K)


def test_cli_parse_overrides():
    from gem.cli.export import parse_overrides

    assert parse_overrides(["a=0.1", "b=.2"]) == {"a": 0.1, "b": 0.2}
    with pytest.raises(ValueError, match="domain=weight"):
        parse_overrides(["a:0.1"])
    with pytest.raises(ValueError, match="not a number"):
        parse_overrides(["a=x"])


# ---------------------------------------------------------------------------- end to end
@pytest.fixture
def fitted_ws(tmp_path):
    X, labels, _ = _clustered()
    corpus = _corpus(labels)
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    write_parquet_atomic(ws.corpus_path, corpus)
    ws.save_embeddings("final", X, np.ones(len(X), np.float32),
                       {"source": "model", "model": "synthetic 16-d", "fingerprint": "synthetic-16d",
                        "n": len(X), "dim": X.shape[1]})
    # --no-sync: these tests read the plain cluster ids t<k> of a run the taxonomy has not matched
    assert main(["fit", "-w", str(ws.root), "--k", str(K), "--balance", "10", "--run", "r1", "--no-sync"]) == 0
    return ws, corpus


@pytest.mark.slow
def test_gem_export_end_to_end(fitted_ws, tmp_path, capsys):
    ws, corpus = fitted_ws
    out = tmp_path / "bundle1"
    rc = main(["export", "--workspace", str(ws.root), "--run", "r1", "--out", str(out), "--strategy", "unimax",
               "--budget-tokens", str(int(corpus["n_tokens"].sum() * 2)), "--max-epochs", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "validated" in text
    report = mx.validate_bundle(out)
    assert set(report["formats"]) == set(mx.FORMATS)  # the default formats include taxonomy.json
    obj = json.loads((out / "mixture.json").read_text())
    assert obj["corpus_fingerprint"].startswith("sha256:")
    assert obj["embedding_model"] == {"name": "synthetic 16-d", "fingerprint": "synthetic-16d"}
    assert json.loads((out / "taxonomy.json").read_text())["topics"][0]["id"] == "t00"
    assert obj["clustering"]["run"] == "r1" and obj["token_budget"] == int(corpus["n_tokens"].sum() * 2)
    a = pd.read_parquet(out / "assignments.parquet")
    assert len(a) == len(corpus) and np.isfinite(a["gis"]).all() and np.isfinite(a["probability"]).all()
    assert a["n_tokens"].sum() == corpus["n_tokens"].sum()
    w = np.array([d["weight"] for d in obj["domains"]])
    assert abs(w.sum() - 1) <= 1e-12

    # manual overrides and balanced weights; the default output folder lives in the workspace
    rc = main(["export", "-w", str(ws.root), "--run", "r1", "--strategy", "manual", "--manual", "t00=0.5",
               "--formats", "megatron,hf", "--no-gis"])
    assert rc == 0
    man = mx.validate_bundle(ws.exports_dir / "r1-manual")
    assert man["weights"]["t00"] == pytest.approx(0.5, abs=1e-12) and man["formats"] == ["megatron", "hf"]
    # --no-gis: assignments without a gis column (never a column of NaN), Dolma without the gis attribute
    assert main(["export", "-w", str(ws.root), "--run", "r1", "--strategy", "balanced", "--no-gis"]) == 0
    bal = ws.exports_dir / "r1-balanced"
    assert {"assignments", "dolma", "taxonomy"} <= set(mx.validate_bundle(bal)["formats"])
    a = pd.read_parquet(bal / "assignments.parquet")
    assert "gis" not in a.columns and np.isfinite(a["probability"]).all()

    # a budget far beyond the corpus: one summary warning, not one per domain
    capsys.readouterr()
    assert main(["export", "-w", str(ws.root), "--run", "r1", "--budget-tokens", "2e9", "--formats", "hf",
                 "--no-gis", "--out", str(tmp_path / "big")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {K} domains need more than 4 epochs")


def test_gem_export_bad_input_exits_2(fitted_ws, tmp_path, capsys):
    ws, _ = fitted_ws
    base = ["export", "-w", str(ws.root), "--run", "r1", "--no-gis"]
    cases = [
        (["--strategy", "manual", "--manual", "t09=0.2"], "unknown domain"),
        (["--strategy", "manual", "--manual", "t00=0.8", "t01=0.7"], "sum to 1.5"),
        (["--strategy", "unimax"], "UniMax needs a token budget: set one"),
        (["--out", str(tmp_path / "bad name!")], "export folder name"),
        (["--formats", "megatron,xyz"], "unknown export format"),
        (["--strategy", "imported"], "--weights"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "bad name!").exists()
    assert main(["export", "-w", str(ws.root), "--run", "nope", "--no-gis"]) == 2


@pytest.mark.parametrize("items", [["a=1", "a=2"], ["a=0.1", "b=0.2", "a=0.3"]])
def test_manual_override_given_twice_is_refused(items):
    from gem.cli.export import parse_overrides

    with pytest.raises(ValueError, match="domain 'a' given twice"):
        parse_overrides(items)
    assert parse_overrides(["a=0.1", "b=0.2"]) == {"a": 0.1, "b": 0.2}


def test_export_run_and_its_command_line_write_the_same_bundle(fitted_ws, tmp_path):
    import shlex

    ws, corpus = fitted_ws
    build = dict(strategy="temperature", level="topic", token_budget=float(corpus["n_tokens"].sum() * 3),
                 max_epochs=2.5, temperature=2.0, overrides={"t01": 0.123456789012})
    path, report = mx.export_run(ws, "r1", ws.exports_dir / "app-bundle", ["hf", "assignments"], **build)
    assert report["formats"] == ["hf", "assignments", "taxonomy"]  # per-document files bring the taxonomy
    cmd = mx.export_command(ws.root, "r1", "cli-bundle", ["hf", "assignments"], **build)
    assert cmd.startswith(f"gem export -w {ws.root} --run r1 --out {ws.exports_dir / 'cli-bundle'} ")
    assert "--temperature 2 " in cmd and "--max-epochs 2.5" in cmd and "--manual t01=0.123456789012" in cmd
    assert main(shlex.split(cmd)[1:]) == 0
    cli = mx.validate_bundle(ws.exports_dir / "cli-bundle")
    assert cli["weights"] == report["weights"] and cli["formats"] == report["formats"]
    a, b = (pd.read_parquet(p / "assignments.parquet") for p in (path, ws.exports_dir / "cli-bundle"))
    pd.testing.assert_frame_equal(a, b)
    assert np.isfinite(a["gis"]).all()
    assert mx.export_command(ws.root, "r1", "x", list(mx.FORMATS)) == (
        f"gem export -w {ws.root} --run r1 --out {ws.exports_dir / 'x'} --strategy natural")


def test_export_drops_excluded_documents_and_lists_them(fitted_ws, tmp_path, capsys):
    """A run fitted WITH documents excluded later still exports without them: token counts,
    assignments.parquet and Dolma attributes lack them, excluded_documents.jsonl lists them, and
    the per-topic summary says what they removed."""
    from gem.flags import DocFlags

    ws, corpus = fitted_ws
    gone = corpus["id"].iloc[[0, 1, 50, 100]].tolist()
    DocFlags(ws).exclude(gone[:3], "boilerplate", "alice", note="nav bar")
    DocFlags(ws).exclude(gone[3:], "unsafe", "bob")
    DocFlags(ws).tag(corpus["id"].iloc[[2, 3]], "gold", "carol")
    inputs = mx.mixture_inputs_from_run(ws, "r1", with_gis=False)
    removed = inputs.removed
    assert int(removed["removed_docs"].sum()) == 4
    assert int(removed["removed_tokens"].sum()) == int(corpus.set_index("id").loc[gone, "n_tokens"].sum())
    assert int(removed["kept_tokens"].sum()) == int(inputs.domains["n_tokens"].sum()) == \
        int(corpus["n_tokens"].sum()) - int(removed["removed_tokens"].sum())
    assert any("4 excluded document(s) left out" in n for n in inputs.notes)
    out = tmp_path / "b"
    assert main(["export", "-w", str(ws.root), "--run", "r1", "--out", str(out)]) == 0
    a = pd.read_parquet(out / "assignments.parquet")
    assert not set(gone) & set(a["id"]) and len(a) == len(corpus) - 4
    assert a.set_index("id").loc[corpus["id"].iloc[2], "tags"].tolist() == ["gold"]
    block = [json.loads(x) for x in (out / "excluded_documents.jsonl").read_text().splitlines()]
    assert sorted(b["id"] for b in block) == sorted(gone)
    assert {b["id"]: (b["reason"], b["author"]) for b in block}[gone[3]] == ("unsafe", "bob")
    dolma = mx.read_dolma_attributes((out / "dolma/attributes/gem/part-00000.jsonl.gz").read_bytes())
    assert not set(gone) & {r["id"] for r in dolma}
    assert mx.validate_bundle(out)["excluded_documents"] == 4
    # a run fitted without them: the same documents leave, and the model places them in a topic
    assert main(["fit", "-w", str(ws.root), "--k", str(K), "--balance", "10", "--run", "r2", "--no-sync"]) == 0
    again = mx.mixture_inputs_from_run(ws, "r2", with_gis=False)
    assert int(again.removed["removed_docs"].sum()) == 4 and "(no topic)" not in set(again.removed["id"])
    assert len(again.documents) == len(corpus) - 4


def test_a_topic_whose_documents_are_all_excluded_leaves_the_mixture(fitted_ws, tmp_path):
    from gem.flags import DocFlags

    ws, _ = fitted_ws
    a = pd.read_parquet(ws.run_dir("r1") / "assignments.parquet")
    DocFlags(ws).exclude(a.loc[a["cluster"] == 2, "id"], "off-topic", "alice")
    inputs = mx.mixture_inputs_from_run(ws, "r1", with_gis=False)
    row = inputs.domains.set_index("id").loc["t02"]
    assert row["n_docs"] == 0 and row["excluded"]
    assert any("every document of topic(s) t02 is excluded" in n for n in inputs.notes)
    path, report = mx.export_run(ws, "r1", tmp_path / "b", with_gis=False, strategy="balanced")
    assert "t02" not in report["weights"] and abs(sum(report["weights"].values()) - 1) < 1e-12
