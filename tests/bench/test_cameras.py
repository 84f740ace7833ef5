"""bench.cameras: its metrics on hand-made events, the static scene it streams, one tiny real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.cameras_metrics import (
    cpu_percent,
    faces_lost,
    naming_times,
    percentile,
    process_cpu_s,
    track_counts,
)
from bench.cameras_scene import face_cut, hide_faces, walker_position, write_scene

REPO = Path(__file__).resolve().parents[2]


def event(type_, camera, track, frame, **more):
    return {"type": type_, "camera": camera, "track": track, "frame": frame, "time": frame / 25.0,
            "identity": None, **more}


# cam0: track 1 starts at frame 10 (tracker confirms at 16), named at frame 35, named again at 70;
#       track 2 is split off track 1 at 50 and named at 60 (a re-naming, not a new face);
#       track 3 is confirmed by the tracker but never named.
# cam1: track 1 starts at frame 0, named at 25.
EVENTS = [
    event("track_started", "cam0", 1, 16),
    event("identity_confirmed", "cam0", 1, 35, emitted_s=101.9),
    event("track_started", "cam0", 2, 50, extra={"split_from": 1}),
    event("track_ended", "cam0", 1, 50, extra={"first_frame": 10, "last_frame": 50, "reason": "split"}),
    event("identity_confirmed", "cam0", 2, 60, emitted_s=103.0),
    event("identity_confirmed", "cam0", 1, 70, emitted_s=104.0),
    event("track_started", "cam0", 3, 80),
    event("track_ended", "cam0", 3, 90, extra={"first_frame": 77, "last_frame": 90}),
    event("track_started", "cam1", 1, 6),
    event("identity_confirmed", "cam1", 1, 25, identity="Ada", emitted_s=201.5),
    event("track_ended", "cam1", 1, 40, extra={"first_frame": 0, "last_frame": 40}),
]


def test_time_to_name_runs_from_the_tracks_first_frame_to_its_first_confirmation_on_the_wall_clock():
    # cam0's clock: media time 0 was delivered at monotonic 100.0, so frame 10 came at 100.4.
    rows = {r["camera"]: r for r in naming_times(EVENTS, 25.0, {"cam0": 100.0, "cam1": 200.0})}
    assert len(naming_times(EVENTS, 25.0)) == 2  # the split-off track and the re-confirmation are left out
    assert rows["cam0"]["first_frame"] == 10 and rows["cam0"]["frame"] == 35
    assert rows["cam0"]["media_s"] == pytest.approx(1.0)  # (35 - 10) / 25
    assert rows["cam0"]["time_to_name_s"] == pytest.approx(101.9 - 100.4)
    assert rows["cam0"]["lag_s"] == pytest.approx(0.5)
    assert rows["cam0"]["unknown"] and not rows["cam1"]["unknown"]
    assert rows["cam1"]["time_to_name_s"] == pytest.approx(1.5)


def test_time_to_name_without_clocks_is_media_time_and_falls_back_to_the_confirmation_frame():
    cut_short = [event("track_started", "a", 4, 20), event("identity_confirmed", "a", 4, 45)]
    (row,) = naming_times(cut_short, {"a": 10.0})  # no track_ended: the tracker's confirmation frame bounds it
    assert row["first_frame"] == 20 and row["time_to_name_s"] == pytest.approx(2.5) and row["lag_s"] == 0


def test_tracks_and_named_tracks_per_camera_leave_split_offs_out():
    assert track_counts(EVENTS) == {"cam0": {"tracks": 2, "named": 1}, "cam1": {"tracks": 1, "named": 1}}


@pytest.mark.parametrize("named, baseline, lost, per_camera, ratio", [
    ({"cam0": 3, "cam1": 3}, 3, 0, {"cam0": 0, "cam1": 0}, 1.0),
    ({"cam0": 3, "cam1": 1, "cam2": 4}, 3, 2, {"cam0": 0, "cam1": 2, "cam2": 0}, 0.889),  # 8 / 9
    ({"cam0": 0}, 2, 2, {"cam0": 2}, 0.0),
    ({"cam0": 1}, 0, 0, {"cam0": 0}, None),  # nothing named with one camera: no ratio
])
def test_faces_lost_counts_named_tracks_missing_against_the_one_camera_run(named, baseline, lost, per_camera,
                                                                          ratio):
    result = faces_lost(named, baseline)
    assert result == {"faces_lost": lost, "faces_lost_per_camera": per_camera, "named_ratio": ratio}
    assert faces_lost(named, None)["faces_lost"] is None


def test_cpu_percent_of_one_core_and_of_the_machine():
    assert cpu_percent(3.0, 2.0, cores=2) == {"of_one_core": 150.0, "of_machine": 75.0, "cores": 2}
    assert cpu_percent(1.0, 0.0, cores=2)["of_one_core"] == 0.0
    before = process_cpu_s()
    sum(i * i for i in range(300_000))  # burn a little CPU: the process's own clock moves
    assert process_cpu_s() > before


def test_percentiles_of_nothing_are_none():
    assert percentile([], 50) is None and percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_the_static_scene_is_a_readable_video_of_the_requested_length_where_a_face_walks_across(tmp_path,
                                                                                               shared_data):
    photo = cv2.imread(str(shared_data / "lfw" / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"))
    face = face_cut(photo, height=60)
    background = np.full((90, 160, 3), 120, np.uint8)
    path = write_scene(tmp_path / "scene.mp4", background, [face], seconds=2.0, fps=10.0, walks=(0.5,),
                       walk_s=1.0)
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image.astype(np.float32))
    capture.release()
    assert len(frames) == 20 and frames[0].shape == (90, 160, 3)
    still = np.abs(frames[1] - frames[0]).mean()
    walking = np.abs(frames[10] - frames[0]).mean()  # t = 1.0 s: the face is half-way across
    assert still < 4 < walking, (still, walking)
    assert not list(tmp_path.glob("*.partial*"))


def test_walker_positions_and_hidden_faces():
    assert walker_position(0.0, 1.0, 2.0, 100, 20) is None
    assert walker_position(1.0, 1.0, 2.0, 100, 20) == -20 and walker_position(3.0, 1.0, 2.0, 100, 20) == 100
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    hidden = hide_faces(image, [(40, 40, 60, 60)], block=10)
    assert (hidden[:30] == image[:30]).all()
    assert hidden[45:55, 45:55].std() < image[45:55, 45:55].std()


@pytest.mark.slow
def test_a_tiny_real_run_reports_the_issue_keys(tmp_path, shared_data):
    plot = tmp_path / "cameras.png"
    proc = subprocess.run([sys.executable, "-m", "bench.cameras", "--quick", "--kinds", "720p", "--counts", "1",
                           "--seconds", "2", "--json", "--plot", str(plot)],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    (row,) = result["cameras"]
    assert {"n", "resolution", "static", "fps_per_camera", "dropped", "cpu_percent", "time_to_name_p50_s"} <= set(row)
    assert (row["n"], row["resolution"], row["static"]) == (1, "720p", False)
    assert 0 < row["fps_per_camera"] <= 26  # paced at the clip's 25 fps
    assert row["faces_lost"] == 0 and {"machine", "settings", "targets"} <= set(result)
    assert plot.stat().st_size > 10_000
