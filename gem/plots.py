"""Pure plot builders: data in, plotly Figure out (no streamlit, no I/O), so each is tested
without a browser.

Corpus text is untrusted: any text that reaches a figure (hover, labels) goes through
``safe_text`` (HTML-escaped, truncated), because plotly renders a subset of HTML in hover labels.
Point identity travels in ``customdata`` (the document id), never in point indices: traces are
split by cluster, so indices are per trace.

Other engineers append their builders at the end of this file (one section each).
"""
from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

# 30 colours picked greedily (Glasbey's method) from the sRGB grid with CIELAB lightness 30..80, each
# as far as possible (CIEDE2000) from white, black and those already picked: any two of them differ
# by ΔE00 >= 17 (plotly's Dark24 / Alphabet have pairs at 7-9, e.g. Dark24's 4 and 11 look alike).
# Beyond 30 clusters colours repeat anyway; Dark24 + Alphabet keep ids distinct up to 80.
DISTINCT_COLORS = [
    "#2478B4", "#F00000", "#009000", "#FC00FC", "#CC9C00", "#900054", "#6C4800", "#00C0C0", "#005448", "#FC9CA8",
    "#3000F0", "#B4B4FC", "#847884", "#9CD800", "#909C84", "#FC9054", "#F0186C", "#3C5400", "#843024", "#48486C",
    "#846CCC", "#24D890", "#60C0FC", "#9C7854", "#606054", "#488484", "#D8C09C", "#848424", "#FC9CF0", "#A818B4",
]
PALETTE = DISTINCT_COLORS + qualitative.Dark24 + qualitative.Alphabet
SVG_MAX_POINTS = 5000  # above this the 2-D maps use WebGL (SVG makes one DOM node per point)


def safe_text(text, max_chars: int = 160) -> str:
    """Untrusted text -> escaped, single-line, truncated text safe for plotly labels."""
    s = " ".join(str(text).split())
    if len(s) > max_chars:
        s = s[: max_chars - 1] + "…"
    return html.escape(s, quote=True)


def cluster_color(k: int) -> str:
    return PALETTE[int(k) % len(PALETTE)]


_SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def superscript(n: int) -> str:
    return str(int(n)).translate(_SUPERSCRIPTS)


def robust_range(values, quantiles: tuple[float, float] = (0.005, 0.995), fence: float = 0.25,
                 margin: float = 0.04) -> list[float] | None:
    """An axis range for the bulk of the points: the data's extent, cut where a point lies more than
    ``fence`` x the quantile span beyond the ``quantiles`` (a far outlier), plus ``margin`` x that
    span on each side. Without far outliers it is simply the full extent plus the margin."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    q_lo, q_hi = np.quantile(v, quantiles)
    span = q_hi - q_lo
    if span <= 0:
        span = max(float(v.max() - v.min()), abs(float(q_hi)), 1.0)
    lo = max(float(v.min()), q_lo - fence * span)
    hi = min(float(v.max()), q_hi + fence * span)
    return [lo - margin * span, hi + margin * span]


# ---------------------------------------------------------------------------- anisotropy
def uniform_sphere_cosine_density(t: np.ndarray, dim: int) -> np.ndarray:
    """Density of the cosine between two independent uniform points on S^{dim-1}:
    Gamma(d/2) / (sqrt(pi) Gamma((d-1)/2)) * (1 - t^2)^((d-3)/2) on [-1, 1]."""
    if dim < 2:
        raise ValueError(f"dimension must be >= 2, got {dim}")
    t = np.asarray(t, dtype=np.float64)
    log_c = math.lgamma(dim / 2) - 0.5 * math.log(math.pi) - math.lgamma((dim - 1) / 2)
    inside = np.clip(1.0 - t * t, 0.0, None)
    with np.errstate(divide="ignore"):
        out = np.exp(log_c + (dim - 3) / 2 * np.log(inside))
    return np.where(np.abs(t) < 1, out, 0.0)


def cosine_histogram(cosines: np.ndarray, dim: int, bins: int = 80, title: str | None = None,
                     mean: float | None = None) -> go.Figure:
    """Histogram (as a density) of sampled pairwise cosines against the uniform sphere's density.
    ``mean``: the exact mean pairwise cosine (gem.metrics.anisotropy) for the marker line; default:
    the sample's mean."""
    cosines = np.asarray(cosines, dtype=np.float64)
    if cosines.size == 0:
        raise ValueError("no cosines to plot")
    mean = float(cosines.mean()) if mean is None else float(mean)
    lo = min(-0.25, float(cosines.min()))
    hi = max(0.25, float(cosines.max()))
    counts, edges = np.histogram(cosines, bins=bins, range=(lo, hi), density=True)
    centres = (edges[:-1] + edges[1:]) / 2
    grid = np.linspace(lo, hi, 400)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=counts, width=np.diff(edges), name="this corpus",
                         marker_color="#1f77b4", opacity=0.75,
                         hovertemplate="cosine %{x:.3f}<br>density %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=grid, y=uniform_sphere_cosine_density(grid, dim), mode="lines",
                             name=f"uniform on the sphere S{superscript(dim - 1)} (d = {dim})",
                             line=dict(color="#d62728", width=2),
                             hovertemplate="cosine %{x:.3f}<br>density %{y:.2f}<extra></extra>"))
    fig.add_vline(x=mean, line_dash="dash", line_color="#1f77b4",
                  annotation_text=f"mean {mean:.3f}", annotation_position="top")
    fig.update_layout(title=title or "Pairwise cosine similarity (sampled pairs)", xaxis_title="cosine",
                      yaxis_title="density", bargap=0, legend=dict(orientation="h", y=-0.2), margin=dict(t=50))
    return fig


