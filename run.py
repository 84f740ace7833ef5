#!/usr/bin/env python
"""facestream: recognise enrolled people in live video, streams, video files and photos.

    python run.py --source SPEC [--source SPEC ...] [--gallery NAME] [--redis-url URL] [--model CARD]
                  [--events PATH] [--tracks PATH] [--output-video PATH] [--show] [--summary-json PATH] [--metrics-port N]
                  [--save-crops] [--max-frames N] [--config FILE] [--set key=value ...]

SPEC is a webcam index (0), a video file, an RTSP/RTMP/HTTP URL, or an image file or folder; `NAME=SPEC`
names the camera (default: cam0, the file's stem, the stream's host). Several sources run at once, each
its own camera. Photos (all sources images) get annotated copies in --output (default demo.output_dir).

Events (identity_confirmed, track_started, track_ended, unknown_merged) go to --events (JSON lines) and to the Redis
Stream fs:{GALLERY}:events. --tracks writes one JSON line per processed frame and camera with the boxes the
annotated video draws (box, landmarks, track id, shown identity, similarity, anonymous id). At the end (or on Ctrl-C) a summary is printed and written to --summary-json.
Exit status: 0 on success or Ctrl-C; 2 on an error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
from pathlib import Path

from pipeline.app.allocator import limit_malloc_arenas
from pipeline.core.errors import ConfigError, FacestreamError, SourceError
from pipeline.core.logs import configure_logging

log = logging.getLogger("run")
EXIT_ERROR = 2
REPO = Path(__file__).resolve().parent


# -- sources ---------------------------------------------------------------------------------------------
def split_source(text: str) -> tuple[str | None, str]:
    """`cam1=rtsp://...` -> ("cam1", "rtsp://..."); a bare spec (even a URL with `=` in it) -> (None, spec)."""
    name, sep, spec = text.partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and not Path(text).exists():
        return name, spec
    return None, text


def is_image_source(spec: str) -> bool:
    from pipeline.core.images import IMAGE_SUFFIXES  # here: it loads OpenCV, which --help does not need

    path = Path(spec).expanduser()
    return path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def camera_names(specs: list[str]) -> list[tuple[str, str]]:
    """(camera, spec) with unique camera names: a repeated default name gets -2, -3, ..."""
    from pipeline.video.capture import default_camera_name, source_kind

    named, seen = [], {}
    for text in specs:
        name, spec = split_source(text)
        base = name or default_camera_name(spec, source_kind(spec))
        seen[base] = seen.get(base, 0) + 1
        camera = base if seen[base] == 1 else f"{base}-{seen[base]}"
        if name and seen[base] > 1:
            raise ConfigError(f"camera name {name!r} is given twice")
        named.append((camera, spec))
    return named


def image_files(sources: list[str]) -> list[Path]:
    """Photos as given, folders searched recursively for images (the same discovery as enroll.py's)."""
    from pipeline.core.images import IMAGE_SUFFIXES
    from pipeline.core.inputs import expand_inputs

    return expand_inputs(sources, IMAGE_SUFFIXES)


# -- photos ----------------------------------------------------------------------------------------------
def recognise_images(cfg, args, sources: list[str]) -> dict:
    """Annotated copies of photos (names of recognised people, else the detector score) + detections.json."""
    import time

    from pipeline.app.services import face_judge, make_detector, make_embedder, open_live_gallery
    from pipeline.core.images import read_image
    from pipeline.core.settings import save_resolved
    from pipeline.recognise.photos import recognise_still

    output = args.output or cfg.demo.output_dir
    files = image_files(sources)
    detector, embedder = make_detector(cfg), make_embedder(cfg, args.model)
    gallery = open_live_gallery(cfg, embedder, args.gallery, args.redis_url)
    judge = face_judge(cfg, embedder)
    clusters = photo_clusters(cfg, gallery, embedder)
    output.mkdir(parents=True, exist_ok=True)
    records, started = [], time.perf_counter()
    try:
        for path in files:
            try:
                image = read_image(path)
            except SourceError as exc:
                log.warning("%s", exc)
                records.append({"image": str(path), "error": str(exc)})
                continue
            found = recognise_still(image, detector, judge, gallery.matcher)
            records.append(annotate_photo(path, image, output, found, unknown_ids(found, path, clusters)))
        survivors = clusters.finish()  # one re-clustering pass: the folder's order may have split a person
    finally:
        gallery.close()
    for record in records:
        if "unknown_ids" in record:
            record["unknown_ids"] = [survivors.get(u, u) if u else None for u in record["unknown_ids"]]
    (output / "detections.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    save_resolved(cfg, output)
    return {"images": len(records), "faces": sum(r.get("faces", 0) for r in records),
            "recognised": sum(1 for r in records for n in r.get("names", []) if n),
            "unknown_people": len({u for r in records for u in r.get("unknown_ids", []) if u}),
            "unreadable": sum("error" in r for r in records), "seconds": round(time.perf_counter() - started, 1),
            "output": str(output)}


def photo_clusters(cfg, gallery, embedder):
    """Unknown ids for the folder: in the gallery's clusters (unknowns.keep), else in memory for this run."""
    from pipeline.app.services import online_clusters, unknown_directory, unknown_store
    from pipeline.unknowns.photos import PhotoClusters

    if not cfg.unknowns.keep:
        return PhotoClusters(online=online_clusters(cfg, embedder.card))
    store = unknown_store(cfg, gallery.client, gallery.store.gallery, embedder.fingerprint)
    return PhotoClusters(directory=unknown_directory(cfg, store, embedder.card))


def unknown_ids(found, path: Path, clusters) -> list[str | None]:
    """Per face: the unknown id of a face that passed the gates and matched nobody, else None."""
    return [clusters.assign(found.embeddings[i], path.name, found.quality[i], found.crops[i])
            if m is not None and m.identity is None else None for i, m in enumerate(found.matches)]


def annotate_photo(path: Path, image, output: Path, found, unknown: list[str | None]) -> dict:
    """Write the annotated copy of one photo (the unknown ids as given when it was read); its detections.json
    record (`unknown_ids` as they stand after the folder's re-clustering)."""
    import cv2

    from pipeline.video.output import BoxLabel, draw_labels

    faces, matches = found.faces, found.matches
    names = [m.identity if m is not None else None for m in matches]

    def text(i: int) -> str:
        if names[i]:
            return f"{names[i]} {matches[i].similarity:.2f}"
        return unknown[i] or f"{faces.score[i]:.2f}"
    labels = [BoxLabel(tuple(map(float, faces.xyxy[i])), text(i), known=names[i] is not None)
              for i in range(len(faces))]
    target = output / f"{path.parent.name}__{path.stem}.jpg"
    cv2.imwrite(str(target), draw_labels(image, labels))
    print(f"{len(faces):3d} faces  {path}" + (f"  ({', '.join(n for n in names if n)})" if any(names) else ""))
    return {"image": str(path), "faces": len(faces), "annotated": str(target), "names": names,
            "unknown_ids": unknown, "boxes": faces.xyxy.round(1).tolist(), "scores": faces.score.round(3).tolist()}


# -- video -----------------------------------------------------------------------------------------------
class Interrupt:
    """SIGINT / SIGTERM handler: the first asks the runner to stop cleanly (a worker then releases its leases
    at once), a second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False
        self.session = None
        self.previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping (Ctrl-C again to abort) ...", file=sys.stderr, flush=True)
        if self.session is not None:
            self.session.runner.stop()


def stream(cfg, args, sources: list[str]) -> dict:
    """A Session on `sources`, or with --worker a Worker on the cameras it leases; its summary."""
    from pipeline.app.session import RunOptions, Session
    from pipeline.app.worker import Worker
    from pipeline.core.settings import save_resolved

    interrupt = Interrupt()
    opts = RunOptions(sources=camera_names(sources), gallery=args.gallery, redis_url=args.redis_url,
                      model=args.model, events=args.events, output_video=args.output_video, show=args.show,
                      save_crops=args.save_crops, max_frames=args.max_frames, metrics_port=args.metrics_port,
                      tracks=args.tracks)
    for folder in output_folders(args):
        save_resolved(cfg, folder)
    try:
        runnable = Worker(cfg, opts) if args.worker else Session(cfg, opts)
    except BaseException:
        interrupt.restore()
        raise
    session = runnable.session if args.worker else runnable
    try:
        interrupt.session = session
        if interrupt.requested:
            session.runner.stop()
        else:
            log.info("streaming %s", f"as worker {runnable.worker_id}" if args.worker
                     else ", ".join(f"{c}={s}" for c, s in opts.sources))
            runnable.run()
        summary = runnable.summary()
    finally:
        runnable.close()
        interrupt.restore()
    summary["interrupted"] = interrupt.requested
    return summary


def output_folders(args) -> list[Path]:
    paths = [p for p in (args.events, args.tracks, args.output_video, args.summary_json) if p is not None]
    return list(dict.fromkeys(p.parent for p in paths))


def print_summary(s: dict) -> None:
    lines = [f"frames      {s['frames']} in {s['wall_s']} s = {s['fps']} fps (detect every {s['detect_every']}), "
             f"dropped {s['frames_dropped']}" + (" (interrupted)" if s["interrupted"] else "")]
    lat = s["latency_ms"]
    if lat["count"]:
        lines.append(f"latency     p50 {lat['p50']} ms, p90 {lat['p90']} ms "
                     "(capture -> events + annotated frame; files: from dequeue)")
    lines.append("stages      " + ", ".join(f"{name} {v['ms_per_call']} ms/call ({v['ms_per_item']} ms/item)"
                                           for name, v in s["stages"].items()))
    for camera, c in s["sources"].items():
        lines.append(f"camera      {camera}: {c['frames_processed']} frames, {c['frames_dropped']} dropped, "
                     f"{c['tracks']} tracks, up to {c['max_faces_in_a_frame']} faces in a frame ({c['state']})")
    lines.append(f"faces       {s['faces_detected']} detected, {s['faces_embedded']} embedded, not embedded: "
                 + (", ".join(f"{k} {v}" for k, v in s["faces_not_embedded"].items()) or "none"))
    seen = ", ".join(f"{k} ({v})" for k, v in s["identities_seen"].items()) or "no enrolled person confirmed"
    lines.append(f"identities  {seen}  [gallery {s['gallery']['name']!r}: {s['gallery']['identities']} people, "
                 f"threshold {s['gallery']['threshold']} at FAR {s['gallery']['far']}"
                 + (f", expected FPIR {s['gallery']['expected_fpir']:.2%}" if s['gallery'].get('expected_fpir') is not None
                    else "") + "]")
    unknown = s.get("unknowns", {})
    if unknown.get("kept"):
        lines.append(f"unknowns    {unknown['clusters_started']} new unknown people, {unknown['clusters_joined']} "
                     f"tracks of people seen before" + (f", {unknown['errors']} failed writes" if unknown["errors"]
                                                        else ""))
    lines.append("events      " + (", ".join(f"{k} {v}" for k, v in sorted(s["events"].items())) or "none"))
    for camera, path in s["outputs"]["videos"].items():
        lines.append(f"video       {path}")
    if s["outputs"]["events"]:
        lines.append(f"events to   {s['outputs']['events']}")
    if s["outputs"].get("tracks"):
        lines.append(f"tracks to   {s['outputs']['tracks']}")
    print("\n".join(lines), flush=True)


# -- command line ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.recognise.embedder import DEFAULT_MODEL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", default=[], metavar="SPEC",
                   help="webcam index, video file, stream URL, image file or folder; NAME=SPEC names the camera")
    p.add_argument("--gallery", default="default", help="gallery name (default: default)")
    p.add_argument("--redis-url", default=None, help="Redis URL (default: redis.url, else the embedded server)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="embedder model card (JSON)")
    p.add_argument("--events", type=Path, default=None, help="append events to this JSON-lines file")
    p.add_argument("--tracks", type=Path, default=None,
                   help="write one JSON line per processed frame and camera: the boxes drawn, their tracks and names")
    p.add_argument("--output-video", type=Path, default=None, help="annotated video (.mp4/.avi)")
    p.add_argument("--output", type=Path, default=None, help="folder for annotated photos (image sources)")
    p.add_argument("--show", action="store_true", help="live window (needs OpenCV with a GUI)")
    p.add_argument("--summary-json", type=Path, default=None, help="write the run summary here")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics (127.0.0.1)")
    p.add_argument("--save-crops", action="store_true", help="JPEG face crop in each identity event")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames (all cameras)")
    p.add_argument("--worker", action="store_true",
                   help="read the cameras this worker leases from the registry in Redis (enroll.py cameras)")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    limit_malloc_arenas()  # before any reader or engine thread exists
    try:
        from pipeline.app.config import load_app_config
        from pipeline.app.services import set_threads

        cfg = load_app_config(args.config, args.set)
        set_threads()
        if args.worker:
            if args.source or args.output_video or args.show or args.max_frames:
                raise ConfigError("--worker reads the cameras it leases from the registry (enroll.py cameras add): "
                                  "it takes no --source, --output-video, --show or --max-frames")
            summary = stream(cfg, args, [])
            return finish(summary, args)
        sources = args.source or [str(p) for p in cfg.demo.inputs]
        if not sources:
            raise SourceError("no --source given and the config lists no demo.inputs")
        images = [is_image_source(s) for s in sources]
        if all(images):
            print(json.dumps(recognise_images(cfg, args, sources)))
            return 0
        if any(images):
            raise SourceError("image sources and video sources cannot be mixed in one run")
        summary = stream(cfg, args, sources)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 0
    return finish(summary, args)


def finish(summary: dict, args) -> int:
    print_summary(summary)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
