"""Clusters: GEM next to a baseline on the same UMAP layout; select points to read documents,
exclude or tag them (gem.flags); the Documents page's search results are ringed on the maps."""
import dataclasses

import numpy as np
import pandas as pd
import streamlit as st

from gem.layout import DEFAULT_MAX_POINTS, get_layout
from gem.metrics import agreement, balance_report, injection_report
from gem.plots import (cluster_map, cluster_sizes, crosstab_heatmap, highlight_map, injection_bars, matched_colors,
                       recolor, sphere_map, sweep_chart)
from gem.stress import injected_mask
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
        gem_run = common.current_fit(ws)  # matched to the taxonomy: the map names clusters by topic id
    with st.spinner(f"Fitting the baseline ({baseline_name})…"):
        base_run = common.baseline_fit(method, ws)
except ValueError as exc:
    st.error(common.plain(f"The fit could not be made: {exc}"))
    st.stop()
k = gem_run.n_clusters
common.show_fit(gem_run)
gem_topics = common.run_topics(gem_run.name, ws)
gem_names = None if gem_topics is None else {int(c): str(t) for c, t in zip(gem_topics["cluster"], gem_topics["id"])}
# a fit without excluded documents labels them -1: this page shows the documents both fits hold
present = (gem_run.labels >= 0) & (base_run.labels >= 0)
if not present.all():
    st.caption(f"{int((~present).sum()):,} excluded documents are not in these fits (sidebar: Fit without excluded "
               "documents); the maps, sizes and metrics leave them out.")
    frame = frame[present].reset_index(drop=True)
    gem_run = dataclasses.replace(gem_run, labels=gem_run.labels[present])
    base_run = dataclasses.replace(base_run, labels=base_run.labels[present])
if layout.sampled:
    st.info(f"The maps show a stratified sample of {len(layout.ids):,} of {layout.n_total:,} documents "
            f"(at most {DEFAULT_MAX_POINTS:,}); sizes and metrics use every document.")

rows = pd.Index(frame["id"].astype(str)).get_indexer(layout.ids)
if (rows < 0).any() and present.all():
    st.error("The cached layout does not match the corpus ids; delete the workspace's layouts/ folder.")
    st.stop()
on_map = rows >= 0  # the layout's points whose documents are in the fits
layout_coords, layout_ids, rows = layout.coords[on_map], np.asarray(layout.ids)[on_map], rows[on_map]
texts = frame["text"].to_numpy()[rows]
extra = {c: frame[c].to_numpy()[rows] for c in label_cols}


# ---------------------------------------------------------------------------- injected set (real synthetic data)
def _value_options(frame, cols, max_values: int = 200) -> list[tuple[str, str]]:
    out = []
    for c in cols:
        counts = frame[c].astype(str).value_counts()
        if 1 < len(counts) <= max_values:
            out += [(c, v) for v in counts.index]
    return out


set_options = _value_options(frame, label_cols)
marked = st.selectbox("Mark an existing column value as the injected set", [None] + set_options, key="cl_injected_set",
                      format_func=lambda o: "(none)" if o is None else f"{o[0]} = {o[1]}",
                      help="For synthetic data you brought (e.g. source = cosmopedia): its documents are ringed on "
                           "both maps, and each side says how much of them its two biggest holders absorb.")
marked_all = injected_mask(frame, *marked) if marked else None
highlight = common.kept_output(common.KEY_SEARCH_HIGHLIGHT, common.output_scope(ws))  # ids repeat across workspaces
found_all = None
if highlight and marked_all is None:
    found_all = frame["id"].astype(str).isin(highlight[1]).to_numpy()
    h1, h2 = st.columns([4, 1])
    h1.caption(common.plain(f"Ringed: the {int(found_all.sum())} results of the search \"{highlight[0]}\" "
                            "(Documents page) that are on these maps."))
    if h2.button("Clear the highlight", key="cl_clear_highlight"):
        common.drop_output(common.KEY_SEARCH_HIGHLIGHT)
        st.rerun()