# ---------------------------------------------------------------------------- cluster maps
def _hover(ids, texts, labels, extra, what: str = "cluster") -> tuple[np.ndarray, str]:
    """customdata columns and the hover template that shows them.

    Column 0 is the raw id (what selections report; never displayed), column 1 the escaped id,
    2 the cluster (or topic: ``what``), 3 an escaped text snippet, then escaped ``extra`` columns."""
    ids = np.asarray(ids).astype(str)
    cols = [ids, np.array([safe_text(i, 80) for i in ids], dtype=object), np.asarray(labels).astype(str)]
    template = f"<b>%{{customdata[1]}}</b> · {what} %{{customdata[2]}}"
    if texts is not None:
        cols.append(np.array([safe_text(t) for t in texts], dtype=object))
        template += f"<br>%{{customdata[{len(cols) - 1}]}}"
    for name, values in (extra or {}).items():
        cols.append(np.array([safe_text(v, 60) for v in values], dtype=object))
        template += f"<br>{safe_text(name, 30)}: %{{customdata[{len(cols) - 1}]}}"
    return np.column_stack(cols), template + "<extra></extra>"


def cluster_map(coords: np.ndarray, labels: np.ndarray, ids, texts=None, extra: dict | None = None,
                title: str = "", webgl: bool | None = None, marker_size: float | None = None,
                names: dict | None = None) -> go.Figure:
    """2-D scatter of documents coloured by cluster, one trace per cluster (sorted by id).

    ``customdata[:, 0]`` is the raw document id (what selections report; never displayed);
    hover shows the escaped id, the cluster, an escaped text snippet and escaped ``extra`` columns
    (e.g. source, category). ``names``: cluster -> the label shown in the legend and hover (the
    taxonomy's topic ids, "T004"); each trace's ``meta`` is its cluster index either way.
    """
    coords, labels = _points(coords, labels, ids, 2, "coords")
    shown = labels if not names else np.array([safe_text(names.get(int(k), k), 40) for k in labels], dtype=object)
    custom, template = _hover(ids, texts, shown, extra, "topic" if names else "cluster")
    use_gl = len(coords) > SVG_MAX_POINTS if webgl is None else webgl
    Trace = go.Scattergl if use_gl else go.Scatter
    size = marker_size or (4 if len(coords) > 5000 else 6)
    fig = go.Figure()
    for k in np.unique(labels):
        m = labels == k
        fig.add_trace(Trace(x=coords[m, 0], y=coords[m, 1], mode="markers", meta=int(k),
                            name=safe_text(names.get(int(k), k), 40) if names else str(k),
                            marker=dict(size=size, color=cluster_color(k), opacity=0.8),
                            customdata=custom[m], hovertemplate=template))
    # the view frames the bulk of the points, so a few far outliers do not squeeze the map into its
    # middle; they stay in the figure (autoscale / a second double-click shows them). No locked aspect
    # ratio: UMAP's axes carry no units, and a locked one would widen the range back to the outliers
    # one legend row per cluster in a small font, so K = 24-36 entries fit beside the map (plotly
    # scrolls a longer legend)
    fig.update_layout(title=title, legend=dict(title_text="topic" if names else "cluster", font=dict(size=10),
                                               tracegroupgap=0, itemsizing="constant"), dragmode="select",
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(showticklabels=False, title=None, zeroline=False, range=robust_range(coords[:, 0])),
                      yaxis=dict(showticklabels=False, title=None, zeroline=False, range=robust_range(coords[:, 1])))
    return fig


