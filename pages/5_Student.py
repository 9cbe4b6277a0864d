"""Student: distil the current GEM fit into a fastText student, read its report, label a folder.

The student is trained by gem.distill.distill_run on the current fit's saved run, exactly as
`gem distill --run NAME` trains it: labels are the taxonomy's stable topic ids (T001, ...), so a
labelled corpus joins the mixture's domains, and excluded topics are left out of its training set.
"""

import pandas as pd
import streamlit as st

from gem.plots import agreement_by_confidence_chart, confusion_heatmap
from pages import common

KEY_STUDENT = "gem_student"  # (run name, model path, report) of the student trained in this session

st.title("fastText student and corpus labelling")
st.caption("The teacher (GEM) labels the sample; a fastText student trained on each topic's top-GIS documents, "
           "the same count per topic, labels corpora far larger than one machine can embed.")
ws, _ = common.embedded_workspace()
try:
    with st.spinner("Fitting GEM…"):
        run = common.current_fit(ws)
except ValueError as exc:
    st.error(common.plain(f"The fit could not be made: {exc}"))
    st.stop()
common.show_fit(run, "The student learns this fit's topics (settings in the sidebar).")
model_path = ws.root / "students" / f"{run.name}.bin"

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
    compare_kmeans = st.checkbox(
        "Also train the same student on k-means labels (comparison)", value=False,
        help="Euclidean k-means on the raw vectors, same K, same recipe and held-out rows: how learnable each "
             "teacher's labels are. Roughly doubles the training time.")
    submitted = st.form_submit_button("Train student")

if submitted:
    from gem.distill import distill_run

    bar = st.empty()
    bar.progress(0.0, text="Training the student: loading the run…")
    at_stage = {"name": "", "done": 0, "total": 1}

    def _stage(name: str, done: int, total: int) -> None:  # distill_run's stages, in order
        at_stage.update(name=name, done=done, total=total)
        bar.progress(min(done / total, 1.0), text=f"Training the student: {name} ({min(done + 1, total)} of {total})")

    def _progress(done: int, total: int) -> None:  # the encoder embedding the vocabulary (then cached)
        if total:
            s = at_stage
            bar.progress(min((s["done"] + min(done / total, 1.0)) / s["total"], 1.0),
                         text=f"Training the student: {s['name']}, {done:,} / {total:,} words embedded "
                              f"({s['done'] + 1} of {s['total']})")

    try:
        report = distill_run(ws, run.name, model_path, top_fraction=top_fraction, holdout=holdout,
                             compare_kmeans=compare_kmeans, word_vectors=word_vectors, progress=_progress,
                             stage=_stage, epoch=int(epoch) or None)
    except ValueError as exc:
        bar.empty()
        st.error(common.plain(f"The student could not be trained: {exc}"))
        st.stop()
    bar.empty()
    common.keep_output(KEY_STUDENT, common.output_scope(ws, run.name), (run.name, str(model_path), report))

# kept with the scope of the run it was trained on: shown only in that workspace, for that fit of the run
stored = st.session_state.get(KEY_STUDENT)
kept = common.kept_output(KEY_STUDENT, common.output_scope(ws, stored[0])) if stored else None
if kept and kept[0] != run.name:
    st.info(common.plain(f"The student below was trained on run {kept[0]}, not on the current fit: train again "
                         "to follow the current fit."))
if kept:
    student_run, student_path, report = kept
    teacher = report.get("teacher", {})
    if teacher.get("word_vectors") not in (None, "off") and "word_vectors" not in report:
        st.info(common.plain(f"Trained without teacher word vectors: {teacher['word_vectors']}."))
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Top-1 agreement (held out)", f"{report['agreement']:.1%}")
    m2.metric("Macro-F1", f"{report['macro_f1']:.3f}")
    m3.metric("Student docs/s", f"{report['docs_per_second']:,.0f}")
    m4.metric("Model size", f"{report['model']['bytes'] / 1e6:.1f} MB")
    if "kmeans" in report:
        km = report["kmeans"]
        delta = report["agreement"] - km["agreement"]
        st.text(f"The same student on k-means labels (raw vectors, K = {teacher.get('n_clusters')}): "
                f"{km['agreement']:.1%} held-out agreement, macro-F1 {km['macro_f1']:.3f} "
                f"({'GEM labels are more learnable' if delta > 0 else 'k-means labels are as or more learnable'}: "
                f"{delta:+.1%}).")
    if teacher.get("excluded"):
        st.text(f"Excluded topics left out of the training set: {', '.join(teacher['excluded'])}")
    if "word_vectors" in report:
        wv = report["word_vectors"]
        st.caption(f"Started from teacher word vectors: {wv['n_words']:,} words in the span of the {wv['dim']} topic "
                   f"directions; the mean vector of a training document misses its teacher embedding by "
                   f"{wv['residual_fitted']:.0%} (static word embeddings alone: {wv['residual_static']:.0%}).")
    topics = common.run_topics(student_run, ws)  # labels are the taxonomy's topic ids: show their names
    names = None if topics is None else {str(i): str(n) for i, n in zip(topics["id"], topics["name"])}
    st.plotly_chart(confusion_heatmap(report["confusion"], report["labels"], names=names), width="stretch")
    st.plotly_chart(agreement_by_confidence_chart(report["agreement_by_confidence"], report["agreement"]),
                    width="stretch")
    from pathlib import Path

    student_file = Path(student_path)
    if student_file.exists():
        st.download_button(f"Download the student ({student_file.stat().st_size / 1e6:.1f} MB, fastText .bin)",
                           student_file.read_bytes(), file_name=f"gem-student-{student_run}.bin",
                           mime="application/octet-stream", key="st_download")
        from gem.distill import sidecar_path

        sidecar = sidecar_path(student_file)
        if sidecar.exists():
            st.download_button("Download its report (JSON)", sidecar.read_bytes(),
                               file_name=f"gem-student-{student_run}.json", mime="application/json",
                               key="st_download_report")
    st.caption(common.plain(f"From the command line: gem label --model {student_file} --input 'shards/*.jsonl' "
                            "--out labelled/ (labels are topic ids such as T001)."))

    st.subheader("Label a server-side folder")
    with st.form("label"):
        pattern = st.text_input("Input shards (glob: *.jsonl, *.jsonl.gz, *.parquet)", "",
                                help=common.plain("Inside the server's data folders: "
                                                  + ", ".join(str(r) for r in common.data_roots())))
        out_name = st.text_input("Output folder name (inside this workspace's labels/ folder)", student_run)
        go = st.form_submit_button("Label")
    if go and pattern:
        from gem.label import label_corpus
        from gem.store import validate_name

        bar = st.progress(0.0, text="labelling...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"{done}/{total} shards")

        from gem.access import AccessError, resolve_data_glob

        try:
            out_dir = ws.root / "labels" / validate_name(out_name, "output folder name")
            shards = resolve_data_glob(pattern, common.data_roots())  # only the server's data folders
            summary = label_corpus(student_path, [str(p) for p in shards], out_dir, engine="local", workers=0,
                                   progress=progress)
        except AccessError as exc:  # one message whatever the reason: nothing about what exists
            st.error(str(exc))
        except (ValueError, OSError) as exc:
            st.error(common.plain(exc))
        else:
            st.success(f"{summary['n_docs']:,} documents labelled, {summary['n_rejected']:,} rejected "
                       f"({summary['n_shards_skipped']} shards already done).")
            counts = pd.DataFrame(summary["topics"])
            if not counts.empty:
                st.dataframe(counts, hide_index=True)
