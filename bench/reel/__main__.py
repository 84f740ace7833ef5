"""Reel benchmark: decisions over time, on LFW people the measured model never saw.

    python -m bench.reel --json              # one JSON object on stdout
    python -m bench.reel --no-peer           # facestream only
    python -m bench.reel --people 10 --seconds 30 --seed 3 --keep out/reel

Builds (once; cached under state/reel/) a 1280x720 25 fps reel of shots with 1-3 pasted LFW faces: cuts that
put other people in the same screen positions, two faces crossing, a face occluded and reappearing. Half of
the people are enrolled from a photo the reel never shows; the rest are strangers. Then runs `enroll.py` and
`run.py --tracks` on it, and the face_recognition peer, and scores every frame against the ground truth
(bench/reel/score.py says what each number means). Targets: 0 wrong_name_frames, idf1 >= 0.9, coverage >= 0.9.

The reel's people are those of folds 6 and 7 and one-photo people, whom the shipped model (trained on every LFW
identity) has seen, so `--model` defaults to its held-out twin, as `bench.openset` does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe_machine
from bench.reel.build import ensure_reel
from bench.reel.facestream import as_enrolled, run_facestream
from bench.reel.score import read_events, read_tracks, score

REPO = Path(__file__).resolve().parents[2]
LFW = REPO.parent / "shared" / "data" / "lfw"
STATE = REPO / "state" / "reel"
HELDOUT_MODEL = REPO / "models" / "facestream-default-heldout.json"
HEADLINE = ("wrong_name_frames", "id_switches", "idf1", "coverage", "wrong_confirmations")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    p.add_argument("--people", type=int, default=20, help="enrolled people (as many strangers, half as many "
                                                          "single-image strangers); default 20")
    p.add_argument("--seconds", type=float, default=60.0, help="reel length (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peer-every", type=int, default=5, help="the peer processes one frame in N (default 5)")
    p.add_argument("--keep", type=Path, default=None, help="copy the reel, truth, tracks and events here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="run.py config override")
    p.add_argument("--model", type=Path, default=HELDOUT_MODEL,
                   help="model card for enroll.py and run.py (default: the shipped model's held-out twin)")
    return p.parse_args(argv)


def facestream_side(folder: Path, truth: dict, work: Path, overrides: list[str], model: Path) -> dict:
    extra = [arg for o in overrides for arg in ("--set", o)]
    ran = run_facestream(folder / "reel.mp4", truth, LFW, work, extra, model)
    truth = as_enrolled(truth, set(ran["in_gallery"]))  # a refused enrolment photo makes its person a stranger
    scores = score(truth, read_tracks(ran["tracks"], truth["frames"]), read_events(ran["events"]))
    summary = ran["run"]
    scores.update({"enrolled": ran["enrolled"], "enrol_rejected": ran["enrol_rejected"],
                   "scored_as_strangers": sorted({r["person"] for r in ran["enrol_rejected"]}),
                   "fps": summary.get("fps"), "frames_dropped": summary.get("frames_dropped"),
                   "tracks": summary.get("tracks"), "faces_embedded": summary.get("faces_embedded"),
                   "threshold": summary.get("gallery", {}).get("threshold"), "model": str(model),
                   "timings_s": {"enrol": ran["enrol_s"], "run": ran["run_s"]}})
    return scores


def peer_side(folder: Path, truth: dict, work: Path, every: int) -> dict:
    from bench.reel.peer import read_peer, run_peer

    people = [(p["name"], LFW / p["enrol_photo"]) for p in truth["people"] if p["enrolled"]]
    started = time.perf_counter()
    ran = run_peer(folder / "reel.mp4", people, work / "peer.jsonl", every=every)
    faces, processed = read_peer(work / "peer.jsonl", truth["frames"])
    kept = set(processed)
    scored = {**truth, "boxes": [b if i in kept else [] for i, b in enumerate(truth["boxes"])]}
    scores = score(scored, faces)
    scores.update({"frames_scored": len(kept), "enrolled": ran["enrolled"], "fps": ran["fps"],
                   "cpu_ms_per_frame": ran["cpu_ms_per_frame"],
                   "settings": {k: ran[k] for k in ("every", "upsample", "tolerance")},
                   "timings_s": {"run": round(time.perf_counter() - started, 1)}})
    return scores


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    singles = max(args.people // 2, 1)
    folder, truth = ensure_reel(LFW, STATE, args.seed, args.people, singles, args.seconds)
    build_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-reel-") as tmp:
        work = Path(tmp)
        ours = facestream_side(folder, truth, work, args.set, args.model)
        peer = None if args.no_peer else peer_side(folder, truth, work, args.peer_every)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in [folder / "reel.mp4", folder / "truth.json", *work.glob("*.jsonl"), work / "summary.json"]:
                if path.exists():
                    shutil.copy2(path, args.keep / path.name)
    result = {key: ours[key] for key in HEADLINE}
    result.update({"facestream": ours, "peer": peer, "reel": truth["description"] | {"folder": str(folder)},
                   "timings_s": {"build_or_load": round(build_s, 1), "total": round(time.perf_counter() - started, 1)},
                   "machine": describe_machine()})
    return result


def print_table(result: dict) -> None:
    ours, peer = result["facestream"], result["peer"] or {}
    rows = ["wrong_name_frames", "wrong_name_rate", "id_switches", "idf1", "coverage", "wrong_confirmations",
            "merged_tracks", "matched_boxes", "fps"]
    print(f"{'':22s}{'facestream':>14s}{'face_recognition':>18s}  target")
    for key in rows:
        target = ours["targets"].get(key, {}).get("target", "")
        print(f"{key:22s}{_cell(ours.get(key)):>14s}{_cell(peer.get(key)):>18s}  {target}")
    reel = result["reel"]
    print(f"reel: {reel['frames']} frames, {reel['shots']} shots, scenarios {json.dumps(reel['scenarios'])}")


def _cell(value) -> str:
    return "n/a" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    from bench.cli import finish
    from pipeline.core.errors import FacestreamError

    args = parse_args(argv)
    # RuntimeError: enroll.py or run.py failed (bench/reel/facestream.py says which, with its stderr).
    return finish(lambda: run(args), args.json, print_table, errors=(FacestreamError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
