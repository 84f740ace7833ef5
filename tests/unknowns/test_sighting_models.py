"""Unknown people keep the model that embedded their faces, against a real Redis and real photos: a harmonic v2
model's sightings beside a v1 gallery are never named into it, never become its negatives, never share a cluster
with v1 faces, and are never compared with a face of a model they cannot be compared with; every refusal names both
models and writes nothing. Sightings stored before models were recorded count as the gallery's model.

The v2 model is the shipped graph under another fingerprint (tests/conftest.py `harmonic_card`): its embedding of a
crop is the v1 embedding, so each refusal below is by the recorded model, never by how far apart the faces are."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.core.images import read_image
from pipeline.gallery import GalleryStore
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder
from pipeline.unknowns.directory import UnknownDirectory
from pipeline.unknowns.operations import name_cluster, reject_event, search_face
from pipeline.unknowns.sightings import Seen, UnknownStore

PHOTOS = "ageitgey_face_recognition_examples/other_photos"
OBAMA = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama-480p.jpg"]
BIDEN = "biden.jpg"
GALLERY = "g"
MIGRATE = f"enroll.py --gallery {GALLERY} migrate --model NEW_CARD.json"


@pytest.fixture(scope="module")
def models(shared_data, harmonic_card) -> dict:
    """The v1 and v2 embedders, and each photo's aligned crop (both cards align alike)."""
    from pipeline.detect import MTCNN

    v1, v2, detector = Embedder(DEFAULT_MODEL), Embedder(harmonic_card), MTCNN(max_side=1280)
    crops = {}
    for photo in [*OBAMA, BIDEN]:
        image = read_image(shared_data / PHOTOS / photo)
        faces = detector.detect_one(image)
        crops[photo] = v1.crops(image, faces[[int(faces.area.argmax())]])
    return {"v1": v1, "v2": v2, "crops": crops}


def seen(models: dict, model: str, photos: list[str], track: str = "door-t1", event: str | None = None) -> list[Seen]:
    """The photos' faces as a recorder keeps them, embedded by `model` ("v1" or "v2")."""
    embedder = models[model]
    return [Seen(embedder.embed(models["crops"][p])[0], "door", track, time.time(), 0.5 + 0.1 * k,
                 models["crops"][p][0], event) for k, p in enumerate(photos)]


def dump(client) -> dict[bytes, bytes]:
    """Every key of the gallery, its unknowns included, with its DUMP: equal means nothing was written."""
    return {k: client.dump(k) for k in client.scan_iter(f"fs:{{{GALLERY}}}:*")}


@pytest.fixture
def gallery(redis_client, models) -> GalleryStore:
    """Gallery `g` bound to v1: Biden, enrolled from his photo."""
    store = GalleryStore(redis_client, GALLERY)
    store.add("Biden", models["v1"].embed(models["crops"][BIDEN]), [BIDEN], models["v1"].fingerprint)
    return store


def store(client, models: dict, model: str | None) -> UnknownStore:
    """The unknowns as a live run of `model` writes them (None: as they were written before models were)."""
    return UnknownStore(client, GALLERY, model=None if model is None else models[model].fingerprint)


def test_v2_sightings_are_recorded_as_v2_and_cannot_be_named_into_the_v1_gallery(redis_client, models, gallery):
    v1, v2 = models["v1"].fingerprint, models["v2"].fingerprint
    faces = seen(models, "v2", OBAMA)
    np.testing.assert_allclose(faces[0].embedding, seen(models, "v1", OBAMA[:1])[0].embedding, atol=1e-6)
    recorded = store(redis_client, models, "v2")
    cid = recorded.new_cluster(faces)
    operator = UnknownStore(redis_client, GALLERY)  # the operator's store: records no faces of its own
    assert operator.cluster(cid).model == v2 and {s.model for s in operator.sightings(cid)} == {v2}
    before = dump(redis_client)
    for fallback in (v1, v2):  # the operator's --model never decides what the faces are
        with pytest.raises(GalleryError) as refused:
            name_cluster(operator, gallery, cid, "Barack", fallback, min_similarity=0.5)
        message = str(refused.value)
        assert message.startswith(f"unknown person {cid} was seen by model {v2}, but gallery 'g' holds templates "
                                  f"of model {v1}")
        assert MIGRATE in message and "add --name NAME PHOTO" in message and "\n" not in message
    assert dump(redis_client) == before  # byte for byte: no template, no sighting moved, no alias
    assert [i.name for i in gallery.identities()] == ["Biden"] and gallery.fingerprint == v1


