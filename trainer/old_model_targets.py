"""An older model's embeddings of every cached crop, for harmonic training (`compat` in the config).

The older model is a shipped ONNX with its card, run by ONNX Runtime as the pipeline's embedder runs it (the
card's normalisation and test-time views), so "compatible" means compatible with the templates galleries really
hold. Cached next to the crops, keyed by the model's fingerprint and views. (The trainer may not import
pipeline.recognise, hence the few lines of the embedder's preprocessing here.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engines import create_engine
from pipeline.core.errors import ConfigError
from pipeline.core.model_card import ModelCard, load_card, onnx_path
from pipeline.core.views import views
from trainer.crops import CropCache

log = logging.getLogger(__name__)


def old_model_targets(cache: CropCache, card_path: str | Path, batch_size: int = 64) -> tuple[torch.Tensor, ModelCard]:
    """((N, D) unit embeddings of every crop by the model of `card_path`, rows = crop indices; its card)."""
    card = load_card(card_path)
    if tuple(card.input_size) != tuple(cache.size):
        raise ConfigError(f"compat model {card.model_id} takes {tuple(card.input_size)} crops, "
                          f"cache {cache.folder} holds {cache.size}")
    shifts = "".join(f"_{dx}x{dy}" for dx, dy in card.test_time_shifts)
    path = cache.folder / f"old_model_{card.fingerprint}{'-flip' if card.flip_average else ''}{shifts}.npy"
    if path.is_file():
        targets = np.load(path)
        if targets.shape == (len(cache), card.embedding_dim):
            return torch.from_numpy(targets), card
        log.warning("%s has shape %s for %d crops; recomputing", path, targets.shape, len(cache))
    mean, std = np.asarray(card.mean, np.float32), np.asarray(card.std, np.float32)
    out = np.empty((len(cache), card.embedding_dim), np.float32)
    with create_engine("onnxruntime", model_path=onnx_path(card, card_path)) as engine:
        name_in, name_out = engine.inputs[0].name, engine.outputs[0].name
        run = lambda batch: engine.run({name_in: np.ascontiguousarray(batch.transpose(0, 3, 1, 2))})[name_out]
        for start in tqdm(range(0, len(cache), batch_size), desc=f"old model {card.model_id}", unit="batch"):
            batch = cache.crops[start:start + batch_size]
            out[start:start + len(batch)] = sum(run((view.astype(np.float32) - mean) / std)
                                                for view in views(batch, card.test_time_shifts, card.flip_average))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    tmp = path.with_name(path.stem + ".partial.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return torch.from_numpy(out), card
