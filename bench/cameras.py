"""How many live cameras one 2-core machine keeps up with (issue 17): N cameras in one Session, N = 1, 2, 4, 8.

    python -m bench.cameras --json --plot state/cameras.png      # ~5 min on 2 cores
    python -m bench.cameras --quick                               # 3 s per configuration, N = 1, 2
    python -m bench.cameras --json --set run.detect_every=1 --set run.full_scan_every=15 \\
        --set camera_defaults.motion.enabled=true                 # the same bench over other settings

Each camera is a clip replayed as a live source: `sources.realtime=true` (frames delivered at the clip's
native fps, the clock starting when the camera opens) and `sources.policy=drop_oldest` (a camera never waits:
when its 4-frame queue is full the oldest frame goes and `frames_dropped` counts it). All N cameras are sources
of ONE `Session` (one detect, one recognise, one output thread for all), started together, so faces appear in
every camera at the same moment: the worst case. Configurations:

- 720p:   the meeting clip (../shared/data/opencv_tutorial_media/faces.mp4, 1280x720, 25 fps, 9.6 s)
- 1080p:  the crowd clip (../shared/data/facenet_pytorch_samples/video.mp4, 1920x1080, 25 fps, 4.2 s)
- static: state/cameras/static_scene_20s_walk4s.mp4 (bench/cameras_scene.py: 1280x720, 25 fps, 20 s; a
          still room, two faces walking across, 4 s each)

A run lasts `--seconds` (default: one pass of the clip, looped up to `--min-seconds`, 8 s: the crowd clip
plays 1.9 times). Looping is `sources.reconnect=true`: FrameSource reopens a finished file after
`backoff_initial` (0.05 s here) and continues its media clock, so pacing goes on; the loop's jump back reads as
a scene cut and ends the tracks. A timer stops the Session at `--seconds`.

Per configuration: fps_per_camera = frames processed / streaming wall (mean over cameras, and each camera's);
dropped = frames the sources discarded; cpu_percent = this process's user + system CPU (getrusage), plus the
detector processes' with detector.processes > 0, over the streaming (models loaded before), as % of one core, and `cpu_percent_machine` of all cores (the embedded
redis-server's CPU is not in it); time to name p50/p99 (bench/cameras_metrics.py, exact definition there);
faces_lost against the 1-camera run of the same clip; faces per detected frame; latency p50/p90 (a frame
leaving its source queue -> its events and annotated frame out: a file's queue wait is not in it).
Every face is unknown (an empty scratch gallery in a scratch embedded Redis): the meeting and crowd clips'
people cannot be enrolled from the shared photos, and a confirmation costs the same votes either way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench.cameras_metrics import (
    cpu_percent,
    faces_lost,
    naming_times,
    percentile,
    process_cpu_s,
    track_counts,
)
from bench.cameras_scene import build_static_scene, static_scene_path
from bench.cli import finish
from bench.machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLIPS = {"720p": DATA / "opencv_tutorial_media" / "faces.mp4",
         "1080p": DATA / "facenet_pytorch_samples" / "video.mp4"}
STATIC_SCENE = static_scene_path(REPO / "state" / "cameras")
WALKERS = [DATA / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg",
           DATA / "lfw" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"]
KINDS = ("720p", "static", "1080p")
TARGET_FPS = 15.0
LIVE = ["sources.realtime=true", "sources.policy=drop_oldest"]

log = logging.getLogger("bench.cameras")


class EventClock:
    """An event sink: every event as JSON plus `emitted_s`, the monotonic time it left the pipeline."""

    def __init__(self):
        self.events: list[dict] = []

    def emit(self, event) -> None:
        self.events.append({**event.to_json(), "emitted_s": time.monotonic()})

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        pass


def clip_info(path: Path) -> dict:
    import cv2

    capture = cv2.VideoCapture(str(path))
    info = {"fps": capture.get(cv2.CAP_PROP_FPS) or 25.0, "frames": int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            "width": int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    capture.release()
    info["seconds"] = round(info["frames"] / info["fps"], 2)
    return info


def static_scene(cfg) -> Path:
    """The static scene (STATIC_SCENE), built on first use; the meeting clip's faces found by our detector."""
    from pipeline.app.services import make_detector

    detector = make_detector(cfg)

    def find_faces(image):
        return detector.detect_one(image).xyxy.tolist()

    return build_static_scene(STATIC_SCENE, CLIPS["720p"], WALKERS, find_faces)