def _points(coords, labels, ids, dim: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a map's point coordinates (n, dim) against its labels and ids."""
    coords = np.asarray(coords)
    labels = np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != dim:
        raise ValueError(f"{name} must be (n, {dim}), got {coords.shape}")
    if not (len(coords) == len(labels) == len(ids)):
        raise ValueError(f"{name} ({len(coords)}), labels ({len(labels)}) and ids ({len(ids)}) differ in length")
    return coords, labels


def sphere_map(xyz: np.ndarray, labels: np.ndarray, ids, texts=None, title: str = "") -> go.Figure:
    """Documents as points on S^2 (from the haversine layout), coloured by cluster, over a faint
    unit sphere so the geometry is visible."""
    xyz, labels = _points(xyz, labels, ids, 3, "xyz")
    custom, template = _hover(ids, texts, labels, None)
    u, v = np.mgrid[0:2 * np.pi:40j, 0:np.pi:20j]
    fig = go.Figure()
    fig.add_trace(go.Surface(x=0.99 * np.cos(u) * np.sin(v), y=0.99 * np.sin(u) * np.sin(v), z=0.99 * np.cos(v),
                             opacity=0.12, showscale=False, colorscale=[[0, "#cccccc"], [1, "#cccccc"]],
                             hoverinfo="skip", name="sphere"))
    for k in np.unique(labels):
        m = labels == k
        fig.add_trace(go.Scatter3d(x=xyz[m, 0], y=xyz[m, 1], z=xyz[m, 2], mode="markers", name=str(k),
                                   marker=dict(size=2.5, color=cluster_color(k)),
                                   customdata=custom[m], hovertemplate=template))
    axis = dict(visible=False)
    fig.update_layout(title=title, legend_title_text="cluster", margin=dict(l=0, r=0, t=40 if title else 0, b=0),
                      scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube"))
    return fig


# ---------------------------------------------------------------------------- cluster sizes
def cluster_sizes(labels_or_masses: np.ndarray, n_clusters: int | None = None, title: str = "",
                  masses: bool = False) -> go.Figure:
    """Cluster shares sorted from largest to smallest, against the uniform share 1/K.

    ``labels_or_masses``: hard labels (one per document), or, with ``masses=True``, K masses.
    """
    a = np.asarray(labels_or_masses)
    if masses:
        share = np.asarray(a, dtype=np.float64)
        k = len(share) if n_clusters is None else int(n_clusters)
        if len(share) != k:
            raise ValueError(f"{len(share)} masses for {k} clusters")
    else:
        k = int(a.max()) + 1 if n_clusters is None else int(n_clusters)
        share = np.bincount(a.astype(int), minlength=k).astype(np.float64)
    total = share.sum()
    if total <= 0:
        raise ValueError("cluster sizes sum to zero")
    share = share / total
    order = np.argsort(-share, kind="stable")
    fig = go.Figure(go.Bar(
        x=[str(i) for i in order], y=share[order], marker_color=[cluster_color(i) for i in order],
        hovertemplate="cluster %{x}<br>share %{y:.2%}<extra></extra>", name="share"))
    fig.add_hline(y=1.0 / k, line_dash="dash", line_color="#555",
                  annotation_text=f"uniform 1/K = {1.0 / k:.1%}", annotation_position="top right")
    fig.update_layout(title=title, xaxis=dict(title="cluster (sorted by size)", type="category"),
                      yaxis=dict(title="share of documents", tickformat=".0%"),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), showlegend=False)
    return fig


# ---------------------------------------------------------------------------- mixture
def domain_axis(ids: list[str], labels) -> dict:
    """A category axis keyed by domain id (unique) that shows the domain labels (curator text: escaped)."""
    return dict(title="domain", type="category", tickmode="array", tickvals=list(ids),
                ticktext=[safe_text(lb, 24) for lb in labels])


def mixture_weights_chart(ids, labels, natural, chosen, title: str = "") -> go.Figure:
    """Grouped bars per domain: natural (token share) vs chosen weight. Labels are curator text:
    escaped like corpus text."""
    ids = [str(i) for i in ids]
    natural = np.asarray(natural, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.float64)
    if not (len(ids) == len(natural) == len(chosen) == len(labels)):
        raise ValueError("ids, labels, natural and chosen must have the same length")
    names = [safe_text(lb, 40) for lb in labels]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=ids, y=natural, name="natural (token share)", marker_color="#9aa5b1",
                         customdata=names, hovertemplate="%{x} %{customdata}<br>natural %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Bar(x=ids, y=chosen, name="chosen weight", marker_color="#1f77b4",
                         customdata=names, hovertemplate="%{x} %{customdata}<br>weight %{y:.2%}<extra></extra>"))
    fig.update_layout(title=title, barmode="group", xaxis=domain_axis(ids, labels),
                      yaxis=dict(title="share of training tokens", tickformat=".0%"),
                      legend=dict(orientation="h", y=1.08), margin=dict(l=10, r=10, t=40 if title else 30, b=10))
    return fig


