"""gem.devices: device names, their resolution and the app's $GEM_DEVICE."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gem.devices import DEVICE_ENV, configured_device, resolve_device


def test_resolve_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == resolve_device(None) == resolve_device("auto") == "cpu"
    assert resolve_device("cuda", strict=False) == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")
    for bad in ("gpu", "CUDA", 0, "cuda0"):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_configured_device_never_fails(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert configured_device() == "cpu"
    for value in ("auto", "cuda", "cuda:3", "gpu", "  ", ""):  # no GPU here, or not a device name
        monkeypatch.setenv(DEVICE_ENV, value)
        assert configured_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(DEVICE_ENV, " auto ")
    assert configured_device() == "cuda"


def test_resolving_cpu_does_not_import_torch():
    # the app's pages call configured_device() on every run; torch's import costs ~1.5 s
    code = "import sys, gem.devices as d; d.resolve_device('cpu'); d.configured_device(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", "GEM_DEVICE": "cpu"}, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert out.stdout.strip() == "False"
