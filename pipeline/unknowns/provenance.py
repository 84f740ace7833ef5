"""Which model embedded the faces of the unknown people, and the rules that keep two models apart.

A harmonic model's live run may match an older model's gallery (pipeline/gallery/binding.py), so the unknowns of
one gallery can hold faces of two models. Each sighting and cluster records its model (sightings.py); these checks
refuse, before anything is written, what would mix them: another model's faces becoming a gallery's templates or
negatives (naming, rejecting an event), joining or merging with another model's cluster (live clustering, an
operator's merge), or being compared with a face they cannot be compared with (search).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from pipeline.core.errors import GalleryError
from pipeline.gallery.binding import migrate_hint


def model_label(model: str | None) -> str:
    """A model fingerprint for a message; None: stored before models were, in a gallery bound to none."""
    return model if model else "(not recorded)"


def check_joinable(cluster_id: str, theirs: str | None, ours: str | None) -> None:
    """GalleryError unless faces of model `ours` may join cluster `cluster_id`, whose faces are of `theirs`."""
    if theirs != ours:
        raise GalleryError(f"unknown person {cluster_id} holds faces of model {model_label(theirs)}; refusing faces "
                           f"of model {model_label(ours)}: faces of two models are never clustered together")


def check_mergeable(survivor: str, models: dict[str, str | None]) -> None:
    """GalleryError unless the clusters of a merge into `survivor` (cluster id -> its model) are of one model."""
    if len(set(models.values())) > 1:
        each = ", ".join(f"{c} of model {model_label(m)}" for c, m in models.items())
        raise GalleryError(f"cannot merge into {survivor}: {each}; faces of two models are never clustered together")


def one_model(models: Iterable[str | None], what: str) -> str | None:
    """The one model of `what`'s faces; GalleryError if they are of several (a store never writes that)."""
    found = set(models)
    if len(found) > 1:
        raise GalleryError(f"{what} holds faces of models {', '.join(sorted(map(model_label, found)))}: faces of "
                           "two models are never enrolled together")
    return next(iter(found), None)


def check_nameable(cluster_id: str, model: str | None, gallery: str, bound: str | None) -> None:
    """GalleryError unless cluster `cluster_id`'s faces (of `model`) may become templates of `gallery` (bound to
    model `bound`, None: to none yet)."""
    if model is not None and bound is not None and model != bound:
        raise GalleryError(f"unknown person {cluster_id} was seen by model {model}, but gallery {gallery!r} holds "
                           f"templates of model {bound}: its faces cannot be named there (one gallery never mixes "
                           f"two models' templates). Re-embed the gallery for model {model} "
                           f"({migrate_hint(gallery)}) and run that model on the new gallery, or enrol the person "
                           f"from photos (enroll.py --gallery {gallery} add --name NAME PHOTO...)")


def check_rejectable(event_id: str, model: str | None, gallery: str, bound: str | None, name: str) -> None:
    """GalleryError unless the face behind event `event_id` (of `model`) may become a negative of `name`."""
    if model is not None and bound is not None and model != bound:
        raise GalleryError(f"the face behind event {event_id!r} was embedded by model {model}, but gallery "
                           f"{gallery!r} holds templates of model {bound}: it cannot become a negative of "
                           f"{name!r} there (one gallery never mixes two models' templates). Reject a photo of the "
                           f"face instead (enroll.py --gallery {gallery} reject --face PHOTO --not NAME), or "
                           f"re-embed the gallery for model {model} first ({migrate_hint(gallery)})")


def check_comparable(found: Iterable[str | None], comparable: Collection[str] | None, probe: str | None,
                     gallery: str) -> None:
    """GalleryError if a face of model `probe` would be compared with faces of a model outside `comparable` (its
    own and those its card is harmonic with; None: no check). `found`: the models of the faces to compare."""
    if comparable is None:
        return
    others = sorted({m for m in found if m is not None and m not in comparable})
    if others:
        raise GalleryError(f"the unknowns of gallery {gallery!r} hold faces of model {', '.join(others)}, which a "
                           f"face embedded by model {model_label(probe)} cannot be compared with: search with "
                           f"--model set to the card of that model, or of a model harmonic with it")
