"""Distillation targets: the teacher's embedding of every cached crop, computed once and cached.

The teacher is dlib's 128-d ResNet run through its PyTorch port (weights read from dlib's own model file,
parity with dlib checked in tests), so no dlib install is needed to train. Embeddings are cached next to
the crops, keyed by the teacher's name.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.errors import ConfigError
from trainer.config import TrainConfig
from trainer.crops import CropCache
from trainer.models import create_model, model_preprocess

log = logging.getLogger(__name__)


def teacher_targets(cache: CropCache, cfg: TrainConfig, batch_size: int = 64) -> torch.Tensor:
    """(N, 128) unit-length teacher embeddings for every crop in the cache (rows match crop indices)."""
    name = cfg.distill.teacher
    path = cache.folder / f"teacher_{name}.npy"
    if path.is_file():
        targets = np.load(path)
        if targets.shape[0] == len(cache):
            return torch.from_numpy(targets)
        log.warning("%s has %d rows for %d crops; recomputing", path, targets.shape[0], len(cache))
    preprocess = model_preprocess(name)
    if tuple(cache.size) != tuple(preprocess.input_size):
        raise ConfigError(f"teacher {name} needs {preprocess.input_size} crops, cache {cache.folder} has {cache.size}")
    teacher = create_model(name, weights="dlib").eval()
    mean, std = np.asarray(preprocess.mean, np.float32), np.asarray(preprocess.std, np.float32)
    out = np.empty((len(cache), 128), np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(cache), batch_size), desc=f"teacher {name}", unit="batch"):
            crops = (cache.crops[start:start + batch_size].astype(np.float32) - mean) / std
            batch = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
            out[start:start + batch_size] = teacher(batch).numpy()
    tmp = path.with_name(path.stem + ".partial.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return torch.from_numpy(out)
