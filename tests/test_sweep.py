"""gem.sweep.lambda_sweep and `gem sweep`: warm-started, balance grows with lambda, stability and
agreement computed as gem.metrics does."""
import json

import numpy as np
import pytest

from gem.metrics import agreement, balance_report, mean_pairwise_ari
from gem.sweep import lambda_sweep


def _data(n=300, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [0.55, 0.25, 0.12, 0.08]
    y = rng.choice(k, size=n, p=sizes)
    centres = rng.normal(size=(k, d))
    X = 1.5 * centres[y] + rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def test_sweep_rows_and_properties():
    X, y = _data()
    calls = []
    res = lambda_sweep(X, {"topic": y}, k=4, lambdas=[0, 100, 100000], seeds=[0, 1],
                       progress=lambda d, t, w: calls.append((d, t)))
    assert [r["balance"] for r in res.rows] == ["auto", 0.0, 100.0, 100000.0]
    assert res.rows[0]["lambda"] > 0
    assert calls[-1] == (calls[-1][1], calls[-1][1]) and len(calls) == 2 * (1 + 3 + 2)
    assert [r["method"] for r in res.references] == ["k-means (raw vectors)", "k-means (unit vectors)"]
    for row in res.table():
        assert 0 <= row["normalized_entropy"] <= 1 and 0 < row["largest_share"] <= 1
        assert -1 <= row["stability"] <= 1 and 0 <= row["nmi_topic"] <= 1
    # balance grows with lambda; the strict stop is near-uniform
    ents = [r["normalized_entropy"] for r in res.rows[1:]]
    assert ents[-1] >= ents[0] - 1e-9 and ents[-1] > 0.99
    # the figures are gem.metrics' on the stored labelings
    for row in res.table():
        labs = res.labels[row["method"]]
        assert row["stability"] == pytest.approx(mean_pairwise_ari(labs))
        assert row["nmi_topic"] == pytest.approx(np.mean([agreement(lab, y)["nmi"] for lab in labs]))
        assert row["normalized_entropy"] == pytest.approx(np.mean([balance_report(lab, 4)["normalized_entropy"] for lab in labs]))
    json.dumps(res.table())  # plain JSON


def test_sweep_is_warm_started_from_the_auto_fit(monkeypatch):
    """Every lambda fit starts from a copy of that seed's auto fit (warm_start=True)."""
    from gem import model

    X, y = _data(n=120)
    seen = []
    orig = model.GEM.fit

    def spy(self, X, *a, **kw):
        seen.append((self.balance, self.warm_start, hasattr(self, "mean_directions_")))
        return orig(self, X, *a, **kw)

    monkeypatch.setattr(model.GEM, "fit", spy)
    lambda_sweep(X, {}, k=3, lambdas=[10, 5000], seeds=[0], kmeans_references=False)
    assert seen == [("auto", False, False), (10.0, True, True), (5000.0, True, True)]


def test_single_seed_stability_is_nan_and_bad_input():
    X, y = _data(n=100)
    res = lambda_sweep(X, None, k=3, lambdas=[0], seeds=[0], kmeans_references=False)
    assert np.isnan(res.rows[0]["stability"])
    with pytest.raises(ValueError):
        lambda_sweep(X, None, k=3, lambdas=[-1], seeds=[0])
    with pytest.raises(ValueError):
        lambda_sweep(X, None, k=3, lambdas=[0], seeds=[])


def test_cli_sweep_json(synthetic_workspace, capsys):
    from gem.cli import main

    ws = str(synthetic_workspace.root)
    assert main(["sweep", "-w", ws, "--k", "4", "--lambdas", "0,5000", "--seeds", "0,1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["balance"] for r in out["rows"]] == ["auto", 0.0, 5000.0]
    assert {"nmi_source", "ari_source", "nmi_category", "ari_category", "stability"} <= set(out["rows"][0])
    assert [r["method"] for r in out["references"]] == ["k-means (raw vectors)", "k-means (unit vectors)"]
    assert main(["sweep", "-w", ws, "--k", "4", "--lambdas", "0,5000", "--seeds", "0"]) == 0
    text = capsys.readouterr().out
    assert "GEM (auto)" in text and "k-means (unit vectors)" in text
    with pytest.raises(SystemExit):
        main(["sweep", "-w", ws, "--lambdas", "-3"])


def test_kmeans_reference_rows_have_no_lambda(synthetic_workspace, capsys):
    """The k-means rows of the sweep table carry no λ: None in the rows (null in JSON, an empty
    cell in the page's table and the CLI's), never a number."""
    import pandas as pd

    from gem.cli import main

    X, y = _data(n=100)
    res = lambda_sweep(X, {"topic": y}, k=3, lambdas=[0, 100], seeds=[0, 1])
    assert [r["lambda"] for r in res.references] == [None, None]
    assert [r["balance"] for r in res.references] == [None, None]
    assert all(isinstance(r["lambda"], float) for r in res.rows)
    table = pd.DataFrame(res.table())
    assert table["lambda"].isna().tolist() == [False, False, False, True, True]
    ws = str(synthetic_workspace.root)
    assert main(["sweep", "-w", ws, "--k", "3", "--lambdas", "0", "--seeds", "0,1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["lambda"] for r in out["references"]] == [None, None]
    assert main(["sweep", "-w", ws, "--k", "3", "--lambdas", "0", "--seeds", "0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    for line in lines[1:]:
        if line.strip().startswith("k-means"):
            cells = [line[i * 24:(i + 1) * 24].strip() for i in range(len(header))]
            assert cells[1] == "", line  # the lambda column is empty
