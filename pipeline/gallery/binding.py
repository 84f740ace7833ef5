"""What a gallery is bound to: template dtype and dim, model fingerprint, server index, as its `meta` hash says.

The first write fixes them; later writes and every opening are checked against them, so one gallery never mixes
two models, two dims or two encodings. An empty `meta` is a gallery never written (or cleared).

Matching and writing differ for a harmonic model (one whose card lists the gallery's model in `harmonic_with`):
its probes may be compared with the older model's templates, so `check_model` lets it open the gallery to
match, but `bind` still refuses its templates — a gallery holding two models' templates could never be told
apart again, nor migrated. `enroll.py migrate` re-embeds a gallery for the new model instead.
"""

from __future__ import annotations

from collections.abc import Collection

from pipeline.core.errors import GalleryError

FORMAT_VERSION = "1"


def check_model(meta: dict[str, str], gallery: str, fingerprint: str, harmonic_with: Collection[str] = ()) -> None:
    """GalleryError unless the gallery is unbound or holds templates of `fingerprint` (the embedder's model) or
    of a model in `harmonic_with` (the older models the embedder's card says it can be compared with)."""
    bound = meta.get("fingerprint")
    if bound and bound != fingerprint and bound not in harmonic_with:
        harmonic = f" (harmonic with {', '.join(sorted(harmonic_with))} only)" if harmonic_with else ""
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}, but the embedder is model "
                           f"{fingerprint}{harmonic}: use the gallery's model (--model), or re-embed the gallery "
                           f"for the new model: {migrate_hint(gallery)}")


def migrate_hint(gallery: str) -> str:
    return f"enroll.py --gallery {gallery} migrate --model NEW_CARD.json"


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
        # Even from a model harmonic with `bound`: see the module notes.
        raise GalleryError(f"gallery {gallery!r} holds templates of model {bound}; refusing templates of "
                           f"model {fingerprint} (one gallery never mixes two models' templates, harmonic or "
                           f"not): enrol into another gallery, or first re-embed this one for model "
                           f"{fingerprint} and enrol there: {migrate_hint(gallery)}")
    return ({} if bound else {"fingerprint": fingerprint}), indexed
