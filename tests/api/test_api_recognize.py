"""POST /api/v1/recognize and /search on real photos, and every hostile upload: wrong type, empty, a bomb, too
big, not an image; the rate limit."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.unknowns.sightings import Seen


@pytest.fixture(scope="module")
def enrolled(console, enrol_photos):
    enrol_photos("test-api", {"Lin-Manuel Miranda": "ageitgey_face_recognition_examples/reference_photos/"
                                                     "lin-manuel-miranda.png"})
    return console


def test_recognize_names_the_enrolled_person_with_box_and_landmarks(enrolled, photos):
    reply = enrolled.http.post("/api/v1/recognize", headers=enrolled.viewer,
                               files={"image": ("lin.png", photos["lin"], "image/png")})
    assert reply.status_code == 200, reply.text
    faces = [f for f in reply.json()["result"] if f["rejected"] is None]
    assert len(faces) == 1
    face = faces[0]
    assert face["identity"] == "Lin-Manuel Miranda" and face["unknown_id"] is None
    assert face["similarity"] >= face["threshold"] > 0
    assert face["subjects"] == [{"subject": "Lin-Manuel Miranda", "similarity": face["similarity"]}]
    box = face["box"]
    assert box["x_max"] - box["x_min"] > 100 and box["y_max"] - box["y_min"] > 100 and box["probability"] > 0.9
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert all(box["x_min"] <= x <= box["x_max"] and box["y_min"] <= y <= box["y_max"] for x, y in face["landmarks"])


def test_a_stranger_gets_the_unknown_cluster_he_matches_and_nothing_is_created(enrolled, photos):
    operator = enrolled.operator
    before = len(operator.clusters())
    first = enrolled.http.post("/api/v1/recognize", headers=enrolled.viewer,
                               files={"image": ("alex.png", photos["alex"], "image/png")}).json()["result"]
    stranger = next(f for f in first if f["rejected"] is None)
    assert stranger["identity"] is None and stranger["unknown_id"] is None
    assert len(operator.clusters()) == before  # recognize writes nothing
    # Once he is an unknown cluster (as a worker would record him), recognize gives its id.
    from pipeline.core.images import decode_image

    faces = operator.image_faces(decode_image(photos["alex"]))
    embedding = next(e for _, e, why in faces if e is not None)
    cluster = operator.unknowns.new_cluster([Seen(embedding, "door", "door-t1", time.time(), 0.9,
                                                  np.full((96, 96, 3), 90, np.uint8))])
    again = enrolled.http.post("/api/v1/recognize", headers=enrolled.viewer,
                               files={"image": ("alex.png", photos["alex"], "image/png")}).json()["result"]
    assert next(f for f in again if f["rejected"] is None)["unknown_id"] == cluster
    operator.forget(cluster)


def test_search_finds_the_person(enrolled, photos):
    reply = enrolled.http.post("/api/v1/search", headers=enrolled.viewer,
                               files={"image": ("lin.png", photos["lin"], "image/png")})
    assert reply.status_code == 200
    found = [f for face in reply.json()["faces"] for f in face["found"]]
    assert found[0]["kind"] == "identity" and found[0]["id"] == "Lin-Manuel Miranda"


@pytest.mark.parametrize("path", ["/api/v1/recognize", "/api/v1/search"])
def test_hostile_uploads_are_refused_with_a_clear_message(console, bomb, path):
    http, headers = console.http, console.viewer
    as_json = http.post(path, headers=headers, json={"image": "x"})
    assert as_json.status_code == 415 and "multipart/form-data" in as_json.json()["error"]
    empty = http.post(path, headers=headers, files={"image": ("a.png", b"", "image/png")})
    assert empty.status_code == 400 and "empty (0 bytes)" in empty.json()["error"]
    bombed = http.post(path, headers=headers, files={"image": ("bomb.png", bomb, "image/png")})
    assert bombed.status_code == 413 and "30000x30000" in bombed.json()["error"]
    junk = http.post(path, headers=headers, files={"image": ("a.jpg", b"not an image at all", "image/jpeg")})
    assert junk.status_code == 400 and "not a decodable image" in junk.json()["error"]
    missing = http.post(path, headers=headers, files={"other": ("a.png", b"x", "image/png")})
    assert missing.status_code == 422 and "image" in missing.json()["error"]


def test_a_file_over_the_byte_limit_and_a_body_over_the_body_limit_are_413(make_console):
    small = make_console("test-api-limits", ("console.max_upload_bytes=1000",))
    over = small.http.post("/api/v1/recognize", headers=small.viewer,
                           files={"image": ("big.jpg", b"\xff\xd8" + b"\0" * 5000, "image/jpeg")})
    assert over.status_code == 413 and "upload limit of 1,000 bytes" in over.json()["error"]
    huge = b"\0" * (small.svc.limits.max_body_bytes + 10)
    body = small.http.post("/api/v1/recognize", headers=small.viewer,
                           files={"image": ("huge.jpg", huge, "image/jpeg")})
    assert body.status_code == 413 and "over the limit" in body.json()["error"]
    small.http.close()


def test_recognize_is_rate_limited_per_key(make_console):
    limited = make_console("test-api-rate", ("console.recognize_per_minute=2",))
    codes = [limited.http.post("/api/v1/recognize", headers=limited.viewer,
                               files={"image": ("a.png", b"x", "image/png")}).status_code for _ in range(3)]
    assert codes[:2] == [400, 400] and codes[2] == 429
    reply = limited.http.post("/api/v1/recognize", headers=limited.viewer,
                              files={"image": ("a.png", b"x", "image/png")})
    assert "at most 2 recognize calls per minute" in reply.json()["error"] and int(reply.headers["retry-after"]) >= 1
    other = limited.http.post("/api/v1/recognize", headers=limited.admin, files={"image": ("a.png", b"x", "image/png")})
    assert other.status_code == 400  # another key has its own allowance
    limited.http.close()
