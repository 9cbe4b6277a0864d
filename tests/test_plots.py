"""gem.plots: each builder returns the expected traces, ids travel in customdata, and untrusted
text is escaped before it reaches plotly (which renders a subset of HTML in hover labels)."""
import numpy as np
import plotly.graph_objects as go
import pytest
from scipy import integrate

from gem import plots

HOSTILE = ['<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=1">', 'a & b "quoted"']


def _blobs(n=120, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    coords = rng.normal(size=(n, 2)) + 5 * labels[:, None]
    ids = np.array([f"doc-{i}" for i in range(n)])
    return coords, labels, ids


@pytest.mark.parametrize("dim", [3, 8, 384])
def test_uniform_sphere_density_integrates_to_one_and_matches_sampling(dim):
    total, _ = integrate.quad(lambda t: plots.uniform_sphere_cosine_density(np.array([t]), dim)[0], -1, 1,
                              limit=200, points=[0.0])
    assert abs(total - 1) < 1e-6
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, dim)); a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = rng.normal(size=(20000, dim)); b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", a, b)
    # variance of the cosine on S^{d-1} is 1/d; the density must reproduce it
    var, _ = integrate.quad(lambda t: t * t * plots.uniform_sphere_cosine_density(np.array([t]), dim)[0], -1, 1,
                            limit=200, points=[0.0])
    assert abs(var - 1 / dim) < 1e-6
    assert abs(cos.var() - 1 / dim) < 0.1 / dim


def test_cosine_histogram_has_corpus_and_reference():
    cos = np.random.default_rng(0).uniform(0.3, 0.7, 5000)
    fig = plots.cosine_histogram(cos, dim=384)
    assert isinstance(fig, go.Figure)
    kinds = [type(t).__name__ for t in fig.data]
    assert kinds == ["Bar", "Scatter"]
    bar, ref = fig.data
    widths = np.asarray(bar.width)
    assert abs(np.sum(np.asarray(bar.y) * widths) - 1) < 1e-6  # a density
    assert ref.name == "uniform on the sphere S³⁸³ (d = 384)"  # readable, not a literal "S^383"
    # the marker line shows the exact mean when given (the sample's mean otherwise)
    marked = plots.cosine_histogram(cos, dim=384, mean=0.4321)
    assert marked.layout.shapes[0].x0 == 0.4321 and marked.layout.annotations[0].text == "mean 0.432"
    with pytest.raises(ValueError):
        plots.cosine_histogram(np.array([]), dim=3)


def test_cluster_map_one_trace_per_cluster_with_ids_in_customdata():
    coords, labels, ids = _blobs()
    fig = plots.cluster_map(coords, labels, ids, texts=[f"text {i}" for i in range(len(ids))],
                            extra={"source": ["s"] * len(ids)})
    assert len(fig.data) == len(np.unique(labels))
    seen = []
    for trace in fig.data:
        k = int(trace.name)
        cd = np.asarray(trace.customdata)
        assert set(cd[:, 2].astype(int)) == {k}
        seen.extend(cd[:, 0])
        # the coordinates of each point are those of the id it carries
        idx = np.array([int(s.split("-")[1]) for s in cd[:, 0]])
        np.testing.assert_allclose(np.asarray(trace.x), coords[idx, 0])
        assert "%{customdata[1]}" in trace.hovertemplate  # the escaped id
    assert sorted(seen) == sorted(ids)
    assert fig.layout.dragmode == "select"


def test_cluster_map_names_clusters_by_topic_id_and_recolours_by_cluster():
    coords, labels, ids = _blobs()
    ks = [int(k) for k in np.unique(labels)]
    names = {k: f"T{k + 1:03d}" for k in ks}
    names[ks[0]] = "<b>T1</b>"  # a label is untrusted text: escaped in the legend and hover
    fig = plots.cluster_map(coords, labels, ids, names=names)
    assert [t.meta for t in fig.data] == ks
    assert fig.data[0].name == "&lt;b&gt;T1&lt;/b&gt;" and fig.data[1].name == names[ks[1]]
    assert set(np.asarray(fig.data[1].customdata)[:, 2]) == {names[ks[1]]}
    assert "· topic %{customdata[2]}" in fig.data[0].hovertemplate and fig.layout.legend.title.text == "topic"
    plots.recolor(fig, {ks[1]: "#123456"})  # by the trace's cluster (meta), not its shown name
    assert fig.data[1].marker.color == "#123456"
    ringed = plots.highlight_map(coords, labels, ids, labels == ks[0], names=names)
    assert ringed.data[-1].meta is None and ringed.data[1].name == names[ks[1]]


