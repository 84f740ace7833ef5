"""Template search: the top-k gallery templates for a batch of query embeddings, by cosine similarity.

Every backend answers `search(queries (M, dim) float32, k) -> Hits`: per query the k best template rows
(descending similarity) and the labels (owner row -> identity) those rows refer to. Backends, by name:

- `exact`: `queries @ matrix.T` over the mirror's current Snapshot, top-k by `np.argpartition`.
  int8 snapshots are decoded once into a float32 copy per snapshot (`decode="copy"`, +512 B/template):
  at 1M x 128 on 2 busy cores a query took 58 ms (p50) against the copy and 147 ms decoding 64k-row
  blocks on the fly (up to 1.2 s when the cores were contended), because NumPy's cast is a separate
  pass, not fused with the GEMM. `decode="blocks"` keeps the 128 B/template footprint; at sizes where
  that matters exact search is too slow per frame anyway and `ann` is the answer.
- `ann`: FAISS PQ fast-scan (flat `IndexPQFastScan`, 32 sub-quantizers x 4 bits = 16 B/template, or
  `IndexIVFPQFastScan` when `nlist > 0`) proposes `rerank` candidates, which are re-scored exactly from the
  snapshot's own rows, so reported similarities equal the exact ones. Built from a Snapshot; new rows
  appended to the mirror are added incrementally, any other change re-adds every row to the already
  trained index (training repeats only when the gallery has grown 8x since the last training). Below
  `exact_below` templates it searches exactly (the index is built on first need), so a large `exact_below` makes
  it "exact while small, approximate once large".
- `server`: Redis 8 vector sets (`VSIM key FP32 <blob> WITHSCORES COUNT k`) for galleries too large to
  mirror. VSIM reports (1 + cos) / 2; hits are converted back to cosine.

The matcher takes any `Search`; the mirror-backed ones read a `SnapshotSource` (a GalleryMirror) at every call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery.keys import GalleryKeys
from pipeline.gallery.snapshot import Snapshot
from pipeline.gallery.store import GalleryStore


@runtime_checkable
class SnapshotSource(Protocol):
    """Where a search reads the gallery: a GalleryMirror (the current snapshot at every call) or StaticSource."""

    def current(self) -> Snapshot: ...


@runtime_checkable
class Search(Protocol):
    """A search backend: per query the k best templates (`Hits`), best first."""

    def search(self, queries: np.ndarray, k: int) -> Hits: ...


@dataclass(frozen=True)
class ElementLabels:
    """Labels built per call by the server backend: one row per distinct element returned."""

    owner: np.ndarray
    identity_ids: list[str]
    names: list[str]


# What a hit's row means: `owner[row]` indexes `identity_ids` / `names`. A Snapshot also holds the rows
# themselves (the matcher can re-score an identity from all its templates); ElementLabels only the hits.
Labels = Snapshot | ElementLabels


@dataclass(frozen=True)
class Hits:
    """Per query the k best templates, best first; rows are -1 (similarity -inf) past the gallery's end."""

    rows: np.ndarray  # (M, k) int64 rows of `labels`
    similarities: np.ndarray  # (M, k) float32 cosine
    labels: Labels


@dataclass(frozen=True)
class StaticSource:
    """A fixed Snapshot posing as a mirror."""

    snapshot: Snapshot

    def current(self) -> Snapshot:
        return self.snapshot


_BACKENDS: dict[str, Callable[..., Search]] = {}


def register(name: str):
    def wrap(factory):
        _BACKENDS[name] = factory
        return factory
    return wrap


def available_searches() -> list[str]:
    return sorted(_BACKENDS)


def create_search(name: str, source: Any, **options) -> Search:
    """`create_search("exact", mirror)`; the `server` backend takes a Redis client as its source."""
    if name not in _BACKENDS:
        raise GalleryError(f"unknown gallery search {name!r}; available: {available_searches()}")
    return _BACKENDS[name](source, **options)


