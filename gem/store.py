"""The workspace on disk, and atomic writes.

A workspace is a folder:

    corpus.parquet                  validated corpus (id, text, source?, category?, n_tokens, ...)
    rejects.jsonl                   rows the loader refused, with the reason
    embeddings/<rep>.npy            float32 unit rows aligned with corpus.parquet ("final" or "layerN")
    embeddings/<rep>.norms.npy      pre-normalisation norms (raw vector = unit row x norm)
    embeddings/<rep>.json           model fingerprint, ids digest, shape
    cache/                          embedding cache keyed by model fingerprint + text hash
    layouts/                        cached 2-D / sphere layouts
    runs/<name>/                    fitted runs: params.json, model.json, *.npy, assignments.parquet
    taxonomy.sqlite                 curator state
    exports/<name>/                 export bundles

Every file is written atomically (temporary file in the same folder + ``os.replace``), so an
interrupted write never leaves a half-written file. Nothing here is ever pickled.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

SAMPLE_DATA_DIR = Path(__file__).resolve().parent.parent / "sample_data"
DEFAULT_WORKSPACE = Path("workspace")
UMASK = os.umask(0)  # the process's umask, read once: new files get mode 0o666 & ~UMASK
os.umask(UMASK)


# ---------------------------------------------------------------------------- time stamps
# Three formats are on disk, each kept for what already reads it (all parse with
# datetime.fromisoformat).
def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second: ``2025-01-31T12:00:00+00:00`` (a run's ``created``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def utc_now_ms() -> str:
    """Now in UTC, ISO 8601 to the millisecond: ``2025-01-31T12:00:00.123+00:00`` (the taxonomy's and
    the document flags' edit times and audit trail, which order edits made within one second)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def utc_now_z() -> str:
    """Now in UTC, ISO 8601 to the second with ``Z`` for UTC: ``2025-01-31T12:00:00Z`` (the
    ``created_at`` of mixtures and export bundles)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------- messages
MESSAGE_VALUE_CHARS = 80  # a value quoted in a message is cut to this many characters


def short(value, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``value`` as text of at most ``limit`` characters ("…" where cut): what a message quotes of
    an id, a name or a query the user gave, however long it is."""
    text = str(value)
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def show_path(path) -> str:
    """A path (or file name) as text that can always be printed and written: bytes of a non-UTF-8
    name (kept by Python as lone surrogates) appear as ``\\xe9`` escapes."""
    try:
        return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate no file name can hold (not from surrogateescape)
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")


# ---------------------------------------------------------------------------- a full disk
class DiskFullError(OSError):
    """A write that ran out of space (ENOSPC, a quota, a short write): the message names the path
    and, where known, the space it needed and the space left."""

    def __str__(self) -> str:  # the message alone, without "[Errno 28]"
        return str(self.strerror)


_SHORT_WRITE = re.compile(r"^\s*(\d+) requested and (\d+) written\s*$")  # numpy's tofile on a full disk


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that ran out of space: errno ENOSPC or EDQUOT, numpy's "N requested
    and M written", or a library's wrapped "[Errno 28]" / "No space left on device"."""
    if isinstance(exc, DiskFullError):
        return True
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    text = str(exc)
    return bool(_SHORT_WRITE.match(text)) or "No space left on device" in text or "[Errno 28]" in text


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n:,} bytes"


def disk_full(exc: OSError, path, needed: int | None = None) -> DiskFullError:
    """The DiskFullError of ``exc`` raised while writing ``path``: one line naming the path, the
    space needed (``needed`` bytes, or what a short write says) and the space left."""
    m = _SHORT_WRITE.match(str(exc))
    if needed is None and m:
        needed = int(m.group(1))
    free = _free_bytes(Path(path))
    parts = ([f"{_megabytes(needed)} needed"] if needed else []) + ([f"{_megabytes(free)} free"] if free is not None else [])
    where = f" (writing {show_path(exc.filename)})" if getattr(exc, "filename", None) and \
        show_path(exc.filename) != show_path(path) else ""
    return DiskFullError(errno.ENOSPC, f"{show_path(path)}: no space left on device{where}"
                         + (f" ({', '.join(parts)})" if parts else "") + "; nothing was written: free some space "
                         "and run it again")