match = st.toggle("Match the baseline's colours to GEM's", value=True, key="cl_match_colors",
                  help="Hungarian matching of clusters on the documents they share, so the same region has the same "
                       "colour on both maps (cluster ids are unchanged).")
base_colors = matched_colors(gem_run.labels, base_run.labels, k, base_run.n_clusters) if match else None


def _injection_metrics(labels, mask, n_clusters, prefix: str):
    rep_ = injection_report(labels, mask, n_clusters)
    a, b = st.columns(2)
    a.metric(f"{prefix}absorbed by the top 2 clusters", f"{rep_['top2_share']:.1%}",
             help=f"Share of the {rep_['n_injected']:,} marked documents in the two clusters holding most of them "
                  f"(spread like the corpus: about {2 / n_clusters:.0%}).")
    b.metric(f"{prefix}clusters dominated", f"{rep_['clusters_dominated']} / {n_clusters}",
             help="Clusters whose members are more than half marked documents.")
    return rep_


def _panel(col, title: str, run, key: str, colors=None, names=None):
    with col:
        st.subheader(title)
        if marked_all is not None or found_all is not None:
            mask, what = (marked_all, "marked set") if marked_all is not None else (found_all, "search results")
            fig = highlight_map(layout_coords, run.labels[rows], layout_ids, mask[rows], texts=texts, extra=extra,
                                highlight_name=what, colors=colors, names=names)
        else:
            fig = cluster_map(layout_coords, run.labels[rows], layout_ids, texts=texts, extra=extra, names=names)
            if colors:
                recolor(fig, colors)
        # the chart's key changes with the workspace and the run (a new fit, another workspace): a new
        # map starts with nothing selected. The container keeps the stable key (CSS class st-key-<key>)
        with st.container(key=key):
            event = st.plotly_chart(fig, key=common.selection_key(key, str(ws.root), run.name,
                                                                  common.params_mtime(ws, run.name)),
                                    on_select="rerun", selection_mode=("box", "lasso"))
        sizes = cluster_sizes(run.labels, run.n_clusters, title="cluster sizes (sorted)")
        if colors:
            sizes.update_traces(marker_color=[colors.get(int(x), "#888") for x in sizes.data[0].x])
        sizes.update_yaxes(range=[0, size_ymax])  # the same scale on both sides, so heights compare
        st.plotly_chart(sizes, key=f"{key}_sizes")
        rep_ = balance_report(run.labels, run.n_clusters)
        m1, m2, m3 = st.columns(3)
        m1.metric("normalised entropy", f"{rep_['normalized_entropy']:.3f}", help="1 = perfectly balanced")
        m2.metric("largest share", f"{rep_['largest_share']:.1%}", help=f"uniform: {1 / run.n_clusters:.1%}")
        m3.metric("effective clusters", f"{rep_['effective_clusters']:.1f} / {run.n_clusters}")
        if marked_all is not None:
            _injection_metrics(run.labels, marked_all, run.n_clusters, "marked set: ")
        if label_cols:
            agree = pd.DataFrame({c: agreement(run.labels, frame[c].to_numpy()) for c in label_cols}).T[["nmi", "ari"]]
            st.dataframe(agree.rename(columns={"nmi": "NMI", "ari": "ARI"}).style.format("{:.3f}"), width="stretch")
        return event


size_ymax = 1.1 * max(np.bincount(r.labels, minlength=r.n_clusters).max() / len(r.labels) for r in (gem_run, base_run))
left, right = st.columns(2)
ev_gem = _panel(left, "GEM", gem_run, "map_gem", names=gem_names)
ev_base = _panel(right, f"Baseline: {baseline_name}", base_run, "map_base", base_colors)

