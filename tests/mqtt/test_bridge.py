"""The MQTT bridge against a real mosquitto and a real Redis: topics and payloads, retained presence, the last
will, Home Assistant discovery, and no event lost through a broker outage."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import time

import pytest

from pipeline.core.errors import ConfigError
from pipeline.events import (
    IDENTITY_CONFIRMED,
    TRACK_ENDED,
    TRACK_STARTED,
    Event,
    StreamConsumer,
    events_key,
    groups,
)
from pipeline.events.sinks import _fields
from pipeline.mqtt import (
    Broker,
    MqttBridge,
    MqttSettings,
    bridge_for,
    slug,
    slugs,
    stable_id,
)
from pipeline.mqtt.topics import Topics

from .conftest import Mosquitto, wait_until

GALLERY = "test"
STREAM = events_key(GALLERY)
BASE = f"facestream/{GALLERY}"
CA = "/etc/ssl/certs/ca-certificates.crt"


def sighting(n: int, name: str | None = "Ann Lee", camera: str = "Front Door", type: str = IDENTITY_CONFIRMED,
             when: float | None = None, **kwargs) -> Event:
    return Event(type, camera, n, f"{camera}-t{n}", name, 0.83 if name else None, 10 * n,
                 time.time() if when is None else when, event_id=f"ev{n:03d}", **kwargs)


def add(client, *events: Event) -> None:
    for e in events:
        client.xadd(STREAM, _fields(e))


def make_bridge(redis_client, url, names=None, consumer="bridge-1", **settings) -> MqttBridge:
    options = {"presence_timeout_s": 30.0, "block_ms": 50, "names_refresh_s": 0.2, "publish_timeout_s": 2.0,
               "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
    options.update(settings)
    reader = StreamConsumer(redis_client, STREAM, "mqtt", consumer, start_id="0", claim_idle_ms=60_000)
    return MqttBridge(url, reader, names, MqttSettings(GALLERY, **options))


def pending(redis_client) -> int:
    return redis_client.xpending(STREAM, "mqtt")["pending"]


def all_delivered(redis_client) -> bool:
    info = groups(redis_client, STREAM)
    return bool(info) and info[0]["pending"] == 0 and info[0]["lag"] == 0


@pytest.fixture
def bridges():
    made: list[MqttBridge] = []

    def start(bridge: MqttBridge) -> MqttBridge:
        made.append(bridge.start())
        return bridge
    yield start
    for b in made:
        b.stop(2.0)


def test_topics_payloads_presence_and_discovery(redis_client, mosquitto, subscribers, bridges):
    names = ["Ann Lee", "Bob"]
    sub = subscribers(mosquitto.port)
    bridge = bridges(make_bridge(redis_client, mosquitto.url, lambda: list(names)))
    assert sub.wait(lambda: sub.last(f"{BASE}/availability") == "online")
    add(redis_client,
        sighting(1, type=TRACK_STARTED, name=None),
        sighting(2, crop_jpeg_b64="AAAA"),  # a crop in the stream never goes out over MQTT
        sighting(3, name=None, camera="cam0", unknown_id="unknown-1a2b3c4d"),
        Event.merged("unknown-1a2b3c4d", ["unknown-99"], 0.9, time.time()),
        sighting(5, type=TRACK_ENDED))
    assert sub.wait(lambda: all_delivered(redis_client) and sub.on(f"{BASE}/events/track_ended/front_door"))

    confirmed = json.loads(sub.last(f"{BASE}/events/identity_confirmed/front_door"))
    assert confirmed["identity"] == "Ann Lee" and confirmed["event_id"] == "ev002" and confirmed["similarity"] == 0.83
    assert confirmed["gallery"] == GALLERY and "crop_jpeg_b64" not in confirmed
    assert not any("AAAA" in p for _, p, _ in sub.messages)
    assert sub.json(f"{BASE}/events/track_started/front_door")["event_id"] == "ev001"
    merged = sub.json(f"{BASE}/events/unknown_merged")
    assert merged["unknown_id"] == "unknown-1a2b3c4d" and merged["extra"] == {"merged": ["unknown-99"]}
    assert sub.json(f"{BASE}/events/identity_confirmed/cam0")["unknown_id"] == "unknown-1a2b3c4d"

    # Retained state, as a subscriber connecting now sees it.
    late = subscribers(mosquitto.port, topics=(f"{BASE}/#", "homeassistant/#"))
    discovery = lambda: [t for t in late.topics_seen() if t.startswith("homeassistant/")]
    # Retained messages arrive in no set order: wait for the last of each kind the checks below read.
    assert late.wait(lambda: late.last(f"{BASE}/person/ann_lee/attributes") is not None)
    late.wait(lambda: late.last(f"{BASE}/camera/cam0/attributes") is not None and len(discovery()) >= 4)
    assert all(retain for topic, _, retain in late.messages)  # only retained ones: nothing new was published
    assert late.last(f"{BASE}/availability") == "online"
    assert late.last(f"{BASE}/person/ann_lee/state") == "home"
    attributes = late.json(f"{BASE}/person/ann_lee/attributes")
    assert attributes["camera"] == "Front Door" and attributes["similarity"] == 0.83 and attributes["name"] == "Ann Lee"
    assert late.last(f"{BASE}/person/bob/state") == "not_home"  # enrolled, never seen
    assert late.last(f"{BASE}/camera/front_door/last_person") == "Ann Lee"
    assert late.last(f"{BASE}/camera/cam0/last_person") == "unknown"
    assert late.json(f"{BASE}/camera/cam0/attributes")["unknown_id"] == "unknown-1a2b3c4d"
    assert not any("/events/" in t for t in late.topics_seen())  # events are not retained

    # Home Assistant discovery.
    node = "facestream_test"
    ann = late.json(f"homeassistant/binary_sensor/{node}/person_{stable_id('Ann Lee')}/config")
    assert ann["device_class"] == "presence" and ann["name"] == "Ann Lee"
    assert ann["unique_id"] == f"{node}_person_{stable_id('Ann Lee')}"
    assert ann["state_topic"] == f"{BASE}/person/ann_lee/state"
    assert ann["json_attributes_topic"] == f"{BASE}/person/ann_lee/attributes"
    assert (ann["payload_on"], ann["payload_off"]) == ("home", "not_home")
    assert ann["availability_topic"] == f"{BASE}/availability" and ann["device"]["identifiers"] == [node]
    door = late.json(f"homeassistant/sensor/{node}/camera_{stable_id('Front Door')}/config")
    assert door["state_topic"] == f"{BASE}/camera/front_door/last_person"
    assert door["json_attributes_topic"] == f"{BASE}/camera/front_door/attributes"
    assert door["unique_id"] == f"{node}_camera_{stable_id('Front Door')}" and door["device"] == ann["device"]
    configs = discovery()
    assert len(configs) == 4  # Ann, Bob, Front Door, cam0
    assert len({late.json(t)["unique_id"] for t in configs}) == 4

    # A person removed from the gallery: the config and the retained presence are deleted.
    names.remove("Bob")
    bob = f"homeassistant/binary_sensor/{node}/person_{stable_id('Bob')}/config"
    assert sub.wait(lambda: sub.last(bob) == "")
    assert sub.last(f"{BASE}/person/bob/state") == ""
    gone = subscribers(mosquitto.port, topics=(f"{BASE}/#", "homeassistant/#"))
    assert gone.wait(lambda: gone.last(f"{BASE}/person/ann_lee/state") is not None)
    time.sleep(0.2)
    assert gone.last(bob) is None and gone.last(f"{BASE}/person/bob/state") is None
    # Removing the person a camera last saw clears that camera's retained "last person" too.
    names.remove("Ann Lee")
    assert sub.wait(lambda: sub.last(f"{BASE}/camera/front_door/last_person") == "")
    assert sub.last(f"{BASE}/person/ann_lee/attributes") == "" and sub.last(f"{BASE}/camera/cam0/last_person") == "unknown"
    assert wait_until(lambda: redis_client.hgetall(f"{STREAM}:mqtt:presence") == {}
                      and redis_client.hgetall(f"{STREAM}:mqtt:last") == {} and redis_client.hlen(f"{STREAM}:mqtt:persons") == 0)
    assert bridge.stats()["failures"] == 0 and pending(redis_client) == 0


def test_presence_times_out_and_survives_a_restart(redis_client, mosquitto, subscribers, bridges):
    sub = subscribers(mosquitto.port)
    names = lambda: ["Ann Lee"]
    first = bridges(make_bridge(redis_client, mosquitto.url, names, presence_timeout_s=1.0))
    add(redis_client, sighting(1))
    assert sub.wait(lambda: sub.last(f"{BASE}/person/ann_lee/state") == "home")
    assert sub.wait(lambda: sub.last(f"{BASE}/person/ann_lee/state") == "not_home", 5)
    # Seen again, then the bridge dies while the person is home: the next one sets them away on time.
    add(redis_client, sighting(2))
    assert sub.wait(lambda: sub.last(f"{BASE}/person/ann_lee/state") == "home")
    first._stop.set()
    first._thread.join(2)
    first.client.loop_stop()  # gone without a word: no timer left in any process
    first.client.socket().close()
    first._connected.clear()
    started = time.monotonic()
    bridges(make_bridge(redis_client, mosquitto.url, names, presence_timeout_s=1.0))
    assert sub.wait(lambda: sub.last(f"{BASE}/person/ann_lee/state") == "not_home", 5)
    assert time.monotonic() - started < 3
    # An old sighting handled late (a replay after an outage) does not make the person home.
    add(redis_client, sighting(3, when=time.time() - 60))
    assert sub.wait(lambda: sub.on(f"{BASE}/events/identity_confirmed/front_door")[-1:] and
                    json.loads(sub.on(f"{BASE}/events/identity_confirmed/front_door")[-1])["event_id"] == "ev003")
    assert sub.wait(lambda: all_delivered(redis_client))
    assert sub.last(f"{BASE}/person/ann_lee/state") == "not_home"


def test_availability_last_will_when_the_connection_dies(redis_client, mosquitto, subscribers, bridges):
    sub = subscribers(mosquitto.port, topics=(f"{BASE}/#",))
    bridge = bridges(make_bridge(redis_client, mosquitto.url))
    assert sub.wait(lambda: sub.on(f"{BASE}/availability")[-1:] == ["online"])
    bridge.client.socket().shutdown(socket.SHUT_RDWR)  # the TCP connection dies without a DISCONNECT
    assert sub.wait(lambda: "offline" in sub.on(f"{BASE}/availability"))  # the broker sent the last will
    assert sub.wait(lambda: sub.on(f"{BASE}/availability")[-1:] == ["online"])  # reconnected
    add(redis_client, sighting(1))
    assert sub.wait(lambda: sub.on(f"{BASE}/events/identity_confirmed/front_door"))
    bridge.stop(2.0)  # a clean stop says offline too
    assert sub.wait(lambda: sub.on(f"{BASE}/availability")[-1:] == ["offline"])


def test_no_event_lost_through_a_broker_restart(redis_client, mosquitto, subscribers, bridges):
    events_topic = f"{BASE}/events/identity_confirmed/front_door"
    sub = subscribers(mosquitto.port, topics=(f"{BASE}/events/#",), client_id="watcher", persistent=True)
    bridge = bridges(make_bridge(redis_client, mosquitto.url))
    add(redis_client, *(sighting(i) for i in range(5)))
    assert sub.wait(lambda: len(sub.on(events_topic)) >= 5)
    mosquitto.stop()
    assert wait_until(lambda: not bridge.connected, 5)
    add(redis_client, *(sighting(i) for i in range(5, 15)))
    time.sleep(0.3)
    assert not all_delivered(redis_client)  # nothing acked while the broker is away
    mosquitto.start()  # same port, same persistence file (the watcher's session survives)
    assert sub.wait(lambda: len({json.loads(p)["event_id"] for p in sub.on(events_topic)}) == 15, 15)
    assert wait_until(lambda: all_delivered(redis_client), 5)
    ids = [json.loads(p)["event_id"] for p in sub.on(events_topic)]
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == [f"ev{i:03d}" for i in range(15)]  # all of them, in order (repeats allowed)


def test_unacknowledged_publishes_stay_pending_until_the_broker_answers(redis_client, mosquitto, subscribers,
                                                                         bridges):
    events_topic = f"{BASE}/events/identity_confirmed/front_door"
    sub = subscribers(mosquitto.port, topics=(f"{BASE}/events/#",))
    bridge = bridges(make_bridge(redis_client, mosquitto.url, publish_timeout_s=0.3))
    add(redis_client, sighting(0))
    assert sub.wait(lambda: sub.on(events_topic))
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # connected, but no PUBACK comes
    try:
        add(redis_client, sighting(1), sighting(2))
        assert wait_until(lambda: bridge.failures >= 1 and pending(redis_client) >= 1, 5)
        assert "acknowledgement" in bridge.last_error
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    assert sub.wait(lambda: {"ev001", "ev002"} <= {json.loads(p)["event_id"] for p in sub.on(events_topic)})
    assert wait_until(lambda: all_delivered(redis_client), 5)
    ids = list(dict.fromkeys(json.loads(p)["event_id"] for p in sub.on(events_topic)))
    assert ids == ["ev000", "ev001", "ev002"]


def test_user_and_password_never_logged(redis_client, tmp_path, subscribers, bridges, caplog):
    broker = Mosquitto(tmp_path / "auth", users={"cam": "s3cr%t pw"}).start()
    try:
        url = f"mqtt://cam:s3cr%25t%20pw@127.0.0.1:{broker.port}"
        sub = subscribers(broker.port, topics=(f"{BASE}/#",), auth=("cam", "s3cr%t pw"))
        caplog.set_level(logging.DEBUG)
        wrong = make_bridge(redis_client, f"mqtt://cam:wrong-pw@127.0.0.1:{broker.port}", consumer="wrong")
        bridges(wrong)
        add(redis_client, sighting(1))
        assert wait_until(lambda: "refused" in caplog.text, 5)
        assert not wrong.connected and groups(redis_client, STREAM) == []  # it never read what it cannot deliver
        wrong.stop(1.0)
        bridge = bridges(make_bridge(redis_client, url))
        assert sub.wait(lambda: sub.on(f"{BASE}/events/identity_confirmed/front_door"))
        assert bridge.shown_url == f"mqtt://cam:***@127.0.0.1:{broker.port}"
        assert "s3cr" not in caplog.text and "wrong-pw" not in caplog.text and "***" in caplog.text
    finally:
        broker.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")
def test_tls_broker_with_its_own_ca(redis_client, tmp_path, subscribers, bridges, caplog):
    broker = Mosquitto(tmp_path / "tls", tls=True).start()
    try:
        sub = subscribers(broker.port, topics=(f"{BASE}/#",))  # the plain listener of the same broker
        untrusted = bridges(make_bridge(redis_client, f"mqtts://127.0.0.1:{broker.tls_port}", consumer="x"))
        assert wait_until(lambda: "cannot connect" in caplog.text, 5)  # the system CAs do not know ours
        assert not untrusted.connected
        untrusted.stop(1.0)
        bridges(make_bridge(redis_client, f"mqtts://127.0.0.1:{broker.tls_port}?ca={broker.ca}"))
        add(redis_client, sighting(1))
        assert sub.wait(lambda: sub.on(f"{BASE}/events/identity_confirmed/front_door"))
        assert sub.last(f"{BASE}/availability") == "online"
    finally:
        broker.stop()


@pytest.mark.skipif(not os.path.isfile(CA), reason=f"no system CA bundle at {CA}")
def test_bridge_for_builds_from_a_config_section(redis_client):
    class Section:  # the fields of pipeline.app.config.MqttConfig
        url, topic_prefix, discovery_prefix, client_id, qos, presence_timeout_s, group = (
            f"mqtts://u:p@broker.example:8884?ca={CA}", "fs", "ha", "home", 2, 60.0, "mqtt-x")
    bridge = bridge_for(redis_client, GALLERY, Section(), list)
    assert bridge.broker == Broker("broker.example", 8884, True, "u", "p", CA)
    assert bridge.consumer.group == "mqtt-x" and bridge.consumer.consumer == "home-test"
    assert bridge.consumer.stream == STREAM and bridge.topics.base == "fs/test" and bridge.qos == 2
    assert bridge.discovery.person_topic("Ann").startswith("ha/binary_sensor/fs_test/person_ann_")
    assert bridge.settings.presence_timeout_s == 60.0
    Section.url = None
    with pytest.raises(ConfigError):
        bridge_for(redis_client, GALLERY, Section())
    Section.url = "mqtts://u:topsecret@h?ca=/nowhere/ca.pem"
    with pytest.raises(ConfigError, match="ca file /nowhere/ca.pem not found") as err:
        bridge_for(redis_client, GALLERY, Section())
    assert "topsecret" not in str(err.value)


def test_broker_urls():
    assert Broker.parse("mqtt://h") == Broker("h", 1883, False)
    assert Broker.parse("mqtts://h") == Broker("h", 8883, True)
    parsed = Broker.parse("mqtt://a%40b:p%3Aw@h:1")
    assert (parsed.username, parsed.password, parsed.port) == ("a@b", "p:w", 1)
    for bad in ("http://h", "mqtt://", "mqtt://h:x", "mqtt://h?cafile=x"):
        with pytest.raises(ConfigError) as err:
            Broker.parse(bad.replace("//", "//u:topsecret@") if bad != "mqtt://" else bad)
        assert "topsecret" not in str(err.value)


def test_slugs_are_topic_safe_and_unique():
    assert slug("José Núñez") == "jose_nunez" and slug("Front Door #2/+") == "front_door_2" and slug("李雷") == ""
    found = slugs(["Ann Lee", "ann-lee", "ann_lee", "Bob", "李雷", "王芳"])
    assert found["ann_lee"] == "ann_lee" and found["Bob"] == "bob"
    assert found["Ann Lee"].startswith("ann_lee_") and found["ann-lee"].startswith("ann_lee_")
    assert len(set(found.values())) == len(found)
    assert all(c.isascii() and (c.isalnum() or c == "_") and not c.isupper() for s in found.values() for c in s)
    assert stable_id("Ann Lee") == stable_id("Ann Lee") != stable_id("ann lee")
    t = Topics("facestream", "main")
    assert t.event("unknown_merged", None) == "facestream/main/events/unknown_merged"
    assert t.event("track_started", "cam0") == "facestream/main/events/track_started/cam0"
