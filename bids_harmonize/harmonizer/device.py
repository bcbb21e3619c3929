"""Device resolution shared by training and inference."""

from __future__ import annotations

import logging
import os

LOGGER = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """A device that is asked for and not available."""


def resolve_device(device: str = "auto"):
    """``"auto"`` -> CUDA when available (else CPU, logged); ``"cuda"`` without GPU -> error.

    Under ``torchrun`` the CUDA device is ``cuda:$LOCAL_RANK``.

    >>> resolve_device("cpu").type
    'cpu'
    """
    import torch

    name = str(device).lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "auto":
            LOGGER.info("no CUDA device available: running on CPU")
            return torch.device("cpu")
        raise DeviceError(
            f"device {device!r} was asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use --device cpu"
        )
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
