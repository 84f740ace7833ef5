"""The operator's actions on one gallery's people and unknown people, as enroll.py and the console (serve.py)
call them: list, show, name, merge, forget and purge unknown clusters; search by photo; recognize a photo;
enrol uploaded photos; rename; reject a wrong name; forget a person completely; remove self-enrolled templates.

Each action returns plain records the caller prints or serves; the rules live in pipeline/unknowns and
pipeline/gallery, the thresholds come from the same operating points the live matcher uses.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.app.config import AppConfig
from pipeline.app.services import (
    face_judge,
    gallery_operating_point,
    make_detector,
    make_embedder,
    match_cohort,
    matching_card,
    quality_gates,
    unknown_store,
    write_safety,
)
from pipeline.core.errors import GalleryError, SourceError
from pipeline.core.images import MAX_PIXELS, decode_image, read_image
from pipeline.core.model_card import load_card
from pipeline.gallery import GalleryStore, validate_name
from pipeline.gallery.binding import check_model, migrate_hint
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ExactSearch, StaticSource
from pipeline.gallery.threshold import template_counts
from pipeline.recognise.enrollment import (
    UNREADABLE,
    Enroller,
    EnrollmentReport,
    Outcome,
)
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


@dataclass(frozen=True)
class RecognizedFace:
    """One face of a photo as the live pipeline would name it: the enrolled identity it matches (at the gallery's
    operating point, negatives honoured), else the unknown cluster it matches (at the assignment threshold,
    none created), with the similarity of that decision."""

    box: list[float]
    landmarks: list[list[float]]
    score: float  # detector confidence
    identity: str | None = None
    unknown_id: str | None = None
    similarity: float | None = None  # of the identity (or cluster) chosen; else the best identity's
    threshold: float | None = None  # the threshold it was compared with
    rejected: str | None = None  # the quality gate that refused it (then not matched)


@dataclass(frozen=True)
class PhotosAdded:
    """`add_photos`: what each upload became (enroll.py's outcomes and messages), and the gallery write."""

    name: str
    outcomes: list[Outcome]
    added: int = 0
    duplicates: int = 0
    templates: int = 0
    created: bool = False


class Operator:
    """`Operator(cfg, client, "default", model_card_path)`: every action on that gallery."""

    def __init__(self, cfg: AppConfig, client, gallery: str, model: Path, max_pixels: int = MAX_PIXELS):
        self.cfg, self.model = cfg, Path(model)
        self.max_pixels = int(max_pixels)  # of an upload's declared size (the console's limit)
        self.store = GalleryStore.open(client, gallery, **write_safety(cfg))
        self.unknowns = unknown_store(cfg, client, gallery)
        # One request at a time through the detector and embedder (the console serves requests on threads).
        self._models = threading.Lock()

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
        """The cluster's faces become templates of the model that saw them (refused if not the gallery's);
        `fingerprint` only stands in for faces stored before models were recorded."""
        return operations.name_cluster(self.unknowns, self.store, cluster_id, name, self.fingerprint,
                                       self.identity_threshold())

    def merge(self, keep: str, other: str) -> list[str]:
        """`other`'s faces join `keep`, whose id survives (an operator's merge names the survivor)."""
        return self.unknowns.merge(keep, [other])

    def not_this_person(self, cluster_id: str, sighting_id: str) -> bool:
        """One face is not the cluster's person: it is deleted; returns whether the cluster remains."""
        return self.unknowns.forget_sighting(cluster_id, sighting_id)

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
        self._check_writable()
        faces = [f for f in self.photo_faces(photo) if f[1] is not None]
        if not faces:
            raise GalleryError(f"{photo}: no face passed the quality gates, nothing to reject")
        largest = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        return operations.reject_face(self.store, largest[1], name)

    # -- search -------------------------------------------------------------------------------------------
    def search(self, photo: Path, limit: int = 10) -> list[PhotoFace]:
        """Every face of the photo: the identities and unknown clusters it matches, with their sightings."""
        return self.search_image(read_image(photo, self.max_pixels), limit)

    def search_image(self, image: np.ndarray, limit: int = 10) -> list[PhotoFace]:
        """`search` for a photo already decoded (an upload: BGR uint8)."""
        snapshot = self.store.snapshot()  # one read of the gallery for every face of the photo
        # identities as the live matcher scores them (its threshold, the face's cohort offset); clusters raw
        identity_threshold, cluster_threshold = self.matching_threshold(snapshot), self.cluster_threshold()
        results = []
        for box, embedding, rejected in self.image_faces(image):
            offset = 0.0 if embedding is None or self.cohort is None else float(self.cohort.offsets(embedding[None])[0])
            found = [] if embedding is None else operations.search_face(
                embedding, self.store, self.unknowns, identity_threshold, cluster_threshold, limit, snapshot,
                self._comparable, self._embedder.fingerprint, offset)
            results.append(PhotoFace(box, found, rejected))
        return results

    def photo_faces(self, photo: Path) -> list[tuple[list[float], np.ndarray | None, str | None]]:
        """(box, embedding or None, rejection reason or None) for each face of the photo."""
        return self.image_faces(read_image(photo, self.max_pixels))

    def image_faces(self, image: np.ndarray) -> list[tuple[list[float], np.ndarray | None, str | None]]:
        return [(box, embedding, rejected) for box, _, _, embedding, rejected in self._judged(image)]

    def _judged(self, image: np.ndarray) -> list[tuple[list[float], list, float, np.ndarray | None, str | None]]:
        """(box, landmarks, detector score, embedding or None, rejection reason or None) for each face."""
        with self._models:
            faces = self._detector.detect_one(image)
            judge = face_judge(self.cfg, self._embedder)
            out = []
            for i in range(len(faces)):
                judged = judge.judge(image, faces, i)
                box = [round(float(v), 1) for v in faces.xyxy[i]]
                marks = [[round(float(x), 1), round(float(y), 1)] for x, y in faces.landmarks[i]]
                embedding = judge.embed([judged.crop])[0] if judged.ok else None
                out.append((box, marks, round(float(faces.score[i]), 4), embedding,
                            None if judged.ok else judged.verdict.reason))
        return out

    # -- recognize: one photo, named as the live pipeline would name it --------------------------------------
    def recognize(self, image: np.ndarray) -> list[RecognizedFace]:
        """Every face of the photo: its identity, else its unknown cluster (nothing is written)."""
        judged = self._judged(image)
        embeddings = [j[3] for j in judged if j[3] is not None]
        if not embeddings:
            return [RecognizedFace(box, marks, score, rejected=why) for box, marks, score, _, why in judged]
        snapshot = self.store.snapshot()
        threshold = self.matching_threshold(snapshot)
        matches = iter(Matcher(ExactSearch(snapshot), threshold, score=self.cfg.run.score,
                               negatives=StaticSource(snapshot), cohort=self.cohort)
                       .match(np.stack(embeddings).astype(np.float32))
                       if len(snapshot.identity_ids) else [None] * len(embeddings))
        members = self.unknowns.members(model=self._embedder.fingerprint)  # the clusters a live run would join
        cluster_threshold = self.cluster_threshold(members)
        out = []
        for box, marks, score, embedding, why in judged:
            if embedding is None:
                out.append(RecognizedFace(box, marks, score, rejected=why))
                continue
            match = next(matches)
            if match is not None and match.identity is not None:
                out.append(RecognizedFace(box, marks, score, identity=match.identity,
                                          similarity=round(float(match.similarity), 4),
                                          threshold=round(float(match.threshold or threshold), 4)))
                continue
            cluster, similarity = _best_cluster(members, embedding)
            if cluster is not None and similarity >= cluster_threshold:
                out.append(RecognizedFace(box, marks, score, unknown_id=cluster, similarity=round(similarity, 4),
                                          threshold=round(cluster_threshold, 4)))
            else:
                best = None if match is None else round(float(match.similarity), 4)
                out.append(RecognizedFace(box, marks, score, similarity=best, threshold=round(threshold, 4)))
        return out

    # -- enrolment from uploads -------------------------------------------------------------------------------
    def add_photos(self, name: str, uploads: list[tuple[str, bytes]], largest: bool = False) -> PhotosAdded:
        """Enrol uploaded photos ((file name, bytes), ...) as `name` through the gates enroll.py uses, each
        rejection with enroll.py's reason; the accepted ones in one atomic write (nothing when none is)."""
        name = validate_name(name)
        self._check_writable()
        enroller = Enroller(self._detector, self._embedder, quality_gates(self.cfg), largest=largest)
        report = EnrollmentReport()
        with self._models, tempfile.TemporaryDirectory(prefix="facestream-upload-") as folder:
            for index, (filename, data) in enumerate(uploads):
                where = Path(filename or f"upload-{index}").name or f"upload-{index}"
                try:
                    decode_image(data, where, self.max_pixels)  # the console's pixel limit, before the gates
                except SourceError as exc:  # empty, truncated, a bomb, not an image: enroll.py's reason
                    report.outcomes.append(Outcome(where, reason=UNREADABLE, detail=str(exc)))
                    continue
                path = Path(folder) / f"{index}{Path(where).suffix.lower() or '.img'}"
                path.write_bytes(data)
                seen = len(report.outcomes)
                enroller.add_file(path, report)
                report.outcomes[seen:] = [dataclasses.replace(o, path=where) for o in report.outcomes[seen:]]
        if not report.template_ids:
            return PhotosAdded(name, report.outcomes)
        result = self.store.add(name, report.matrix(), report.template_ids, self._embedder.fingerprint,
                                crops=report.crops())  # each template's aligned crop, as enroll.py keeps it
        return PhotosAdded(result.identity.name, report.outcomes, result.added, result.duplicates,
                           result.identity.templates, result.created)

    def rename(self, old: str, new: str):
        return self.store.rename(old, new)

    def remove_templates(self, name: str, template_ids: list[str]) -> int:
        return self.store.remove_templates(name, template_ids)

    def reject_image(self, image: np.ndarray, name: str) -> int:
        """`reject_photo` for an uploaded photo."""
        self._check_writable()
        faces = [f for f in self.image_faces(image) if f[1] is not None]
        if not faces:
            raise GalleryError("the photo: no face passed the quality gates, nothing to reject")
        largest = max(faces, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        return operations.reject_face(self.store, largest[1], name)

    # -- thresholds: the live matcher's and directory's operating points -----------------------------------
    def identity_threshold(self, snapshot=None) -> float:
        """The live matcher's threshold for the gallery (`snapshot`: as already read, else read now)."""
        snapshot = self.store.snapshot() if snapshot is None else snapshot
        card = self.card.against(self.store.fingerprint)  # a harmonic older model's gallery: its own curve
        return gallery_operating_point(self.cfg, card, template_counts(snapshot)).threshold

    def matching_threshold(self, snapshot) -> float:
        """The live matcher's threshold on its own score (cohort-normalised when the card has a cohort), for
        `recognize` and `search`; naming a cluster and rejecting a face stay on raw cosines at
        `identity_threshold`."""
        card = matching_card(self.cfg, self.card, self.store.fingerprint)
        return gallery_operating_point(self.cfg, card, template_counts(snapshot)).threshold

    @cached_property
    def cohort(self):
        return match_cohort(self.cfg, self.card, self.model)

    def cluster_threshold(self, members=None) -> float:
        """The directory's assignment threshold (`members`: as already read, else read now: the embedder's
        model's clusters)."""
        members = self.unknowns.members(model=self._embedder.fingerprint) if members is None else members
        counts = np.bincount(members.owner, minlength=len(members.cluster_ids)) if len(members.owner) else []
        return assignment_threshold(self.card, [int(c) for c in counts if c > 0], self.cfg.unknowns.merge_rate)

    def merge_threshold(self) -> float:
        return merge_threshold(self.card, self.cfg.unknowns.merge_far)

    @cached_property
    def _embedder(self):
        """The --model embedder: the gallery's model, or one harmonic with it (which matches but never writes)."""
        embedder = make_embedder(self.cfg, self.model)
        check_model(self.store.meta(), self.store.gallery, embedder.fingerprint, embedder.card.harmonic_with)
        return embedder

    @property
    def _comparable(self) -> frozenset[str]:
        """The models whose faces the embedder's may be compared with: its own, and those its card is harmonic
        with (as matching a gallery allows)."""
        return frozenset({self._embedder.fingerprint, *self._embedder.card.harmonic_with})

    def _check_writable(self) -> None:
        """GalleryError unless the embedder is the gallery's own model: a harmonic model's faces are compared with
        the gallery's templates but never join them, as templates or as negatives (binding.py)."""
        bound, fingerprint = self.store.fingerprint, self._embedder.fingerprint
        if bound and bound != fingerprint:
            raise GalleryError(f"gallery {self.store.gallery!r} holds templates of model {bound}; model "
                               f"{fingerprint} (--model {self.model}) may match them but not add to them: "
                               f"re-embed the gallery for it first ({migrate_hint(self.store.gallery)})")

    @cached_property
    def _detector(self):
        return make_detector(self.cfg)


def _best_cluster(members, embedding: np.ndarray) -> tuple[str | None, float]:
    """The cluster whose member tracks are nearest to the face (as live assignment compares), and that cosine."""
    if not len(members.owner):
        return None, -1.0
    query = np.asarray(embedding, np.float32) / max(float(np.linalg.norm(embedding)), 1e-12)
    sims = members.matrix @ query
    best = int(np.argmax(sims))
    return members.cluster_ids[int(members.owner[best])], float(sims[best])
