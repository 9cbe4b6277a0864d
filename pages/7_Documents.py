"""Documents: search the corpus (full-text or semantic), select results, exclude / include / tag /
annotate them in bulk (gem.flags), undo, see every flag with its author, and ring the results on
the Clusters maps. Logic lives in gem.search and gem.flags; corpus text is shown as plain text."""
import time

import streamlit as st

from gem.flags import REASONS, DocFlags
from gem.search import search
from gem.store import Workspace
from pages import common


@st.cache_data(max_entries=32, show_spinner=False)
def cached_search(root: str, query: str, semantic_search: bool, k: int, representation: str, run: str | None,
                  stamp: tuple, _analysis=None):
    """gem.search.search once per query: ``stamp`` changes with the corpus, the embeddings searched,
    the run, the flags and taxonomy (topics, flag columns) and whether GIS is shown (``_analysis``)."""
    return search(Workspace(root), query, k=k, semantic_search=semantic_search, representation=representation,
                  run=run, analysis=_analysis)

st.title("Documents")
ws = common.workspace()
if common.workspace_missing(ws):
    st.stop()
if not ws.has_corpus():
    st.warning("No corpus in this workspace yet: open or upload one on the Home page.")
    st.stop()
reps = ws.representations()
flags = DocFlags(ws)
MESSAGES = "doc_messages"  # [(kind, message)] of the last action, kept for this workspace until the next action
for kind, message in common.kept_output(MESSAGES, common.output_scope(ws)) or []:
    (st.success if kind == "ok" else st.error)(common.plain(message))

# ---------------------------------------------------------------------------- search
with st.container(border=True):
    q1, q2, q3 = st.columns([4, 2, 1])
    query = q1.text_input("Search the corpus", key="doc_query", placeholder="words or a phrase, then Enter")
    kind = q2.radio("Kind", ["full-text", "semantic"], horizontal=True, key="doc_kind",
                    help="Full-text: case-insensitive; documents holding the phrase first, then those holding every "
                         "word. Semantic: the query embedded with the corpus's own model, nearest documents by cosine.")
    k = q3.number_input("Results", min_value=1, max_value=1000, value=50, step=10, key="doc_k")

settings = common.fit_settings(ws) if reps else None
run_name = settings.slug() if settings is not None and (ws.run_dir(settings.slug()) / "params.json").exists() else None
result = None
if query.strip():
    representation = settings.representation if settings is not None else "final"
    analysis = common.cached_analysis(run_name, ws) if run_name else None
    stamp = (common.mtime(ws.corpus_path), common.mtime(ws.embeddings_path(representation)), common.flags_mtime(ws),
             common.params_mtime(ws, run_name) if run_name else None, analysis is not None)
    try:
        started = time.perf_counter()
        result = cached_search(str(ws.root), query, kind == "semantic", int(k), representation, run_name, stamp,
                               _analysis=analysis)
        reused = time.perf_counter() - started < 0.5 * result.seconds  # served by the cache, not searched now
    except (ValueError, OSError) as exc:
        st.error(common.plain(exc))

selected: list[str] = []  # document ids, never row positions
if result is not None:
    table = result.table
    what = "match" if result.kind == "full-text" else "searched"
    st.caption(common.plain(f"{result.n_matches:,} documents {what}; showing {len(table):,} "
                            f"({result.seconds * 1000:.0f} ms{', reused' if reused else ''})"
                            + (f"; topics of the current fit {run_name}"
                                                                   if run_name else "")))
    if len(table):
        result_ids = table["id"].astype(str)
        # a new table is a new widget: Streamlit keeps a keyed table's selected row positions when its
        # data changes, which would select documents nobody picked. Keyed by what produced the table
        # (the stamp: corpus, embeddings, flags, run), so it starts with nothing selected
        digest = common.selection_key("", str(ws.root), query, kind, int(k), stamp, result_ids)
        event = st.dataframe(table, hide_index=True, width="stretch", key=f"doc_results{digest}", on_select="rerun",
                             selection_mode="multi-row",
                             column_config={"snippet": st.column_config.TextColumn("snippet", width="large")})
        try:
            picked = [int(r) for r in event.selection.rows if 0 <= int(r) < len(table)]
        except (AttributeError, TypeError, ValueError):
            picked = []
        use_all = st.checkbox("Apply to every result shown", key=f"doc_all{digest}",
                              help="Otherwise select rows in the table (click their left edge).")
        selected = result_ids.tolist() if use_all else list(dict.fromkeys(result_ids.iloc[picked]))
        if st.button("Ring these results on the Clusters maps", key="doc_show_map"):
            common.keep_output(common.KEY_SEARCH_HIGHLIGHT, common.output_scope(ws),  # drawn for this workspace only
                               (result.query, table["id"].astype(str).tolist()))
            st.switch_page("pages/2_Clusters.py")


