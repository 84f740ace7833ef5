"""run.py --tracks on the Hamilton clip: one line per processed frame, the boxes the video draws, the names the
events confirm; and names do not ride across the clip's hard cuts onto other people."""

from __future__ import annotations

import json

import pytest
from test_run_cli import run_py
from test_runner import CLIP, demo_gallery  # noqa: F401 - the module fixture enrolling the clip's people

LIN = "Lin-Manuel Miranda"
AUDIENCE_CUT = 211  # the clip's last hard cut: from there on the audience, with nobody enrolled in it


@pytest.fixture(scope="module")
def hamilton_run(tmp_path_factory, redis_server, shared_data,
                 demo_gallery) -> tuple[list[dict], list[dict]]:  # noqa: F811 - the imported fixture
    out = tmp_path_factory.mktemp("tracks")
    proc = run_py("--source", str(shared_data / CLIP), "--gallery", demo_gallery, "--redis-url", redis_server.url,
                  "--events", str(out / "events.jsonl"), "--tracks", str(out / "tracks.jsonl"),
                  "--set", "events.redis_stream=false")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]
    return read("tracks.jsonl"), read("events.jsonl")


def test_one_line_per_processed_frame_with_the_schema(hamilton_run):
    lines, _ = hamilton_run
    assert [r["frame"] for r in lines] == list(range(275))
    assert {r["camera"] for r in lines} == {"short_hamilton_clip"}
    assert sum(r["detected"] for r in lines) == 92  # detect_every 3
    faces = [f for r in lines for f in r["faces"]]
    assert faces
    for record in lines:
        assert set(record) == {"camera", "frame", "time", "detected", "faces"}
        for face in record["faces"]:
            assert set(face) == {"box", "landmarks", "track", "identity", "similarity", "anon_id", "unknown_id",
                                 "predicted"}
            assert len(face["box"]) == 4 and face["anon_id"].endswith(f"-t{face['track']}")
            assert face["predicted"] == (not record["detected"])
            assert (face["landmarks"] is None) == face["predicted"]
            if face["landmarks"] is not None:
                assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])


def test_shown_names_are_the_confirmed_ones(hamilton_run):
    lines, events = hamilton_run
    confirmed = {(e["track"], e["identity"]): e["frame"] for e in events if e["type"] == "identity_confirmed"}
    assert LIN in {identity for _, identity in confirmed}
    for record in lines:
        for face in record["faces"]:
            if face["identity"] is not None:
                assert confirmed[(face["track"], face["identity"])] <= record["frame"]


def test_no_name_rides_across_a_cut(hamilton_run):
    lines, events = hamilton_run
    wrong = [r["frame"] for r in lines if r["frame"] >= AUDIENCE_CUT for f in r["faces"] if f["identity"] == LIN]
    assert wrong == []
    ended = {e["track"]: e for e in events if e["type"] == "track_ended"}
    lin_tracks = {e["track"] for e in events if e["type"] == "identity_confirmed" and e["identity"] == LIN}
    assert any(ended[t]["extra"].get("reason") == "scene cut" and ended[t]["frame"] == AUDIENCE_CUT for t in lin_tracks)
