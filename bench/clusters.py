"""Clustering unknown people: do a stranger's photos end up in one cluster, and only theirs?

    python -m bench.clusters --json                      # one JSON object on stdout
    python -m bench.clusters --plot state/clusters.png   # a readable table and the merge_rate sweep as a PNG
    python -m bench.clusters --no-dlib                   # skip the chinese-whispers anchor

Data: the model's held-out LFW people (`trainer.calibration.unseen_people` with the card's `holdout_folds`,
as `bench.openset` reads them): every photo of each fold person with 2+ photos, plus each one-photo person of
the "benchmark" half as a singleton person (a distractor nobody else should join). Each photo is one unknown
face, a one-face track, fed in a fixed seeded shuffled order through `pipeline.unknowns.clustering.
OnlineClusters` at the shipped defaults (assign each, then one `recluster` pass; both reported).

Metrics (`cluster_metrics`), over photos: pairwise precision/recall of same-cluster pairs, BCubed precision,
recall and F, `false_merge_rate` (share of clusters holding photos of 2+ people), cluster and people counts.

Anchors on the same photos:
- `dbscan_immich`: scikit-learn DBSCAN on facestream's embeddings with Immich's default facial-recognition
  settings, maxDistance 0.5 (cosine distance) and minFaces 3 (immich-app/immich server/src/config.ts,
  `machineLearning.facialRecognition`; docs.immich.app/features/facial-recognition); noise photos are
  singleton clusters, as Immich leaves them unassigned;
- `chinese_whispers`: dlib's python_examples/face_clustering.py on dlib's own 128-d descriptors
  (`bench/peers/dlib_cluster_worker.py` in the teacher venv), `chinese_whispers_clustering(descriptors, 0.5)`;
  photos where dlib's detector finds no face are singletons (`no_face`).

Also `dbscan_at_merge_threshold`: the same DBSCAN at eps = 1 - our merge threshold, which tells the algorithm
from Immich's setting (tuned for a model whose strangers score near 0 cosine; ours score far higher).

`sweep`: the run at each (`merge_rate`, `merge_far`, `min_merge_size`) of `MERGE_RATES` x `MERGE_FARS` x
`MIN_MERGE_SIZES`, averaged over the feeding orders `SWEEP_SEEDS`; `best_in_sweep` is `best_setting`'s choice,
the measurement behind the defaults in `pipeline.unknowns.clustering`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.openset import HELDOUT_MODEL
from pipeline.gallery.threshold import operating_point
from pipeline.unknowns.clustering import (
    MAX_MEMBERS,
    MERGE_FAR,
    MERGE_RATE,
    MIN_MERGE_SIZE,
    OnlineClusters,
    assignment_threshold,
    merge_threshold,
)

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
STATE = REPO / "state"
SEED = 0
IMMICH_MAX_DISTANCE, IMMICH_MIN_FACES = 0.5, 3  # Immich's defaults (see the module notes)
DLIB_THRESHOLD = 0.5  # face_clustering.py's chinese_whispers_clustering threshold (L2 distance)
DLIB_CHUNK = 500  # images per worker call: the job travels as one argument, keep it under 128 KiB
MERGE_RATES = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
MERGE_FARS = (1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5)
MIN_MERGE_SIZES = (1, 3)
SWEEP_SEEDS = (0, 1, 2)  # feeding orders the sweep averages over
TARGET_PRECISION = 0.99


@dataclass(frozen=True)
class Photos:
    """The benchmark's photos (people in name order, each person's photos in file order) and whom each shows."""

    paths: list[Path]
    person: np.ndarray
    people: int
    distractors: int

    def order(self, seed: int) -> np.ndarray:
        """The feeding order of `seed`: a permutation of the photos."""
        return np.random.default_rng(seed).permutation(len(self.paths))

    def shuffled(self, seed: int) -> Photos:
        """The same photos in the feeding order of `seed`."""
        order = self.order(seed)
        return Photos([self.paths[i] for i in order], self.person[order], self.people, self.distractors)


def build_photos(images: Path, pairs: Path, folds: list[int]) -> Photos:
    """Every photo of the held-out fold people (2+ photos) and the one photo of each benchmark-half stranger."""
    from trainer.calibration import unseen_people

    people = unseen_people(images, pairs, folds)
    groups = [paths for _, paths in sorted(people.fold_people.items())]
    groups += [paths[:1] for _, paths in sorted(people.benchmark_singles.items())]
    person = np.asarray([i for i, group in enumerate(groups) for _ in group])
    return Photos([p for group in groups for p in group], person, len(groups), len(people.benchmark_singles))


def cluster_metrics(truth, labels) -> dict:
    """Pairwise and BCubed precision/recall of cluster `labels` against `truth` (one entry per photo).

    Pairwise: among same-cluster pairs the share that show one person (precision; 1.0 when there are none),
    among same-person pairs the share in one cluster (recall). BCubed (Bagga & Baldwin 1998): per photo, the
    share of its cluster that is its person (precision) and of its person that is in its cluster (recall),
    averaged over photos. `false_merge_rate`: the share of clusters holding photos of 2+ people.
    """
    truth, labels = np.asarray(truth), np.asarray(labels)
    if truth.ndim != 1 or truth.shape != labels.shape:
        raise ValueError(f"truth and labels must be equal-length 1-d arrays, got {truth.shape} and {labels.shape}")
    person = np.unique(truth, return_inverse=True)[1].astype(np.int64)
    cluster = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    clusters = int(cluster.max()) + 1 if cluster.size else 0
    cells, cell_of, cell_size = np.unique(person * clusters + cluster, return_inverse=True, return_counts=True)
    person_size, cluster_size = np.bincount(person), np.bincount(cluster)
    pairs = lambda sizes: int(np.sum(sizes * (sizes - 1) // 2))
    together, same_person, both = pairs(cluster_size), pairs(person_size), pairs(cell_size)
    overlap = cell_size[cell_of]
    precision = float(np.mean(overlap / cluster_size[cluster])) if truth.size else 1.0
    recall = float(np.mean(overlap / person_size[person])) if truth.size else 1.0
    people_in_cluster = np.bincount(cells % clusters, minlength=clusters) if clusters else np.zeros(0)
    return {"pair_precision": both / together if together else 1.0,
            "pair_recall": both / same_person if same_person else 1.0,
            "bcubed_precision": precision, "bcubed_recall": recall,
            "bcubed_f": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "false_merge_rate": float(np.mean(people_in_cluster > 1)) if clusters else 0.0,
            "clusters": clusters, "people": int(person_size.size), "images": int(truth.size)}


def facestream_embeddings(paths: list[Path], images: Path, model: Path) -> tuple[np.ndarray, object]:
    """Unit embeddings through the shipped pipeline, via `trainer calibrate`'s embedding cache under state/."""
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder
    from trainer.embedding_cache import pipeline_cache
    from trainer.evaluate import LFW_FALLBACK_FRACTION

    embedder = Embedder(model, threads=1)
    cache = pipeline_cache(STATE / "embeddings", images, embedder, MTCNN(), fallback_fraction=LFW_FALLBACK_FRACTION)
    return cache.embed(paths, embedder.embed, desc="facestream").embeddings, embedder