def _explained(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk not yet explained (to be raised again as a DiskFullError)."""
    return is_disk_full(exc) and not isinstance(exc, DiskFullError)


def make_folder(folder: str | os.PathLike) -> list[Path]:
    """``folder`` and its missing parents created; returns those that did not exist, deepest first
    (``remove_empty`` takes them back after a failure)."""
    folder = Path(folder)
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty(missing)
        if _explained(exc):
            raise disk_full(exc, folder) from exc
        raise
    return missing


def remove_empty(folders) -> None:
    """Remove the folders (deepest first) that are still empty; stop at the first that is not."""
    for p in folders:
        try:
            Path(p).rmdir()
        except OSError:
            break


# ---------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it over ``target``.

    On any exception the temporary file is removed, and so are the folders made for it (when
    empty): ``target`` is left untouched. Out of space, the error is a DiskFullError naming
    ``target`` (and ``needed`` bytes, when the caller knows them).
    """
    target = Path(target)
    created = make_folder(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    except OSError as exc:
        remove_empty(created)
        if _explained(exc):
            raise disk_full(exc, target, needed) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    ok = False
    try:
        os.chmod(tmp_path, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual mode
        yield tmp_path
        os.replace(tmp_path, target)
        ok = True
    except OSError as exc:
        if _explained(exc):
            raise disk_full(exc, target, needed) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not ok:
            remove_empty(created)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target, needed=len(data)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return write_text_atomic(target, json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default) + "\n")


def save_npy_atomic(target: str | os.PathLike, array: np.ndarray) -> Path:
    array = np.asarray(array)
    with atomic_path(target, suffix=".npy", needed=int(array.nbytes) + 128) as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(target)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a .npy file without ever unpickling (user files are untrusted)."""
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def write_parquet_atomic(target: str | os.PathLike, table) -> Path:
    """Write a pandas DataFrame or pyarrow Table to Parquet atomically (through a file object:
    pyarrow encodes path strings as UTF-8, and file names need not be)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(target, suffix=".parquet") as tmp, open(tmp, "wb") as fh:
        pq.write_table(table, fh)
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place only when complete.

    An existing ``target`` is replaced as a whole; a failure leaves no half-written folder, and so
    does a kill at any point: the folder is built in ``.<name>.tmp-<pid>-<token>`` (locked while
    its builder lives), renamed to ``.<name>.new-<pid>-<token>`` when complete, the old folder is
    renamed away to ``.<name>.old-<pid>-<token>``, the new one renamed into place, and the old one
    deleted. The swap runs under a lock on the parent folder. The next ``atomic_dir`` (or
    :func:`recover_dir`) on the same target repairs what a killed swap left: when ``target`` is
    missing, the previous folder comes back from its hidden ``.old-`` copy (the replace did not
    happen), and abandoned hidden copies are deleted. A failure removes the build and the folders
    made for it (when empty); out of space, the error is a DiskFullError naming ``target``.
    """
    target = Path(target)
    created = make_folder(target.parent)
    recover_dir(target)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = target.parent / f".{target.name}.tmp-{token}"
    new = target.parent / f".{target.name}.new-{token}"
    old = target.parent / f".{target.name}.old-{token}"
    try:
        tmp.mkdir()
    except OSError as exc:
        remove_empty(created)
        if _explained(exc):
            raise disk_full(exc, target) from exc
        raise
    hold = _flock(tmp, blocking=False)  # marks the build as alive for other processes' recovery
    ok = False
    try:
        yield tmp
        with _dir_lock(target.parent):
            os.replace(tmp, new)  # complete
            moved = False
            try:
                if target.exists():
                    os.replace(target, old)
                    moved = True
                os.replace(new, target)
            except BaseException:
                if moved and not target.exists() and old.exists():
                    os.replace(old, target)  # put the previous folder back
                raise
            _fsync_dir(target.parent)
        ok = True
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        # out of space: name the folder being made, not a hidden copy of it (nor one inside it)
        if is_disk_full(exc) and (not isinstance(exc, DiskFullError) or show_path(tmp) in str(exc)):
            raise disk_full(exc, target) from exc
        raise
    finally:
        for leftover in (tmp, new):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
        _unlock(hold)
        if not ok:
            remove_empty(created)


_SWEPT = re.compile(r"^\.(?P<name>.+)\.(?:tmp|new|old)-\d+-[0-9a-f]+$")


def sweep_leftovers(folder: str | os.PathLike) -> list[str]:
    """What killed :func:`atomic_dir` builds of any target left in ``folder``, repaired or removed
    (:func:`recover_dir` on each such target): a command that makes folders there calls it when it
    starts, so a killed run's hidden ``.<name>.tmp-*`` copies do not pile up. Copies of a live
    build are left alone. Returns the targets looked at."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted({m["name"] for entry in os.scandir(folder)
                    if (m := _SWEPT.match(entry.name)) and entry.is_dir(follow_symlinks=False)})
    for name in names:
        recover_dir(folder / name)
    return names


