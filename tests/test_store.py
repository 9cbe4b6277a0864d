"""gem.store helpers that have no other home in the tests."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gem.store import atomic_dir, file_sha256, recover_dir

ROOT = Path(__file__).resolve().parent.parent


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    data = np.random.default_rng(0).bytes((5 << 19) + 123)  # 2.5 MiB + 123 B: three 1 MiB reads, the last short
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)  # str or Path
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------------------- atomic_dir: kills and failures
_CRASH_SCRIPT = r"""
import os, sys
from pathlib import Path
from gem.store import atomic_dir

target, point = Path(sys.argv[1]), sys.argv[2]
real_replace, real_rename = os.replace, os.rename
calls = []

def crashing(src, dst, *a, **kw):
    # the kill, at the chosen point: no finally block, no cleanup runs
    if point == "before_any_rename":
        os._exit(9)
    real_replace(src, dst, *a, **kw)
    calls.append((Path(src), Path(dst)))
    if point == "after_first_rename" and len(calls) == 1:
        os._exit(9)
    if point == "after_target_moved_away" and Path(src) == target:
        os._exit(9)
    if point == "after_new_moved_in" and Path(dst) == target:
        os._exit(9)

os.replace = os.rename = crashing
with atomic_dir(target) as tmp:
    (tmp / "version.txt").write_text("new")
    if point == "while_building":
        os._exit(9)
"""


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("point, survivor", [
    ("while_building", "old"),
    ("before_any_rename", "old"),
    ("after_first_rename", "old"),
    ("after_target_moved_away", "old"),  # the audit's case: the old copy hidden, the new not in place
    ("after_new_moved_in", "new"),
])
def test_atomic_dir_killed_mid_replace_is_recovered_by_the_next_call(tmp_path, point, survivor):
    """A process killed anywhere inside atomic_dir's replace leaves the target recoverable: the next
    atomic_dir on it (here one whose build fails) restores the previous folder when the target is
    missing, and deletes every hidden leftover."""
    target = tmp_path / "runs" / "r1"
    with atomic_dir(target) as tmp:
        (tmp / "version.txt").write_text("old")
    done = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(target), point], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    assert _hidden(target.parent)  # the kill left hidden copies behind
    with pytest.raises(RuntimeError, match="build failed"):
        with atomic_dir(target) as tmp:
            raise RuntimeError("build failed")
    assert (target / "version.txt").read_text() == survivor
    assert _hidden(target.parent) == []


def test_recover_dir_restores_a_missing_target_and_leaves_live_builds_alone(tmp_path):
    target = tmp_path / "exports" / "e.v1"  # a dot in the name
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    done = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(target), "after_target_moved_away"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 9 and not target.exists()
    sibling = tmp_path / "exports" / "e"  # a target whose name is a prefix must not be touched
    with atomic_dir(sibling) as tmp:
        (tmp / "b").write_text("2")
    with atomic_dir(target) as live:  # a live build in this process: recovery must not remove it
        assert recover_dir(target) is False and live.is_dir()
        (live / "a").write_text("3")
    assert (target / "a").read_text() == "3" and (sibling / "b").read_text() == "2"
    assert _hidden(target.parent) == []


def test_recover_dir_handles_the_earlier_layout(tmp_path):
    """Folders lost by the earlier atomic_dir (old copy at .<name>.old.XXXXXXXX/x) come back."""
    target = tmp_path / "r"
    (tmp_path / ".r.old.ab12cd34" / "x").mkdir(parents=True)
    (tmp_path / ".r.old.ab12cd34" / "x" / "f").write_text("old")
    (tmp_path / ".r.zz99yy88").mkdir()  # the earlier half-built new copy
    assert recover_dir(target) is True
    assert (target / "f").read_text() == "old" and _hidden(tmp_path) == []


def test_atomic_dir_failed_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    """A rename failing after the old folder was moved away (disk error, not a kill) puts it back."""
    target = tmp_path / "r"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("old")
    real, failed = os.replace, []

    def failing(src, dst):
        if Path(dst) == target and not failed:  # the new folder cannot be moved in (once)
            failed.append(src)
            raise OSError("simulated rename failure")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="simulated"):
        with atomic_dir(target) as tmp:
            (tmp / "f").write_text("new")
    monkeypatch.undo()
    assert (target / "f").read_text() == "old"
    assert _hidden(tmp_path) == []
