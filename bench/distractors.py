"""Enrol N distractor identities from LFW into a gallery, fast: one cached aligned crop per person.

    python -m bench.distractors --gallery demo [--count 1000] [--redis-url URL] [--model CARD]

The trainer's crop cache (`state/crops/lfw150`: RGB 150x150 crops aligned with the embedder's template)
already holds every LFW face detected and aligned, so enrolling 1,000 people is one batched `Embedder.embed`
and one `GalleryStore.add_many` — seconds instead of re-detecting 1,000 photos. People are taken in the
cache's (alphabetical) order, first detected crop of each; names are LFW's with spaces ("Aaron Eckhart")
and template ids `lfw:<relative path>`, so re-running adds nothing twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.core.errors import FacestreamError, GalleryError
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "state" / "crops" / "lfw150"


def first_crops(cache, count: int) -> list[tuple[str, int]]:
    """(LFW name, crop row) for the first `count` people with a detected (not centre-fallback) crop."""
    chosen: dict[int, int] = {}
    for row, (label, status) in enumerate(zip(cache.labels.tolist(), cache.status)):
        if status == "detected" and label not in chosen:
            chosen[label] = row
            if len(chosen) >= count:
                break
    if len(chosen) < count:
        raise GalleryError(f"{cache.folder} has only {len(chosen)} people with a detected crop; asked for {count}")
    return [(cache.identities[label], row) for label, row in chosen.items()]


def enrol_distractors(store, embedder: Embedder, cache, count: int) -> dict:
    if tuple(cache.size) != tuple(embedder.size):
        raise GalleryError(f"crop cache {cache.folder} holds {cache.size} crops; model wants {embedder.size}")
    if not np.allclose(np.asarray(cache.meta["template"]), embedder.template, atol=0.5):
        raise GalleryError(f"crop cache {cache.folder} was aligned with another template than the model's")
    people = first_crops(cache, count)
    started = time.perf_counter()
    rows = np.asarray([row for _, row in people])
    embeddings = embedder.embed(np.ascontiguousarray(cache.crops[rows]))
    embed_s = time.perf_counter() - started
    items = [(name.replace("_", " "), embeddings[i:i + 1], [f"lfw:{cache.paths[row]}"])
             for i, (name, row) in enumerate(people)]
    added = store.add_many(items, embedder.fingerprint)
    return {"gallery": store.gallery, "people": len(people), "templates_added": added,
            "embed_s": round(embed_s, 1), "total_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", default="demo")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--state-dir", type=Path, default=REPO / "state")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
        from pipeline.gallery import GalleryStore
        from pipeline.redis.connect import connect
        from trainer.crops import CropCache

        store = GalleryStore(connect(args.redis_url, args.state_dir), args.gallery)
        embedder = Embedder(args.model, "onnxruntime", threads=1)
        bound = store.fingerprint
        if bound and bound != embedder.fingerprint:
            raise GalleryError(f"gallery {args.gallery!r} holds model {bound}; {args.model} is {embedder.fingerprint}")
        result = enrol_distractors(store, embedder, CropCache.open(args.cache), args.count)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
