"""Gallery benchmark: enrolment into Redis, memory per template, and search speed/agreement at scale.

    python -m bench.gallery --identities 1000000 --json     # one JSON object on stdout (progress on stderr)
    python -m bench.gallery --crossover 4000,16000,50000 --json   # exact vs ann per size: gallery.search=auto

Synthetic but realistic embeddings: identity centres uniform on the unit sphere in 128-d, each template a
unit vector at cosine sqrt(genuine) from its centre, so two templates (or a template and a query) of one
person meet at cosine ~`genuine` (0.75) and strangers at ~0 +- 0.09. Queries are fresh samples of enrolled
identities, so every query has a true match.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.cli import finish
from bench.machine import describe_machine
from pipeline.gallery import GalleryStore, Snapshot
from pipeline.gallery.search import ApproximateSearch, ExactSearch

DIM = 128
K = 5  # hits per query, as the matcher asks for a few
MATCHER_K = 32  # what the matcher asks of its search (Matcher's default k): the crossover is measured with it


@dataclass(frozen=True)
class SyntheticGallery:
    templates: np.ndarray  # (T, dim) float32 unit rows, identity-major
    owner: np.ndarray  # (T,) int32 identity index of each template
    queries: np.ndarray  # (Q, dim) float32 unit rows
    query_owner: np.ndarray  # (Q,) int32 the enrolled identity each query was drawn from


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _samples(centres: np.ndarray, count: int, genuine: float, rng: np.random.Generator) -> np.ndarray:
    """`count` unit samples around each centre at cosine sqrt(genuine) (in expectation)."""
    sigma = np.sqrt(1.0 / genuine - 1.0) / np.sqrt(centres.shape[1])
    repeated = np.repeat(centres, count, axis=0)
    return _unit(repeated + sigma * rng.standard_normal(repeated.shape, dtype=np.float32)).astype(np.float32)


def synthetic_gallery(identities: int, per_identity: int = 1, queries: int = 1000, dim: int = DIM,
                      genuine: float = 0.75, seed: int = 0, chunk: int = 65536) -> SyntheticGallery:
    rng = np.random.default_rng(seed)
    query_owner = np.sort(rng.integers(0, identities, queries)).astype(np.int32)
    templates = np.empty((identities * per_identity, dim), dtype=np.float32)
    query_centres = np.empty((queries, dim), dtype=np.float32)
    for start in range(0, identities, chunk):
        stop = min(start + chunk, identities)
        centres = _unit(rng.standard_normal((stop - start, dim), dtype=np.float32))
        templates[start * per_identity:stop * per_identity] = _samples(centres, per_identity, genuine, rng)
        hit = (query_owner >= start) & (query_owner < stop)
        query_centres[hit] = centres[query_owner[hit] - start]
    owner = np.repeat(np.arange(identities, dtype=np.int32), per_identity)
    return SyntheticGallery(templates, owner, _samples(query_centres, 1, genuine, rng), query_owner)


# -- measurements----------------------------------------------------------------------------------------

def quantize(templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 (value = code * scale), chunked so 1M rows need no float64 temporaries."""
    codes = np.empty(templates.shape, np.int8)
    scales = np.empty(len(templates), np.float32)
    for start in range(0, len(templates), 65536):
        block = templates[start:start + 65536]
        scales[start:start + 65536] = np.abs(block).max(axis=1) / 127.0
        codes[start:start + 65536] = np.round(block / scales[start:start + 65536, None])
    return codes, scales


def machine_info() -> dict:
    import faiss

    return {**describe_machine(), "load_average": list(os.getloadavg()),
            "blas_threads_env": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
            "numpy": np.__version__, "faiss": faiss.__version__}


def timed(search, queries: np.ndarray, batch: int, label: str) -> tuple[dict, np.ndarray]:
    """p50/p99 ms of `search(slice)` over consecutive `batch`-query slices (after one warm-up call),
    and the top-1 template row of every query."""
    search(queries[:batch])
    times, rows = [], []
    for start in tqdm(range(0, len(queries), batch), desc=label, file=sys.stderr, leave=False):
        began = time.perf_counter()
        rows.append(search(queries[start:start + batch]))
        times.append(time.perf_counter() - began)
    ms = np.array(times) * 1e3
    stats = {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
             "calls": len(ms), "batch": batch}
    return stats, np.concatenate(rows)


