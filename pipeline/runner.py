"""The streaming runner: sources -> detect -> track/align/embed/match/vote -> events -> annotated output.

Threads and queues (single process; sized for a 2-core CPU, where ONNX Runtime and OpenCV release the GIL):

    source readers (1 per camera, FrameSource: bounded queue, drop_oldest for live / wait for files)
        │  SourceGroup.next_batch(): ≤ 1 frame per camera
        ▼
    "detect" thread ── DetectStage (MTCNN on every detect_every-th frame, batched across cameras)
        │  Queue(stage_queue) of `Detected`           ← a full queue blocks detect; the sources then drop/wait
        ▼
    "recognise" thread ── RecogniseStage (track, align, gate, embed all cameras' faces at once, match, vote,
        │                                 events)
        │  Queue(stage_queue) of `Annotated` batches
        ▼
    "output" thread ── VideoOutput (draw, encode), end-to-end latency per frame

Detection of the next batch overlaps embedding of this one, and video encoding overlaps both, so the two
cores are busy with different nets instead of splitting one net's small convolutions (1 ORT thread each).

Shutdown: `stop()` (Ctrl-C in run.py) stops the sources; each stage drains what it already holds and
passes the end marker on; recognise ends every track (track_ended events); the bus is flushed and the video
finalised by the caller. An exception in any stage stops the others and is re-raised by `run()`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from pipeline.config import AppConfig
from pipeline.detector import MTCNN, detector_from_config
from pipeline.embedder import DEFAULT_MODEL, Embedder
from pipeline.errors import ConfigError, FacestreamError, GalleryError
from pipeline.events import EventBus, JsonlSink, RedisStreamSink, events_key
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.matcher import Matcher, threshold_from_card
from pipeline.quality import QualityGates
from pipeline.redis_url import connect
from pipeline.sources import FrameSource, SourceGroup, source_kind
from pipeline.stage_metrics import MetricsServer, StageMetrics
from pipeline.stages import DetectStage, RecogniseStage
from pipeline.video_output import VideoOutput
from pipeline.voting import IdentityVoter

log = logging.getLogger(__name__)

END = None  # end-of-stream marker passed down the stage queues
JOIN_POLL_S = 0.2




class Runner:
    """Wires the stages with threads and bounded queues; `run()` blocks until the sources end or `stop()`."""

    def __init__(self, group: SourceGroup, detect: DetectStage, recognise: RecogniseStage, output: VideoOutput,
                 metrics: StageMetrics, stage_queue: int = 2, batch_wait_s: float = 0.05,
                 max_frames: int | None = None):
        self.group = group
        self.detect = detect
        self.recognise = recognise
        self.output = output
        self.metrics = metrics
        self.batch_wait_s = float(batch_wait_s)
        self.max_frames = max_frames
        self.stopping = threading.Event()
        self.interrupted = False
        self._detected: queue.Queue = queue.Queue(stage_queue)
        self._annotated: queue.Queue = queue.Queue(stage_queue)
        self._errors: list[BaseException] = []
        self._frames_in = 0
        self._live = {s.camera for s in group.sources if s.kind != "file"}

    def stop(self) -> None:
        """Ask every stage to finish (thread-safe, signal-safe: it only sets an event)."""
        self.interrupted = True
        self.stopping.set()

    def run(self) -> None:
        self.group.start()
        threads = [threading.Thread(target=self._guard, args=(fn,), name=name, daemon=True)
                   for name, fn in (("detect", self._detect_loop), ("recognise", self._recognise_loop),
                                    ("output", self._output_loop))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():  # short joins: the main thread stays responsive to signals
                    thread.join(JOIN_POLL_S)
        finally:
            self.group.stop()
        if self._errors:
            raise self._errors[0]

    # -- stage loops -------------------------------------------------------------------------------
    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the main thread
            if not isinstance(exc, FacestreamError):
                log.exception("stage %s crashed", threading.current_thread().name)
            self._errors.append(exc)
            self.stopping.set()
            _put_end(self._detected, self._annotated)

    def _detect_loop(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.max_frames is not None and self._frames_in >= self.max_frames:
                    break
                frames = self.group.next_batch(self.batch_wait_s)
                if not frames:
                    if self.group.finished:
                        break
                    continue
                received = self._capture_times(frames)
                self._frames_in += len(frames)
                self.metrics.count("frames_in", len(frames))
                self._put(self._detected, self.detect.process(frames, received))
        finally:
            self.group.stop()  # stops the readers now: a live camera must not keep filling its queue
            self._send_end(self._detected)

    def _recognise_loop(self) -> None:
        try:
            while True:
                batch = self._detected.get()
                if batch is END:
                    break
                with self.metrics.time("recognise", items=len(batch.frames)):
                    annotated = self.recognise.process(batch)
                self._put(self._annotated, annotated)
        finally:
            try:
                self.recognise.finish()
            finally:
                self._send_end(self._annotated)

    def _output_loop(self) -> None:
        while True:
            batch = self._annotated.get()
            if batch is END:
                return
            for item in batch:
                frame = item.frame
                with self.metrics.time("output"):
                    self.output.write(frame.camera, frame.image, item.labels, f"{frame.camera} #{frame.index}")
                self.metrics.latency(time.perf_counter() - item.received)
                self.metrics.count("frames_out")

    def _put(self, q: queue.Queue, item: Any) -> None:
        """Blocking put that still notices a crashed downstream stage (which stops draining the queue)."""
        while True:
            try:
                q.put(item, timeout=JOIN_POLL_S)
                return
            except queue.Full:
                if self._errors:
                    raise FacestreamError("a downstream stage failed") from None

    def _capture_times(self, frames: list) -> list[float]:
        """perf_counter time each frame was captured: live frames carry their wall-clock capture time; a file's
        frames carry media time, so for them "captured" is when the frame left the source's queue."""
        now, wall = time.perf_counter(), time.time()
        return [now - max(0.0, wall - f.timestamp) if f.camera in self._live else now for f in frames]

    def _send_end(self, q: queue.Queue) -> None:
        try:
            self._put(q, END)
        except FacestreamError:
            _put_end(q)  # the reader crashed: it stops on its own; a marker is only for the other readers