def dlib_descriptors(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, dict]:
    """dlib's descriptors of `paths` and whether it found a face, cached under state/clusters/ by the path set."""
    from bench.peers.venvs import run_worker
    from trainer.teacher import teacher_python

    canonical = sorted(str(p.resolve()) for p in paths)
    digest = hashlib.sha256("\n".join(canonical).encode()).hexdigest()[:12]
    cached = STATE / "clusters" / f"dlib-{digest}.npz"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        python, tmp = teacher_python(), cached.with_suffix(".tmp.npy")
        chunks, found, versions = [], [], {}
        for start in range(0, len(canonical), DLIB_CHUNK):
            job = {"job": "describe", "images": canonical[start:start + DLIB_CHUNK], "out": str(tmp)}
            worker = run_worker(python, "dlib_cluster_worker", job, f"dlib {start}/{len(canonical)}")
            chunks.append(np.load(tmp))
            found += worker["found"]
            versions = worker["versions"]
        np.savez(cached, paths=np.asarray(canonical), descriptors=np.concatenate(chunks), found=np.asarray(found),
                 versions=np.asarray(json.dumps(versions)))
        tmp.unlink(missing_ok=True)
    with np.load(cached) as data:
        row = {p: i for i, p in enumerate(data["paths"].tolist())}
        index = [row[str(p.resolve())] for p in paths]
        return data["descriptors"][index], data["found"][index], json.loads(str(data["versions"]))