# ---------------------------------------------------------------------------- selection
def _selected_ids(event) -> list[str]:
    """The document ids of the selected points: each point's customdata[0] (gem.plots), never its
    index (traces are per cluster, so point indices are not rows of anything)."""
    try:
        points = event["selection"]["points"]  # bracket access: a selection set as session state is a plain dict
    except (KeyError, TypeError):
        return []
    out = []
    for p in points:
        custom = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(custom, (list, tuple)) and custom:
            out.append(str(custom[0]))
    return out


on_page = set(frame["id"].astype(str))  # a selection names documents of these fits, nothing else
selected = [i for i in dict.fromkeys(_selected_ids(ev_gem) + _selected_ids(ev_base)) if i in on_page]
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
    common.flag_form(ws, selected, key="cl_flag")  # exactly the selected ids (the table lists the same)

# ---------------------------------------------------------------------------- sphere view
with st.expander("Sphere view: the same clusters on S² (UMAP, haversine output metric)"):
    color_by = st.radio("Colour by", ["GEM", "baseline"], horizontal=True, key="cl_sphere_color")
    sphere_cached = _layout_cached(str(ws.root), rep, "sphere", emb_mtime)
    if st.toggle("Show the sphere", key="cl_sphere_on", value=sphere_cached,
                 help="Computed once per corpus and representation (shipped for the sample)."):
        with st.spinner("Computing the sphere layout…"):
            sphere = _layout(str(ws.root), rep, "sphere", emb_mtime)
        srows = pd.Index(frame["id"].astype(str)).get_indexer(sphere.ids)
        on_sphere = srows >= 0  # documents left out of the fits are not drawn
        srows = srows[on_sphere]
        labels = (gem_run if color_by == "GEM" else base_run).labels[srows]
        st.plotly_chart(sphere_map(sphere.coords[on_sphere], labels, np.asarray(sphere.ids)[on_sphere],
                                   texts=frame["text"].to_numpy()[srows]), key="sphere_map")

# ---------------------------------------------------------------------------- crosstab
with st.expander("Crosstab: GEM clusters vs the baseline's, and clusters vs a label column"):
    against = st.selectbox("Columns", ["baseline clusters"] + label_cols, key="cl_crosstab_cols")
    if against == "baseline clusters":
        cols_labels, col_title = base_run.labels, f"{baseline_name} cluster"
    else:
        cols_labels, col_title = frame[against].astype(str).to_numpy(), against
    st.caption("Each row is a GEM cluster, shown as shares of its documents (hover: counts). A baseline column "
               "spread over several GEM rows is a big baseline cluster that GEM splits.")
    st.plotly_chart(crosstab_heatmap(gem_run.labels, cols_labels, col_title=col_title), key="cl_crosstab")


# ---------------------------------------------------------------------------- tail view
if label_cols:
    with st.expander("Tail view: does balance free the small labels?"):
        from gem.metrics import tail_visibility

        t1, t2 = st.columns(2)
        tail_col = t1.selectbox("Label column", label_cols, key="cl_tail_col")
        threshold = t2.slider("Visible when the label is at least this share of a cluster", 0.05, 0.9, 0.2, 0.05,
                              key="cl_tail_threshold")
        ref = frame[tail_col].to_numpy()
        gem_tail = tail_visibility(gem_run.labels, ref, threshold)
        base_tail = tail_visibility(base_run.labels, ref, threshold).set_index("label")
        table = pd.DataFrame({
            "label": gem_tail["label"], "documents": gem_tail["n_docs"],
            "visible, GEM": gem_tail["visible_share"],
            "visible, baseline": base_tail.loc[gem_tail["label"], "visible_share"].to_numpy(),
            "best purity, GEM": gem_tail["best_purity"],
            "best purity, baseline": base_tail.loc[gem_tail["label"], "best_purity"].to_numpy(),
        })
        st.caption("Per label, smallest first: the share of its documents in a cluster where it makes up at least "
                   "the chosen share of the members (so a mixture weight on that cluster moves it), and the largest "
                   "share it has of any one cluster. Compare the two methods on the small labels.")
        pct = {c: st.column_config.NumberColumn(c, format="%.0f%%") for c in table.columns[2:]}
        st.dataframe(table.assign(**{c: table[c] * 100 for c in table.columns[2:]}), hide_index=True,
                     width="stretch", key="cl_tail_table", column_config=pct)
        small = table["documents"] <= table["documents"].median()
        st.text(f"Smaller half of the labels ({int(small.sum())}): mean visible share GEM "
                f"{table.loc[small, 'visible, GEM'].mean():.0%}, baseline {table.loc[small, 'visible, baseline'].mean():.0%}.")


