"""/api/v1/unknowns, /sightings, /events (query, detail, crop, SSE stream, reject) and /cameras, over data
written as the workers write it (UnknownStore, RedisStreamSink's entry format, live keys)."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from api_seeds import alex_face, empty_gallery

from pipeline.events import (
    IDENTITY_CONFIRMED,
    TRACK_ENDED,
    Event,
    encode_crop,
    events_key,
)
from pipeline.unknowns.sightings import Seen


@pytest.fixture(scope="module")
def seeded(console, photos):
    """Two unknown clusters of Alex's real face (one each for merge), and Lin enrolled."""
    operator = console.operator
    empty_gallery(console)
    embedding, crop = alex_face(console, photos)
    now = time.time()
    first = operator.unknowns.new_cluster([Seen(embedding, "door", "door-t1", now - 60, 0.9, crop),
                                           Seen(embedding, "door", "door-t1", now - 59, 0.8, crop)])
    second = operator.unknowns.new_cluster([Seen(embedding, "hall", "hall-t4", now - 30, 0.7, crop)])
    return console, first, second


def emit(client, event: Event) -> str:
    fields = {"event_id": event.event_id, "type": event.type, "camera": event.camera,
              "data": json.dumps(event.to_json())}
    entry = client.xadd(events_key("test-api"), fields)
    return entry.decode() if isinstance(entry, bytes) else entry


def test_clusters_are_listed_shown_and_their_crops_served(seeded):
    console, first, second = seeded
    http, viewer = console.http, console.viewer
    listed = http.get("/api/v1/unknowns", headers=viewer).json()
    assert {c["id"] for c in listed["clusters"]} == {first, second} and listed["retention_days"] == 7
    shown = http.get(f"/api/v1/unknowns/{first}", headers=viewer).json()
    assert shown["sightings"] == 2 and shown["cameras"] == ["door"] and len(shown["sightings_list"]) == 2
    sighting = shown["sightings_list"][0]["id"]
    crop = http.get(f"/api/v1/sightings/{sighting}/crop", headers=viewer)
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg" and crop.content[:2] == b"\xff\xd8"
    for path, status, message in [("/api/v1/unknowns/unknown-00000000", 404, "no unknown person"),
                                  ("/api/v1/unknowns/alice", 400, "is not an unknown-person id"),
                                  ("/api/v1/sightings/0000000000000000/crop", 404, "no sighting"),
                                  ("/api/v1/sightings/xyz/crop", 400, "is not a sighting id")]:
        reply = http.get(path, headers=viewer)
        assert reply.status_code == status and message in reply.json()["error"], (path, reply.text)


def test_merge_name_forget_and_their_errors(seeded):
    console, first, second = seeded
    http, admin = console.http, console.admin
    assert http.post(f"/api/v1/unknowns/{first}/merge", headers=admin, json={"other": first}).status_code == 400
    merged = http.post(f"/api/v1/unknowns/{first}/merge", headers=admin, json={"other": second})
    assert merged.status_code == 200 and merged.json() == {"kept": first, "merged": [second]}
    gone = http.get(f"/api/v1/unknowns/{second}", headers=admin)
    assert gone.status_code == 404 and f"was merged into {first}" in gone.json()["error"]
    bad = http.post(f"/api/v1/unknowns/{first}/name", headers=admin, json={"name": "a/b"})
    assert bad.status_code == 400 and "path separator" in bad.json()["error"]
    assert http.post(f"/api/v1/unknowns/{first}/name", headers=admin, json={}).status_code == 422
    named = http.post(f"/api/v1/unknowns/{first}/name", headers=admin, json={"name": "Alex Lacamoire"})
    assert named.status_code == 200, named.text
    assert named.json()["name"] == "Alex Lacamoire" and named.json()["sightings_moved"] == 3
    assert http.get("/api/v1/people/Alex Lacamoire", headers=admin).json()["templates"] >= 1
    again = http.post(f"/api/v1/unknowns/{first}/name", headers=admin, json={"name": "X"})
    assert again.status_code == 404 and "was named" in again.json()["error"]
    forgot = http.delete("/api/v1/unknowns/unknown-00000000", headers=admin)
    assert forgot.status_code == 404


