"""The operator's actions on real LFW photos against a real Redis: an unknown person seen in photos is found by
a new photo of him, named (his faces become templates, his sightings his), matched by name afterwards, and
forgotten completely; a wrong name is rejected; hostile input writes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.config import AppConfig
from pipeline.app.operator import Operator
from pipeline.app.services import set_threads
from pipeline.core.errors import FacestreamError, GalleryError
from pipeline.gallery import GalleryMirror
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ExactSearch
from pipeline.unknowns.sightings import Seen

MODEL = Path("models/facestream-default.json").resolve()
GALLERY = "test-operator"


def lfw(shared_data: Path, person: str, count: int, start: int = 0) -> list[Path]:
    return sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[start:start + count]


@pytest.fixture(scope="module")
def faces(redis_server, shared_data):
    """Embeddings of real photos, computed once: Colin Powell (seen as an unknown, then searched), Tony Blair."""
    set_threads()
    operator = Operator(AppConfig(), redis_server.client(), "embed-only", MODEL)

    def embed(paths):
        out = []
        for path in paths:
            found = [f for f in operator.photo_faces(path) if f[1] is not None]
            out.append(max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[1])
        return out
    return {"powell": embed(lfw(shared_data, "Colin_Powell", 6)), "blair": embed(lfw(shared_data, "Tony_Blair", 2)),
            "powell_probe": lfw(shared_data, "Colin_Powell", 1, start=10)[0],
            "blair_probe": lfw(shared_data, "Tony_Blair", 1, start=10)[0]}


@pytest.fixture
def operator(redis_client, redis_server):
    return Operator(AppConfig(), redis_server.client(), GALLERY, MODEL)


def seen_faces(embeddings, camera="door", track="door-t1") -> list[Seen]:
    crop = np.full((150, 150, 3), 100, np.uint8)
    return [Seen(e, camera, track, time.time(), 0.5 + 0.01 * i, crop) for i, e in enumerate(embeddings)]


def keys(client) -> dict:
    return {k: client.dump(k) for k in client.scan_iter(f"fs:{{{GALLERY}}}:*") if not k.endswith(b":changes")}


def largest(found):
    """The photo's main face (LFW photos may show other people behind)."""
    return max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def enrol_blair(operator, faces):
    operator.store.add("Tony Blair", np.stack(faces["blair"]), ["b1", "b2"], operator.fingerprint)


def test_an_unknown_person_is_found_named_then_matched_by_name(operator, faces):
    enrol_blair(operator, faces)
    cluster_id = operator.unknowns.new_cluster(seen_faces(faces["powell"]))
    probe = largest(operator.search(faces["powell_probe"]))
    assert [(f.kind, f.id) for f in probe.found] == [("unknown", cluster_id)]
    assert probe.found[0].sightings and probe.found[0].sightings[0].sighting.camera == "door"

    named = operator.name(cluster_id, "Colin Powell")
    assert named.created and 1 <= named.templates_added <= 6 and named.sightings_moved == 6
    assert operator.unknowns.clusters() == []
    assert operator.unknowns.resolve(cluster_id) == f"identity:{named.identity_id}"
    assert len(operator.unknowns.sightings(named.identity_id)) == 6  # his sightings are his now
    probe = largest(operator.search(faces["powell_probe"]))
    assert [(f.kind, f.id) for f in probe.found] == [("identity", "Colin Powell")]
    assert len(probe.found[0].sightings) >= 1
    # listed as the live matcher scores him: best template cosine minus the face's cohort offset, at its threshold
    face = max((f for f in operator.photo_faces(faces["powell_probe"]) if f[1] is not None),
               key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[1]
    snapshot = operator.store.snapshot()
    raw = float((operator.store.templates("Colin Powell") @ face).max())
    assert probe.found[0].similarity == pytest.approx(raw - operator.cohort.offsets(face[None])[0], abs=1e-4)
    assert probe.found[0].threshold == pytest.approx(operator.matching_threshold(snapshot))
    # A worker's matcher (a mirror of the gallery) now names a new photo of him.
    with GalleryMirror(operator.store) as mirror:
        matcher = Matcher(ExactSearch(mirror), operator.identity_threshold())
        found = [f for f in operator.photo_faces(faces["powell_probe"]) if f[1] is not None]
        embedding = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[1]
        assert matcher.match(embedding[None, :])[0].identity == "Colin Powell"


def test_naming_into_an_existing_person_adds_templates(operator, faces):
    enrol_blair(operator, faces)
    cluster_id = operator.unknowns.new_cluster(seen_faces(faces["blair"], track="door-t5"))
    named = operator.name(cluster_id, "Tony Blair")
    assert not named.created and operator.store.get("Tony Blair").templates == 2 + named.templates_added


def test_remove_forgets_templates_negatives_and_sightings(operator, faces, redis_client):
    before = keys(redis_client)
    enrol_blair(operator, faces)
    identity = operator.store.get("Tony Blair")
    operator.unknowns.add(identity.id, seen_faces(faces["blair"][:1], track="door-t7")[:1])
    operator.store.add_negatives("Tony Blair", faces["powell"][0][None, :], ["n1"])
    templates, sightings = operator.remove_person("Tony Blair")
    assert (templates, sightings) == (2, 1)
    left = {k for k in keys(redis_client) if k not in before}
    assert all(k.endswith((b"head", b":meta")) for k in left), left  # counters and settings only


def test_reject_an_event_makes_its_face_a_negative(operator, faces):
    enrol_blair(operator, faces)
    identity = operator.store.get("Tony Blair")
    wrong = seen_faces(faces["powell"][:1])[0]
    operator.unknowns.add(identity.id, [Seen(wrong.embedding, "door", "door-t3", time.time(), 0.9, None, "ev-42")])
    name, added = operator.reject_event("ev-42")
    assert (name, added) == ("Tony Blair", 1)
    assert operator.store.negatives("Tony Blair").shape == (1, 128)


@pytest.mark.parametrize("action, message", [
    (lambda op, f: op.name("unknown-00000000", "Someone"), "no unknown person"),
    (lambda op, f: op.name(op.unknowns.new_cluster(seen_faces(f["powell"])), "bad/name"), "path separator"),
    (lambda op, f: op.name("nonsense", "Someone"), "not an unknown-person id"),
    (lambda op, f: op.reject_event("no-such-event"), "no kept face"),
    (lambda op, f: op.merge("unknown-00000000", "unknown-00000001"), "no unknown person"),
    (lambda op, f: op.remove_person("Nobody"), "no identity named"),
    (lambda op, f: op.search(Path("/nonexistent.jpg")), "nonexistent"),
])
def test_hostile_operator_input_is_one_clear_error_and_writes_nothing(operator, faces, redis_client, action,
                                                                      message):
    enrol_blair(operator, faces)
    operator.unknowns.new_cluster(seen_faces(faces["powell"][:2]))
    with pytest.raises(FacestreamError, match=message):
        state = keys(redis_client)
        action(operator, faces)
    extra = {k for k in keys(redis_client) if k not in state}
    assert all(b":sight" in k or b":owned" in k or b":unknowns" in k for k in extra)  # only the parametrised setup
    if "path separator" in message:
        assert len(operator.unknowns.clusters()) == 2 and operator.store.identities()[0].name == "Tony Blair"


def test_searching_a_photo_without_faces_says_so(operator, shared_data, tmp_path):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.zeros((200, 200, 3), np.uint8))
    assert operator.search(blank) == []
    with pytest.raises(GalleryError, match="no face passed"):
        operator.reject_photo(blank, "Tony Blair")
