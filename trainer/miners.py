"""Online triplet miners: embeddings + labels in, `(a, p, n)` index tensors out, never gradients.

Every miner works on the unit sphere with squared Euclidean distance d² = 2 − 2·cos (the FaceNet
paper's measure), over *ordered* anchor–positive pairs (a ≠ p, same label: both (i, j) and (j, i),
because the anchor decides which distances are compared). A miner never owns the margin α: it is
given the config's value (or the curriculum's scaled value) by whoever builds it.

Instead of a loop over pairs, each anchor's negatives are sorted by distance once; the negatives
that satisfy a rule for a pair are then a contiguous run of that sorted row, found by
`torch.searchsorted`. That keeps mining O(B² log B) in time and O(B²) in memory, so the paper's
batch of ~1,800 faces is mined in a fraction of a second on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class MiningStats:
    """What one mining call saw, for logging and for the curriculum.

    `active_fraction` is measured over *every* valid triplet of the batch (not only the returned
    ones): the share with positive loss d²(a,p) − d²(a,n) + α > 0 at the miner's margin. It falls as
    the embedding improves, whatever the miner returns, so it is the curriculum's signal.
    """

    anchor_positive_pairs: int
    valid_triplets: int
    active_triplets: int
    triplets: int  # how many the miner returned
    pairs_with_triplet: int  # anchor–positive pairs that produced at least one returned triplet

    @property
    def active_fraction(self) -> float:
        return self.active_triplets / self.valid_triplets if self.valid_triplets else 0.0

    def as_log(self, prefix: str = "mining/") -> dict[str, float]:
        record = {prefix + key: float(value) for key, value in asdict(self).items()}
        record[prefix + "active_fraction"] = self.active_fraction
        return record


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, B) d² = 2 − 2·cos between L2-normalised rows, clamped at 0, exact 0 on the diagonal."""
    unit = F.normalize(embeddings, dim=1)
    d2 = (2.0 - 2.0 * unit @ unit.T).clamp_min_(0.0)
    d2.fill_diagonal_(0.0)
    return d2


@dataclass(frozen=True)
class _Batch:
    """Distances, each anchor's negatives sorted nearest first, and the anchor–positive pairs.

    Pairs are kept both flat (`a`, `p`) and as a padded (B, K_max) grid of d²(a, p) per anchor row,
    the shape `torch.searchsorted` needs to look every pair up in its own anchor's sorted row.
    """

    d2: torch.Tensor  # (B, B)
    positive: torch.Tensor  # (B, B) bool: same label, a != p
    neg_sorted: torch.Tensor  # (B, B) each row's negative distances ascending, +inf past the last
    neg_order: torch.Tensor  # (B, B) column index of each sorted entry
    neg_count: torch.Tensor  # (B,) negatives per anchor
    pair_d2: torch.Tensor  # (B, K_max) d²(a, p) of row a's positives, padding after them
    pair_valid: torch.Tensor  # (B, K_max) bool: which grid entries are real pairs
    a: torch.Tensor  # (P,) anchors of all ordered pairs
    p: torch.Tensor  # (P,) their positives


def _prepare(embeddings: torch.Tensor, labels: torch.Tensor) -> _Batch:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape (B, D), got {tuple(embeddings.shape)}")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must have shape ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.to(embeddings.device)
    d2 = squared_distances(embeddings.detach())
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=d2.device)
    neg_sorted, neg_order = torch.sort(d2.masked_fill(same, float("inf")), dim=1)
    per_row = positive.sum(dim=1)
    k_max = int(per_row.max()) if len(labels) else 0
    cols = torch.topk(positive.to(torch.float32), k_max, dim=1).indices  # positives first in each row
    valid = torch.arange(k_max, device=d2.device)[None, :] < per_row[:, None]
    rows = torch.arange(len(labels), device=d2.device)[:, None].expand(-1, k_max)
    return _Batch(
        d2=d2,
        positive=positive,
        neg_sorted=neg_sorted.contiguous(),
        neg_order=neg_order,
        neg_count=(~same).sum(dim=1),
        pair_d2=d2.gather(1, cols).contiguous(),
        pair_valid=valid,
        a=rows[valid],
        p=cols[valid],
    )


def _count_below(batch: _Batch, offset: float, inclusive: bool) -> torch.Tensor:
    """Per pair: how many of the anchor's negatives have d² < d²(a,p) + offset (≤ when `inclusive`)."""
    counts = torch.searchsorted(batch.neg_sorted, batch.pair_d2 + offset, right=inclusive)
    return counts[batch.pair_valid]


def _stats(batch: _Batch, active: torch.Tensor, returned: int, pairs_with_triplet: int) -> MiningStats:
    """`active`: per pair, the number of negatives with positive loss at the miner's margin."""
    return MiningStats(
        anchor_positive_pairs=len(batch.a),
        valid_triplets=int(batch.neg_count[batch.a].sum()),
        active_triplets=int(active.sum()),
        triplets=returned,
        pairs_with_triplet=pairs_with_triplet,
    )