_LEFTOVER_KINDS = ("tmp", "new", "old")
_LEGACY_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkdtemp names of the earlier atomic_dir


def recover_dir(target: str | os.PathLike) -> bool:
    """Repair what a killed :func:`atomic_dir` left beside ``target``; True when ``target`` was
    restored. When ``target`` is missing and an abandoned hidden ``.old-`` copy exists (the kill
    came between moving the old folder away and moving the new one in), it is renamed back; every
    abandoned hidden copy of ``target`` (``.tmp-``, ``.new-``, ``.old-``, and the earlier
    ``.<name>.XXXXXXXX`` / ``.<name>.old.XXXXXXXX/x`` layout) is then deleted. Copies of a live
    builder (its lock is held) are left alone. Safe to call on every open of ``target``."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return False
    pattern = re.compile(r"^\." + re.escape(target.name)
                         + r"\.(?:(?P<kind>tmp|new|old)-(?P<pid>\d+)-[0-9a-f]+|(?P<legacy>(?:old\.)?" + _LEGACY_RANDOM + r"))$")
    candidates = []
    for entry in os.scandir(parent):
        m = pattern.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False):
            candidates.append((m, Path(entry.path)))
    if not candidates:
        return False
    restored = False
    with _dir_lock(parent) as locked:
        olds = []  # complete copies of the previous folder, newest first
        doomed = []
        for m, path in candidates:
            if not path.exists():
                continue
            if m["legacy"] is not None:
                if m["legacy"].startswith("old.") and (path / "x").is_dir():
                    olds.append((path.stat().st_mtime_ns, path / "x", path))
                else:
                    doomed.append(path)
                continue
            if not _abandoned(path, m["kind"], int(m["pid"]), locked):
                continue
            if m["kind"] == "old":
                olds.append((path.stat().st_mtime_ns, path, path))
            else:
                doomed.append(path)
        olds.sort(key=lambda t: t[0], reverse=True)
        if not target.exists() and olds:
            _, copy, holder = olds.pop(0)
            os.replace(copy, target)
            _fsync_dir(parent)
            restored = True
            if holder != copy:
                doomed.append(holder)
        doomed += [holder for _, _, holder in olds]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return restored


def _abandoned(path: Path, kind: str, pid: int, parent_locked: bool) -> bool:
    """Whether a hidden copy's writer is gone. A build (``tmp``) is locked by its live builder;
    ``new`` / ``old`` copies exist only inside the swap, which holds the parent lock that the
    caller holds now. Without working locks: the writer's process id is not alive (nor ours)."""
    if kind == "tmp":
        fd = _flock(path, blocking=False)
        if fd is not None:
            _unlock(fd)
            return True
        if _HAVE_FLOCK and _flock_works(path):
            return False  # locked by a live builder
    elif parent_locked:
        return True
    return pid != os.getpid() and not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


