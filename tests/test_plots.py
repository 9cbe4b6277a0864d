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
    assert "S^383" in ref.name
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
