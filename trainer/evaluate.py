"""`trainer eval`: the LFW verification protocol for any embedder given as a function.

Every image named in the pairs file is read once, detected and aligned exactly as `trainer prepare` does
(same face-choice rule), embedded in batches by `embed_fn`, and each pair is scored by cosine similarity.
Images where the detector finds no face still need an embedding (the protocol scores every pair), so they
get a centred crop and are counted as `no_detection`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.images import read_image
from pipeline.core.protocols import Detector
from trainer.embedding_cache import embedded_batches
from trainer.metrics import (
    NAMED_FARS,
    far_key,
    far_resolution,
    make_folds,
    roc_curve,
    threshold_at_far,
    verification_report,
)
from trainer.pairs import Pair, fold_count, read_pairs
from trainer.prepare import FaceCropper

log = logging.getLogger(__name__)

EmbedFn = Callable[[np.ndarray], np.ndarray]

# LFW images are 250x250 with the face box about 94x124 px in the middle: a 150 px centre square (0.6)
# frames it about as an aligned crop would, where the whole image (1.0) would shrink the face by 40%.
LFW_FALLBACK_FRACTION = 0.6


def evaluate(pairs_file: str | Path, images_dir: str | Path, embed_fn: EmbedFn, detector: Detector,
             size: tuple[int, int] = (160, 160), template: np.ndarray | None = None, folds=None, *,
             far: float = 1e-3, n_folds: int = 10, batch_size: int = 64, detect_batch_size: int = 16,
             fallback_fraction: float = LFW_FALLBACK_FRACTION, roc: bool = False, progress: bool = True) -> dict:
    """Verification metrics of `embed_fn` on the pairs of `pairs_file` (only `folds`, 1-based, if given).

    `embed_fn(crops)` takes (N, h, w, 3) uint8 RGB crops and returns (N, D) float embeddings (rows are
    normalised here, so cosine similarity is the score). `detector` finds the faces (e.g. MTCNN(); the trainer does not import
    pipeline.detect itself). Accuracy
    is k-fold over the file's folds, or over `n_folds` stratified folds when only one fold is left (View 1).
    `roc=True` adds the ROC curve (`roc`: far, tar, thresholds) and the raw `scores`/`labels` for plotting.
    An image that cannot be read raises SourceError: every pair must be scored, so none is skipped.
    """
    started = time.perf_counter()
    pairs = read_pairs(pairs_file, images_dir, folds)
    cropper = FaceCropper(detector, size, template, fallback="centre", fallback_fraction=fallback_fraction)
    images = list(dict.fromkeys(path for pair in pairs for path in (pair.first, pair.second)))
    embeddings, no_detection = _embed_images(images, cropper, embed_fn, batch_size, detect_batch_size, progress)
    index = {path: i for i, path in enumerate(images)}
    first = embeddings[[index[p.first] for p in pairs]]
    second = embeddings[[index[p.second] for p in pairs]]
    scores = np.sum(first * second, axis=1, dtype=np.float64)
    labels = np.array([p.same for p in pairs], dtype=bool)
    fold_ids = _fold_ids(pairs, labels, n_folds)
    result = verification_report(scores, labels, fold_ids, far=far)
    result["open_set"] = open_set_thresholds(embeddings, [path.parent.name for path in images])
    result.update({
        "pairs": len(pairs), "folds": int(np.unique(fold_ids).size),
        "pair_folds": sorted({p.fold for p in pairs}), "images": len(images), "no_detection": no_detection,
        "embedding_dim": int(embeddings.shape[1]), "seconds": round(time.perf_counter() - started, 2),
    })
    if roc:
        curve = roc_curve(scores, labels)
        result["roc"] = {"far": curve.far.tolist(), "tar": curve.tar.tolist(),
                         "thresholds": [float(t) if np.isfinite(t) else None for t in curve.thresholds]}
        result["scores"], result["labels"] = scores.tolist(), labels.tolist()
    log.info("LFW eval on %s: accuracy %.4f +- %.4f over %d pairs, %d images (%d without a detection)",
             pairs_file, result["accuracy"], result["accuracy_std"], len(pairs), len(images), no_detection)
    return result


def open_set_thresholds(embeddings: np.ndarray, identities: list[str],
                        fars: tuple[float, ...] = NAMED_FARS) -> dict:
    """Similarity thresholds at named FARs from EVERY cross-identity pair of the evaluated images.

    The pairs file holds only a few thousand impostor pairs (FAR resolution ~5e-4); a gallery compares each
    face with every enrolled person, so its operating points come from all n(n-1)/2 cross-identity pairs
    of the same images (about 1.2M for two LFW folds), which resolves FAR 1e-4.
    """
    labels = np.unique(np.asarray(identities), return_inverse=True)[1]
    sims = embeddings @ embeddings.T
    upper = np.triu(np.ones(sims.shape, dtype=bool), k=1)
    impostors = sims[upper & (labels[:, None] != labels[None, :])]
    genuine = sims[upper & (labels[:, None] == labels[None, :])]
    out = {"impostor_pairs": int(impostors.size), "genuine_pairs": int(genuine.size),
           "far_resolution": far_resolution(impostors.size), "thresholds_at_far": {}, "tar_at_far": {}}
    for far in fars:
        threshold = threshold_at_far(impostors, far)
        out["thresholds_at_far"][far_key(far)] = threshold
        out["tar_at_far"][far_key(far)] = float(np.mean(genuine >= threshold)) if genuine.size else None
    return out


def _fold_ids(pairs: list[Pair], labels: np.ndarray, n_folds: int) -> np.ndarray:
    if fold_count(pairs) >= 2:
        return np.array([p.fold for p in pairs])
    return make_folds(labels, min(n_folds, labels.size))


def _embed_images(images: list[Path], cropper: FaceCropper, embed_fn: EmbedFn, batch_size: int,
                  detect_batch_size: int, progress: bool) -> tuple[np.ndarray, int]:
    """Unit embeddings (len(images), D) in image order, and how many images fell back to a centre crop."""
    chunks, no_detection = [], 0
    for _, vectors, statuses in embedded_batches(images, read_image, cropper, embed_fn, batch_size,
                                                 detect_batch_size, progress, desc="eval"):
        chunks.append(vectors)
        no_detection += sum(status != "detected" for status in statuses)
    return np.concatenate(chunks), no_detection