def implied_epochs_chart(ids, labels, epochs, max_epochs: float | None = None, title: str = "") -> go.Figure:
    """Bars of implied epochs per domain under the token budget; domains above ``max_epochs``
    are drawn red, with the cap as a dashed line."""
    ids = [str(i) for i in ids]
    e = np.asarray(epochs, dtype=np.float64)
    if len(ids) != len(e) or len(ids) != len(labels):
        raise ValueError("ids, labels and epochs must have the same length")
    over = (e > max_epochs * (1 + 1e-9)) if max_epochs is not None else np.zeros(len(e), bool)
    fig = go.Figure(go.Bar(
        x=ids, y=np.where(np.isfinite(e), e, np.nan), marker_color=np.where(over, "#d62728", "#2ca02c").tolist(),
        customdata=[safe_text(lb, 40) for lb in labels],
        hovertemplate="%{x} %{customdata}<br>%{y:.2f} epochs<extra></extra>", name="implied epochs"))
    if max_epochs is not None:
        fig.add_hline(y=float(max_epochs), line_dash="dash", line_color="#d62728",
                      annotation_text=f"max {max_epochs:g} epochs", annotation_position="top right")
    fig.update_layout(title=title, xaxis=domain_axis(ids, labels),
                      yaxis=dict(title="epochs of the domain's tokens"), showlegend=False,
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


# ---------------------------------------------------------------------------- taxonomy
def taxonomy_tree(ids, names, parents, values, group_names: dict | None = None, kind: str = "sunburst",
                  highlight: str | None = None, title: str = "") -> go.Figure:
    """Sunburst or treemap of topics under their parent groups, sized by ``values`` (documents or
    tokens). ``parents``: a group id or None per topic; ``group_names``: group id -> curator name.
    Names are curator text: escaped and truncated like corpus text. ``highlight``: a topic id
    drawn with a thick outline."""
    ids = [str(i) for i in ids]
    if not (len(ids) == len(names) == len(parents) == len(values)):
        raise ValueError("ids, names, parents and values must have the same length")
    if kind not in ("sunburst", "treemap"):
        raise ValueError(f"kind must be 'sunburst' or 'treemap', got {kind!r}")
    group_names = dict(group_names or {})
    vals = [float(v) if v is not None and np.isfinite(v) else 0.0 for v in values]
    groups = sorted({str(p) for p in parents if isinstance(p, str) and p})
    root = "all topics"
    node_ids = [root] + groups + ids
    labels = [root] + [f"{g} {safe_text(group_names.get(g, ''), 30)}".strip() for g in groups] + [
        f"{i} {safe_text(n, 30)}".strip() for i, n in zip(ids, names)]
    node_parents = [""] + [root] * len(groups) + [str(p) if isinstance(p, str) and p else root for p in parents]
    group_vals = {g: 0.0 for g in groups}
    for p, v in zip(parents, vals):
        if isinstance(p, str) and p:
            group_vals[str(p)] += v
    node_vals = [sum(vals)] + [group_vals[g] for g in groups] + vals
    widths = [0.5] * (1 + len(groups)) + [4.0 if i == highlight else 0.5 for i in ids]
    colors = ["#ffffff"] + [cluster_color(j) for j in range(len(groups))] + [
        "#d62728" if i == highlight else "rgba(0,0,0,0)" for i in ids]
    trace_cls = go.Sunburst if kind == "sunburst" else go.Treemap
    trace = trace_cls(ids=node_ids, labels=labels, parents=node_parents, values=node_vals, branchvalues="total",
                      marker=dict(line=dict(width=widths, color=colors)),
                      hovertemplate="%{label}<br>%{value:,.0f}<extra></extra>")
    fig = go.Figure(trace)
    fig.update_layout(title=title, margin=dict(l=5, r=5, t=40 if title else 5, b=5))
    return fig


def gis_by_topic_chart(ids, names, mean_gis, n_docs, title: str = "") -> go.Figure:
    """Horizontal bars of mean member GIS per topic (highest first), hover with size and name."""
    ids = [str(i) for i in ids]
    g = np.asarray(mean_gis, dtype=np.float64)
    if not (len(ids) == len(names) == len(g) == len(n_docs)):
        raise ValueError("ids, names, mean_gis and n_docs must have the same length")
    order = np.argsort(-np.where(np.isfinite(g), g, -np.inf), kind="stable")
    fig = go.Figure(go.Bar(
        y=[ids[j] for j in order], x=g[order], orientation="h", marker_color="#1f77b4",
        customdata=np.array([[safe_text(names[j], 40), int(n_docs[j])] for j in order], dtype=object),
        hovertemplate="%{y} %{customdata[0]}<br>mean GIS %{x:.2f}<br>%{customdata[1]} docs<extra></extra>"))
    fig.update_layout(title=title, yaxis=dict(autorange="reversed", type="category"), xaxis=dict(title="mean GIS"),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10), height=max(250, 18 * len(ids) + 60))
    return fig


