"""run.py as users call it: a clip with a summary, Ctrl-C, photos, and one-line errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import CLIP, demo_gallery  # noqa: F401 - the module fixture enrolling the clip's people

import run

REPO = Path(__file__).resolve().parents[2]


def run_py(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_clip_end_to_end_writes_events_video_summary_and_config(tmp_path, redis_server, shared_data, demo_gallery):
    proc = run_py("--source", str(shared_data / CLIP), "--gallery", demo_gallery, "--redis-url", redis_server.url,
                  "--events", str(tmp_path / "events.jsonl"), "--output-video", str(tmp_path / "annotated.mp4"),
                  "--summary-json", str(tmp_path / "summary.json"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "identities  Lin-Manuel Miranda" in out and "frames      275" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 275 and summary["interrupted"] is False
    assert set(summary["identities_seen"]) == {"Lin-Manuel Miranda"}
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["identity"] for e in events if e["type"] == "identity_confirmed"} == {"Lin-Manuel Miranda"}
    assert (tmp_path / "annotated.mp4").stat().st_size > 100_000
    assert (tmp_path / "config.resolved.yaml").is_file()
    stream = redis_server.client().xrange(f"fs:{{{demo_gallery}}}:events")
    assert len(stream) >= len(events)  # this run's events are in the gallery's stream too


def test_ctrl_c_stops_cleanly(tmp_path, redis_server, shared_data, demo_gallery):
    events, video = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    # Paced at the file's frame rate, so the clip is still playing when Ctrl-C comes.
    proc = run_py("--source", str(shared_data / CLIP), "--gallery", demo_gallery, "--redis-url", redis_server.url,
                  "--events", str(events), "--output-video", str(video), "--summary-json", str(tmp_path / "s.json"),
                  "--set", "sources.realtime=true")
    deadline = time.monotonic() + 60
    while not (video.exists() and video.stat().st_size > 0) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "(interrupted)" in out and "frames " in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["frames"] < 275
    text = events.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line complete JSON
    started = {e["track"] for e in records if e["type"] == "track_started"}
    assert started == {e["track"] for e in records if e["type"] == "track_ended"}  # tracks ended on the way out


@pytest.fixture
def keep_sigint():
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_photos_still_get_annotated_copies(tmp_path, redis_server, shared_data, demo_gallery, capsys, keep_sigint):
    photos = shared_data / "ageitgey_face_recognition_examples" / "reference_photos"
    code = run.main(["--source", str(photos), "--gallery", demo_gallery, "--redis-url", redis_server.url,
                     "--output", str(tmp_path)])
    assert code == 0
    records = json.loads((tmp_path / "detections.json").read_text())
    assert sorted(Path(r["image"]).name for r in records) == ["alex-lacamoire.png", "lin-manuel-miranda.png"]
    for record in records:
        assert Path(record["annotated"]).stat().st_size > 0
    names = {Path(r["image"]).stem: r["names"] for r in records}
    assert "Lin-Manuel Miranda" in names["lin-manuel-miranda"]
    assert "Alex Lacamoire" in names["alex-lacamoire"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 2


@pytest.mark.parametrize("args, message", [
    (["--source", "no/such/clip.mp4"], "video file not found: no/such/clip.mp4"),
    (["--source", "{clip}", "--show"], "opencv-python-headless"),
    (["--source", "{clip}", "--set", "run.detect_every=0"], "run.detect_every"),
    (["--source", "{clip}", "--source", "{photo}"], "cannot be mixed"),
])
def test_errors_are_one_line_and_exit_2(args, message, shared_data, capsys, keep_sigint, tmp_path):
    clip = str(shared_data / CLIP)
    photo = str(shared_data / "ageitgey_face_recognition_examples" / "reference_photos" / "alex-lacamoire.png")
    args = [a.format(clip=clip, photo=photo) for a in args]
    code = run.main(args + ["--redis-url", "redis://127.0.0.1:1/0", "--output-video", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("keep", [True, False])
def test_photos_give_unknown_faces_one_id_per_person_across_the_folder(tmp_path, redis_server, shared_data, capsys,
                                                                       keep_sigint, keep):
    """Three photos of Colin Powell and one of Tony Blair, nobody enrolled: one id for Powell's three faces,
    another for Blair's, parallel to boxes and names; with unknowns.keep=false nothing reaches Redis."""
    people = shared_data / "lfw" / "images"
    photos = [*sorted((people / "Colin_Powell").glob("*.jpg"))[:3], sorted((people / "Tony_Blair").glob("*.jpg"))[0]]
    gallery = f"test-photo-unknowns-{keep}"
    client = redis_server.client()
    for key in client.scan_iter(f"fs:{{{gallery}}}:*"):
        client.delete(key)
    args = [a for p in photos for a in ("--source", str(p))]
    code = run.main(args + ["--gallery", gallery, "--redis-url", redis_server.url, "--output", str(tmp_path),
                            "--set", f"unknowns.keep={str(keep).lower()}"])
    assert code == 0
    records = json.loads((tmp_path / "detections.json").read_text())
    main = {}
    for r in records:
        assert len(r["unknown_ids"]) == len(r["boxes"]) == len(r["names"])
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in r["boxes"]]
        main[Path(r["image"]).stem] = r["unknown_ids"][areas.index(max(areas))]
    powell = {v for k, v in main.items() if k.startswith("Colin")}
    assert len(powell) == 1 and None not in powell and main["Tony_Blair_0001"] not in powell | {None}
    kept = [k for k in client.scan_iter(f"fs:{{{gallery}}}:sight*")]
    assert bool(kept) == keep
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["unknown_people"] >= 2
