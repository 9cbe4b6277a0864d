"""Clusters: GEM next to a baseline on the same UMAP layout; select points to read documents."""
import numpy as np
import pandas as pd
import streamlit as st

from gem.layout import DEFAULT_MAX_POINTS, get_layout
from gem.plots import cluster_map, cluster_sizes, sphere_map
from pages import common

st.title("Clusters on the hypersphere")
ws, reps = common.embedded_workspace()
frame = common.corpus(ws)
label_cols = common.label_columns(frame)

# ---------------------------------------------------------------------------- controls
# K, balance, seed and representation are the current fit's (sidebar): every page shows the same fit
baseline_name = st.selectbox("Baseline", list(common.BASELINES), index=0, key="cl_baseline",
                             help="Fitted with the current fit's K, seed and representation.")
method = common.BASELINES[baseline_name]


# ---------------------------------------------------------------------------- layout + fits
@st.cache_resource(max_entries=8, show_spinner=False)
def _layout(root: str, rep: str, kind: str, emb_mtime: float):
    return get_layout(common.Workspace(root), rep, kind)


@st.cache_data(max_entries=16, show_spinner=False)
def _layout_cached(root: str, rep: str, kind: str, emb_mtime: float) -> bool:
    return get_layout(common.Workspace(root), rep, kind, compute=False) is not None


settings = common.fit_settings(ws)
rep = settings.representation
emb_mtime = ws.embeddings_path(rep).stat().st_mtime_ns
with st.spinner("Computing the 2-D UMAP layout (once per corpus and representation, then cached on disk)…"):
    layout = _layout(str(ws.root), rep, "2d", emb_mtime)
try:
    with st.spinner("Fitting GEM…"):
        gem_run = common.current_fit(ws)
    with st.spinner(f"Fitting the baseline ({baseline_name})…"):
        base_run = common.baseline_fit(method, ws)
except ValueError as exc:
    st.error(common.plain(f"The fit could not be made: {exc}"))
    st.stop()
k = gem_run.n_clusters
st.caption(common.fit_caption(gem_run))
if layout.sampled:
    st.info(f"The maps show a stratified sample of {len(layout.ids):,} of {layout.n_total:,} documents "
            f"(at most {DEFAULT_MAX_POINTS:,}); sizes and metrics use every document.")

rows = pd.Index(frame["id"].astype(str)).get_indexer(layout.ids)
if (rows < 0).any():
    st.error("The cached layout does not match the corpus ids; delete the workspace's layouts/ folder.")
    st.stop()
texts = frame["text"].to_numpy()[rows]
extra = {c: frame[c].to_numpy()[rows] for c in label_cols}


def _panel(col, title: str, run, key: str):
    with col:
        st.subheader(title)
        fig = cluster_map(layout.coords, run.labels[rows], layout.ids, texts=texts, extra=extra)
        event = st.plotly_chart(fig, key=key, on_select="rerun", selection_mode=("box", "lasso"))
        sizes = cluster_sizes(run.labels, run.n_clusters, title="cluster sizes (sorted)")
        sizes.update_yaxes(range=[0, size_ymax])  # the same scale on both sides, so heights compare
        st.plotly_chart(sizes, key=f"{key}_sizes")
        from gem.metrics import agreement, balance_report

        rep_ = balance_report(run.labels, run.n_clusters)
        m1, m2, m3 = st.columns(3)
        m1.metric("normalised entropy", f"{rep_['normalized_entropy']:.3f}", help="1 = perfectly balanced")
        m2.metric("largest share", f"{rep_['largest_share']:.1%}", help=f"uniform: {1 / run.n_clusters:.1%}")
        m3.metric("effective clusters", f"{rep_['effective_clusters']:.1f} / {run.n_clusters}")
        if label_cols:
            agree = pd.DataFrame({c: agreement(run.labels, frame[c].to_numpy()) for c in label_cols}).T[["nmi", "ari"]]
            st.dataframe(agree.rename(columns={"nmi": "NMI", "ari": "ARI"}).style.format("{:.3f}"), width="stretch")
        return event


size_ymax = 1.1 * max(np.bincount(r.labels, minlength=r.n_clusters).max() / len(r.labels) for r in (gem_run, base_run))
left, right = st.columns(2)
ev_gem = _panel(left, "GEM", gem_run, "map_gem")
ev_base = _panel(right, f"Baseline: {baseline_name}", base_run, "map_base")

# ---------------------------------------------------------------------------- selection
def _selected_ids(event) -> list[str]:
    try:
        points = event.selection.points
    except AttributeError:
        return []
    return [str(p["customdata"][0]) for p in points if p.get("customdata")]


selected = list(dict.fromkeys(_selected_ids(ev_gem) + _selected_ids(ev_base)))
st.subheader("Selected documents")
if not selected:
    st.caption("Box- or lasso-select points on either map to read the documents behind them.")
else:
    sel_rows = pd.Index(frame["id"].astype(str)).get_indexer(selected)
    table = pd.DataFrame({"id": frame["id"].astype(str).to_numpy()[sel_rows],
                          "text": frame["text"].to_numpy()[sel_rows]})
    for c in label_cols:
        table[c] = frame[c].to_numpy()[sel_rows]
    table["GEM cluster"] = gem_run.labels[sel_rows]
    table["baseline cluster"] = base_run.labels[sel_rows]
    st.caption(f"{len(table):,} documents selected")
    # st.dataframe shows cell values as plain text (never HTML or markdown)
    st.dataframe(table, hide_index=True, width="stretch", key="selected_docs",
                 column_config={"text": st.column_config.TextColumn("text", width="large")})
    with st.expander("Selected ids (to copy)"):
        st.code("\n".join(table["id"]), language=None)

# ---------------------------------------------------------------------------- sphere view
with st.expander("Sphere view: the same clusters on S² (UMAP, haversine output metric)"):
    color_by = st.radio("Colour by", ["GEM", "baseline"], horizontal=True, key="cl_sphere_color")
    sphere_cached = _layout_cached(str(ws.root), rep, "sphere", emb_mtime)
    if st.toggle("Show the sphere", key="cl_sphere_on", value=sphere_cached,
                 help="Computed once per corpus and representation (shipped for the sample)."):
        with st.spinner("Computing the sphere layout…"):
            sphere = _layout(str(ws.root), rep, "sphere", emb_mtime)
        srows = pd.Index(frame["id"].astype(str)).get_indexer(sphere.ids)
        labels = (gem_run if color_by == "GEM" else base_run).labels[srows]
        st.plotly_chart(sphere_map(sphere.coords, labels, sphere.ids, texts=frame["text"].to_numpy()[srows]),
                        key="sphere_map")
