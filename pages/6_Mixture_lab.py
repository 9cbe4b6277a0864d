"""Mixture lab: design a swarm of mixtures, score it (built-in proxy or measured results), fit the
mixture -> metric regression, predict the best mixture under constraints and export it.

The logic is gem.mixlab's (the same as `gem mixlab design|proxy|fit|best`); this page only
collects the settings and shows the results.
"""
import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from gem import mixlab
from gem.mixlab.charts import fit_scatter, mixtures_chart
from gem.mixlab.proxy import DEFAULT_TOKENS, parse_target, read_target_file
from pages import common

KEY_SWARM = "ml_swarm"        # name of the swarm chosen / just designed
KEY_UPLOAD = "ml_upload"      # (swarm name, results DataFrame, sha256 of the file, upload file_id) of this session
KEY_UPLOAD_REFUSED = "ml_upload_refused"  # (swarm name, upload file_id, why): a refused file is not read again
KEY_EXPORT = "ml_export"      # (bundle path, zip bytes, formats)

st.title("Mixture lab")
st.caption("Design mixing experiments over the topics, read their results, and predict the best mixture "
           "(RegMix's loop on your buckets). The built-in proxy is a Kneser-Ney word bigram model, not a "
           "transformer: it makes the loop run on one machine; import real training results for real decisions.")
ws, _ = common.embedded_workspace()
frame = common.corpus(ws)

source, is_current = common.run_source(ws, key="ml_source")
try:
    run_name = common.current_run_name(ws, source, is_current)
except (ValueError, OSError) as exc:
    st.error(common.plain(f"The run could not be read: {exc}"))
    st.stop()

# ---------------------------------------------------------------------------- 1. design
st.subheader("1. Design a swarm")
with st.form("ml_design"):
    c1, c2, c3, c4, c5 = st.columns(5)
    n = c1.number_input("Mixtures (N)", min_value=5, max_value=512, value=64, step=8, key="ml_n",
                        help="Dirichlet mixtures; natural, balanced (uniform) and UniMax are added.")
    alpha = c2.number_input("Concentration α", min_value=0.05, max_value=1000.0, value=1.0, step=0.5, key="ml_alpha",
                            help="Dirichlet(α × token prior): small α gives varied, sparse mixtures; large α stays "
                                 "near the natural mix.")
    budget = c3.number_input("Token budget (0 = the corpus once)", min_value=0, value=0, step=1_000_000,
                             key="ml_budget", help="Training tokens of each mixture; with max epochs it caps each "
                                                   "domain's weight at max epochs × its tokens / budget.")
    max_epochs = c4.number_input("Max epochs", min_value=0.1, value=4.0, step=0.5, key="ml_max_epochs")
    seed = c5.number_input("Seed", min_value=0, value=0, step=1, key="ml_seed")
    designed = st.form_submit_button("Design swarm", type="primary")
if designed:
    bar = st.progress(0.0, text="Writing the mixtures' trainer files…")
    try:
        swarm = mixlab.design_run(ws, run_name, int(n), float(alpha), token_budget=float(budget) or None,
                                  max_epochs=float(max_epochs), seed=int(seed),
                                  progress=lambda d, t: bar.progress(d / t, text=f"Trainer files: {d} / {t} mixtures"))
    except (ValueError, OSError) as exc:
        bar.empty()
        st.error(common.plain(f"The swarm could not be designed: {exc}"))
    else:
        bar.empty()
        common.keep_output(KEY_SWARM, common.output_scope(ws), swarm.path.name)
        common.drop_output(KEY_UPLOAD)

swarms = mixlab.list_swarms(ws)
if not swarms:
    st.info("No swarm yet: design one above (or with `gem mixlab design`).")
    st.stop()
chosen = common.kept_output(KEY_SWARM, common.output_scope(ws))  # swarm names repeat across workspaces
name = st.selectbox("Swarm", swarms, index=swarms.index(chosen) if chosen in swarms else len(swarms) - 1,
                    key=f"ml_swarm_pick_{chosen}")
