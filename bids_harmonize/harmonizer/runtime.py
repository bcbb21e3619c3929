"""Where a training run executes: device, ``torchrun`` process group, mixed precision.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the run joins (or starts) torch's own process
group (NCCL on CUDA, gloo on CPU), wraps the trained net in ``DistributedDataParallel``
and only rank 0 writes files and logs progress. Mixed precision (``torch.autocast`` with
float16 and a ``GradScaler``) is used on CUDA only.
"""

from __future__ import annotations

import os
from contextlib import nullcontext


class Runtime:
    """Device, distributed and precision settings of one training run."""

    def __init__(self, device: str, mixed_precision: bool):
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

    @property
    def main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def autocast(self):
        import torch

        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
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
