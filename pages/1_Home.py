"""Home: pick the corpus, embed it, and see how anisotropic its embeddings are."""
import tempfile
from pathlib import Path

import streamlit as st

from gem.plots import cosine_histogram
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
source = st.radio(
    "Open", ["Current workspace", "Upload a file", "Server-side path"], horizontal=True, key="home_source",
    help="The shipped sample opens by default, with embeddings and layouts ready.",
)
if source == "Upload a file":
    upload = st.file_uploader(
        f"JSONL, CSV or Parquet with `id` and `text` columns (optional `source`, `category`); up to {limit_mb} MB",
        type=["jsonl", "json", "csv", "parquet"], key="home_upload",
    )
    if upload is not None and st.session_state.get("home_ingested") != upload.file_id:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(upload.name).name
            path.write_bytes(upload.getvalue())
            try:
                with st.spinner("Validating the corpus…"):
                    ws, report = common.ingest(path, display_name=upload.name)
                st.session_state["home_ingested"] = upload.file_id
                st.success(f"Loaded {upload.name} into workspace {ws.root}")
                if report is not None and report.n_rejected:
                    st.warning(report.summary())
            except (ValueError, OSError, KeyError) as exc:  # the loader's own message, app keeps running
                st.error(f"{upload.name}: {exc}")
elif source == "Server-side path":
    server_path = st.text_input("Path on the server (a corpus file, or a workspace folder)", key="home_path")
    if st.button("Open", key="home_open", disabled=not server_path):
        try:
            with st.spinner("Validating the corpus…"):
                ws, report = common.ingest(Path(server_path).expanduser())
            st.success(f"Opened workspace {ws.root}")
            if report is not None and report.n_rejected:
                st.warning(report.summary())
        except (ValueError, OSError, KeyError) as exc:
            st.error(f"{server_path}: {exc}")

if not ws.has_corpus():
    st.warning(f"Workspace {ws.root} has no corpus yet: upload a file or give a server-side path.")
    st.stop()

frame = common.corpus(ws)
label_cols = [c for c in ("source", "category") if c in frame.columns]
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

# ---------------------------------------------------------------------------- embedding
st.header("Embeddings")
st.caption(
    "`final`: the sentence embedding (MiniLM, 384-d). `layerN`: mean-pooled hidden states of "
    "transformer layer N, an earlier and more anisotropic representation (the cone where k-means collapses). "
    "Embeddings are cached by text hash in the workspace."
)
reps = ws.representations()
e1, e2 = st.columns([2, 1])
with e1:
    target = st.selectbox(
        "Representation to embed", ["final"] + [f"layer{i}" for i in range(1, 7)], key="home_embed_rep",
        help="MiniLM-L6 has 6 layers; layer 3 is a good cone for the collapse demo.",
    )
with e2:
    st.write("")
    go_embed = st.button(
        "Re-embed" if target in reps else "Embed", key="home_embed", type="primary" if not reps else "secondary"
    )
if go_embed:
    from gem.embed import embed_workspace

    bar = st.progress(0.0, text=f"Embedding {len(frame):,} documents ({target})…")

    def _progress(done: int, total: int) -> None:
        if total:
            bar.progress(min(done / total, 1.0), text=f"Embedding ({target}): {done:,} / {total:,}")

    try:
        embed_workspace(ws, representation=target, progress=_progress)
        bar.progress(1.0, text=f"Embedded {len(frame):,} documents ({target})")
        common.forget_runs()
        reps = ws.representations()
    except (ValueError, OSError, KeyError) as exc:
        st.error(f"Embedding failed: {exc}")

if not reps:
    st.info("No embeddings yet: press Embed (about 200 short documents per second on 2 cores).")
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