def facestream_run(embeddings: np.ndarray, card, merge_rate: float, merge_far: float, max_members: int,
                   min_merge_size: int = MIN_MERGE_SIZE) -> tuple[OnlineClusters, np.ndarray]:
    """Every photo assigned in order (one-face tracks); returns the clusterer and the labels before re-clustering."""
    clusterer = OnlineClusters(lambda members: assignment_threshold(card, members, merge_rate),
                               merge_threshold(card, merge_far), max_members, min_merge_size)
    for vector in tqdm(embeddings, desc=f"assign (merge_rate {merge_rate:g})", file=sys.stderr, leave=False):
        clusterer.assign(vector[None, :])
    return clusterer, clusterer.labels()


def facestream_report(embeddings: np.ndarray, truth: np.ndarray, card, merge_rate: float, merge_far: float,
                      max_members: int, min_merge_size: int = MIN_MERGE_SIZE) -> dict:
    """Metrics after one re-clustering pass (and before it), with the thresholds in force at the end."""
    clusterer, before = facestream_run(embeddings, card, merge_rate, merge_far, max_members, min_merge_size)
    merged = clusterer.recluster()
    point = operating_point(card, "auto", merge_rate, clusterer.members_per_cluster())
    return {**cluster_metrics(truth, clusterer.labels()), "before_recluster": cluster_metrics(truth, before),
            "merged_groups": len(merged),
            "thresholds": {"merge_rate": merge_rate, "merge_far": merge_far, "max_members": max_members,
                           "min_merge_size": min_merge_size, "assignment_final": point.threshold,
                           "assignment_far_final": point.far,
                           "assignment_expected_rate_final": point.expected_fpir,
                           "members_final": int(sum(clusterer.members_per_cluster())),
                           "merge": clusterer.merge_threshold}}


def sweep(embeddings: np.ndarray, photos: Photos, card, max_members: int,
          seeds: tuple[int, ...] = SWEEP_SEEDS) -> list[dict]:
    """Figures at each (merge_rate, merge_far, min_merge_size), averaged over the feeding orders of `seeds` (the
    lowest pairwise precision of any order beside them); a rate's assignment pass is shared by its re-clusterings."""
    keep = ("pair_precision", "pair_recall", "bcubed_precision", "bcubed_recall", "bcubed_f", "false_merge_rate",
            "clusters")
    results: dict[tuple, list[tuple[dict, dict]]] = {}
    for seed in seeds:
        order, vectors = photos.shuffled(seed), embeddings[photos.order(seed)]
        for rate in tqdm(MERGE_RATES, desc=f"sweep (order {seed})", file=sys.stderr, leave=False):
            clusterer, before = facestream_run(vectors, card, rate, MERGE_FARS[0], max_members)
            first = cluster_metrics(order.person, before)
            for far, size in itertools.product(MERGE_FARS, MIN_MERGE_SIZES):
                trial = copy.deepcopy(clusterer)
                trial.merge_threshold, trial.min_merge_size = merge_threshold(card, far), size
                trial.recluster()
                results.setdefault((rate, far, size), []).append((cluster_metrics(order.person, trial.labels()),
                                                                  first))
    mean = lambda runs, key: float(np.mean([r[key] for r in runs]))
    return [{"merge_rate": rate, "merge_far": far, "min_merge_size": size,
             **{k: mean([a for a, _ in runs], k) for k in keep},
             "pair_precision_min": min(a["pair_precision"] for a, _ in runs),
             "before_recluster": {k: mean([b for _, b in runs], k) for k in keep}}
            for (rate, far, size), runs in results.items()]


