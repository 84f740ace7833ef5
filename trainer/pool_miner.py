"""Negatives from outside the batch: a memory of past batches (cross-batch memory, Wang et al. 2020) and an
older model's embeddings of the same faces (FaceNet's harmonic embeddings, Schroff et al. 2015, section 5).

The paper mines from ~1,800 faces per batch; on two CPU cores a batch is 64. `MemoryBank` keeps the last
`size` embeddings (detached, so they cost no backward pass), and `PoolMiner` applies FaceNet's semi-hard rule
with the anchor–positive pairs of the batch and negatives from such a pool: many more strangers per step for
the price of one matrix product. Like every miner it returns indices only (`trainer.miners`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from trainer.miners import MiningStats, Triplets, _check_margin


class MemoryBank:
    """A ring of the last `size` (embedding, label) rows pushed; `embeddings`/`labels` hold the filled part."""

    def __init__(self, size: int, dim: int):
        if size < 1 or dim < 1:
            raise ConfigError(f"memory bank size and dim must be >= 1, got {size}, {dim}")
        self.size = size
        self._embeddings = torch.zeros(size, dim)
        self._labels = torch.full((size,), -1, dtype=torch.int64)
        self._next, self._filled = 0, 0

    def __len__(self) -> int:
        return self._filled

    @property
    def embeddings(self) -> torch.Tensor:
        return self._embeddings[: self._filled]

    @property
    def labels(self) -> torch.Tensor:
        return self._labels[: self._filled]

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        rows = F.normalize(embeddings.detach().float(), dim=1)[-self.size:]
        labels = labels[-self.size:]
        slots = (self._next + torch.arange(len(rows))) % self.size
        self._embeddings[slots], self._labels[slots] = rows, labels.to(torch.int64)
        self._next = int((self._next + len(rows)) % self.size)
        self._filled = min(self.size, self._filled + len(rows))

    def state_dict(self) -> dict:
        return {"embeddings": self._embeddings.clone(), "labels": self._labels.clone(),
                "next": self._next, "filled": self._filled}

    def load_state_dict(self, state: dict) -> None:
        self._embeddings, self._labels = state["embeddings"].clone(), state["labels"].clone()
        self._next, self._filled = int(state["next"]), int(state["filled"])


class PoolMiner:
    """For each anchor–positive pair, the hardest semi-hard negative of a pool: the nearest n with
    d²(a,p) < d²(a,n) < d²(a,p) + α; a pair with none takes its easiest hard negative (the farthest
    d²(a,n) ≤ d²(a,p)) if it has one, and gives nothing otherwise (every negative beyond the margin).

    `positives` are the pair partners: the batch itself (`same_set=True`: a ≠ p) or another set of the same
    rows, e.g. an older model's embeddings of the batch (`same_set=False`: a's own row is a positive too).
    """

    def __init__(self, margin: float):
        self.margin = _check_margin(margin)
        self.last_stats: MiningStats | None = None

    @torch.no_grad()
    def mine(self, anchors: torch.Tensor, labels: torch.Tensor, positives: torch.Tensor, pool: torch.Tensor,
             pool_labels: torch.Tensor, same_set: bool) -> Triplets:
        if anchors.shape != positives.shape or labels.shape != (len(anchors),):
            raise ValueError(f"anchors {tuple(anchors.shape)}, positives {tuple(positives.shape)} and labels "
                             f"{tuple(labels.shape)} must describe the same rows")
        if pool.ndim != 2 or pool_labels.shape != (len(pool),):
            raise ValueError(f"pool {tuple(pool.shape)} and pool labels {tuple(pool_labels.shape)} do not match")
        unit_a, unit_p = F.normalize(anchors.detach(), dim=1), F.normalize(positives.detach(), dim=1)
        same = labels[:, None] == labels[None, :]
        if same_set:
            same &= ~torch.eye(len(labels), dtype=torch.bool)
        a, p = same.nonzero(as_tuple=True)
        d_ap = (2.0 - 2.0 * (unit_a[a] * unit_p[p]).sum(dim=1)).clamp_min(0.0)[:, None]
        d_an = (2.0 - 2.0 * unit_a @ F.normalize(pool.detach(), dim=1).T).clamp_min(0.0)
        d_an = d_an.masked_fill(labels[:, None] == pool_labels[None, :], float("inf"))[a]
        semi = (d_an > d_ap) & (d_an < d_ap + self.margin)
        hard = d_an <= d_ap
        n = torch.where(semi.any(dim=1), d_an.masked_fill(~semi, float("inf")).argmin(dim=1),
                        d_an.masked_fill(~hard, -1.0).argmax(dim=1))
        found = semi.any(dim=1) | hard.any(dim=1)
        negatives = torch.isfinite(d_an)
        self.last_stats = MiningStats(
            anchor_positive_pairs=len(a), valid_triplets=int(negatives.sum()),
            active_triplets=int((d_an < d_ap + self.margin).sum()), triplets=int(found.sum()),
            pairs_with_triplet=int(found.sum()))
        return a[found], p[found], n[found]
