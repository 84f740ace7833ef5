"""How many of a clip's frames to keep as templates: spread and coverage of `pick_diverse`'s choice.

    python -m bench.video_templates CLIP [--largest] [--every 10 5] [--max-frames 30 60] [--k 1 3 5 0] [--json]

Every frame of CLIP is judged once (enroll.py's path: default config, default model), so each accepted frame is
both a candidate and a probe. For each candidate sampling (one frame in EVERY, MAX_FRAMES sampled at most, as
`enroll.py add --video-every/--video-max-frames`) and each K (`--video-templates`; 0 keeps every accepted
candidate, no de-duplication): `templates` kept, their `mean_pairwise` cosine (lower = more diverse), and
`coverage`: the mean (and worst) over the clip's other accepted frames of the best cosine to a kept template.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def judge_every_frame(clip: Path, largest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(frame numbers, templates, face_quality) of every accepted frame of `clip`; seconds per judged frame."""
    from pipeline.app.config import load_app_config
    from pipeline.app.services import make_detector, make_embedder, quality_gates, set_threads
    from pipeline.recognise.embedder import DEFAULT_MODEL
    from pipeline.recognise.enrollment import Enroller, EnrollmentReport
    from pipeline.recognise.quality import face_quality

    set_threads()
    cfg = load_app_config()
    enroller = Enroller(make_detector(cfg), make_embedder(cfg, DEFAULT_MODEL), quality_gates(cfg), largest=largest,
                        video_every=1, video_max_frames=1_000_000, video_templates=0)
    report = EnrollmentReport()
    start = time.perf_counter()
    enroller.add_file(clip, report)
    per_frame = (time.perf_counter() - start) / max(len(report.outcomes), 1)
    accepted = report.accepted
    return (np.array([o.frame for o in accepted]), report.matrix(),
            np.array([face_quality(o.measures) for o in accepted]), per_frame)


def mean_pairwise(templates: np.ndarray) -> float | None:
    if len(templates) < 2:
        return None
    cosines = templates @ templates.T
    return float(cosines[np.triu_indices(len(templates), 1)].mean())


def choose(frames: np.ndarray, templates: np.ndarray, quality: np.ndarray, every: int, max_frames: int,
           k: int) -> np.ndarray:
    """Rows kept by an enrolment sampling one frame in `every`, `max_frames` at most, keeping `k`."""
    from pipeline.recognise.diverse import pick_diverse

    rows = np.flatnonzero((frames % every == 0) & (frames < every * max_frames))
    if k == 0:  # today's behaviour: every accepted candidate
        return rows
    return rows[pick_diverse(templates[rows], quality[rows], k)]


def measure(clip: Path, largest: bool, everies: list[int], max_frames: list[int], ks: list[int]) -> dict:
    from bench.machine import describe_machine

    frames, templates, quality, per_frame = judge_every_frame(clip, largest)
    rows = []
    for every, most in zip(everies, max_frames, strict=True):
        candidates = int(((frames % every == 0) & (frames < every * most)).sum())
        for k in ks:
            kept = choose(frames, templates, quality, every, most, k)
            probes = np.setdiff1d(np.arange(len(frames)), kept)
            best = (templates[probes] @ templates[kept].T).max(axis=1) if len(kept) and len(probes) else None
            rows.append({"every": every, "max_frames": most, "accepted_candidates": candidates, "k": k,
                         "templates": len(kept), "frames": frames[kept].tolist(),
                         "mean_pairwise": mean_pairwise(templates[kept]),
                         "coverage_mean": None if best is None else float(best.mean()),
                         "coverage_worst": None if best is None else float(best.min()),
                         "probes": len(probes)})
    return {"clip": str(clip), "largest": largest, "accepted_frames": len(frames),
            "seconds_per_judged_frame": round(per_frame, 4), "machine": describe_machine(), "rows": rows}


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--largest", action="store_true", help="as enroll.py add --largest")
    parser.add_argument("--every", type=int, nargs="+", default=[10, 5], help="candidate samplings: one in N")
    parser.add_argument("--max-frames", type=int, nargs="+", default=[30, 60], help="... M sampled at most")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5, 0], help="templates kept (0: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if len(args.every) != len(args.max_frames):
        parser.error("--every and --max-frames need as many values each")
    result = measure(args.clip, args.largest, args.every, args.max_frames, args.k)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['clip']}: {result['accepted_frames']} accepted frames, "
          f"{result['seconds_per_judged_frame'] * 1000:.0f} ms per judged frame")
    print("| candidates | K | templates | mean pairwise cosine | coverage mean | coverage worst |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| 1 in {r['every']}, ≤ {r['max_frames']} ({r['accepted_candidates']} accepted) | "
              f"{r['k'] or 'all'} | {r['templates']} | {cell(r['mean_pairwise'])} | {cell(r['coverage_mean'])} | "
              f"{cell(r['coverage_worst'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
