"""gem.devices: device names, their resolution and the app's $GEM_DEVICE."""
from __future__ import annotations

import subprocess
import sys

import pytest

from gem.devices import DEVICE_ENV, configured_device, gpu_errors, resolve_device


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
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_cuda_indices_are_checked(monkeypatch):
    import torch

    for bad in ("cuda:", "cuda:x", "cuda:-1", "cuda:0 "):  # a name error with or without a GPU
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad, strict=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="has 2 GPU"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:2", strict=False) == "cuda"  # the app's $GEM_DEVICE: the first GPU


def test_gpu_errors_become_one_line_value_errors():
    import torch

    with pytest.raises(ValueError, match=r"GEM fit on cuda:0: out of GPU memory; run it on the CPU"):
        with gpu_errors("cuda:0", "GEM fit"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(ValueError, match=r"embedding on cuda: CUDA failed \(device-side assert\)"):
        with gpu_errors("cuda", "embedding"):
            raise RuntimeError("device-side assert\ntraceback lines")
    with pytest.raises(RuntimeError, match="on the CPU"):  # a CPU run's errors pass unchanged
        with gpu_errors("cpu", "GEM fit"):
            raise RuntimeError("on the CPU")


def test_app_fits_baselines_on_the_cpu_when_the_server_has_a_gpu(synthetic_workspace, monkeypatch):
    # $GEM_DEVICE moves GEM fits to the GPU; the k-means baselines have no GPU path and stay on the CPU
    import torch

    import gem.refit
    import gem.runs
    from gem.runs import FitSettings
    from pages import common

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(DEVICE_ENV, "auto")
    devices = []
    real_fit_run = gem.runs.fit_run

    def fit_on(ws, name, settings, warm_from=None, device="cpu"):
        devices.append((settings.method, device))
        return real_fit_run(ws, name, settings, warm_from, device="cpu")  # no GPU here to run on

    monkeypatch.setattr(gem.refit, "fit_run", fit_on)  # the fit policy (app and CLI) calls gem.runs.fit_run
    for method in ("kmeans", "spherical-kmeans", "gem"):
        common.ensure_run(FitSettings(method=method, k=4), synthetic_workspace, sync=False)
    assert devices == [("kmeans", "cpu"), ("spherical-kmeans", "cpu"), ("gem", "cuda")]


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
