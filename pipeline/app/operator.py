"""The operator's actions on one gallery's people and unknown people, as enroll.py (and the console to come)
call them: list, show, name, merge, forget and purge unknown clusters; search by photo; reject a wrong name;
forget a person completely; remove self-enrolled templates.

Each action returns plain records the caller prints or serves; the rules live in pipeline/unknowns and
pipeline/gallery, the thresholds come from the same operating points the live matcher uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.app.config import AppConfig
from pipeline.app.services import face_judge, gallery_operating_point, make_detector, make_embedder, unknown_store
from pipeline.core.errors import GalleryError
from pipeline.core.images import read_image
from pipeline.core.model_card import load_card
from pipeline.gallery import GalleryStore
from pipeline.gallery.threshold import template_counts
from pipeline.unknowns import operations
from pipeline.unknowns.clustering import assignment_threshold, merge_threshold
from pipeline.unknowns.sightings import Cluster, Purged, Sighting


@dataclass(frozen=True)
class PhotoFace:
    """One face of a searched photo: its box, and what it matched (or why it was not searched)."""

    box: list[float]
    found: list[operations.Found]
    rejected: str | None = None  # the quality gate that refused it

    def as_dict(self) -> dict:
        return {"box": self.box, "rejected": self.rejected, "found": [f.as_dict() for f in self.found]}


class Operator:
    """`Operator(cfg, client, "default", model_card_path)`: every action on that gallery."""

    def __init__(self, cfg: AppConfig, client, gallery: str, model: Path):
        self.cfg, self.model = cfg, Path(model)
        self.store = GalleryStore.open(client, gallery)
        self.unknowns = unknown_store(cfg, client, gallery)

    @cached_property
    def card(self):
        return load_card(self.model)

    @property
    def fingerprint(self) -> str:
        """The gallery's model; a gallery never written takes the --model card's."""
        return self.store.fingerprint or self.card.fingerprint

    # -- unknown clusters ---------------------------------------------------------------------------------
    def clusters(self) -> list[Cluster]:
        return self.unknowns.clusters()

    def cluster(self, cluster_id: str, limit: int | None = None) -> tuple[Cluster, list[Sighting]]:
        return self.unknowns.cluster(cluster_id), self.unknowns.sightings(cluster_id, limit=limit)

    def name(self, cluster_id: str, name: str) -> operations.Named:
        return operations.name_cluster(self.unknowns, self.store, cluster_id, name, self.fingerprint,
                                       self.identity_threshold())

    def merge(self, keep: str, other: str) -> list[str]:
        """`other`'s faces join `keep`, whose id survives (an operator's merge names the survivor)."""
        return self.unknowns.merge(keep, [other])

    def forget(self, cluster_id: str) -> int:
        return self.unknowns.forget(cluster_id)

    def purge(self) -> Purged:
        return self.unknowns.purge()

    # -- people -------------------------------------------------------------------------------------------
    def remove_person(self, name: str) -> tuple[int, int]:
        """The identity, its templates, negatives, sightings and crops, in one transaction:
        (templates removed, sightings removed)."""
        identity = self.store.get(name)
        sightings = len(self.unknowns.sightings(identity.id))
        templates = self.store.remove(name, also=self.unknowns.forgetting(), watch=[self.unknowns.keys.head])
        return templates, sightings

    def remove_auto_templates(self, name: str | None) -> dict[str, int]:
        return self.store.remove_auto_templates(name)

    def reject_event(self, event_id: str) -> tuple[str, int]:
        return operations.reject_event(self.unknowns, self.store, event_id)

    def reject_photo(self, photo: Path, name: str) -> int:
        """The photo's one face (the largest of several) is not `name`."""
        faces = [f for f in self.photo_faces(photo) if f[1] is not None]
        if not faces:
            raise GalleryError(f"{photo}: no face passed the quality gates, nothing to reject")
        largest = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        return operations.reject_face(self.store, largest[1], name)

    # -- search -------------------------------------------------------------------------------------------
    def search(self, photo: Path, limit: int = 10) -> list[PhotoFace]:
        """Every face of the photo: the identities and unknown clusters it matches, with their sightings."""
        identity_threshold, cluster_threshold = self.identity_threshold(), self.cluster_threshold()
        results = []
        for box, embedding, rejected in self.photo_faces(photo):
            found = [] if embedding is None else operations.search_face(
                embedding, self.store, self.unknowns, identity_threshold, cluster_threshold, limit)
            results.append(PhotoFace(box, found, rejected))
        return results

    def photo_faces(self, photo: Path) -> list[tuple[list[float], np.ndarray | None, str | None]]:
        """(box, embedding or None, rejection reason or None) for each face of the photo."""
        image = read_image(photo)
        faces = self._detector.detect_one(image)
        judge = face_judge(self.cfg, self._embedder)
        out = []
        for i in range(len(faces)):
            judged = judge.judge(image, faces, i)
            box = [round(float(v), 1) for v in faces.xyxy[i]]
            if judged.ok:
                out.append((box, judge.embed([judged.crop])[0], None))
            else:
                out.append((box, None, judged.verdict.reason))
        return out

    # -- thresholds: the live matcher's and directory's operating points -----------------------------------
    def identity_threshold(self) -> float:
        return gallery_operating_point(self.cfg, self.card, template_counts(self.store.snapshot())).threshold

    def cluster_threshold(self) -> float:
        members = self.unknowns.members()
        counts = np.bincount(members.owner, minlength=len(members.cluster_ids)) if len(members.owner) else []
        return assignment_threshold(self.card, [int(c) for c in counts if c > 0], self.cfg.unknowns.merge_rate)

    def merge_threshold(self) -> float:
        return merge_threshold(self.card, self.cfg.unknowns.merge_far)

    @cached_property
    def _embedder(self):
        embedder = make_embedder(self.cfg, self.model)
        if self.store.fingerprint and embedder.fingerprint != self.store.fingerprint:
            raise GalleryError(f"gallery {self.store.gallery!r} holds templates of model {self.store.fingerprint}; "
                               f"--model {self.model} is {embedder.fingerprint}")
        return embedder

    @cached_property
    def _detector(self):
        return make_detector(self.cfg)