def run_cameras(cfg_path: Path, overrides: Sequence[str], model: Path, clip: Path, n: int, seconds: float,
                gallery: str) -> dict:
    """N live-paced copies of `clip` in one Session for `seconds`; the raw figures of the run."""
    from pipeline.app.config import load_app_config
    from pipeline.app.session import RunOptions, Session

    info = clip_info(clip)
    loop = seconds > info["seconds"] + 0.05
    sets = [*LIVE, *overrides] + (["sources.reconnect=true", "sources.backoff_initial=0.05"] if loop else [])
    cfg = load_app_config(cfg_path, sets)
    opts = RunOptions(sources=[(f"cam{k}", str(clip)) for k in range(n)], gallery=gallery, model=model)
    session = Session(cfg, opts)
    clock = EventClock()
    session.bus.sinks.append(clock)
    # Stops the run at `seconds` (a looped clip never ends on its own); a whole single pass ends by itself.
    stop_at = seconds if loop or seconds < info["seconds"] else info["seconds"] + 5.0
    timer = threading.Timer(stop_at, session.runner.stop)
    try:
        child = getattr(session.detector, "cpu_s", lambda: 0.0)  # detector.processes: their CPU counts too
        cpu = process_cpu_s() + child()
        timer.start()
        summary = session.run()
        cpu_s = process_cpu_s() + child() - cpu
        tally = session.recognise.tally
        # The moment each paced source delivered media time 0 (FrameSource keeps it privately; no public hook).
        origins = {s.camera: getattr(s, "_pace_origin", None) for s in session.group.sources}
    finally:
        timer.cancel()
        session.close()
    return {"summary": summary, "cpu_s": cpu_s, "events": clock.events, "origins": origins, "fps": info["fps"],
            "detected_frames": sum(tally.detected_frames.values()), "looped": loop}


def describe(kind: str, n: int, raw: dict, baseline: int | None) -> dict:
    """One configuration's row of the JSON from a run's raw figures."""
    s = raw["summary"]
    wall = s["wall_s"]
    sources = s["sources"]
    fps = {c: round(v["frames_processed"] / wall, 2) for c, v in sources.items()}
    named = naming_times(raw["events"], raw["fps"], raw["origins"])
    times = [r["time_to_name_s"] for r in named]
    counts = track_counts(raw["events"])
    named_per_camera = {c: counts.get(c, {}).get("named", 0) for c in sources}
    cpu = cpu_percent(raw["cpu_s"], wall)
    frames_read = sum(v["frames_read"] for v in sources.values())
    row = {"n": n, "resolution": "1080p" if kind == "1080p" else "720p", "static": kind == "static",
           "fps_per_camera": round(sum(fps.values()) / len(fps), 2), "fps_min_camera": min(fps.values()),
           "dropped": sum(v["frames_dropped"] for v in sources.values()),
           "cpu_percent": cpu["of_one_core"], "cpu_percent_machine": cpu["of_machine"],
           "time_to_name_p50_s": percentile(times, 50), "time_to_name_p99_s": percentile(times, 99),
           "time_to_name_media_p50_s": percentile([r["media_s"] for r in named], 50),
           "name_lag_p50_s": percentile([r["lag_s"] for r in named], 50),
           **faces_lost(named_per_camera, sum(named_per_camera.values()) if n == 1 else baseline),
           "tracks": sum(v.get("tracks", 0) for v in counts.values()), "named_tracks": sum(named_per_camera.values()),
           "faces_per_detected_frame": round(s["faces_detected"] / max(raw["detected_frames"], 1), 2),
           "max_faces_in_a_frame": max(v["max_faces_in_a_frame"] for v in sources.values()),
           "faces_embedded": s["faces_embedded"],
           "cpu_ms_per_frame": round(1000 * raw["cpu_s"] / max(s["frames"], 1), 1),
           # per frame decoded, dropped ones included: what the cameras cost before any face work
           "cpu_ms_per_frame_read": round(1000 * raw["cpu_s"] / max(frames_read, 1), 1),
           "latency_p50_ms": s["latency_ms"]["p50"], "latency_p90_ms": s["latency_ms"]["p90"],
           "wall_s": wall, "frames": s["frames"], "looped": raw["looped"],
           "frames_read": frames_read,
           "stages_ms_per_item": {k: v["ms_per_item"] for k, v in s["stages"].items()},
           "per_camera": {c: {"fps": fps[c], "dropped": v["frames_dropped"], "named": named_per_camera[c]}
                          for c, v in sources.items()}}
    # What the region-of-interest detection and motion gating did, where this code's summary reports it.
    row.update({key: s[key] for key in ("roi", "motion") if key in s})
    return row


