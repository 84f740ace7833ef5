"""Unknown people on the real Hamilton clip through the whole streaming session, against a real Redis.

Only Alex Lacamoire is enrolled, so Lin-Manuel Miranda (the clip's one confirmed face) is a stranger: his
track must get an `unknown_id` that the next run (a restart: a new session, nothing held in memory) gives him
again; with `unknowns.keep: false`
nothing of a face is written to Redis at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.app.config import load_app_config
from pipeline.app.session import RunOptions, Session

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
ALEX = "ageitgey_face_recognition_examples/reference_photos/alex-lacamoire.png"
GALLERY = "test-strangers"


@pytest.fixture(scope="module")
def one_person_gallery(enrol_photos) -> str:
    return enrol_photos(GALLERY, {"Alex Lacamoire": ALEX})


def run(redis_server, shared_data, gallery: str, events: Path, overrides=()) -> dict:
    cfg = load_app_config(None, list(overrides))
    session = Session(cfg, RunOptions(sources=[("stage", str(shared_data / CLIP))], gallery=gallery,
                                      redis_url=redis_server.url, events=events))
    try:
        summary = session.run()
    finally:
        session.close()
    summary["events_list"] = [json.loads(line) for line in events.read_text().splitlines()]
    return summary


def sight_keys(client, gallery: str) -> list[bytes]:
    """The keys of the gallery's unknowns and sightings (pipeline/unknowns/keys.py)."""
    prefix = f"fs:{{{gallery}}}:".encode()
    kinds = (b"sight", b"unknown", b"owned")
    return [k for k in client.scan_iter(prefix + b"*") if k[len(prefix):].startswith(kinds)]


@pytest.fixture(scope="module")
def two_runs(redis_server, shared_data, one_person_gallery, tmp_path_factory):
    client = redis_server.client()
    for key in sight_keys(client, one_person_gallery):
        client.delete(key)
    folder = tmp_path_factory.mktemp("unknowns")
    first = run(redis_server, shared_data, one_person_gallery, folder / "first.jsonl")
    second = run(redis_server, shared_data, one_person_gallery, folder / "second.jsonl")
    return first, second


def unknown_confirmations(summary: dict) -> list[dict]:
    return [e for e in summary["events_list"] if e["type"] == "identity_confirmed" and e["identity"] is None]


def test_a_stranger_gets_an_unknown_id_on_his_confirmation_and_track_end(two_runs):
    first, _ = two_runs
    confirmations = unknown_confirmations(first)
    with_id = [e for e in confirmations if e.get("unknown_id")]
    assert with_id, f"no unknown confirmation carried an unknown_id: {confirmations}"
    assert all(e["unknown_id"].startswith("unknown-") for e in with_id)
    ended = {(e["camera"], e["track"]): e.get("unknown_id") for e in first["events_list"] if e["type"] == "track_ended"}
    for e in with_id:
        assert ended[(e["camera"], e["track"])] is not None
    named = [e for e in first["events_list"] if e.get("identity")]
    assert not named  # the stranger is never given Alex's name
    assert first["unknowns"]["kept"] and first["unknowns"]["errors"] == 0


def test_the_same_stranger_gets_the_same_id_after_a_restart(two_runs, redis_server, one_person_gallery):
    first, second = two_runs
    before = {e["unknown_id"] for e in unknown_confirmations(first) if e.get("unknown_id")}
    after = {e["unknown_id"] for e in unknown_confirmations(second) if e.get("unknown_id")}
    assert after and after <= before, f"second run's ids {after} are not the first run's {before}"
    assert second["unknowns"]["clusters_started"] == 0 and second["unknowns"]["clusters_joined"] >= 1


def test_a_harmonic_model_starts_its_own_clusters_beside_the_older_models(two_runs, redis_server, shared_data,
                                                                         one_person_gallery, harmonic_card, tmp_path):
    """A v2 model harmonic with the gallery's v1 (same graph: the very same faces) records its sightings as v2 and
    never joins the v1 runs' cluster of the same stranger: the two models' faces are kept apart."""
    from pipeline.core.model_card import load_card
    from pipeline.unknowns.sightings import UnknownStore

    first, _ = two_runs
    unknowns = UnknownStore(redis_server.client(), one_person_gallery)
    old = {e["unknown_id"] for e in unknown_confirmations(first) if e.get("unknown_id")}
    v1 = unknowns.legacy_model()
    assert old and {unknowns.cluster(c).model for c in old} == {v1}  # the v1 runs' clusters are still there
    cfg = load_app_config(None, [])
    session = Session(cfg, RunOptions(sources=[("stage", str(shared_data / CLIP))], gallery=one_person_gallery,
                                      redis_url=redis_server.url, events=tmp_path / "v2.jsonl", model=harmonic_card))
    try:
        summary = session.run()
    finally:
        session.close()
    events = [json.loads(line) for line in (tmp_path / "v2.jsonl").read_text().splitlines()]
    new = {e["unknown_id"] for e in events if e["type"] == "identity_confirmed" and e.get("unknown_id")}
    assert new and not new & old, (new, old)
    v2 = load_card(harmonic_card).fingerprint
    assert {unknowns.cluster(c).model for c in new} == {v2}
    assert {s.model for c in new for s in unknowns.sightings(c)} == {v2}
    assert summary["unknowns"]["clusters_started"] >= 1 and summary["unknowns"]["errors"] == 0


def test_keep_false_stores_nothing_of_a_face(redis_server, shared_data, one_person_gallery, tmp_path):
    client = redis_server.client()
    for key in sight_keys(client, one_person_gallery):
        client.delete(key)
    summary = run(redis_server, shared_data, one_person_gallery, tmp_path / "events.jsonl",
                  ["unknowns.keep=false"])
    assert unknown_confirmations(summary)  # the stranger is still seen and confirmed unknown
    assert not sight_keys(client, one_person_gallery)
    assert not any("unknown_id" in e for e in summary["events_list"])
    assert summary["unknowns"] == {"kept": False}


def test_one_stranger_on_two_cameras_is_one_unknown_id(redis_server, shared_data, one_person_gallery, tmp_path):
    client = redis_server.client()
    for key in sight_keys(client, one_person_gallery):
        client.delete(key)
    cfg = load_app_config(None, [])
    clip = str(shared_data / CLIP)
    session = Session(cfg, RunOptions(sources=[("left", clip), ("right", clip)], gallery=one_person_gallery,
                                      redis_url=redis_server.url, events=tmp_path / "events.jsonl"))
    try:
        session.run()
    finally:
        session.close()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    ids = {e["camera"]: e.get("unknown_id") for e in events if e["type"] == "identity_confirmed"}
    assert set(ids) == {"left", "right"} and ids["left"] is not None and ids["left"] == ids["right"], ids