def test_cluster_map_switches_to_webgl_for_large_maps():
    coords, labels, ids = _blobs(n=plots.SVG_MAX_POINTS + 1)
    assert all(isinstance(t, go.Scattergl) for t in plots.cluster_map(coords, labels, ids).data)
    coords, labels, ids = _blobs(n=50)
    assert all(isinstance(t, go.Scatter) for t in plots.cluster_map(coords, labels, ids).data)


def _displayed_strings(fig):
    """Every string plotly may render: titles, names, texts, hover templates and the customdata
    columns that a hover template references (column 0, the raw id, is data, never shown)."""
    import re

    out = []
    for trace in fig.data:
        for attr in ("name", "text", "hovertext", "hovertemplate"):
            out.extend(_strings(getattr(trace, attr, None)))
        if trace.customdata is not None:
            cd = np.asarray(trace.customdata)
            for j in {int(m) for m in re.findall(r"customdata\[(\d+)\]", trace.hovertemplate or "")}:
                out.extend(cd[:, j].astype(str))
    out.extend(_strings(fig.layout.to_plotly_json()))
    return out


def test_hover_text_is_escaped_never_html():
    n = len(HOSTILE)
    coords, labels, ids = np.arange(2 * n, dtype=float).reshape(n, 2), np.zeros(n, int), np.array(HOSTILE)
    for fig in (plots.cluster_map(coords, labels, ids, texts=HOSTILE, extra={"<b>src</b>": HOSTILE}),
                plots.sphere_map(np.tile([0.0, 0.0, 1.0], (n, 1)), labels, ids, texts=HOSTILE)):
        shown = _displayed_strings(fig)
        assert any("&lt;script&gt;" in s for s in shown)
        assert any("&lt;img src=x onerror=&quot;" in s for s in shown)
        for bad in ("<script", "<img", "<b>src", 'onerror="'):
            assert not any(bad in s for s in shown), bad
        # selections still report the exact raw id
        trace = [t for t in fig.data if t.customdata is not None][0]
        assert list(np.asarray(trace.customdata)[:, 0]) == HOSTILE


def _strings(obj):
    """Every string inside a figure's JSON-able dict (plotly's to_json escapes '<' as \\u003c,
    which would hide raw HTML from a substring test)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for v in obj:
            yield from _strings(v)


def test_safe_text_truncates_and_flattens():
    s = plots.safe_text("line one\nline two " + "x" * 500, max_chars=40)
    assert "\n" not in s and len(s) <= 40 and s.endswith("…")


def test_sphere_map_points_on_unit_sphere_plus_surface():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(60, 3)); xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    labels = rng.integers(0, 3, 60)
    fig = plots.sphere_map(xyz, labels, [f"d{i}" for i in range(60)])
    assert isinstance(fig.data[0], go.Surface)
    points = [t for t in fig.data if isinstance(t, go.Scatter3d)]
    assert len(points) == 3 and sum(len(t.x) for t in points) == 60
    with pytest.raises(ValueError):
        plots.sphere_map(xyz[:, :2], labels, [f"d{i}" for i in range(60)])


def test_cluster_sizes_sorted_shares_with_uniform_line():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 30 + [3] * 10)
    fig = plots.cluster_sizes(labels, n_clusters=5)
    bar = fig.data[0]
    assert list(bar.x) == ["0", "2", "1", "3", "4"]  # sorted by size, empty cluster 4 shown last
    np.testing.assert_allclose(bar.y, [0.5, 0.3, 0.1, 0.1, 0.0])
    assert any(abs(s.y0 - 0.2) < 1e-12 for s in fig.layout.shapes)
    masses = plots.cluster_sizes(np.array([2.0, 1.0, 1.0]), masses=True)
    np.testing.assert_allclose(masses.data[0].y, [0.5, 0.25, 0.25])
    with pytest.raises(ValueError):
        plots.cluster_sizes(np.zeros(3), masses=True)


# ---------------------------------------------------------------------------- colours and ranges
def _lab(hexes) -> np.ndarray:
    """sRGB hex colours -> CIELAB (D65)."""
    rgb = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hexes]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _delta_e2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu and Dalal 2005), broadcasting over leading axes."""
    (L1, a1, b1), (L2, a2, b2) = np.moveaxis(lab1, -1, 0), np.moveaxis(lab2, -1, 0)
    cbar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(cbar ** 7 / (cbar ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dh = h2 - h1
    dh = np.where(c1 * c2 == 0, 0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))
    dH = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh / 2))
    hsum = h1 + h2
    hbar = np.where(c1 * c2 == 0, hsum, np.where(np.abs(h1 - h2) > 180,
                                                 np.where(hsum < 360, hsum + 360, hsum - 360), hsum) / 2)
    t = (1 - 0.17 * np.cos(np.radians(hbar - 30)) + 0.24 * np.cos(np.radians(2 * hbar))
         + 0.32 * np.cos(np.radians(3 * hbar + 6)) - 0.20 * np.cos(np.radians(4 * hbar - 63)))
    lbar, cbarp = (L1 + L2) / 2, (c1 + c2) / 2
    sl = 1 + 0.015 * (lbar - 50) ** 2 / np.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbarp, 1 + 0.015 * cbarp * t
    rt = -2 * np.sqrt(cbarp ** 7 / (cbarp ** 7 + 25.0 ** 7)) * np.sin(np.radians(60 * np.exp(-((hbar - 275) / 25) ** 2)))
    dl, dc = L2 - L1, c2 - c1
    return np.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dH / sh) ** 2 + rt * (dc / sc) * (dH / sh))