# ---------------------------------------------------------------------------- stress test
st.subheader("Stress test")


@st.cache_resource(max_entries=1, show_spinner=False)
def _stress_store() -> dict:
    return {}  # (workspace, representation, share, seed, embeddings mtime) -> gem.stress.StressData, and fits


def _stress_fit(data, method: str, settings) -> np.ndarray:
    from gem.stress import fit_labels

    kw = {"balance": settings.balance} if method == "gem" else {}
    if method == "gem" and settings.target is not None:
        kw["target"] = settings.target
    key = ("fit", id(data), method, settings.k, settings.seed, str(kw))
    store = _stress_store()
    if key not in store:
        store[key] = fit_labels(method, data.unit, data.raw, settings.k, settings.seed, **kw)[0]
    return store[key]


stress_on = st.toggle("Stress test: inject template textbook passages", key="cl_stress_on",
                      help="Adds synthetic documents to a copy of the corpus in memory and fits both methods on it.")
st.caption("The passages are deterministic **templates, not LLM output**: each wraps topic words of this corpus "
           "(its labels' most distinctive words) in one shared textbook style (\"Chapter 3: An Introduction "
           "to ...\"), like the LLM-written textbooks of the paper's stress test. They are embedded with this "
           "workspace's model (cached in the workspace's cache/ folder) and never written into the corpus. On the "
           "maps they are placed at the mean position of their 10 nearest corpus documents (cosine), since the "
           "cached layout has no UMAP model to transform them with.")
if stress_on:
    share = st.slider("Injected share of the documents", 0.05, 0.30, 0.15, 0.05, key="cl_stress_share",
                      format="%.2f")
    skey = (str(ws.root), rep, float(share), settings.seed, emb_mtime)
    store = _stress_store()
    data = store.get(skey)
    if data is None:
        from gem.stress import stress_data

        bar = st.progress(0.0, text="Embedding the template passages…")

        def _progress(done, total):
            if total:
                bar.progress(min(1.0, done / total), text=f"Embedding the template passages: {done:,} / {total:,}")

        try:
            data = stress_data(ws, share, settings.seed, rep, progress=_progress)
        except ValueError as exc:
            bar.empty()
            st.info(common.plain(str(exc)))
            data = None
        else:
            bar.empty()
            store.clear()  # one stressed corpus at a time (and its fits): it is the corpus's size again
            store[skey] = data
    if data is not None:
        from gem.stress import place_by_neighbours

        inj = data.injected
        n_corpus = int((~inj).sum())
        st.caption(f"{int(inj.sum()):,} passages injected into {n_corpus:,} documents "
                   f"({inj.mean():.1%} of the result). GEM uses the current fit's settings; the baseline is "
                   f"{baseline_name}; both fitted on the stressed data in memory.")
        with st.spinner("Fitting GEM and the baseline on the stressed corpus…"):
            s_gem = _stress_fit(data, "gem", settings)
            s_base = _stress_fit(data, method, settings)
        X_corpus = data.unit[:n_corpus]
        full_rows = pd.Index(data.frame["id"].astype(str)[:n_corpus]).get_indexer(layout_ids)  # stressed corpus rows
        inj_xy = place_by_neighbours(data.unit[inj], X_corpus[full_rows], layout_coords)
        s_rows = np.concatenate([full_rows, np.flatnonzero(inj)])
        s_coords = np.vstack([layout_coords, inj_xy])
        s_ids = data.frame["id"].astype(str).to_numpy()[s_rows]
        s_texts = data.frame["text"].to_numpy()[s_rows]
        s_prov = {"provenance": data.frame["provenance"].to_numpy()[s_rows]}
        s_colors = matched_colors(s_gem, s_base, k, base_run.n_clusters) if match else None
        c1, c2 = st.columns(2)
        for col, title, labels, colors, key in ((c1, "GEM", s_gem, None, "stress_gem"),
                                                (c2, f"Baseline: {baseline_name}", s_base, s_colors, "stress_base")):
            with col:
                st.markdown(f"**{title}** (stressed corpus)")
                _injection_metrics(labels, inj, k, "")
                st.plotly_chart(highlight_map(s_coords, labels[s_rows], s_ids, inj[s_rows], texts=s_texts,
                                              extra=s_prov, highlight_name="injected passages", colors=colors),
                                key=f"{key}_map")
                st.plotly_chart(injection_bars(labels, inj, k), key=f"{key}_bars")


