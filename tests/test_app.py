"""AppTest: the app's pages run end to end (no browser): the home page loads a corpus, every page
renders without exceptions, K and lambda re-fit in the expected direction, a broken upload shows
the loader's error and the app keeps running."""
import json
import time
from pathlib import Path

import pytest

PAGES = ["pages/1_Home.py", "pages/2_Clusters.py", "pages/3_Taxonomy.py", "pages/4_Mixture.py", "pages/5_Student.py",
         "pages/7_Documents.py"]


def _metrics(at) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in at.metric:
        out.setdefault(m.label, []).append(m.value)
    return out


def _num(s: str) -> float:
    s = s.split("/")[0].strip()
    return float(s[:-1]) / 100 if s.endswith("%") else float(s.replace(",", ""))


def _doc_results(at):
    """The Documents page's results table: its key carries a digest of what produced it."""
    return next(d for d in at.dataframe if (d.key or "").startswith("doc_results_"))


def _doc_all(at):
    return next(c for c in at.checkbox if (c.key or "").startswith("doc_all_"))


def _assert_clean(at, where: str):
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def test_the_favicon_is_a_png_shipped_in_the_repo(app_test, synthetic_workspace, monkeypatch):
    """page_icon is a local PNG (Streamlit serves it from /media): a ":material/..:" icon makes the
    browser fetch the favicon from fonts.gstatic.com."""
    import streamlit
    from PIL import Image
    from streamlit.commands.page_config import _get_favicon_string

    seen, urls = [], []
    real = streamlit.set_page_config

    def spy(*args, **kwargs):
        seen.append(kwargs.get("page_icon", args[1] if len(args) > 1 else None))
        urls.append(_get_favicon_string(seen[-1]))  # what the browser is told to load, in the script run
        return real(*args, **kwargs)

    monkeypatch.setattr(streamlit, "set_page_config", spy)
    at = app_test(synthetic_workspace)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (icon,) = seen
    path = Path(str(icon))
    assert path.is_file() and path.resolve().is_relative_to(Path(__file__).resolve().parent.parent)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (64, 64)
    (url,) = urls
    # served by this server's media endpoint ("/media/..."; AppTest's is "/mock/media/..."): no outside host
    assert url.startswith("/") and not url.startswith("//") and "/media/" in url and "://" not in url


@pytest.mark.slow  # first AppTest of a process: imports torch, sklearn, plotly (~10 s)
def test_every_page_renders(app_test, synthetic_workspace):
    at = app_test(synthetic_workspace)
    at.session_state["fit_k"] = 6  # small K: the 240-document corpus fits in well under a second
    at.run()
    _assert_clean(at, "home")
    for page in PAGES[1:]:
        at.switch_page(page).run()
        _assert_clean(at, page)


@pytest.mark.slow
def test_home_opens_the_sample_without_waiting(app_test, sample_workspace):
    at = app_test(sample_workspace)
    at.run()
    _assert_clean(at, "home")
    m = _metrics(at)
    assert m["documents"] == ["11,500"] or _num(m["documents"][0]) > 1000
    assert "final" in m["representations"][0]
    # the anisotropy panel: a cosine histogram against the uniform-sphere reference
    assert 0 < _num(m["mean pairwise cosine"][0]) < 1
    assert 0 < _num(m["first-PC variance share"][0]) < 1
    assert not at.button(key="home_embed").disabled


def test_home_anisotropy_panel_reports_the_cone(app_test, synthetic_workspace):
    from gem.metrics import anisotropy

    at = app_test(synthetic_workspace)
    at.run()
    m = _metrics(at)
    expected = anisotropy(synthetic_workspace.load_embeddings("final"))
    assert abs(_num(m["mean pairwise cosine"][0]) - expected["mean_cosine"]) < 1e-3
    assert _num(m["mean pairwise cosine"][0]) > 0.5  # the synthetic corpus is a narrow cone
    # the histogram marks the same exact mean (not its sampled pairs' mean)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [a["text"] for a in spec["layout"]["annotations"]] == [f"mean {m['mean pairwise cosine'][0]}"]
    # the sidebar names the workspace (one of this server's workspaces) and the current fit's run
    assert at.sidebar.selectbox(key="sb_workspace").value == synthetic_workspace.root.name
    assert at.sidebar.text[-1].value == "gem-k24-auto-s0"