def test_same_model_naming_works_and_templates_are_of_the_faces_model(redis_client, models, gallery):
    v1, v2 = models["v1"].fingerprint, models["v2"].fingerprint
    cid = store(redis_client, models, "v1").new_cluster(seen(models, "v1", OBAMA))
    named = name_cluster(UnknownStore(redis_client, GALLERY), gallery, cid, "Barack", v1, min_similarity=0.5)
    assert named.templates_added == len(OBAMA) and named.sightings_moved == len(OBAMA)
    assert gallery.get("Barack").templates == len(OBAMA) and gallery.fingerprint == v1

    # v2 faces named into a gallery bound to no model yet bind it to v2, whatever fingerprint the caller offers.
    fresh_store = UnknownStore(redis_client, "fresh", model=v2)
    fresh = GalleryStore(redis_client, "fresh")
    cid = fresh_store.new_cluster(seen(models, "v2", OBAMA))
    name_cluster(UnknownStore(redis_client, "fresh"), fresh, cid, "Barack", v1, min_similarity=0.5)
    assert fresh.fingerprint == v2


def test_sightings_stored_before_models_were_recorded_count_as_the_gallerys_model(redis_client, models, gallery):
    v1 = models["v1"].fingerprint
    old = store(redis_client, models, None)
    cid = old.new_cluster(seen(models, "v1", OBAMA))
    (sighting,) = old.sightings(cid, limit=1)
    raw = redis_client.hgetall(old.keys.sighting(sighting.id))
    assert b"model" not in raw and b"model" not in redis_client.hget(old.keys.clusters, cid)  # the old layout
    assert sighting.model == v1 and old.cluster(cid).model == v1  # the gallery's
    # A v1 run joins the old cluster; a v2 run does not see it.
    assert store(redis_client, models, "v1").members().cluster_ids == [cid]
    assert store(redis_client, models, "v2").members().cluster_ids == []
    named = name_cluster(UnknownStore(redis_client, GALLERY), gallery, cid, "Barack", v1, min_similarity=0.5)
    assert named.templates_added == len(OBAMA) and gallery.fingerprint == v1


def test_live_clustering_keeps_the_two_models_clusters_apart(redis_client, models, gallery, caplog):
    v1, v2 = models["v1"].fingerprint, models["v2"].fingerprint

    def directory(model: str) -> UnknownDirectory:
        return UnknownDirectory(store(redis_client, models, model), lambda members: 0.5, merge_threshold=0.3,
                                min_merge_size=1)
    old = directory("v1")
    first = old.assign(seen(models, "v1", OBAMA[:2]))
    assert not old.assign(seen(models, "v1", OBAMA[2:], track="door-t2")).new  # same model: the same person joins
    with caplog.at_level(logging.WARNING, logger="pipeline.unknowns.directory"):
        new = directory("v2")
    assert f"1 cluster(s) of model {v1} kept apart from this run's model {v2}" in caplog.text
    second = new.assign(seen(models, "v2", OBAMA[:2], track="door-t3"))  # the very same embeddings
    assert second.new and second.cluster_id != first.cluster_id
    assert new.recluster() == [] and old.recluster() == []
    before = dump(redis_client)
    with pytest.raises(GalleryError, match=f"cannot merge into {first.cluster_id}: {first.cluster_id} of model "
                                           f"{v1}, {second.cluster_id} of model {v2}; faces of two models"):
        old.store.merge(first.cluster_id, [second.cluster_id])
    with pytest.raises(GalleryError, match=f"unknown person {first.cluster_id} holds faces of model {v1}; "
                                           f"refusing faces of model {v2}"):
        new.store.add(first.cluster_id, seen(models, "v2", OBAMA[:1]))
    assert dump(redis_client) == before
    assert {c.id: c.model for c in old.store.clusters()} == {first.cluster_id: v1, second.cluster_id: v2}


