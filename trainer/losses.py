"""Losses that score what a miner chose: the FaceNet triplet loss, and distillation from a teacher; and
one global threshold for every pair (open-set).

A loss never picks triplets; it receives `(a, p, n)` index tensors from a miner (`trainer.miners`).
The margin α is owned by the config and passed in by whoever builds the loss (the curriculum may
scale it); it is not re-declared here.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError

DistillationMode = Literal["centred_cosine", "relational"]


class TripletLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable
    active_fraction: float  # share of the given triplets with positive loss
    triplets: int  # how many triplets were scored


class TripletLoss(torch.nn.Module):
    """Mean over the given triplets of relu(d²(a,p) − d²(a,n) + α), with d² on the unit sphere.

    Embeddings are L2-normalised here as well (a no-op for this project's models) so that the
    loss means the paper's quantity even for a raw backbone. With no triplets the loss is a zero
    that still depends on `embeddings`, so `backward()` works and the step is a no-op.
    """

    def __init__(self, margin: float):
        super().__init__()
        if not margin >= 0.0:
            raise ConfigError(f"triplet margin must be >= 0, got {margin!r}")
        self.margin = float(margin)

    def forward(
        self, embeddings: torch.Tensor, triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> TripletLossOutput:
        a, p, n = triplets
        if not len(a) == len(p) == len(n):
            raise ValueError(f"triplet index tensors must have equal lengths, got {len(a)}, {len(p)}, {len(n)}")
        if len(a) == 0:
            return TripletLossOutput(embeddings.sum() * 0.0, 0.0, 0)
        unit = F.normalize(embeddings, dim=1)
        d_ap = (unit[a] - unit[p]).pow(2).sum(dim=1)
        d_an = (unit[a] - unit[n]).pow(2).sum(dim=1)
        losses = F.relu(d_ap - d_an + self.margin)
        active = int((losses > 0).sum())
        return TripletLossOutput(losses.mean(), active / len(a), len(a))


class ThresholdLoss(torch.nn.Module):
    """One threshold for everyone: over every (row, pool) pair, negatives with cosine above `threshold − margin/2`
    and positives below `threshold + margin/2`, each by how far it is on the wrong side; the mean over the pairs
    that are (zero, still attached to the graph, when none is). A row is never paired with itself.

    `rows`/`labels`: the batch (differentiable); `pool`/`pool_labels`: the rows to pair with (the batch itself,
    a memory of past batches, an older model's embeddings of the same faces; detached or not).
    """

    def __init__(self, threshold: float, margin: float):
        super().__init__()
        if not (-1.0 < threshold < 1.0 and 0.0 <= margin < 1.0):
            raise ConfigError(f"threshold must be in (-1, 1) and margin in [0, 1), got {threshold!r}, {margin!r}")
        self.low, self.high = threshold - margin / 2, threshold + margin / 2

    def forward(self, rows: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, pool_labels: torch.Tensor,
                self_pairs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """`self_pairs`: a (len(rows), len(pool)) bool mask of pairs to skip (a row and its own copy in the pool)."""
        cos = F.normalize(rows, dim=1) @ F.normalize(pool, dim=1).T
        same = labels[:, None] == pool_labels[None, :]
        keep = torch.ones_like(same) if self_pairs is None else ~self_pairs
        negative = F.relu(cos - self.low) * (~same & keep)
        positive = F.relu(self.high - cos) * (same & keep)
        wrong = (negative > 0) | (positive > 0)
        loss = (negative + positive).sum() / wrong.sum().clamp(min=1)
        return loss, {"open_set/negatives_over": float((negative > 0).sum()),
                      "open_set/positives_under": float((positive > 0).sum())}


def teacher_mean(teacher_embeddings: torch.Tensor) -> torch.Tensor:
    """The training-set mean of a teacher's cached embeddings, the centre `DistillationLoss` needs."""
    if teacher_embeddings.ndim != 2 or len(teacher_embeddings) == 0:
        raise ValueError(f"teacher embeddings must have shape (N>0, D), got {tuple(teacher_embeddings.shape)}")
    return teacher_embeddings.double().mean(dim=0).to(teacher_embeddings.dtype)


class DistillationLoss(torch.nn.Module):
    """Pull a student's embeddings toward a teacher's, without inheriting the teacher's common direction.

    dlib's 128-d vectors share a large common component (mean cosine 0.83 between strangers), so
    raw teacher vectors as cosine targets mostly teach that one direction (see DESIGN.md). Hence:

    - "centred_cosine": 1 − cos(student, normalise(teacher − teacher_mean)), averaged over the batch.
      Needs `teacher_mean` (from `teacher_mean()` over the training set) and equal dimensions.
    - "cosine": 1 − cos(student, teacher) on the raw teacher vectors. Only for a student initialised from the
      teacher itself: there it anchors the fine-tuned network to the geometry it starts from (measured on
      held-out LFW folds, re-centring dlib's vectors costs 0.5 points of accuracy and 12 of TAR@FAR=1e-3).
    - "relational": MSE between the student's and the teacher's in-batch cosine-similarity matrices,
      off the diagonal. The teacher is centred on `teacher_mean` when given, else on the batch's own
      mean, so strangers' target similarity is near 0 rather than 0.83. Dimensions may differ.
    """

    def __init__(self, mode: DistillationMode, teacher_mean: torch.Tensor | None = None):
        super().__init__()
        if mode not in ("centred_cosine", "cosine", "relational"):
            raise ConfigError(f"distillation mode must be 'centred_cosine', 'cosine' or 'relational', got {mode!r}")
        if mode == "centred_cosine" and teacher_mean is None:
            raise ConfigError("distillation mode 'centred_cosine' needs the teacher's training-set mean")
        self.mode = mode
        self.register_buffer("teacher_mean", None if teacher_mean is None else teacher_mean.detach().clone())

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
            raise ValueError(
                f"student and teacher must be (B, D) batches of equal B, got {tuple(student.shape)} "
                f"and {tuple(teacher.shape)}"
            )
        teacher = teacher.detach().to(student.dtype)
        target = F.normalize(teacher, dim=1) if self.mode == "cosine" else self._centred_teacher(teacher)
        student = F.normalize(student, dim=1)
        if self.mode in ("centred_cosine", "cosine"):
            if student.shape[1] != target.shape[1]:
                raise ValueError(f"centred_cosine needs equal dimensions, got {student.shape[1]} and {target.shape[1]}")
            return (1.0 - (student * target).sum(dim=1)).mean()
        return _relational_mse(student, target)

    def _centred_teacher(self, teacher: torch.Tensor) -> torch.Tensor:
        centre = teacher.mean(dim=0) if self.teacher_mean is None else self.teacher_mean.to(teacher)
        return F.normalize(teacher - centre, dim=1)


def _relational_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two (B, B) cosine matrices over the B·(B−1) off-diagonal entries."""
    size = len(student)
    if size < 2:
        return student.sum() * 0.0
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=student.device)
    diff = (student @ student.T - teacher @ teacher.T)[off_diagonal]
    return diff.pow(2).mean()
