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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from pipeline.core.errors import GalleryError

if TYPE_CHECKING:
    from pipeline.gallery.store import Change, GalleryStore

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 2.0
FIRST_BACKOFF_S = 0.05
# Changes read per XREAD; everything read together becomes one snapshot swap.
READ_COUNT = 1000
# A catch-up larger than this many identities is cheaper as a fresh snapshot than as re-fetches.
RESNAPSHOT_IDENTITIES = 50_000


@dataclass(frozen=True)
class Snapshot:
    """The gallery at one change number: one row per template, `owner[row]` indexes the identity lists."""

    stream_id: str  # last change included, `<seq>-0`; "0-0" before any change
    fingerprint: str | None
    dtype: str  # "float32": matrix holds unit rows; "int8": codes, row ≈ codes * scales[row]
    identity_ids: list[str]
    names: list[str]
    matrix: np.ndarray  # (T, dim) float32 or int8
    scales: np.ndarray | None  # (T,) float32 for int8, else None
    owner: np.ndarray  # (T,) int32
    epoch: str = ""  # the gallery incarnation the change numbers belong to

    @property
    def seq(self) -> int:
        return int(self.stream_id.split("-")[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.identity_ids)

    def rows_of(self, identity_id: str) -> np.ndarray:
        """Row numbers of one identity's templates (empty if absent)."""
        try:
            index = self.identity_ids.index(identity_id)
        except ValueError:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.owner == index)

    def merged(self, fresh: Snapshot, touched: Iterable[str], stream_id: str, epoch: str) -> Snapshot:
        """A new snapshot: identities in `touched` replaced by their rows in `fresh` (or dropped if absent).

        Untouched rows keep their order, so a change that only adds identities appends rows and the
        old matrix stays a prefix of the new one (search indexes use that to add rows incrementally).
        """
        touched = set(touched)
        keep = [i for i, identity_id in enumerate(self.identity_ids) if identity_id not in touched]
        if len(keep) == len(self.identity_ids):
            matrix, scales, owner = self.matrix, self.scales, self.owner
        else:
            new_index = np.full(len(self.identity_ids) + 1, -1, dtype=np.int32)
            new_index[keep] = np.arange(len(keep), dtype=np.int32)
            rows = new_index[self.owner] >= 0
            matrix, owner = self.matrix[rows], new_index[self.owner[rows]]
            scales = None if self.scales is None else self.scales[rows]
        ids = [self.identity_ids[i] for i in keep] + fresh.identity_ids
        names = [self.names[i] for i in keep] + fresh.names
        if len(fresh.matrix):
            matrix = np.concatenate([matrix, fresh.matrix]) if len(matrix) else fresh.matrix
            owner = np.concatenate([owner, fresh.owner + np.int32(len(keep))])
            if fresh.scales is not None:
                scales = np.concatenate([scales, fresh.scales]) if scales is not None else fresh.scales
        # `fresh` read the gallery's settings just now: a gallery first written after our snapshot (which
        # guessed them) gets its real dtype here. Changing them otherwise needs clear(), which re-snapshots.
        return freeze(replace(self, stream_id=stream_id, epoch=epoch, fingerprint=fresh.fingerprint,
                              dtype=fresh.dtype, identity_ids=ids, names=names, matrix=matrix, scales=scales,
                              owner=owner.astype(np.int32)))


def freeze(snapshot: Snapshot) -> Snapshot:
    """Mark the arrays read-only: snapshots are shared between threads without locks."""
    for array in (snapshot.matrix, snapshot.scales, snapshot.owner):
        if array is not None and array.flags.writeable and array.flags.owndata:
            array.flags.writeable = False
    return snapshot


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
