"""P x K training batches from the crop cache: sample, augment, normalise, to a float tensor.

A batch depends only on (seed, rank, step), so a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.core.errors import ConfigError
from trainer.augment import Augment, AugmentConfig
from trainer.config import TrainConfig
from trainer.crops import CropCache
from trainer.models.registry import Preprocess
from trainer.sampler import PKSampler


class BatchLoader:
    def __init__(self, cache: CropCache, indices: np.ndarray, preprocess: Preprocess, cfg: TrainConfig,
                 rank: int = 0, world_size: int = 1):
        if tuple(cache.size) != tuple(preprocess.input_size):
            raise ConfigError(f"crop cache {cache.folder} holds {cache.size} crops but model {cfg.model.name} "
                              f"expects {preprocess.input_size}; re-run prepare with --size "
                              f"{preprocess.input_size[0]}")
        self.cache, self.indices = cache, np.asarray(indices)
        self.sampler = PKSampler(cache.labels[self.indices], p=cfg.batch.identities, k=cfg.batch.images_per_identity,
                                 seed=cfg.seed, min_images=cfg.data.min_images, rank=rank, world_size=world_size)
        if len(self.sampler) == 0:
            raise ConfigError(f"too few identities for P={cfg.batch.identities} x {world_size} rank(s)")
        self.augment_config = AugmentConfig(**cfg.augment.model_dump())
        self.seed, self.rank = cfg.seed, rank
        self.mean = np.asarray(preprocess.mean, np.float32)
        self.std = np.asarray(preprocess.std, np.float32)
        self.batch_size = cfg.batch.identities * cfg.batch.images_per_identity
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._batches = epoch, list(self.sampler)
        return self._batches

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(images N x 3 x H x W float32, labels N int64, crop rows N) for global step `step`."""
        epoch, position = divmod(step, len(self.sampler))
        rows = self.indices[self._epoch_batches(epoch)[position]]
        augment = Augment(self.augment_config, seed=np.random.default_rng([self.seed, self.rank, step]))
        crops = np.stack([augment(self.cache.crops[row]) for row in rows])
        images = (crops.astype(np.float32) - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(self.cache.labels[rows].astype(np.int64))
        return tensor, labels, rows
