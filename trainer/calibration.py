"""`trainer calibrate`: open-set thresholds down to FAR 1e-6 from every cross-identity pair of unseen people.

A gallery of N people compares each face with all of them, so the per-comparison FAR it needs shrinks with
N (pipeline/gallery/threshold.py). `trainer eval` resolves FAR 1e-4 from the 1.2M cross-identity pairs of
two LFW folds; this module takes every image of a larger set of people the model never saw (millions of
pairs) and reads exact order statistics of the impostor scores, block by block: only the highest
`max_far x pairs` scores are ever held.

Who is unseen, and who calibrates (`unseen_people`): the model was trained on LFW people with 2+ images
outside the held-out folds of the pairs file, so the unseen people are everyone in those folds plus
everyone with exactly one image. The one-image people are split in two halves by a hash of the name
(`half_of`): the "benchmark" half is kept out of calibration, for `bench.openset` to use as strangers;
calibration takes the held-out fold people with 2+ images and the "calibration" half.

A card with a score cohort (`trainer cohort`, pipeline/gallery/cohort.py) is built from the "calibration" half
of the one-image people, so the curve of its normalised score is calibrated without them
(`UnseenPeople.cohort_free`): on the held-out fold people, plus the "benchmark" half only when asked
(`--include-bench-strangers`, for a model trained on every fold person).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import SourceError
from pipeline.core.images import IMAGE_SUFFIXES
from trainer.metrics import far_key
from trainer.pairs import read_pairs

log = logging.getLogger(__name__)

CALIBRATION_RULE = ("every image of the people of the held-out folds with 2+ images, plus the one-image people "
                    "whose sha256(name) starts with an even byte (the others are kept out: bench.openset's "
                    "strangers)")


def far_grid(loosest: float = 1e-2, strictest: float = 1e-6) -> tuple[float, ...]:
    """1, 5, 2 steps per decade from `loosest` down to `strictest` (1e-2, 5e-3, 2e-3, 1e-3, ..., 1e-6)."""
    if not 0 < strictest <= loosest < 1:
        raise ValueError(f"need 0 < strictest <= loosest < 1, got {strictest} and {loosest}")
    fars = [float(f"{m}e{e}") for e in range(-15, 1) for m in (1, 2, 5)]
    fars = [f for f in fars if strictest * (1 - 1e-9) <= f <= loosest * (1 + 1e-9)]
    return tuple(sorted(set(fars), reverse=True))


def half_of(name: str) -> str:
    """"calibration" or "benchmark": a fixed split of the one-image people by the parity of sha256(name)[0]."""
    return "calibration" if hashlib.sha256(name.encode("utf-8")).digest()[0] % 2 == 0 else "benchmark"


@dataclass(frozen=True)
class UnseenPeople:
    """The people the model never saw, by role. Each maps a name to its sorted image paths."""

    fold_people: dict[str, list[Path]]  # in the held-out folds, 2+ images: calibration, and bench enrolment
    calibration_singles: dict[str, list[Path]]  # one image, "calibration" half
    benchmark_singles: dict[str, list[Path]]  # one image, "benchmark" half: bench.openset's strangers

    def calibration(self) -> dict[str, list[Path]]:
        return {**self.fold_people, **self.calibration_singles}

    def cohort(self) -> dict[str, list[Path]]:
        """The faces of a model's score cohort (`trainer cohort`): the "calibration" half of the one-image people."""
        return self.calibration_singles

    def cohort_free(self, include_bench_strangers: bool = False) -> dict[str, list[Path]]:
        """Who calibrates a cohort-normalised score: never the cohort's own faces."""
        return {**self.fold_people, **(self.benchmark_singles if include_bench_strangers else {})}


def person_images(images: str | Path) -> dict[str, list[Path]]:
    """Name -> its image files (sorted), for a folder-per-person tree."""
    root = Path(images)
    if not root.is_dir():
        raise SourceError(f"image folder not found: {root}")
    people = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
              for d in sorted(root.iterdir()) if d.is_dir()}
    return {name: paths for name, paths in people.items() if paths}


def unseen_people(images: str | Path, pairs_file: str | Path, holdout_folds: Iterable[int]) -> UnseenPeople:
    """Split the unseen people of `images` into the roles above (see the module notes). No `holdout_folds` (a
    model trained on every identity with 2+ images): only the one-image people are unseen."""
    people = person_images(images)
    folds = list(holdout_folds)
    pairs = read_pairs(pairs_file, images, folds) if folds else []
    in_folds = {path.parent.name for pair in pairs for path in (pair.first, pair.second)}
    missing = sorted(in_folds - people.keys())
    if missing:
        raise SourceError(f"{pairs_file}: {len(missing)} people of the held-out folds have no images under "
                          f"{images}, e.g. {missing[0]}")
    singles = {name: paths for name, paths in people.items() if len(paths) == 1}
    return UnseenPeople(
        fold_people={name: people[name] for name in sorted(in_folds) if len(people[name]) >= 2},
        calibration_singles={n: p for n, p in singles.items() if half_of(n) == "calibration"},
        benchmark_singles={n: p for n, p in singles.items() if half_of(n) == "benchmark"},
    )


@dataclass(frozen=True)
class ImpostorTail:
    """The highest impostor scores (descending) of `pairs` cross-identity pairs, and every genuine score."""

    top: np.ndarray
    pairs: int
    genuine: np.ndarray

    def threshold_at(self, far: float) -> float:
        """As `trainer.metrics.threshold_at_far` over all `pairs` impostor scores: at most floor(far x pairs)
        of them reach the threshold."""
        if not 0.0 <= far < 1.0:
            raise ValueError(f"far must be in [0, 1), got {far}")
        allowed = int(np.floor(far * self.pairs + 1e-9))
        if allowed >= self.top.size:
            raise ValueError(f"FAR {far} needs the top {allowed + 1} impostor scores; only {self.top.size} were kept")
        return float(np.nextafter(self.top[allowed], np.inf))


