"""One streaming run (`run.py` on cameras, streams and files): everything it owns, built from config."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipeline.app.config import AppConfig, CameraConfig
from pipeline.app.services import (
    camera_detectors,
    detect_settings,
    frame_sources,
    identity_voter,
    make_detector,
    make_embedder,
    motion_gate,
    open_live_gallery,
    self_enrolment,
    track_stage_settings,
    tracker_factory,
    unknown_recorder,
    unmatched_cameras,
    verifier,
    video_face_judge,
)
from pipeline.core.settings import validate
from pipeline.events import EventBus, JsonlSink, RedisStreamSink, events_key
from pipeline.recognise.embedder import DEFAULT_MODEL
from pipeline.redis.connect import connect
from pipeline.video.capture import source_kind
from pipeline.video.metrics import MetricsServer, StageMetrics
from pipeline.video.output import VideoOutput
from pipeline.video.roi import TrackRegions
from pipeline.video.runner import Runner
from pipeline.video.snapshots import SnapshotPublisher
from pipeline.video.source_group import SourceGroup
from pipeline.video.stages import DetectStage, RecogniseStage
from pipeline.video.track_log import TrackLog

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What run.py's command line says, as plain values."""

    sources: list[tuple[str, str]]  # (camera, spec)
    gallery: str = "default"
    redis_url: str | None = None
    model: Path = DEFAULT_MODEL
    events: Path | None = None
    output_video: Path | None = None
    show: bool = False
    save_crops: bool = False
    max_frames: int | None = None
    metrics_port: int | None = None
    tracks: Path | None = None  # one JSON line per processed frame and camera: the boxes drawn (track_log.py)
    keep_open: bool = False  # a worker's run: cameras come and go (add_camera / remove_camera), none at the start