# ---------------------------------------------------------------------------- student
def confusion_heatmap(confusion, labels, names: dict | None = None, normalize: bool = True, title: str = "") -> go.Figure:
    """Teacher (rows) x student (columns) confusion; ``normalize`` shows each row as shares of the
    teacher topic, so small topics are as visible as big ones. Topic names are untrusted text."""
    C = np.asarray(confusion, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] != len(labels):
        raise ValueError(f"confusion must be square with one row per label, got {C.shape} for {len(labels)} labels")
    # numeric ids in numeric order (reports sort them as strings: "0", "1", "10", ..., "2")
    order = sorted(range(len(labels)), key=lambda i: (0, int(labels[i]), "") if str(labels[i]).isdigit()
                   else (1, 0, str(labels[i])))
    C, labels = C[np.ix_(order, order)], [labels[i] for i in order]
    names = names or {}
    ticks = [safe_text(f"{lab} {names.get(lab, '')}".strip(), 40) for lab in labels]
    Z = C / np.maximum(C.sum(axis=1, keepdims=True), 1) if normalize else C
    fig = go.Figure(go.Heatmap(
        z=Z, x=ticks, y=ticks, colorscale="Blues", zmin=0, zmax=1 if normalize else None, customdata=C,
        hovertemplate="teacher %{y}<br>student %{x}<br>%{customdata:.0f} docs (%{z:.1%} of the row)<extra></extra>",
        colorbar=dict(title="share" if normalize else "docs")))
    # category axes: topic ids like "0", "10", "2" would otherwise be read as numbers and the cells
    # placed at those (unsorted) positions, garbling the matrix
    fig.update_layout(title=title or "Student vs teacher (rows: teacher topic)", xaxis_title="student",
                      yaxis_title="teacher", xaxis_type="category", yaxis_type="category",
                      yaxis_autorange="reversed", height=max(400, 18 * len(labels) + 150))
    return fig