def backend_figures(name: str, search, queries: np.ndarray, truth: np.ndarray | None, args) -> dict:
    """Single-query and batched latency, and top-1 agreement with `truth` (exact float32)."""
    single, rows = timed(search, queries, 1, f"{name} single")
    batched, _ = timed(search, queries, args.batch, f"{name} x{args.batch}")
    figures = {"single": single, "batched": batched, "queries": len(queries)}
    if truth is not None:
        figures["top1_agreement"] = round(float(np.mean(rows == truth[:len(rows)])), 5)
    return figures


def rows_of(search):
    return top1(search, K)


def top1(search, k: int):
    """queries -> the best template row of each, from `search` asked for its top `k`."""
    return lambda queries: search.search(queries, k).rows[:, 0]


def numpy_fp32(templates: np.ndarray):
    """The plain brute force the backends are measured against: one GEMM and an argmax."""
    return lambda queries: np.argmax(queries @ templates.T, axis=1)


def local_snapshot(templates, owner, codes=None, scales=None):
    """A mirror-shaped Snapshot of synthetic templates, without going through Redis."""
    identities = int(owner.max()) + 1
    ids = [f"id{i}" for i in range(identities)]
    if codes is None:
        return Snapshot("0-0", "bench", "float32", ids, ids, templates, None, owner)
    return Snapshot("0-0", "bench", "int8", ids, ids, codes, scales, owner)


def search_figures(gallery: SyntheticGallery, args) -> dict:
    templates, queries, n = gallery.templates, gallery.queries, args.exact_queries
    snap32 = local_snapshot(templates, gallery.owner)
    codes, scales = quantize(templates)
    snap8 = local_snapshot(templates, gallery.owner, codes, scales)
    out = {}
    # Truth: exact float32 top-1 of every query, from the batched exact run.
    exact = ExactSearch(snap32)
    batched, truth = timed(rows_of(exact), queries, args.batch, f"exact fp32 x{args.batch}")
    single, _ = timed(rows_of(exact), queries[:n], 1, "exact fp32 single")
    out["exact_fp32"] = {"single": single, "batched": batched, "top1_agreement": 1.0,
                         "true_identity_rate": round(float(np.mean(gallery.owner[truth] == gallery.query_owner)), 5)}
    single, _ = timed(numpy_fp32(templates), queries[:n], 1, "numpy fp32 single")
    out["numpy_fp32"] = {"single": single}
    out["exact_int8"] = backend_figures("exact int8", rows_of(ExactSearch(snap8)), queries[:4 * n], truth, args)
    out["exact_int8"]["decode"] = "float32 copy per snapshot"
    blocks, _ = timed(rows_of(ExactSearch(snap8, decode="blocks")), queries[:3], 1, "exact int8 blocks")
    out["exact_int8_blocks"] = {"single": blocks, "decode": "64k-row blocks on the fly"}
    for label, snapshot in (("ann_int8", snap8), ("ann_fp32", snap32)):
        ann = ApproximateSearch(snapshot, m=args.ann_m, rerank=args.ann_rerank)
        began = time.perf_counter()
        ann.sync(snapshot)
        build = time.perf_counter() - began
        out[label] = backend_figures(label, rows_of(ann), queries, truth, args)
        out[label].update(build_s=round(build, 2), index_bytes_per_template=round(ann.memory_bytes() / len(templates), 2),
                          m=args.ann_m, rerank=args.ann_rerank)
    out["mirror_bytes_per_template"] = {
        "float32": (snap32.matrix.nbytes + snap32.owner.nbytes) / len(templates),
        "int8": (snap8.matrix.nbytes + snap8.scales.nbytes + snap8.owner.nbytes) / len(templates)}
    return out


def crossover_figures(args) -> dict:
    """Single-query p50 of exact search (float32 mirror) and of ann at each gallery size of `--crossover`, with
    the matcher's k: where `gallery.search: auto` should switch from one to the other."""
    out = {}
    for size in args.crossover:
        gallery = synthetic_gallery(size, queries=args.crossover_queries, seed=args.seed)
        snapshot = local_snapshot(gallery.templates, gallery.owner)
        exact, truth = timed(top1(ExactSearch(snapshot), MATCHER_K), gallery.queries, 1, f"exact {size}")
        ann = ApproximateSearch(snapshot, m=args.ann_m, rerank=args.ann_rerank, exact_below=0)
        began = time.perf_counter()
        ann.sync(snapshot)
        build = time.perf_counter() - began
        approx, rows = timed(top1(ann, MATCHER_K), gallery.queries, 1, f"ann {size}")
        out[str(size)] = {"exact_p50_ms": exact["p50_ms"], "ann_p50_ms": approx["p50_ms"],
                          "ann_build_s": round(build, 2), "top1_agreement": round(float(np.mean(rows == truth)), 4)}
    return out