common.keep_output(KEY_SWARM, common.output_scope(ws), name)
try:  # checked against its MANIFEST.json: a changed swarm.csv is refused, never used
    swarm = mixlab.load_swarm(mixlab.resolve_swarm(ws, name))
except (ValueError, OSError) as exc:
    st.error(common.plain(f"Swarm {name} cannot be used: {exc}"))
    st.stop()
# what this page keeps about the swarm (uploaded results, a refused file, the export) is this workspace's,
# of this design of the swarm (designing it again under the same name rewrites swarm.csv)
swarm_scope = common.output_scope(ws) + (name, common.mtime(swarm.path / "swarm.csv"))
labels = swarm.domains.set_index("id").loc[swarm.ids, "label"].astype(str).tolist()
st.caption(common.plain(
    f"{len(swarm.weights)} mixtures over {len(swarm.ids)} domains of run {swarm.run}; budget "
    f"{swarm.params['token_budget']:,.0f} tokens, max {swarm.params['max_epochs']:g} epochs. Each mixture's "
    f"Megatron, OLMo-core and HF files are in {swarm.path / 'mixtures'}."))
with st.expander("swarm.csv", key="ml_swarm_table"):
    st.dataframe(swarm.weights.reset_index(), hide_index=True, width="stretch")

# ---------------------------------------------------------------------------- 2. results
st.subheader("2. Results")
mode = st.radio("Results from", ["built-in proxy", "upload measured results (CSV)"], horizontal=True, key="ml_mode")
if mode == "built-in proxy":
    kinds = {"a corpus label": "label", "a topic": "topic", "a file": "file"}
    columns = [c for c in common.label_columns(frame) if not pd.api.types.is_numeric_dtype(frame[c])]
    kind = kinds[st.radio("Held-out target", list(kinds) if columns else list(kinds)[1:], horizontal=True,
                          key="ml_target_kind",
                          help="What the proxy is scored on. Half of a label's or topic's documents are held out "
                               "and never trained on; a file is held out whole.")]
    t1, t2, t3 = st.columns([1, 1, 1])
    spec, file_texts = None, None
    if kind == "label":
        column = t1.selectbox("Label column", columns, key="ml_target_column")
        values = frame[column].astype(str).value_counts()
        values = values[values >= 2].index.tolist()
        value = t2.selectbox("Value", values, key=f"ml_target_value_{column}")
        spec = f"label:{column}={value}" if value is not None else None
    elif kind == "topic":
        topic = t1.selectbox("Topic", swarm.ids, key="ml_target_topic",
                             format_func=lambda i: f"{i} {labels[swarm.ids.index(i)]}")
        spec = f"topic:{topic}"
    else:
        path = t1.text_input("Target file on the server (JSONL with a text field, or plain text)", key="ml_target_file")
        if path.strip():
            from gem.access import AccessError, resolve_data_path

            try:
                resolved = resolve_data_path(path, common.data_roots(), kinds=("file",))
                file_texts = read_target_file(resolved)
                spec = f"file:{resolved.name}"
            except (AccessError, ValueError, OSError) as exc:
                st.error(common.plain(f"Target file: {exc}"))
    tokens = t3.number_input("Training tokens per mixture", min_value=2_000, max_value=2_000_000,
                             value=DEFAULT_TOKENS, step=10_000, key="ml_tokens")
    if st.button("Run the proxy", type="primary", key="ml_run_proxy", disabled=spec is None):
        bar = st.progress(0.0, text="Encoding the corpus…")
        try:
            out = mixlab.run_proxy(ws, swarm, parse_target(spec), tokens_per_mixture=int(tokens),
                                   file_texts=file_texts,
                                   progress=lambda d, t: bar.progress(d / t, text=f"Proxy: {d} / {t} mixtures"))
        except (ValueError, OSError) as exc:
            st.error(common.plain(f"The proxy could not run: {exc}"))
        else:
            common.drop_output(KEY_UPLOAD)
            st.success(common.plain(f"Scored {len(out.results)} mixtures on {out.info['eval_tokens']:,} held-out "
                                    f"tokens in {out.info['seconds']:.1f} s."))
        bar.empty()
