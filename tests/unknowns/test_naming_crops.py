"""Naming an unknown cluster keeps the faces it enrols: each new template gets its sighting's kept crop as its
enrolment crop, in the naming's one transaction; forgetting the person deletes them. Real photos, real Redis."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from pipeline.gallery import GalleryStore
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder
from pipeline.unknowns.operations import SIGHTING_TEMPLATE, name_cluster
from pipeline.unknowns.sightings import Seen, UnknownStore

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama-480p.jpg"]


@pytest.fixture(scope="module")
def obama(shared_data) -> tuple[Embedder, list[Seen]]:
    """One person's faces as the recorder keeps them: unit embedding and the embedder's aligned crop."""
    from pipeline.core.images import read_image
    from pipeline.detect import MTCNN

    embedder, detector = Embedder(DEFAULT_MODEL), MTCNN(max_side=1280)
    seen = []
    for k, photo in enumerate(PHOTOS):
        image = read_image(shared_data / "ageitgey_face_recognition_examples" / "other_photos" / photo)
        faces = detector.detect_one(image)
        crop = embedder.crops(image, faces[[int(faces.area.argmax())]])
        seen.append(Seen(embedder.embed(crop)[0], "door", f"door-t{k}", time.time(), 0.5 + 0.1 * k, crop[0]))
    return embedder, seen


def test_naming_a_cluster_keeps_its_sightings_crops_and_forgetting_deletes_them(redis_client, obama):
    embedder, seen = obama
    unknowns, gallery = UnknownStore(redis_client, "g"), GalleryStore(redis_client, "g")
    cid = unknowns.new_cluster(seen)
    named = name_cluster(unknowns, gallery, cid, "Barack", embedder.fingerprint, min_similarity=0.5)
    assert named.templates_added == len(PHOTOS)
    crops = gallery.crops("Barack")
    sightings = {s.id: s for s in unknowns.sightings(named.identity_id, crops=True)}
    assert sorted(crops) == sorted(SIGHTING_TEMPLATE + sid for sid in sightings)
    for tid, jpeg in crops.items():
        assert jpeg == sightings[tid.removeprefix(SIGHTING_TEMPLATE)].crop_jpeg
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (unknowns.crop_px, unknowns.crop_px, 3)

    gallery.remove("Barack", also=unknowns.forgetting())
    assert not [k for k in redis_client.scan_iter("fs:*") if b":crops:" in k]