def agreement_by_confidence_chart(bins, overall: float | None = None, title: str = "") -> go.Figure:
    """Student agreement with the teacher per student-confidence bin (``evaluate``'s
    ``agreement_by_confidence``): bars = share of documents in the bin, markers = agreement there,
    so a curator sees which threshold keeps how many documents at what agreement."""
    bins = [b for b in bins if b["n"] > 0]
    names = [f"{b['low']:.2f}-{b['high']:.2f}" for b in bins]
    fig = go.Figure([
        go.Bar(x=names, y=[b["share"] for b in bins], name="share of documents", marker_color=PALETTE[0],
               customdata=[b["n"] for b in bins],
               hovertemplate="confidence %{x}<br>%{customdata} documents (%{y:.1%})<extra></extra>"),
        go.Scatter(x=names, y=[b["agreement"] for b in bins], name="agreement with teacher", mode="lines+markers",
                   marker=dict(size=10, color=PALETTE[1]), line=dict(color=PALETTE[1]),
                   hovertemplate="confidence %{x}<br>agreement %{y:.1%}<extra></extra>"),
    ])
    if overall is not None:
        fig.add_hline(y=overall, line_dash="dot", line_color="#666666",
                      annotation_text=f"overall {overall:.1%}", annotation_position="bottom right")
    fig.update_layout(title=title or "Agreement by student confidence", xaxis_title="student confidence",
                      xaxis_type="category", yaxis=dict(range=[0, 1.02], tickformat=".0%"), height=360,
                      legend=dict(orientation="h", y=-0.25))
    return fig


# ---------------------------------------------------------------------------- collapse views
def highlight_map(coords: np.ndarray, labels: np.ndarray, ids, highlight, texts=None, extra: dict | None = None,
                  title: str = "", highlight_name: str = "injected", colors: dict | None = None,
                  names: dict | None = None) -> go.Figure:
    """``cluster_map`` with a set of documents (``highlight``: a boolean mask) drawn on top as
    black open rings (one extra trace named ``highlight_name``, its customdata the same columns), so
    where an injected set went is visible on any cluster colouring. ``colors``: cluster -> colour
    (e.g. ``matched_colors``), default ``cluster_color``."""
    highlight = np.asarray(highlight, dtype=bool)
    coords, labels = _points(coords, labels, ids, 2, "coords")
    if highlight.shape != labels.shape:
        raise ValueError(f"highlight mask ({highlight.shape}) and labels ({labels.shape}) differ in length")
    fig = cluster_map(coords, labels, ids, texts=texts, extra=extra, title=title, names=names)
    if colors:
        recolor(fig, colors)
    if highlight.any():
        shown = labels if not names else np.array([safe_text(names.get(int(k), k), 40) for k in labels], dtype=object)
        custom, template = _hover(ids, texts, shown, extra, "topic" if names else "cluster")
        Trace = go.Scattergl if len(coords) > SVG_MAX_POINTS else go.Scatter
        fig.add_trace(Trace(x=coords[highlight, 0], y=coords[highlight, 1], mode="markers",
                            name=safe_text(highlight_name, 40),
                            marker=dict(size=7, symbol="circle-open", color="#111111", line=dict(width=1.2)),
                            customdata=custom[highlight], hovertemplate=template))
    return fig


