"""Mixture: balance control, mixture weights per domain under a token budget, and the export bundle."""
import json
import re

import numpy as np
import pandas as pd
import streamlit as st

from gem import mixture as mx
from gem.plots import implied_epochs_chart, mixture_weights_chart
from pages import common

CURRENT = "current fit (this session)"
STRATEGY_HELP = {
    "natural": "token share of each domain",
    "balanced": "the fitted GEM mass of each topic",
    "temperature": "p ~ n^(1/T): T = 1 is natural, larger T flattens towards uniform",
    "unimax": "uniform token budget per domain, capped at max epochs, leftover to the rest (Chung et al. 2023)",
}

st.title("Mixture weights and export")
ws, reps = common.embedded_workspace()
frame = common.corpus(ws)


def _plain(text) -> str:
    """Messages can quote curator labels: escape markdown so st.warning / st.error show them as text."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", str(text))


@st.cache_data(max_entries=8, show_spinner=False)
def _fingerprint(path: str, mtime: int) -> str:
    """The corpus fingerprint, hashed once per corpus file version (not on every rerun)."""
    return mx.corpus_fingerprint(path)


# ---------------------------------------------------------------------------- source of the topics
sources = [CURRENT] + ws.runs()
source = st.selectbox("Topics from", sources, key="mx_source",
                      help="The clustering fitted here, or a run saved with `gem fit` (saved runs use the "
                           "taxonomy's stable topic ids once synced).")

if source == CURRENT:
    with st.container(border=True):
        c1, c2, c3, c4 = st.columns([0.8, 2.4, 1.6, 0.7])
        prev = common.current_runs()[0]
        k = int(c1.number_input("K", min_value=2, max_value=256, value=prev.n_clusters if prev else 24, step=1,
                                key="mx_k"))
        with c2:
            # start from the session's current fit (Clusters / Taxonomy), so opening this page re-uses
            # the topics the curator just looked at instead of silently re-fitting with other settings
            prev_balance = prev.params.get("balance") if prev else None
            balance, balance_note = common.balance_control(
                "mx", default_auto=prev_balance == "auto", default_lambda=prev_balance,
                help="How hard GEM pulls topic masses toward the target composition "
                     "(the regulariser (λ/2)‖π − u‖²); a change re-fits warm-started.")
        target_mode = c3.radio("Target composition", ["uniform", "natural", "edited per topic"], key="mx_target",
                               help="What the balance pulls towards: equal shares, the current topics' "
                                    "token shares, or shares you type per topic.")
        seed = int(c4.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="mx_seed",
                                   value=int(prev.params.get("random_state", 0)) if prev else 0))
    rep = "final" if "final" in reps else reps[0]
    tokens = frame["n_tokens"].to_numpy(np.float64)
    target = None
    if target_mode != "uniform":
        if prev is None or prev.n_clusters != k:
            st.info("Fit once with the uniform target first: the natural / edited target starts from the topics "
                    "of the current fit.")
        else:
            share = np.bincount(prev.labels, weights=tokens, minlength=k)
            share = np.maximum(share / share.sum(), 1e-6)  # GEM needs positive shares
            if target_mode == "edited per topic":
                named = common.session_topics(prev, ws)  # the curator's names once the Taxonomy page has them
                topic = ([f"t{i:02d}" for i in range(k)] if named is None
                         else [f"{i} {n}" for i, n in zip(named["id"], named["name"])])
                start = pd.DataFrame({"topic": topic, "target %": share * 100})
                edited = st.data_editor(start, key="mx_target_edit", hide_index=True, disabled=["topic"],
                                        column_config={"target %": st.column_config.NumberColumn(min_value=0.01,
                                                                                                  format="%.2f")})
                share = np.maximum(edited["target %"].to_numpy(np.float64), 1e-6)
            target = tuple(float(x) for x in share / share.sum())
    kwargs = {} if target is None else {"target": target}
    with st.spinner("Fitting GEM…"):
        try:
            run = common.fit_gem(k, balance, seed, rep, ws=ws, **kwargs)
        except ValueError as exc:
            st.error(_plain(f"GEM could not be fitted: {exc}"))
            st.stop()
    est = run.estimator
    common.show_auto_lambda(balance_note, run)
    st.caption(f"GEM fitted in {run.seconds:.2f} s "
               f"({'warm-started' if run.warm_started else 'from scratch'}); λ used = {est.balance_:g}")
    assignments = pd.DataFrame({"id": frame["id"].astype(str).to_numpy(), "cluster": run.labels})
    # the taxonomy's stable ids, names and parents once the Taxonomy page has synced this fit
    topics = common.session_topics(run, ws)
    if topics is None:
        st.caption("Topics show as t00, t01, …: open the Taxonomy page to name this fit's topics.")
    try:
        domains, documents, parent_labels = mx.run_domains(assignments, frame, k, mass=est.weights_, topics=topics)
    except mx.MixtureError as exc:
        st.error(_plain(exc))
        st.stop()
    metadata = mx.run_metadata(
        ws, rep, {"run": None, "method": "gem", "representation": rep, "n_clusters": k,
                  "params": {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in run.params.items()},
                  "balance_used": float(est.balance_)},
        fingerprint=_fingerprint(str(ws.corpus_path), ws.corpus_path.stat().st_mtime_ns))
    inputs = mx.RunMixtureInputs(domains, documents, parent_labels, metadata, None, [])
    export_name = f"session-k{k}"
else:
    @st.cache_resource(max_entries=4, show_spinner=False)
    def _inputs(root: str, name: str, mtime: float):
        return mx.mixture_inputs_from_run(common.Workspace(root), name, with_gis=False)

    try:
        run_dir = ws.run_dir(source)
        inputs = _inputs(str(ws.root), source, max(p.stat().st_mtime_ns for p in run_dir.iterdir()))
    except (ValueError, OSError, KeyError, ImportError) as exc:
        st.error(_plain(f"Run {source!r} could not be read: {exc}"))
        st.stop()
    export_name = source
    for note in inputs.notes:
        st.info(_plain(note))

# ---------------------------------------------------------------------------- strategy
with st.container(border=True):
    s1, s2, s3, s4 = st.columns([1.3, 1.1, 1.1, 1.0])
    strategy = s1.radio("Strategy", list(STRATEGY_HELP), key="mx_strategy", format_func=str.capitalize,
                        help="; ".join(f"{k}: {v}" for k, v in STRATEGY_HELP.items()))
    budget = s2.number_input("Token budget (0 = none)", min_value=0, value=0, step=1_000_000, key="mx_budget",
                             help="Training tokens for this mix: gives implied epochs per domain (UniMax needs it).")
    max_epochs = s3.number_input("Max epochs", min_value=0.1, value=4.0, step=0.5, key="mx_max_epochs")
    temperature = s4.number_input("Temperature T", min_value=0.05, value=2.0, step=0.5, key="mx_temperature",
                                  disabled=strategy != "temperature")
    level = "parent" if st.toggle("Mix at parent level", key="mx_parent",
                                  disabled=not inputs.domains["parent"].notna().any(),
                                  help="Aggregate topics under their parent group (taxonomy).") else "topic"
    st.caption(STRATEGY_HELP[strategy])

# manual edits: a weight typed in a row fixes that domain; the rest share the remainder
base_view = inputs.domains if level == "topic" else mx.aggregate_parents(inputs.domains, inputs.parent_labels)
editor = pd.DataFrame({
    "id": base_view["id"], "label": base_view["label"], "tokens": base_view["n_tokens"],
    "exclude": base_view["excluded"].astype(bool), "manual weight %": np.full(len(base_view), np.nan),
})
st.subheader("Domains")
st.caption("Type a weight to fix a domain (the others keep their strategy's proportions); tick to exclude.")
edited = st.data_editor(editor, key=f"mx_editor_{export_name}_{level}", hide_index=True, width="stretch",
                        disabled=["id", "label", "tokens"],
                        column_config={"manual weight %": st.column_config.NumberColumn(min_value=0.0, max_value=100.0,
                                                                                        format="%.2f")})
overrides = {str(i): float(w) / 100 for i, w in zip(edited["id"], edited["manual weight %"]) if pd.notna(w)}
domains = base_view.copy()
domains["excluded"] = edited["exclude"].to_numpy(bool)
try:
    mixture = mx.build_mixture(domains, strategy, token_budget=float(budget) if budget else None,
                               max_epochs=float(max_epochs), temperature=float(temperature), overrides=overrides,
                               metadata=inputs.metadata)
    mixture.level = level
    mixture.warnings = list(inputs.notes) + mixture.warnings
except mx.MixtureError as exc:
    st.error(_plain(exc))
    st.stop()

d = mixture.domains
c1, c2 = st.columns(2)
with c1:
    st.plotly_chart(mixture_weights_chart(d["id"], d["label"], d["natural_weight"], d["weight"],
                                          title="natural vs chosen weight"), key="mx_weights_chart")
with c2:
    if mixture.token_budget:
        st.plotly_chart(implied_epochs_chart(d["id"], d["label"], d["implied_epochs"], mixture.max_epochs,
                                             title=f"implied epochs under {mixture.token_budget:,} tokens"),
                        key="mx_epochs_chart")
    else:
        st.info("Set a token budget to see how many epochs of each domain this mix implies.")
for w in mixture.warnings:
    st.warning(_plain(w))
table = d[["id", "label", "n_docs", "n_tokens", "natural_weight", "weight", "implied_epochs", "weight_source"]]
if mixture.token_budget:
    epochs_col = st.column_config.NumberColumn("epochs", format="%.2f")
else:  # no budget, no epochs: a dash rather than "None"
    table = table.assign(implied_epochs="—")
    epochs_col = st.column_config.TextColumn("epochs", help="Set a token budget to see epochs.")
st.dataframe(table, hide_index=True, width="stretch", key="mx_table",
             column_config={"natural_weight": st.column_config.NumberColumn("natural", format="%.4f"),
                            "weight": st.column_config.NumberColumn("weight", format="%.4f"),
                            "implied_epochs": epochs_col})
with st.expander("Chosen weights as JSON (to copy)", key="mx_weights_json"):
    # full precision, readable as text (the table above is drawn on a canvas)
    st.code(json.dumps(mixture.weights(), indent=1), language="json")

# ---------------------------------------------------------------------------- export
st.subheader("Export")
e1, e2 = st.columns([1, 2])
# no key: the default name follows the source, strategy and level (a keyed widget would keep a stale one)
name = e1.text_input("Bundle name", value=f"{export_name}-{strategy}" + ("-parent" if level == "parent" else ""))
formats = e2.multiselect("Formats", [f for f in mx.FORMATS if f != "taxonomy"],
                         default=[f for f in mx.FORMATS if f != "taxonomy"], key="mx_formats")
if st.button("Export bundle", type="primary", key="mx_export"):
    docs = inputs.assignments(level)
    try:
        path = mx.write_bundle(ws.exports_dir / name, mixture, formats or ["doremi"], assignments=docs,
                               taxonomy=inputs.taxonomy)
        report = mx.validate_bundle(path)
    except (ValueError, OSError) as exc:
        st.error(_plain(f"Export failed, nothing written: {exc}"))
    else:
        st.session_state["mx_last_export"] = (str(path), mx.bundle_zip_bytes(path), report["formats"])
last = st.session_state.get("mx_last_export")
if last:
    path, data, fmts = last
    st.success(_plain(f"Wrote and validated {path} ({', '.join(fmts)})."))
    st.download_button("Download the bundle (zip)", data, file_name=f"{path.rsplit('/', 1)[-1]}.zip",
                       mime="application/zip", key="mx_download")
