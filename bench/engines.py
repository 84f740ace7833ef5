"""Engine benchmark: embedder faces/s and latency per batch size for every engine usable here, the detector
nets on the ORT engines, and parity of each embedder engine against the torch reference on the same weights.

    python -m bench.engines --json                      # one JSON object on stdout
    python -m bench.engines --json --batches 1,16,64,256

Inputs are real aligned faces: the LFW crop cache (`state/crops/lfw150`) when present, else a few LFW images
detected and aligned here. Parity runs the largest batch through each engine and through `create_engine("torch")`
on the card's module (weights read from the same ONNX): max |difference| and top-1 agreement, i.e. the share of
faces whose nearest other face in the batch (cosine) is the same under the engine as under the reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from engines import TensorSpec, create_engine
from engines.registry import available_engines
from engines.torch_cuda_engine import build_module, read_card
from pipeline.core.errors import FacestreamError
from pipeline.core.logs import configure_logging
from trainer.models import create_model

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "models" / "facestream-default.json"
CROPS = REPO / "state" / "crops" / "lfw150"
LFW_IMAGES = REPO.parent / "shared" / "data" / "lfw" / "images"
EMBEDDER_ENGINES = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "torch-cuda", "tensorrt")
DETECTOR_ENGINES = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt")
# Net input (C, H, W) timed per batch; P-Net is fully convolutional, timed on one 320x240 pyramid level.
DETECTOR_INPUTS = {"pnet": (3, 240, 320), "rnet": (3, 24, 24), "onet": (3, 48, 48)}

log = logging.getLogger(__name__)


def real_crops(n: int) -> tuple[np.ndarray, str]:
    """`n` aligned RGB uint8 crops (repeated if fewer exist) and where they came from."""
    from trainer.crops import CropCache

    if CropCache.is_complete(CROPS):
        crops = np.asarray(CropCache.open(CROPS).crops[:n])
        source = str(CROPS.relative_to(REPO))
    else:
        crops = _align_lfw(min(n, 32))
        source = f"{LFW_IMAGES} (detected and aligned here)"
    return np.resize(crops, (n, *crops.shape[1:])), source


def _align_lfw(n: int) -> np.ndarray:
    from pipeline.core.images import read_image
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder

    detector, embedder = MTCNN(), Embedder(CARD)
    out = []
    for path in sorted(LFW_IMAGES.glob("*/*.jpg")):
        image = read_image(path)
        faces = detector.detect_one(image)
        if len(faces):
            out.append(embedder.crops(image, faces)[:1])
        if len(out) == n:
            break
    embedder.close()
    if not out:
        raise FacestreamError(f"no faces found under {LFW_IMAGES}")
    return np.concatenate(out)


def normalise(crops: np.ndarray, card: dict) -> np.ndarray:
    mean, std = np.asarray(card["mean"], np.float32), np.asarray(card["std"], np.float32)
    return np.ascontiguousarray(((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


def time_engine(engine, feed_name: str, batch: np.ndarray, min_seconds: float) -> dict:
    """Warm-up once, then run until `min_seconds` and at least 3 runs; latency per batch and faces/s."""
    feeds = {feed_name: batch}
    engine.run(feeds)
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        engine.run(feeds)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"faces_per_s": round(len(batch) / (np.median(ms) / 1000), 1), "p50_ms": round(float(np.median(ms)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "runs": len(times)}


def nearest_other(embeddings: np.ndarray) -> np.ndarray:
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def parity(out: np.ndarray, ref: np.ndarray) -> dict:
    cosine = np.sum(out * ref, axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    return {"max_abs_diff": float(np.abs(out - ref).max()), "min_cosine": float(cosine.min()),
            "top1_agreement": float(np.mean(nearest_other(out) == nearest_other(ref)))}


def bench_embedder(names: list[str], batches: list[int], min_seconds: float, threads: int) -> dict:
    card = read_card(CARD)
    onnx = CARD.parent / card["onnx"]
    crops, source = real_crops(max(batches))
    x = normalise(crops, card)
    module, input_name, output_name = build_module(CARD, create_model)
    h, w = card["input_size"]
    reference = create_engine("torch", module=module, inputs=[TensorSpec(input_name, ("batch", 3, h, w), np.float32)],
                              outputs=[TensorSpec(output_name, ("batch", card["embedding_dim"]), np.float32)])
    ref = reference.run({input_name: x})[output_name]
    results = {}
    for name in names:
        options = {"threads": threads} if name == "onnxruntime" else {}
        if name == "torch-cuda":  # the architectures are the trainer's: passed in, never imported by engines/
            options = {"create_model": create_model}
        try:
            engine = create_engine(name, model_path=onnx, **options)
        except FacestreamError as exc:
            results[name] = {"error": str(exc)}
            continue
        with engine:
            per_batch = {str(b): time_engine(engine, input_name, x[:b], min_seconds) for b in batches}
            results[name] = {"batches": per_batch, "parity_vs_torch": parity(engine.run({input_name: x})[output_name], ref)}
    return {"model": str(onnx.relative_to(REPO)), "faces": source, "parity_faces": len(x), "engines": results}


def bench_detector(names: list[str], batches: list[int], min_seconds: float, threads: int) -> dict:
    from pipeline.detect.export import DEFAULT_MODEL_DIR, cached_onnx

    paths = cached_onnx(REPO / DEFAULT_MODEL_DIR)
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for name in names:
        options = {"threads": threads} if name == "onnxruntime" else {}
        results[name] = {}
        for net, shape in DETECTOR_INPUTS.items():
            try:
                engine = create_engine(name, model_path=paths[net], **options)
            except FacestreamError as exc:
                results[name][net] = {"error": str(exc)}
                continue
            with engine:
                feed = engine.inputs[0].name
                sizes = [1] if net == "pnet" else batches
                results[name][net] = {
                    f"{b}x{'x'.join(map(str, shape[1:]))}": time_engine(
                        engine, feed, rng.uniform(-1, 1, (b, *shape)).astype(np.float32), min_seconds)
                    for b in sizes
                }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batches", default="1,16,64,256", help="comma-separated batch sizes")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per (engine, batch)")
    parser.add_argument("--threads", type=int, default=0, help="ORT CPU intra-op threads; 0 = one per core")
    parser.add_argument("--engines", default="", help="comma-separated subset; default: every usable engine")
    parser.add_argument("--no-detector", action="store_true", help="skip the detector nets")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    batches = sorted({int(b) for b in args.batches.split(",")})
    usable = set(available_engines())
    wanted = [n for n in args.engines.split(",") if n] or list(EMBEDDER_ENGINES)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "available": sorted(usable),
        "embedder": bench_embedder([n for n in wanted if n in usable], batches, args.min_seconds, args.threads),
    }
    if not args.no_detector:
        det = [n for n in DETECTOR_ENGINES if n in usable and n in wanted]
        report["detector"] = bench_detector(det, batches, args.min_seconds, args.threads)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, result in report["embedder"]["engines"].items():
        for batch, r in result.get("batches", {}).items():
            print(f"{name:22s} batch {batch:>4s}: {r['faces_per_s']:8.1f} faces/s  p50 {r['p50_ms']:.1f} ms")
        if "parity_vs_torch" in result:
            print(f"{name:22s} parity: {result['parity_vs_torch']}")


if __name__ == "__main__":
    main()
