"""Where torch work runs: device names, their resolution, and the server's configured device.

GEM fits (``gem.model``) and the embedder (``gem.embed``) take ``device`` = "cpu" (the default
and the tested path), "cuda" / "cuda:N", or "auto" (CUDA when this torch sees a GPU); the CLI's ``--device`` too
(default "cpu"). The app runs on ``$GEM_DEVICE`` (unset: "cpu"). Importing this module does not
import torch, and resolving "cpu" never does.
"""
from __future__ import annotations

import os

__all__ = ["DEVICES", "DEVICE_ENV", "resolve_device", "configured_device"]

DEVICES = ("cpu", "cuda", "auto")
DEVICE_ENV = "GEM_DEVICE"


def resolve_device(device, strict: bool = True) -> str:
    """The torch device to run on: "cpu"; "cuda" or "cuda:N" (an error when CUDA is not
    available, unless ``strict`` is False: then "cpu"); "auto" = "cuda" when
    ``torch.cuda.is_available()``, else "cpu"."""
    if device is None or device == "cpu":
        return "cpu"
    if not isinstance(device, str) or not (device in DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    import torch

    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto" or not strict:
        return "cpu"
    raise ValueError(f"device={device!r}: CUDA is not available to this torch ({torch.__version__}); "
                     "use device='cpu' or 'auto'")


def configured_device() -> str:
    """``$GEM_DEVICE`` resolved without failing: "cpu" when it is unset, names no available GPU, or
    is not a device name. A server's operator sets it to "auto" or "cuda" so the app fits and
    embeds on the GPU."""
    try:
        return resolve_device(os.environ.get(DEVICE_ENV, "cpu").strip() or "cpu", strict=False)
    except ValueError:
        return "cpu"