def test_events_are_queried_filtered_paged_and_opened(seeded):
    console, _, _ = seeded
    http, viewer, client = console.http, console.viewer, console.svc.client
    crop = encode_crop(np.full((64, 64, 3), 120, np.uint8))
    named = Event(IDENTITY_CONFIRMED, "door", 1, "door-t1", "Lin", 0.91, 10, time.time(), crop_jpeg_b64=crop)
    stranger = Event(TRACK_ENDED, "hall", 4, "hall-t4", None, None, 30, time.time(), unknown_id="unknown-1234abcd")
    ids = [emit(client, named), emit(client, stranger)]
    every = http.get("/api/v1/events", headers=viewer).json()["events"]
    assert [e["entry_id"] for e in every] == ids[::-1]
    assert every[1]["identity"] == "Lin" and every[1]["has_crop"] and "crop_jpeg_b64" not in every[1]
    assert [e["camera"] for e in http.get("/api/v1/events?camera=hall", headers=viewer).json()["events"]] == ["hall"]
    assert [e["identity"] for e in http.get("/api/v1/events?person=Lin", headers=viewer).json()["events"]] == ["Lin"]
    by_unknown = http.get("/api/v1/events?unknown_id=unknown-1234abcd", headers=viewer).json()["events"]
    assert [e["type"] for e in by_unknown] == [TRACK_ENDED]
    assert http.get(f"/api/v1/events?since={time.time() + 60}", headers=viewer).json()["events"] == []
    page = http.get("/api/v1/events?limit=1", headers=viewer).json()
    assert len(page["events"]) == 1 and page["next_before"] == ids[1]
    older = http.get(f"/api/v1/events?limit=1&before={page['next_before']}", headers=viewer).json()
    assert [e["entry_id"] for e in older["events"]] == [ids[0]]
    detail = http.get(f"/api/v1/events/{ids[0]}", headers=viewer).json()
    assert detail["event"]["event_id"] == named.event_id and detail["sightings"] == []
    image = http.get(f"/api/v1/events/{ids[0]}/crop", headers=viewer)
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
    for path, status in [(f"/api/v1/events/{ids[1]}/crop", 404), ("/api/v1/events/1-0", 404),
                         ("/api/v1/events/abc", 400), ("/api/v1/events?before=abc", 400),
                         ("/api/v1/events?limit=0", 422)]:
        assert http.get(path, headers=viewer).status_code == status, path
    reject = http.post(f"/api/v1/events/{named.event_id}/reject", headers=console.admin)
    assert reject.status_code == 404 and "no kept face for event" in reject.json()["error"]
    assert http.post("/api/v1/events/nope/reject", headers=console.admin).status_code == 400
    assert http.post(f"/api/v1/events/{named.event_id}/reject", headers=viewer).status_code == 403


def test_the_event_stream_sends_new_events_as_sse(seeded):
    console, _, _ = seeded
    client = console.svc.client
    start = emit(client, Event(TRACK_ENDED, "door", 9, "door-t9", None, None, 1, time.time()))
    later = Event(IDENTITY_CONFIRMED, "door", 9, "door-t9", "Lin", 0.9, 2, time.time())
    emit(client, later)
    with console.http.stream("GET", f"/api/v1/events/stream?after={start}&max_events=1",
                             headers=console.viewer) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        text = "".join(reply.iter_text())
    assert "event: identity_confirmed" in text and later.event_id in text and "\nid: " in "\n" + text


def test_cameras_say_when_nothing_is_published_and_serve_what_is(seeded):
    console, _, _ = seeded
    http, viewer, client = console.http, console.viewer, console.svc.client
    empty = http.get("/api/v1/cameras", headers=viewer).json()
    assert empty == {"cameras": [], "note": "no live frame (workers publish with console.snapshots: true)"}
    missing = http.get("/api/v1/cameras/door/snapshot", headers=viewer)
    assert missing.status_code == 404 and "console.snapshots: true" in missing.json()["error"]
    jpeg = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    client.set("fs:{test-api}:live:door", jpeg, ex=10)
    client.set("fs:{test-api}:camera:door", json.dumps({"fps": 14.5, "dropped": 3, "state": "live"}), ex=10)
    found = http.get("/api/v1/cameras", headers=viewer).json()
    assert found["cameras"] == [{"camera": "door", "live": True, "health": {"fps": 14.5, "dropped": 3, "state": "live"}}]
    assert http.get("/api/v1/cameras/door/snapshot", headers=viewer).content == jpeg
    metrics = http.get("/api/v1/metrics", headers=viewer)
    assert metrics.status_code == 200 and "facestream_cameras_live 1" in metrics.text
    assert "facestream_identities" in metrics.text and "facestream_api_requests_total{" in metrics.text
    client.delete("fs:{test-api}:live:door", "fs:{test-api}:camera:door")