else:
    # keyed by the swarm's scope: a file dropped here for one workspace's swarm is not read for another's
    up = st.file_uploader("Results CSV: a mixture_id column and one or more metric columns", type=["csv"],
                          key=f"ml_upload_file_{hashlib.sha256(repr(swarm_scope).encode()).hexdigest()[:12]}")
    held = common.kept_output(KEY_UPLOAD, swarm_scope)
    refused = common.kept_output(KEY_UPLOAD_REFUSED, swarm_scope)
    if up is not None and refused and refused[:2] == (name, up.file_id):
        st.error(common.plain(refused[2]))
    elif up is not None and not (held and held[0] == name and held[3] == up.file_id):  # read and hash once per upload
        data = up.getvalue()
        try:
            common.keep_output(KEY_UPLOAD, swarm_scope,
                               (name, mixlab.read_results(data, list(swarm.weights.index), where=up.name),
                                hashlib.sha256(data).hexdigest(), up.file_id))
        except ValueError as exc:
            common.drop_output(KEY_UPLOAD)
            common.keep_output(KEY_UPLOAD_REFUSED, swarm_scope, (name, up.file_id, str(exc)))
            st.error(common.plain(exc))

uploaded = common.kept_output(KEY_UPLOAD, swarm_scope)
results_path = swarm.path / "results.csv"
if uploaded and uploaded[0] == name:
    results, results_key = uploaded[1], uploaded[2]
    st.caption("Using the uploaded results.")
elif results_path.exists():
    try:
        results = mixlab.read_results(results_path, list(swarm.weights.index), where=str(results_path))
    except ValueError as exc:
        st.error(common.plain(exc))
        st.stop()
    results_key = str(common.mtime(results_path))
    st.caption("Using the proxy's results (results.csv of this swarm).")
else:
    st.info("No results for this swarm yet: run the proxy or upload measured results.")
    st.stop()

# ---------------------------------------------------------------------------- 3. fit
st.subheader("3. Fit")
f1, f2 = st.columns(2)
metric = f1.selectbox("Metric", list(results.columns), key="ml_metric")
lower = f2.radio("Better is", ["lower", "higher"], horizontal=True, key=f"ml_direction_{metric}",
                 index=0 if mixlab.lower_is_better(metric) else 1)


@st.cache_resource(max_entries=8, show_spinner=False)
def _fit(path: str, key: str, metric: str, minimize: bool, _results: pd.DataFrame, _swarm):
    return mixlab.fit_swarm(_swarm, _results, [metric], {metric: minimize})[metric]


try:
    with st.spinner("Fitting the regressions (5-fold cross-validation)…"):
        fit = _fit(str(swarm.path), results_key, metric, lower == "lower", results, swarm)
except ValueError as exc:
    st.error(common.plain(exc))
    st.stop()
m1, m2, m3 = st.columns(3)
m1.metric("Held-out Spearman ρ", f"{fit.rho:.3f}")
m2.metric("90% bootstrap interval", f"{fit.rho_interval[0]:.2f} – {fit.rho_interval[1]:.2f}")
m3.metric("Model (lowest CV error)", fit.model_kind)
if fit.warning:
    st.warning(common.plain(fit.warning))
c1, c2 = st.columns([3, 2])
c1.plotly_chart(fit_scatter(fit), key="ml_fit_chart")
c2.dataframe(fit.candidates, hide_index=True, width="stretch", key="ml_candidates",
             column_config={"cv_rmse": st.column_config.NumberColumn("CV RMSE", format="%.4g"),
                            "cv_spearman": st.column_config.NumberColumn("CV ρ", format="%.3f")})

# ---------------------------------------------------------------------------- 4. best
st.subheader("4. Best mixture")
b1, b2 = st.columns([1, 3])
best_epochs = b1.number_input("Max epochs", min_value=0.1, value=float(swarm.params["max_epochs"]), step=0.5,
                              key=f"ml_best_epochs_{name}")