def _put_end(*queues: queue.Queue) -> None:
    """Unblock every stage after a crash: an end marker where there is room (a full queue's reader has one coming)."""
    for q in queues:
        try:
            q.put_nowait(END)
        except queue.Full:
            pass


# -- assembly ---------------------------------------------------------------------------------------------
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
        self.detector = make_detector(cfg, run.min_face_size)
        self.client = connect(opts.redis_url or cfg.redis.url, cfg.redis.state_dir)
        self.store = open_gallery(self.client, opts.gallery, self.embedder.fingerprint)
        self.mirror = GalleryMirror(self.store).start()
        self._closers.append(self.mirror.stop)
        self.far = choose_far(self.embedder.card, run.far, run.open_set_far, len(self.mirror.current()))
        self.threshold = threshold_from_card(self.embedder.card, self.far, run.threshold)
        matcher = Matcher(self.mirror, self.threshold, score=run.score)
        self.bus = EventBus(self._sinks(), include_crops=opts.save_crops or cfg.events.include_crops)
        self._closers.append(self.bus.close)
        self.group = SourceGroup([FrameSource.from_config(spec, camera, cfg.sources) for camera, spec in opts.sources])
        if self.output.path is not None and not run.video_fps:
            self.output.fps = _source_fps(opts.sources)
        detect = DetectStage(self.detector, run.detect_every, self.metrics)
        self.recognise = RecogniseStage(self.embedder, matcher, QualityGates.from_config(cfg.quality), self.bus,
                                        self.metrics, cfg.tracker, IdentityVoter.from_config(cfg.voting),
                                        include_crops=self.bus.include_crops)
        self.runner = Runner(self.group, detect, self.recognise, self.output, self.metrics, run.stage_queue,
                             run.batch_wait_s, opts.max_frames)
        if opts.metrics_port is not None:
            server = MetricsServer(self.metrics, opts.metrics_port, run.metrics_host, extra=self._source_gauges)
            self._closers.append(server.close)

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
            log.warning("gallery %r is empty: every face will be unknown (enrol people with enroll.py)",
                        self.store.gallery)
        self.metrics.started = time.perf_counter()  # fps over the streaming, not the model loading
        self.runner.run()
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
                "latency_ms": m["latency_ms"], "stages": stages, "sources": sources,
                "faces_detected": tally.faces, "faces_embedded": tally.embedded,
                "faces_not_embedded": dict(tally.rejected), "tracks": sum(tally.tracks.values()),
                "identities_seen": dict(tally.identities), "events": dict(self.bus.counts),
                "gallery": {"name": self.store.gallery, "identities": len(self.mirror.current()),
                            "threshold": round(self.threshold, 4), "far": self.far},
                "outputs": {"events": str(self.opts.events) if self.opts.events else None,
                            "videos": dict(self.output.files)}}


def make_embedder(cfg: AppConfig, model: Path) -> Embedder:
    return Embedder.from_config(model, cfg.engine, batch_size=cfg.run.embed_batch)


def make_detector(cfg: AppConfig, min_face_size: int | None = None) -> MTCNN:
    return detector_from_config(cfg.detector, min_face_size)


def choose_far(card, far: str, open_set_far: float, identities: int) -> str:
    """`far` itself, or for "auto" the loosest card FAR with FAR x identities <= open_set_far (see RunConfig)."""
    if far != "auto":
        return far
    calibrated = sorted(card.thresholds, key=float, reverse=True)  # loosest first
    if not calibrated:
        raise ConfigError(f"model card {card.model_id} has no calibrated thresholds; set run.threshold")
    for key in calibrated:
        if float(key) * max(identities, 1) <= open_set_far:
            return key
    log.warning("gallery of %d identities: even the card's strictest threshold (FAR %s) lets a stranger match "
                "someone with probability ~%.2g per face (wanted %.2g); expect false accepts, or calibrate the "
                "model at a lower FAR", identities, calibrated[-1], float(calibrated[-1]) * identities, open_set_far)
    return calibrated[-1]


def open_gallery(client, gallery: str, fingerprint: str) -> GalleryStore:
    store = GalleryStore(client, gallery)
    meta = store.meta()
    if meta.get("dtype"):
        store = GalleryStore(client, gallery, dtype=meta["dtype"])
    bound = meta.get("fingerprint")
    if bound and bound != fingerprint:
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}, but the embedder is model "
                           f"{fingerprint}: use the gallery's model (--model) or re-enrol into another gallery")
    return store


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


def set_threads() -> None:
    """One torch thread: the runner's own threads already keep both cores busy (see the module notes)."""
    import torch

    torch.set_num_threads(1)
