"""What a gallery is bound to: template dtype and dim, model fingerprint, server index, as its `meta` hash says.

The first write fixes them; later writes and every opening are checked against them, so one gallery never mixes
two models, two dims or two encodings. An empty `meta` is a gallery never written (or cleared).
"""

from __future__ import annotations

from pipeline.core.errors import GalleryError

FORMAT_VERSION = "1"


def check_model(meta: dict[str, str], gallery: str, fingerprint: str) -> None:
    """GalleryError if the gallery holds templates of another model than `fingerprint` (the embedder's)."""
    bound = meta.get("fingerprint")
    if bound and bound != fingerprint:
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}, but the embedder is model "
                           f"{fingerprint}: use the gallery's model (--model) or re-enrol into another gallery")


def bind(meta: dict[str, str], gallery: str, dtype: str, server_index: bool, dim: int,
         fingerprint: str) -> tuple[dict, bool]:
    """(meta fields to write, whether to keep the vector set) for a write of `dim`-d templates of `fingerprint`
    by a store opened with `dtype`/`server_index`; GalleryError naming the mismatch if the gallery is bound
    otherwise."""
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise GalleryError(f"model fingerprint must be a non-empty string, got {fingerprint!r}")
    if not meta.get("dtype"):
        return {"format": FORMAT_VERSION, "dtype": dtype, "dim": dim, "fingerprint": fingerprint,
                "server_index": int(server_index)}, bool(server_index)
    if meta["dtype"] != dtype:
        raise GalleryError(f"gallery {gallery!r} stores {meta['dtype']} templates; this store was opened "
                           f"with dtype={dtype!r}")
    if int(meta["dim"]) != dim:
        raise GalleryError(f"gallery {gallery!r} holds {meta['dim']}-d templates; refusing {dim}-d ones")
    indexed = meta.get("server_index") == "1"
    if server_index and not indexed:
        raise GalleryError(f"gallery {gallery!r} was created without a server index; export it and "
                           "import it into a new gallery opened with server_index=True")
    bound = meta.get("fingerprint")
    if bound and bound != fingerprint:
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}; refusing templates of "
                           f"model {fingerprint} — re-enrol or use another gallery")
    return ({} if bound else {"fingerprint": fingerprint}), indexed