try:
    import fcntl as _fcntl

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover - Windows
    _fcntl = None
    _HAVE_FLOCK = False


def _flock(path: Path, blocking: bool = True) -> int | None:
    """An open descriptor of ``path`` (a folder) holding an exclusive flock, or None when the lock
    is taken (non-blocking) or locks do not work here."""
    if not _HAVE_FLOCK:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | (0 if blocking else _fcntl.LOCK_NB))
    except OSError:
        os.close(fd)
        return None
    return fd


def _flock_works(path: Path) -> bool:
    """False where flock is unsupported (the failure above was not 'already locked')."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return True  # held exclusively by someone: locks work
    except OSError:
        return False
    finally:
        os.close(fd)


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases its flock


@contextlib.contextmanager
def _dir_lock(folder: Path) -> Iterator[bool]:
    """Exclusive lock on ``folder`` for atomic_dir's swap and recovery; yields whether it is held."""
    fd = _flock(folder, blocking=True)
    try:
        yield fd is not None
    finally:
        _unlock(fd)


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (best effort: not every platform can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_file_atomic(src: str | os.PathLike, target: str | os.PathLike) -> Path:
    with atomic_path(target) as tmp:
        shutil.copyfile(src, tmp)
    return Path(target)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ids_digest(ids) -> str:
    """A short digest of an ordered id sequence: embeddings are checked against it."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


_DIGEST_MEMO: dict[tuple, str] = {}


def embeddings_digest(ws: "Workspace", representation: str) -> str:
    """Content digest of the stored unit embeddings (memoised by path, size and mtime)."""
    path = ws.embeddings_path(representation)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGEST_MEMO:
        _DIGEST_MEMO[key] = file_sha256(path)[:16]
    return _DIGEST_MEMO[key]


# ---------------------------------------------------------------------------- workspace
class Workspace:
    """Paths and loaders of one workspace folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # paths
    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.parquet"

    @property
    def rejects_path(self) -> Path:
        return self.root / "rejects.jsonl"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def layouts_dir(self) -> Path:
        return self.root / "layouts"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def taxonomy_db(self) -> Path:
        return self.root / "taxonomy.sqlite"

    def embeddings_path(self, representation: str = "final") -> Path:
        return self.root / "embeddings" / f"{representation}.npy"

    def norms_path(self, representation: str = "final") -> Path:
        return self.root / "embeddings" / f"{representation}.norms.npy"

    def embeddings_meta_path(self, representation: str = "final") -> Path:
        return self.root / "embeddings" / f"{representation}.json"

    def run_dir(self, name: str) -> Path:
        validate_name(name, "run name")
        return self.runs_dir / name

    # queries
    def has_corpus(self) -> bool:
        return self.corpus_path.exists()

    def representations(self) -> list[str]:
        folder = self.root / "embeddings"
        if not folder.exists():
            return []
        return sorted(p.stem for p in folder.glob("*.npy") if not p.name.endswith(".norms.npy"))

    def runs(self) -> list[str]:
        if not self.runs_dir.exists():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    # loaders
    def load_corpus(self, columns: list[str] | None = None):
        import pandas as pd

        if not self.corpus_path.exists():
            raise FileNotFoundError(f"{self.corpus_path}: no corpus in this workspace; run `gem ingest` first")
        return pd.read_parquet(self.corpus_path, columns=columns)

    def load_embeddings(self, representation: str = "final", mmap: bool = False) -> np.ndarray:
        path = self.embeddings_path(representation)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no '{representation}' embeddings; run `gem embed` first")
        return load_npy(path, mmap=mmap)

    def load_norms(self, representation: str = "final") -> np.ndarray:
        return load_npy(self.norms_path(representation))

    def load_raw_embeddings(self, representation: str = "final", unit: np.ndarray | None = None) -> np.ndarray:
        """Pre-normalisation vectors (unit rows x stored norms): what practitioners feed k-means.
        Pass ``unit`` when the unit rows are already loaded, to skip reading them again."""
        if unit is None:
            unit = self.load_embeddings(representation)
        return unit * self.load_norms(representation)[:, None].astype(unit.dtype)

    def save_embeddings(self, representation: str, unit: np.ndarray, norms: np.ndarray, meta: dict) -> None:
        save_npy_atomic(self.embeddings_path(representation), np.ascontiguousarray(unit, dtype=np.float32))
        save_npy_atomic(self.norms_path(representation), np.asarray(norms, dtype=np.float32))
        write_json_atomic(self.embeddings_meta_path(representation), meta)


def validate_name(name: str, what: str = "name") -> str:
    """Names that become folder names: letters, digits, '-', '_', '.', not starting with '.'."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}", name):
        raise ValueError(
            f"invalid {what} {short(name)!r}: use 1-100 letters, digits, '_', '-' or '.', not starting with '.' or '-'"
        )
    return name


class WorkspaceNotFound(FileNotFoundError):
    """A workspace folder that does not exist (a typo, most often): nothing reads or makes it."""

    def __str__(self) -> str:  # the message alone, without "[Errno 2]"
        return str(self.strerror)


def missing_workspace(path: str | os.PathLike) -> WorkspaceNotFound:
    """The one error of a workspace that is not there: its path and how to make one."""
    shown = show_path(path)
    try:
        exists = Path(path).exists()
    except (OSError, ValueError):  # too long, or a name the file system cannot hold
        exists = False
    if exists:
        return WorkspaceNotFound(errno.ENOTDIR, f"{shown}: not a workspace folder (it is a file); give the "
                                 "folder `gem ingest` made")
    return WorkspaceNotFound(errno.ENOENT, f"{shown}: no such workspace; create it with `gem ingest INPUT -w {shown}`")


def existing_workspace(path: str | os.PathLike) -> Workspace:
    """The workspace of an existing folder, else WorkspaceNotFound: what every reader of a
    workspace opens it with (only ``gem ingest`` and an explicit create make one)."""
    ws = Workspace(path)
    try:
        is_dir = ws.root.is_dir()
    except (OSError, ValueError):  # a name the file system cannot hold
        is_dir = False
    if not is_dir:
        raise missing_workspace(ws.root)
    return ws


def open_workspace(path: str | os.PathLike | None = None, create: bool = False) -> Workspace:
    """Open a workspace. With no path: the sample workspace, seeded from ``sample_data/`` on first
    use (corpus, embeddings and layouts are copied, not recomputed). With a path: an existing
    folder (WorkspaceNotFound otherwise), or with ``create`` the folder made when missing."""
    if path is not None:
        if create:
            ws = Workspace(path)
            make_folder(ws.root)
            return ws
        return existing_workspace(path)
    return seed_sample_workspace(DEFAULT_WORKSPACE / "sample")


def seed_sample_workspace(dest: str | os.PathLike) -> Workspace:
    ws = Workspace(dest)
    ws.root.mkdir(parents=True, exist_ok=True)
    src = SAMPLE_DATA_DIR
    for rel in ["corpus.parquet"]:
        if not (ws.root / rel).exists() and (src / rel).exists():
            copy_file_atomic(src / rel, ws.root / rel)
    for sub in ["embeddings", "layouts"]:
        if (src / sub).exists():
            for f in (src / sub).iterdir():
                if f.is_file() and not (ws.root / sub / f.name).exists():
                    copy_file_atomic(f, ws.root / sub / f.name)
    return ws
