"""Mixture: balance control, mixture weights per domain under a token budget, and the export bundle."""
import json

import numpy as np
import pandas as pd
import streamlit as st

from gem import mixture as mx
from gem.plots import implied_epochs_chart, mixture_weights_chart
from pages import common

STRATEGY_HELP = {
    "natural": "token share of each domain",
    "balanced": "the fitted GEM mass of each topic",
    "temperature": "p ~ n^(1/T): T = 1 is natural, larger T flattens towards uniform",
    "unimax": "uniform token budget per domain, capped at max epochs, leftover to the rest (Chung et al. 2023)",
}

st.title("Mixture weights and export")
ws, reps = common.embedded_workspace()
frame = common.corpus(ws)


@st.cache_resource(max_entries=4, show_spinner=False)
def _inputs(root: str, name: str, run_mtime: int, taxonomy_mtime: tuple, corpus_mtime: int):
    """The run's domains (taxonomy ids, names, parents, exclusions) as `gem export` reads them."""
    return mx.mixture_inputs_from_run(common.Workspace(root), name, with_gis=False)


# ---------------------------------------------------------------------------- source of the topics
source, is_current = common.run_source(ws, key="mx_source")
try:
    if is_current:
        settings = common.fit_settings(ws)
        modes = ["uniform", "natural", "edited per topic"]
        stored_mode = common.kept_output(common.KEY_FIT_TARGET_MODE, common.output_scope(ws)) or "uniform"
        target_mode = st.radio(
            "Target composition", modes, index=modes.index(stored_mode), key="mx_target", horizontal=True,
            help="What the balance pulls the topic masses towards: equal shares, the token shares of the "
                 "uniform-target fit's topics, or shares you type per topic. Part of the current fit.")
        stored_target = common.kept_output(common.KEY_FIT_TARGET, common.output_scope(ws))
        target = None
        if target_mode != "uniform":
            with st.spinner("Fitting GEM with a uniform target…"):
                base = common.ensure_run(settings.replace(target=None), ws)
            share = mx.natural_target(base.labels, frame["n_tokens"], base.n_clusters)
            if target_mode == "edited per topic":
                if stored_mode == target_mode and stored_target is not None and len(stored_target) == base.n_clusters:
                    share = np.asarray(stored_target)  # the curator's shares, kept across pages
                named = common.run_topics(base.name, ws)
                named = None if named is None else named.sort_values("cluster")
                topic = ([f"t{i:02d}" for i in range(base.n_clusters)] if named is None else
                         [f"{i} {n}" for i, n in zip(named["id"], named["name"])])
                edited_target = st.data_editor(
                    pd.DataFrame({"topic": topic, "target %": share * 100}), key=f"mx_target_edit_{base.name}",
                    hide_index=True, disabled=["topic"],
                    column_config={"target %": st.column_config.NumberColumn(min_value=0.01, format="%.2f")})
                share = np.maximum(edited_target["target %"].to_numpy(np.float64), 1e-6)
            target = tuple(round(float(x), 8) for x in share / share.sum())
        common.keep_output(common.KEY_FIT_TARGET_MODE, common.output_scope(ws), target_mode)
        common.keep_output(common.KEY_FIT_TARGET, common.output_scope(ws), target)
        with st.spinner("Fitting GEM…"):
            run = common.current_fit(ws)
        common.show_fit(run, "Change K, balance or seed in the sidebar: every page shows this fit.")
        run_name = run.name
    else:
        run_name = source
    tax_files = (common.mtime(ws.taxonomy_db), common.mtime(ws.taxonomy_db.with_name(ws.taxonomy_db.name + "-wal")))
    inputs = _inputs(str(ws.root), run_name, common.mtime(ws.run_dir(run_name) / "params.json"), tax_files,
                     common.mtime(ws.corpus_path))
except (ValueError, OSError, KeyError, ImportError) as exc:
    st.error(common.plain(f"Run could not be read: {exc}"))
    st.stop()
for note in inputs.notes:
    st.info(common.plain(note))

# ---------------------------------------------------------------------------- what exclusions removed
if inputs.removed is not None:
    removed = inputs.removed
    with st.expander(f"Excluded documents: {int(removed['removed_docs'].sum()):,} left out of this mixture",
                     expanded=True):
        r1, r2, r3 = st.columns(3)
        r1.metric("documents removed", f"{int(removed['removed_docs'].sum()):,}")
        r2.metric("tokens removed", f"{int(removed['removed_tokens'].sum()):,}")
        total = removed["kept_tokens"].sum() + removed["removed_tokens"].sum()
        r3.metric("share of tokens removed", f"{removed['removed_tokens'].sum() / max(total, 1):.2%}")
        st.caption("Per topic (documents the run was fitted without count in the topic the model puts them in). "
                   "Exclude or include documents on the Documents page or with `gem flag`; the bundle lists them "
                   "in excluded_documents.jsonl.")
        shown = removed[removed["removed_docs"] > 0].sort_values("removed_tokens", ascending=False)
        st.dataframe(shown.assign(removed_token_share=shown["removed_token_share"] * 100), hide_index=True,
                     width="stretch", key="mx_removed",
                     column_config={"removed_token_share": st.column_config.NumberColumn("% of topic tokens",
                                                                                         format="%.2f")})

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

