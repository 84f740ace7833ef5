"""Detector benchmark: recall on dlib's labelled faces and per-frame speed on the Hamilton clip at 640x360.

    python -m bench.detect --json     # one JSON object on stdout (progress bars on stderr)
    python -m bench.detect            # a readable summary

Speed is the mean/p50/p90 wall time of `MTCNN.detect` per frame after warm-up, and the process CPU time
per frame (steadier than wall time when other jobs share the machine), for the default detector (ONNX
Runtime, one thread), the torch engine, ORT on two threads, the "octave" and "fast" pyramids, batches of
4 frames (time per frame = batch time / 4), min face sizes 20, 30 and 40 px, and a largest face of
MAX_FACE_SIZE px (`max_face_size`: the pyramid levels for larger faces skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch
from tqdm import tqdm

from bench.detection_metrics import MatchCounts, match, read_imglab
from pipeline.core.errors import FacestreamError, SourceError
from pipeline.core.images import read_image
from pipeline.detect import MTCNN
from pipeline.detect.export import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
FRAME_SIZE = (640, 360)
MIN_FACE_SIZES = (20, 30, 40)
MIN_FACE_KEYS = ("ms_per_frame", "cpu_ms_per_frame", "faces_per_frame")
MAX_FACE_SIZE = 200  # most of the Hamilton clip's faces at 640x360 (~70-215 px wide) are under it


def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise SourceError(f"shared data folder not found at {SHARED_DATA} (it sits beside the checkout)")
    return SHARED_DATA


def dlib_recall(detector: MTCNN, data: Path) -> MatchCounts:
    folder = data / "dlib_face_detection_examples"
    counts = MatchCounts()
    images = read_imglab(folder / "training.xml") + read_imglab(folder / "testing.xml")
    for labelled in tqdm(images, desc="dlib boxes", file=sys.stderr, leave=False):
        faces = detector.detect_one(read_image(labelled.path))
        counts.add(labelled.path.name, *match(faces.xyxy, faces.score, labelled, min_iou=0.4))
    return counts


def read_frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open video {path}")
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if frame.shape[1::-1] != FRAME_SIZE:
            frame = cv2.resize(frame, FRAME_SIZE, interpolation=cv2.INTER_AREA)
        frames.append(frame)
    capture.release()
    if not frames:
        raise SourceError(f"no frames decoded from {path}")
    return frames


def time_per_frame(detector: MTCNN, frames: list[np.ndarray], batch: int, warmup: int, label: str) -> dict:
    """Per-frame milliseconds of detect() over `frames` in batches of `batch`, after `warmup` batches."""
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for chunk in batches[:warmup]:
        detector.detect(chunk)
    times, faces = [], 0
    cpu_start = time.process_time()
    for chunk in tqdm(batches, desc=label, file=sys.stderr, leave=False):
        start = time.perf_counter()
        faces += sum(len(f) for f in detector.detect(chunk))
        times.append((time.perf_counter() - start) * 1000 / len(chunk))
    cpu_ms = (time.process_time() - cpu_start) * 1000 / (len(batches) * batch)
    ms = np.asarray(times)
    return {
        "ms_per_frame": round(float(ms.mean()), 2),
        "cpu_ms_per_frame": round(cpu_ms, 2),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p90": round(float(np.percentile(ms, 90)), 2),
        "frames": len(batches) * batch,
        "faces_per_frame": round(faces / (len(batches) * batch), 2),
    }


def speeds(frames: list[np.ndarray], warmup: int, model_dir: Path, threads: int) -> dict[str, dict]:
    """Timings of each detector variant on the same frames, in one process so they share the same load."""
    ort = {"model_dir": model_dir, "threads": threads}
    default = MTCNN(**ort)
    found = {
        "default": time_per_frame(default, frames, 1, warmup, "onnxruntime"),
        "torch": time_per_frame(MTCNN(engine="torch"), frames, 1, warmup, "torch"),
        "ort_2threads": time_per_frame(MTCNN(model_dir=model_dir, threads=2), frames, 1, warmup, "ort 2 threads"),
        "octave": time_per_frame(MTCNN(pyramid="octave", **ort), frames, 1, warmup, "octave pyramid"),
        "fast": time_per_frame(MTCNN(pyramid="fast", **ort), frames, 1, warmup, "fast pyramid"),
        "batch4": time_per_frame(default, frames, 4, max(1, warmup // 4), "batch 4"),
        "max_face": time_per_frame(MTCNN(max_face_size=MAX_FACE_SIZE, **ort), frames, 1, warmup, "max face"),
    }
    for size in MIN_FACE_SIZES:
        detector = MTCNN(min_face_size=size, **ort)
        found[f"min_face_{size}"] = time_per_frame(detector, frames, 1, warmup, f"min face {size}")
    return found


def run(frames_count: int, warmup: int, model_dir: Path, threads: int) -> dict:
    data = shared_data()
    detector = MTCNN(model_dir=model_dir, threads=threads)
    counts = dlib_recall(detector, data)
    found = speeds(read_frames(data / CLIP, frames_count), warmup, model_dir, threads)
    default = found["default"]
    return {
        "recall": round(counts.recall, 4),
        "false_positives": counts.false_positives,
        "faces": counts.faces,
        "matched": counts.matched,
        "min_iou": 0.4,
        "frame_size": list(FRAME_SIZE),
        "min_face_size": detector.min_face_size,
        "engine": detector.engine,
        "ort_threads": threads,
        **{k: default[k] for k in ("ms_per_frame", "cpu_ms_per_frame", "p50", "p90", "frames", "faces_per_frame")},
        "torch_ms_per_frame": found["torch"]["ms_per_frame"],
        "torch_cpu_ms_per_frame": found["torch"]["cpu_ms_per_frame"],
        "onnxruntime_ms_per_frame": default["ms_per_frame"],
        "onnxruntime_p50": default["p50"],
        "onnxruntime_2threads_ms_per_frame": found["ort_2threads"]["ms_per_frame"],
        "octave_pyramid_ms_per_frame": found["octave"]["ms_per_frame"],
        "fast_pyramid_ms_per_frame": found["fast"]["ms_per_frame"],
        "batch4_ms_per_frame": found["batch4"]["ms_per_frame"],
        "max_face": {"max_face_size": MAX_FACE_SIZE, **{k: found["max_face"][k] for k in MIN_FACE_KEYS}},
        "min_face": {
            str(size): {k: found[f"min_face_{size}"][k] for k in MIN_FACE_KEYS}
            for size in MIN_FACE_SIZES
        },
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
    }


def summary(result: dict) -> str:
    sizes = ", ".join(f"{size} px {row['ms_per_frame']:.1f}" for size, row in result["min_face"].items())
    return "\n".join([
        f"dlib boxes: {result['matched']}/{result['faces']} faces found (recall {result['recall']:.3f}, "
        f"IoU >= {result['min_iou']}), {result['false_positives']} false positives",
        f"640x360, min face {result['min_face_size']:.0f} px, {result['frames']} frames, {result['engine']} "
        f"on {result['ort_threads']} thread(s) (load average {result['load_average_1m']}):",
        f"  default      {result['ms_per_frame']:7.1f} ms/frame (p50 {result['p50']}, p90 {result['p90']}, "
        f"CPU {result['cpu_ms_per_frame']})",
        f"  torch        {result['torch_ms_per_frame']:7.1f} ms/frame ({result['torch_threads']} torch threads)",
        f"  ORT 2 thr.   {result['onnxruntime_2threads_ms_per_frame']:7.1f} ms/frame",
        f"  octave pyr.  {result['octave_pyramid_ms_per_frame']:7.1f} ms/frame",
        f"  fast pyramid {result['fast_pyramid_ms_per_frame']:7.1f} ms/frame",
        f"  batch of 4   {result['batch4_ms_per_frame']:7.1f} ms/frame",
        f"  min face     {sizes} ms/frame",
        (f"  max face {result['max_face']['max_face_size']} {result['max_face']['ms_per_frame']:7.1f} ms/frame "
         f"(CPU {result['max_face']['cpu_ms_per_frame']}, {result['max_face']['faces_per_frame']} faces/frame)"),
        f"torch {result['torch']}, onnxruntime {result['onnxruntime']}, opencv {result['opencv']}, "
        f"{result['cpu_count']} CPUs",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--frames", type=int, default=60, help="video frames to time (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op and torch threads (default 1)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="ONNX cache folder")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        result = run(args.frames, args.warmup, args.model_dir, args.threads)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
