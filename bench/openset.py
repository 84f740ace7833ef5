"""Open-set identification on people the model never saw: does a stranger stay unnamed, and at what cost?

    python -m bench.openset --json          # one JSON object on stdout
    python -m bench.openset                 # a readable table
    python -m bench.openset --no-peer       # facestream only
    python -m bench.openset --templates 3 --set run.score=mean_top2 --no-peer
    python -m bench.openset --model v2.json --gallery-model v1.json --no-peer   # a v1 gallery, v2 probes

The gallery is one photo (the first; `--templates K`: the first K) of each person of the model's held-out LFW
folds with more photos than that; their other photos are the probes (mated searches); the strangers (non-mated searches) are the one-image people of
the "benchmark" half (`trainer.calibration.half_of`), whom `trainer calibrate` never saw either. Every face
goes through the shipped pipeline (MTCNN, the card's alignment, the embedder) via the embedding cache that
`trainer calibrate` fills, so a second run embeds nothing.

Reported, ISO/IEC 19795-1 style:
- `rank1`: share of probes whose best-scoring identity is theirs, whatever the score;
- `dir_at_fpir` {"0.1", "0.01", "0.001"}: the detection-and-identification rate (best identity correct AND
  at or above the threshold) with the threshold set on the strangers' best scores so that at most that
  share of strangers gets a name;
- the shipped operating point: `run.far: auto`, `run.open_set_far` 0.01, for this gallery (the function
  run.py uses, `pipeline.app.services.gallery_operating_point`): its `threshold`, the card's per-comparison
  `far`, `expected_fpir`, and the measured `fpir_default` and `dir_default`;
- scores as the live matcher makes them: with the card's score cohort (`run.normalise`, pipeline/gallery/cohort.py)
  each face's scores are lowered by its cohort offset, and the operating point is read off the card's cohort
  curve; `raw_cosine` has rank-1 and DIR of the plain cosines beside them, `cohort` the cohort's size, k, weight;
- `normalisation`: the same DIR with classic cohort score normalisation of the raw cosines (Z-norm per enrolled
  template, T-norm per probe, S-norm, over the whole cohort: the "calibration" half of the one-image people);
- `face_recognition`: its own pipeline (HOG, dlib's ResNet; `bench.peers` worker, its own venv) on the same
  photos at its default `compare_faces` tolerance 0.6 (a name when the best L2 distance is <= 0.6), and its
  DIR at the same FPIRs with -distance as the score.

`--gallery-model`: the gallery is embedded by that model and the probes and strangers by `--model`, as when a
gallery enrolled with v1 meets a v2 embedder harmonic with it (`harmonic_with` on v2's card). The operating
point is `--model`'s; cohort normalisation is not reported (its cohort would mix the two models).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"
STATE = REPO / "state"
# The shipped model is trained on every LFW identity, so LFW benchmarks measure its held-out twin: the same
# recipe with the people of folds 6 and 7 left out (models/MODEL_CARD.md).
HELDOUT_MODEL = REPO / "models" / "facestream-default-heldout.json"
FPIRS = (0.1, 0.01, 0.001)
TOLERANCE = 0.6  # face_recognition's default compare_faces tolerance (L2 distance)
PEER_CHUNK = 500  # images per face_recognition worker call


@dataclass(frozen=True)
class Protocol:
    """Enrolled photos (`templates` per identity, identity by identity), probes with their identity's index,
    strangers, and the normalisation cohort."""

    names: list[str]
    templates: int
    enrolled: list[Path]
    probes: list[Path]
    probe_identity: np.ndarray
    strangers: list[Path]
    cohort: list[Path]

    @property
    def images(self) -> list[Path]:
        return [*self.enrolled, *self.probes, *self.strangers]


def build_protocol(images: Path, pairs: Path, folds: list[int], templates: int = 1) -> Protocol:
    """The held-out fold people with more than `templates` photos: the first `templates` enrolled, the rest probes."""
    from trainer.calibration import unseen_people

    people = unseen_people(images, pairs, folds)
    names = sorted(n for n, paths in people.fold_people.items() if len(paths) > templates)
    probes = [(i, path) for i, name in enumerate(names) for path in people.fold_people[name][templates:]]
    return Protocol(names=names, templates=templates,
                    enrolled=[p for n in names for p in people.fold_people[n][:templates]],
                    probes=[p for _, p in probes], probe_identity=np.asarray([i for i, _ in probes]),
                    strangers=[ps[0] for _, ps in sorted(people.benchmark_singles.items())],
                    cohort=[ps[0] for _, ps in sorted(people.calibration_singles.items())])


def identity_scores(template_scores: np.ndarray, templates: int, score: str = "max") -> np.ndarray:
    """(queries, identities) scores from (queries, identities x templates) template scores, as the matcher
    scores identities: the best template (`max`) or the mean of the best two (`mean_top2`)."""
    q, columns = template_scores.shape
    ranked = -np.sort(-template_scores.reshape(q, columns // templates, templates), axis=2)
    return ranked[:, :, 0] if score == "max" else ranked[:, :, :2].mean(axis=2)


def identification(probe_scores: np.ndarray, stranger_scores: np.ndarray, truth: np.ndarray) -> dict:
    """rank-1 and DIR at each FPIR from (probes x gallery) and (strangers x gallery) scores, higher = more alike.

    The threshold at FPIR x is `trainer.metrics.threshold_at_far` over the strangers' best scores: the lowest
    at which at most floor(x * strangers) of them reach it.
    """
    from trainer.metrics import threshold_at_far

    best, correct = probe_scores.max(axis=1), probe_scores.argmax(axis=1) == truth
    stranger_best = stranger_scores.max(axis=1)
    out = {"rank1": float(correct.mean()), "dir_at_fpir": {}, "fpir_measured": {}, "threshold_at_fpir": {}}
    for fpir in FPIRS:
        threshold = threshold_at_far(stranger_best, fpir)
        out["threshold_at_fpir"][str(fpir)] = threshold
        out["fpir_measured"][str(fpir)] = float(np.mean(stranger_best >= threshold))
        out["dir_at_fpir"][str(fpir)] = float(np.mean(correct & (best >= threshold)))
    return out


def at_threshold(probe_scores: np.ndarray, stranger_scores: np.ndarray, truth: np.ndarray,
                 threshold: float) -> dict:
    """Measured FPIR and DIR when a name is given at `threshold` or above."""
    correct = probe_scores.argmax(axis=1) == truth
    return {"fpir": float(np.mean(stranger_scores.max(axis=1) >= threshold)),
            "dir": float(np.mean(correct & (probe_scores.max(axis=1) >= threshold)))}


def normalised(gallery: np.ndarray, probes: np.ndarray, strangers: np.ndarray, cohort: np.ndarray,
               truth: np.ndarray) -> dict:
    """rank-1 and DIR at the same FPIRs after cohort normalisation of the cosine scores.

    Z-norm: (s - mu_t) / sd_t with a template's mean and spread against the cohort (computable at enrolment);
    T-norm: the same with the query's (one cohort search per face); S-norm: their mean.
    """
    z_mu, z_sd = _cohort_stats(gallery, cohort)
    report = {}
    for mode in ("znorm", "tnorm", "snorm"):
        results = []
        for queries in (probes, strangers):
            raw = queries @ gallery.T
            z = (raw - z_mu[None, :]) / z_sd[None, :]
            t_mu, t_sd = _cohort_stats(queries, cohort)
            t = (raw - t_mu[:, None]) / t_sd[:, None]
            results.append({"znorm": z, "tnorm": t, "snorm": (z + t) / 2}[mode])
        result = identification(results[0], results[1], truth)
        report[mode] = {"rank1": result["rank1"], "dir_at_fpir": result["dir_at_fpir"]}
    report["cohort_images"] = int(cohort.shape[0])
    return report


def _cohort_stats(vectors: np.ndarray, cohort: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ cohort.T
    return scores.mean(axis=1), scores.std(axis=1)


def facestream_embeddings(protocol: Protocol, images: Path, model: Path,
                          parts: tuple[str, ...] = ("enrolled", "probes", "strangers", "cohort")) -> tuple[dict, object]:
    """Unit embeddings of the protocol's `parts` through the shipped pipeline (cached), and the embedder."""
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder
    from trainer.embedding_cache import pipeline_cache
    from trainer.evaluate import LFW_FALLBACK_FRACTION

    embedder = Embedder(model, threads=1)
    cache = pipeline_cache(STATE / "embeddings", images, embedder, MTCNN(), fallback_fraction=LFW_FALLBACK_FRACTION)
    embed = lambda paths, desc: cache.embed(paths, embedder.embed, desc=desc)
    return {part: embed(getattr(protocol, part), part) for part in parts}, embedder