def best_setting(rows: list[dict], target: float = TARGET_PRECISION, bcubed: bool = True) -> dict | None:
    """The sweep row with the highest pairwise recall among those whose pairwise precision reaches `target` in
    every feeding order and (`bcubed`) whose mean BCubed precision reaches it too.

    Why BCubed as well: pairwise figures count pairs, so they are mostly the largest person's (530 of 2,110
    photos, 92% of the 151,652 same-person pairs here), and two strangers merged together are one wrong pair.
    BCubed counts photos, so it sees the false merges that pairwise precision hides.
    """
    good = [r for r in rows if r["pair_precision_min"] >= target and (not bcubed or r["bcubed_precision"] >= target)]
    return max(good, key=lambda r: (r["pair_recall"], r["pair_precision"])) if good else None


def dbscan_report(embeddings: np.ndarray, truth: np.ndarray, eps: float = IMMICH_MAX_DISTANCE,
                  name: str = "dbscan_immich") -> dict:
    """scikit-learn DBSCAN (cosine distance, Immich's minFaces) on our embeddings; noise photos are singletons."""
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=IMMICH_MIN_FACES, metric="cosine").fit_predict(embeddings)
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))
    return {"name": name, **cluster_metrics(truth, labels), "noise": int(noise.sum()), "eps": eps,
            "min_samples": IMMICH_MIN_FACES, "metric": "cosine"}


def chinese_whispers_report(photos: Photos) -> dict:
    """dlib's face_clustering.py on its own descriptors; photos without a dlib face are singleton clusters."""
    from bench.peers.venvs import run_worker
    from trainer.teacher import teacher_python

    descriptors, found, versions = dlib_descriptors(photos.paths)
    tmp = STATE / "clusters" / "chinese-whispers-input.npy"
    np.save(tmp, descriptors[found])
    worker = run_worker(teacher_python(), "dlib_cluster_worker",
                        {"job": "cluster", "descriptors": str(tmp), "threshold": DLIB_THRESHOLD}, "chinese whispers")
    tmp.unlink(missing_ok=True)
    labels = np.empty(len(photos.paths), np.int64)
    labels[found] = worker["labels"]
    labels[~found] = labels[found].max(initial=-1) + 1 + np.arange(int((~found).sum()))
    return {"name": "chinese_whispers", **cluster_metrics(photos.person, labels), "no_face": int((~found).sum()),
            "threshold": DLIB_THRESHOLD, "versions": versions}


def run(args) -> dict:
    from bench.machine import describe_machine
    from pipeline.core.model_card import load_card

    card = load_card(args.model)
    folds = list(card.training["data"]["holdout_folds"])
    every = build_photos(args.images, args.pairs, folds)
    started = time.perf_counter()
    embeddings, embedder = facestream_embeddings(every.paths, args.images, args.model)
    photos = every.shuffled(args.seed)
    fed = embeddings[every.order(args.seed)]
    # The sweep visits rates whose per-comparison FAR lies below the card's curve: the threshold module would
    # warn at every assignment; the clamp shows in `thresholds.assignment_far_final` instead.
    logging.getLogger("pipeline.gallery.threshold").setLevel(logging.ERROR)
    ours = facestream_report(fed, photos.person, card, args.merge_rate, args.merge_far, args.max_members,
                             args.min_merge_size)
    ours["seconds"] = round(time.perf_counter() - started, 1)
    rows = sweep(embeddings, every, card, args.max_members)
    anchors = {"dbscan_immich": dbscan_report(fed, photos.person)}
    if not args.no_dlib:
        anchors["chinese_whispers"] = chinese_whispers_report(photos)
    # Immich's 0.5 suits its ArcFace model, whose strangers score near 0; ours score far higher (the card).
    card_eps = 1.0 - ours["thresholds"]["merge"]
    dbscan_card = dbscan_report(fed, photos.person, card_eps, "dbscan_card_eps")
    if args.plot:
        plot_sweep(rows, args.merge_rate, args.merge_far, args.min_merge_size, args.plot)
    return {**ours, "anchor": max(anchors.values(), key=lambda a: a["bcubed_f"]), "anchors": anchors,
            "dbscan_at_merge_threshold": dbscan_card, "sweep": rows, "best_in_sweep": best_setting(rows),
            "best_in_sweep_pairwise_only": best_setting(rows, bcubed=False), "target_precision": TARGET_PRECISION,
            "model": embedder.card.model_id, "fingerprint": embedder.fingerprint,
            "protocol": {"images": str(args.images), "pairs": str(args.pairs), "holdout_folds": folds,
                         "seed": args.seed, "sweep_seeds": list(SWEEP_SEEDS), "distractors": photos.distractors,
                         "people": "every photo of each held-out-fold person with 2+ photos, plus one-photo "
                                   "people of the benchmark half (trainer.calibration.half_of) as distractors",
                         "feeding": "each photo one one-face track, seeded shuffle, then one recluster pass"},
            "machine": describe_machine()}


