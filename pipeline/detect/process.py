"""MTCNN in a process of its own: `DetectorProcess(**mtcnn_settings)` is a `Detector` whose `detect` runs there;
`DetectorPool(n, **mtcnn_settings)` shares each call's frames out over n of them.

Why: in the streaming process the detector's Python glue (pyramid, NMS, crops) competes for the GIL with the
tracker, the matcher and the camera readers; its wall time there was ~1.6x its CPU time. A process of its own
runs it on its own core with no GIL to share, while the caller's thread waits on a pipe (which releases it).

How: frames are copied into one shared-memory block (grown when a batch does not fit), their layout and the
call's sizes (a camera's `variant`) go over a socket pair, and the faces come back as small arrays. The child
is a fresh interpreter (`python -m pipeline.detect.process FD`, not a fork: forking a process that holds
ONNX Runtime sessions and threads is unsafe, and multiprocessing's "spawn" would re-run the caller's main
script), builds its MTCNN once, and exits when the connection closes, so it never outlives its parent by more
than a read. A child that dies or fails raises `EngineError` naming why; nothing falls back to in-process.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces
from pipeline.detect.mtcnn import MTCNN, check_sizes, validate_image

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # the child exports/loads the nets before it answers (an export can take a minute)
INITIAL_BYTES = 32 << 20  # four 1080p frames; grown to fit a bigger batch


class DetectorProcess:
    """`detect(frames)` -> one `Faces` per frame, computed by an MTCNN(**settings) in a child process."""

    def __init__(self, **settings: Any) -> None:
        check_sizes(settings.get("min_face_size", 20), settings.get("max_side"), settings.get("max_face_size"))
        self.min_face_size = float(settings.get("min_face_size", 20))
        self.max_side = settings.get("max_side")
        self.max_face_size = settings.get("max_face_size")
        self._lock = threading.Lock()
        self._memory = shared_memory.SharedMemory(create=True, size=INITIAL_BYTES)
        self._child: subprocess.Popen | None = None
        self._closed = False
        try:
            self._conn = self._start(settings)
            self._expect("ready", START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def _start(self, settings: dict) -> Connection:
        """The child, connected over one end of a socket pair that only it inherits."""
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._child = subprocess.Popen([sys.executable, "-m", "pipeline.detect.process", str(theirs.fileno())],
                                           pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            conn = Connection(os.dup(ours.fileno()))
        conn.send(settings)
        return conn

    def variant(self, *, min_face_size: float | None = None, max_side: int | None = None) -> _Variant:
        """The same child at a camera's own sizes (MTCNN.variant's contract)."""
        return _Variant(self, self.min_face_size if min_face_size is None else float(min_face_size),
                        self.max_side if max_side is None else int(max_side), self.max_face_size)

    def detect_one(self, image: np.ndarray) -> Faces:
        return self.detect([image])[0]

    def cpu_s(self) -> float:
        """The child's user + system CPU seconds so far (what a benchmark adds to its own process's)."""
        if self._child is None or self._child.poll() is not None:
            return 0.0
        with open(f"/proc/{self._child.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]:
        return self._detect(images, self.min_face_size, self.max_side)

    def close(self) -> None:
        """Stop the child (it exits when asked, or when the connection closes) and free the shared block."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn = getattr(self, "_conn", None)
            if conn is not None:
                try:
                    conn.send(("close",))
                except OSError:
                    pass
                conn.close()
            if self._child is not None:
                try:
                    self._child.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    self._child.kill()
                    self._child.wait()
            self._memory.close()
            self._memory.unlink()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the child exits on its own when the pipe closes
            pass

    # -- one call --------------------------------------------------------------------------------------
    def _detect(self, images: Sequence[np.ndarray], min_face: float, max_side: int | None) -> list[Faces]:
        if isinstance(images, np.ndarray):
            raise EngineError("detect takes a list of frames; use detect_one for a single (H, W, 3) image")
        frames = [validate_image(image, i) for i, image in enumerate(images)]
        if not frames:
            return []
        with self._lock:
            self._send(frames, min_face, max_side)
            return self._receive()

    def _send(self, frames: list[np.ndarray], min_face: float, max_side: int | None) -> None:
        """Hand `frames` (validated) to the child; the caller holds `_lock` until `_receive`."""
        if self._closed:
            raise EngineError("the detector process is closed")
        layout = self._copy_in(frames)
        try:
            self._conn.send(("detect", self._memory.name, layout, min_face, max_side))
        except OSError:
            raise self._died() from None

    def _receive(self) -> list[Faces]:
        return [Faces(xyxy, landmarks, score) for xyxy, landmarks, score in self._expect("faces", None)]

    def _copy_in(self, frames: list[np.ndarray]) -> list[tuple[int, tuple[int, ...]]]:
        need = sum(frame.nbytes for frame in frames)
        if need > self._memory.size:
            old = self._memory
            self._memory = shared_memory.SharedMemory(create=True, size=max(need, 2 * old.size))
            old.close()
            old.unlink()
        layout, offset = [], 0
        for frame in frames:
            np.ndarray(frame.shape, np.uint8, self._memory.buf, offset)[...] = frame
            layout.append((offset, frame.shape))
            offset += frame.nbytes
        return layout

    def _expect(self, kind: str, timeout: float | None) -> Any:
        try:
            if timeout is not None and not self._conn.poll(timeout):
                raise EngineError(f"the detector process did not start within {timeout:.0f} s")
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if reply[0] == "error":
            raise EngineError(f"detector process: {reply[1]}")
        if reply[0] != kind:
            raise EngineError(f"detector process: expected {kind!r}, got {reply[0]!r}")
        return reply[1]


    def _died(self) -> EngineError:
        try:
            code = self._child.wait(timeout=5.0) if self._child is not None else None
        except subprocess.TimeoutExpired:  # alive but cut off: the connection broke
            code = None
        return EngineError(f"the detector process died (exit code {code})")


