"""The peers benchmark's summary: one row per (figure, peer) with its ratio, the machine and the versions.

A ratio is always oriented so that > 1 means facestream is better: facestream / peer for figures where
higher is better (accuracy, recall, throughput), peer / facestream (a speedup) for times.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from bench.machine import describe_machine

HIGHER, LOWER = "higher", "lower"


def ratio(facestream: float | None, peer: float | None, better: str) -> float | None:
    """facestream / peer (higher is better) or peer / facestream (lower is better); None when undefined."""
    if better not in (HIGHER, LOWER):
        raise ValueError(f"better must be {HIGHER!r} or {LOWER!r}, got {better!r}")
    if facestream is None or peer is None:
        return None
    numerator, denominator = (facestream, peer) if better == HIGHER else (peer, facestream)
    return round(numerator / denominator, 3) if denominator else None


def row(key: str, figure: str, unit: str, better: str, peer: str, ours: float | None, theirs: float | None,
        note: str = "", skipped: str | None = None) -> dict:
    kind = "over" if better == HIGHER else "speedup_vs"
    slug = peer.split(" ")[0].replace("-", "_")
    out = {"key": key, "figure": figure, "unit": unit, "better": better, "peer": peer, "facestream": ours,
           "peer_value": theirs, "ratio": ratio(ours, theirs, better),
           "ratio_name": f"{key}_facestream_{kind}_{slug}",
           "ratio_definition": "facestream / peer" if better == HIGHER else "peer / facestream (speedup)",
           "note": note}
    if skipped:
        out["skipped"] = skipped
    return out


def figure_rows(result: dict) -> list[dict]:
    lfw, det, pipe, gal = result["lfw"], result["detection"], result["pipeline"], result["gallery"]
    ours, fr = lfw["facestream"], lfw["face_recognition"]
    fn = det["facenet_pytorch"]
    skipped = fn.get("skipped")
    return [
        row("lfw_accuracy", f"LFW accuracy, held-out folds {','.join(map(str, lfw['folds']))} ({lfw['pairs']} pairs)",
            "fraction", HIGHER, "face_recognition 1.3.0", ours["accuracy"], fr["accuracy"],
            "threshold cross-validated over the folds; raw images, each system's own detector and alignment"),
        row("detection_recall", "detection recall, dlib labelled boxes (IoU >= 0.4)", "fraction", HIGHER,
            "face_recognition HOG", det["facestream"]["recall"]["recall"], det["face_recognition"]["recall"]["recall"],
            f"{det['facestream']['recall']['faces']} faces"),
        row("detection_recall", "detection recall, dlib labelled boxes (IoU >= 0.4)", "fraction", HIGHER,
            "facenet-pytorch MTCNN", det["facestream"]["recall"]["recall"],
            None if skipped else fn["recall"]["recall"], "same P/R/O-Net weights", skipped),
        row("detector_ms_per_frame", f"detector ms per 640x360 frame (min face {det['min_face_size']} px, "
            f"{det['threads']} thread)", "ms", LOWER, "facenet-pytorch MTCNN",
            det["facestream"]["speed"]["ms_per_frame"], None if skipped else fn["speed"]["ms_per_frame"],
            "ONNX Runtime vs torch, same weights; wall time", skipped),
        row("detector_cpu_ms_per_frame", "detector CPU ms per 640x360 frame", "ms", LOWER, "facenet-pytorch MTCNN",
            det["facestream"]["speed"]["cpu_ms_per_frame"], None if skipped else fn["speed"]["cpu_ms_per_frame"],
            "process CPU time: steadier than wall time on a shared machine", skipped),
        row("embedding_faces_per_s", "embedding throughput, LFW faces", "faces/s", HIGHER, "face_recognition 1.3.0",
            ours["embed"]["faces_per_s"], fr["embed"]["faces_per_s"],
            f"ours batched ({ours['embed']['batch']}), theirs one face per face_encodings call"),
        row("embedding_cpu_ms_per_face", "embedding CPU ms per face, LFW faces", "ms", LOWER, "face_recognition 1.3.0",
            ours["embed"]["cpu_ms_per_face"], fr["embed"]["cpu_ms_per_face"],
            f"ours excludes alignment ({ours['align_ms_per_face']} ms/face wall)"),
        row("pipeline_fps", "end-to-end fps, Hamilton clip 640x360", "fps", HIGHER, "face_recognition 1.3.0",
            pipe["fps"], pipe["peer_fps"], f"ours detects on 1 frame in {pipe['settings']['run']['detect_every']} "
            f"and tracks between; {pipe['fps_detect_every_1']} fps detecting on every frame"),
        row("pipeline_cpu_ms_per_frame", "end-to-end CPU ms per frame, Hamilton clip", "ms", LOWER,
            "face_recognition 1.3.0", pipe["cpu_ms_per_frame"], pipe["peer_cpu_ms_per_frame"],
            f"all threads of the process; {pipe['cpu_ms_per_frame_detect_every_1']} ms detecting on every frame"),
        row("gallery_search_ms", f"gallery search, 1 query, {gal['templates']:,} templates (p50)", "ms", LOWER,
            "face_recognition face_distance", gal["facestream"]["p50_ms"], gal["peer"]["p50_ms"],
            f"ours: ANN int8, top-1 agreement with exact {gal['facestream']['top1_agreement']:.3f}"),
    ]


def ratios(rows: list[dict]) -> dict[str, float | None]:
    return {r["ratio_name"]: r["ratio"] for r in rows}


def machine_info(start: dict | None = None) -> dict:
    """CPU, cores, Python, date; call once before (start) and once after to record the load on both ends."""
    now = {**describe_machine(), "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "load_average_1m": round(os.getloadavg()[0], 2)}
    if start is None:
        return now
    return {**start, "load_average_1m_start": start["load_average_1m"], "load_average_1m_end": now["load_average_1m"],
            "finished_utc": now["date_utc"]}


def versions(result: dict) -> dict[str, str]:
    """Versions of everything measured: ours from this process, the peers' as their workers reported them."""
    import cv2
    import faiss
    import numpy
    import onnxruntime
    import torch

    peers = {**result["lfw"]["face_recognition"].get("versions", {})}
    facenet = result["detection"]["facenet_pytorch"].get("speed", {}).get("versions", {})
    return {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "faiss": faiss.__version__, "dlib": peers.get("dlib"),
            "face_recognition": peers.get("face_recognition"),
            "face_recognition_models": peers.get("face_recognition_models"),
            "facenet_pytorch": facenet.get("facenet_pytorch"), "torch_in_facenet_venv": facenet.get("torch")}