def facestream_report(protocol: Protocol, parts: dict, embedder, cfg, gallery_model: str | None = None) -> dict:
    """`gallery_model`: the fingerprint of the model that embedded the gallery, when not `embedder`'s."""
    from pipeline.app.services import gallery_operating_point, match_cohort, matching_card

    gallery, probes, strangers = (parts[k].embeddings for k in ("enrolled", "probes", "strangers"))
    truth, k, score = protocol.probe_identity, protocol.templates, cfg.run.score
    probe_scores = identity_scores(probes @ gallery.T, k, score)
    stranger_scores = identity_scores(strangers @ gallery.T, k, score)
    raw = identification(probe_scores, stranger_scores, truth)
    cohort = match_cohort(cfg, embedder.card, embedder.card_path)
    if cohort is not None:  # as the live matcher scores a face: lowered by its cohort offset
        probe_scores = probe_scores - cohort.offsets(probes)[:, None]
        stranger_scores = stranger_scores - cohort.offsets(strangers)[:, None]
    result = identification(probe_scores, stranger_scores, truth)
    point = gallery_operating_point(cfg, matching_card(cfg, embedder.card, gallery_model or embedder.fingerprint),
                                    [k] * len(protocol.names))
    shipped = at_threshold(probe_scores, stranger_scores, truth, point.threshold)
    return {**result, "threshold": point.threshold, "far": point.far, "expected_fpir": point.expected_fpir,
            "fpir_default": shipped["fpir"], "dir_default": shipped["dir"],
            "cohort": None if cohort is None else {"size": len(cohort.vectors), "k": cohort.k, "weight": cohort.weight},
            "raw_cosine": {"rank1": raw["rank1"], "dir_at_fpir": raw["dir_at_fpir"]},
            "operating_point": {"far": cfg.run.far, "open_set_far": cfg.run.open_set_far, "score": score,
                                "normalise": cfg.run.normalise},
            "no_detection": {name: part.no_detection for name, part in parts.items()},
            "normalisation": normalised(gallery, probes, strangers, parts["cohort"].embeddings, truth)
            if k == 1 and gallery_model is None else None,
            "model": embedder.card.model_id, "fingerprint": embedder.fingerprint}