def _check_margin(margin: float) -> float:
    if not margin >= 0.0:
        raise ConfigError(f"triplet margin must be >= 0, got {margin!r}")
    return float(margin)


class SemiHardMiner:
    """FaceNet's rule: for every anchor–positive pair, a negative with d²(a,p) < d²(a,n) < d²(a,p) + α.

    select="random" (default, as in the widely used FaceNet re-implementation by D. Sandberg) picks one
    such negative uniformly at random; select="hardest" picks the one with the smallest d²(a,n).
    Pairs without a semi-hard negative are dropped, unless `fallback_to_hard`: then they take their
    easiest hard negative (the largest d²(a,n) ≤ d²(a,p)), if they have one; pairs whose negatives are
    all beyond the margin still give nothing (their loss would be zero).
    Random choices come from `generator` (a CPU `torch.Generator`), so mining is reproducible.
    """

    def __init__(
        self,
        margin: float,
        select: Literal["random", "hardest"] = "random",
        fallback_to_hard: bool = False,
        generator: torch.Generator | None = None,
    ):
        if select not in ("random", "hardest"):
            raise ConfigError(f"SemiHardMiner select must be 'random' or 'hardest', got {select!r}")
        self.margin = _check_margin(margin)
        self.select = select
        self.fallback_to_hard = fallback_to_hard
        self.generator = generator
        self.last_stats: MiningStats | None = None

    @torch.no_grad()
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        batch = _prepare(embeddings, labels)
        a, p = batch.a, batch.p
        # Sorted positions [lo, hi) of a's negatives hold exactly the semi-hard ones for (a, p).
        lo = _count_below(batch, 0.0, inclusive=True)
        hi = _count_below(batch, self.margin, inclusive=False)
        found = hi > lo
        pos = self._choose(lo, hi)
        if self.fallback_to_hard:
            use_hard = ~found & (lo > 0)  # lo > 0: at least one negative with d² ≤ d²(a,p)
            pos = torch.where(use_hard, lo - 1, pos)
            found = found | use_hard
        self.last_stats = _stats(batch, hi, int(found.sum()), int(found.sum()))
        a, p, pos = a[found], p[found], pos[found]
        return a, p, batch.neg_order[a, pos]

    def _choose(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        if self.select == "hardest":
            return lo
        u = torch.rand(len(lo), generator=self.generator, dtype=torch.float64).to(lo.device)
        pos = lo + (u * (hi - lo).to(torch.float64)).long()
        return torch.minimum(pos, (hi - 1).clamp_min(lo))


class BatchHardMiner:
    """For each anchor with a positive and a negative in the batch: its farthest positive and nearest negative.

    Batch-hard needs no margin to choose; `margin` (the config's α) is used only for `last_stats`.
    """

    def __init__(self, margin: float = 0.0):
        self.margin = _check_margin(margin)
        self.last_stats: MiningStats | None = None

    @torch.no_grad()
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        batch = _prepare(embeddings, labels)
        usable = batch.positive.any(dim=1) & (batch.neg_count > 0)
        a = usable.nonzero(as_tuple=True)[0]
        if len(a):
            p = batch.d2.masked_fill(~batch.positive, -1.0)[a].argmax(dim=1)
            n = batch.neg_order[a, 0]
        else:  # also covers an empty batch, whose (0, 0) rows cannot be reduced
            p, n = a.clone(), a.clone()
        active = _count_below(batch, self.margin, inclusive=False)
        self.last_stats = _stats(batch, active, len(a), len(a))
        return a, p, n


class BatchAllMiner:
    """Every valid triplet with positive loss: d²(a,p) − d²(a,n) + α > 0.

    The result can hold up to B³ triplets; meant for moderate batches (its size is in `last_stats`).
    """

    def __init__(self, margin: float):
        self.margin = _check_margin(margin)
        self.last_stats: MiningStats | None = None

    @torch.no_grad()
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        batch = _prepare(embeddings, labels)
        a, p = batch.a, batch.p
        # The active negatives of (a, p) are a's sorted negatives at positions [0, count).
        count = _count_below(batch, self.margin, inclusive=False)
        pair = torch.repeat_interleave(torch.arange(len(a), device=a.device), count)
        start = torch.cumsum(count, 0) - count
        pos = torch.arange(len(pair), device=a.device) - start[pair]
        a_out, p_out = a[pair], p[pair]
        n_out = batch.neg_order[a_out, pos]
        self.last_stats = _stats(batch, count, len(a_out), int((count > 0).sum()))
        return a_out, p_out, n_out


MINERS = {"semihard": SemiHardMiner, "batch_hard": BatchHardMiner, "batch_all": BatchAllMiner}


def create_miner(name: str, margin: float, **kwargs) -> SemiHardMiner | BatchHardMiner | BatchAllMiner:
    """Build a miner by its config name with the margin its caller owns."""
    if name not in MINERS:
        raise ConfigError(f"unknown miner {name!r}; known miners: {', '.join(sorted(MINERS))}")
    return MINERS[name](margin=margin, **kwargs)
