"""LFW-protocol accuracy and embedding throughput, facestream vs face_recognition, on the held-out folds.

Our shipped model was fine-tuned on LFW except the people of the folds its card lists as `holdout_folds`;
both systems are scored on those folds only. facestream runs exactly what produced the card's figure
(`trainer.evaluate.evaluate`: our MTCNN, the centred face, alignment to the card's template, cosine,
threshold cross-validated over the folds). face_recognition runs its own pipeline on the same raw images
(HOG detector, 5-point shape predictor, dlib's ResNet) and is scored by its own metric, -L2 distance, with
the same cross-validated threshold and also at its documented tolerance 0.6.

Embedding throughput is taken on the same faces: for facestream, `Embedder.embed` calls inside the
evaluation (aligned crops, batches of up to 32; alignment, a warpAffine, timed apart on a sample), for
face_recognition each `face_encodings(image, [location])` call (shape predictor + chip + network, one face
per call: that is how its API batches).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.peers.venvs import face_recognition_python, run_worker
from trainer.evaluate import LFW_FALLBACK_FRACTION, evaluate
from trainer.metrics import accuracy_at, verification_report
from trainer.pairs import Pair, read_pairs

TOLERANCE = 0.6  # face_recognition's default `compare_faces` tolerance (L2 distance)
REPORT_KEYS = ("accuracy", "accuracy_std", "fold_accuracies", "auc", "eer", "val_at_far", "far")


class Stopwatch:
    """Wraps a function; sums its wall and CPU seconds and the items of its first argument."""

    def __init__(self, fn):
        self.fn, self.wall, self.cpu, self.items = fn, 0.0, 0.0, 0

    def __call__(self, batch, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = self.fn(batch, *args, **kwargs)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.items += len(batch)
        return out


def holdout_folds(card_path: Path) -> list[int]:
    card = json.loads(Path(card_path).read_text())
    return list(card["training"]["data"]["holdout_folds"])


def pairs_subset(pairs_file: Path, images: Path, folds: list[int], per_fold: int | None) -> list[Pair]:
    """The pairs of `folds`; with `per_fold`, only the first `per_fold` matched and mismatched of each."""
    pairs = read_pairs(pairs_file, images, folds)
    if per_fold is None:
        return pairs
    kept = []
    for fold in folds:
        for same in (True, False):
            kept += [p for p in pairs if p.fold == fold and p.same == same][:per_fold]
    return kept


def write_pairs_file(pairs: list[Pair], path: Path) -> Path:
    """`pairs` as a View-2 file (folds renumbered 1..k in order), for `evaluate`, which reads a file."""
    folds = sorted({p.fold for p in pairs})
    per = len(pairs) // (2 * len(folds))
    lines = [f"{len(folds)}\t{per}"]
    for pair in pairs:
        first, second = (_name_number(p) for p in (pair.first, pair.second))
        lines.append("\t".join(map(str, (*first, second[1]) if pair.same else (*first, *second))))
    path.write_text("\n".join(lines) + "\n")
    return path


def _name_number(path: Path) -> tuple[str, int]:
    return path.parent.name, int(path.stem.rsplit("_", 1)[1])


def facestream_lfw(pairs: list[Pair], pairs_file: Path, folds: list[int] | None, images: Path, model: Path,
                   threads: int) -> dict:
    """The card's evaluation plus embed timing: of `folds` of `pairs_file` (then `pairs` must be exactly those),
    or, with `folds=None`, of `pairs` through a temporary pairs file (a --quick subset)."""
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder

    embedder = Embedder(model, threads=threads)
    stopwatch = Stopwatch(embedder.embed)
    with tempfile.TemporaryDirectory() as tmp:
        if folds is None:  # a subset: evaluate reads pairs from a file
            pairs_file = write_pairs_file(pairs, Path(tmp) / "pairs.txt")
        result = evaluate(pairs_file, images, stopwatch, size=embedder.size, template=embedder.template,
                          folds=folds, detector=MTCNN(), progress=True)
    return {**{k: result[k] for k in REPORT_KEYS}, "pairs": result["pairs"], "images": result["images"],
            "no_detection": result["no_detection"], "threshold": result["threshold"],
            "embed": {"faces": stopwatch.items, "faces_per_s": round(stopwatch.items / stopwatch.wall, 1),
                      "cpu_ms_per_face": round(1000 * stopwatch.cpu / stopwatch.items, 2),
                      "ort_threads": threads, "batch": embedder.batch_size},
            "align_ms_per_face": alignment_ms(embedder, [p.first for p in pairs[:32]])}


def alignment_ms(embedder, paths: list[Path]) -> float:
    """Mean ms of `Embedder.crops` (similarity warp to the template) for the largest face of each image."""
    from pipeline.core.images import read_image
    from pipeline.detect import MTCNN

    detector = MTCNN()
    total, faces = 0.0, 0
    for path in paths:
        image = read_image(path)
        found = detector.detect_one(image)
        if len(found):
            began = time.perf_counter()
            embedder.crops(image, found[[int(found.area.argmax())]])
            total += time.perf_counter() - began
            faces += 1
    return round(1000 * total / max(faces, 1), 3)


def face_recognition_lfw(pairs: list[Pair]) -> dict:
    """face_recognition's own pipeline on the raw images of `pairs`, scored as above."""
    images = list(dict.fromkeys(path for pair in pairs for path in (pair.first, pair.second)))
    with tempfile.TemporaryDirectory() as tmp:
        out, whole = Path(tmp) / "embeddings.npy", Path(tmp) / "whole.npy"
        job = {"job": "lfw", "images": [str(p) for p in images], "fallback_fraction": LFW_FALLBACK_FRACTION,
               "out": str(out), "out_whole": str(whole)}
        worker = run_worker(face_recognition_python(), "face_recognition_worker", job, "face_recognition LFW")
        embeddings, whole_image = np.load(out), np.load(whole)
    report = peer_accuracy(pairs, images, embeddings)
    if worker["fallback"]:
        embeddings[worker["fallback_index"]] = whole_image
        report["accuracy_whole_image_fallback"] = peer_accuracy(pairs, images, embeddings)["accuracy"]
    encode, detect = worker["encode"], worker["detect"]
    report.update({
        "images": len(images), "no_detection": worker["fallback"], "several_faces": worker["several_faces"],
        "fallback": f"centred square of {LFW_FALLBACK_FRACTION} x the image side (as our evaluation) as a known "
                    "location; `accuracy_whole_image_fallback` uses the whole 250x250 image instead",
        "embed": {"faces": encode["calls"], "faces_per_s": round(encode["calls"] / encode["wall_s"], 1),
                  "cpu_ms_per_face": round(1000 * encode["cpu_s"] / encode["calls"], 2), "batch": 1},
        "hog_ms_per_image": round(1000 * detect["wall_s"] / detect["calls"], 2),
        "versions": worker["versions"]})
    return report


def peer_accuracy(pairs: list[Pair], images: list[Path], embeddings: np.ndarray) -> dict:
    index = {path: i for i, path in enumerate(images)}
    first = embeddings[[index[p.first] for p in pairs]]
    second = embeddings[[index[p.second] for p in pairs]]
    scores = -np.linalg.norm(first - second, axis=1)  # face_distance, as a similarity
    labels = np.array([p.same for p in pairs])
    result = verification_report(scores, labels, np.array([p.fold for p in pairs]))
    return {**{k: result[k] for k in REPORT_KEYS}, "pairs": len(pairs), "threshold_l2": -result["threshold"],
            f"accuracy_at_tolerance_{TOLERANCE}": accuracy_at(scores, labels, -TOLERANCE)}