# ---------------------------------------------------------------------------- lambda sweep
with st.expander("Trade-off: balance vs meaning vs stability across λ"):
    from gem.sweep import DEFAULT_LAMBDAS

    st.caption("GEM fitted with automatic balance once per seed, then every named balance stop warm-started from "
               "it (as the sidebar does). Balance: normalised entropy and largest share; meaning: NMI to each label "
               "column; stability: mean ARI between the seeds' fits (1 = every seed gives the same clusters). "
               "Dotted / dashed lines: k-means on raw / unit vectors.")
    n_seeds = st.number_input("Seeds", min_value=2, max_value=5, value=3, step=1, key="cl_sweep_seeds")
    # process-wide (every session's sweeps): the resolved workspace and its corpus, representation, K, embeddings
    sweep_key = common.output_scope(ws) + (rep, k, int(n_seeds), emb_mtime, int(present.sum()),
                                           common.exclusions_stamp(ws))
    sweeps = _stress_store().setdefault("sweeps", {})
    result = sweeps.get(sweep_key)
    if st.button("Compute the sweep" if result is None else "Recompute", key="cl_sweep_run"):
        from gem.sweep import lambda_sweep

        bar = st.progress(0.0, text="Sweeping λ…")
        X = common.embeddings(rep, ws=ws)[present]  # the documents the fits hold, as the labels in refs
        X_raw = common.embeddings(rep, raw=True, ws=ws)[present]
        refs = {c: frame[c].to_numpy() for c in label_cols}
        result = lambda_sweep(X, refs, k, DEFAULT_LAMBDAS, list(range(int(n_seeds))), X_raw=X_raw,
                              progress=lambda d, t, w: bar.progress(d / t, text=f"Sweeping λ: {w} ({d}/{t})"))
        bar.empty()
        sweeps[sweep_key] = result
        st.rerun()  # redraw the button as "Recompute"
    if result is not None:
        st.plotly_chart(sweep_chart(result.rows, result.references), key="cl_sweep_chart")
        table = pd.DataFrame(result.table()).drop(columns=["balance"], errors="ignore")
        st.dataframe(table, hide_index=True, width="stretch", key="cl_sweep_table")
        st.caption(f"{len(result.seeds)} seeds, K = {result.k}, computed in {result.seconds:.0f} s. "
                   "Use a point as the current fit:")
        names = dict((lam, name) for name, lam in common.BALANCE_LEVELS)
        buttons = st.columns(len(DEFAULT_LAMBDAS) + 1)
        buttons[0].button("auto", key="cl_sweep_use_auto", help="GEM chooses λ (the sidebar's automatic balance)",
                          on_click=common.set_fit, kwargs={"auto": True})
        for i, lam in enumerate(DEFAULT_LAMBDAS):
            buttons[i + 1].button(f"{names.get(lam, '')} λ = {lam:g}", key=f"cl_sweep_use_{i}",
                                  on_click=common.set_fit, kwargs={"auto": False, "lam": float(lam)})