class DetectorPool:
    """`processes` children; the frames of one `detect` call are shared out by pixels and detected at once (a
    batch of several cameras' frames on several cores), the faces returned in the frames' order."""

    def __init__(self, processes: int, **settings: Any) -> None:
        if processes < 1:
            raise EngineError(f"a detector pool needs at least 1 process, got {processes}")
        self.children: list[DetectorProcess] = []
        try:
            for _ in range(processes):
                self.children.append(DetectorProcess(**settings))
        except BaseException:
            self.close()
            raise
        first = self.children[0]
        self.min_face_size, self.max_side, self.max_face_size = first.min_face_size, first.max_side, first.max_face_size

    def variant(self, *, min_face_size: float | None = None, max_side: int | None = None) -> _Variant:
        return _Variant(self, self.min_face_size if min_face_size is None else float(min_face_size),
                        self.max_side if max_side is None else int(max_side), self.max_face_size)

    def detect_one(self, image: np.ndarray) -> Faces:
        return self.detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]:
        return self._detect(images, self.min_face_size, self.max_side)

    def cpu_s(self) -> float:
        return sum(child.cpu_s() for child in self.children)

    def close(self) -> None:
        for child in self.children:
            child.close()

    def _detect(self, images: Sequence[np.ndarray], min_face: float, max_side: int | None) -> list[Faces]:
        if isinstance(images, np.ndarray):
            raise EngineError("detect takes a list of frames; use detect_one for a single (H, W, 3) image")
        frames = [validate_image(image, i) for i, image in enumerate(images)]
        shares = share_out([f.shape[0] * f.shape[1] for f in frames], len(self.children))
        busy = [(child, ks) for child, ks in zip(self.children, shares, strict=True) if ks]
        found: list[Faces | None] = [None] * len(frames)
        for child, _ in busy:
            child._lock.acquire()
        try:
            for child, ks in busy:
                child._send([frames[k] for k in ks], min_face, max_side)
            for child, ks in busy:  # the children detect at once; collected in turn
                for k, faces in zip(ks, child._receive(), strict=True):
                    found[k] = faces
        finally:
            for child, _ in busy:
                child._lock.release()
        return found


def share_out(pixels: list[int], workers: int) -> list[list[int]]:
    """Frame indices per worker, largest frames first to the least loaded (greedy), each list in order."""
    loads, shares = [0] * workers, [[] for _ in range(workers)]
    for k in sorted(range(len(pixels)), key=lambda k: -pixels[k]):
        least = loads.index(min(loads))
        shares[least].append(k)
        loads[least] += pixels[k]
    return [sorted(share) for share in shares]


class _Variant:
    """A camera's sizes over the shared child or pool (what `variant` returns)."""

    def __init__(self, parent: DetectorProcess | DetectorPool, min_face_size: float, max_side: int | None,
                 max_face_size: float | None) -> None:
        check_sizes(min_face_size, max_side, max_face_size)
        self.parent, self.min_face_size, self.max_side = parent, min_face_size, max_side

    def detect(self, images: Sequence[np.ndarray]) -> list[Faces]:
        return self.parent._detect(images, self.min_face_size, self.max_side)

    def detect_one(self, image: np.ndarray) -> Faces:
        return self.detect([image])[0]


def _serve(conn) -> None:
    """The child: build the MTCNN, then answer detect requests until the connection closes."""
    try:
        settings = conn.recv()
        import cv2

        cv2.setNumThreads(1)  # one core's worth: the parent's threads have the other
        detector = MTCNN(**settings)
    except Exception as exc:
        conn.send(("error", f"could not build MTCNN: {exc}"))
        return
    conn.send(("ready", None))
    memory: shared_memory.SharedMemory | None = None
    variants: dict[tuple[float, int | None], MTCNN] = {}
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return  # the parent went away
            if request[0] == "close":
                return
            _, name, layout, min_face, max_side = request
            if memory is None or memory.name != name:
                if memory is not None:
                    memory.close()
                memory = _attach(name)
            sizes = (min_face, max_side)
            if sizes not in variants:
                variants[sizes] = detector.variant(min_face_size=min_face, max_side=max_side)
            frames = [np.ndarray(shape, np.uint8, memory.buf, offset) for offset, shape in layout]
            try:
                found = variants[sizes].detect(frames)
                conn.send(("faces", [(f.xyxy, f.landmarks, f.score) for f in found]))
            except Exception as exc:  # reported to the caller, who raises it: the child serves on
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            del frames
    finally:
        if memory is not None:
            memory.close()


def _attach(name: str) -> shared_memory.SharedMemory:
    memory = shared_memory.SharedMemory(name=name)
    # Python < 3.13 registers an attached block with the resource tracker too, which would unlink the
    # parent's block when this process exits; the parent owns it.
    resource_tracker.unregister(memory._name, "shared_memory")
    return memory


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
