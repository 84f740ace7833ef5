"""torchrun / DDP plumbing: which rank we are, and a gather that keeps gradients.

Mining needs the whole effective batch (the paper mines over ~1,800 images), so every rank gathers
all ranks' embeddings before mining. `torch.distributed.nn.all_gather` is differentiable: each rank's
loss over the global batch sends gradients back to the rank that owns each embedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistContext":
        """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size())

    def gather(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' embeddings (with gradients) and labels, concatenated in rank order."""
        if not self.enabled:
            return embeddings, labels
        from torch.distributed.nn.functional import all_gather  # differentiable variant

        all_embeddings = torch.cat(all_gather(embeddings), dim=0)
        label_parts = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(label_parts, labels)
        return all_embeddings, torch.cat(label_parts, dim=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