def test_delta_e2000_matches_the_published_test_pairs():
    # Sharma, Wu, Dalal (2005), table 1, pairs 1 and 7
    lab1 = np.array([[50.0, 2.6772, -79.7751], [50.0, 0.0, 0.0]])
    lab2 = np.array([[50.0, 0.0, -82.7485], [50.0, -1.0, 2.0]])
    np.testing.assert_allclose(_delta_e2000(lab1, lab2), [2.0425, 2.3669], atol=1e-4)


def test_palette_has_24_clearly_distinct_colours_visible_on_white():
    colours = [plots.cluster_color(k) for k in range(24)]
    lab = _lab(colours)
    d = _delta_e2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    # ~10 is "clearly different at a glance" for small markers; plotly's Dark24 has a pair at 7.2
    assert d.min() >= 15, (d.min(), np.unravel_index(d.argmin(), d.shape))
    assert _delta_e2000(lab, _lab(["#FFFFFF"])).min() >= 20  # no near-white marker on the white plot
    assert _delta_e2000(_lab(plots.qualitative.Dark24)[:, None], _lab(plots.qualitative.Dark24)[None])[4, 11] < 10


def test_robust_range_frames_the_bulk_and_ignores_far_outliers():
    rng = np.random.default_rng(0)
    bulk = rng.normal(size=2000)
    lo, hi = plots.robust_range(np.r_[bulk, 1000.0, -500.0])
    assert -10 < lo < bulk.min() and bulk.max() < hi < 10  # every bulk point in view, the outliers not
    lo, hi = plots.robust_range(bulk)  # no far outlier: the full extent plus a margin
    assert lo < bulk.min() and hi > bulk.max() and hi - lo < 1.2 * np.ptp(bulk)
    assert plots.robust_range(np.full(5, 3.0))[0] < 3.0 < plots.robust_range(np.full(5, 3.0))[1]
    assert plots.robust_range(np.array([np.nan])) is None


def test_cluster_map_view_ignores_a_far_outlier_but_keeps_it_selectable():
    coords, labels, ids = _blobs(n=400)
    coords[0] = [1e4, -1e4]
    fig = plots.cluster_map(coords, labels, ids)
    x0, x1 = fig.layout.xaxis.range
    y0, y1 = fig.layout.yaxis.range
    bulk = coords[1:]
    assert x0 <= bulk[:, 0].min() and x1 >= bulk[:, 0].max() and x1 < 100
    assert y1 >= bulk[:, 1].max() and y0 > -100
    assert any("doc-0" in np.asarray(t.customdata)[:, 0] for t in fig.data)  # still plotted (zoom out to see it)
    assert fig.layout.yaxis.scaleanchor is None  # a locked aspect ratio would widen the view back to it


def test_mixture_charts_show_domain_labels_keyed_by_id():
    ids, labels = ["T001", "T002", "G001"], ["Space <b>x</b>", "Space <b>x</b>", "Group"]
    for fig in (plots.mixture_weights_chart(ids, labels, [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]),
                plots.implied_epochs_chart(ids, labels, [1.0, 2.0, 3.0], max_epochs=2.5)):
        assert list(fig.data[0].x) == ids  # unique keys, even when two domains share a name
        assert list(fig.layout.xaxis.tickvals) == ids
        assert list(fig.layout.xaxis.ticktext) == ["Space &lt;b&gt;x&lt;/b&gt;"] * 2 + ["Group"]


def test_agreement_by_confidence_chart_skips_empty_bins_and_marks_overall():
    bins = [{"low": 0.0, "high": 0.5, "n": 10, "share": 0.1, "agreement": 0.4},
            {"low": 0.5, "high": 0.9, "n": 0, "share": 0.0, "agreement": None},
            {"low": 0.9, "high": 1.0, "n": 90, "share": 0.9, "agreement": 0.95}]
    fig = plots.agreement_by_confidence_chart(bins, overall=0.895)
    bars, line = fig.data
    assert list(bars.x) == ["0.00-0.50", "0.90-1.00"] and list(bars.y) == [0.1, 0.9]
    assert list(bars.customdata) == [10, 90] and list(line.y) == [0.4, 0.95]
    assert any("89.5%" in a.text for a in fig.layout.annotations)


