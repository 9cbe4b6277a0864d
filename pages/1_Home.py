"""Home: pick the corpus, embed it, and see how anisotropic its embeddings are."""
import tempfile
from pathlib import Path

import streamlit as st

from gem.corpus import NEAR_DUPLICATE_THRESHOLD, read_ingest_report
from gem.embed import describe_precision, precision_choices
from gem.devices import configured_device
from gem.plots import cosine_histogram
from gem.store import read_json
from pages import common

st.title("GEM curation studio")
st.caption(
    "Balanced clustering of a pre-training corpus on the hypersphere (von Mises-Fisher mixture with "
    "a frozen uniform prior and a mass-balance regulariser), next to the k-means baselines."
)

# ---------------------------------------------------------------------------- corpus picker
st.header("Corpus")
ws = common.workspace()
limit_mb = st.get_option("server.maxUploadSize")
DEDUP_LABELS = {
    "exact": "drop exact copies",
    "near": f"drop exact and near copies (Jaccard ≥ {NEAR_DUPLICATE_THRESHOLD:g})",
    "none": "keep duplicates",
}


def _show_load(report, name: str, where) -> None:
    """Plain text only: file names, ids and reasons come from the user's data."""
    st.success("Corpus loaded.")
    st.text(f"{name} -> workspace {where}")
    if report is None:
        st.text("(already ingested with this duplicate setting: the existing workspace was opened)")
    elif report.n_rejected:
        st.warning(
            f"{report.n_records:,} records read: {report.n_accepted:,} accepted, {report.n_rejected:,} rejected "
            "(see the ingest report below)."
        )


if st.session_state.get("home_loaded"):
    _show_load(*st.session_state.pop("home_loaded"))
source = st.radio(
    "Open", ["Current workspace", "Upload a file", "Server-side path"], horizontal=True, key="home_source",
    help="The shipped sample opens by default, with embeddings and layouts ready.",
)
if source != "Current workspace":
    dedup = st.radio(
        "Duplicate texts", list(DEDUP_LABELS), format_func=DEDUP_LABELS.get, horizontal=True, key="home_dedup",
        help="Texts are compared after Unicode NFKC normalisation, case folding and whitespace collapsing; the first "
        f"copy is kept. Near: word 3-gram shingle sets with a MinHash-estimated Jaccard similarity ≥ "
        f"{NEAR_DUPLICATE_THRESHOLD:g} (about one edited word in fifty). Dropped rows go to the rejects file as "
        "'duplicate of <id>'. Copies inflate a topic's mass and fill its representatives.",
    )
GENERATE_IDS = "(none: ids from file name and line)"