# ---------------------------------------------------------------------------- bulk actions
def _say(kind: str, message: str) -> None:
    common.keep_output(MESSAGES, common.output_scope(ws), [(kind, message)])


def _apply(action: str, ids: list[str], **kw) -> None:
    """Run a flag action on exactly ``ids``: refused (nothing written) unless they are the ids the
    Curate panel showed as selected before the click (the table may have changed in between)."""
    if action != "undo" and not as_shown:
        _say("error", common.SELECTION_CHANGED)
        return
    who = common.author()
    if not who:
        _say("error", "Enter your name in the sidebar first: every flag is saved with its author.")
        return
    try:
        fn = getattr(flags, action)
        res = fn(who, **kw) if action == "undo" else fn(ids, author=who, **kw)
    except ValueError as exc:
        _say("error", str(exc))
    else:
        _say("ok", res.summary())


ACTIONS = ("doc_exclude", "doc_include", "doc_add_tag", "doc_remove_tag", "doc_save_note")  # act on the selection
with st.container(border=True):
    st.subheader("Curate")
    # what the actions below act on, as plain text (ids are untrusted): the ids themselves
    as_shown, shown_before = common.selection_guard("doc_shown", ws, selected)
    st.caption(common.plain(common.selection_text(selected) + "."))
    st.caption("Excluded documents leave the next fit (sidebar: Fit without excluded documents), GIS, keywords, "
               "the student and every export. Saved with your name.")
    a1, a2, a3 = st.columns([1, 2, 2])
    reason = a1.selectbox("Reason", REASONS, key="doc_reason")
    note = a2.text_input("Note", key="doc_note", help="Stored with an exclusion, or set alone with Save note.")
    tag = a3.text_input("Tag", key="doc_tag", placeholder="a short label")
    b = st.columns(6)
    # disabled with nothing selected, except for a click on a selection shown before that vanished
    # since (the table changed): Streamlit would drop it silently; _apply refuses it and says so
    none = not selected and not (shown_before and common.clicked(*ACTIONS))
    if b[0].button("Exclude", key="doc_exclude", type="primary", disabled=none):
        _apply("exclude", selected, reason=reason, note=note or None)
        st.rerun()
    if b[1].button("Include again", key="doc_include", disabled=none):
        _apply("include", selected)
        st.rerun()
    if b[2].button("Add tag", key="doc_add_tag", disabled=none or not tag.strip()):
        _apply("tag", selected, tag=tag)
        st.rerun()
    if b[3].button("Remove tag", key="doc_remove_tag", disabled=none or not tag.strip()):
        _apply("untag", selected, tag=tag)
        st.rerun()
    if b[4].button("Save note", key="doc_save_note", disabled=none):
        _apply("note", selected, note=note)
        st.rerun()
    if b[5].button("Undo my last edit", key="doc_undo",
                   help="Reverts your latest batch of flag edits (refused when someone changed those documents "
                        "since). `gem flag --undo` reverts the latest of anyone."):
        _apply("undo", [], author_only=True)
        st.rerun()

# ---------------------------------------------------------------------------- current flags
current = flags.table()
st.subheader("Flagged documents")
if not len(current):
    st.caption("No document is flagged yet.")
else:
    st.caption(f"{int(current['excluded'].sum()):,} excluded, {len(current):,} flagged in all.")
    frame = common.corpus(ws)
    texts = frame["text"].set_axis(frame["id"].astype(str))
    shown = current.assign(tags=[", ".join(t) for t in current["tags"]],
                           text=texts.reindex(current["id"].astype(str)).fillna("").str.slice(0, 200).to_numpy())
    st.dataframe(shown, hide_index=True, width="stretch", key="doc_flags_table",
                 column_config={"text": st.column_config.TextColumn("text", width="large")})
with st.expander("Edit history"):
    history = flags.history()
    if len(history):
        st.dataframe(history, hide_index=True, width="stretch", key="doc_history")
    else:
        st.caption("No edits yet.")
st.caption("From the command line: `gem search -w WS \"query\" --ids-only | gem flag -w WS --exclude --reason junk "
           "--ids-file -`; `gem flag -w WS --list`; `gem flag -w WS --undo`.")