def face_recognition_embeddings(paths: list[Path]) -> tuple[np.ndarray, dict]:
    """face_recognition's encodings of `paths` (its HOG face nearest the centre, else a centred square; the
    `bench.peers` worker in its own venv), cached under state/openset/."""
    from bench.peers.venvs import face_recognition_python, run_worker
    from trainer.evaluate import LFW_FALLBACK_FRACTION

    digest = hashlib.sha256("\n".join(str(p.resolve()) for p in paths).encode()).hexdigest()[:12]
    cached = STATE / "openset" / f"face_recognition-{digest}.npy"
    meta = cached.with_suffix(".json")
    if cached.is_file() and meta.is_file():
        return np.load(cached), json.loads(meta.read_text())
    cached.parent.mkdir(parents=True, exist_ok=True)
    python, chunks, info = face_recognition_python(), [], {"no_detection": 0, "several_faces": 0}
    tmp, whole = cached.with_suffix(".tmp.npy"), cached.with_suffix(".whole.npy")
    for start in range(0, len(paths), PEER_CHUNK):  # the job travels as one argument: keep it under 128 KiB
        job = {"job": "lfw", "images": [str(p) for p in paths[start:start + PEER_CHUNK]],
               "fallback_fraction": LFW_FALLBACK_FRACTION, "out": str(tmp), "out_whole": str(whole)}
        worker = run_worker(python, "face_recognition_worker", job,
                            f"face_recognition {start}/{len(paths)}")
        chunks.append(np.load(tmp))
        info["no_detection"] += worker["fallback"]
        info["several_faces"] += worker["several_faces"]
        info["versions"] = worker["versions"]
    np.save(cached, np.concatenate(chunks))
    meta.write_text(json.dumps(info))
    tmp.unlink(missing_ok=True)
    whole.unlink(missing_ok=True)
    return np.load(cached), info


def face_recognition_report(protocol: Protocol) -> dict:
    encodings, info = face_recognition_embeddings(protocol.images)
    n_g, n_p = len(protocol.enrolled), len(protocol.probes)
    gallery, probes, strangers = encodings[:n_g], encodings[n_g:n_g + n_p], encodings[n_g + n_p:]
    truth, k = protocol.probe_identity, protocol.templates
    # a name is the best distance among all enrolled encodings: per identity, its nearest template
    probe_d = -identity_scores(-_distances(probes, gallery), k)
    stranger_d = -identity_scores(-_distances(strangers, gallery), k)
    result = identification(-probe_d, -stranger_d, truth)
    default = at_threshold(-probe_d, -stranger_d, truth, -TOLERANCE)  # compare_faces: distance <= tolerance
    return {"rank1": result["rank1"], "tolerance": TOLERANCE, "fpir": default["fpir"], "dir": default["dir"],
            "dir_at_fpir": result["dir_at_fpir"],
            "distance_at_fpir": {k: -v for k, v in result["threshold_at_fpir"].items()}, **info}