constraints = b2.data_editor(
    pd.DataFrame({"id": swarm.ids, "label": labels, "floor %": np.zeros(len(swarm.ids)),
                  "ceiling %": np.full(len(swarm.ids), 100.0), "exclude": np.zeros(len(swarm.ids), bool)}),
    key=f"ml_constraints_{name}", hide_index=True, disabled=["id", "label"], width="stretch",
    column_config={"floor %": st.column_config.NumberColumn(min_value=0.0, max_value=100.0, format="%.2f"),
                   "ceiling %": st.column_config.NumberColumn(min_value=0.0, max_value=100.0, format="%.2f")})
floors = {str(i): float(v) / 100 for i, v in zip(constraints["id"], constraints["floor %"]) if pd.notna(v) and v > 0}
ceilings = {str(i): float(v) / 100 for i, v in zip(constraints["id"], constraints["ceiling %"])
            if pd.notna(v) and v < 100}
excluded = [str(i) for i, x in zip(constraints["id"], constraints["exclude"]) if x]


@st.cache_resource(max_entries=8, show_spinner=False)
def _best(path: str, key: str, metric: str, minimize: bool, max_epochs: float, cons: str, _fit, _swarm, _bounds):
    return mixlab.best_mixture(_fit, _swarm, _bounds)


try:
    bnds = swarm.bounds(max_epochs=float(best_epochs), floors=floors, ceilings=ceilings, excluded=excluded)
    with st.spinner("Searching the simplex…"):
        best = _best(str(swarm.path), results_key, metric, lower == "lower", float(best_epochs),
                     repr((sorted(floors.items()), sorted(ceilings.items()), excluded)), fit, swarm, bnds)
except ValueError as exc:
    st.error(common.plain(exc))
    st.stop()
comp = best.comparison
series = {r["mixture"]: r[swarm.ids].to_numpy(np.float64) for _, r in comp.iterrows()
          if r["mixture"] in ("natural", "balanced", "unimax", "predicted best")}
st.plotly_chart(mixtures_chart(swarm.ids, labels, series, title="predicted best next to natural, balanced, UniMax"),
                key="ml_best_chart")
shown = comp[["mixture", "predicted", "spread"]].assign(
    measured=[f"{v:.4f}" if np.isfinite(v) else "—" for v in comp["measured"]])  # text: a dash, not "None"
st.dataframe(shown, hide_index=True, width="stretch", key="ml_best_table",
             column_config={"predicted": st.column_config.NumberColumn(format="%.4f"),
                            "spread": st.column_config.NumberColumn("± spread (fold models)", format="%.4f")})
for note in best.notes:
    st.info(common.plain(note))

# ---------------------------------------------------------------------------- 5. export
st.subheader("5. Export")
e1, e2 = st.columns([2, 1])
bundle = e1.text_input("Bundle name", value=f"{name}-best-{mixlab.regression.metric_safe(metric)}", key="ml_bundle")
e2.write("")
if e2.button("Export the best mixture", type="primary", key="ml_export_button"):
    from gem.mixture import bundle_zip_bytes
    from gem.store import validate_name

    try:
        with st.spinner("Writing and validating the bundle…"):
            path, report = mixlab.export_mixture(
                ws, swarm, best.as_dict(), ws.exports_dir / validate_name(bundle, "bundle name"),
                max_epochs=float(best_epochs),
                extra={"metric": metric, "minimize": fit.minimize, "model": fit.model_kind, "spearman_rho_cv": fit.rho,
                       "predicted": best.predicted, "spread": best.spread,
                       "constraints": {"floors": floors, "ceilings": ceilings, "excluded": excluded}})
    except (ValueError, OSError) as exc:
        st.error(common.plain(f"Export failed, nothing written: {exc}"))
    else:
        common.keep_output(KEY_EXPORT, swarm_scope, (str(path), bundle_zip_bytes(path), report["formats"]))
last = common.kept_output(KEY_EXPORT, swarm_scope)
if last:
    path, data, fmts = last
    st.success(common.plain(f"Wrote and validated {path.rsplit('/', 1)[-1]} ({', '.join(fmts)}); weight source mixlab."))
    st.download_button("Download the bundle (zip)", data, file_name=f"{path.rsplit('/', 1)[-1]}.zip",
                       mime="application/zip", key="ml_download")