def plot_sweep(rows: list[dict], merge_rate: float, merge_far: float, min_merge_size: int, path: str | Path) -> Path:
    """Pairwise precision and recall against merge_rate at (`merge_far`, `min_merge_size`), before and after
    re-clustering; the chosen `merge_rate` marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = sorted((r for r in rows if r["merge_far"] == merge_far and r["min_merge_size"] == min_merge_size),
                    key=lambda r: r["merge_rate"])
    rates = [r["merge_rate"] for r in chosen]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, colour in (("pair_precision", "#2b6cb0"), ("pair_recall", "#c05621")):
        ax.plot(rates, [r[key] for r in chosen], "o-", color=colour, label=f"{key} (after recluster)")
        ax.plot(rates, [r["before_recluster"][key] for r in chosen], "o--", color=colour, alpha=0.5,
                label=f"{key} (assignment only)")
    ax.axhline(TARGET_PRECISION, color="grey", lw=0.8, ls=":")
    ax.axvline(merge_rate, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("merge_rate (chance a new stranger joins someone else's cluster)")
    ax.set_title(f"bench.clusters: held-out LFW people, merge_far {merge_far:g}, min_merge_size {min_merge_size}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def print_table(result: dict) -> None:
    rows = [("facestream", result), *((name, a) for name, a in result["anchors"].items()),
            ("dbscan_card_eps", result["dbscan_at_merge_threshold"])]
    keys = ("pair_precision", "pair_recall", "bcubed_precision", "bcubed_recall", "bcubed_f", "false_merge_rate")
    print(f"{result['images']} photos of {result['people']} people")
    print(f"{'':18}" + "".join(f"{k:>18}" for k in (*keys, "clusters")))
    for name, row in rows:
        print(f"{name:18}" + "".join(f"{row[k]:>18.4f}" for k in keys) + f"{row['clusters']:>18}")
    t = result["thresholds"]
    print(f"merge_rate {t['merge_rate']:g} (final assignment threshold {t['assignment_final']:.4f}), "
          f"merge_far {t['merge_far']:g} (merge threshold {t['merge']:.4f}), min_merge_size {t['min_merge_size']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of pairwise precision/recall vs merge_rate")
    parser.add_argument("--images", type=Path, default=LFW / "images")
    parser.add_argument("--pairs", type=Path, default=LFW / "pairs_shared_folds.txt")
    parser.add_argument("--model", type=Path, default=HELDOUT_MODEL, help="a card with held-out LFW folds")
    parser.add_argument("--merge-rate", type=float, default=MERGE_RATE)
    parser.add_argument("--merge-far", type=float, default=MERGE_FAR)
    parser.add_argument("--max-members", type=int, default=MAX_MEMBERS)
    parser.add_argument("--min-merge-size", type=int, default=MIN_MERGE_SIZE)
    parser.add_argument("--seed", type=int, default=SEED, help="the feeding order's shuffle")
    parser.add_argument("--no-dlib", action="store_true", help="skip the chinese-whispers anchor")
    args = parser.parse_args(argv)

    from bench.cli import finish
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    return finish(lambda: run(args), args.json, print_table)


if __name__ == "__main__":
    sys.exit(main())
