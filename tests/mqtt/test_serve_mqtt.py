"""serve.py's MQTT bridge end to end: a real mosquitto, a real serve.py process (--mqtt-only), and a real
streaming session on the Hamilton clip writing to the gallery's event stream: Lin-Manuel Miranda's confirmation
arrives on its topic, his presence turns home, and the broker's Home Assistant discovery lists him."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.app.config import load_app_config
from pipeline.app.session import RunOptions, Session

REPO = Path(__file__).resolve().parents[2]
CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
LIN = "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png"
GALLERY = "test-serve-mqtt"


def test_a_recognised_person_reaches_mqtt_through_serve(redis_server, shared_data, enrol_photos, mosquitto,
                                                         subscribers):
    enrol_photos(GALLERY, {"Lin-Manuel Miranda": LIN})
    subscriber = subscribers(mosquitto.port)
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "--mqtt-only", "--gallery", GALLERY,
                             "--redis-url", redis_server.url, "--set", f"mqtt.url=mqtt://127.0.0.1:{mosquitto.port}",
                             "--log-level", "WARNING"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        online = f"facestream/{GALLERY}/availability"
        assert subscriber.wait(lambda: subscriber.last(online) == "online", 60), proc.stderr.read1().decode()
        session = Session(load_app_config(None, []), RunOptions(sources=[("stage", str(shared_data / CLIP))],
                                                                 gallery=GALLERY, redis_url=redis_server.url))
        try:
            session.run()
        finally:
            session.close()
        topic = f"facestream/{GALLERY}/events/identity_confirmed/stage"
        assert subscriber.wait(lambda: subscriber.on(topic), 20), sorted(subscriber.topics_seen())
        confirmed = json.loads(subscriber.on(topic)[0])
        assert confirmed["identity"] == "Lin-Manuel Miranda" and "crop_jpeg_b64" not in confirmed
        state = f"facestream/{GALLERY}/person/lin_manuel_miranda/state"
        assert subscriber.wait(lambda: subscriber.last(state) == "home", 10)
        discovery = [t for t in subscriber.topics_seen() if t.startswith("homeassistant/binary_sensor/")]
        assert discovery and json.loads(subscriber.last(discovery[0]))["device_class"] == "presence"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # A clean stop says so: the retained availability is "offline".
    assert subscriber.wait(lambda: subscriber.last(online) == "offline", 10)