def targets(rows: list[dict]) -> dict:
    """Issue 17's targets, judged on the rows measured (None where the configuration was not run)."""
    def row(n, resolution, static):
        return next((r for r in rows if (r["n"], r["resolution"], r["static"]) == (n, resolution, static)), None)

    r4, r8 = row(4, "720p", False), row(8, "720p", True)
    return {"four_720p_at_15_fps": None if r4 is None else r4["fps_min_camera"] >= TARGET_FPS,
            "four_720p_no_face_lost": None if r4 is None or r4["faces_lost"] is None else r4["faces_lost"] == 0,
            "four_720p_name_p50_within_1_s": None if r4 is None or r4["time_to_name_p50_s"] is None
            else r4["time_to_name_p50_s"] <= 1.0,
            "eight_static_at_15_fps": None if r8 is None else r8["fps_min_camera"] >= TARGET_FPS}


def measure(args: argparse.Namespace) -> dict:
    from pipeline.app.config import load_app_config
    from pipeline.app.services import set_threads
    from pipeline.core.errors import FacestreamError
    from pipeline.redis.server import EmbeddedRedis

    missing = [str(p) for p in [*CLIPS.values(), *WALKERS] if not p.is_file()]
    if missing:
        raise FacestreamError(f"benchmark data not found (../shared/data sits beside the checkout): {missing}")
    set_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="facestream-cameras-") as folder:
        state = Path(folder) / "state"
        redis = ["redis.url=null", f"redis.state_dir={state}"]
        overrides = [*args.set, *redis]
        server = EmbeddedRedis(state / "redis").start()
        try:
            clips = dict(CLIPS)
            if "static" in args.kinds:
                clips["static"] = static_scene(load_app_config(args.config, overrides))
            for kind in args.kinds:
                baseline = None
                for n in args.counts if kind != "1080p" else [n for n in args.counts if n <= args.max_1080]:
                    info = clip_info(clips[kind])
                    seconds = args.seconds or max(info["seconds"], args.min_seconds)
                    log.warning("cameras: %d x %s for %.1f s", n, kind, seconds)
                    load = [round(x, 2) for x in os.getloadavg()]
                    raw = run_cameras(args.config, overrides, args.model, clips[kind], n, seconds,
                                      f"bench-cameras-{kind}-{n}")
                    row = {**describe(kind, n, raw, baseline), "load_average_before": load}
                    if n == 1:
                        baseline = row["named_tracks"]
                    rows.append(row)
        finally:
            server.stop()
    return {"cameras": rows, "targets": targets(rows), "target_fps": TARGET_FPS,
            "clips": {k: {"path": str(p.relative_to(REPO.parent) if p.is_relative_to(REPO.parent) else p),
                          **clip_info(p)} for k, p in clips.items() if k in args.kinds},
            "settings": {"config": str(args.config), "set": args.set, "live": LIVE, "seconds": args.seconds,
                         "min_seconds": args.min_seconds, "counts": args.counts, "max_1080": args.max_1080},
            "machine": describe_machine()}