def _distances(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """face_recognition.face_distance for every (query, enrolled) pair: L2 distance."""
    sq = (queries ** 2).sum(1)[:, None] + (gallery ** 2).sum(1)[None, :] - 2 * queries @ gallery.T
    return np.sqrt(np.maximum(sq, 0.0))


def run(args) -> dict:
    from bench.machine import describe_machine
    from pipeline.app.config import load_app_config
    from pipeline.core.errors import ConfigError
    from pipeline.core.model_card import load_card

    cfg = load_app_config(args.config, args.set)
    folds = list(load_card(args.model).training["data"]["holdout_folds"])
    if not folds:
        raise ConfigError(f"model {args.model} was trained on every LFW identity (no holdout_folds): no unseen "
                          "people to measure it on; measure the model of its held-out recipe")
    protocol = build_protocol(args.images, args.pairs, folds, args.templates)
    started = time.perf_counter()
    parts, embedder = facestream_embeddings(protocol, args.images, args.model)
    if args.gallery_model is not None:
        enrolled, gallery_embedder = facestream_embeddings(protocol, args.images, args.gallery_model, ("enrolled",))
        parts = {**parts, "enrolled": enrolled["enrolled"]}
    ours = facestream_report(protocol, parts, embedder, cfg,
                             None if args.gallery_model is None else gallery_embedder.fingerprint)
    if args.gallery_model is not None:
        ours["gallery_model"] = {"model": gallery_embedder.card.model_id, "fingerprint": gallery_embedder.fingerprint,
                                 "harmonic": embedder.card.accepts(gallery_embedder.fingerprint),
                                 "calibrated": gallery_embedder.fingerprint in embedder.card.harmonic_thresholds}
    ours["seconds"] = round(time.perf_counter() - started, 1)
    peer = None if args.no_peer else face_recognition_report(protocol)
    return {"gallery_size": len(protocol.names), "templates_per_identity": protocol.templates,
            "probes": len(protocol.probes),
            "strangers": len(protocol.strangers), **ours, "face_recognition": peer,
            "protocol": {"images": str(args.images), "pairs": str(args.pairs), "holdout_folds": folds,
                         "enrolled": f"first {protocol.templates} photo(s) of each held-out-fold person with "
                                     f"{protocol.templates + 1}+ photos",
                         "probes": "their other photos", "strangers": "one-photo people, benchmark half "
                         "(trainer.calibration.half_of), never in calibration"},
            "machine": describe_machine()}


def print_table(result: dict) -> None:
    peer = result["face_recognition"] or {}
    nan = float("nan")
    rows = [("rank-1", result["rank1"], peer.get("rank1", nan))]
    rows += [(f"DIR @ FPIR {key}", value, peer.get("dir_at_fpir", {}).get(key, nan))
             for key, value in result["dir_at_fpir"].items()]
    rows += [("FPIR at the default point", result["fpir_default"], peer.get("fpir", nan)),
             ("DIR at the default point", result["dir_default"], peer.get("dir", nan))]
    print(f"gallery {result['gallery_size']} people, {result['probes']} probes, {result['strangers']} strangers")
    print(f"{'':28}{'facestream':>12}{'face_recognition':>18}")
    for label, ours, theirs in rows:
        print(f"{label:28}{ours:>12.4f}{theirs:>18.4f}")
    print(f"default point: threshold {result['threshold']:.4f} at FAR {result['far']:.2g} "
          f"(expected FPIR {result['expected_fpir']:.3g}); face_recognition tolerance {TOLERANCE}")


def protocol_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a benchmark on this protocol (bench.openset, bench.feedback)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--images", type=Path, default=LFW / "images")
    parser.add_argument("--pairs", type=Path, default=LFW / "pairs_shared_folds.txt")
    parser.add_argument("--model", type=Path, default=HELDOUT_MODEL, help="a card with held-out LFW folds")
    parser.add_argument("--config", type=Path, default=None, help="app config whose run section sets the point")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. run.open_set_far=0.001")
    parser.add_argument("--templates", type=int, default=1, help="photos enrolled per person (the rest are probes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = protocol_parser(__doc__)
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    parser.add_argument("--gallery-model", type=Path, default=None,
                        help="embed the gallery with this model's card (the probes with --model's)")
    args = parser.parse_args(argv)

    from bench.cli import finish
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    return finish(lambda: run(args), args.json, print_table)


if __name__ == "__main__":
    sys.exit(main())