def test_a_v2_events_face_never_becomes_a_negative_of_the_v1_gallery(redis_client, models, gallery):
    v1, v2 = models["v1"].fingerprint, models["v2"].fingerprint
    biden = gallery.get("Biden").id
    store(redis_client, models, "v2").add(biden, seen(models, "v2", OBAMA[:1], event="ev-v2"))
    store(redis_client, models, "v1").add(biden, seen(models, "v1", OBAMA[1:2], event="ev-v1"))
    operator = UnknownStore(redis_client, GALLERY)
    before = dump(redis_client)
    with pytest.raises(GalleryError) as refused:
        reject_event(operator, gallery, "ev-v2")
    message = str(refused.value)
    assert message.startswith(f"the face behind event 'ev-v2' was embedded by model {v2}, but gallery 'g' holds "
                              f"templates of model {v1}")
    assert "reject --face PHOTO --not NAME" in message and MIGRATE in message
    assert dump(redis_client) == before and gallery.negatives("Biden").shape[0] == 0
    assert reject_event(operator, gallery, "ev-v1") == ("Biden", 1)  # the gallery's own model: as before


def test_search_compares_a_face_only_with_faces_of_comparable_models(redis_client, models, gallery):
    v1, v2 = models["v1"].fingerprint, models["v2"].fingerprint
    old = store(redis_client, models, "v1").new_cluster(seen(models, "v1", OBAMA[:2]))
    new = store(redis_client, models, "v2").new_cluster(seen(models, "v2", OBAMA[:2]))
    probe = seen(models, "v1", OBAMA[2:3])[0].embedding
    operator = UnknownStore(redis_client, GALLERY)
    with pytest.raises(GalleryError, match=f"hold faces of model {v2}, which a face embedded by model {v1} cannot "
                                           "be compared with: search with --model"):
        search_face(probe, gallery, operator, 0.5, 0.5, models={v1}, model=v1)
    # v2's card is harmonic with v1: its face may be compared with both models' faces.
    found = search_face(probe, gallery, operator, 0.5, 0.5, models={v2, v1}, model=v2)
    assert {f.id for f in found if f.kind == "unknown"} == {old, new}


def test_search_scores_identities_as_the_matcher_does_with_the_faces_cohort_offset(redis_client, models, gallery):
    """The live matcher names a face on cosine minus its cohort offset: photo search lists identities (and their
    sightings) on that same score, at the matcher's threshold, so search and live naming agree."""
    v1 = models["v1"].fingerprint
    probe = seen(models, "v1", OBAMA[2:3])[0].embedding
    template = seen(models, "v1", OBAMA[:1])[0].embedding
    gallery.add("Obama", template[None], ["o1"], v1)
    raw = float(template @ probe)
    threshold = raw - 0.01  # raw cosine clears it by 0.01
    (found,) = [f for f in search_face(probe, gallery, None, threshold, 2.0) if f.kind == "identity"]
    assert found.similarity == pytest.approx(raw, abs=1e-5)
    listed = search_face(probe, gallery, None, threshold - 0.05, 2.0, offset=0.05)  # the same margin after it
    assert [(f.id, round(f.similarity - (raw - 0.05), 5)) for f in listed] == [("Obama", 0.0)]
    assert search_face(probe, gallery, None, threshold, 2.0, offset=0.02) == []  # 0.01 above raw, 0.01 below after
