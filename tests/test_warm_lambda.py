"""A manual lambda warm-started from the automatic-balance fit (as the app and `gem fit --balance`
do) reaches the balance of a cold fit at that lambda: the E-step's Newton solve from rescaled
potentials must not stall far from the optimum (a strict lambda once left four of six clusters empty)."""
from __future__ import annotations

import numpy as np
import pytest

from gem.metrics import balance_report
from gem.model import GEM


@pytest.mark.parametrize("lam", [1000.0, 1e5])
def test_warm_started_strong_balance_balances(synthetic_workspace, lam):
    X = synthetic_workspace.load_embeddings("final")
    auto = GEM(n_clusters=6, random_state=0).fit(X)
    warm = GEM(n_clusters=6, random_state=0, balance=lam, warm_start=True)
    warm.__dict__.update({k: v for k, v in auto.__dict__.items() if k.endswith("_")})
    warm.fit(X)
    cold = GEM(n_clusters=6, random_state=0, balance=lam).fit(X)
    assert warm.weights_.min() > 0.5 / 6
    assert balance_report(warm.labels_, 6)["normalized_entropy"] >= balance_report(cold.labels_, 6)["normalized_entropy"] - 0.02
    h = np.asarray(warm.objective_history_)
    assert np.all(np.diff(h) >= 0)