def _ingest(path, name, dedup, **fields):
    """common.ingest with a progress bar (records and bytes read) while the file streams in."""
    import time

    bar = st.progress(0.0, text="Validating the corpus…")
    shown = [float("-inf")]  # monotonic time has no fixed origin: the first state always shows

    def _progress(records: int, done: int, total: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= 0.25 or done >= total:
            shown[0] = now
            bar.progress(min(done / total, 1.0) if total else 1.0,
                         text=f"Validating the corpus: {records:,} records, {done / 1e6:,.1f} of {total / 1e6:,.1f} MB")

    try:
        return common.ingest(path, name, dedup, progress=_progress, **fields)
    finally:
        bar.empty()


def _choose_columns(columns: list[str]) -> dict | None:
    """The text / id / label columns to load (defaults: text, id, source and category when present).
    Returns the loader's options (empty when the defaults apply), or None until a text column is chosen."""
    has_text = "text" in columns
    with st.expander("Columns", expanded=not has_text):
        if not has_text:
            st.info("This file has no `text` column: choose the column that holds the document text.")
        c1, c2, c3 = st.columns(3)
        text_options = columns if has_text else ["(choose)"] + columns
        text_field = c1.selectbox("Text column", text_options, index=text_options.index("text") if has_text else 0,
                                  key="home_text_field")
        id_options = [GENERATE_IDS] + [c for c in columns if c != text_field]
        id_field = c2.selectbox("Id column", id_options, index=id_options.index("id") if "id" in id_options else 0,
                                key="home_id_field")
        label_options = [c for c in columns if c not in (text_field, id_field)]
        labels = c3.multiselect("Label columns (compared with the clusters)", label_options,
                                default=[c for c in ("source", "category") if c in label_options], key="home_labels")
    if text_field == "(choose)":
        return None
    chosen = {"text_field": text_field, "id_field": None if id_field == GENERATE_IDS else id_field,
              "label_fields": labels}
    defaults = {"text_field": "text", "id_field": "id" if "id" in columns else None,
                "label_fields": [c for c in ("source", "category") if c in columns]}
    return {} if chosen == defaults else chosen


if source == "Upload a file":
    upload = st.file_uploader(
        f"JSONL (.jsonl, .jsonl.gz), CSV or Parquet, one document per record; up to {limit_mb} MB",
        type=["jsonl", "ndjson", "gz", "csv", "parquet"], key="home_upload",
    )
    if upload is not None:
        from gem.corpus import peek_columns

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(upload.name).name
            path.write_bytes(upload.getvalue())

            def _named(exc) -> str:  # the loader names the upload (peek_columns the copy): its name, once
                text = str(exc).replace(str(path), upload.name)
                return common.plain(text if text.startswith(f"{upload.name}: ") else f"{upload.name}: {text}")

            try:
                fields = _choose_columns(peek_columns(path))
            except (ValueError, OSError) as exc:
                st.error(_named(exc))
                fields = None
            key = (upload.file_id, dedup, repr(fields))
            if fields is not None and st.session_state.get("home_ingested") != key:
                try:
                    ws, report = _ingest(path, upload.name, dedup, **fields)
                    st.session_state["home_ingested"] = key
                    st.session_state["home_loaded"] = (report, upload.name, ws.root.name)
                    st.rerun()  # the sidebar names the new workspace and offers its fit settings
                except (ValueError, OSError, KeyError) as exc:  # the loader's own message, app keeps running
                    st.error(_named(exc))
elif source == "Server-side path":
    from gem.access import AccessError, resolve_data_path

    roots = common.data_roots()
    server_path = st.text_input("Path on the server (a corpus file, or a workspace folder)", key="home_path")
    st.caption(common.plain("Files and folders inside the server's data folders only: "
                            + ", ".join(str(r) for r in roots) + " (set by GEM_DATA_ROOTS)."))
    if st.button("Open", key="home_open", disabled=not server_path):
        try:
            path = resolve_data_path(server_path, roots)
            if path.is_dir():  # a workspace opens as it is: only this server's workspaces (the app writes there)
                path = resolve_data_path(path, [common.workspaces_root().resolve()], kinds=("dir",))
            ws, report = _ingest(path, None, dedup)
            st.session_state["home_loaded"] = (report, path.name, ws.root.name)
            st.rerun()
        except AccessError as exc:  # one message whatever the reason: nothing about what exists
            st.error(str(exc))
        except (ValueError, OSError, KeyError) as exc:
            st.error(common.plain(f"{Path(server_path).name}: {exc}"))

if not ws.has_corpus():
    if common.workspace_missing(ws):
        st.stop()
    st.warning(common.plain(f"Workspace {ws.root.name} has no corpus yet: upload a file or give a server-side path."))
    st.stop()

frame = common.corpus(ws)
label_cols = common.label_columns(frame)
c1, c2, c3 = st.columns(3)
c1.metric("documents", f"{len(frame):,}")
if "n_tokens" in frame.columns:
    c2.metric("tokens", f"{int(frame['n_tokens'].sum()):,}")
c3.metric("representations", ", ".join(ws.representations()) or "none yet")
if label_cols:
    with st.expander("Human labels in this corpus"):
        cols = st.columns(len(label_cols))
        for col, name in zip(cols, label_cols):
            col.dataframe(frame[name].value_counts().rename("documents"), width="stretch")
ingest_report = read_ingest_report(ws)
if ingest_report is not None:
    with st.expander(
        f"Ingest report: {ingest_report.n_accepted:,} accepted, {ingest_report.n_rejected:,} rejected "
        f"(duplicates: {ingest_report.dedup})",
        expanded=bool(ingest_report.n_rejected),
    ):
        st.text(ingest_report.summary())
        if ingest_report.n_rejected and ws.rejects_path.exists():
            import pandas as pd

            rejected = pd.read_json(ws.rejects_path, lines=True, nrows=1000, dtype=False)
            cols = [c for c in ("file", "line", "row", "reason", "duplicate_of") if c in rejected.columns]
            st.dataframe(rejected[cols], width="stretch", hide_index=True, key="home_rejects")
            st.caption(f"First {min(len(rejected), 1000):,} rejects; all of them, with the records, are in the rejects file.")
            st.text(str(ws.rejects_path))

# ---------------------------------------------------------------------------- embedding
st.header("Embeddings")
st.caption(
    "`final`: the sentence embedding (MiniLM, 384-d). `layerN`: mean-pooled hidden states of "
    "transformer layer N, an earlier and more anisotropic representation (the cone where k-means collapses). "
    "Embeddings are cached by text hash in the workspace."
)
reps = ws.representations()
device = configured_device()  # where this server embeds ($GEM_DEVICE; the CPU unless set)
e1, e2, e3 = st.columns([2, 1, 1])
with e1:
    target = st.selectbox(
        "Representation to embed", ["final"] + [f"layer{i}" for i in range(1, 7)], key="home_embed_rep",
        help="MiniLM-L6 has 6 layers; layer 3 is a good cone for the collapse demo.",
    )
with e2:
    precision = st.selectbox(
        "Precision", list(precision_choices(device)), key="home_embed_precision",
        help="auto: on a CPU bfloat16 when it has native bf16 (avx512_bf16 or amx_bf16), else float32 (without "
        "those instructions bf16 is emulated and slower); on a GPU ($GEM_DEVICE) bfloat16 where it supports it, "
        "else float16 (GPU only). Vectors agree to cosine ≥ 0.999.",
    )
with e3:
    st.write("")
    go_embed = st.button(
        "Re-embed" if target in reps else "Embed", key="home_embed", type="primary" if not reps else "secondary"
    )
st.caption(f"Precision here: {describe_precision(precision, device)}, on {device}.")
if st.session_state.get("home_embedded"):
    st.success(st.session_state.pop("home_embedded"))
if go_embed:
    import time

    from gem.embed import SentenceTransformerEmbedder, embed_workspace, parse_representation

    bar = st.progress(0.0, text=f"Embedding {len(frame):,} documents ({target})…")
    clock: dict[str, float] = {}

    def _progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - clock.setdefault("start", time.perf_counter())  # from the first batch
        if total:
            rate = f" · {done / elapsed:,.0f} docs/s" if done and elapsed > 0 else ""
            bar.progress(min(done / total, 1.0), text=f"Embedding ({target}): {done:,} / {total:,}{rate}")

    try:
        embedder = SentenceTransformerEmbedder(layer=parse_representation(target), precision=precision, device=device)
        embed_workspace(ws, embedder, representation=target, progress=_progress)
        common.forget_runs()
        # rerun, so the sidebar offers the fit settings of the newly embedded corpus
        st.session_state["home_embedded"] = f"Embedded {len(frame):,} documents ({target})."
        st.rerun()
    except (ValueError, OSError, KeyError) as exc:
        st.error(common.plain(f"Embedding failed: {exc}"))
if target in reps:
    meta_path = ws.embeddings_meta_path(target)
    meta = read_json(meta_path) if meta_path.exists() else {}
    if meta.get("docs_per_second"):
        st.caption(
            f"Last embedding of '{target}' on this server: {meta['n_encoded']:,} documents encoded in "
            f"{meta['encode_seconds']:,.1f} s ({meta['docs_per_second']:,.0f} docs/s, {meta.get('precision')})."
        )

if not reps:
    st.info(
        "No embeddings yet: press Embed. The speed depends on the machine (CPU cores, native bf16, text length); "
        "the progress bar shows the rate measured while it runs."
    )
    st.stop()

# ---------------------------------------------------------------------------- anisotropy
st.header("Anisotropy: how much the embeddings crowd into a cone")
rep = st.selectbox("Representation", reps, key="home_rep", index=reps.index("final") if "final" in reps else 0)


@st.cache_data(max_entries=8, show_spinner=False)
def _anisotropy(root: str, rep: str, mtime: float):
    from gem.metrics import anisotropy, sample_pairwise_cosines

    X = common.embeddings(rep, ws=common.Workspace(root))
    return anisotropy(X), sample_pairwise_cosines(X, n_pairs=20000, random_state=0), int(X.shape[1])


stats, cosines, dim = _anisotropy(str(ws.root), rep, ws.embeddings_path(rep).stat().st_mtime_ns)
m1, m2, m3, m4 = st.columns(4)
m1.metric("mean pairwise cosine", f"{stats['mean_cosine']:.3f}", help="about 0 on a uniform sphere")
m2.metric("first-PC variance share", f"{stats['first_pc_share']:.1%}", help=f"uniform sphere: 1/d = {1 / dim:.2%}")
m3.metric("mean direction length", f"{stats['mean_direction_norm']:.3f}", help="0 when isotropic, 1 when all equal")
m4.metric("effective rank", f"{stats['effective_rank']:.0f} / {dim}")
st.plotly_chart(cosine_histogram(cosines, dim, mean=stats["mean_cosine"]), key="home_cosines")
st.caption(
    f"{len(cosines):,} random pairs; the dashed line is the exact mean over all pairs. The red curve is the "
    f"cosine density for uniformly spread directions in {dim} dimensions; a histogram shifted right of it is "
    "the cone that makes Euclidean k-means collapse."
)

st.divider()
st.page_link("pages/2_Clusters.py", label="Next: fit GEM and k-means side by side on the Clusters page",
             icon=":material/arrow_forward:")
st.caption("K, the balance and the seed of the current fit are in the sidebar: every page shows that one fit.")