def recolor(fig: go.Figure, colors: dict) -> go.Figure:
    """Recolour a cluster map's per-cluster traces (``meta`` = cluster index, or named by it) with
    ``colors`` ({cluster: colour}); other traces are left alone. Returns the figure."""
    for trace in fig.data:
        k = trace.meta if isinstance(trace.meta, int) else None
        if k is None:
            try:
                k = int(trace.name)
            except (TypeError, ValueError):
                continue
        if k in colors:
            trace.marker.color = colors[k]
    return fig


def matched_colors(labels_ref, labels_other, n_ref: int, n_other: int) -> dict[int, str]:
    """Colours for ``labels_other``'s clusters that follow ``labels_ref``'s (``cluster_color``):
    Hungarian matching on the documents the two partitions share (maximum overlap), so the same
    region has the same colour on both maps. Unmatched clusters (n_other > n_ref) get colours no
    reference cluster uses."""
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(labels_ref, dtype=np.int64)
    b = np.asarray(labels_other, dtype=np.int64)
    C = np.bincount(b * n_ref + a, minlength=n_other * n_ref).reshape(n_other, n_ref)
    rows, cols = linear_sum_assignment(-C)
    out = {int(r): cluster_color(int(c)) for r, c in zip(rows, cols)}
    spare = iter(range(n_ref, n_ref + n_other))
    for r in range(n_other):
        if r not in out:
            out[r] = cluster_color(next(spare))
    return out


def injection_bars(labels, injected, n_clusters: int, title: str = "", colors: dict | None = None) -> go.Figure:
    """Per cluster (most injected first): injected documents stacked on the corpus documents, so a
    cluster the injected set dominates stands out; the y axis counts documents."""
    labels = np.asarray(labels, dtype=np.int64)
    injected = np.asarray(injected, dtype=bool)
    if labels.shape != injected.shape:
        raise ValueError("labels and injected mask differ in length")
    inj = np.bincount(labels[injected], minlength=n_clusters)
    rest = np.bincount(labels[~injected], minlength=n_clusters)
    order = np.lexsort((-rest, -inj))
    x = [str(i) for i in order]
    fig = go.Figure([
        go.Bar(x=x, y=rest[order], name="corpus", marker_color="#c7ccd1",
               hovertemplate="cluster %{x}<br>%{y} corpus documents<extra></extra>"),
        go.Bar(x=x, y=inj[order], name="injected", marker_color=[(colors or {}).get(int(i), "#111111") for i in order],
               marker_line=dict(color="#111111", width=1),
               hovertemplate="cluster %{x}<br>%{y} injected documents<extra></extra>"),
    ])
    fig.update_layout(title=title, barmode="stack", xaxis=dict(title="cluster (most injected first)", type="category"),
                      yaxis=dict(title="documents"), legend=dict(orientation="h", y=1.1),
                      margin=dict(l=10, r=10, t=40 if title else 30, b=10), height=300)
    return fig


SWEEP_METRICS = {"normalized_entropy": ("normalised entropy", "#1f77b4"), "stability": ("stability (ARI between seeds)", "#2ca02c"),
                 "largest_share": ("largest share", "#9467bd")}


