"""Benchmarks against peers: facestream vs face_recognition (dlib) and facenet-pytorch's MTCNN, in one run.

    python -m bench.peers --json --plot docs/bench-peers.png > state/bench/peers.json
    python -m bench.readme_table state/bench/peers.json      # the README table from that JSON
    python -m bench.peers --quick --json                      # a few pairs/frames, a small gallery

Each peer lives in its own venv under .cache/ (built on first use; see `bench.peers.venvs`) and runs as a
subprocess. Measurements run one after the other, never at the same time (they would share the cores):

- LFW-protocol accuracy on the folds our model never saw in training (`bench.peers.lfw`)
- detection recall on dlib's labelled boxes and detector ms per 640x360 frame (`bench.peers.detection`)
- embedding throughput on the LFW faces (`bench.peers.lfw`)
- end-to-end fps on the Hamilton clip (`bench.pipeline`, without writing video on either side)
- single-query gallery search at `--gallery-size` templates (`bench.peers.gallery`)

One JSON object on stdout: `figures` (one row per figure and peer, with `ratio`: facestream / peer for
"higher is better" figures, peer / facestream, a speedup, for times; > 1 means facestream is better),
`ratios` (the same by name), each section's raw measurements, and the machine. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.peers import detection, gallery, lfw
from bench.peers.report import figure_rows, machine_info, ratios, versions

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "models" / "facestream-default.json"
LFW = DATA / "lfw"


@dataclass(frozen=True)
class Sizes:
    """How much of each input a run measures (--quick shrinks everything)."""

    pairs_per_fold: int | None  # None: every pair of the held-out folds
    detector_frames: int
    warmup: int
    clip_frames: int | None  # None: the whole clip
    gallery: int
    queries: int
    peer_queries: int


FULL = Sizes(None, 60, 5, None, 1_000_000, 1000, 20)
QUICK = Sizes(10, 10, 2, 30, 20_000, 100, 5)


def lfw_section(sizes: Sizes, threads: int) -> dict:
    folds = lfw.holdout_folds(MODEL)
    pairs_file, images = LFW / "pairs_shared_folds.txt", LFW / "images"
    pairs = lfw.pairs_subset(pairs_file, images, folds, sizes.pairs_per_fold)
    ours = lfw.facestream_lfw(pairs, pairs_file, folds if sizes.pairs_per_fold is None else None, images,
                                   MODEL, threads)
    return {"pairs_file": str(pairs_file.relative_to(REPO.parent)), "folds": folds,
            "folds_note": "only the folds the model card lists as holdout_folds (people unseen in training)",
            "pairs": len(pairs), "facestream": ours, "face_recognition": lfw.face_recognition_lfw(pairs)}


def detection_section(sizes: Sizes, threads: int) -> dict:
    frames = detection.clip_frames(DATA, sizes.detector_frames)
    return {"min_face_size": detection.MIN_FACE_SIZE, "min_iou": detection.MIN_IOU, "threads": threads,
            "threads_note": "ORT intra-op threads (ours) = torch.set_num_threads (facenet-pytorch); dlib HOG "
                            "runs as shipped",
            "facestream": {"recall": detection.facestream_recall(DATA, threads),
                           "speed": detection.facestream_speed(frames, sizes.warmup, threads)},
            "face_recognition": {"recall": detection.face_recognition_recall(DATA)},
            "facenet_pytorch": detection.facenet_figures(DATA, frames, sizes.warmup, threads)}


def pipeline_section(sizes: Sizes) -> dict:
    """bench.pipeline's facestream run (as shipped, detect_every=3; and detecting every frame) and its peer."""
    from bench.pipeline import CLIP, enrol, report, run_facestream, run_peer
    from pipeline.app.config import load_app_config
    from pipeline.app.services import set_threads

    config = REPO / "configs" / "demo.yaml"
    cfg = load_app_config(config, [])
    set_threads()
    enrol(cfg, None, MODEL)
    shipped = run_facestream(cfg, None, MODEL, CLIP, False, sizes.clip_frames)
    every = load_app_config(config, ["run.detect_every=1"])
    every_frame = run_facestream(every, None, MODEL, CLIP, False, sizes.clip_frames)
    result = report(cfg, [shipped], run_peer(CLIP, sizes.clip_frames))
    result["fps_detect_every_1"] = every_frame["fps"]
    result["cpu_ms_per_frame_detect_every_1"] = every_frame["cpu_ms_per_frame"]
    result["video_output"] = "none on either side (upstream's example minus its video writer)"
    return result


def measure(sizes: Sizes, threads: int) -> dict:
    result = {"sizes": sizes.__dict__, "lfw": lfw_section(sizes, threads)}
    result["detection"] = detection_section(sizes, threads)
    result["pipeline"] = pipeline_section(sizes)
    result["gallery"] = gallery.gallery_figures(sizes.gallery, sizes.queries, sizes.peer_queries)
    result["figures"] = figure_rows(result)
    result["ratios"] = ratios(result["figures"])
    result["versions"] = versions(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout (default: indented)")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG chart, one panel per figure")
    parser.add_argument("--quick", action="store_true", help="few pairs and frames, a 20k gallery")
    parser.add_argument("--gallery-size", type=int, default=None, help="templates (default 1,000,000)")
    parser.add_argument("--threads", type=int, default=1, help="detector/embedder threads, ours and peers'")
    parser.add_argument("--readme", type=Path, default=None, metavar="README.md",
                        help="also rewrite the table between the peers markers of this README")
    args = parser.parse_args(argv)

    from pipeline.core.errors import FacestreamError
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    logging.getLogger("trainer").setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL
    if args.gallery_size:
        sizes = Sizes(**{**sizes.__dict__, "gallery": args.gallery_size})
    try:
        began = machine_info()
        result = {**measure(sizes, args.threads), "machine": machine_info(began)}
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        from bench.peers.chart import plot

        result["plot"] = str(plot(result, args.plot))
    if args.readme:
        from bench.readme_table import update_readme

        update_readme(args.readme, result)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
