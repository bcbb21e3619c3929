"""Where a training run executes: device, ``torchrun`` process group, mixed precision.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the run joins (or starts) torch's own process
group (NCCL on CUDA, gloo on CPU), wraps the trained net in ``DistributedDataParallel``
and only rank 0 writes files and logs progress. Mixed precision is used on CUDA only:
bfloat16 autocast on Hopper and later (compute capability >= 9, where bf16 matmuls run at
the fp16 rate and bf16's fp32 exponent range needs no loss scaling), else float16 autocast
with a ``GradScaler``.

Patch sampling runs off the training thread in ``data_workers`` DataLoader worker
processes (:func:`default_data_workers`: 0 on CPU, where the workers would compete with
the training for the same cores, up to 4 on CUDA). The patches are a function of
``(seed, stage, epoch, index)`` alone (:class:`~.data.PatchDataset`), so the number of
workers never changes what is drawn; :func:`seed_worker` seeds numpy and ``random`` per
worker from torch's per-worker seed for anything else.
"""

from __future__ import annotations

import os
from contextlib import nullcontext


class Runtime:
    """Device, distributed and precision settings of one training run."""

    def __init__(self, device: str, mixed_precision: bool, data_workers: int | None = None):
        import torch
        import torch.distributed as dist

        from .device import resolve_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = self.world > 1
        self.owns_group = False
        self.device = resolve_device(device)
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self.owns_group = True
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rank = dist.get_rank() if self.distributed else 0
        self.amp = bool(mixed_precision) and self.device.type == "cuda"
        self.amp_dtype = amp_dtype(self.device) if self.amp else None
        self.data_workers = default_data_workers(self.device) if data_workers is None else int(data_workers)

    @property
    def grad_scaling(self) -> bool:
        """Loss scaling is needed with float16 autocast only."""
        import torch

        return self.amp and self.amp_dtype == torch.float16

    @property
    def main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def autocast(self):
        import torch

        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return nullcontext()

    def wrap(self, module):
        """``module`` in ``DistributedDataParallel`` under torchrun, else itself."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self):
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def amp_dtype(device):
    """Autocast dtype on a CUDA device: bfloat16 from compute capability 9 (Hopper), else float16."""
    import torch

    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    if major >= 9 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def default_data_workers(device) -> int:
    """DataLoader workers: 0 on CPU, ``min(4, CPUs - 1)`` on CUDA."""
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and ``random`` seeded from torch's worker seed."""
    import random

    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG third-party code may draw from
    random.seed(seed)
