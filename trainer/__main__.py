"""`python -m trainer prepare|train|eval|cohort|calibrate|export|views` — the trainer's command line."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError, FacestreamError
from pipeline.core.logs import configure_logging
from pipeline.core.settings import load_config

log = logging.getLogger("trainer")


def _prepare(args) -> dict:
    from pipeline.detect import MTCNN
    from trainer.export import model_template
    from trainer.models import model_preprocess
    from trainer.prepare import prepare

    size = model_preprocess(args.model).input_size
    summary = prepare(args.root, args.out, size=size, template=model_template(args.model),
                      fallback=args.fallback,
                      fallback_fraction=args.fallback_fraction,
                      detector=MTCNN(min_face_size=args.min_face_size, engine="torch"))
    return summary.__dict__ if hasattr(summary, "__dict__") else dict(summary._asdict())


def _train(args) -> dict:
    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = load_config(args.config, args.set, model=TrainConfig)
    return train(cfg, resume=args.resume)


def _eval(args) -> dict:
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder
    from trainer.evaluate import evaluate
    from trainer.pairs import parse_folds
    from trainer.plots import plot_evaluation

    embedder = Embedder(args.model, threads=args.threads)
    result = evaluate(args.pairs, args.images, embedder.embed, MTCNN(), size=embedder.size, template=embedder.template,
                      folds=parse_folds(args.folds) if args.folds else None, far=args.far, roc=bool(args.plot))
    result["model"] = embedder.card.model_id
    result["fingerprint"] = embedder.fingerprint
    if args.update_card:
        _record_in_card(embedder, args, result)
    if args.plot:
        plot_evaluation(result, args.plot, title=f"{embedder.card.model_id} on {Path(args.pairs).name}")
        for key in ("roc", "scores", "labels"):
            result.pop(key, None)
        result["plot"] = str(args.plot)
    return result


def _record_in_card(embedder, args, result: dict) -> None:
    """Store the open-set thresholds and headline metrics of this evaluation in the model card."""
    from pipeline.core.model_card import save_card

    keys = ("accuracy", "accuracy_std", "val_at_far", "far", "auc", "eer", "threshold", "pairs", "images",
            "no_detection", "pair_folds")
    metrics = {**embedder.card.metrics, "lfw": {"pairs_file": str(args.pairs), **{k: result[k] for k in keys},
                                                 "open_set": result["open_set"]}}
    thresholds = result["open_set"]["thresholds_at_far"]
    if "open_set_calibration" in embedder.card.metrics:  # `trainer calibrate` used more pairs: keep its curve
        log.warning("%s keeps the thresholds of `trainer calibrate`; this evaluation's are in metrics.lfw",
                    args.model)
        thresholds = embedder.card.thresholds
    card = embedder.card.model_copy(update={"thresholds": thresholds, "metrics": metrics})
    save_card(card, args.model)


def _calibrate(args) -> dict:
    from pipeline.detect import MTCNN
    from pipeline.recognise.embedder import Embedder
    from trainer.calibration import CALIBRATION_RULE, calibrate, far_grid, unseen_people
    from trainer.embedding_cache import pipeline_cache
    from trainer.evaluate import LFW_FALLBACK_FRACTION
    from trainer.pairs import parse_folds

    embedder = Embedder(args.model, threads=args.threads)
    folds = parse_folds(args.folds) if args.folds else list(embedder.card.training["data"]["holdout_folds"])
    people = unseen_people(args.images, args.pairs, folds)
    chosen = people.calibration()
    if args.include_bench_strangers:
        chosen = {**chosen, **people.benchmark_singles}
    detector = MTCNN()
    cache = pipeline_cache(args.cache, args.images, embedder, detector, fallback_fraction=LFW_FALLBACK_FRACTION)
    gallery_embed = None
    if args.gallery_model is not None:  # thresholds for this model's faces against an older model's templates
        old = Embedder(args.gallery_model, threads=args.threads)
        if old.fingerprint == embedder.fingerprint or not embedder.card.accepts(old.fingerprint):
            raise ConfigError(f"model {embedder.card.model_id} is not harmonic with {old.card.model_id} "
                              f"({old.fingerprint}): its card's harmonic_with is {embedder.card.harmonic_with}")
        old_cache = pipeline_cache(args.cache, args.images, old, detector, fallback_fraction=LFW_FALLBACK_FRACTION)
        gallery_embed = lambda paths: old_cache.embed(paths, old.embed, desc=f"calibrate {old.card.model_id}")
    embed = lambda paths: cache.embed(paths, embedder.embed, desc="calibrate")
    fars = far_grid(args.loosest, args.strictest)
    result = calibrate(chosen, embed, fars, block=args.block, gallery_embed=gallery_embed)
    result.update({"model": embedder.card.model_id, "fingerprint": embedder.fingerprint,
                   "people": CALIBRATION_RULE if not args.include_bench_strangers else
                   "every unseen person (held-out folds, all one-image people)",
                   "pairs_file": str(args.pairs), "holdout_folds": folds, "images_dir": str(args.images),
                   "cache": str(cache.path), "command": args.command_line})
    old_fingerprint = None if gallery_embed is None else old.fingerprint
    if gallery_embed is not None:
        result["gallery_model"] = {"model": old.card.model_id, "fingerprint": old.fingerprint}
    if embedder.card.cohort is not None:  # the matcher's own score: the same pairs less the cohort's people
        from pipeline.gallery.cohort import load_cohort

        result["cohort"] = calibrate(people.cohort_free(args.include_bench_strangers), embed, fars, block=args.block,
                                     gallery_embed=gallery_embed, cohort=load_cohort(embedder.card, args.model))
        result["cohort"]["people"] = ("the held-out fold people" + (" and the benchmark half of the one-image "
                                      "people" if args.include_bench_strangers else "") + "; never the cohort's own faces")
    if args.update_card:
        from pipeline.core.model_card import save_card

        save_card(_calibrated(embedder.card, result, old_fingerprint), args.model)
        log.info("wrote %d thresholds (FAR %s .. %s) into %s", len(result["thresholds_at_far"]),
                 next(iter(result["thresholds_at_far"])), list(result["thresholds_at_far"])[-1], args.model)
    return result


def _calibrated(card, result: dict, old_fingerprint: str | None):
    """`card` with the curves of `result`: its own (`old_fingerprint` None) or those against an older model's
    templates, raw and (when the card has a cohort) of the normalised score, and the record in `metrics`."""
    curve = result["thresholds_at_far"]
    if old_fingerprint is None:
        update = {"thresholds": curve, "metrics": {**card.metrics, "open_set_calibration": result}}
    else:
        update = {"harmonic_thresholds": {**card.harmonic_thresholds, old_fingerprint: curve},
                  "metrics": {**card.metrics, "harmonic_calibration": {
                      **card.metrics.get("harmonic_calibration", {}), old_fingerprint: result}}}
    if "cohort" in result:
        normalised = result["cohort"]["thresholds_at_far"]
        update["cohort"] = card.cohort.model_copy(update={"thresholds": normalised} if old_fingerprint is None else {
            "harmonic_thresholds": {**card.cohort.harmonic_thresholds, old_fingerprint: normalised}})
    return card.model_copy(update=update)


def _cohort(args) -> dict:
    """The card's score cohort: this model's embeddings of the "calibration" half of the one-image people,
    saved beside the card; its thresholds are left to `trainer calibrate` (run it next)."""
    from pipeline.core.model_card import ScoreCohort, fingerprint_file, save_card
    from pipeline.detect import MTCNN
    from pipeline.gallery.cohort import top_k_mean
    from pipeline.recognise.embedder import Embedder
    from trainer.calibration import unseen_people
    from trainer.embedding_cache import pipeline_cache
    from trainer.evaluate import LFW_FALLBACK_FRACTION

    embedder = Embedder(args.model, threads=args.threads)
    card = embedder.card
    people = unseen_people(args.images, args.pairs, list(card.training["data"]["holdout_folds"]))
    faces = people.cohort()
    paths = [path for name in sorted(faces) for path in faces[name]]
    if len(paths) <= args.k:
        raise ConfigError(f"a cohort needs more than k={args.k} faces, {args.images} gives {len(paths)}")
    cache = pipeline_cache(args.cache, args.images, embedder, MTCNN(), fallback_fraction=LFW_FALLBACK_FRACTION)
    vectors = np.ascontiguousarray(cache.embed(paths, embedder.embed, desc="cohort").embeddings, dtype=np.float32)
    out = Path(args.model).with_name(f"{Path(args.model).stem}-cohort.npy")
    np.save(out, vectors)
    spec = ScoreCohort(file=out.name, sha256=fingerprint_file(out), size=len(vectors), k=args.k, weight=args.weight,
                       centre=float(top_k_mean(vectors, vectors, args.k, leave_one_out=True).mean()),
                       people=f"{len(paths)} one-image people of {args.images}, the 'calibration' half "
                              "(trainer.calibration.half_of); command: " + args.command_line)
    save_card(card.model_copy(update={"cohort": spec}), args.model)
    log.warning("%s: cohort of %d faces written to %s; its thresholds are empty: run `trainer calibrate "
                "--update-card` next (and with --gallery-model for each harmonic model)", args.model, len(paths), out)
    return spec.model_dump()


def _export(args) -> dict:
    from pipeline.core.views import horizontal_shifts
    from trainer.export import export

    card = export(args.run, args.out, model_id=args.model_id, flip_average=args.flip_average,
                  test_time_shifts=horizontal_shifts(args.shift_average))
    return json.loads(Path(card).read_text())


def _views(args) -> dict:
    """New test-time views for an exported model: its embeddings change with them, so every threshold and figure
    measured with the old views leaves the card (run `calibrate` and `eval` again)."""
    from pydantic import ValidationError

    from pipeline.core.model_card import ModelCard, load_card, save_card
    from pipeline.core.views import horizontal_shifts

    card = load_card(args.model)
    kept = {k: v for k, v in card.metrics.items() if k == "export_parity_max_abs_diff"}
    dropped = sorted(set(card.metrics) - set(kept))
    views = {"flip_average": args.flip_average, "test_time_shifts": horizontal_shifts(args.shift_average),
             "thresholds": {}, "harmonic_thresholds": {}, "cohort": None, "metrics": kept,
             "training": {**card.training, "views_command": args.command_line}}
    try:
        card = ModelCard.model_validate({**card.model_dump(), **views})
    except ValidationError as exc:
        raise ConfigError(f"views for {args.model}: {exc.errors()[0]['msg']}") from None
    save_card(card, args.model)
    log.warning("%s: new views; thresholds and %s dropped: re-run `trainer calibrate` (and `eval`)",
                args.model, ", ".join(dropped) or "no metrics")
    return {"model": card.model_id, "flip_average": card.flip_average,
            "test_time_shifts": card.test_time_shifts,
            "dropped": ["thresholds", "harmonic_thresholds", "cohort", *dropped]}


def _add_view_options(p) -> None:
    p.add_argument("--flip-average", action="store_true",
                   help="the card tells the embedder to average each face's embedding with its mirror image's")
    p.add_argument("--shift-average", type=int, action="append", default=[], metavar="PIXELS",
                   help="also average over the crop shifted this many pixels left and right "
                        "(card test_time_shifts; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="detect + align a folder-per-identity tree into a crop cache")
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="dlib_resnet", help="model whose input size and template to crop for")
    p.add_argument("--min-face-size", type=float, default=20)
    p.add_argument("--fallback", choices=["centre", "none"], default="centre")
    p.add_argument("--fallback-fraction", type=float, default=0.6,
                   help="centre-box side as a fraction of the image, for images with no detection")
    p.set_defaults(handler=_prepare)

    p = sub.add_parser("train", help="triplet training with online mining")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint.pt")
    p.set_defaults(handler=_train)

    p = sub.add_parser("eval", help="LFW-protocol verification from raw images")
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--model", type=Path, default=None, help="model card (.json); default: the shipped model")
    p.add_argument("--folds", default=None, help="only these folds, e.g. 6,8")
    p.add_argument("--far", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--plot", type=Path, default=None, help="write the ROC curve as a PNG")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--update-card", action="store_true",
                   help="write the open-set thresholds and these metrics into the model card")
    p.set_defaults(handler=_eval)

    p = sub.add_parser("calibrate", help="open-set thresholds down to FAR 1e-6 from all pairs of unseen people")
    p.add_argument("--images", type=Path, required=True, help="folder-per-person tree (LFW images/)")
    p.add_argument("--pairs", type=Path, required=True, help="the pairs file whose folds the model held out")
    p.add_argument("--folds", default=None, help="the held-out folds; default: the card's holdout_folds")
    p.add_argument("--model", type=Path, default=None, help="model card (.json); default: the shipped model")
    p.add_argument("--cache", type=Path, default=Path("state/embeddings"), help="embedding cache folder")
    p.add_argument("--loosest", type=float, default=1e-2)
    p.add_argument("--strictest", type=float, default=1e-6)
    p.add_argument("--block", type=int, default=512, help="rows scored at a time")
    p.add_argument("--include-bench-strangers", action="store_true",
                   help="also the one-image people bench.openset keeps as strangers (its figures are then "
                        "no longer on people the thresholds never saw)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gallery-model", type=Path, default=None,
                   help="an older model's card this model is harmonic with: thresholds for its templates "
                        "against this model's faces (written to the card's harmonic_thresholds)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--update-card", action="store_true", help="write the thresholds into the model card")
    p.set_defaults(handler=_calibrate)

    p = sub.add_parser("cohort", help="score-normalisation cohort for a model card (unseen one-image people); "
                                      "calibrate after it")
    p.add_argument("--images", type=Path, required=True, help="folder-per-person tree (LFW images/)")
    p.add_argument("--pairs", type=Path, required=True, help="the pairs file whose folds the model held out")
    p.add_argument("--model", type=Path, required=True, help="model card (.json) to add the cohort to")
    p.add_argument("--k", type=int, default=10, help="nearest cohort faces averaged per face")
    p.add_argument("--weight", type=float, default=0.75, help="share of the offset subtracted from scores")
    p.add_argument("--cache", type=Path, default=Path("state/embeddings"), help="embedding cache folder")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(handler=_cohort)

    p = sub.add_parser("export", help="ONNX + model card from a finished run")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the .onnx to write (card beside it)")
    p.add_argument("--model-id", default=None)
    _add_view_options(p)
    p.set_defaults(handler=_export)

    p = sub.add_parser("views", help="change an exported model card's test-time views (flip, shifts); "
                                     "drops its thresholds, to be calibrated again")
    p.add_argument("--model", type=Path, required=True, help="model card (.json) to rewrite")
    _add_view_options(p)
    p.set_defaults(handler=_views)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["python", "-m", "trainer", *(sys.argv[1:] if argv is None else argv)])
    configure_logging(args.log_level)
    if getattr(args, "model", None) is None and args.command in ("eval", "calibrate"):
        from pipeline.recognise.embedder import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    try:
        result = args.handler(args)
    except FacestreamError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    text = json.dumps(result, indent=None if getattr(args, "json", False) else 2, default=_jsonable)
    print(text)
    return 0


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