def test_clusters_page_k_and_lambda_refit_in_the_expected_direction(app_test, synthetic_workspace):
    at = _clusters(app_test, synthetic_workspace, k=8)
    assert _metrics(at)["effective clusters"][0].endswith("/ 8")
    # the GEM panel and the baseline panel each report a balance report
    assert len(_metrics(at)["normalised entropy"]) == 2
    # automatic balance: the caption names the run and the lambda GEM chose
    caption = at.caption[0].value.replace("\\", "")
    assert caption.startswith("Run gem-k8-auto-s0 (fitted in") and "(chosen by GEM)" in caption

    # the sidebar's controls write these keys (AppTest does not redraw an st.navigation sidebar)
    for key, value in {"fit_auto": False, "fit_lambda": 0.0, "fit_k": 6}.items():
        at.session_state[key] = value
    at.run()  # new K: the auto run of K = 6, then lambda = 0 warm-started from it
    _assert_clean(at, "K=6")
    caption = at.caption[0].value.replace("\\", "")
    assert caption.startswith("Run gem-k6-l0-s0 (fitted in") and "warm-started from gem-k6-auto-s0" in caption
    assert "λ used = 0." in caption
    m0 = _metrics(at)
    ent0, top0 = _num(m0["normalised entropy"][0]), _num(m0["largest share"][0])
    assert m0["effective clusters"][0].endswith("/ 6")

    at.session_state["fit_lambda"] = 100000.0
    at.run()
    _assert_clean(at, "strict")
    assert "λ used = 1e+05" in at.caption[0].value.replace("\\", "")
    m1 = _metrics(at)
    ent1, top1 = _num(m1["normalised entropy"][0]), _num(m1["largest share"][0])
    assert ent1 >= ent0 - 1e-9 and top1 <= top0 + 1e-9
    assert ent1 > 0.99  # strong balance: (near) equal shares
    # the baseline did not change with lambda
    assert m1["normalised entropy"][1] == m0["normalised entropy"][1]

    at.selectbox(key="cl_baseline").set_value("spherical k-means").run()
    _assert_clean(at, "baseline")
    at.selectbox(key="cl_baseline").set_value("spherical k-means (faiss)").run()
    _assert_clean(at, "faiss baseline")
    assert _metrics(at)["effective clusters"][1].endswith("/ 6")
    at.toggle(key="cl_sphere_on").set_value(True).run()
    _assert_clean(at, "sphere")


@pytest.mark.parametrize("name,content", [
    ("broken.parquet", b"this is not a parquet file"),
    ("empty.csv", b""),
    ("nothing.jsonl", b"[1, 2]\n{broken\n"),
])
def test_broken_upload_shows_the_error_and_the_app_survives(app_test, synthetic_workspace, name, content):
    at = app_test(synthetic_workspace)
    at.session_state["cl_k"] = 6
    at.run()
    at.radio(key="home_source").set_value("Upload a file").run()
    assert "MB" in at.file_uploader[0].proto.label
    at.file_uploader[0].upload(name, content).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.error[0].value.replace("\\", "") if at.error else ""  # markdown-escaped plain text
    assert len(at.error) == 1 and shown.startswith(f"{name}: ") and "/tmp" not in shown  # no server paths
    # still on the previous workspace, and the app keeps working
    assert _metrics(at)["documents"] == ["240"]
    at.switch_page("pages/2_Clusters.py").run()
    assert not at.exception