def as_source(source: SnapshotSource | Snapshot) -> SnapshotSource:
    """A mirror (a SnapshotSource) as is; a bare Snapshot wrapped in StaticSource."""
    if isinstance(source, Snapshot):
        return StaticSource(source)
    if isinstance(source, SnapshotSource):
        return source
    raise GalleryError(f"expected a GalleryMirror or a Snapshot, got {type(source).__name__}")


def check_queries(queries: Any, dim: int | None = None) -> np.ndarray:
    """Queries as a C-contiguous (M, dim) float32 array; GalleryError naming expected vs actual."""
    array = np.asarray(queries)
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        want = f"(M, {dim})" if dim is not None else "(M, dim)"
        raise GalleryError(f"queries must have shape {want}, got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise GalleryError(f"queries must be float32 embeddings, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist()
        raise GalleryError(f"queries must be finite; rows {bad[:10]} contain NaN or inf")
    return array


def top_k(similarities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and values of the k largest entries per row, best first, padded with (-1, -inf)."""
    m, n = similarities.shape
    rows = np.full((m, k), -1, dtype=np.int64)
    sims = np.full((m, k), -np.inf, dtype=np.float32)
    take = min(k, n)
    if take == 0:
        return rows, sims
    part = np.argpartition(-similarities, take - 1, axis=1)[:, :take] if take < n else \
        np.broadcast_to(np.arange(n), (m, n))
    values = np.take_along_axis(similarities, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    rows[:, :take] = np.take_along_axis(part, order, axis=1)
    sims[:, :take] = np.take_along_axis(values, order, axis=1)
    return rows, sims


def decode_rows(snapshot: Snapshot, rows: np.ndarray) -> np.ndarray:
    """float32 templates of `rows` (any shape) from a float32 or int8 snapshot."""
    block = snapshot.matrix[rows]
    if snapshot.dtype == "int8":
        return block.astype(np.float32) * snapshot.scales[rows][..., None]
    return block


def snapshot_dim(snapshot: Snapshot) -> int:
    return int(snapshot.matrix.shape[1])


def query_dim(snapshot: Snapshot) -> int | None:
    """The dim queries must have; None for a gallery never written, which has no dim until its first template."""
    return snapshot_dim(snapshot) or None


@register("exact")
class ExactSearch:
    """Brute-force cosine search over the mirror's current Snapshot (the NumPy GEMM is the oracle)."""

    def __init__(self, source: SnapshotSource | Snapshot, *, decode: str = "copy", block_rows: int = 65536):
        if decode not in ("copy", "blocks"):
            raise GalleryError(f"decode must be 'copy' or 'blocks', got {decode!r}")
        self.source = as_source(source)
        self.decode = decode
        self.block_rows = block_rows
        self._decoded: tuple[Snapshot, np.ndarray] | None = None  # (snapshot, float32 copy)
        self._lock = threading.Lock()

    def search(self, queries: np.ndarray, k: int) -> Hits:
        snapshot = self.source.current()
        queries = check_queries(queries, query_dim(snapshot))
        if len(snapshot.matrix) == 0:  # nobody enrolled (yet): every row of the hits is empty
            return Hits(*top_k(np.empty((len(queries), 0), np.float32), k), snapshot)
        rows, sims = top_k(self.similarities(snapshot, queries), k)
        return Hits(rows, sims, snapshot)

    def similarities(self, snapshot: Snapshot, queries: np.ndarray) -> np.ndarray:
        """(M, T) cosine similarities of every query with every template."""
        if snapshot.dtype != "int8":
            return queries @ snapshot.matrix.T
        if self.decode == "copy":
            return queries @ self._float_copy(snapshot).T
        out = np.empty((len(queries), len(snapshot.matrix)), dtype=np.float32)
        buffer = np.empty((self.block_rows, snapshot_dim(snapshot)), dtype=np.float32)
        for start in range(0, len(snapshot.matrix), self.block_rows):
            stop = min(start + self.block_rows, len(snapshot.matrix))
            block = buffer[: stop - start]
            np.copyto(block, snapshot.matrix[start:stop], casting="unsafe")
            np.matmul(queries, block.T, out=out[:, start:stop])
        out *= snapshot.scales
        return out

    def _float_copy(self, snapshot: Snapshot) -> np.ndarray:
        with self._lock:
            if self._decoded is None or self._decoded[0] is not snapshot:
                self._decoded = (snapshot, snapshot.matrix.astype(np.float32) * snapshot.scales[:, None])
            return self._decoded[1]


@register("ann")
class ApproximateSearch:
    """FAISS PQ fast-scan candidates, re-scored exactly from the snapshot; see the module docstring."""

    def __init__(self, source: SnapshotSource | Snapshot, *, m: int = 32, rerank: int = 16, nlist: int = 0,
                 nprobe: int = 256, exact_below: int = 4096, train_rows: int = 65536, seed: int = 0,
                 threads: int | None = 1):
        self.threads = threads
        self._faiss = None  # imported when an index is first built: under `auto` a small gallery never needs it
        self.source = as_source(source)
        self.m, self.rerank, self.nlist, self.nprobe = m, rerank, nlist, nprobe
        self.exact_below, self.train_rows, self.seed = exact_below, train_rows, seed
        self._exact = ExactSearch(self.source)
        self._index = None
        self._indexed: Snapshot | None = None  # the snapshot whose rows the index holds
        self._trained_on = 0
        self._lock = threading.Lock()

    def search(self, queries: np.ndarray, k: int) -> Hits:
        snapshot = self.source.current()
        if len(snapshot.matrix) < max(self.exact_below, k):
            return self._exact.search(queries, k)
        queries = check_queries(queries, snapshot_dim(snapshot))
        index = self.sync(snapshot)
        _, candidates = index.search(queries, max(self.rerank, k))
        safe = np.where(candidates < 0, 0, candidates)
        sims = np.einsum("mrd,md->mr", decode_rows(snapshot, safe), queries)
        sims[candidates < 0] = -np.inf
        local, best = top_k(sims, k)
        rows = np.where(local < 0, -1, np.take_along_axis(candidates, np.maximum(local, 0), axis=1))
        return Hits(rows.astype(np.int64), best, snapshot)

    def sync(self, snapshot: Snapshot):
        """The index holding exactly `snapshot`'s rows: appended rows added, otherwise re-added."""
        with self._lock:
            if self._indexed is snapshot:
                return self._index
            total = len(snapshot.matrix)
            if self._index is None or self._index.d != snapshot_dim(snapshot) or total > 8 * self._trained_on:
                self._index = self._trained(snapshot)
                start = 0
            elif self._appended(snapshot):
                start = self._index.ntotal
            else:
                self._index.reset()
                start = 0
            for first in range(start, total, 65536):
                self._index.add(decode_rows(snapshot, np.arange(first, min(first + 65536, total))))
            self._indexed = snapshot
            return self._index

    def _faiss_module(self):
        if self._faiss is None:
            try:
                import faiss
            except ImportError:
                raise GalleryError("the 'ann' gallery search needs FAISS: pip install faiss-cpu==1.15.1") from None
            if self.threads is not None:
                # FAISS's OpenMP pool is process-wide. One thread by default: a worker shares its cores with
                # the detector and embedder, and spinning OpenMP threads on a busy box made PQ training
                # 27x slower (14 s vs 0.5 s for 20k rows on 2 loaded cores) and batched search 1.7x slower.
                faiss.omp_set_num_threads(self.threads)
            self._faiss = faiss
        return self._faiss

    def _trained(self, snapshot: Snapshot):
        faiss, dim = self._faiss_module(), snapshot_dim(snapshot)
        if self.nlist > 0:
            index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, self.nlist, self.m, 4,
                                             faiss.METRIC_INNER_PRODUCT)
            index.nprobe = self.nprobe
        else:
            index = faiss.IndexPQFastScan(dim, self.m, 4, faiss.METRIC_INNER_PRODUCT)
        total = len(snapshot.matrix)
        sample = np.random.default_rng(self.seed).choice(total, min(total, self.train_rows), replace=False)
        index.train(decode_rows(snapshot, np.sort(sample)))
        self._trained_on = total
        return index

    def _appended(self, snapshot: Snapshot) -> bool:
        """Does `snapshot` start with every row the index holds (new enrolments only)?"""
        old = self._indexed
        n = len(old.matrix)
        if old.dtype != snapshot.dtype or len(snapshot.matrix) < n:
            return False
        if not np.array_equal(old.matrix, snapshot.matrix[:n]):
            return False
        return old.dtype != "int8" or np.array_equal(old.scales, snapshot.scales[:n])

    def memory_bytes(self) -> int:
        """Bytes the FAISS index holds (codes, ids, codebooks), measured by serialising it."""
        if self._index is None:
            return 0
        return int(self._faiss_module().serialize_index(self._index).nbytes)


@register("server")
class ServerSearch:
    """Server-side search with VSIM on the gallery's Redis 8 vector set (nothing mirrored locally).

    `resolve(elements) -> [(identity_id, name), ...]` maps vector-set elements to identities; the
    default asks the gallery store (`GalleryStore.resolve_elements`).
    """

    def __init__(self, client: Any, *, gallery: str = "default", key: str | None = None, ef: int | None = None,
                 resolve: Callable[[Sequence[bytes]], list[tuple[str, str]]] | None = None):
        self.client = client
        self.key = key or GalleryKeys(gallery).vset
        self.ef = ef
        self.resolve = resolve or GalleryStore(client, gallery).resolve_elements

    @classmethod
    def of_store(cls, store: GalleryStore, *, ef: int | None = None) -> ServerSearch:
        """Search the vector set of `store`'s gallery; GalleryError if the gallery was created without one
        (VSIM would find nothing, and every face would be unknown without a word)."""
        meta = store.meta()
        if meta.get("dtype") and meta.get("server_index") != "1":
            raise GalleryError(f"gallery {store.gallery!r} was created without a server index (vector set), so "
                               "server search has nothing to search: search the mirror instead (exact or ann), or "
                               "enrol into a gallery created with a server index")
        return cls(store.client, gallery=store.gallery, key=store.keys.vset, ef=ef, resolve=store.resolve_elements)

    def search(self, queries: np.ndarray, k: int) -> Hits:
        queries = check_queries(queries)
        pipe = self.client.pipeline(transaction=False)
        for query in queries:
            args = ["VSIM", self.key, "FP32", query.astype("<f4").tobytes(), "WITHSCORES", "COUNT", k]
            pipe.execute_command(*(args + (["EF", self.ef] if self.ef else [])))
        try:
            replies = pipe.execute()
        except Exception as exc:  # redis errors: name the key, keep the server's words
            raise GalleryError(f"VSIM on {self.key} failed: {exc}") from None
        return self._hits([_pairs(reply) for reply in replies], k)

    def _hits(self, replies: list[list[tuple[bytes, float]]], k: int) -> Hits:
        elements: dict[bytes, int] = {}
        for reply in replies:
            for element, _ in reply:
                elements.setdefault(element, len(elements))
        resolved = self.resolve(list(elements)) if elements else []
        identities: dict[str, int] = {}
        names: list[str] = []
        owner = np.empty(len(resolved), dtype=np.int32)
        for row, (identity_id, name) in enumerate(resolved):
            if identity_id not in identities:
                identities[identity_id] = len(identities)
                names.append(name)
            owner[row] = identities[identity_id]
        rows = np.full((len(replies), k), -1, dtype=np.int64)
        sims = np.full((len(replies), k), -np.inf, dtype=np.float32)
        for i, reply in enumerate(replies):
            for j, (element, score) in enumerate(reply[:k]):
                rows[i, j], sims[i, j] = elements[element], 2.0 * score - 1.0  # (1 + cos) / 2 -> cos
        return Hits(rows, sims, ElementLabels(owner, list(identities), names))


def _pairs(reply: Any) -> list[tuple[bytes, float]]:
    """VSIM WITHSCORES as [(element, score)]: redis-py gives a dict (RESP2 callback) or a flat list."""
    if reply is None:
        return []
    if isinstance(reply, dict):
        return [(element, float(score)) for element, score in reply.items()]
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]