def enrol_figures(gallery: SyntheticGallery, args, client) -> dict:
    """Templates/s through `GalleryStore.add_many`, and Redis memory per template (used_memory delta)."""
    per = args.templates_per_identity
    store = GalleryStore(client, "bench", dtype="int8")
    store.clear()
    before = int(client.info("memory")["used_memory"])
    items = ((f"person{i}", gallery.templates[i * per:(i + 1) * per], [f"t{i}-{j}" for j in range(per)])
             for i in range(args.identities))
    progress = tqdm(items, total=args.identities, desc="enrol", file=sys.stderr, leave=False, mininterval=1)
    began = time.perf_counter()
    added = store.add_many(progress, "bench", batch=args.enrol_batch)
    seconds = time.perf_counter() - began
    used = int(client.info("memory")["used_memory"]) - before
    began = time.perf_counter()
    snapshot = store.snapshot()
    load = time.perf_counter() - began
    return {"templates": int(len(gallery.templates)), "identities_added": int(added), "seconds": round(seconds, 2),
            "enroll_per_s": round(len(gallery.templates) / seconds, 1),
            "redis_bytes_per_template": round(used / len(gallery.templates), 1),
            "snapshot_load_s": round(load, 2), "snapshot_rows": int(len(snapshot.matrix))}


def redis_client(args, workdir: Path):
    """The client for `--redis-url`, or a private embedded server in `workdir` (and its stop callback)."""
    from pipeline.redis.connect import connect
    from pipeline.redis.server import EmbeddedRedis

    if args.redis_url:
        return connect(args.redis_url, workdir), lambda: None
    server = EmbeddedRedis(workdir / "redis").start()
    return server.client(), server.stop


def run(args) -> dict:
    began = time.perf_counter()
    gallery = synthetic_gallery(args.identities, args.templates_per_identity, args.queries, genuine=args.genuine,
                                seed=args.seed)
    report = {"identities": args.identities, "templates": int(len(gallery.templates)),
              "templates_per_identity": args.templates_per_identity, "queries": args.queries, "dim": DIM,
              "genuine_cos": args.genuine, "k": K, "generate_s": round(time.perf_counter() - began, 1)}
    if not args.skip_redis:
        with tempfile.TemporaryDirectory(prefix="bench-gallery-") as workdir:
            client, stop = redis_client(args, Path(workdir))
            try:
                report["enrol"] = enrol_figures(gallery, args, client)
            finally:
                client.close()
                stop()
    backends = search_figures(gallery, args)
    default = backends["ann_int8"]
    report.update({
        "search_backend": "ann_int8 (FAISS PQ fast-scan candidates re-scored from the int8 mirror; "
                          "the default for large galleries)",
        "search_p50_ms": default["single"]["p50_ms"], "search_p99_ms": default["single"]["p99_ms"],
        "search_batched_p50_ms": default["batched"]["p50_ms"], "top1_agreement": default["top1_agreement"],
        "enroll_per_s": report.get("enrol", {}).get("enroll_per_s"),
        "redis_bytes_per_template": report.get("enrol", {}).get("redis_bytes_per_template"),
        "bytes_per_template": round(backends["mirror_bytes_per_template"]["int8"]
                                    + default["index_bytes_per_template"], 2),
        "numpy_fp32_p50_ms": backends["numpy_fp32"]["single"]["p50_ms"],
        "backends": backends, "machine": machine_info(), "total_s": round(time.perf_counter() - began, 1)})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gallery", description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100_000)
    parser.add_argument("--templates-per-identity", type=int, default=1)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16, help="faces per batched search call")
    parser.add_argument("--exact-queries", type=int, default=50, help="single-query samples for exact search")
    parser.add_argument("--genuine", type=float, default=0.75, help="cosine between templates of one person")
    parser.add_argument("--ann-m", type=int, default=32)
    parser.add_argument("--ann-rerank", type=int, default=16)
    parser.add_argument("--enrol-batch", type=int, default=500)
    parser.add_argument("--redis-url", default=None, help="default: a private embedded Redis in a temp dir")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crossover", type=lambda text: [int(n) for n in text.split(",")], default=None,
                        metavar="N,N,...", help="only time exact vs ann at these gallery sizes (templates)")
    parser.add_argument("--crossover-queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    def produce() -> dict:
        if args.crossover:
            return {"crossover": crossover_figures(args), "k": MATCHER_K, "machine": machine_info()}
        return run(args)

    return finish(produce, args.json, lambda report: print(json.dumps(report, indent=2)), error_status=1)


if __name__ == "__main__":
    sys.exit(main())