def test_upload_with_some_bad_rows_loads_the_rest_and_reports_them(app_test, synthetic_workspace):
    at = app_test(synthetic_workspace)
    at.run()
    at.radio(key="home_source").set_value("Upload a file").run()
    at.file_uploader[0].upload("partly.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": \n').run()
    assert not at.exception and not at.error
    assert _metrics(at)["documents"] == ["1"]
    assert len(at.warning) == 1 and "1 rejected" in at.warning[0].value


def test_the_ingest_report_of_an_upload_names_the_uploaded_file(app_test, synthetic_workspace):
    """The upload is read from a temporary copy: the report and the rejects table name the uploaded
    file, never the copy's /tmp path, and say "at column" once."""
    at = app_test(synthetic_workspace)
    at.run()
    at.radio(key="home_source").set_value("Upload a file").run()
    at.file_uploader[0].upload("partly.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "cut').run()
    assert not at.exception and not at.error
    (report,) = [t.value for t in at.text if t.value.startswith("read 2 records")]
    assert "partly.jsonl: line 2: invalid JSON (Unterminated string starting at column" in report
    assert "at at" not in report and "/tmp" not in report.split("rejects written to")[0]
    table = _rejects_table(at)
    assert table["file"].tolist() == ["partly.jsonl"] and table["line"].tolist() == [2]


def _upload(app_test, ws, name: str, rows: list[dict], dedup: str | None = None):
    """The Home page after uploading ``rows`` as a JSONL file (with the duplicate setting ``dedup``)."""
    at = app_test(ws)
    at.run()
    at.radio(key="home_source").set_value("Upload a file").run()
    if dedup is not None:
        at.radio(key="home_dedup").set_value(dedup).run()
    at.file_uploader[0].upload(name, "".join(json.dumps(r) + "\n" for r in rows).encode()).run()
    return at


UPLOADED = [{"id": f"u{i}", "text": f"uploaded document number {i}"} for i in range(5)]


def test_good_upload_becomes_the_workspace(app_test, synthetic_workspace):
    at = _upload(app_test, synthetic_workspace, "mine.jsonl", UPLOADED)
    _assert_clean(at, "upload")
    assert _metrics(at)["documents"] == ["5"]
    assert at.session_state["gem_workspace"] != str(synthetic_workspace.root)


def _rejects_table(at):
    (table,) = [d.value for d in at.dataframe if "reason" in d.value.columns]
    return table


def _markdown_values(at) -> list[str]:
    return [e.value for kind in ("markdown", "success", "warning", "info", "error", "caption") for e in at.get(kind)]


def test_upload_drops_duplicates_and_shows_the_report_as_plain_text(app_test, synthetic_workspace):
    boiler = "Accept **cookies** <b>now</b>: this site uses cookies."
    rows = UPLOADED[:4] + [{"id": f"**c{i}**", "text": boiler if i % 2 else boiler.upper()} for i in range(5)]
    at = _upload(app_test, synthetic_workspace, "dups.jsonl", rows)
    _assert_clean(at, "upload")
    assert at.radio(key="home_dedup").value == "exact"  # the default
    assert _metrics(at)["documents"] == ["5"]  # four documents and one copy of the boilerplate
    assert len(at.warning) == 1 and "4 rejected" in at.warning[0].value
    texts = "\n".join(t.value for t in at.text)
    assert "exact duplicate texts (after NFKC, case folding, whitespace collapsing): 1 groups, 4 extra copies dropped" in texts
    assert "duplicate of **c0**" in texts  # ids shown verbatim, as plain text
    table = _rejects_table(at)
    assert table["reason"].tolist() == ["duplicate of **c0**"] * 4 and table["line"].tolist() == [6, 7, 8, 9]
    assert not any("c0" in v or "cookies" in v for v in _markdown_values(at))  # no user string as markdown
    # no hard-coded speed promise: the rate is measured
    assert not any("per second" in v for v in _markdown_values(at))
    assert any("depends on the machine" in i.value for i in at.info)

    at.radio(key="home_dedup").set_value("none").run()  # same upload, keep duplicates: its own workspace
    _assert_clean(at, "dedup none")
    assert _metrics(at)["documents"] == ["9"]


def test_upload_near_duplicates(app_test, synthetic_workspace):
    words = [f"w{i}" for i in range(60)]
    edited = words[:30] + ["edited"] + words[31:]
    rows = [{"id": "a", "text": " ".join(words)}, {"id": "b", "text": "something else"},
            {"id": "c", "text": " ".join(edited)}]
    at = _upload(app_test, synthetic_workspace, "near.jsonl", rows, dedup="near")
    _assert_clean(at, "near upload")
    assert _metrics(at)["documents"] == ["2"]
    assert _rejects_table(at)["duplicate_of"].tolist() == ["a"]


@pytest.mark.slow  # loads the real MiniLM
def test_home_embeds_with_the_chosen_precision_and_reports_the_measured_rate(app_test, synthetic_workspace):
    at = _upload(app_test, synthetic_workspace, "mine.jsonl", UPLOADED)
    assert at.selectbox(key="home_embed_precision").options == ["auto", "bfloat16", "float32"]
    at.selectbox(key="home_embed_precision").set_value("float32").run()
    assert any(c.value == "Precision here: float32 (chosen), on cpu." for c in at.caption)
    at.button(key="home_embed").click().run()
    _assert_clean(at, "embed")
    rate = [c.value for c in at.caption if c.value.startswith("Last embedding of 'final'")]
    assert len(rate) == 1 and "5 documents encoded" in rate[0] and "docs/s, float32)" in rate[0]
    ws = at.session_state["gem_workspace"]
    meta = json.loads((__import__("pathlib").Path(ws) / "embeddings" / "final.json").read_text())
    assert meta["precision"] == "float32" and meta["precision_requested"] == "float32"


def test_upload_without_a_text_column_asks_for_the_columns(app_test, synthetic_workspace):
    """No `text` column: nothing is loaded until the curator picks the text column in the UI (no
    message that only names a CLI flag); the chosen id and label columns are used."""
    rows = [{"key": f"k{i}", "body": f"uploaded body number {i}", "genre": "news" if i % 2 else "blog"}
            for i in range(6)]
    at = _upload(app_test, synthetic_workspace, "other.jsonl", rows)
    _assert_clean(at, "upload")
    assert at.session_state["gem_workspace"] == str(synthetic_workspace.root)  # nothing loaded yet
    assert any("no `text` column" in i.value for i in at.info)
    assert at.selectbox(key="home_text_field").options == ["(choose)", "key", "body", "genre"]
    at.selectbox(key="home_text_field").set_value("body").run()
    at.selectbox(key="home_id_field").set_value("key").run()
    at.multiselect(key="home_labels").set_value(["genre"]).run()
    _assert_clean(at, "columns chosen")
    assert _metrics(at)["documents"] == ["6"]
    from gem.store import Workspace

    frame = Workspace(at.session_state["gem_workspace"]).load_corpus()
    assert frame["id"].tolist() == [f"k{i}" for i in range(6)] and frame["text"].iloc[0] == "uploaded body number 0"
    assert frame["genre"].tolist()[:2] == ["blog", "news"]
    assert Path(at.session_state["gem_workspace"]).name.startswith("other-")


# ---------------------------------------------------------------------------- Clusters: collapse views
class _HashEmbedder:
    """Stand-in for the model in AppTests (same process): hashed bag of words + a shared style axis."""

    fingerprint = "apptest-hash-embedder"
    dim = 24

    def encode(self, texts, progress=None):
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        out[:, 0] += 3.0
        norms = np.linalg.norm(out, axis=1)
        if progress:
            progress(len(texts), len(texts))
        return out / norms[:, None], norms.astype(np.float32)


def _clusters(app_test, ws, k=6):
    at = app_test(ws)
    at.session_state["fit_k"] = k
    at.run()
    at.switch_page("pages/2_Clusters.py").run()
    _assert_clean(at, "clusters")
    return at


def _charts(at) -> dict:
    return {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def _chart(at, key_part: str) -> dict:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if key_part in c.proto.id]
    assert specs, f"no chart {key_part!r}"
    return specs[0]


def test_clusters_stress_toggle_injects_passages_without_touching_the_corpus(app_test, synthetic_workspace, monkeypatch):
    from gem import stress

    monkeypatch.setattr(stress, "workspace_embedder", lambda ws, rep="final": _HashEmbedder())
    corpus_bytes = synthetic_workspace.corpus_path.read_bytes()
    at = _clusters(app_test, synthetic_workspace)
    at.toggle(key="cl_stress_on").set_value(True).run()
    _assert_clean(at, "stress on")
    assert any("templates, not LLM output" in c.value for c in at.caption)
    m = _metrics(at)
    assert len(m["absorbed by the top 2 clusters"]) == 2 and len(m["clusters dominated"]) == 2
    assert all(0 < _num(v) <= 1 for v in m["absorbed by the top 2 clusters"])
    n = 240
    n_inj = stress.injected_count(n, 0.15)
    assert any(f"{n_inj:,} passages injected into {n:,} documents" in c.value for c in at.caption)
    # the injected documents are ringed on both maps (placed by their nearest corpus neighbours)
    for key in ("stress_gem_map", "stress_base_map"):
        spec = _chart(at, key)
        rings = [t for t in spec["data"] if t.get("name") == "injected passages"]
        assert len(rings) == 1 and len(rings[0]["customdata"]) == n_inj  # (x arrives as binary data)
        assert sum(len(t["customdata"]) for t in spec["data"]) == n + 2 * n_inj
    at.slider(key="cl_stress_share").set_value(0.3).run()
    _assert_clean(at, "share 30%")
    assert any(f"{stress.injected_count(n, 0.3):,} passages injected" in c.value for c in at.caption)
    assert synthetic_workspace.corpus_path.read_bytes() == corpus_bytes
    assert not [p for p in synthetic_workspace.root.rglob("*") if "synthetic-" in p.name]


def test_clusters_stress_toggle_explains_when_the_vectors_were_not_made_by_the_model(app_test, synthetic_workspace):
    at = _clusters(app_test, synthetic_workspace)
    at.toggle(key="cl_stress_on").set_value(True).run()
    _assert_clean(at, "stress on, precomputed vectors")
    assert any("not made by the app's model" in i.value.replace("\\", "") for i in at.info)


def test_clusters_marked_column_value_is_the_injected_set(app_test, synthetic_workspace):
    from gem.metrics import injection_report

    at = _clusters(app_test, synthetic_workspace)
    at.selectbox(key="cl_injected_set").set_value(("source", "code")).run()
    _assert_clean(at, "marked set")
    m = _metrics(at)
    assert len(m["marked set: absorbed by the top 2 clusters"]) == 2
    spec = _chart(at, "map_gem")
    ring = [t for t in spec["data"] if t.get("name") == "marked set"][0]
    n_code = int((synthetic_workspace.load_corpus()["source"] == "code").sum())
    assert len(ring["customdata"]) == n_code
    # the figure is injection_report's on the GEM run's labels
    import pandas as pd

    run = pd.read_parquet(synthetic_workspace.run_dir("gem-k6-auto-s0") / "assignments.parquet")
    mask = (synthetic_workspace.load_corpus()["source"] == "code").to_numpy()
    expected = injection_report(run["cluster"].to_numpy(), mask, 6)["top2_share"]
    assert m["marked set: absorbed by the top 2 clusters"][0] == f"{expected:.1%}"


def test_clusters_baseline_colours_follow_gem(app_test, synthetic_workspace):
    import numpy as np
    import pandas as pd

    at = _clusters(app_test, synthetic_workspace)
    runs = {n: pd.read_parquet(synthetic_workspace.run_dir(n) / "assignments.parquet")["cluster"].to_numpy()
            for n in ("gem-k6-auto-s0", "kmeans-k6-s0")}
    colours = {t["name"]: t["marker"]["color"] for t in _chart(at, "map_base")["data"]}
    gem_colours = {str(t["meta"]): t["marker"]["color"] for t in _chart(at, "map_gem")["data"]}  # meta: cluster
    # the baseline cluster sharing most documents with a GEM cluster wears that GEM cluster's colour
    g, b = runs["gem-k6-auto-s0"], runs["kmeans-k6-s0"]
    C = np.bincount(b * 6 + g, minlength=36).reshape(6, 6)
    i, j = np.unravel_index(np.argmax(C), C.shape)
    assert colours[str(i)] == gem_colours[str(j)]
    at.toggle(key="cl_match_colors").set_value(False).run()
    from gem.plots import cluster_color

    assert all(t["marker"]["color"] == cluster_color(int(t["name"])) for t in _chart(at, "map_base")["data"])

    # crosstab heatmap: GEM rows x baseline columns, counts sum to the corpus
    heat = _chart(at, "cl_crosstab")["data"][0]
    cd = heat["customdata"]
    if isinstance(cd, dict):  # plotly sends numeric arrays as base64 typed data
        import base64

        cd = np.frombuffer(base64.b64decode(cd["bdata"]), dtype=cd["dtype"])
    assert np.sum(np.asarray(cd, dtype=float)) == 240


def test_clusters_gem_map_names_clusters_by_topic_id(app_test, synthetic_workspace):
    """The GEM map's legend and hover speak the taxonomy's topic ids (T001...), as every other page;
    the baseline's clusters are not topics and keep their numbers."""
    from gem.taxonomy import Taxonomy

    at = _clusters(app_test, synthetic_workspace)
    mapping = Taxonomy(synthetic_workspace.taxonomy_db).run_mapping("gem-k6-auto-s0")
    traces = _chart(at, "map_gem")["data"]
    assert len(mapping) == 6 and {t["meta"]: t["name"] for t in traces} == mapping
    assert all(t["hovertemplate"].startswith("<b>%{customdata[1]}</b> · topic ") for t in traces)
    assert all(t["name"] == str(t["meta"]) for t in _chart(at, "map_base")["data"])


def test_clusters_lambda_sweep_and_use_a_point(app_test, synthetic_workspace):
    at = _clusters(app_test, synthetic_workspace)
    at.number_input(key="cl_sweep_seeds").set_value(2).run()
    at.button(key="cl_sweep_run").click().run()
    _assert_clean(at, "sweep")
    spec = _chart(at, "cl_sweep_chart")
    names = {t.get("name") for t in spec["data"]}
    assert {"normalised entropy", "stability (ARI between seeds)", "NMI to source", "NMI to category"} <= names
    assert any(str(n).startswith("auto (λ =") for n in names)
    assert any(s.get("x0") == s.get("x1") for s in spec["layout"]["shapes"])  # the paper's 5000 marked
    at.button(key="cl_sweep_use_4").click().run()  # λ = 5000
    _assert_clean(at, "use 5000")
    assert at.session_state["fit_auto"] is False and at.session_state["fit_lambda"] == 5000.0
    assert at.caption[0].value.replace("\\", "").startswith("Run gem-k6-l5000-s0")
    at.button(key="cl_sweep_use_auto").click().run()
    assert at.caption[0].value.replace("\\", "").startswith("Run gem-k6-auto-s0")


def test_clusters_tail_view_compares_both_methods_per_label(app_test, synthetic_workspace):
    from gem.metrics import tail_visibility

    at = _clusters(app_test, synthetic_workspace, k=4)
    at.selectbox(key="cl_tail_col").set_value("category").run()
    _assert_clean(at, "tail")
    (table,) = [d.value for d in at.dataframe if "visible, GEM" in d.value.columns]
    frame = synthetic_workspace.load_corpus()
    assert list(table["documents"]) == sorted(frame["category"].value_counts().tolist())  # smallest first
    from gem.runs import load_run

    expected = tail_visibility(load_run(synthetic_workspace, "gem-k4-auto-s0").assignments["cluster"].to_numpy(),
                               frame["category"].to_numpy(), 0.2)
    assert table["visible, GEM"].to_numpy() / 100 == pytest.approx(expected["visible_share"].to_numpy())
    assert ((table.filter(like="visible").to_numpy() >= 0) & (table.filter(like="visible").to_numpy() <= 100)).all()


@pytest.mark.slow
def test_documents_page_search_bulk_exclude_refit_and_undo(app_test, synthetic_workspace):
    """Search, exclude every result with a reason, and the sidebar's current fit leaves them out
    (its option turns on by itself); the flags table names the author; Undo brings them back."""
    from gem.flags import DocFlags

    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 4
    at.run()
    at.switch_page("pages/7_Documents.py").run()
    _assert_clean(at, "documents")
    at.text_input(key="doc_query").set_value("about law").run()
    _assert_clean(at, "search")
    results = _doc_results(at).value
    corpus = ws.load_corpus()
    hits = corpus.loc[corpus["text"].str.lower().str.contains("about law"), "id"]
    assert 0 < len(results) and set(results["id"]) == set(hits)
    _doc_all(at).check().run()
    at.selectbox(key="doc_reason").set_value("off-topic").run()
    at.button(key="doc_exclude").click().run()
    _assert_clean(at, "exclude")
    assert DocFlags(ws).excluded_ids() == sorted(hits)
    flags = next(d.value for d in at.dataframe if "updated_by" in d.value.columns)
    assert set(flags["updated_by"]) == {"alice"} and set(flags["reason"]) == {"off-topic"}
    assert _doc_results(at).value["excluded"].all()

    at.switch_page("pages/2_Clusters.py").run()  # the current fit leaves them out by default now
    _assert_clean(at, "clusters")
    note = " ".join(c.value for c in at.caption)
    assert f"{len(hits)} excluded documents are not in these fits" in note
    from gem.runs import load_run

    run = load_run(ws, "gem-k4-auto-s0-x")
    assert not set(hits) & set(run.assignments["id"]) and len(run.assignments) == len(corpus) - len(hits)

    at.switch_page("pages/7_Documents.py").run()
    at.button(key="doc_undo").click().run()
    _assert_clean(at, "undo")
    assert DocFlags(ws).excluded_ids() == []


def test_documents_page_searches_once_until_something_it_shows_changes(app_test, synthetic_workspace, monkeypatch):
    """Reruns (a checkbox, a row click) reuse the search; a flag edit, which changes the flag
    columns shown, searches again."""
    import gem.search
    from gem.flags import DocFlags

    calls = []
    real_search, real_corpus_text = gem.search.search, gem.search.corpus_text
    monkeypatch.setattr(gem.search, "search", lambda *a, **kw: calls.append(a[1]) or real_search(*a, **kw))
    # a search that takes 0.3 s (inside its own timing), so the caption can tell a reused result apart
    monkeypatch.setattr(gem.search, "corpus_text", lambda ws: time.sleep(0.3) or real_corpus_text(ws))

    def caption():
        return next(c.value for c in at.caption if "documents match" in c.value)
    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.run()
    at.switch_page("pages/7_Documents.py").run()
    at.text_input(key="doc_query").set_value("about law").run()
    _assert_clean(at, "search")
    assert calls == ["about law"] and "reused" not in caption()
    _doc_all(at).check().run()
    assert calls == ["about law"] and "reused" in caption()
    first = str(_doc_results(at).value["id"].iloc[0])
    DocFlags(ws).tag([first], "checked", "bob")
    at.run()
    assert calls == ["about law", "about law"] and "reused" not in caption()
    assert "checked" in str(_doc_results(at).value.set_index("id").loc[first].to_dict())


@pytest.mark.slow
def test_clusters_rings_the_documents_page_search_results(app_test, synthetic_workspace):
    """The Documents page's "Ring these results" hands the result ids to the Clusters maps, which
    draw them as one extra trace on both maps, until cleared."""
    from pages.common import KEY_SEARCH_HIGHLIGHT, SCOPE_SUFFIX, output_scope

    ws = synthetic_workspace
    corpus = ws.load_corpus()
    ids = corpus["id"].iloc[[3, 50, 120]].tolist()
    at = app_test(ws)
    at.session_state["fit_k"] = 4
    at.session_state[KEY_SEARCH_HIGHLIGHT] = ("about <b>law</b>", ids)
    at.session_state[KEY_SEARCH_HIGHLIGHT + SCOPE_SUFFIX] = output_scope(ws)  # as the Documents page keeps it
    at.run()
    at.switch_page("pages/2_Clusters.py").run()
    _assert_clean(at, "clusters")
    assert any("Ringed: the 3 results of the search" in c.value.replace("\\", "") for c in at.caption)
    for key in ("map_gem", "map_base"):
        spec = json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)
        ringed = [t for t in spec["data"] if t.get("name") == "search results"]
        assert len(ringed) == 1 and {c[0] for c in ringed[0]["customdata"]} == set(ids)
    at.button(key="cl_clear_highlight").click().run()
    assert KEY_SEARCH_HIGHLIGHT not in at.session_state


@pytest.mark.slow
def test_taxonomy_page_rescores_when_documents_are_excluded_from_a_run_fitted_with_them(app_test,
                                                                                        synthetic_workspace):
    """GIS and keywords leave excluded documents out even of a run fitted with them: a new exclusion
    makes the page score the run again, while a rename (another taxonomy edit) does not."""
    from gem.flags import DocFlags
    from gem.taxonomy import Taxonomy

    ws = synthetic_workspace
    at = app_test(ws)
    at.session_state["gem_author"] = "alice"
    at.session_state["fit_k"] = 4
    at.session_state["fit_exclude"] = False  # keep the current fit as it is
    at.run()
    at.switch_page("pages/3_Taxonomy.py").run()
    _assert_clean(at, "taxonomy")
    key, analysis = at.session_state["gem_analysis"]
    n = len(analysis.gis)
    tax = Taxonomy(ws.taxonomy_db)
    first = tax.topics().iloc[0]
    tax.update_topic(first["id"], int(first["version"]), "bob", name="renamed by bob")
    at.run()
    assert at.session_state["gem_analysis"][1] is analysis  # a rename keeps the scores

    DocFlags(ws).exclude(ws.load_corpus()["id"].astype(str).tolist()[:5], reason="junk", author="bob")
    at.run()
    _assert_clean(at, "after exclusion")
    assert at.session_state["gem_analysis"][0] != key and len(at.session_state["gem_analysis"][1].gis) == n - 5
