"""/api/v1/people: list, show, add photos by upload (enroll.py's gates and reasons), rename, remove, export, and
their hostile inputs: bad names, unknown people, a name taken, bombs and empty files that write nothing."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def gallery(console):
    console.operator.store.clear()
    return console


def upload(*files):
    return [("images", f) for f in files]


def test_photos_are_enrolled_through_the_gates_with_reasons_for_each_rejection(gallery, photos, bomb, shared_data):
    http, admin = gallery.http, gallery.admin
    several = shared_data / "compreface_sample_images" / "images" / "000_5.jpg"  # five faces
    files = [("lin.png", photos["lin"], "image/png"), ("bomb.png", bomb, "image/png"),
             ("junk.jpg", b"no image here", "image/jpeg")]
    reply = http.post("/api/v1/people", headers=admin, data={"name": "Lin-Manuel Miranda"}, files=upload(*files))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["name"], body["created"], body["accepted"], body["rejected"], body["added"]) == \
        ("Lin-Manuel Miranda", True, 1, 2, 1)
    by_file = {o["file"]: o for o in body["outcomes"]}
    assert by_file["lin.png"]["accepted"] and len(by_file["lin.png"]["template_id"]) == 64
    assert by_file["bomb.png"]["reason"] == "unreadable or not an image"
    assert "30000x30000" in by_file["bomb.png"]["detail"]
    assert "not a decodable image" in by_file["junk.jpg"]["detail"]
    again = http.post("/api/v1/people/Lin-Manuel Miranda/photos", headers=admin,
                      files=upload(("copy.png", photos["lin"], "image/png"))).json()
    assert (again["created"], again["added"], again["duplicates"], again["templates"]) == (False, 0, 1, 1)
    if several.is_file():
        crowded = http.post("/api/v1/people", headers=admin, data={"name": "Crowd"},
                            files=upload((several.name, several.read_bytes(), "image/jpeg")))
        assert crowded.status_code == 422 and "000_5.jpg: several faces" in crowded.json()["error"]


def test_nothing_accepted_writes_nothing(gallery, bomb):
    reply = gallery.http.post("/api/v1/people", headers=gallery.admin, data={"name": "Nobody"},
                              files=upload(("bomb.png", bomb, "image/png")))
    assert reply.status_code == 422
    assert reply.json()["error"].startswith("nothing enrolled, the gallery is unchanged: bomb.png: unreadable")
    assert "30000x30000" in reply.json()["error"]
    assert gallery.http.get("/api/v1/people/Nobody", headers=gallery.viewer).status_code == 404


def test_list_show_rename_remove(gallery, photos):
    http, admin, viewer = gallery.http, gallery.admin, gallery.viewer
    if http.get("/api/v1/people/Lin-Manuel Miranda", headers=viewer).status_code == 404:  # run on its own
        http.post("/api/v1/people", headers=admin, data={"name": "Lin-Manuel Miranda"},
                  files=upload(("lin.png", photos["lin"], "image/png")))
    listed = http.get("/api/v1/people", headers=viewer).json()
    assert [p["name"] for p in listed["people"]] == ["Lin-Manuel Miranda"] and listed["gallery"] == "test-api"
    shown = http.get("/api/v1/people/Lin-Manuel Miranda", headers=viewer).json()
    assert shown["templates"] == 1 and len(shown["template_ids"]) == 1 and shown["crops"] == shown["template_ids"]
    crop = http.get(f"/api/v1/people/Lin-Manuel Miranda/templates/{shown['template_ids'][0]}/crop", headers=viewer)
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"  # the aligned crop enrolment kept
    missing = http.get("/api/v1/people/Lin-Manuel Miranda/templates/nope/crop", headers=viewer)
    assert missing.status_code == 404 and "no face crop kept" in missing.json()["error"]
    renamed = http.patch("/api/v1/people/Lin-Manuel Miranda", headers=admin, json={"name": "Lin"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Lin"
    exported = http.get("/api/v1/people/export", headers=admin)
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert [p["name"] for p in json.loads(exported.content)["identities"]] == ["Lin"]
    removed = http.delete("/api/v1/people/Lin", headers=admin)
    assert removed.status_code == 200 and removed.json()["templates_removed"] == 1
    assert http.get("/api/v1/people/Lin", headers=viewer).status_code == 404


def test_hostile_people_requests(gallery, photos):
    http, admin = gallery.http, gallery.admin
    http.post("/api/v1/people", headers=admin, data={"name": "Ada"}, files=upload(("lin.png", photos["lin"], "image/png")))
    http.post("/api/v1/people", headers=admin, data={"name": "Bea"},
              files=upload(("alex.png", photos["alex"], "image/png")))
    cases = [
        (http.get("/api/v1/people/Nobody", headers=admin), 404, "no identity named 'Nobody'"),
        (http.delete("/api/v1/people/Nobody", headers=admin), 404, "no identity named"),
        (http.patch("/api/v1/people/Nobody", headers=admin, json={"name": "X"}), 404, "no identity named"),
        (http.patch("/api/v1/people/Ada", headers=admin, json={"name": "Bea"}), 409, "already has"),
        (http.patch("/api/v1/people/Ada", headers=admin, json={"name": " Ada"}), 400, "whitespace"),
        (http.patch("/api/v1/people/Ada", headers=admin, json={"name": ""}), 422, "name"),
        (http.patch("/api/v1/people/Ada", headers=admin, json={"nom": "X"}), 422, "name"),
        (http.patch("/api/v1/people/Ada", headers=admin, content=b"{", ), 422, "invalid request"),
        (http.post("/api/v1/people", headers=admin, data={"name": "a/b"},
                   files=upload(("lin.png", photos["lin"], "image/png"))), 400, "path separator"),
        (http.post("/api/v1/people", headers=admin, data={"name": "Ada\nEve"},
                   files=upload(("lin.png", photos["lin"], "image/png"))), 400, "control character"),
        (http.post("/api/v1/people", headers=admin, json={"name": "Ada"}), 415, "multipart/form-data"),
        (http.post("/api/v1/people", headers=admin, data={"name": "Ada"},
                   files=upload(("e.png", b"", "image/png"))), 400, "empty (0 bytes)"),
        (http.delete("/api/v1/people/Ada/templates/nope", headers=admin), 404, "has no template"),
    ]
    for reply, status, message in cases:
        assert reply.status_code == status, (reply.request.method, reply.request.url, reply.text)
        assert message in reply.json()["error"], reply.json()
    assert sorted(p["name"] for p in http.get("/api/v1/people", headers=admin).json()["people"]) == ["Ada", "Bea"]
