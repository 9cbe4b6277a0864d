"""The Mixture lab page's figures (plotly): the fit's quality and the mixtures side by side.
Domain labels and mixture ids are curator / corpus text: escaped (``gem.plots.safe_text``)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import plotly.graph_objects as go

from gem.plots import cluster_color, domain_axis, safe_text


def fit_scatter(fit) -> go.Figure:
    """Measured metric against the held-out (cross-validated) prediction, one point per mixture."""
    y, p = np.asarray(fit.measured), np.asarray(fit.cv_predicted)
    names = [safe_text(m, 40) for m in (fit.mixture_ids or range(len(y)))]
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="#9aa5b1"),
                             name="predicted = measured", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=y, y=p, mode="markers", name="mixture (held out)", customdata=names,
                             marker=dict(size=8, color="#1f77b4"),
                             hovertemplate="%{customdata}<br>measured %{x:.4g}<br>predicted %{y:.4g}<extra></extra>"))
    metric = safe_text(fit.metric, 40)
    fig.update_layout(
        title=f"{metric}: held-out Spearman ρ = {fit.rho:.3f} ({safe_text(fit.model_kind)})",
        xaxis=dict(title=f"measured {metric}"), yaxis=dict(title=f"predicted {metric} (cross-validated)"),
        legend=dict(orientation="h", y=-0.2), margin=dict(l=10, r=10, t=40, b=10))
    return fig


def mixtures_chart(ids, labels, mixtures: Mapping[str, np.ndarray], title: str = "") -> go.Figure:
    """Grouped bars per domain, one series per mixture (natural, balanced, UniMax, predicted best)."""
    ids = [str(i) for i in ids]
    fig = go.Figure()
    names = [safe_text(lb, 40) for lb in labels]
    for k, (name, w) in enumerate(mixtures.items()):
        fig.add_trace(go.Bar(x=ids, y=np.asarray(w, dtype=np.float64), name=safe_text(name, 40),
                             marker_color="#d62728" if name == "predicted best" else cluster_color(k + 10),
                             customdata=names,
                             hovertemplate="%{x} %{customdata}<br>%{y:.2%}<extra>" + safe_text(name, 40) + "</extra>"))
    fig.update_layout(title=title, barmode="group", xaxis=domain_axis(ids, labels),
                      yaxis=dict(title="share of training tokens", tickformat=".0%"),
                      legend=dict(orientation="h", y=1.08), margin=dict(l=10, r=10, t=40 if title else 30, b=10))
    return fig