# manual edits: a weight typed in a row fixes that domain; the rest share the remainder. Exclusions are
# the taxonomy's (so `gem export`, the student and every page see them): a tick here is saved there.
base_view = inputs.domains if level == "topic" else mx.aggregate_parents(inputs.domains, inputs.parent_labels)
topics = common.run_topics(run_name, ws)
can_exclude = level == "topic" and topics is not None
editor = pd.DataFrame({
    "id": base_view["id"], "label": base_view["label"], "tokens": base_view["n_tokens"],
    "exclude": base_view["excluded"].astype(bool), "manual weight %": np.full(len(base_view), np.nan),
})
st.subheader("Domains")
st.caption("Type a weight to fix a domain (the others keep their strategy's proportions). "
           + ("Tick to exclude a topic: saved in the taxonomy with your name, so every page and `gem export` "
              "leave it out." if can_exclude else
              "Exclude topics at topic level (the taxonomy keeps exclusions per topic)." if topics is not None else
              "This run is not matched to the taxonomy: open it on the Taxonomy page to exclude topics."))
# keyed by the workspace and the fit (a keyed editor keeps its edits by row position: the same key in
# another workspace would put this one's weights on that one's topics)
editor_key = common.selection_key("mx_editor", common.output_scope(ws, run_name), level,
                                  st.session_state.get("mx_editor_gen", 0))
edited = st.data_editor(editor, key=editor_key, hide_index=True, width="stretch",
                        disabled=["id", "label", "tokens"] + ([] if can_exclude else ["exclude"]),
                        column_config={"manual weight %": st.column_config.NumberColumn(min_value=0.0, max_value=100.0,
                                                                                        format="%.2f")})
flips = [(tid, bool(x)) for tid, x, was in zip(edited["id"], edited["exclude"], editor["exclude"]) if bool(x) != bool(was)]
if flips:
    from gem.taxonomy import StaleEditError, Taxonomy

    who = common.author()
    if not who:
        st.warning("Enter your name in the sidebar to exclude topics: exclusions are saved in the taxonomy with "
                   "their author.")
    else:
        tax = Taxonomy(ws.taxonomy_db)
        problems = []
        for tid, value in flips:
            try:
                tax.update_topic(str(tid), int(tax.topic(str(tid))["version"]), who, excluded=value)
            except (StaleEditError, ValueError, KeyError) as exc:
                problems.append(str(exc))
        st.session_state["mx_editor_gen"] = st.session_state.get("mx_editor_gen", 0) + 1
        st.session_state["mx_problems"] = problems
        st.rerun()
for problem in st.session_state.pop("mx_problems", []):
    st.error(common.plain(problem))
overrides = {str(i): float(w) / 100 for i, w in zip(edited["id"], edited["manual weight %"]) if pd.notna(w)}
build = dict(strategy=strategy, level=level, token_budget=float(budget) if budget else None,
             max_epochs=float(max_epochs), temperature=float(temperature), overrides=overrides)
try:
    mixture, _ = inputs.build(**build)
except mx.MixtureError as exc:
    st.error(common.plain(exc))
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
    st.warning(common.plain(w))
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
# no key: the default name follows the run, strategy and level (a keyed widget would keep a stale one)
name = e1.text_input("Bundle name", value=f"{run_name}-{strategy}" + ("-parent" if level == "parent" else ""))
formats = e2.multiselect("Formats", list(mx.FORMATS), default=list(mx.FORMATS), key="mx_formats")
st.caption("The same bundle from the command line:")
st.code(mx.export_command(ws.root, run_name, name, formats, **build), language="bash")
export_scope = common.output_scope(ws, run_name)  # the bundle below is this workspace's, of this fit of the run
if st.button("Export bundle", type="primary", key="mx_export"):
    try:
        from gem.store import validate_name

        with st.spinner("Scoring documents (GIS) and writing the bundle…"):
            path, report = mx.export_run(ws, run_name, ws.exports_dir / validate_name(name, "bundle name"),
                                         formats=formats or list(mx.FORMATS), **build)
    except (ValueError, OSError) as exc:
        st.error(common.plain(f"Export failed, nothing written: {exc}"))
    else:
        common.keep_output("mx_last_export", export_scope, (str(path), mx.bundle_zip_bytes(path), report["formats"]))
last = common.kept_output("mx_last_export", export_scope)
if last:
    path, data, fmts = last
    st.success(common.plain(f"Wrote and validated {path.rsplit('/', 1)[-1]} ({', '.join(fmts)})."))
    st.download_button("Download the bundle (zip)", data, file_name=f"{path.rsplit('/', 1)[-1]}.zip",
                       mime="application/zip", key="mx_download")
