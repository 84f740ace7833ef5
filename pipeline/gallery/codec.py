"""Template encoding: float32 (4·dim bytes) or int8 codes + one float32 scale (dim + 4 bytes).

int8 is symmetric per template: scale = max|x| / 127, code = round(x / scale), so x ≈ code · scale with
an error of at most scale / 2 per component; for 128-d that is the paper's 128-byte operating point
(+4 bytes of scale). Bytes are little-endian so a gallery moves between machines unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipeline.core.errors import GalleryError

Dtype = Literal["float32", "int8"]
DTYPES = ("float32", "int8")
# Wide enough for templates decoded from int8 (their norms move by ~1e-3), narrow enough to catch
# vectors from the wrong place: unnormalised embeddings have norms like 1.4 or 20.
UNIT_TOLERANCE = 1e-2
_F4 = np.dtype("<f4")


def check_dtype(dtype: str) -> Dtype:
    if dtype not in DTYPES:
        raise GalleryError(f"template dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype  # type: ignore[return-value]


def record_size(dtype: Dtype, dim: int) -> int:
    """Bytes per encoded template."""
    return 4 * dim if dtype == "float32" else dim + 4


def check_embeddings(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    """(n, dim) float32 unit rows, or GalleryError naming the first problem (shape, NaN/inf, norm)."""
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise GalleryError(f"embeddings must have shape (n, dim) with n, dim >= 1, got {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise GalleryError(f"embeddings must have shape (n, {dim}) to match the gallery, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise GalleryError(f"embeddings must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise GalleryError(f"embeddings contain NaN or inf in {len(rows)} row(s), first row {rows[0]}")
    norms = np.linalg.norm(array, axis=1)
    off = np.abs(norms - 1.0) > UNIT_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise GalleryError(f"embeddings must be unit length (cosine gallery); row {row} has norm {norms[row]:.4f} "
                           f"({int(off.sum())} row(s) off by more than {UNIT_TOLERANCE}): they do not come "
                           "from the embedder's normalised output")
    return array


def quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 (n, dim), scales float32 (n,)) of float32 rows."""
    peak = np.abs(rows).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return codes, scales


def encode(rows: np.ndarray, dtype: Dtype) -> list[bytes]:
    """One bytes value per row of checked float32 `rows`."""
    if dtype == "float32":
        packed = np.ascontiguousarray(rows, dtype=_F4)
    else:
        codes, scales = quantize(rows)
        packed = np.concatenate([codes.view(np.uint8), scales.astype(_F4)[:, None].view(np.uint8)], axis=1)
    width = packed.shape[1] * packed.itemsize
    flat = packed.tobytes()
    return [flat[i:i + width] for i in range(0, len(flat), width)]


def decode(blobs: list[bytes], dtype: Dtype, dim: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(matrix, scales): float32 (n, dim) and None, or int8 codes (n, dim) and float32 scales (n,)."""
    size = record_size(dtype, dim)
    bad = [len(b) for b in blobs if len(b) != size]
    if bad:
        raise GalleryError(f"stored template has {bad[0]} bytes; a {dtype} template of dim {dim} has {size}")
    raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), size)
    if dtype == "float32":
        return raw.view(_F4).astype(np.float32), None
    codes = raw[:, :dim].view(np.int8).copy()
    scales = raw[:, dim:].copy().view(_F4).reshape(len(blobs)).astype(np.float32)
    return codes, scales


def to_float(matrix: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """float32 rows from either encoding."""
    if scales is None:
        return np.asarray(matrix, dtype=np.float32)
    return matrix.astype(np.float32) * scales[:, None]