def cross_identity_pairs(labels: np.ndarray) -> int:
    counts = np.unique(labels, return_counts=True)[1].astype(np.int64)
    n = int(counts.sum())
    return n * (n - 1) // 2 - int(np.sum(counts * (counts - 1) // 2))


def impostor_tail(embeddings: np.ndarray, labels: Sequence, max_far: float = 1e-2,
                  block: int = 512, gallery: np.ndarray | None = None,
                  query_offsets: np.ndarray | None = None) -> ImpostorTail:
    """Top impostor scores (cosine of unit rows, float64) of all i < j pairs with different labels.

    `gallery`: another model's embeddings of the same images (an older model this one is harmonic with); then
    every ordered pair (gallery row i, row j), i != j, is scored, as that model's template meets this one's face.
    `query_offsets`: (N,) subtracted from every score of face j (the matcher's cohort offsets); the score is
    then asymmetric, so every ordered pair (template i, face j), i != j, is scored.
    Rows are scored `block` at a time; a running buffer keeps the highest floor(max_far x pairs) + 1 impostor
    scores (np.partition), so memory is O(block x n + kept).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    ids = np.unique(np.asarray(labels), return_inverse=True)[1]
    if x.ndim != 2 or x.shape[0] != ids.size or x.shape[0] < 2:
        raise ValueError(f"need (N>=2, D) embeddings and N labels, got {x.shape} and {ids.size}")
    g = None if gallery is None else np.asarray(gallery, dtype=np.float64)
    if g is not None and g.shape != x.shape:
        raise ValueError(f"gallery embeddings must match the embeddings' shape {x.shape}, got {g.shape}")
    offsets = None if query_offsets is None else np.asarray(query_offsets, dtype=np.float64)
    if offsets is not None and offsets.shape != (x.shape[0],):
        raise ValueError(f"query offsets must have shape ({x.shape[0]},), got {offsets.shape}")
    ordered = g is not None or offsets is not None
    g = x if g is None else g
    pairs = cross_identity_pairs(ids) * (2 if ordered else 1)
    if pairs == 0:
        raise ValueError("need at least two identities")
    keep = min(pairs, int(np.floor(max_far * pairs + 1e-9)) + 1)
    kept, genuine = np.empty(0), []
    floor = -np.inf  # the lowest kept score once the buffer is full: lower scores can never enter
    for start in range(0, x.shape[0] - (0 if ordered else 1), block):
        stop = min(start + block, x.shape[0])
        first = 0 if ordered else start + 1
        sims = g[start:stop] @ x[first:].T  # column c is row first + c
        if offsets is not None:
            sims -= offsets[None, first:]
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(first, x.shape[0])[None, :]
        after = cols != rows if ordered else cols > rows
        same = ids[start:stop, None] == ids[None, first:]
        genuine.append(sims[after & same])
        scores = sims[after & ~same & (sims >= floor)]
        kept = np.concatenate([kept, scores])
        if kept.size > keep:
            kept = np.partition(kept, kept.size - keep)[-keep:]
            floor = kept.min()
    return ImpostorTail(np.sort(kept)[::-1], pairs, np.concatenate(genuine))


def thresholds_report(tail: ImpostorTail, fars: Sequence[float]) -> dict:
    """Thresholds and TAR (genuine pairs reaching the threshold) at each FAR, keyed by `far_key`."""
    thresholds = {far_key(f): tail.threshold_at(f) for f in fars}
    tar = {key: (float(np.mean(tail.genuine >= t)) if tail.genuine.size else None) for key, t in thresholds.items()}
    return {"thresholds_at_far": thresholds, "tar_at_far": tar,
            "false_accepts_allowed": {far_key(f): int(np.floor(f * tail.pairs + 1e-9)) for f in fars}}


def calibrate(people: dict[str, Sequence[Path]], embed, fars: Sequence[float] = far_grid(),
              block: int = 512, gallery_embed=None, cohort=None) -> dict:
    """Thresholds at `fars` from every cross-identity pair of the images of `people` (name -> paths).

    `embed(paths) -> Embedded` gives unit embeddings in path order (an `EmbeddingCache`, so repeated runs
    and `bench.openset` embed each image once). `gallery_embed`: the same for an older model this one is
    harmonic with; the pairs are then its embeddings against this model's (`impostor_tail`'s `gallery`).
    `cohort` (pipeline.gallery.cohort.Cohort): thresholds of the matcher's normalised score, each face's
    cohort offset subtracted (its people must not be among `people`).
    """
    paths = [path for name in sorted(people) for path in people[name]]
    labels = np.asarray([name for name in sorted(people) for _ in people[name]])
    if len(people) < 2:
        raise SourceError(f"calibration needs at least two people, got {len(people)}")
    embedded = embed(paths)
    gallery = None if gallery_embed is None else gallery_embed(paths).embeddings
    offsets = None if cohort is None else cohort.offsets(embedded.embeddings)
    tail = impostor_tail(embedded.embeddings, labels, max_far=max(fars), block=block, gallery=gallery,
                         query_offsets=offsets)
    report = thresholds_report(tail, fars)
    log.info("calibrated on %d images of %d people: %d cross-identity pairs, FAR %s -> %.4f", len(paths),
             len(people), tail.pairs, far_key(min(fars)), report["thresholds_at_far"][far_key(min(fars))])
    return {"images": len(paths), "identities": len(people), "no_detection": embedded.no_detection,
            "impostor_pairs": tail.pairs, "genuine_pairs": int(tail.genuine.size),
            "far_resolution": 1.0 / tail.pairs, **report}
