"""Student: distil the current GEM fit into a fastText student, read its report, label a folder."""

import numpy as np
import pandas as pd
import streamlit as st

from gem.plots import agreement_by_confidence_chart, confusion_heatmap
from pages import common

KEY_STUDENT = "gem_student"  # (model path, report) of the student trained in this session

st.title("fastText student and corpus labelling")
st.caption("The teacher (GEM) labels the sample; a fastText student trained on each topic's top-GIS documents, "
           "the same count per topic, labels corpora far larger than one machine can embed.")
ws, _ = common.embedded_workspace()
run, _ = common.current_runs()
if run is None or run.method != "gem":
    st.warning("Fit GEM on the Clusters page first: the student learns from the current GEM fit.")
    st.stop()

with st.form("train"):
    c1, c2, c3 = st.columns(3)
    top_fraction = c1.slider("Top fraction by GIS per topic", 0.1, 1.0, 1.0, 0.05)  # data-limited student: all
    holdout = c2.slider("Held out for the report", 0.1, 0.5, 0.2, 0.05)
    epoch = c3.number_input("Epochs (0: the recipe's default)", 0, 100, 0)
    word_vectors = st.checkbox(
        "Start from teacher word vectors", value=True,
        help="The encoder embeds the training vocabulary (about 20 s per 40k words, cached), and the vectors are "
             "fitted so each document's mean vector matches its teacher embedding: about +4 points of agreement "
             "and a 5 MB model instead of 60 MB on the sample.")
    submitted = st.form_submit_button("Train student")

if submitted:
    from gem.distill import distill_labels, teacher_geometry, teacher_scores

    texts = common.corpus(ws)["text"].tolist()
    with st.spinner("Scoring documents (GIS), fitting word vectors and training the student..."):
        X = common.embeddings(run.representation, ws=ws)
        # the Taxonomy page's GIS of this fit (same rows, labels and GIS definition), else computed here
        analysis = common.cached_analysis(common.session_run_key(run))
        if analysis is not None and np.array_equal(analysis.labels, run.labels):
            scores = analysis.gis
        else:
            scores = teacher_scores(run.estimator, X, run.labels, "gis")
        bar = st.empty()

        def _progress(done: int, total: int) -> None:  # the encoder embedding the vocabulary (then cached)
            if total:
                bar.progress(min(done / total, 1.0), text=f"Teacher word vectors: {done:,} / {total:,} words embedded")

        geometry, why = (teacher_geometry(ws, run.representation, X, run.estimator.mean_directions_, _progress)
                         if word_vectors else (None, "off"))
        if word_vectors and geometry is None:
            st.info(f"Training without teacher word vectors: {why}.")
        student, report = distill_labels(texts, run.labels, scores, holdout=holdout, top_fraction=top_fraction,
                                         geometry=geometry, epoch=int(epoch) or None)
        bar.empty()
        out = ws.root / "students" / "current.bin"
        report["model"] = student.save(out)
    st.session_state[KEY_STUDENT] = (str(out), report)

if KEY_STUDENT in st.session_state:
    model_path, report = st.session_state[KEY_STUDENT]
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Top-1 agreement (held out)", f"{report['agreement']:.1%}")
    m2.metric("Macro-F1", f"{report['macro_f1']:.3f}")
    m3.metric("Student docs/s", f"{report['docs_per_second']:,.0f}")
    m4.metric("Model size", f"{report['model']['bytes'] / 1e6:.1f} MB")
    if "word_vectors" in report:
        wv = report["word_vectors"]
        st.caption(f"Started from teacher word vectors: {wv['n_words']:,} words in the span of the {wv['dim']} topic "
                   f"directions; the mean vector of a training document misses its teacher embedding by "
                   f"{wv['residual_fitted']:.0%} (static word embeddings alone: {wv['residual_static']:.0%}).")
    topics = common.session_topics(run, ws)  # the curator's names once the Taxonomy page has synced this fit
    names = None if topics is None else {str(c): str(n) for c, n in zip(topics["cluster"], topics["name"])}
    st.plotly_chart(confusion_heatmap(report["confusion"], report["labels"], names=names), width="stretch")
    st.plotly_chart(agreement_by_confidence_chart(report["agreement_by_confidence"], report["agreement"]),
                    width="stretch")
    st.caption(f"Student saved at `{model_path}`; `gem label --model {model_path}` labels shards from the command line.")

    st.subheader("Label a server-side folder")
    with st.form("label"):
        pattern = st.text_input("Input shards (glob: *.jsonl, *.jsonl.gz, *.parquet)", "")
        out_dir = st.text_input("Output folder", str(ws.root / "labels"))
        go = st.form_submit_button("Label")
    if go and pattern:
        from gem.label import label_corpus

        bar = st.progress(0.0, text="labelling...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"{done}/{total} shards")

        try:
            summary = label_corpus(model_path, pattern, out_dir, engine="local", workers=0, progress=progress)
        except (ValueError, OSError) as exc:
            st.error(str(exc))  # st.error renders markdown: paths only, no corpus text, reach it
        else:
            st.success(f"{summary['n_docs']:,} documents labelled, {summary['n_rejected']:,} rejected "
                       f"({summary['n_shards_skipped']} shards already done).")
            topics = pd.DataFrame(summary["topics"])
            if not topics.empty:
                st.dataframe(topics, hide_index=True)