# ---------------------------------------------------------------------------- collapse views
def test_highlight_map_rings_the_marked_points_and_escapes_text():
    import numpy as np

    from gem.plots import highlight_map

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(30, 2))
    labels = np.repeat([0, 1, 2], 10)
    ids = [f"d{i}" for i in range(30)]
    mask = np.zeros(30, bool)
    mask[[1, 11, 12]] = True
    texts = ["<b>x</b>"] * 30
    fig = highlight_map(coords, labels, ids, mask, texts=texts, highlight_name="<i>injected</i>")
    ring = fig.data[-1]
    assert ring.name == "&lt;i&gt;injected&lt;/i&gt;"
    assert [c[0] for c in ring.customdata] == ["d1", "d11", "d12"]
    assert ring.marker.symbol == "circle-open"
    assert all("<b>" not in str(c[3]) for c in ring.customdata)
    assert len(fig.data) == 4  # one trace per cluster + the rings
    assert len(highlight_map(coords, labels, ids, np.zeros(30, bool)).data) == 3


def test_matched_colors_follow_the_reference_partition():
    import numpy as np

    from gem.plots import cluster_color, matched_colors

    ref = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    other = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1])  # the same partition, renumbered
    colors = matched_colors(ref, other, 3, 3)
    assert colors == {2: cluster_color(0), 0: cluster_color(1), 1: cluster_color(2)}
    # more clusters on the other side: the unmatched one gets a colour no reference cluster has
    other4 = np.array([2, 2, 3, 0, 0, 0, 1, 1, 1])
    c4 = matched_colors(ref, other4, 3, 4)
    assert c4[2] == cluster_color(0) and c4[3] not in {cluster_color(i) for i in range(3)}


def test_recolor_and_injection_bars():
    import numpy as np

    from gem.plots import cluster_map, injection_bars, recolor

    labels = np.array([0, 0, 1, 1, 2])
    fig = recolor(cluster_map(np.zeros((5, 2)), labels, list("abcde")), {1: "#123456"})
    assert [t.marker.color for t in fig.data if t.name == "1"] == ["#123456"]
    bars = injection_bars(labels, np.array([1, 0, 1, 1, 0], bool), 3)
    corpus, inj = bars.data
    assert list(inj.x) == ["1", "0", "2"] and list(inj.y) == [2, 1, 0] and list(corpus.y) == [0, 1, 1]


def test_sweep_chart_marks_auto_references_and_the_paper():
    from gem.plots import sweep_chart

    rows = [{"method": "GEM (auto)", "balance": "auto", "lambda": 170.0, "normalized_entropy": 0.98,
             "largest_share": 0.06, "stability": 0.7, "nmi_category": 0.51},
            {"method": "GEM (λ = 0)", "balance": 0.0, "lambda": 0.0, "normalized_entropy": 0.95,
             "largest_share": 0.1, "stability": 0.6, "nmi_category": 0.52},
            {"method": "GEM (λ = 5000)", "balance": 5000.0, "lambda": 5000.0, "normalized_entropy": 1.0,
             "largest_share": 0.044, "stability": 0.8, "nmi_category": 0.5}]
    refs = [{"method": "k-means (raw vectors)", "normalized_entropy": 0.93, "stability": 0.5, "nmi_category": 0.51}]
    fig = sweep_chart(rows, refs)
    names = [t.name for t in fig.data]
    assert "normalised entropy" in names and "NMI to category" in names and "auto (λ = 170)" in names
    assert "k-means (raw vectors) (lines)" in names
    vlines = [s for s in fig.layout.shapes if s.x0 == s.x1]
    hlines = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert len(vlines) == 1 and len(hlines) == 3  # the paper's lambda; one k-means line per metric it has
    assert list(fig.layout.xaxis.ticktext) == ["0", "5000"]


def test_crosstab_heatmap_rows_are_shares_and_counts_total():
    import numpy as np

    from gem.plots import crosstab_heatmap

    a = np.array([0, 0, 0, 1, 1, 2])
    b = np.array(["x", "x", "y", "y", "y", "<z>"])
    fig = crosstab_heatmap(a, b, col_title="label")
    h = fig.data[0]
    Z = np.asarray(h.z)
    assert np.allclose(Z.sum(axis=1), 1.0)
    assert np.asarray(h.customdata).sum() == 6
    assert list(h.y) == ["0", "1", "2"] and "&lt;z&gt;" in list(h.x)
