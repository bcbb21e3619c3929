"""Per-stage training checkpoints (safetensors only, never pickle) and resuming.

A checkpoint folder holds, per stage, the net's weights (``<stage>.safetensors``), the
optimizer's tensors (``<stage>.optim.safetensors``) and one ``state.json`` with the
epochs done, the loss history, the optimizer's scalar state and a fingerprint of the
configuration and training list: checkpoints of another configuration or data set are
ignored (with a warning), so a rerun never mixes runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

LOGGER = logging.getLogger(__name__)


def save_optimizer(path: Path, optimizer, scaler) -> dict:
    """Optimizer tensors to safetensors; returns the JSON-able rest (groups, scaler)."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(path))
    return {"param_groups": state["param_groups"], "scaler": scaler.state_dict()}


def load_optimizer(path: Path, meta: dict, optimizer, scaler) -> None:
    """Inverse of :func:`save_optimizer`."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state: dict = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])


class Checkpoints:
    """The checkpoint folder of one training run (only the ``writer`` process writes)."""

    def __init__(self, folder: Path, config, data_hash: str, writer: bool):
        self.folder = Path(folder)
        self.writer = writer
        self.path = self.folder / "state.json"
        self.fingerprint = hashlib.sha256(
            json.dumps({"config": config.to_dict(), "data": data_hash}, sort_keys=True).encode()
        ).hexdigest()
        self.state = {"fingerprint": self.fingerprint, "stages": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("fingerprint") == self.fingerprint:
                self.state = saved
            else:
                LOGGER.warning(
                    "checkpoints in %s are from another config or data set: starting afresh",
                    self.folder,
                )

    def reset(self) -> None:
        """Forget earlier progress (``resume=False``)."""
        self.state = {"fingerprint": self.fingerprint, "stages": {}}

    def stage(self, name: str) -> dict:
        return self.state["stages"].get(name, {})

    def save(self, name: str, module, optimizer, scaler, info: dict) -> None:
        if not self.writer:
            return
        from .weights import save_state

        self.folder.mkdir(parents=True, exist_ok=True)
        save_state(self.folder / f"{name}.safetensors", module.state_dict())
        info = dict(info)
        if optimizer is not None:
            info["optimizer"] = save_optimizer(self.folder / f"{name}.optim.safetensors", optimizer, scaler)
        self.state["stages"][name] = info
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.path)

    def load_weights(self, name: str, module) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))

    def load_optimizer(self, name: str, optimizer, scaler) -> None:
        path = self.folder / f"{name}.optim.safetensors"
        load_optimizer(path, self.stage(name)["optimizer"], optimizer, scaler)
