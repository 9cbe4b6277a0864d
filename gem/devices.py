"""Where torch work runs: device names, their resolution, and the server's configured device.

GEM fits (``gem.model``) and the embedder (``gem.embed``) take ``device`` = "cpu" (the default
and the tested path), "cuda" / "cuda:N", or "auto" (CUDA when this torch sees a GPU); the CLI's ``--device`` too
(default "cpu"). The app runs on ``$GEM_DEVICE`` (unset: "cpu"). Importing this module does not
import torch, and resolving "cpu" never does.
"""
from __future__ import annotations

import contextlib
import os
import re

__all__ = ["DEVICES", "DEVICE_ENV", "is_cuda", "resolve_device", "configured_device", "gpu_errors"]

DEVICES = ("cpu", "cuda", "auto")
DEVICE_ENV = "GEM_DEVICE"


def is_cuda(device) -> bool:
    """Whether ``device`` (a resolved device name) is a CUDA device."""
    return str(device).startswith("cuda")


def resolve_device(device, strict: bool = True) -> str:
    """The torch device to run on: "cpu"; "cuda" or "cuda:N" (an error when CUDA is not
    available, unless ``strict`` is False: then "cpu"); "auto" = "cuda" when
    ``torch.cuda.is_available()``, else "cpu"."""
    if device is None or device == "cpu":
        return "cpu"
    if not isinstance(device, str) or not (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    import torch

    if torch.cuda.is_available():
        if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
            if not strict:
                return "cuda"
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return "cuda" if device == "auto" else device
    if device == "auto" or not strict:
        return "cpu"
    raise ValueError(f"device={device!r}: CUDA is not available to this torch ({torch.__version__}); "
                     "use device='cpu' or 'auto'")


@contextlib.contextmanager
def gpu_errors(device: str, what: str):
    """On a CUDA ``device``, torch's errors (out of memory above all) become a ValueError naming
    ``what`` and the way out, so the CLI and the app report them in one line; elsewhere a no-op."""
    if not is_cuda(device):
        yield
        return
    try:
        yield
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        import torch

        hint = ("out of GPU memory" if isinstance(exc, torch.cuda.OutOfMemoryError)
                else f"CUDA failed ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})")
        raise ValueError(f"{what} on {device}: {hint}; run it on the CPU (device 'cpu', --device cpu) "
                         "or with less data per step (a smaller batch or sample)") from exc


def configured_device() -> str:
    """``$GEM_DEVICE`` resolved without failing: "cpu" when it is unset, names no available GPU, or
    is not a device name. A server's operator sets it to "auto" or "cuda" so the app fits and
    embeds on the GPU."""
    try:
        return resolve_device(os.environ.get(DEVICE_ENV, "cpu").strip() or "cpu", strict=False)
    except ValueError:
        return "cpu"
