"""Detection figures against peers: recall on dlib's labelled boxes, and detector time per 640x360 frame.

Recall uses `bench.detect`'s data and matching (greedy by score, IoU >= 0.4, ignored boxes excluded) for our
MTCNN, face_recognition's HOG detector (`face_locations`, one upsample: its default) and facenet-pytorch's
MTCNN. HOG returns no scores, so its boxes are matched in the order it returns them. dlib's labelled boxes are
the box style its HOG detector was trained to output; MTCNN boxes are taller, which IoU >= 0.4 allows for.

Speed: our MTCNN (ONNX Runtime) against facenet-pytorch's MTCNN (torch) on the same Hamilton frames, both
with min face 20 px, thresholds (0.6, 0.7, 0.7), pyramid factor 0.709 (both defaults) and one thread (ORT
intra-op threads = torch intra-op threads = 1, torch inter-op 1). Both load the same P/R/O-Net weights
(ours reads facenet-pytorch's weight files), so this compares implementations, not models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from bench.detect import CLIP, dlib_recall, read_frames, time_per_frame
from bench.detection_metrics import MatchCounts, match, read_imglab
from bench.peers.venvs import PeerError, face_recognition_python, facenet_python, run_worker

MIN_FACE_SIZE = 20
MIN_IOU = 0.4


def labelled_images(data: Path):
    folder = data / "dlib_face_detection_examples"
    return read_imglab(folder / "training.xml") + read_imglab(folder / "testing.xml")


def counts_of(images, boxes: list[list], scores: list[list] | None = None) -> MatchCounts:
    """Recall counts of per-image xyxy boxes (scores: higher first; None keeps the detector's order)."""
    counts = MatchCounts()
    for i, labelled in enumerate(images):
        xyxy = np.asarray(boxes[i], np.float64).reshape(-1, 4)
        score = np.asarray(scores[i], np.float64) if scores else -np.arange(len(xyxy), dtype=np.float64)
        counts.add(labelled.path.name, *match(xyxy, score, labelled, min_iou=MIN_IOU))
    return counts


def recall_row(counts: MatchCounts) -> dict:
    return {"recall": round(counts.recall, 4), "matched": counts.matched, "faces": counts.faces,
            "false_positives": counts.false_positives}


def facestream_recall(data: Path, threads: int) -> dict:
    from pipeline.detect import MTCNN

    return recall_row(dlib_recall(MTCNN(min_face_size=MIN_FACE_SIZE, threads=threads), data))


def face_recognition_recall(data: Path) -> dict:
    images = labelled_images(data)
    job = {"job": "detect", "images": [str(image.path) for image in images]}
    found = run_worker(face_recognition_python(), "face_recognition_worker", job, "HOG on dlib boxes")
    return {**recall_row(counts_of(images, found["boxes"])), "detector": "HOG, 1 upsample (face_locations default)"}


def facenet_recall(data: Path, threads: int) -> dict:
    images = labelled_images(data)
    job = {"job": "detect", "images": [str(image.path) for image in images], "threads": threads,
           "min_face_size": MIN_FACE_SIZE}
    found = run_worker(facenet_python(), "facenet_worker", job, "facenet MTCNN on dlib boxes")
    return recall_row(counts_of(images, found["boxes"], found["scores"]))


def clip_frames(data: Path, count: int) -> list[np.ndarray]:
    return read_frames(data / CLIP, count)


def facestream_speed(frames: list[np.ndarray], warmup: int, threads: int) -> dict:
    from pipeline.detect import MTCNN

    detector = MTCNN(min_face_size=MIN_FACE_SIZE, threads=threads)
    return {**time_per_frame(detector, frames, 1, warmup, "facestream MTCNN"), "engine": detector.engine,
            "ort_threads": threads}


def facenet_speed(frames: list[np.ndarray], warmup: int, threads: int) -> dict:
    """facenet-pytorch's MTCNN.detect per frame, on the same frames as RGB (its convention)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npy"
        np.save(path, np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]))
        job = {"job": "speed", "frames": str(path), "warmup": warmup, "threads": threads,
               "min_face_size": MIN_FACE_SIZE}
        return run_worker(facenet_python(), "facenet_worker", job, "facenet-pytorch MTCNN")


def facenet_figures(data: Path, frames: list[np.ndarray], warmup: int, threads: int) -> dict:
    """facenet-pytorch's speed and recall, or the reason it could not run."""
    try:
        return {"speed": facenet_speed(frames, warmup, threads), "recall": facenet_recall(data, threads)}
    except PeerError as exc:
        return {"skipped": str(exc)}