class Session:
    """Everything one run owns, built from config + options; `run()` then `close()` (always)."""

    def __init__(self, cfg: AppConfig, opts: RunOptions):
        self.cfg, self.opts = cfg, opts
        self._closers: list = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        cfg, opts, run = self.cfg, self.opts, self.cfg.run
        self.metrics = StageMetrics()
        self.output = VideoOutput(opts.output_video, fps=run.video_fps or 0.0,
                                  cameras=[c for c, _ in opts.sources], show=opts.show)
        self._closers.append(self.output.close)
        self.embedder = make_embedder(cfg, opts.model)
        self.detector = make_detector(cfg, run.min_face_size, processes=cfg.detector.processes)
        if cfg.detector.processes:
            self._closers.append(self.detector.close)
        self.gallery = open_live_gallery(cfg, self.embedder, opts.gallery, opts.redis_url)
        self._closers.append(self.gallery.close)
        self.client, self.store, self.mirror = self.gallery.client, self.gallery.store, self.gallery.mirror
        matcher = self.gallery.matcher
        self.bus = EventBus(self._sinks(), include_crops=opts.save_crops or cfg.events.include_crops)
        self._closers.append(self.bus.close)
        if unmatched := unmatched_cameras(cfg, [c for c, _ in opts.sources]):
            log.warning("config sections cameras.%s match no source of this run (sources: %s)",
                        ", cameras.".join(unmatched), ", ".join(c for c, _ in opts.sources))
        self.group = SourceGroup(frame_sources(cfg, opts.sources), keep_open=opts.keep_open)
        if self.output.path is not None and not run.video_fps:
            self.output.fps = _source_fps(opts.sources)
        self.tracks = TrackLog(opts.tracks) if opts.tracks is not None else None
        if self.tracks is not None:
            self._closers.append(self.tracks.close)
        # Region-of-interest detection (run.region_detection): the tracker publishes where its tracks are, and the
        # cameras with motion gating on add where motion appeared.
        regions = TrackRegions() if run.region_detection else None
        min_face = run.min_face_size or cfg.detector.min_face_size
        detect = DetectStage(self.detector, run.detect_every, self.metrics, full_scan_every=run.full_scan_every if regions else 0,
                             roi_margin=run.roi_margin, regions=regions, scene_cut=cfg.tracker.scene_cut,
                             min_region=2 * min_face, face_px=2 * min_face,
                             motion_gates=partial(motion_gate, cfg) if regions is not None else None,
                             masks={c: detect_settings(cfg, c)["masks"] for c, _ in opts.sources},
                             cameras=camera_detectors(cfg, self.detector, [c for c, _ in opts.sources]))
        self.unknowns = unknown_recorder(cfg, self.client, self.store.gallery, self.embedder.card,
                                         self.embedder.fingerprint)
        self.self_enrol = self_enrolment(cfg, self.store, self.embedder.fingerprint)
        self.recognise = RecogniseStage(video_face_judge(cfg, self.embedder), matcher, self.bus, self.metrics,
                                        tracker_factory(cfg), identity_voter(cfg),
                                        include_crops=self.bus.include_crops, verifier=verifier(cfg),
                                        weak_every=cfg.evidence.every, weak_eager_frames=cfg.evidence.eager_frames, unknowns=self.unknowns,
                                        self_enrol=self.self_enrol, regions=regions,
                                        **track_stage_settings(cfg))
        self._closing: dict[str, threading.Event] = {}  # cameras being removed -> set once their tracks ended
        self.recognise.on_closed = self._camera_closed
        self.snapshots = self._snapshots()
        self.runner = Runner(self.group, detect, self.recognise, self.output, self.metrics, run.stage_queue,
                             run.batch_wait_s, opts.max_frames, tracks=self.tracks, snapshots=self.snapshots)
        if opts.metrics_port is not None:
            server = MetricsServer(self.metrics, opts.metrics_port, run.metrics_host, extra=self._source_gauges)
            self._closers.append(server.close)

    # -- a worker's cameras ------------------------------------------------------------------------------------
    def add_camera(self, camera: str, url: str, settings: dict | None = None) -> None:
        """Start reading `camera` in this running session with its `cameras.<name>` settings (a registry's
        JSON, validated here: ConfigError names a bad one). SourceError if it cannot be opened."""
        own = validate(CameraConfig, settings or {}, f"the settings of camera {camera}")
        self.cfg.cameras[camera] = own  # what every per-camera lookup reads, before its first frame arrives
        detect = self.runner.detect
        detect.cameras.update(camera_detectors(self.cfg, self.detector, [camera]))
        if masks := detect_settings(self.cfg, camera)["masks"]:
            detect.masks[camera] = masks
        try:
            (source,) = frame_sources(self.cfg, [(camera, url)])
            self.group.add(source)
        except BaseException:
            self._forget_camera(camera)
            raise

    def remove_camera(self, camera: str, wait_s: float = 5.0) -> bool:
        """Stop reading `camera`; returns once its tracks ended and their events went out (or after `wait_s`),
        so the caller may release its lease. False if the session had no such camera."""
        done = self._closing.setdefault(camera, threading.Event())
        if not self.group.remove(camera):
            self._closing.pop(camera, None)
            return False
        if not done.wait(wait_s):
            log.warning("camera %s: its tracks did not end within %.1f s of closing it", camera, wait_s)
        self._forget_camera(camera)
        return True

    def _camera_closed(self, camera: str) -> None:  # the recognise thread, after the camera's track_ended events
        self._closing.pop(camera, threading.Event()).set()

    def _forget_camera(self, camera: str) -> None:
        self.cfg.cameras.pop(camera, None)
        self.runner.detect.cameras.pop(camera, None)
        self.runner.detect.masks.pop(camera, None)

    def _snapshots(self) -> SnapshotPublisher | None:
        """The console's live frames and camera health (console.snapshots), published on their own thread."""
        console = self.cfg.console
        if not console.snapshots:
            return None
        publisher = SnapshotPublisher(self.client, self.store.gallery, console.snapshot_fps, console.snapshot_px,
                                      console.snapshot_ttl_s, self.group.stats)
        self._closers.append(publisher.close)
        return publisher

    def _unknowns_summary(self) -> dict:
        u = self.unknowns
        summary = {"kept": u is not None}
        if u is not None:
            summary.update(clusters_started=u.clusters_started, clusters_joined=u.clusters_joined, errors=u.errors)
        if self.self_enrol is not None:
            summary["self_enrolment"] = dict(self.self_enrol.policy.decisions)
        return summary

    def _source_gauges(self) -> list[tuple[str, dict, float]]:
        return [(f"source_{field}", {"camera": camera}, float(getattr(stats, field)))
                for camera, stats in self.group.stats().items()
                for field in ("frames_read", "frames_dropped", "reconnects", "errors", "read_failures", "fps")]

    def _sinks(self) -> list:
        sinks = []
        path = self.opts.events or self.cfg.events.jsonl
        if path is not None:
            sinks.append(JsonlSink(path))
        if self.cfg.events.redis_stream:
            url, state = self.opts.redis_url or self.cfg.redis.url, self.cfg.redis.state_dir
            # After a failure the sink reconnects to the server this session uses (a new client like ours).
            # Not connect(url): while a local URL's server is down that falls back to the embedded server, and
            # the events would land there. Only the embedded server is looked up again: it may move port.
            client = (lambda: connect(None, state)) if url is None else self.client
            sinks.append(RedisStreamSink(client, events_key(self.store.gallery),
                                         maxlen=self.cfg.events.stream_maxlen, buffer_size=self.cfg.events.buffer_size))
        return sinks

    def run(self) -> dict:
        if len(self.mirror.current()) == 0:
            log.warning("gallery %r is empty: every face is unknown until someone is enrolled (enroll.py); "
                        "this run matches them from then on", self.store.gallery)
        self.metrics.started = time.perf_counter()  # fps over the streaming, not the model loading
        if self.snapshots is not None:
            self.snapshots.start()
        try:
            self.runner.run()
        finally:
            if self.snapshots is not None:
                self.snapshots.close()  # the last frames and final states, so the summary's counts are whole
        return self.summary()

    def close(self) -> None:
        """Flush events, finalise videos, stop the mirror; in reverse order of creation, each at most once."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # noqa: BLE001 - close the rest anyway
                log.exception("closing %s failed", getattr(closer, "__qualname__", closer))

    def summary(self) -> dict:
        m = self.metrics.summary()
        tally = self.recognise.tally
        frames = sum(tally.frames.values())
        sources = {camera: {"frames_read": s.frames_read, "frames_processed": tally.frames[camera],
                            "frames_dropped": s.frames_dropped, "state": s.state, "errors": s.errors,
                            "reconnects": s.reconnects, "read_failures": s.read_failures,
                            "max_faces_in_a_frame": tally.max_faces_per_frame[camera],
                            "tracks": tally.tracks[camera]}
                   for camera, s in self.group.stats().items()}
        stages = {name: {k: s[k] for k in ("ms_per_call", "ms_per_item", "p50_ms", "p90_ms", "calls", "items",
                                             "busy_pct")} for name, s in m["stages"].items()}
        return {"frames": frames, "wall_s": m["wall_s"], "fps": round(frames / max(m["wall_s"], 1e-9), 2),
                "frames_dropped": sum(s["frames_dropped"] for s in sources.values()),
                "interrupted": self.runner.interrupted, "detect_every": self.cfg.run.detect_every,
                "full_scan_every": self.cfg.run.full_scan_every if self.cfg.run.region_detection else 0, "roi": self.runner.detect.roi.summary(),
                "faces_masked": self.runner.detect.masked,
                "detected_frames": sum(tally.detected_frames.values()),
                "latency_ms": m["latency_ms"], "stages": stages, "sources": sources,
                "faces_detected": tally.faces, "faces_embedded": tally.embedded,
                "faces_not_embedded": dict(tally.rejected), "tracks": sum(tally.tracks.values()),
                "faces_weak": tally.weak, "faces_reverified": tally.verified, "track_splits": tally.splits,
                "scene_cuts": sum(tally.cuts.values()), "appearance_jumps": tally.appearance_jumps,
                "contested_frames": tally.contested,
                "identities_seen": dict(tally.identities), "events": dict(self.bus.counts),
                "gallery": {"name": self.store.gallery, "identities": len(self.mirror.current()),
                            "threshold": round(self.gallery.threshold, 4), "far": self.gallery.far,
                            "expected_fpir": self.gallery.expected_fpir},
                "unknowns": self._unknowns_summary(),
                "snapshots": self.snapshots.summary() if self.snapshots is not None else None,
                "outputs": {"events": str(self.opts.events) if self.opts.events else None,
                            "tracks": str(self.opts.tracks) if self.opts.tracks else None,
                            "videos": dict(self.output.files)}}


def _source_fps(sources: list[tuple[str, str]]) -> float:
    """The first file's frame rate (annotated videos play at the source's speed), else 25."""
    import cv2

    for _, spec in sources:
        if source_kind(spec) == "file":
            capture = cv2.VideoCapture(spec)
            fps = capture.get(cv2.CAP_PROP_FPS)
            capture.release()
            if 0 < fps < 1000:
                return float(fps)
    return 25.0
