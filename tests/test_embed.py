"""Embedding with the real offline MiniLM, the content cache, layer states, precomputed vectors."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gem.embed
from gem.embed import (
    DEMO_LAYER, EmbeddingCache, SentenceTransformerEmbedder, count_tokens, describe_precision, embed_workspace,
    load_precomputed, parse_representation, resolve_precision, text_keys,
)
from gem.store import Workspace, write_parquet_atomic

ROOT = Path(__file__).resolve().parent.parent


def real_texts(n: int, seed: int = 0) -> list[str]:
    """Real prose: the shipped sample corpus, else Python's library docs (python3.11-doc)."""
    sample = ROOT / "sample_data" / "corpus.parquet"
    if sample.exists():
        texts = pd.read_parquet(sample, columns=["text"])["text"]
        return texts.sample(n, random_state=seed).str.slice(0, 600).tolist()
    paras = []
    for f in sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/library/*.rst.txt")):
        for p in Path(f).read_text(encoding="utf-8").split("\n\n"):
            p = " ".join(p.split())
            if len(p) > 80 and p[0].isalpha():
                paras.append(p[:600])
    assert len(paras) >= n, "no real text: build sample_data/ or apt-get install python3.11-doc"
    rng = np.random.default_rng(seed)
    return [paras[i] for i in rng.choice(len(paras), n, replace=False)]


@pytest.fixture(scope="module")
def final():
    return SentenceTransformerEmbedder()


PAIR_TEXTS = [
    "The cat sat on the mat and purred.",
    "A kitten is sleeping on the rug.",
    "Quarterly corporate tax filings are due in April.",
]


@pytest.mark.slow  # first model load: ~3 s idle, more on a busy box
def test_related_pair_scores_above_unrelated(final):
    unit, norms = final.encode(PAIR_TEXTS)
    assert unit.shape == (3, 384) and unit.dtype == np.float32 and final.dim == 384
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert (norms > 0.5).all() and norms.dtype == np.float32
    cos = unit @ unit.T
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[1, 2] + 0.3


@pytest.mark.slow
def test_bfloat16_matches_float32_and_plain_sentence_transformers(final):
    from sentence_transformers import SentenceTransformer

    texts = real_texts(24)
    bf16 = SentenceTransformerEmbedder(precision="bfloat16")  # explicit: "auto" depends on the CPU
    u16, n16 = bf16.encode(texts)
    f32 = SentenceTransformerEmbedder(precision="float32")
    u32, n32 = f32.encode(texts)
    cos = np.einsum("ij,ij->i", u16, u32)
    assert cos.min() >= 0.999
    assert np.allclose(n16, n32, rtol=0.02)
    # our float32 path is ST's own pipeline minus Normalize: same directions as ST's encode
    st = SentenceTransformer(str(f32.model_path), device="cpu").encode(texts, batch_size=16)
    assert np.einsum("ij,ij->i", u32, st).min() >= 0.99999
    assert f32.fingerprint != bf16.fingerprint  # precision is part of the cache key


def test_order_and_batching_do_not_change_vectors(final):
    texts = PAIR_TEXTS + ["short", "a much longer text " * 20]
    u1, n1 = final.encode(texts)
    fingerprint = final.fingerprint
    calls = []
    final.batch_size = 2  # same loaded model, smaller batches (saves a model load)
    try:
        u2, n2 = final.encode(texts[::-1], progress=lambda d, t: calls.append((d, t)))
    finally:
        final.batch_size = 64
    assert np.einsum("ij,ij->i", u1, u2[::-1]).min() >= 0.999
    assert calls[0] == (0, 5) and calls[-1] == (5, 5) and len(calls) == 4
    assert SentenceTransformerEmbedder(batch_size=2).fingerprint == fingerprint  # batch size is not in the key


@pytest.mark.slow
def test_layer_states_form_a_narrower_cone_than_the_final_output(final):
    texts = real_texts(64, seed=1)

    def mean_cos(U):
        s = U.sum(0)
        return (s @ s - len(U)) / (len(U) * (len(U) - 1))

    u_final, _ = final.encode(texts)
    layer = SentenceTransformerEmbedder(layer=DEMO_LAYER)
    u_layer, n_layer = layer.encode(texts)
    assert u_layer.shape == u_final.shape
    assert mean_cos(u_final) < 0.25
    assert 0.4 <= mean_cos(u_layer) <= 0.8  # DEMO_LAYER is the documented 0.4-0.7 cone (margin for sampling)
    assert layer.fingerprint != final.fingerprint


def test_bad_embedder_arguments(tmp_path):
    with pytest.raises(ValueError, match="precision must be"):
        SentenceTransformerEmbedder(precision="int8")
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        SentenceTransformerEmbedder(model_path=tmp_path)
    bad_layer = SentenceTransformerEmbedder(layer=99)
    with pytest.raises(ValueError, match=r"layer 99 out of range: .* has layers 0\.\.6"):
        bad_layer.encode(["x"])
    with pytest.raises(ValueError, match="unknown representation 'layerX'"):
        parse_representation("layerX")
    assert parse_representation("final") is None and parse_representation("layer3") == 3


def test_count_tokens():
    counts = count_tokens(["hello world", "", "tokenization " * 300])
    assert counts[0] == 2 and counts[1] == 0
    assert counts[2] >= 600  # not truncated at the model's 256-token window


def test_count_tokens_equals_the_transformers_tokenizer():
    """The Rust backend path counts exactly what the transformers tokenizer call counts."""
    from gem.embed import _tokenizer, default_model_path

    texts = ["hello world", "", "   ", "Ünïcödé, emoji 😀 and CJK 漢字", "a\tb\nc\x00d", "x" * 5000,
             "tokenization " * 700, "<b>bold</b> [CLS] [SEP] ##ing", *[f"doc {i} " * (i % 17) for i in range(300)]]
    tok = _tokenizer(str(default_model_path()))
    want = [len(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    assert count_tokens(texts, chunk=7).tolist() == want


def _workspace(tmp_path, texts):
    ws = Workspace(tmp_path / "ws")
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    write_parquet_atomic(ws.corpus_path, frame)
    return ws


def test_cache_encodes_only_new_texts(tmp_path, final):
    texts = ["alpha particles", "beta decay", "gamma rays", "delta function"]
    ws = _workspace(tmp_path, texts)
    final.n_encoded = 0
    unit1, norms1 = embed_workspace(ws, final)
    assert final.n_encoded == 4
    meta = json.loads(ws.embeddings_meta_path("final").read_text())
    assert meta["n"] == 4 and meta["dim"] == 384 and meta["fingerprint"] == final.fingerprint

    # change the corpus: drop one text, add two (one of them twice), reorder
    texts2 = ["gamma rays", "epsilon delta proofs", "alpha particles", "zeta function", "epsilon delta proofs"]
    ws2 = _workspace(tmp_path, texts2)
    seen = []
    unit2, norms2 = embed_workspace(ws2, final, progress=lambda d, t: seen.append(t))
    assert final.n_encoded == 4 + 2  # only the two new distinct texts went through the model
    assert set(seen) == {2}
    fresh, fresh_norms = final.encode(texts2)
    final.n_encoded -= len(texts2)
    assert np.einsum("ij,ij->i", unit2, fresh).min() >= 0.9999
    assert np.allclose(norms2, fresh_norms, rtol=1e-4)
    assert np.array_equal(unit2[0], unit1[2])  # cached rows are returned bit-exactly
    saved = ws2.load_embeddings("final")
    assert np.array_equal(saved, unit2) and np.array_equal(ws2.load_norms("final"), norms2)

    # all cached now: nothing is encoded
    embed_workspace(ws2, final)
    assert final.n_encoded == 6


def test_embed_workspace_rejects_mismatched_representation(tmp_path, final):
    ws = _workspace(tmp_path, ["x"])
    with pytest.raises(ValueError, match="does not match the embedder's layer"):
        embed_workspace(ws, final, representation="layer2")


def test_cache_store_roundtrip_and_crash_tolerance(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    keys = text_keys(["a", "b", "c"])
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(3, 8)).astype(np.float32)
    cache.put("fp1", keys[:2], unit[:2], np.array([1, 2], np.float32))
    cache.put("fp1", keys[2:], unit[2:], np.array([3], np.float32))
    found, got, norms = cache.get("fp1", text_keys(["c", "zz", "a", "c"]))
    assert found.tolist() == [True, False, True, True]
    assert np.array_equal(got[0], unit[2]) and np.array_equal(got[2], unit[0]) and norms.tolist() == [3, 0, 1, 3]
    assert not cache.get("other", keys)[0].any() and len(cache) == 3
    # a shard listed in the index but lost (crash) is a miss, not an error
    shard = json.loads((tmp_path / "c" / "fp1" / "index.json").read_text())["shards"][0]["name"]
    (tmp_path / "c" / "fp1" / f"{shard}.keys.npy").unlink()
    assert cache.get("fp1", keys)[0].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="dimension 4 does not match cached 8"):
        cache.put("fp1", text_keys(["d"]), np.ones((1, 4), np.float32), np.ones(1, np.float32))
    with pytest.raises(ValueError, match="invalid embedder fingerprint"):
        cache.get("../escape", keys)


# ---------------------------------------------------------------------------- precomputed
def test_precomputed_npy_is_validated_and_normalised(tmp_path):
    X = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float64)
    np.save(tmp_path / "ok.npy", X)
    unit, norms = load_precomputed(tmp_path / "ok.npy", expected_rows=2)
    assert unit.dtype == np.float32 and np.allclose(unit, [[0.6, 0.8], [0, 1]]) and np.allclose(norms, [5, 2])

    cases = {
        "rows.npy": (np.ones((3, 2)), r"rows\.npy: 3 rows but the corpus has 2"),
        "flat.npy": (np.ones(4), r"flat\.npy: expected a 2-D array .* shape \(4,\)"),
        "nan.npy": (np.array([[1.0, 1], [np.nan, 1]]), r"nan\.npy: row 1 has NaN or inf \(1 rows in all\)"),
        "zero.npy": (np.array([[1.0, 1], [0, 0]]), r"zero\.npy: row 1 is all zeros"),
        "text.npy": (np.array([["a", "b"], ["c", "d"]]), r"text\.npy: expected real numbers"),
    }
    for name, (arr, pattern) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(ValueError, match=pattern):
            load_precomputed(tmp_path / name, expected_rows=2)
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy: not a plain numeric \.npy"):
        load_precomputed(tmp_path / "obj.npy")  # never unpickled
    with pytest.raises(ValueError, match=r"must be \.npy or \.parquet"):
        load_precomputed(tmp_path / "ok.npy.txt" if (tmp_path / "ok.npy.txt").write_text("x") else None)


def test_precomputed_parquet_columns(tmp_path):
    ids = ["b", "a", "c"]
    vecs = [[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    pq.write_table(pa.table({"id": ids, "emb": vecs, "other": ["x", "y", "z"]}), tmp_path / "list.parquet")
    unit, norms = load_precomputed(tmp_path / "list.parquet", expected_rows=3, ids=["a", "b", "c"])
    assert np.allclose(unit[0], [1, 0, 0]) and np.allclose(norms, [2, 1, np.sqrt(3)], rtol=1e-6)  # aligned by id

    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(1, 7, dtype=np.float32)), 2)
    pq.write_table(pa.table({"e": fixed}), tmp_path / "fixed.parquet")
    unit, _ = load_precomputed(tmp_path / "fixed.parquet", expected_rows=3)
    assert unit.shape == (3, 2)

    pq.write_table(pa.table({"e": [[1.0, 2.0], [1.0], [3.0, 4.0]]}), tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match=r"ragged\.parquet: row 1 has dimension 1, row 0 has 2"):
        load_precomputed(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"e": [[1.0, 2.0], None]}), tmp_path / "null.parquet")
    with pytest.raises(ValueError, match=r"null\.parquet: row 1 of column 'e' is null"):
        load_precomputed(tmp_path / "null.parquet")
    pq.write_table(pa.table({"e": [["a"], ["b"]]}), tmp_path / "str.parquet")
    with pytest.raises(ValueError, match=r"str\.parquet: column 'e' holds string, expected numbers"):
        load_precomputed(tmp_path / "str.parquet")
    pq.write_table(pa.table({"e1": [[1.0]], "e2": [[2.0]]}), tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"two\.parquet: cannot tell which column .* pass column="):
        load_precomputed(tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"list\.parquet: no vector for id 'zz'"):
        load_precomputed(tmp_path / "list.parquet", ids=["a", "zz", "c"])


AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})  # no native bf16: emulated, 2.6x slower


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(gem.embed, "cpu_flags", lambda: AVX2_ONLY)
    assert resolve_precision("auto") == "float32"
    assert "float32 (auto: no native bf16" in describe_precision("auto")
    assert resolve_precision("bfloat16") == "bfloat16"  # an explicit choice is kept
    emb = SentenceTransformerEmbedder()  # default precision="auto"; the model is not loaded here
    assert emb.precision == "float32" and emb.requested_precision == "auto"
    assert emb.fingerprint == SentenceTransformerEmbedder(precision="float32").fingerprint  # same cache entries
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(gem.embed, "cpu_flags", lambda flag=flag: AVX2_ONLY | {"avx512f", flag})
        assert resolve_precision("auto") == "bfloat16" and SentenceTransformerEmbedder().precision == "bfloat16"
    monkeypatch.setattr(gem.embed, "cpu_flags", lambda: frozenset())  # /proc/cpuinfo unreadable
    assert resolve_precision("auto") == "float32"
    with pytest.raises(ValueError, match="precision must be one of auto, bfloat16, float16, float32"):
        resolve_precision("fp16")


def test_auto_precision_on_cuda_follows_the_gpu(monkeypatch):
    # on CUDA: bf16 where the GPU does it (compute capability >= 8.0), else float16; the CPU's flags do not matter
    monkeypatch.setattr(gem.embed, "cpu_flags", lambda: AVX2_ONLY)
    for has_bf16, expected in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(gem.embed, "cuda_bf16", lambda has_bf16=has_bf16: has_bf16)
        for device in ("cuda", "cuda:1"):
            assert resolve_precision("auto", device) == expected
            assert describe_precision("auto", device).startswith(expected)
        assert resolve_precision("float32", "cuda") == "float32"
    # float16 is a GPU precision: refused on a CPU, and not offered there (the app's chooser)
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        resolve_precision("float16", "cpu")
    assert "float16" not in gem.embed.precision_choices("cpu")
    assert "float16" in gem.embed.precision_choices("cuda:0")


def test_embedder_device_is_resolved_and_checked(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert SentenceTransformerEmbedder(device="auto").device == "cpu"  # the model is not loaded here
    with pytest.raises(ValueError, match="CUDA is not available"):
        SentenceTransformerEmbedder(device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        SentenceTransformerEmbedder(device="gpu")
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        SentenceTransformerEmbedder(precision="float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gem.embed, "cuda_bf16", lambda: False)
    emb = SentenceTransformerEmbedder(device="auto")  # resolved, not loaded: no GPU is touched
    assert emb.device == "cuda" and emb.precision == "float16"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_embeddings_match_cpu():
    texts = real_texts(64, seed=3)
    cpu32, _ = SentenceTransformerEmbedder(precision="float32").encode(texts)
    gpu32, _ = SentenceTransformerEmbedder(device="cuda", precision="float32").encode(texts)
    gpu_auto = SentenceTransformerEmbedder(device="cuda")  # bf16 or float16
    auto, _ = gpu_auto.encode(texts)
    assert np.einsum("ij,ij->i", cpu32, gpu32).min() > 0.9999
    assert np.einsum("ij,ij->i", cpu32, auto).min() > 0.99, gpu_auto.precision


def test_cpu_flags_reads_proc_cpuinfo():
    flags = gem.embed.cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").exists():
        assert flags and all(" " not in f for f in flags)


def test_embeddings_meta_records_the_resolved_precision(tmp_path, monkeypatch):
    monkeypatch.setattr(gem.embed, "cpu_flags", lambda: AVX2_ONLY)
    ws = _workspace(tmp_path, ["resolved precision", "goes into the meta"])
    embed_workspace(ws, SentenceTransformerEmbedder(precision="auto"), use_cache=False)
    meta = json.loads(ws.embeddings_meta_path("final").read_text())
    assert meta["precision"] == "float32" and meta["precision_requested"] == "auto" and meta["encoded_on"] == "cpu"
    assert meta["n_encoded"] == 2 and meta["docs_per_second"] > 0 and meta["encode_seconds"] > 0


_CONCURRENT_WRITER = r"""
import sys, time
from pathlib import Path
import numpy as np
import gem.embed as embed

folder, who, n_puts = sys.argv[1], sys.argv[2], int(sys.argv[3])
slow_write = embed.write_json_atomic
def write_slowly(*args, **kwargs):  # a slow disk: widens the window between reading and writing the index
    time.sleep(0.02)
    return slow_write(*args, **kwargs)
embed.write_json_atomic = write_slowly
cache = embed.EmbeddingCache(folder)
go = Path(folder) / "go"
while not go.exists():  # start together
    time.sleep(0.001)
for i in range(n_puts):
    keys = embed.text_keys([f"{who}-{i}-{j}" for j in range(3)])
    cache.put("fp", keys, np.full((3, 4), i, np.float32), np.ones(3, np.float32))
"""


def test_two_processes_writing_the_cache_keep_every_shard(tmp_path):
    """Two real processes put shards at once: the index lists all of them (before: the read-modify-
    write of index.json raced and about half the shards fell out of it)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    folder = tmp_path / "cache"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(root)}
    n_puts = 20
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_WRITER, str(folder), who, str(n_puts)],
                              cwd=root, env=env) for who in ("a", "b")]
    (folder / "go").touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    index = json.loads((folder / "fp" / "index.json").read_text())
    assert len(index["shards"]) == 2 * n_puts
    cache = EmbeddingCache(folder)
    keys = text_keys([f"{who}-{i}-{j}" for who in "ab" for i in range(n_puts) for j in range(3)])
    found, unit, _ = cache.get("fp", keys)
    assert found.all() and len(cache) == 6 * n_puts
    assert unit[:, 0].tolist() == [float(i) for _ in "ab" for i in range(n_puts) for _ in range(3)]


def test_first_loads_from_several_threads_at_once():
    """transformers' lazy imports are not thread-safe: two sessions loading the tokenizer or the
    model for the first time used to raise ImportError (gem.embed loads both under one lock).
    Run in a fresh interpreter, where nothing is imported yet."""
    import subprocess
    import sys

    code = """
import threading
from gem.embed import SentenceTransformerEmbedder, count_tokens
errors, out = [], []
def tokens():
    try:
        out.append(int(count_tokens(["a few words here"])[0]))
    except Exception as exc:
        errors.append(repr(exc))
embedder = SentenceTransformerEmbedder(precision="float32")
def model():
    try:
        out.append(embedder.dim)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=f) for f in (tokens, tokens, model, tokens, model, tokens)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
assert sorted(out) == [4, 4, 4, 4, 384, 384], out
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
