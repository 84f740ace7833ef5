"""P identities × K images per batch, the batch shape online triplet mining needs.

An epoch is one random permutation of the eligible identities cut into groups of P, so each identity
appears at most once per epoch; the last incomplete group is dropped. Under DDP every rank computes
the same permutation and takes every `world_size`-th group, so ranks never share an identity within
an epoch and all ranks get the same number of batches. A batch's content depends only on
(seed, epoch, global batch number), never on the number of ranks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)


class PKSampler:
    """Batch sampler (`DataLoader(batch_sampler=...)`) yielding lists of P·K dataset indices.

    labels: identity label of every dataset item. Identities with fewer than `min_images` images are
    excluded (a singleton gives no anchor–positive pair); those with at least `min_images` but fewer
    than K contribute every image they have, padded to K by drawing with replacement.
    Call `set_epoch(epoch)` before each epoch, as with `DistributedSampler`, to get a new order.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int,
        k: int,
        seed: int = 0,
        min_images: int = 2,
        rank: int = 0,
        world_size: int = 1,
    ):
        _check_settings(p, k, min_images, rank, world_size)
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.identities = _group_by_label(np.asarray(labels), min_images)
        excluded = len(np.unique(np.asarray(labels))) - len(self.identities)
        if len(self.identities) < p * world_size:
            raise ConfigError(
                f"PKSampler needs at least P × world_size = {p * world_size} identities with >= {min_images} "
                f"images, found {len(self.identities)}"
            )
        log.info(
            "PKSampler: %d identities eligible, %d excluded (< %d images); %d batches of %d×%d per rank",
            len(self.identities), excluded, min_images, len(self), p, k,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.identities) // self.p) // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.identities))
        for step in range(len(self)):
            group = step * self.world_size + self.rank  # global batch number
            chosen = order[group * self.p : (group + 1) * self.p]
            rng = np.random.default_rng([self.seed, self.epoch, group])
            yield [int(i) for identity in chosen for i in self._images(self.identities[identity], rng)]

    def _images(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shuffled = rng.permutation(images)
        if len(images) >= self.k:
            return shuffled[: self.k]
        return np.concatenate([shuffled, rng.choice(images, self.k - len(images), replace=True)])


def _check_settings(p: int, k: int, min_images: int, rank: int, world_size: int) -> None:
    if p < 2:
        raise ConfigError(f"PKSampler needs P >= 2 identities per batch (negatives), got {p}")
    if k < 2:
        raise ConfigError(f"PKSampler needs K >= 2 images per identity (positives), got {k}")
    if min_images < 1:
        raise ConfigError(f"PKSampler min_images must be >= 1, got {min_images}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"PKSampler needs 0 <= rank < world_size, got rank {rank}, world_size {world_size}")


def _group_by_label(labels: np.ndarray, min_images: int) -> list[np.ndarray]:
    """Dataset indices per identity (in label order), keeping identities with >= min_images items."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    groups = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    return [g for g in groups if len(g) >= min_images]
