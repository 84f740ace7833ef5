"""Gallery search at scale: facestream's search for large galleries vs face_recognition's `face_distance`.

Both search the same synthetic templates (`bench.gallery.synthetic_gallery`: 128-d unit vectors, one per
identity, every query a fresh sample of an enrolled person) one query at a time.

- facestream: `ApproximateSearch` over the int8 mirror (FAISS PQ fast-scan candidates re-scored exactly;
  what the README recommends for millions), and exact float32 search (`ExactSearch`) for reference.
- face_recognition: its `face_distance` is `np.linalg.norm(known - face, axis=1)` over the whole list, then
  the smallest distance wins. Measured here with NumPy on one contiguous float64 array (dlib's encodings are
  float64); that is its most favourable layout, since a Python list of encodings is converted on every call.
"""

from __future__ import annotations

import time

import numpy as np

from bench.gallery import K, local_snapshot, numpy_fp32, quantize, rows_of, synthetic_gallery, timed
from pipeline.gallery.search import ApproximateSearch, ExactSearch

ANN_M, ANN_RERANK = 32, 16  # bench.gallery's defaults


def face_distance_search(known: np.ndarray):
    """face_recognition's `face_distance` + argmin, one query at a time (rows of `queries`)."""
    return lambda queries: np.array([int(np.argmin(np.linalg.norm(known - q, axis=1))) for q in queries])


def exact_truth(templates: np.ndarray, queries: np.ndarray, batch: int = 64) -> np.ndarray:
    search = numpy_fp32(templates)
    return np.concatenate([search(queries[i:i + batch]) for i in range(0, len(queries), batch)])


def gallery_figures(size: int, queries: int, peer_queries: int, seed: int = 0) -> dict:
    """Single-query p50/p99 ms and top-1 agreement with exact search, for both, on `size` templates."""
    began = time.perf_counter()
    gallery = synthetic_gallery(size, 1, queries, seed=seed)
    templates, asked = gallery.templates, gallery.queries
    truth = exact_truth(templates, asked)
    codes, scales = quantize(templates)
    snap8 = local_snapshot(templates, gallery.owner, codes, scales)
    ann = ApproximateSearch(snap8, m=ANN_M, rerank=ANN_RERANK)
    built = time.perf_counter()
    ann.sync(snap8)
    build_s = time.perf_counter() - built
    ours, rows = timed(rows_of(ann), asked, 1, "facestream ann_int8")
    exact, _ = timed(rows_of(ExactSearch(local_snapshot(templates, gallery.owner))), asked[:peer_queries], 1,
                     "facestream exact fp32")
    known = templates.astype(np.float64)  # 8 bytes x 128 per template, as dlib's encodings
    peer, peer_rows = timed(face_distance_search(known), asked[:peer_queries], 1, "face_distance")
    del known
    return {
        "templates": size, "queries": queries, "peer_queries": peer_queries, "k": K, "dim": templates.shape[1],
        "facestream": {"backend": "ann_int8", **ours, "top1_agreement": _agreement(rows, truth),
                       "true_identity_rate": _agreement(gallery.owner[rows], gallery.query_owner),
                       "build_s": round(build_s, 1), "m": ANN_M, "rerank": ANN_RERANK,
                       "bytes_per_template": round((codes.nbytes + scales.nbytes + gallery.owner.nbytes
                                                    + ann.memory_bytes()) / size, 1)},
        "facestream_exact_fp32": exact,
        "peer": {"method": "numpy L2 over one contiguous float64 array (face_recognition.face_distance) + argmin",
                 **peer, "top1_agreement": _agreement(peer_rows, truth), "bytes_per_template": 8 * templates.shape[1]},
        "seconds": round(time.perf_counter() - began, 1),
    }


def _agreement(rows: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean(rows == truth[:len(rows)])), 5)
