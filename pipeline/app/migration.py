"""Re-embedding a gallery for a new model (`enroll.py migrate`): every person's templates, embedded again by the
new model from their stored aligned enrolment crops, into another gallery bound to the new model. The source
gallery is only read.

What a gallery keeps of a person, and what becomes of it:
- name, creation time, metadata: carried as they are;
- a template with its aligned crop (`crops:<id>`, keys.py) at the new card's input size, aligned to the same
  5-point template as the new card's: re-embedded by the new model under the same template id, its crop beside it;
- a template without such a crop (enrolled before crops were kept, or named from an unknown person's small
  sighting crop) cannot be re-embedded honestly, so the person "needs new photos" and is not written at all: a
  person with fewer templates than were enrolled would match less well without anyone knowing;
- self-enrolled (`auto-`) templates keep no crop: not carried, counted (the new gallery re-learns them live);
- negative templates keep no crop either: not carried, counted per person (reject those faces again);
- unknown people (sightings, clusters) are the old model's embeddings: not carried, counted.

Each person is one store write (all of its new templates, crops and record at once), so a killed run leaves
every person migrated or absent; run again, a person whose every carried template id is already in the target
is "already" and skipped. `dry_run` reads and checks everything and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.app.cli_output import plural
from pipeline.core.errors import ConfigError, GalleryError, SourceError
from pipeline.core.images import decode_image
from pipeline.core.model_card import ModelCard, load_card
from pipeline.core.protocols import Embedder
from pipeline.gallery import GalleryStore, Identity
from pipeline.gallery.identity import is_auto
from pipeline.gallery.keys import validate_gallery
from pipeline.unknowns.sightings import UnknownStore

log = logging.getLogger(__name__)

MIGRATED = "migrated"
ALREADY = "already"
NEED_NEW_PHOTOS = "need new photos"
REMOVED = "removed"  # from the source while the migration ran
TEMPLATE_ATOL_PX = 0.01  # two cards' alignment templates are the same one within this (they are JSON floats)


@dataclass(frozen=True)
class Person:
    """What became of one identity of the source gallery."""

    name: str
    state: str  # MIGRATED, ALREADY, NEED_NEW_PHOTOS or REMOVED
    templates: int  # carried (migrated, already), else the templates that would have been
    reason: str = ""  # why it needs new photos
    self_enrolled: int = 0  # auto templates not carried
    negatives: int = 0  # negative templates not carried

    def as_dict(self) -> dict:
        found = {"name": self.name, "templates": self.templates}
        return {**found, "reason": self.reason} if self.reason else found

    def line(self, into: str, dry_run: bool) -> str:
        if self.state == MIGRATED:
            verb, done = ("would migrate", "to re-embed into") if dry_run else ("migrated", "re-embedded into")
            return f"{verb:<17}{self.name}: {plural(self.templates, 'template')} {done} {into!r}"
        if self.state == ALREADY:
            return f"{'already':<17}{self.name}: {plural(self.templates, 'template')} in {into!r}"
        if self.state == REMOVED:
            return f"{'removed':<17}{self.name}: removed from the source gallery during the migration"
        return f"{'needs new photos':<17}{self.name}: {self.reason}"


@dataclass
class MigrationReport:
    gallery: str
    into: str
    from_model: str
    to_model: str
    model_id: str
    dry_run: bool
    people: list[Person] = field(default_factory=list)
    unknown_people: int = 0
    unknown_sightings: int = 0

    def of(self, state: str) -> list[Person]:
        return [p for p in self.people if p.state == state]

    def not_carried(self, what: str) -> dict[str, int]:
        """name -> count of `what` ("self_enrolled", "negatives") left behind by the people in the target."""
        kept = [p for p in self.people if p.state in (MIGRATED, ALREADY)]
        return {p.name: getattr(p, what) for p in kept if getattr(p, what)}

    def lines(self) -> list[str]:
        need = self.of(NEED_NEW_PHOTOS)
        verb = "would migrate" if self.dry_run else "migrated"
        out = [f"{verb} {len(self.of(MIGRATED))}, already {len(self.of(ALREADY))}, need new photos {len(need)}"
               + (f" ({', '.join(p.name for p in need)})" if need else "")
               + f": {self.gallery!r} (model {self.from_model}) -> {self.into!r} (model {self.to_model}); "
               f"{self.gallery!r} is unchanged"]
        for what, noun, why in (("self_enrolled", "self-enrolled template", "the live pipeline re-learns them"),
                                ("negatives", "negative template", "reject those faces again with the new model")):
            counts = self.not_carried(what)
            if counts:
                each = ", ".join(f"{name} {count}" for name, count in counts.items())
                out.append(f"not carried: {plural(sum(counts.values()), noun)} ({each}): {why}")
        if self.unknown_people or self.unknown_sightings:
            out.append(f"not carried: {plural(self.unknown_people, 'unknown person')} "
                       f"({plural(self.unknown_sightings, 'sighting')}): the old model's embeddings; new sightings "
                       f"are kept in {self.into!r}")
        return out

    def as_dict(self) -> dict:
        return {"command": "migrate", "gallery": self.gallery, "into": self.into, "from_model": self.from_model,
                "to_model": self.to_model, "model_id": self.model_id, "dry_run": self.dry_run,
                **{key: [p.as_dict() for p in self.of(state)] for key, state in
                   (("migrated", MIGRATED), ("already", ALREADY), ("need_new_photos", NEED_NEW_PHOTOS))},
                "removed": [p.name for p in self.of(REMOVED)],
                "not_carried": {"self_enrolled": self.not_carried("self_enrolled"),
                                "negatives": self.not_carried("negatives"),
                                "unknown_people": self.unknown_people, "unknown_sightings": self.unknown_sightings}}


# -- opening: the source, the target, the two cards ------------------------------------------------------------
def target_gallery(gallery: str, model_id: str, into: str | None) -> str:
    """`into`, else `<gallery>.<model_id>`; ConfigError if that is no valid gallery name (then --into is needed)."""
    name = into if into is not None else f"{gallery}.{model_id}"
    try:
        return validate_gallery(name)
    except GalleryError as exc:
        if into is not None:
            raise
        raise ConfigError(f"the default target gallery {name!r} is not a valid gallery name ({exc}); "
                          "name one with --into GALLERY") from None


def source_card(fingerprint: str, candidates: Sequence[Path], named: Path | None = None) -> ModelCard:
    """The card of the model that embedded (and aligned the crops of) the source gallery: `named` (--from-model,
    checked), else the card with that fingerprint among the JSON files in the `candidates` folders."""
    if named is not None:
        card = load_card(named)
        if card.fingerprint != fingerprint:
            raise ConfigError(f"--from-model {named} is model {card.fingerprint}, but the gallery holds templates "
                              f"of model {fingerprint}")
        return card
    for folder in dict.fromkeys(Path(c) for c in candidates):
        for path in sorted(folder.glob("*.json")):
            try:
                card = load_card(path)
            except ConfigError:
                continue  # not a card
            if card.fingerprint == fingerprint:
                return card
    raise ConfigError(f"no card of model {fingerprint} (the gallery's) in {', '.join(map(str, candidates))}: "
                      "its crops' alignment cannot be checked; name it with --from-model CARD.json")


def alignment_mismatch(old: ModelCard, new: ModelCard) -> str | None:
    """Why crops aligned for `old` cannot be fed to `new`, or None if they can."""
    if tuple(old.input_size) != tuple(new.input_size):
        return (f"its crops are {_size(old.input_size)} (model {old.model_id}); model {new.model_id} takes "
                f"{_size(new.input_size)}")
    if not np.allclose(np.asarray(old.template), np.asarray(new.template), atol=TEMPLATE_ATOL_PX):
        return (f"its crops are aligned to model {old.model_id}'s 5-point template, not to model {new.model_id}'s")
    return None


def open_migration(client, gallery: str, card: ModelCard, embedder: Callable[[], Embedder], *,
                   into: str | None = None, old_cards: Sequence[Path] = (), from_model: Path | None = None,
                   dry_run: bool = False, **safety) -> Migration:
    """Check the source, the target and both cards, then load the new model (`embedder()`); GalleryError or
    ConfigError naming the problem, before anything is written."""
    source = GalleryStore.open(client, gallery)
    meta = source.meta()
    bound = meta.get("fingerprint")
    if not meta:
        raise GalleryError(f"gallery {gallery!r} does not exist: nothing to migrate")
    if bound is None:
        raise GalleryError(f"gallery {gallery!r} holds no one: nothing to migrate")
    if bound == card.fingerprint:
        raise GalleryError(f"gallery {gallery!r} already holds templates of model {bound} ({card.model_id})")
    name = target_gallery(gallery, card.model_id, into)
    if name == gallery:
        raise GalleryError(f"--into {name!r} is the source gallery: a migration never modifies its source")
    target = GalleryStore.open(client, name, dtype_for_new=source.dtype, server_index_for_new=source.server_index,
                               **safety)
    if target.fingerprint not in (None, card.fingerprint):
        raise GalleryError(f"gallery {name!r} holds templates of model {target.fingerprint}, not of model "
                           f"{card.fingerprint} ({card.model_id}): migrate into a new gallery (--into NAME)")
    old = source_card(bound, old_cards, from_model)
    model = embedder()
    if model.fingerprint != card.fingerprint:
        raise ConfigError(f"the embedder is model {model.fingerprint}, but the card says {card.fingerprint}")
    return Migration(source, target, card, old, model, dry_run)


# -- migrating ----------------------------------------------------------------------------------------------
class Migration:
    """`open_migration(...)`, then `migrate(identity)` for each of `people()`, then `report(outcomes)`."""

    def __init__(self, source: GalleryStore, target: GalleryStore, card: ModelCard, old_card: ModelCard,
                 embedder: Embedder, dry_run: bool = False):
        self.source, self.target, self.card, self.old_card = source, target, card, old_card
        self.embedder, self.dry_run = embedder, dry_run
        self.mismatch = alignment_mismatch(old_card, card)
        self._in_target = {i.name: i.id for i in target.identities()}

    def people(self) -> list[Identity]:
        return self.source.identities()

    def migrate(self, identity: Identity) -> Person:
        """Re-embed one person into the target in one write (none if already there, needing photos, or dry)."""
        found = self.source.read_full(identity.id)
        if found is None:
            return Person(identity.name, REMOVED, 0)
        identity, tids, _ = found
        wanted = [t for t in tids if not is_auto(t)]
        left = {"self_enrolled": len(tids) - len(wanted),
                "negatives": len(self.source.read_negatives(identity.id)[0])}
        crops = self.source.read_crops(identity.id)
        images, reason = self._images(wanted, crops)
        if reason:
            return Person(identity.name, NEED_NEW_PHOTOS, len(wanted), reason, **left)
        if self._already(identity.name, wanted):
            return Person(identity.name, ALREADY, len(wanted), **left)
        if not self.dry_run:
            embeddings = self.embedder.embed(np.stack(images))
            self.target.import_identity(identity.name, embeddings, wanted, self.card.fingerprint, identity.metadata,
                                        identity.created, crops=[crops[t] for t in wanted])
        return Person(identity.name, MIGRATED, len(wanted), **left)

    def report(self, people: list[Person]) -> MigrationReport:
        clusters = UnknownStore(self.source.client, self.source.gallery).clusters()
        return MigrationReport(self.source.gallery, self.target.gallery, self.old_card.fingerprint,
                               self.card.fingerprint, self.card.model_id, self.dry_run, people, len(clusters),
                               sum(c.sightings for c in clusters))

    def _images(self, wanted: list[str], crops: dict[str, bytes]) -> tuple[list[np.ndarray], str]:
        """(the aligned RGB crop of each wanted template, "") or ([], why they cannot all be re-embedded)."""
        if not wanted:
            return [], "it has only self-enrolled templates"
        if self.mismatch:
            return [], self.mismatch
        missing = [t for t in wanted if t not in crops]
        if len(missing) == len(wanted):
            return [], f"no enrolment crop is kept for its {plural(len(wanted), 'template')}"
        images, sizes, unreadable = [], {}, 0
        for tid in (t for t in wanted if t in crops):
            try:
                image = decode_image(crops[tid], f"the crop of template {tid}")
            except SourceError:
                unreadable += 1
                continue
            if image.shape[:2] != tuple(self.card.input_size):
                sizes[_size(image.shape[:2])] = sizes.get(_size(image.shape[:2]), 0) + 1
                continue
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        problems = [f"{len(missing)} of {len(wanted)} templates have no enrolment crop"] if missing else []
        problems += [f"{n} of {len(wanted)} templates' crops are {size}, model {self.card.model_id} takes "
                     f"{_size(self.card.input_size)}" for size, n in sizes.items()]
        problems += [f"{unreadable} of {len(wanted)} crops are unreadable"] if unreadable else []
        return ([], "; ".join(problems)) if problems else (images, "")

    def _already(self, name: str, wanted: list[str]) -> bool:
        target_id = self._in_target.get(name)
        if target_id is None:
            return False
        found = self.target.read_full(target_id)
        return found is not None and set(wanted) <= set(found[1])


def _size(shape: Sequence[int]) -> str:
    return f"{int(shape[1])}x{int(shape[0])}"
