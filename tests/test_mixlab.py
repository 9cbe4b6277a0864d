"""gem.mixlab: the feasible set, swarm design, results CSV, regression recovery, the best mixture
under constraints, and the Kneser-Ney proxy (on the shipped sample)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gem import mixture as mx
from gem.mixlab import (
    BigramKN, ConstraintError, best_mixture, bounds, design_swarm, fit_metric, linear_optimum, lower_is_better,
    parse_target, project, read_results,
)
from gem.mixlab.proxy import encode, prepare_proxy, sample_rows

D = 8


def _domains(d=D, excluded=(), seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(2_000, 60_000, d)
    ids = [f"T{k:03d}" for k in range(d)]
    return mx.make_domains(ids, tokens, n_docs=tokens // 50, excluded=[i in excluded for i in ids])


# ---------------------------------------------------------------------------- constraints
def test_projection_is_feasible_and_keeps_unclipped_proportions():
    rng = np.random.default_rng(1)
    tok = rng.integers(100, 10_000, D).astype(float)
    b = bounds([f"d{i}" for i in range(D)], tok, token_budget=tok.sum() * 1.2, max_epochs=2.0,
               floors={"d0": 0.05}, ceilings={"d1": 0.02}, excluded=["d2"])
    V = rng.dirichlet(np.full(D, 0.5), size=300)
    W = project(V, b)
    assert b.feasible(W).all()
    assert np.abs(W.sum(axis=1) - 1).max() < 1e-12
    assert (W[:, 2] == 0).all() and (W[:, 0] >= 0.05 - 1e-12).all() and (W[:, 1] <= 0.02 + 1e-12).all()
    assert (W <= 2.0 * tok / (tok.sum() * 1.2) + 1e-12).all()
    for w, v in zip(W, V):  # domains strictly inside their bounds keep their ratios to each other
        free = (w > b.lo + 1e-9) & (w < b.hi - 1e-9) & (v > 1e-6)
        if free.sum() >= 2:
            ratio = w[free] / v[free]
            assert np.ptp(ratio) / ratio.mean() < 1e-6


def test_bounds_say_which_constraint_cannot_be_met():
    ids, tok = ["a", "b", "c"], [100, 100, 100]
    with pytest.raises(ConstraintError, match="caps sum to .* lower the token budget"):
        bounds(ids, tok, token_budget=1_000, max_epochs=2)   # 2 x 300 tokens < 1000
    with pytest.raises(ConstraintError, match="floor 0.5 of domain 'a' is above"):
        bounds(ids, tok, floors={"a": 0.5}, ceilings={"a": 0.2})
    with pytest.raises(ConstraintError, match="excluded"):
        bounds(ids, tok, floors={"a": 0.1}, excluded=["a"])
    with pytest.raises(ConstraintError, match="unknown domain 'z'"):
        bounds(ids, tok, ceilings={"z": 0.1})
    with pytest.raises(ConstraintError, match="floors sum to"):
        bounds(ids, tok, floors={"a": 0.6, "b": 0.6})


def test_linear_optimum_matches_a_linear_program():
    from scipy.optimize import linprog

    rng = np.random.default_rng(2)
    for _ in range(20):
        tok = rng.integers(50, 5_000, D).astype(float)
        b = bounds(list("abcdefgh"), tok, token_budget=tok.sum(), max_epochs=float(rng.uniform(1.2, 4)),
                   floors={"a": 0.01}, excluded=["h"])
        c = rng.normal(size=D)
        lp = linprog(c, A_eq=np.ones((1, D)), b_eq=[1.0], bounds=list(zip(b.lo, b.hi)))
        w = linear_optimum(c, b)
        assert b.feasible(w).all()
        assert c @ w == pytest.approx(lp.fun, abs=1e-9)


# ---------------------------------------------------------------------------- design
def test_swarm_is_seeded_within_caps_and_spans_the_prior():
    doms = _domains(excluded=("T003",))
    kw = dict(token_budget=doms["n_tokens"].sum() * 0.9, max_epochs=2.0)
    s = design_swarm(doms, 48, 1.0, seed=7, **kw)
    again = design_swarm(doms, 48, 1.0, seed=7, **kw)
    other = design_swarm(doms, 48, 1.0, seed=8, **kw)
    pd.testing.assert_frame_equal(s.weights, again.weights)
    assert not np.allclose(s.matrix()[3:], other.matrix()[3:])
    assert "T003" not in s.ids and len(s.ids) == D - 1
    assert s.weights["kind"].tolist()[:3] == ["natural", "balanced", "unimax"] and len(s.weights) == 51
    assert s.bounds().feasible(s.matrix()).all()
    prior = s.prior()
    np.testing.assert_allclose(s.fixed("natural"), prior, atol=1e-12)   # 0.9 epochs: nothing capped
    np.testing.assert_allclose(s.fixed("unimax"), mx.unimax_weights(s.tokens(), kw["token_budget"], 2.0), atol=1e-9)
    tight = design_swarm(doms, 48, 200.0, seed=7, **kw)  # a large concentration stays near the prior
    spread = lambda sw: np.abs(sw.matrix()[3:] - prior).sum(axis=1).mean()  # noqa: E731
    assert spread(tight) < 0.5 * spread(s)
    with pytest.raises(ValueError, match="caps sum to"):
        design_swarm(doms, 8, 1.0, token_budget=doms["n_tokens"].sum() * 10, max_epochs=2.0)


# ---------------------------------------------------------------------------- results CSV
def test_results_csv_errors_name_the_line():
    ids = ["natural", "m000", "m001"]
    ok = read_results("mixture_id,val_loss,hellaswag\nm001,2.5,0.31\nnatural,2.7,0.30\nm000,2.6,0.29\n", ids)
    assert ok.index.tolist() == ids and ok.loc["m001", "val_loss"] == 2.5
    assert lower_is_better("val_loss") and lower_is_better("xent_bits") and not lower_is_better("hellaswag")
    bad = {
        "mixture_id,loss\nnatural,1\nm000,1\nm009,1\n": r"line 4: unknown mixture id 'm009'",
        "mixture_id,loss\nnatural,1\nm000,abc\nm001,1\n": r"line 3: loss of mixture 'm000' is 'abc', not a finite",
        "mixture_id,loss\nnatural,1\nm000,\nm001,1\n": r"line 3: loss of mixture 'm000' is empty",
        "mixture_id,loss\nnatural,1\nm000,nan\nm001,1\n": r"line 3: .* not a finite number",
        "mixture_id,loss\nnatural,1\nnatural,2\n": r"line 3: mixture 'natural' already on line 2",
        "mixture_id,loss\nnatural,1\n": r"2 swarm mixture\(s\) have no row \(m000, m001\)",
        "id,loss\nnatural,1\n": r"line 1: no 'mixture_id' column",
        "mixture_id\nnatural\n": r"line 1: no metric column",
        "mixture_id,loss\nnatural,1,2\n": r"line 2: 3 fields, the header has 2",
    }
    for text, message in bad.items():
        with pytest.raises(ValueError, match=message):
            read_results(text, ids)


# ---------------------------------------------------------------------------- recovery
def _synthetic(law, n=96, seed=0, noise=0.002):
    doms = _domains(d=6, seed=seed)
    s = design_swarm(doms, n, 1.0, token_budget=doms["n_tokens"].sum(), max_epochs=3.0, seed=seed)
    rng = np.random.default_rng(seed)
    y = law(s.matrix())
    y = y + noise * np.std(y) * rng.normal(size=len(y))
    csv = "mixture_id,val_loss\n" + "".join(f"{m},{float(v)!r}\n" for m, v in zip(s.weights.index, y))
    res = read_results(csv, list(s.weights.index))
    fit = fit_metric(s.matrix(), res["val_loss"].to_numpy(), "val_loss", s.ids, mixture_ids=list(res.index))
    return s, fit


def test_a_data_mixing_law_is_recovered_with_its_constrained_optimum():
    t = np.array([-1.5, 0.8, -0.4, 1.2, 0.1, -0.9])

    def law(W):  # loss = 2 + exp(t . w) (Ye et al.'s data mixing law)
        return 2 + np.exp(W @ t)

    s, fit = _synthetic(law)
    assert fit.minimize and fit.rho >= 0.9
    assert fit.rho_interval[0] <= fit.rho <= fit.rho_interval[1]
    for constraints in ({}, {"floors": {"T001": 0.1}, "ceilings": {"T000": 0.15}, "excluded": ["T005"]}):
        b = s.bounds(**constraints)
        best = best_mixture(fit, s, b, n_candidates=4000)
        true = linear_optimum(t, b)          # exp is increasing: the law's optimum is the linear one's
        assert b.feasible(best.weights).all()
        assert np.abs(best.weights - true).sum() <= 0.1, (best.weights.round(3), true.round(3))
        regret = law(best.weights[None])[0] - law(true[None])[0]
        assert regret <= 0.03 * np.ptp(law(s.matrix()))
        assert best.predicted < fit.predict(s.fixed("natural"))[0]
    assert best.weights[5] == 0 and best.weights[1] >= 0.1 - 1e-12 and best.weights[0] <= 0.15 + 1e-12


def test_an_interior_optimum_is_recovered():
    target = np.array([0.25, 0.15, 0.2, 0.15, 0.2, 0.05])

    def bowl(W):
        return 3 + 4 * ((W - target) ** 2).sum(axis=1)

    s, fit = _synthetic(bowl)
    assert fit.rho >= 0.9, fit.candidates
    b = s.bounds()
    assert b.feasible(target).all()
    best = best_mixture(fit, s, b, n_candidates=4000)
    assert np.abs(best.weights - target).sum() <= 0.15, (fit.model_kind, best.weights.round(3))
    assert bowl(best.weights[None])[0] < bowl(s.matrix()).min() + 0.02


def test_too_few_or_constant_results_are_refused():
    W = np.random.default_rng(0).dirichlet(np.ones(4), size=20)
    with pytest.raises(ValueError, match="at least 8"):
        fit_metric(W[:5], np.arange(5.0), "loss", list("abcd"))
    with pytest.raises(ValueError, match="same value"):
        fit_metric(W, np.ones(20), "loss", list("abcd"))


# ---------------------------------------------------------------------------- the proxy LM
def _model(texts):
    enc = encode(texts)
    return BigramKN(len(enc.vocab) + 5).fit(enc.flat), enc   # +5: ids never seen in training


def test_kneser_ney_distributions_sum_to_one():
    model, enc = _model(["the cat sat on the mat .", "the dog sat on the log !", "a cat and a dog ."])
    for ctx in (1, enc.vocab["the"], enc.vocab["sat"], enc.vocab["."], 0, len(enc.vocab) + 2):
        p = model.distribution(ctx)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p[1] == 0 and (np.delete(p, 1) > 0).all()   # <s> is never predicted; everything else can be
    seen = model.distribution(enc.vocab["the"])
    assert seen[enc.vocab["cat"]] > seen[enc.vocab["log"]] * 0 + seen[enc.vocab["and"]]  # seen bigram beats unseen


def test_cross_entropy_drops_when_the_training_mix_matches_the_target():
    rng = np.random.default_rng(0)
    cooking = ["stir", "the", "onions", "butter", "pan", "salt", "simmer", "garlic", "bake", "oven"]
    law = ["the", "court", "held", "appeal", "statute", "judge", "ruling", "contract", "party", "claim"]
    docs = [" ".join(rng.choice(cooking if k % 2 == 0 else law, size=30)) for k in range(400)]
    enc = encode(docs)
    kinds = np.arange(400) % 2
    held = np.arange(300, 400)
    target = enc.docs(held[kinds[held] == 0])
    pools = [np.flatnonzero((kinds == 0) & (np.arange(400) < 300)), np.flatnonzero((kinds == 1) & (np.arange(400) < 300))]
    lengths = enc.lengths().astype(float)
    xent = {}
    for w0 in (0.9, 0.5, 0.1):
        take = sample_rows(pools, lengths, np.array([w0, 1 - w0]), 3000, np.random.default_rng(1))
        assert not set(take) & set(held)
        xent[w0] = BigramKN(len(enc.vocab)).fit(enc.docs(take)).cross_entropy(target)
    assert xent[0.9] < xent[0.5] < xent[0.1]


def test_sampling_follows_the_weights_and_repeats_small_domains():
    lengths = np.full(100, 10.0)
    pools = [np.arange(0, 90), np.arange(90, 100)]         # 900 and 100 tokens
    take = sample_rows(pools, lengths, np.array([0.5, 0.5]), 1000, np.random.default_rng(0))
    got = lengths[take[take >= 90]].sum()
    assert 490 <= got <= 510                                # 5 epochs of the small domain
    assert set(take[take >= 90]) == set(range(90, 100))


# ---------------------------------------------------------------------------- on the sample
@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    from gem.runs import FitSettings, fit_run
    from gem.store import SAMPLE_DATA_DIR, seed_sample_workspace

    if not (SAMPLE_DATA_DIR / "corpus.parquet").exists():
        pytest.fail("sample_data/ is not built: run `.venv/bin/python sample_data/build_sample.py --embed`")
    ws = seed_sample_workspace(tmp_path_factory.mktemp("mixlab") / "sample")
    fit_run(ws, "km12", FitSettings(method="kmeans", k=12))
    inputs = mx.mixture_inputs_from_run(ws, "km12", with_gis=False)
    return ws, inputs


def test_proxy_on_the_sample_bars_the_target_and_prefers_matching_domains(sample_run):
    ws, inputs = sample_run
    swarm = design_swarm(inputs.domains, 8, 1.0, seed=0, run="km12")
    setup = prepare_proxy(ws, swarm, parse_target("label:source=kjv"))
    corpus = ws.load_corpus(columns=["id", "source"])
    kjv = (corpus["source"] == "kjv").to_numpy()
    assert setup.barred.sum() == round(kjv.sum() * 0.5) and kjv[setup.barred].all()
    pooled = np.concatenate(setup.pools)
    assert not setup.barred[pooled].any() and len(set(pooled)) == len(pooled)
    assert kjv[pooled].sum() == kjv.sum() - setup.barred.sum()   # the other half still trains
    # the domain richest in held-in kjv documents vs the poorest: the proxy must tell them apart
    share = np.array([kjv[p].mean() if len(p) else 0 for p in setup.pools])
    rich, poor = np.zeros(len(share)), np.zeros(len(share))
    rich[np.argmax(share)], poor[np.argmin(share)] = 1, 1
    rng = np.random.default_rng
    assert setup.score(rich, 30_000, rng(0)) < setup.score(poor, 30_000, rng(0)) - 1.0
    with pytest.raises(ValueError, match="not in the corpus"):
        prepare_proxy(ws, swarm, parse_target("label:nope=x"))
    with pytest.raises(ValueError, match="not a domain of this swarm"):
        prepare_proxy(ws, swarm, parse_target("topic:T999"))


def test_a_file_target_is_read_and_its_texts_never_train(sample_run, tmp_path):
    from gem.mixlab.proxy import read_target_file

    ws, inputs = sample_run
    corpus = ws.load_corpus(columns=["id", "text"])
    picked = corpus["text"].iloc[[5, 50, 500]].tolist()
    path = tmp_path / "target.jsonl"
    path.write_text("\n".join([json.dumps({"text": t}) for t in picked] + ["not json", '{"no": "text"}']) + "\n")
    assert read_target_file(path) == picked
    plain = tmp_path / "target.txt"
    plain.write_text("first doc\nstill first\n\n\nsecond doc\n")
    assert read_target_file(plain) == ["first doc\nstill first", "second doc"]
    swarm = design_swarm(inputs.domains, 8, 1.0, seed=0, run="km12")
    setup = prepare_proxy(ws, swarm, parse_target(f"file:{path}"))
    barred = np.flatnonzero(setup.barred)
    assert set(corpus["text"].iloc[barred]) == set(picked)
    assert not set(barred) & set(np.concatenate(setup.pools))
    assert setup.eval_docs == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    with pytest.raises(ValueError, match="no JSON line"):
        read_target_file(bad)
