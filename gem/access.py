"""What a web request may read and write: the server's data roots.

The app runs on a shared server for several curators, so a path typed into a page is untrusted.
``resolve_data_path`` accepts it only when, with every symlink followed, it lies inside one of the
configured data roots and is a regular file or a folder (never a device, a FIFO or a socket, which
would hang a read: ``/dev/zero``). Every refusal says the same thing (``AccessError``), so a
refusal tells nothing about what exists outside the roots. Writes from the app go only inside a
workspace; a folder opened as a workspace must lie inside the workspaces root.

Data roots: ``$GEM_DATA_ROOTS`` (folders separated by ``os.pathsep``), default: the server's
workspaces folder and the shipped ``sample_data/``. The CLI is not restricted (its user owns the
machine); only the app calls this.
"""
from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Iterable

from .store import SAMPLE_DATA_DIR

DATA_ROOTS_ENV = "GEM_DATA_ROOTS"
REFUSED = "not available here: give a file or folder inside the server's data folders"

__all__ = ["AccessError", "DATA_ROOTS_ENV", "data_roots", "resolve_data_path", "resolve_data_glob"]


class AccessError(ValueError):
    """A path outside the data roots, missing, or not a regular file / folder (one message for all)."""

    def __init__(self, message: str = REFUSED):
        super().__init__(message)


def data_roots(workspaces_root: str | os.PathLike) -> list[Path]:
    """The folders the app may read from (resolved): ``$GEM_DATA_ROOTS``, else the workspaces
    folder and the shipped sample."""
    env = os.environ.get(DATA_ROOTS_ENV, "").strip()
    raw: Iterable[str | os.PathLike] = [p for p in env.split(os.pathsep) if p.strip()] if env else \
        [workspaces_root, SAMPLE_DATA_DIR]
    return [Path(p).expanduser().resolve() for p in raw]


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def resolve_data_path(user_path: str | os.PathLike, roots: Iterable[Path], kinds: tuple[str, ...] = ("file", "dir")) -> Path:
    """``user_path`` resolved (symlinks followed; relative paths against the first root) when it
    lies inside ``roots`` and is one of ``kinds`` ("file": a regular file, "dir": a folder); else
    ``AccessError`` with one message whatever the reason."""
    roots = list(roots)
    if not roots or not str(user_path).strip() or "\0" in str(user_path):
        raise AccessError()
    path = Path(user_path).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    try:
        real = path.resolve(strict=True)
        mode = real.stat().st_mode
    except (OSError, RuntimeError):  # missing, a symlink loop, no permission
        raise AccessError() from None
    kind = "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else None
    if kind not in kinds or not _inside(real, roots):
        raise AccessError()
    return real


def resolve_data_glob(pattern: str, roots: Iterable[Path], limit: int = 100_000) -> list[Path]:
    """The regular files a glob pattern names, every one checked by ``resolve_data_path``; a
    pattern that names nothing, or anything outside the roots, is refused as a whole."""
    roots = list(roots)
    if not pattern.strip() or not roots:
        raise AccessError()
    base = Path(pattern).expanduser()
    if not base.is_absolute():
        base = roots[0] / base
    matches = sorted(glob.glob(str(base), recursive=True))[: limit + 1]
    if not matches or len(matches) > limit:
        raise AccessError()
    return [resolve_data_path(m, roots, kinds=("file",)) for m in matches]
