"""Per-stage training checkpoints (safetensors only, never pickle) and resuming.

A checkpoint folder holds, per stage, the net's weights (``<stage>.safetensors``), the
optimizer's tensors (``<stage>.optim.safetensors``) and one ``state.json`` with the
epochs done, the loss history, the optimizer's scalar state and a fingerprint of what
the stage depends on: the training list and the parts of the configuration that reach
that stage (stage 1: anatomy nets, seed, its training; stage 2: also the stage-2 training
and losses; stage 3: everything). A stage of another configuration or data set is
retrained (with a log line), so a rerun never mixes runs, while a change of stage-3
settings reuses finished anatomy stages (the benchmark trains v1 and v2 on one set of
stages 1-2 that way).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from bids_harmonize.safeio import atomic_write_text

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


def stage_dependencies(config, name: str) -> dict:
    """The parts of a configuration that change what stage ``name`` learns (any name but
    ``stage1``/``stage2``, e.g. an ensemble member: the whole configuration).

    >>> from bids_harmonize.harmonizer.config import HarmonizerConfig
    >>> a = HarmonizerConfig()
    >>> b = a.replace(correction={"inputs": ("pet", "t1w", "ac_error")})
    >>> stage_dependencies(a, "stage2") == stage_dependencies(b, "stage2")
    True
    >>> stage_dependencies(a, "stage3") == stage_dependencies(b, "stage3")
    False
    """
    full = config.to_dict()
    if name == "stage1":
        return {k: full[k] for k in ("anatomy", "stage1", "seed")}
    if name == "stage2":
        loss = {k: full["loss"][k] for k in ("temperature", "cosine_weight", "pseudo_ct_weight")}
        return {**{k: full[k] for k in ("anatomy", "stage1", "stage2", "seed")}, "loss": loss}
    return full


class Checkpoints:
    """The checkpoint folder of one training run (only the ``writer`` process writes)."""

    def __init__(self, folder: Path, config, data_hash: str, writer: bool):
        self.folder = Path(folder)
        self.writer = writer
        self.path = self.folder / "state.json"
        self.config = config
        self.data_hash = data_hash
        self.state = {"stages": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            for name, info in saved.get("stages", {}).items():
                if info.get("fingerprint") == self.fingerprint(name):
                    self.state["stages"][name] = info
                else:
                    LOGGER.info("checkpoint of %s in %s is from another config or data set: retraining it",
                                name, self.folder)

    def fingerprint(self, name: str) -> str:
        """sha256 of what stage ``name`` depends on (its configuration parts and the data)."""
        deps = {"config": stage_dependencies(self.config, name), "data": self.data_hash}
        return hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()

    def reset(self) -> None:
        """Forget earlier progress (``resume=False``)."""
        self.state = {"stages": {}}

    def stage(self, name: str) -> dict:
        return self.state["stages"].get(name, {})

    def save(self, name: str, module, optimizer, scaler, info: dict) -> None:
        if not self.writer:
            return
        from .weights import save_state

        self.folder.mkdir(parents=True, exist_ok=True)
        save_state(self.folder / f"{name}.safetensors", module.state_dict())
        info = {**info, "fingerprint": self.fingerprint(name)}
        if optimizer is not None:
            info["optimizer"] = save_optimizer(self.folder / f"{name}.optim.safetensors", optimizer, scaler)
        self.state["stages"][name] = info
        atomic_write_text(self.path, json.dumps(self.state, indent=1))

    def load_weights(self, name: str, module) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))

    def load_optimizer(self, name: str, optimizer, scaler) -> None:
        path = self.folder / f"{name}.optim.safetensors"
        load_optimizer(path, self.stage(name)["optimizer"], optimizer, scaler)
