"""facenet-pytorch's side of `bench.peers`, run by its own venv (see `bench.peers.venvs`); never imported.

Jobs (the JSON argument's "job" key):
- "speed": `MTCNN.detect` per frame on RGB frames from a .npy file, after warm-up, with torch on `threads`
  threads; also how much of that the stand-in torchvision NMS took.
- "detect": `MTCNN.detect` on each image file (RGB), boxes xyxy and probabilities.
"""

import json
import sys
import time

import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image
from torchvision import _standin


def progress(done, total):
    if done % 5 == 0 or done == total:
        print(f"progress {done} {total}", file=sys.stderr, flush=True)


def detector(job):
    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    return MTCNN(min_face_size=job["min_face_size"], keep_all=True, device="cpu")


def speed(job):
    mtcnn = detector(job)
    frames = np.load(job["frames"])
    for frame in frames[:job["warmup"]]:
        mtcnn.detect(frame)
    _standin.NMS_SECONDS[0] = 0.0
    times, faces = [], 0
    cpu = time.process_time()
    with torch.inference_mode():
        for i, frame in enumerate(frames):
            started = time.perf_counter()
            boxes, _ = mtcnn.detect(frame)
            times.append((time.perf_counter() - started) * 1000)
            faces += 0 if boxes is None else len(boxes)
            progress(i + 1, len(frames))
    ms = np.asarray(times)
    return {"ms_per_frame": round(float(ms.mean()), 2), "p50": round(float(np.percentile(ms, 50)), 2),
            "p90": round(float(np.percentile(ms, 90)), 2),
            "cpu_ms_per_frame": round(1000 * (time.process_time() - cpu) / len(frames), 2),
            "standin_nms_ms_per_frame": round(1000 * _standin.NMS_SECONDS[0] / len(frames), 2),
            "frames": len(frames), "faces_per_frame": round(faces / len(frames), 2),
            "torch_threads": torch.get_num_threads()}


def detect_boxes(job):
    mtcnn = detector(job)
    boxes, scores = [], []
    for i, path in enumerate(job["images"]):
        found, probs = mtcnn.detect(Image.open(path).convert("RGB"))
        boxes.append([] if found is None else found.tolist())
        scores.append([] if probs is None else probs.tolist())
        progress(i + 1, len(job["images"]))
    return {"boxes": boxes, "scores": scores}


def versions():
    from importlib.metadata import version

    return {"torch": torch.__version__, "facenet_pytorch": version("facenet-pytorch"), "numpy": np.__version__}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    result = {"speed": speed, "detect": detect_boxes}[job["job"]](job)
    result["versions"] = versions()
    print(json.dumps(result))