def plot(result: dict, path: Path) -> None:
    """fps per camera vs N (the 15 fps target dashed) and CPU ms per frame vs N, one line per clip kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, pick in (("720p meeting", lambda r: r["resolution"] == "720p" and not r["static"]),
                        ("1080p crowd", lambda r: r["resolution"] == "1080p"),
                        ("720p static", lambda r: r["static"])):
        rows = sorted((r for r in result["cameras"] if pick(r)), key=lambda r: r["n"])
        if rows:
            ns = [r["n"] for r in rows]
            line, = ax.plot(ns, [r["fps_per_camera"] for r in rows], "o-", label=label)
            bx.plot(ns, [r["cpu_ms_per_frame"] for r in rows], "o-", color=line.get_color(),
                    label=f"{label}, per frame processed")
            bx.plot(ns, [r["cpu_ms_per_frame_read"] for r in rows], "o:", color=line.get_color(),
                    label=f"{label}, per frame decoded")
    ax.axhline(result["target_fps"], color="k", ls="--", lw=1, label=f"target {result['target_fps']:g} fps")
    ax.set(xlabel="cameras (N)", ylabel="delivered fps per camera", ylim=(0, 27),
           title="fps per camera (sources paced at 25 fps)")
    bx.set(xlabel="cameras (N)", ylabel="CPU ms per frame", title="cost per frame (this process's CPU)")
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        a.minorticks_off()
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    sets = " ".join(result["settings"]["set"]) or "default settings"
    loads = [r["load_average_before"][0] for r in result["cameras"]]
    fig.suptitle(f"facestream live cameras, {result['machine']['cores']} cores: {sets} (1-min load average "
                 f"{min(loads):.1f}-{max(loads):.1f} during the runs)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(result: dict) -> None:
    print(f"{'n':>2} {'clip':<8} {'fps/cam':>7} {'min':>5} {'dropped':>7} {'cpu%':>6} {'name p50':>8} "
          f"{'p99':>6} {'lost':>4} {'faces/f':>7} {'ms/frame':>8}")
    for r in result["cameras"]:
        clip = "static" if r["static"] else r["resolution"]
        print(f"{r['n']:>2} {clip:<8} {r['fps_per_camera']:>7} {r['fps_min_camera']:>5} {r['dropped']:>7} "
              f"{r['cpu_percent']:>6} {r['time_to_name_p50_s']!s:>8} {r['time_to_name_p99_s']!s:>6} "
              f"{r['faces_lost']!s:>4} {r['faces_per_detected_frame']:>7} {r['cpu_ms_per_frame']:>8}")
    print(f"targets {result['targets']}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cameras", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "facestream-default.json")
    parser.add_argument("--counts", default="1,2,4,8", help="camera counts N, comma-separated")
    parser.add_argument("--max-1080", type=int, default=4, help="largest N for the 1080p clip")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {','.join(KINDS)}")
    parser.add_argument("--seconds", type=float, default=None, help="per configuration (default: the clip)")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="shorter clips are looped up to this")
    parser.add_argument("--quick", action="store_true", help="3 s per configuration, N = 1, 2")
    args = parser.parse_args(argv)
    args.counts = [int(n) for n in ("1,2" if args.quick and args.counts == "1,2,4,8" else args.counts).split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown --kinds {unknown}: use {', '.join(KINDS)}")
    if args.quick and args.seconds is None:
        args.seconds = 3.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")

    def produce() -> dict:
        result = measure(args)
        if args.plot is not None:
            plot(result, args.plot)
        return result

    return finish(produce, args.json, show)


if __name__ == "__main__":
    sys.exit(main())
