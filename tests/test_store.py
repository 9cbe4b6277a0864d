"""gem.store helpers that have no other home in the tests."""
from __future__ import annotations

import hashlib

import numpy as np

from gem.store import file_sha256


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    data = np.random.default_rng(0).bytes((5 << 19) + 123)  # 2.5 MiB + 123 B: three 1 MiB reads, the last short
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)  # str or Path
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
