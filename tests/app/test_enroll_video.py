"""enroll.py add from a video keeps its most diverse accepted frames (`--video-templates`): the real Hamilton clip,
real Redis, the default model, enroll.py as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import SourceError
from pipeline.gallery import GalleryStore
from pipeline.recognise.diverse import DUPLICATE_ABOVE, pick_diverse
from pipeline.recognise.embedder import DEFAULT_MODEL
from pipeline.recognise.enrollment import SKIPS, Enroller
from pipeline.recognise.quality import QualityGates, face_quality

REPO = Path(__file__).resolve().parents[2]
CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"


@pytest.fixture
def cli(redis_server, redis_client):
    """`cli(*args, gallery=...)` -> the finished `enroll.py [--json] ... add --name Lin --largest *args`."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no default model at {DEFAULT_MODEL}")

    def run(*args: str, gallery: str, expect: int = 0, json_out: bool = True) -> subprocess.CompletedProcess:
        command = [sys.executable, str(REPO / "enroll.py"), "--redis-url", redis_server.url, "--gallery", gallery,
                   "--set", "detector.engine=onnxruntime", *(["--json"] if json_out else []),
                   "add", "--name", "Lin", "--largest", *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done
    return run


def result(done: subprocess.CompletedProcess) -> dict:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one line, got {done.stdout!r}"
    return json.loads(lines[0])


def templates(redis_client, gallery: str) -> dict[str, np.ndarray]:
    store = GalleryStore(redis_client, gallery)
    _, ids, matrix = store.read_full(store.get("Lin").id)
    return dict(zip(ids, matrix, strict=True))


def mean_pairwise(rows: np.ndarray) -> float:
    cosines = rows @ rows.T
    return float(cosines[np.triu_indices(len(rows), 1)].mean())


def test_video_templates_keep_the_most_diverse_accepted_frames(cli, redis_client, shared_data):
    clip = str(shared_data / CLIP)
    sparse = ("--video-every", "10", "--video-max-frames", "28")  # ~13 accepted faces: enough, and half the work
    every = result(cli(*sparse, "--video-templates", "0", clip, gallery="all"))
    three = result(cli(*sparse, "--video-templates", "3", clip, gallery="three"))

    # 0: every accepted frame is a template, as before --video-templates existed.
    accepted = [o for o in every["outcomes"] if o["accepted"]]
    all_templates = templates(redis_client, "all")
    assert len(accepted) >= 10 and len(all_templates) == len(accepted) == every["added"]
    assert not any(o["reason"] in SKIPS for o in every["outcomes"])

    # 3: the same frames judged the same way; 3 of the accepted ones kept, the others skipped with a reason.
    assert [o["frame"] for o in three["outcomes"]] == [o["frame"] for o in every["outcomes"]]
    for before, now in zip(every["outcomes"], three["outcomes"], strict=True):
        assert now["reason"] == before["reason"] or (before["accepted"] and now["reason"] in SKIPS), (before, now)
    assert three["accepted"] + three["rejected"] == len(three["outcomes"]) == len(every["outcomes"])
    kept = templates(redis_client, "three")
    matrix = np.stack([all_templates[o["template_id"]] for o in accepted])
    quality = np.array([face_quality(o["measures"]) for o in accepted])
    expected = pick_diverse(matrix, quality, 3)
    assert len(kept) == three["accepted"] == min(3, len(pick_diverse(matrix, quality, 0)))  # 0: the non-duplicates
    assert sorted(kept) == sorted(accepted[i]["template_id"] for i in expected)

    chosen = np.stack(list(kept.values()))
    cosines = chosen @ chosen.T
    assert (cosines[np.triu_indices(len(chosen), 1)] < DUPLICATE_ABOVE).all(), cosines
    first_three = matrix[:3]
    assert mean_pairwise(chosen) < mean_pairwise(first_three), (mean_pairwise(chosen), mean_pairwise(first_three))


def test_skipped_frames_are_reported_and_bad_counts_refused(cli, redis_client, shared_data):
    clip = str(shared_data / CLIP)
    # Frames 0, 45, ..., 225: 90, 135 and 180 pass the gates; one is kept, the other two say why not.
    out = cli("--video-every", "45", "--video-max-frames", "6", "--video-templates", "1", clip, gallery="one",
              json_out=False).stdout
    skipped = [line for line in out.splitlines() if line.startswith("skipped   ")]
    assert len(skipped) == 2 and all(any(reason in line for reason in SKIPS) for line in skipped), out
    assert "1 of 3 accepted frames kept" in skipped[0] and "accepted   1\n" in out
    assert GalleryStore(redis_client, "one").get("Lin").templates == 1

    with pytest.raises(SourceError, match="video_templates must be an integer >= 0"):
        Enroller(None, None, QualityGates(), video_templates=-1)
    done = cli("--video-templates", "-1", clip, gallery="bad", expect=2)
    assert "video_templates must be an integer >= 0" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list(redis_client.scan_iter("*bad*"))