def sweep_chart(rows: list[dict], references: list[dict] | None = None, title: str = "",
                mark: tuple[float, ...] = (5000.0,)) -> go.Figure:
    """The lambda trade-off: balance (normalised entropy, largest share), meaning (NMI per label
    column: every ``nmi_<col>`` key) and stability (mean ARI between seeds) for each swept lambda
    (``gem.sweep.lambda_sweep`` rows; the "auto" row placed at the lambda it used and marked with a
    star), k-means reference rows as dotted horizontal lines in the metric's colour, and the
    paper's lambda (``mark``) as a vertical line. x is the lambda on a symlog-like axis: log10(1 + lambda)."""
    if not rows:
        raise ValueError("no sweep rows to plot")
    nmi_cols = sorted({c for r in rows for c in r if c.startswith("nmi_")})
    palette = ["#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    metrics = dict(SWEEP_METRICS)
    for j, c in enumerate(nmi_cols):
        metrics[c] = (f"NMI to {safe_text(c[4:], 30)}", palette[j % len(palette)])
    fixed = sorted((r for r in rows if r.get("balance") != "auto"), key=lambda r: float(r["lambda"]))
    auto = [r for r in rows if r.get("balance") == "auto"]
    xs = [math.log10(1.0 + float(r["lambda"])) for r in fixed]
    fig = go.Figure()
    for key, (name, color) in metrics.items():
        ys = [r.get(key) for r in fixed]
        if all(y is None or not np.isfinite(y) for y in ys):
            continue
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, line=dict(color=color),
                                 customdata=[[f"{float(r['lambda']):g}"] for r in fixed],
                                 hovertemplate=f"λ = %{{customdata[0]}}<br>{name} %{{y:.3f}}<extra></extra>"))
        for r in auto:
            if r.get(key) is not None and np.isfinite(r[key]):
                fig.add_trace(go.Scatter(x=[math.log10(1.0 + float(r["lambda"]))], y=[r[key]], mode="markers",
                                         marker=dict(symbol="star", size=14, color=color, line=dict(color="#111", width=1)),
                                         name=f"auto (λ = {float(r['lambda']):.0f})", showlegend=key == "normalized_entropy",
                                         hovertemplate=f"auto λ = {float(r['lambda']):.0f}<br>{name} %{{y:.3f}}<extra></extra>"))
        for ref, dash in zip(references or [], ("dot", "dash", "dashdot")):
            if ref.get(key) is not None and np.isfinite(ref[key]):
                fig.add_hline(y=float(ref[key]), line_dash=dash, line_color=color, line_width=1, opacity=0.8)
    for ref, dash in zip(references or [], ("dot", "dash", "dashdot")):  # legend entries for the reference lines
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="#555", dash=dash),
                                 name=f"{safe_text(ref.get('method', 'reference'), 40)} (lines)"))
    for lam in mark:
        fig.add_vline(x=math.log10(1.0 + lam), line_dash="dash", line_color="#777",
                      annotation_text=f"paper λ = {lam:g}", annotation_position="bottom right")
    ticks = [float(r["lambda"]) for r in fixed]
    fig.update_layout(title=title or "Balance vs meaning vs stability across λ",
                      xaxis=dict(title="λ (balance strength)", tickmode="array",
                                 tickvals=[math.log10(1.0 + t) for t in ticks], ticktext=[f"{t:g}" for t in ticks]),
                      yaxis=dict(title="score", range=[0, 1.02]), legend=dict(orientation="h", y=-0.25),
                      margin=dict(l=10, r=10, t=40, b=10), height=460)
    return fig


def crosstab_heatmap(labels_rows, labels_cols, row_names=None, col_names=None, title: str = "",
                     row_title: str = "GEM cluster", col_title: str = "baseline cluster") -> go.Figure:
    """Documents in (row cluster, column cluster), each row shown as shares of the row's documents
    (hover: counts), rows and columns sorted by size: which big column cluster the row method splits,
    where each label goes. Names are untrusted text (escaped)."""
    a = np.asarray(labels_rows)
    b = np.asarray(labels_cols)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("the two labelings must be 1-D of one length")
    ra, ia = np.unique(a.astype(str), return_inverse=True)
    rb, ib = np.unique(b.astype(str), return_inverse=True)
    C = np.bincount(ia * len(rb) + ib, minlength=len(ra) * len(rb)).reshape(len(ra), len(rb)).astype(np.float64)
    ro = np.argsort(-C.sum(1), kind="stable")
    co = np.argsort(-C.sum(0), kind="stable")
    C = C[np.ix_(ro, co)]
    rn = [safe_text((row_names or {}).get(v, v), 40) for v in ra[ro]]
    cn = [safe_text((col_names or {}).get(v, v), 40) for v in rb[co]]
    Z = C / np.maximum(C.sum(axis=1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=Z, x=cn, y=rn, customdata=C, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate=f"{row_title} %{{y}}<br>{col_title} %{{x}}<br>%{{customdata:.0f}} docs "
                                             "(%{z:.1%} of the row)<extra></extra>", colorbar=dict(title="share of row")))
    fig.update_layout(title=title, xaxis=dict(title=col_title, type="category"),
                      yaxis=dict(title=row_title, type="category", autorange="reversed"),
                      height=max(380, 16 * len(rn) + 160), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig
