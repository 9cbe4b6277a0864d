"""Taxonomy: topics ranked by GIS, their top documents, names / parents / exclusions edited in place
and saved at once to the workspace taxonomy (SQLite, stable topic ids that survive re-fits).

Every curator text and corpus text is shown as plain text (st.text / st.dataframe), never markdown.
"""
import numpy as np
import pandas as pd
import streamlit as st

from gem.gis import nearest_topics, topic_hierarchy
from gem.plots import gis_by_topic_chart, taxonomy_tree
from gem.taxonomy import MAX_SPLIT_K, MIN_SPLIT_K, REVIEW_STATES, StaleEditError, topic_rows
from gem.workspace_ops import propose_topic_split
from pages import common

EDITOR_GEN = "tx_editor_gen"  # the editor's key carries a generation: a new key drops the browser's edits
ROWS = "tx_rows"              # (topic id, version) per editor row, as the curator saw them
REFUSED = "tx_refused"        # rows of edits refused as stale: field, refused value, stored value
TOPIC = "tx_topic"
SPLIT = "tx_split_proposal"  # the previewed split (gem.taxonomy.SplitProposal), until accepted or discarded
EDITABLE = ["name", "parent", "description", "excluded", "review", "notes"]
MEMBER_ROWS = 500  # the members table of one topic: its lowest-GIS documents

st.title("Taxonomy")
ws, reps = common.embedded_workspace()
frame = common.corpus(ws)
ws_scope = common.output_scope(ws)  # topic ids (T001) repeat across workspaces: what this page keeps is scoped


def _namer_settings():
    """The optional LLM namer, configured by GEM_NAMER_URL / GEM_NAMER_MODEL (off by default)."""
    from gem.naming import settings_from_env

    try:
        return settings_from_env()
    except ValueError as exc:
        st.warning(common.plain(f"LLM naming is misconfigured: {exc}"))
        return None


# ---------------------------------------------------------------------------- which fit
source, is_current = common.run_source(ws, key="tx_source")
run_key = source
try:
    run_key = common.current_run_name(ws, source, is_current)
    analysis = common.run_analysis(run_key, ws)
    tax, report = common.synced_taxonomy(run_key, ws, analysis)
except (ValueError, OSError, KeyError) as exc:
    st.error(common.plain(f"Cannot read run {'' if is_current else run_key}: {exc}"))
    st.stop()
rows_of_corpus = analysis.extra["rows"]
if report is not None and (report.matched or report.retired or report.revived):  # a first sync compares nothing
    parts = [f"{len(report.matched)} topics kept their ids and labels"]
    if report.new:
        parts.append(f"new: {', '.join(report.new.values())}")
    if report.revived:
        parts.append(f"back from retirement: {', '.join(report.revived.values())}")
    if report.retired:
        parts.append(f"retired (kept, with their labels): {', '.join(report.retired)}")
    st.info(common.plain("Matched to the previous taxonomy: " + "; ".join(parts) + "."))

# ---------------------------------------------------------------------------- apply pending edits
def _editor_key() -> str:
    return f"tx_editor_{st.session_state.get(EDITOR_GEN, 0)}"


def _reset_editor() -> None:
    """Show the database again: the editor under a new key (the browser drops what was typed)."""
    st.session_state.pop(_editor_key(), None)
    st.session_state[EDITOR_GEN] = st.session_state.get(EDITOR_GEN, 0) + 1


author = common.author()
pending = st.session_state.get(_editor_key()) or {}
edited_rows = pending.get("edited_rows") or {}
seen = common.kept_output(ROWS, ws_scope) or []
if edited_rows and seen:
    if not author:
        st.warning("Enter your name in the sidebar to save edits: every change is recorded with its author.")
    else:
        saved, errors, refused = [], [], []
        for pos, change in edited_rows.items():
            pos = int(pos)
            if pos >= len(seen):
                continue
            tid, version = seen[pos]
            fields = {c: v for c, v in change.items() if c in EDITABLE}
            if "parent" in fields:
                fields["parent"] = (str(fields["parent"]).split(" ", 1)[0] if fields["parent"] else None)
            if "excluded" in fields:
                fields["excluded"] = bool(fields["excluded"])
            try:
                tax.update_topic(tid, version, author, **fields)
                saved.append(tid)
            except StaleEditError as exc:
                errors.append(str(exc))
                stored = tax.topic(tid)
                refused += [{"topic": tid, "field": f, "your value (not saved)": str(v),
                             "stored value": str(stored.get(f)), "stored by": str(stored.get("updated_by") or "")}
                            for f, v in fields.items()]
            except (ValueError, KeyError) as exc:
                errors.append(f"{tid}: {exc}")
        _reset_editor()  # the table below is rebuilt from the database
        common.keep_output(REFUSED, ws_scope, refused)
        if saved:
            st.toast(common.plain(f"Saved {', '.join(saved)} as {author}"))
        for e in errors:
            st.error(common.plain(e))
refused_rows = common.kept_output(REFUSED, ws_scope)
if refused_rows:
    st.caption("Not saved: another curator changed these topics first. The table shows the stored values; "
               "re-type yours to overwrite them.")
    st.dataframe(pd.DataFrame(refused_rows), hide_index=True, key="tx_refused_table")

# ---------------------------------------------------------------------------- the table
topics = tax.topics(run_key)
# one row per stable id: clusters merged into one topic are summed (see gem.taxonomy.topic_rows)
t = topic_rows(analysis.table.merge(topics.drop(columns=["n_docs", "keywords"]), on="cluster", how="left"))
t = t.sort_values("mean_gis", ascending=False, na_position="last").reset_index(drop=True)
everyone = tax.topics()
split_children = everyone[everyone["split_from"].isin(set(t["id"])) & (everyone["status"] != "retired")]
split_into = split_children.groupby("split_from")["id"].agg(lambda s: ", ".join(sorted(s))).to_dict()
cluster_rows = len(t)
if len(split_children):  # the children of split topics: no cluster of their own, sizes from the split
    t = pd.concat([t, split_children.drop(columns=["cluster"]).assign(n_tokens=np.nan, share=np.nan, kappa=np.nan,
                                                                       mean_gis=np.nan, clusters=[[]] * len(split_children))],
                  ignore_index=True)
groups = tax.groups()
group_label = {g: f"{g} {n}" for g, n in zip(groups["id"], groups["name"])}
progress = tax.review_progress()
st.progress(progress["fraction_approved"], text=progress["text"])

view = pd.DataFrame({
    "id": t["id"],
    "name": t["name"],
    "parent": [group_label.get(p, "") if isinstance(p, str) else "" for p in t["parent"]],
    "description": t["description"],
    "excluded": t["excluded"].astype(bool),
    "review": t["review"],
    "status": [(f"{st_} · confirm the name" if flag else st_)
               + (f" · split into {split_into[i]}" if i in split_into else "")
               + (f" · child of {p}" if isinstance(p, str) else "")
               for i, st_, flag, p in zip(t["id"], t["status"], t["needs_confirmation"].fillna(False).astype(bool),
                                          t["split_from"])],
    "keywords": [", ".join(k) for k in t["keywords"]],
    "documents": t["n_docs"].astype("Int64"),
    "tokens": t["n_tokens"].round().astype("Int64"),
    "share": t["share"] * 100,
    "kappa": t["kappa"],
    "GIS": t["mean_gis"],
    "notes": t["notes"],
})
common.keep_output(ROWS, ws_scope, list(zip(t["id"], t["version"].astype(int))))
unconfirmed = t.loc[t["needs_confirmation"].fillna(False).astype(bool), "id"].tolist()
if unconfirmed:
    st.warning(common.plain(f"The content of {', '.join(unconfirmed)} moved since they were named (the re-fit "
                            "matched them to clusters with other documents): check each name, then rename or "
                            "approve the topic to confirm it."))
st.caption("Topics ranked by mean GIS (confidence + centrality + local density of their documents). "
           "Edit names, parents, descriptions, exclusions and review status in place: each edit is saved "
           "at once, with your name.")
st.data_editor(
    view, key=_editor_key(), hide_index=True, width="stretch", num_rows="fixed",
    disabled=["id", "status", "keywords", "documents", "tokens", "share", "kappa", "GIS"],
    column_config={
        "name": st.column_config.TextColumn("name", max_chars=200),
        "parent": st.column_config.SelectboxColumn("parent", options=[""] + list(group_label.values())),
        "review": st.column_config.SelectboxColumn("review", options=list(REVIEW_STATES), required=True),
        "share": st.column_config.NumberColumn("share %", format="%.1f"),
        "kappa": st.column_config.NumberColumn("kappa", format="%.0f"),
        "GIS": st.column_config.NumberColumn("GIS", format="%.2f"),
    },
)

with st.expander("Parent groups"):
    c1, c2 = st.columns(2)
    with c1:
        n_par = int(st.number_input("Groups to propose", min_value=2, max_value=max(2, len(t)),
                                    value=max(2, int(round(np.sqrt(len(t))))), key="tx_nparents"))
        if st.button("Propose parents from the mean directions", key="tx_propose",
                     help="Average-linkage clustering of the topics' mean directions (cosine). Only topics "
                          "without a parent get one; your own choices are kept."):
            if not author:
                st.warning("Enter your name in the sidebar first.")
            else:
                by_cluster = topic_hierarchy(analysis.mean_directions, n_parents=n_par)
                tax.apply_hierarchy(by_cluster, author=author, run_name=run_key)
                _reset_editor()
                st.rerun()
    with c2:
        new_group = st.text_input("New group name", key="tx_group_name")
        if st.button("Add group", key="tx_add_group") and new_group.strip():
            if not author:
                st.warning("Enter your name in the sidebar first.")
            else:
                try:
                    gid = tax.add_group(new_group.strip(), author)
                except ValueError as exc:  # a name over the length limit, a NUL character
                    st.error(common.plain(exc))
                else:
                    st.session_state["tx_group_done"] = f"Added group {gid}: {new_group.strip()}"
                    st.rerun()
    if st.session_state.get("tx_group_done"):  # after the rerun that lists the new group
        st.success(common.plain(st.session_state.pop("tx_group_done")))
    if len(groups):
        st.dataframe(groups[["id", "name", "description"]], hide_index=True)

# ---------------------------------------------------------------------------- merge and split
def _merge(ids: list, into: str) -> None:
    try:
        survivor = tax.merge_topics(ids, author, into=into)
    except (ValueError, KeyError) as exc:
        st.session_state["tx_merge_msg"] = str(exc)
        return
    st.session_state["tx_merge_done"] = f"Merged {', '.join(i for i in ids if i != survivor)} into {survivor}"
    _reset_editor()


with st.expander("Merge or split topics"):
    live = t.loc[t["status"] != "retired", ["id", "name"]]
    label_of = {i: f"{i} · {n}" for i, n in zip(live["id"], live["name"])}
    st.caption("Merge: the topics become one stable id (the kept one's name, description and exclusion stay; the "
               "others retire pointing to it). Re-fits map their clusters to it. Split: GEM is fitted inside a topic; "
               "its documents go to the children (new ids), in this and every later run.")
    chosen_merge = st.multiselect("Topics to merge", list(label_of), key="tx_merge_ids",
                                  format_func=lambda i: label_of.get(i, i))
    keep = st.selectbox("Keep the id of", chosen_merge or [""], key="tx_merge_into",
                        format_func=lambda i: label_of.get(i, i))
    sure = st.checkbox("Yes, merge these topics", key="tx_merge_confirm", disabled=len(chosen_merge) < 2)
    if st.button("Merge", key="tx_merge", disabled=len(chosen_merge) < 2 or not sure or not author):
        _merge(chosen_merge, keep)
        st.rerun()
    if not author:
        st.caption("Enter your name in the sidebar to merge or split.")
    if st.session_state.get("tx_merge_msg"):
        st.error(common.plain(st.session_state.pop("tx_merge_msg")))
    if st.session_state.get("tx_merge_done"):
        st.success(common.plain(st.session_state.pop("tx_merge_done")))

    splittable = [i for i in t["id"][:cluster_rows] if i not in split_into]
    c1, c2 = st.columns([3, 1])
    split_id = c1.selectbox("Topic to split", splittable, key="tx_split_id", format_func=lambda i: label_of.get(i, i))
    split_k = int(c2.number_input("children (k)", min_value=MIN_SPLIT_K, max_value=MAX_SPLIT_K, value=2,
                                  key="tx_split_k"))
    split_scope = common.output_scope(ws, run_key)  # a proposal is accepted only into the taxonomy it came from
    if st.button("Preview the split", key="tx_split_preview", disabled=split_id is None):
        try:
            with st.spinner("Fitting GEM inside the topic…"):
                common.keep_output(SPLIT, split_scope, propose_topic_split(ws, tax, run_key, split_id, split_k))
        except (ValueError, KeyError, OSError) as exc:
            common.drop_output(SPLIT)
            st.error(common.plain(f"Cannot split {split_id}: {exc}"))
    proposal = common.kept_output(SPLIT, split_scope)
    if proposal is not None and proposal.run == run_key:
        st.text(f"Preview: {proposal.topic_id} into {proposal.k} children (nothing is stored yet)")
        st.dataframe(proposal.table(), hide_index=True, width="stretch", key="tx_split_table")
        a1, a2 = st.columns(2)
        if a1.button("Accept the split", key="tx_split_accept", disabled=not author):
            try:
                kids = tax.accept_split(proposal, author)
                st.session_state["tx_merge_done"] = f"Split {proposal.topic_id} into {', '.join(kids)}"
            except (ValueError, KeyError) as exc:
                st.session_state["tx_merge_msg"] = str(exc)
            common.drop_output(SPLIT)
            _reset_editor()
            st.rerun()
        if a2.button("Discard", key="tx_split_discard"):
            common.drop_output(SPLIT)
            st.rerun()

# ---------------------------------------------------------------------------- one topic
st.subheader("Topic")
t = t.iloc[:cluster_rows]  # the rows with a cluster of this run (split children have none)
order = list(t["id"])
names = dict(zip(t["id"], t["name"]))
if st.session_state.get(TOPIC) not in order:
    st.session_state[TOPIC] = order[0]


def _next_unreviewed() -> None:
    fresh = tax.topics(run_key).set_index("id")["review"]
    cur = order.index(st.session_state[TOPIC])
    for tid in order[cur + 1:] + order[: cur + 1]:  # GIS order, wrapping around
        if fresh.get(tid) == "unreviewed" and tid != st.session_state[TOPIC]:
            st.session_state[TOPIC] = tid
            return


def _approve(tid: str, version: int, who: str) -> None:
    if not who:
        st.session_state["tx_msg"] = "Enter your name in the sidebar to record the review."
        return
    try:
        tax.update_topic(tid, version, who, review="approved")
    except StaleEditError as exc:
        st.session_state["tx_msg"] = str(exc)
        return
    _reset_editor()
    _next_unreviewed()
    nxt = st.session_state[TOPIC]
    st.session_state["tx_done"] = f"Approved {tid} ({names.get(tid, '')}); " + (
        f"next unreviewed: {nxt} ({names.get(nxt, '')})" if nxt != tid else "no unreviewed topic left")


c1, c2, c3 = st.columns([3, 1, 1])
chosen = c1.selectbox("Topic", order, key=TOPIC, format_func=lambda i: f"{i} · {names.get(i, '')}")
c2.button("Next unreviewed", key="tx_next", on_click=_next_unreviewed,
          help="Walk the topics that nobody has reviewed yet, in GIS order.")
row = t[t["id"] == chosen].iloc[0]
k = int(row["cluster"])
c3.button("Approve and next", key="tx_approve", disabled=row["review"] == "approved", on_click=_approve,
          args=(chosen, int(row["version"]), author))
if st.session_state.get("tx_msg"):
    st.error(common.plain(st.session_state.pop("tx_msg")))
if st.session_state.get("tx_done"):  # what "Approve and next" did
    st.success(common.plain(st.session_state.pop("tx_done")))

st.text(f"{chosen}: {row['name']}")  # curator text: plain
st.caption(f"{int(row['n_docs'])} documents · {int(row['n_tokens'])} tokens · share {row['share']:.1%} · "
           f"kappa {row['kappa']:.0f} · mean GIS {row['mean_gis']:.2f} · tightness {row['tightness']:.2f} · "
           f"status {row['status']} · review {row['review']}")
st.text("Keywords: " + (", ".join(row["keywords"]) or "-"))
namer_settings = _namer_settings()
if namer_settings is not None and st.button("Suggest a name (LLM)", key="tx_llm",
                                            help=common.plain(f"Ask {namer_settings.model} at {namer_settings.display_endpoint}, "
                                                              "from the keywords and the top-GIS documents.")):
    from gem.naming import LLMNamer, NamingError

    top_rows = analysis.representatives.get(k, np.array([], dtype=int))
    try:
        suggestion = LLMNamer(namer_settings).name(
            list(row["keywords"]), [str(x) for x in frame["text"].to_numpy()[rows_of_corpus[top_rows]]])
        common.keep_output("tx_suggestion", ws_scope, (chosen, suggestion))
    except NamingError as exc:
        st.error(common.plain(exc))
sugg = common.kept_output("tx_suggestion", ws_scope)  # another workspace's T001 is another topic
if sugg and sugg[0] == chosen:
    st.text(f"Suggested name: {sugg[1]}")
    if st.button("Use the suggested name", key="tx_use_suggestion") and author:
        try:
            tax.update_topic(chosen, int(row["version"]), author, name=sugg[1])
            common.drop_output("tx_suggestion")
            _reset_editor()
            st.rerun()
        except ValueError as exc:  # stale, or another live topic has that name (the message suggests one)
            st.error(common.plain(exc))

texts = frame["text"].to_numpy()
ids = frame["id"].to_numpy()
reps_rows = analysis.representatives.get(k, np.array([], dtype=int))
left, right = st.columns(2)
with left:
    st.markdown("**Top documents by GIS**")
    st.dataframe(pd.DataFrame({
        "GIS": analysis.gis[reps_rows].round(2),
        "id": ids[rows_of_corpus[reps_rows]],
        "text": [str(x)[:500] for x in texts[rows_of_corpus[reps_rows]]],
    }), hide_index=True, width="stretch")
with right:
    st.markdown("**Random members**")
    members = np.flatnonzero(np.isin(analysis.labels, row["clusters"]))  # every cluster of a merged topic
    rng = np.random.default_rng(k)
    pick = np.sort(rng.choice(members, size=min(8, members.size), replace=False)) if members.size else members
    st.dataframe(pd.DataFrame({
        "GIS": analysis.gis[pick].round(2),
        "id": ids[rows_of_corpus[pick]],
        "text": [str(x)[:500] for x in texts[rows_of_corpus[pick]]],
    }), hide_index=True, width="stretch")

with st.expander(common.plain(f"Curate the members of {chosen} (lowest GIS first: the least typical documents)")):
    # off-topic pages and junk inside a good topic sit at its low-GIS end
    order_rows = members[np.argsort(analysis.gis[members], kind="stable")][:MEMBER_ROWS]
    member_table = pd.DataFrame({"GIS": analysis.gis[order_rows].round(2),
                                 "id": ids[rows_of_corpus[order_rows]].astype(str),
                                 "text": [str(x)[:500] for x in texts[rows_of_corpus[order_rows]]]})
    st.caption(f"{len(order_rows):,} of {members.size:,} documents; select rows (their left edge), then exclude "
               "or tag them.")
    # keyed by workspace, run, topic and the rows shown: another topic, a re-fit or a rescoring (new
    # members, another order) is a new table that starts with nothing selected (Streamlit would keep
    # the selected row positions, i.e. select other documents)
    members_key = common.selection_key("tx_members", str(ws.root), run_key, common.params_mtime(ws, run_key),
                                       chosen, member_table["id"])
    event = st.dataframe(member_table, hide_index=True, width="stretch", key=members_key,
                         on_select="rerun", selection_mode="multi-row",
                         column_config={"text": st.column_config.TextColumn("text", width="large")})
    picked = [int(r) for r in (getattr(getattr(event, "selection", None), "rows", []) or [])
              if 0 <= int(r) < len(member_table)]
    common.flag_form(ws, member_table["id"].iloc[picked].tolist(), key="tx_flag")  # the selected rows' ids

by_cluster = dict(zip(topics["cluster"].astype(int), topics["id"]))
near = nearest_topics(analysis.mean_directions, k, n=5)
st.markdown("**Nearest topics** (cosine of mean directions)")
st.dataframe(pd.DataFrame({
    "id": [by_cluster.get(j, str(j)) for j, _ in near],
    "name": [names.get(by_cluster.get(j), "") for j, _ in near],
    "cosine": [round(c, 3) for _, c in near],
}), hide_index=True)

c1, c2 = st.columns(2)
kind = c1.radio("Hierarchy view", ["sunburst", "treemap"], horizontal=True, key="tx_tree_kind")
size_by = c2.radio("Size by", ["documents", "tokens"], horizontal=True, key="tx_tree_size")
st.plotly_chart(taxonomy_tree(
    t["id"], t["name"], [p if isinstance(p, str) else None for p in t["parent"]],
    t["n_docs"] if size_by == "documents" else t["n_tokens"], dict(zip(groups["id"], groups["name"])),
    kind=kind, highlight=chosen), width="stretch", key="tx_tree")
with st.expander("Mean GIS per topic"):
    st.plotly_chart(gis_by_topic_chart(t["id"], t["name"], t["mean_gis"], t["n_docs"]), width="stretch",
                    key="tx_gis_chart")

with st.expander("Export / import taxonomy.json"):
    import json

    st.download_button("Download taxonomy.json", json.dumps(tax.export_json(), indent=2, ensure_ascii=False),
                       file_name="taxonomy.json", mime="application/json", key="tx_download")
    up = st.file_uploader("Import taxonomy.json (merged by topic id), or an export bundle's zip holding one "
                          "(the whole bundle is verified against its MANIFEST.json first)", type=["json", "zip"],
                          key="tx_upload")
    if up is not None and st.button("Import", key="tx_import"):
        if not author:
            st.warning("Enter your name in the sidebar first.")
        else:
            try:
                raw = up.getvalue()
                if up.name.lower().endswith(".zip"):
                    from gem.mixture import read_bundle_zip

                    raw = read_bundle_zip(raw, ["taxonomy.json"])[1]["taxonomy.json"]
                counts = tax.import_json(json.loads(raw.decode("utf-8-sig")), author)
                st.success(f"Imported: {counts['inserted']} new, {counts['updated']} updated, "
                           f"{counts['unchanged']} unchanged")
            except (ValueError, UnicodeDecodeError) as exc:
                st.error(common.plain(f"{up.name}: {exc}"))
