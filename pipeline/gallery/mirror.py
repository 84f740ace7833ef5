"""A worker's exact in-memory copy of a gallery, kept current from the gallery's change stream.

`GalleryMirror(store).start()` takes a snapshot (the stream's last change number first, then every
identity), replays the changes made meanwhile, then a daemon thread tails the stream with XREAD BLOCK.
A change names the identities it touched; the mirror re-fetches them (never applies deltas, so replaying
a change twice is harmless) and swaps in a new immutable `Snapshot` built copy-on-write: rows of
untouched identities are kept, touched ones dropped and re-appended. All changes that arrive together
go into one swap.

If Redis goes away the mirror keeps serving its last snapshot (`healthy` False, `last_error` set), retries
with exponential backoff (capped at MAX_BACKOFF_S), asks the store to reconnect, and resumes after its
last change. A gap in the change numbers (the stream was trimmed past us, or the gallery was cleared or
re-created) makes it re-snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pipeline.core.errors import GalleryError
from pipeline.gallery.changes import Change
from pipeline.gallery.snapshot import Snapshot
from pipeline.gallery.store import GalleryStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 2.0
FIRST_BACKOFF_S = 0.05
# Changes read per XREAD; everything read together becomes one snapshot swap.
READ_COUNT = 1000
# A catch-up larger than this many identities is cheaper as a fresh snapshot than as re-fetches.
RESNAPSHOT_IDENTITIES = 50_000


class GalleryMirror:
    """One per worker process: `with GalleryMirror(store) as mirror: mirror.current()`."""

    def __init__(self, store: GalleryStore, poll_ms: int = 200):
        self.store = store
        self.poll_ms = int(poll_ms)
        self.version = 0
        self.healthy = False
        self.last_error: str | None = None
        self._snapshot: Snapshot | None = None
        self._synced_at = 0.0
        self._stop = threading.Event()
        self._swapped = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- public ---------------------------------------------------------------------------------
    def start(self) -> GalleryMirror:
        """Snapshot now (GalleryError if Redis cannot be read), then tail the stream in a daemon thread."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._publish(self._resnapshot())
        self.healthy = True
        self._thread = threading.Thread(target=self._run, name=f"gallery-mirror-{self.store.gallery}",
                                        daemon=True)
        self._thread.start()
        return self

    def current(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise GalleryError("the gallery mirror is not started; call start() first")
        return snapshot

    @property
    def lag_s(self) -> float:
        """Seconds since the mirror last confirmed it had every change (grows while Redis is away)."""
        return 0.0 if self._synced_at == 0.0 else max(0.0, time.monotonic() - self._synced_at)

    def wait_for(self, predicate: Callable[[Snapshot], bool], timeout: float) -> bool:
        """True as soon as `current()` satisfies `predicate`; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._swapped:
            while not predicate(self.current()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._swapped.wait(min(left, 0.05))
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> GalleryMirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- tailing --------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        resync = False
        while not self._stop.is_set():
            try:
                if resync:
                    self._publish(self._resnapshot())
                    resync = False
                resync = not self._step()
                if not self.healthy:
                    log.info("gallery %r mirror reconnected at change %s", self.store.gallery,
                             self.current().stream_id)
                self.healthy, self.last_error, backoff = True, None, FIRST_BACKOFF_S
            except Exception as exc:  # noqa: BLE001 - the mirror must outlive any failure; it keeps serving
                if self.healthy:
                    log.warning("gallery %r mirror lost Redis (%s); serving change %s until it is back",
                                self.store.gallery, exc, self.current().stream_id)
                self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                self._reconnect()

    def _step(self) -> bool:
        """Read and apply the next changes; False when the mirror must re-snapshot."""
        snapshot = self.current()
        changes = self.store.changes(snapshot.stream_id, block_ms=self.poll_ms, count=READ_COUNT)
        if not changes:
            # Nothing after our change: fine unless the gallery went back in time (FLUSHALL, DEL) or was
            # re-created; a head that moved ahead meanwhile is simply read by the next XREAD.
            seq, epoch = self.store.head()
            self._synced_at = time.monotonic()
            return seq >= snapshot.seq and (not snapshot.epoch or epoch == snapshot.epoch)
        ok = self._apply(snapshot, changes)
        self._synced_at = time.monotonic()
        return ok

    def _apply(self, snapshot: Snapshot, changes: list[Change]) -> bool:
        expected = snapshot.seq
        touched: dict[str, None] = {}
        for change in changes:
            # Numbers are consecutive within one epoch: anything else means changes we will never see.
            if change.seq != expected + 1 or (snapshot.epoch and change.epoch != snapshot.epoch):
                log.info("gallery %r mirror at change %d saw change %d (%s); re-snapshotting",
                         self.store.gallery, expected, change.seq, change.op)
                return False
            if change.op == "clear" or len(touched) > RESNAPSHOT_IDENTITIES:
                return False
            touched.update(dict.fromkeys(change.identity_ids))
            expected = change.seq
        fresh = self.store.fetch(list(touched))
        self._publish(snapshot.merged(fresh, touched, changes[-1].stream_id, changes[-1].epoch))
        return True

    def _resnapshot(self) -> Snapshot:
        """A snapshot plus every change made while it was read."""
        snapshot = self.store.snapshot()
        while True:
            changes = self.store.changes(snapshot.stream_id, block_ms=None, count=READ_COUNT)
            if not changes:
                self._synced_at = time.monotonic()
                return snapshot
            seqs = [change.seq for change in changes]
            if (seqs != list(range(snapshot.seq + 1, snapshot.seq + 1 + len(seqs)))
                    or any(c.op == "clear" or (snapshot.epoch and c.epoch != snapshot.epoch) for c in changes)):
                snapshot = self.store.snapshot()  # trimmed, cleared or re-created while we read: start over
                continue
            touched = dict.fromkeys(i for change in changes for i in change.identity_ids)
            snapshot = snapshot.merged(self.store.fetch(list(touched)), touched, changes[-1].stream_id,
                                       changes[-1].epoch)

    def _publish(self, snapshot: Snapshot) -> None:
        with self._swapped:
            self._snapshot = snapshot  # one reference assignment: readers see the old or the new one
            self.version += 1
            self._swapped.notify_all()

    def _reconnect(self) -> None:
        try:
            self.store.reconnect()
        except Exception as exc:  # noqa: BLE001 - the next attempt reports the failure
            log.debug("gallery %r reconnect failed: %s", self.store.gallery, exc)
