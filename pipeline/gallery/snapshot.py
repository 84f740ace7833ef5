"""A gallery at one change number, as every reader holds it: one immutable matrix row per template.

Snapshots are shared between threads without locks: they are frozen dataclasses over read-only arrays, and a
change makes a new snapshot (`merged`) rather than editing one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np


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
    # Negative templates ("this face is not <name>"), decoded: (N, dim) float32, `negative_owner[row]` indexes
    # the identity lists. Few and only compared with the identity a face would be named, so never encoded.
    negatives: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    negative_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

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

    def negatives_of(self, identity_id: str) -> np.ndarray:
        """(n, dim) float32 negative templates of one identity (none if absent)."""
        try:
            index = self.identity_ids.index(identity_id)
        except ValueError:
            return self.negatives[:0]
        return self.negatives[self.negative_owner == index]

    def merged(self, fresh: Snapshot, touched: Iterable[str], stream_id: str, epoch: str) -> Snapshot:
        """A new snapshot: identities in `touched` replaced by their rows in `fresh` (or dropped if absent).

        Untouched rows keep their order, so a change that only adds identities appends rows and the
        old matrix stays a prefix of the new one (search indexes use that to add rows incrementally).
        """
        touched = set(touched)
        keep = [i for i, identity_id in enumerate(self.identity_ids) if identity_id not in touched]
        matrix, scales, owner = self.matrix, self.scales, self.owner
        negatives, negative_owner = self.negatives, self.negative_owner
        if len(keep) != len(self.identity_ids):
            new_index = np.full(len(self.identity_ids) + 1, -1, dtype=np.int32)
            new_index[keep] = np.arange(len(keep), dtype=np.int32)
            rows = new_index[self.owner] >= 0
            matrix, owner = self.matrix[rows], new_index[self.owner[rows]]
            scales = None if self.scales is None else self.scales[rows]
            kept = new_index[self.negative_owner] >= 0
            negatives, negative_owner = self.negatives[kept], new_index[self.negative_owner[kept]]
        ids = [self.identity_ids[i] for i in keep] + fresh.identity_ids
        names = [self.names[i] for i in keep] + fresh.names
        if len(fresh.matrix):
            matrix = np.concatenate([matrix, fresh.matrix]) if len(matrix) else fresh.matrix
            owner = np.concatenate([owner, fresh.owner + np.int32(len(keep))])
            if fresh.scales is not None:
                scales = np.concatenate([scales, fresh.scales]) if scales is not None else fresh.scales
        if len(fresh.negatives):
            negatives = np.concatenate([negatives, fresh.negatives]) if len(negatives) else fresh.negatives
            negative_owner = np.concatenate([negative_owner, fresh.negative_owner + np.int32(len(keep))])
        # `fresh` read the gallery's settings just now: a gallery first written after our snapshot (which
        # guessed them) gets its real dtype here. Changing them otherwise needs clear(), which re-snapshots.
        return freeze(replace(self, stream_id=stream_id, epoch=epoch, fingerprint=fresh.fingerprint,
                              dtype=fresh.dtype, identity_ids=ids, names=names, matrix=matrix, scales=scales,
                              owner=owner.astype(np.int32), negatives=negatives,
                              negative_owner=negative_owner.astype(np.int32)))


def freeze(snapshot: Snapshot) -> Snapshot:
    """Mark the arrays read-only: snapshots are shared between threads without locks."""
    for array in (snapshot.matrix, snapshot.scales, snapshot.owner, snapshot.negatives, snapshot.negative_owner):
        if array is not None and array.flags.writeable and array.flags.owndata:
            array.flags.writeable = False
    return snapshot
