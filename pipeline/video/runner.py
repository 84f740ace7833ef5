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
    "output" thread ── VideoOutput (draw, encode), end-to-end latency per frame; offers each frame to the
                       console's SnapshotPublisher (snapshots.py), which publishes on its own thread

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
from dataclasses import replace
from typing import Any

from pipeline.core.errors import FacestreamError
from pipeline.video.metrics import StageMetrics
from pipeline.video.output import VideoOutput
from pipeline.video.snapshots import SnapshotPublisher
from pipeline.video.source_group import SourceGroup
from pipeline.video.stages import Detected, DetectStage, RecogniseStage
from pipeline.video.track_log import TrackLog

log = logging.getLogger(__name__)

END = None  # end-of-stream marker passed down the stage queues
JOIN_POLL_S = 0.2




class Runner:
    """Wires the stages with threads and bounded queues; `run()` blocks until the sources end or `stop()`."""

    def __init__(self, group: SourceGroup, detect: DetectStage, recognise: RecogniseStage, output: VideoOutput,
                 metrics: StageMetrics, stage_queue: int = 2, batch_wait_s: float = 0.05,
                 max_frames: int | None = None, tracks: TrackLog | None = None,
                 snapshots: SnapshotPublisher | None = None):
        self.group = group
        self.detect = detect
        self.recognise = recognise
        self.output = output
        self.tracks = tracks  # the --tracks log, written beside the video from the same records
        self.snapshots = snapshots  # the console's live frames and camera health (never blocks this thread)
        self.metrics = metrics
        self.batch_wait_s = float(batch_wait_s)
        self.max_frames = max_frames
        self.stopping = threading.Event()
        self.interrupted = False
        self._detected: queue.Queue = queue.Queue(stage_queue)
        self._annotated: queue.Queue = queue.Queue(stage_queue)
        self._errors: list[BaseException] = []
        self._frames_in = 0

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
                closed = tuple(self.group.take_closed())
                for camera in closed:
                    self.detect.forget(camera)
                if not frames:
                    if closed:  # a camera's tracks end even when no other camera has a frame
                        self._put(self._detected, Detected((), (), (), closed))
                    if self.group.finished:
                        break
                    continue
                received = self._capture_times(frames)
                self._frames_in += len(frames)
                self.metrics.count("frames_in", len(frames))
                detected = self.detect.process(frames, received)
                self._put(self._detected, replace(detected, closed=closed) if closed else detected)
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
                    if self.tracks is not None:
                        self.tracks.write(item)
                    if self.snapshots is not None:
                        self.snapshots.offer(frame.camera, frame.image, item.labels, frame.index)
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
        live = {s.camera for s in self.group.sources if s.kind != "file"}  # a worker's cameras come and go
        return [now - max(0.0, wall - f.timestamp) if f.camera in live else now for f in frames]

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
