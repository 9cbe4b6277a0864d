"""Integrity at the edges: bundles verified where they are read (`gem verify`, imported weights,
the Mixture lab's swarm, an uploaded bundle zip), no workspace made by a typo, every argument
decoded once, a full disk explained and cleaned up, results CSVs with other separators."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gem import mixture as mx
from gem.cli import main
from gem.store import DiskFullError, Workspace, atomic_dir, open_workspace, sweep_leftovers, write_bytes_atomic


def _gem(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def _fitted_template(tmp_path_factory):
    from synthetic_ws import build_synthetic_workspace
    from gem.runs import FitSettings, fit_run

    ws = build_synthetic_workspace(tmp_path_factory.mktemp("integrity") / "ws")
    fit_run(ws, "g4", FitSettings(method="gem", k=4))
    return ws


@pytest.fixture
def fitted(_fitted_template, tmp_path):
    dest = tmp_path / "ws"
    shutil.copytree(_fitted_template.root, dest)
    return Workspace(dest)


@pytest.fixture
def bundle(fitted, capsys):
    rc, _, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--no-gis")
    assert rc == 0, err
    return fitted.exports_dir / "g4-natural"


def _bump_first_weight(path: Path, to: str = "0.902") -> None:
    """Change the first domain's weight in regmix_mixture.yaml (the audit's tampering)."""
    lines = path.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("  ") and ":" in line)
    key = lines[k].split(":")[0]
    lines[k] = f"{key}: {to}"
    path.write_text("\n".join(lines) + "\n")


def _rehash(bundle: Path, name: str) -> None:
    """Update MANIFEST.json for a changed file, as a careful tamperer would."""
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    manifest["files"][name]["sha256"] = mx.bundle.file_sha256(bundle / name)
    (bundle / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))


# ---------------------------------------------------------------------------- 1. bundles verified
def test_verify_accepts_a_bundle_and_names_the_changed_file(bundle, capsys):
    rc, out, err = _gem(capsys, "verify", bundle)
    assert rc == 0, err
    assert "valid export bundle" in out and "MANIFEST.json" in out
    rc, out, _ = _gem(capsys, "verify", bundle / "regmix_mixture.yaml", "--json")  # a file: its bundle
    assert rc == 0 and json.loads(out)["valid"] is True

    _bump_first_weight(bundle / "regmix_mixture.yaml")
    rc, out, err = _gem(capsys, "verify", bundle)
    assert rc == 2 and not out
    assert "regmix_mixture.yaml: sha256 differs from MANIFEST.json" in err and err.count("\n") == 1


def test_verify_catches_a_flipped_byte_and_a_rehashed_change(bundle, capsys):
    prior = bundle / "regmix_token_prior.csv"
    original = prior.read_bytes()
    data = bytearray(original)
    data[-3] ^= 0x01
    prior.write_bytes(bytes(data))
    rc, _, err = _gem(capsys, "verify", bundle)
    assert rc == 2 and "regmix_token_prior.csv: sha256 differs" in err
    prior.write_bytes(original)
    # the manifest updated too: the format no longer agrees with mixture.json (weights sum to 1 there)
    _bump_first_weight(bundle / "regmix_mixture.yaml")
    _rehash(bundle, "regmix_mixture.yaml")
    rc, _, err = _gem(capsys, "verify", bundle)
    assert rc == 2 and "regmix_mixture.yaml" in err and "mixture.json says" in err


def test_imported_weights_from_a_changed_bundle_stop_the_export(fitted, bundle, capsys):
    out = fitted.root / "exports" / "imported"
    rc, _, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--strategy", "imported", "--no-gis",
                      "--weights", bundle / "regmix_mixture.yaml", "--out", out)
    assert rc == 0, err  # the untouched bundle's weights import
    shutil.rmtree(out)
    _bump_first_weight(bundle / "regmix_mixture.yaml")
    rc, stdout, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--strategy", "imported",
                           "--no-gis", "--weights", bundle / "regmix_mixture.yaml", "--out", out)
    assert rc == 2 and "validated" not in stdout
    assert f"{bundle / 'regmix_mixture.yaml'}: sha256 differs from MANIFEST.json" in err
    assert not out.exists()
    # a file dropped into a bundle after export is no file of it
    extra = bundle / "my_weights.yaml"
    extra.write_text("train:\n  t00: 1.0\n")
    rc, _, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--strategy", "imported", "--no-gis",
                      "--weights", extra, "--out", out)
    assert rc == 2 and "my_weights.yaml: not listed in MANIFEST.json" in err


def test_verify_read_is_none_outside_a_bundle(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("train:\n  a: 1.0\n")
    assert mx.verify_read(f) is None


def test_swarm_is_checked_where_the_lab_reads_it(fitted, capsys):
    assert _gem(capsys, "mixlab", "design", "-w", fitted.root, "--run", "g4", "--n", 8)[0] == 0
    folder = fitted.root / "mixlab" / "g4-n8-a1-s0"
    assert json.loads((folder / "MANIFEST.json").read_text())["kind"] == "gem.mixlab-swarm"
    rc, out, err = _gem(capsys, "verify", folder)
    assert rc == 0 and "valid mixlab swarm" in out and "11 mixtures" in out, err
    # a mixture's trainer file changed: verify names it
    olmo = folder / "mixtures" / "m003" / "olmo_core_mixture.yaml"
    olmo.write_text(olmo.read_text() + "\n# edited\n")
    rc, _, err = _gem(capsys, "verify", folder)
    assert rc == 2 and "m003/olmo_core_mixture.yaml: sha256 differs" in err
    # swarm.csv changed: every lab step refuses it
    csv = folder / "swarm.csv"
    csv.write_text(csv.read_text().replace("natural,", "natural ,", 1))
    rc, _, err = _gem(capsys, "mixlab", "proxy", "-w", fitted.root, "--swarm", folder.name,
                      "--target", "label:category=cooking", "--tokens", 2000, "--eval-tokens", 500)
    assert rc == 2 and "swarm.csv: sha256 differs from MANIFEST.json" in err


def test_swarm_without_a_manifest_still_has_its_rows_checked(fitted, capsys):
    from gem.mixlab import load_swarm

    assert _gem(capsys, "mixlab", "design", "-w", fitted.root, "--run", "g4", "--n", 4)[0] == 0
    folder = fitted.root / "mixlab" / "g4-n4-a1-s0"
    (folder / "MANIFEST.json").unlink()  # as written before manifests
    assert len(load_swarm(folder).weights) == 7
    frame = pd.read_csv(folder / "swarm.csv")
    dom = frame.columns[2]
    frame.loc[1, dom] += 0.25
    frame.to_csv(folder / "swarm.csv", index=False)
    with pytest.raises(mx.BundleError, match="swarm.csv line 3: the weights of mixture 'balanced' must be finite"):
        load_swarm(folder)


def test_bundle_zip_upload_is_validated_whole(bundle, tmp_path):
    import io
    import zipfile

    report, files = mx.read_bundle_zip(mx.bundle_zip_bytes(bundle), ["taxonomy.json"])
    assert "taxonomy" in report["formats"] and json.loads(files["taxonomy.json"])
    _bump_first_weight(bundle / "regmix_mixture.yaml")
    with pytest.raises(mx.BundleError) as exc:
        mx.read_bundle_zip(mx.bundle_zip_bytes(bundle), ["taxonomy.json"])
    assert str(exc.value).startswith("regmix_mixture.yaml: sha256 differs")  # named as in the zip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("b/MANIFEST.json", "{}")
        zf.writestr("b/../../evil.txt", "x")
    with pytest.raises(mx.BundleError, match="outside the bundle"):
        mx.read_bundle_zip(buf.getvalue())
    with pytest.raises(mx.BundleError, match="not a zip"):
        mx.read_bundle_zip(b"PK nonsense")


# ---------------------------------------------------------------------------- 2. no workspace by a typo
READERS = [
    ["flag", "--list"], ["flag", "--tag", "x", "doc-0005"], ["search", "words"], ["info"], ["embed"], ["layout"],
    ["fit"], ["compare"], ["sweep"], ["taxonomy", "--run", "g4"], ["topics", "list"], ["export", "--run", "g4"],
    ["mixlab", "design", "--run", "g4"], ["mixlab", "fit", "--swarm", "s"], ["distill", "--run", "g4", "--out", "m.bin"],
]


@pytest.mark.parametrize("command", READERS, ids=lambda c: " ".join(c[:2]))
def test_reading_commands_refuse_a_missing_workspace(command, tmp_path, capsys):
    ws = tmp_path / "no-such-ws"
    argv = command[:2] + ["-w", str(ws)] + command[2:] if command[0] in ("mixlab",) else \
        command[:1] + ["-w", str(ws)] + command[1:]
    rc, out, err = _gem(capsys, *argv)
    assert rc == 2 and not out
    assert f"{ws}: no such workspace; create it with `gem ingest" in err and err.count("\n") == 1
    assert not ws.exists()


def test_open_workspace_makes_a_folder_only_when_asked(tmp_path):
    from gem.store import WorkspaceNotFound

    with pytest.raises(WorkspaceNotFound, match="no such workspace"):
        open_workspace(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    assert open_workspace(tmp_path / "new", create=True).root.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkspaceNotFound, match="not a workspace folder"):
        open_workspace(tmp_path / "file")


def test_a_failed_ingest_leaves_no_workspace_folder(tmp_path, capsys):
    ws = tmp_path / "a" / "b" / "ws"
    rc, _, err = _gem(capsys, "ingest", tmp_path / "missing.jsonl", "-w", ws)
    assert rc == 2 and "missing.jsonl" in err
    assert not (tmp_path / "a").exists()


def test_the_app_refuses_a_missing_workspace(app_test, tmp_path):
    ws = Workspace(tmp_path / "typo-ws")
    at = app_test(ws).run()
    assert not at.exception
    assert any("no such workspace" in e.value and "gem ingest" in e.value for e in at.error)
    assert not ws.root.exists()


# ---------------------------------------------------------------------------- 3. arguments decoded once
@pytest.mark.parametrize("argv, name", [
    (["flag", "--tag", "caf\udce9", "doc-0005"], "--tag"),
    (["flag", "--note", "caf\udce9", "doc-0005"], "--note"),
    (["flag", "--include", "caf\udce9"], "ID"),
    (["search", "caf\udce9"], "QUERY"),
    (["search", "--semantic", "caf\udce9"], "QUERY"),
])
def test_text_arguments_that_are_not_utf8_are_one_error_naming_them(fitted, capsys, monkeypatch, argv, name):
    monkeypatch.delenv("GEM_DEBUG", raising=False)
    monkeypatch.setenv("GEM_AUTHOR", "tester")
    rc, out, err = _gem(capsys, *argv[:1], "-w", fitted.root, *argv[1:])
    assert rc == 2 and not out
    assert f"argument {name}: 'caf\\xe9' is not valid UTF-8 text" in err and err.count("\n") == 1


def test_file_names_that_are_not_utf8_are_read_and_shown_escaped(fitted, tmp_path, capsys):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jsonl"
    with open(raw, "wb") as fh:
        fh.write(b'{"id": "a", "text": "one document here"}\n{"id": "b", "text": "another document"}\n')
    rc, out, err = _gem(capsys, "ingest", os.fsdecode(raw), "-w", tmp_path / "plain")
    assert rc == 0, err
    out_dir = os.fsdecode(os.fsencode(tmp_path) + b"/b\xe9/bundle")  # a folder whose name is not UTF-8
    rc, out, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--no-gis", "--out", out_dir)
    assert rc == 0 and "b\\xe9/bundle (" in out, err  # shown escaped, not a codec error
    rc, out, err = _gem(capsys, "verify", out_dir)
    assert rc == 0 and out.startswith(f"{tmp_path}/b\\xe9/bundle: valid export bundle"), err
    # a workspace path must be UTF-8 (Parquet files are read by path): refused before anything is made
    ws = os.fsdecode(os.fsencode(tmp_path) + b"/w\xe9")
    rc, out, err = _gem(capsys, "ingest", os.fsdecode(raw), "-w", ws)
    assert rc == 2 and "argument --workspace: " in err and "w\\xe9' is not valid UTF-8 text" in err
    assert not os.path.exists(ws)


def test_ids_files_and_stdin_drop_a_byte_order_mark(fitted, tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setenv("GEM_AUTHOR", "tester")
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbfdoc-0005\ndoc-0006\n")
    rc, out, err = _gem(capsys, "flag", "-w", fitted.root, "--tag", "bom", "--ids-file", ids)
    assert rc == 0 and "2 of 2" in out, err

    class Stdin(io.TextIOWrapper):
        pass

    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(b"\xef\xbb\xbfdoc-0007\n"), encoding="utf-8"))
    rc, out, err = _gem(capsys, "flag", "-w", fitted.root, "--tag", "bom", "--ids-file", "-")
    assert rc == 0 and "1 of 1" in out, err
    ids.write_bytes(b"doc-0005\ncaf\xe9\n")
    rc, _, err = _gem(capsys, "flag", "-w", fitted.root, "--tag", "bom", "--ids-file", ids)
    assert rc == 2 and "line 2: not UTF-8 text" in err


def test_long_values_are_cut_in_messages(fitted, capsys, monkeypatch):
    monkeypatch.setenv("GEM_AUTHOR", "tester")
    long_id = "h" * 2000
    rc, _, err = _gem(capsys, "flag", "-w", fitted.root, "--tag", "x", long_id)
    assert rc == 2 and "not in the workspace corpus" in err
    assert len(err) < 300 and "h" * 79 + "\u2026" in err
    rc, _, err = _gem(capsys, "fit", "-w", fitted.root, "--run", "r" * 2000)
    assert rc == 2 and len(err) < 300 and "invalid run name" in err
    with pytest.raises(SystemExit):  # argparse's own "invalid choice" echo is cut too
        main(["flag", "-w", str(fitted.root), "--exclude", "--reason", "z" * 2000, "doc-0005"])
    err = capsys.readouterr().err
    assert "invalid choice" in err and len(err.splitlines()[-1]) < 500


def test_weights_and_results_csvs_drop_a_byte_order_mark():
    from gem.mixlab import read_results

    assert mx.read_regmix_weights(b"\xef\xbb\xbfdomain,weight\na,0.25\nb,0.75\n") == {"a": 0.25, "b": 0.75}
    assert mx.read_doremi_weights(b'\xef\xbb\xbf{"train_domain_weights": {"a": 1.0}}') == {"a": 1.0}
    r = read_results(b"\xef\xbb\xbfmixture_id,loss\nm0,1.5\n", ["m0"])
    assert r.loc["m0", "loss"] == 1.5


# ---------------------------------------------------------------------------- 4. a full disk
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_out_of_space_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "made" / "for" / "it" / "data.bin"
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError) as exc:
        write_bytes_atomic(target, b"x" * 250_000)
    message = str(exc.value)
    assert message.startswith(f"{target}: no space left on device (0.2 MB needed, ") and "free" in message
    assert "[Errno" not in message
    assert not (tmp_path / "made").exists()  # the folders made for it went too


def test_numpy_short_write_is_a_full_disk(tmp_path, monkeypatch):
    from gem.store import save_npy_atomic

    def short_write(*args, **kwargs):
        raise OSError("38400 requested and 10208 written")

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(DiskFullError, match=r"final\.npy: no space left on device \(38,528 bytes needed"):
        save_npy_atomic(tmp_path / "embeddings" / "final.npy", np.zeros((100, 96), np.float32))
    assert not (tmp_path / "embeddings").exists()


def test_atomic_dir_out_of_space_leaves_no_build_and_no_folder(tmp_path):
    target = tmp_path / "exports" / "bundle"
    with pytest.raises(DiskFullError, match=rf"^{tmp_path}/exports/bundle: no space left on device"):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("a")
            _enospc()
    assert not (tmp_path / "exports").exists()


def test_export_out_of_space_is_one_line_and_leaves_no_exports_folder(fitted, capsys, monkeypatch):
    monkeypatch.delenv("GEM_DEBUG", raising=False)
    assert not fitted.exports_dir.exists()
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    rc, out, err = _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--no-gis")
    assert rc == 2 and err.count("\n") == 1
    assert f"{fitted.exports_dir / 'g4-natural'}: no space left on device" in err and "free" in err
    assert not fitted.exports_dir.exists()


def test_ingest_out_of_space_names_the_corpus_file(tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.delenv("GEM_DEBUG", raising=False)
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": "a", "text": "one document here"}\n')
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _enospc)
    ws = tmp_path / "ws"
    rc, _, err = _gem(capsys, "ingest", data, "-w", ws)
    assert rc == 2 and f"{ws / 'corpus.parquet'}: no space left on device" in err
    assert not ws.exists()


def test_leftovers_of_a_killed_design_are_swept_by_the_next(fitted, capsys):
    dead = 2 ** 22 + 12345  # beyond the default pid_max: no live process
    root = fitted.root / "mixlab"
    stale = root / f".g4-n99-a1-s0.tmp-{dead}-0badc0de"
    (stale / "mixtures" / "m000").mkdir(parents=True)
    (stale / "mixtures" / "m000" / "mixture.json").write_text("{}")
    other = root / "not-a-leftover"
    other.mkdir()
    assert _gem(capsys, "mixlab", "design", "-w", fitted.root, "--run", "g4", "--n", 2)[0] == 0
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in root.iterdir()) == ["g4-n2-a1-s0", "not-a-leftover"]


def test_leftovers_of_a_killed_export_are_swept_by_the_next(fitted, capsys):
    stale = fitted.exports_dir / f".old-bundle.tmp-{2 ** 22 + 1}-deadbeef"
    stale.mkdir(parents=True)
    assert _gem(capsys, "export", "-w", fitted.root, "--run", "g4", "--no-gis")[0] == 0
    assert not stale.exists()
    assert sweep_leftovers(fitted.exports_dir) == []


# ---------------------------------------------------------------------------- 5. results CSV separators
@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_results_with_another_separator_are_read(sep):
    from gem.mixlab import read_results

    text = f"mixture_id{sep}loss{sep}acc\nm0{sep}1.5{sep}0.25\nm1{sep}2.5{sep}0.5\n"
    r = read_results(text, ["m0", "m1"])
    assert r.loc["m1", "loss"] == 2.5 and r.loc["m0", "acc"] == 0.25


def test_results_separator_errors_say_what_they_saw():
    from gem.mixlab import read_results

    with pytest.raises(ValueError, match="no 'mixture_id' column .*read as semicolon-separated"):
        read_results("mixture;loss\nm0;1.5\n", ["m0"])
    with pytest.raises(ValueError, match="a decimal comma: write 3.25, not 3,25"):
        read_results("mixture_id;loss\nm0;3,25\n", ["m0"])


def test_mixlab_fit_reads_a_semicolon_results_csv(fitted, capsys, tmp_path):
    assert _gem(capsys, "mixlab", "design", "-w", fitted.root, "--run", "g4", "--n", 8)[0] == 0
    from gem.mixlab import load_swarm

    swarm = load_swarm(fitted.root / "mixlab" / "g4-n8-a1-s0")
    rng = np.random.default_rng(0)
    lines = ["mixture_id;val_loss"] + [f"{m};{2 + rng.random():.4f}" for m in swarm.weights.index]
    results = tmp_path / "results.csv"
    results.write_text("\n".join(lines) + "\n")
    rc, out, err = _gem(capsys, "mixlab", "fit", "-w", fitted.root, "--swarm", "g4-n8-a1-s0", "--results", results)
    assert rc == 0 and "val_loss" in out, err
