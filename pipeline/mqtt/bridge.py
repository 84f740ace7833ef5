"""The MQTT bridge: the gallery's event stream, read through a consumer group, published to a broker.

Delivery: an event is XACKed only once the broker acknowledged every message made from it (`wait_for_publish`
at the configured QoS), so while the broker is down the entries stay pending in Redis and are published, in
order, once it is back (at least once: a message whose acknowledgement was lost is sent again).

What the bridge keeps besides the group's pending entries is in Redis too, beside the stream (same hash slot):

    <stream>:<group>:presence   hash  person name -> JSON {last_seen, home}: presence survives a restart, so a
                                      person marked home before a crash is still set away on time
    <stream>:<group>:persons    hash  person name -> topic slug, for every person with a discovery config (a
                                      person removed from the gallery while the bridge was down is still removed)
    <stream>:<group>:cameras    hash  camera -> topic slug (slugs stay the same across restarts)
    <stream>:<group>:last       hash  camera -> the enrolled name its retained "last person" shows (cleared when
                                      that person is removed from the gallery)

Per event (never a face crop):
- `<prefix>/<gallery>/events/<type>/<camera>` the event as JSON;
- identity_confirmed: `camera/<camera>/last_person` (the name, or "unknown") and its attributes, retained; for an
  enrolled person `person/<person>/state` "home" and its attributes, retained. A person not seen for
  `presence_timeout_s` is set "not_home". Times: the event's own time when it is wall-clock time (live
  sources), else the time the bridge handled it (files carry media time).

Names are personal data: the bridge logs counts and entry ids, never names; the broker URL is logged redacted.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.core.errors import ConfigError, FacestreamError
from pipeline.core.urls import redact
from pipeline.events.consumer import StreamConsumer
from pipeline.events.record import IDENTITY_CONFIRMED, Event
from pipeline.events.sinks import events_key
from pipeline.mqtt.discovery import HOME, NOT_HOME, OFFLINE, ONLINE, Discovery
from pipeline.mqtt.topics import Topics, slug, slugs, stable_id

log = logging.getLogger(__name__)

WALL_CLOCK_AFTER = 1e9  # event times above this (2001) are wall-clock seconds; below, media time of a file
UNKNOWN = "unknown"


class BrokerUnavailable(FacestreamError):
    """A message could not be handed to the broker (not connected, refused, or no acknowledgement in time)."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca: str | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        """`mqtt://[user[:password]@]host[:port]` or `mqtts://...[?ca=/path/ca.pem]` (TLS; system CAs by default)."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"malformed MQTT URL {parts.scheme}://{parts.hostname or ''}...: bad port") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"unsupported MQTT URL {redact(url)}: use mqtt:// or mqtts://")
        if not parts.hostname:
            raise ConfigError(f"malformed MQTT URL {redact(url)}: no host")
        query = dict(parse_qsl(parts.query))
        unknown = set(query) - {"ca"}
        if unknown:
            raise ConfigError(f"MQTT URL {redact(url)}: unknown option(s) {', '.join(sorted(unknown))} (known: ca)")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username is not None else None,
                   unquote(parts.password) if parts.password is not None else None, query.get("ca"))


@dataclass(frozen=True)
class MqttSettings:
    """Plain settings of one bridge (the composition root fills them from the `mqtt` config section)."""

    gallery: str
    topic_prefix: str = "facestream"
    discovery_prefix: str = "homeassistant"
    client_id: str = "facestream"
    qos: int = 1
    presence_timeout_s: float = 300.0
    discovery: bool = True
    publish_timeout_s: float = 10.0  # for the broker's acknowledgement; then the entry is retried
    names_refresh_s: float = 30.0  # how often the gallery's names are read for discovery changes
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    block_ms: int = 500  # one XREADGROUP's wait; also how often presence timeouts are checked

    @classmethod
    def from_config(cls, cfg: Any, gallery: str, **overrides: Any) -> MqttSettings:
        """From an object with the `mqtt` section's fields (topic_prefix, discovery_prefix, client_id, qos,
        presence_timeout_s); `overrides` for the rest."""
        fields = {k: getattr(cfg, k) for k in ("topic_prefix", "discovery_prefix", "client_id", "qos",
                                               "presence_timeout_s") if hasattr(cfg, k)}
        return cls(gallery=gallery, **{**fields, **overrides})


def state_key(stream: str, group: str, what: str) -> str:
    return f"{stream}:{group}:{what}"


class MqttBridge:
    """`start()` connects (in the background, reconnecting with backoff) and runs the delivery thread; `stop()`
    says offline and disconnects. `names`: a callable returning the gallery's names (str, or objects with a
    `.name`, e.g. `GalleryStore.identities`); None: no per-person discovery, presence for any name seen."""

    def __init__(self, mqtt_url: str, consumer: StreamConsumer,
                 names: Callable[[], Iterable[Any]] | None, settings: MqttSettings):
        self.broker = Broker.parse(mqtt_url)
        self.shown_url = redact(mqtt_url)
        self.consumer, self.names_source, self.settings = consumer, names, settings
        self.redis = consumer.client
        self.topics = Topics(settings.topic_prefix, settings.gallery)
        self.discovery = Discovery(settings.discovery_prefix, self.topics)
        self.qos = int(settings.qos)
        self.published = self.failures = 0
        self.last_error: str | None = None
        self._keys = {what: state_key(consumer.stream, consumer.group, what)
                      for what in ("presence", "persons", "cameras", "last")}
        self._connected = threading.Event()
        self._announce = threading.Event()  # set on every (re)connect: availability and discovery again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._presence: dict[str, dict] = {}
        self._persons: dict[str, str] = {}  # name -> slug of the persons announced
        self._cameras: dict[str, str] = {}
        self._last_person: dict[str, str] = {}  # camera -> the enrolled name its "last person" shows
        self._names: set[str] | None = None
        self._names_read_at = 0.0
        self._loaded = False
        self._last_connect_error: str | None = None
        self.client = self._make_client()

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._stop.clear()
        log.info("MQTT bridge for gallery %s: broker %s, topics under %s", self.settings.gallery, self.shown_url,
                 self.topics.base)
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=int(self.settings.keepalive_s))
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.settings.gallery}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering (pending entries stay in Redis), publish "offline", disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._connected.is_set():
            try:
                info = self.client.publish(self.topics.availability, OFFLINE, qos=self.qos, retain=True)
                info.wait_for_publish(min(timeout, 2.0))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> dict:
        return {"connected": self.connected, "published": self.published, "failures": self.failures,
                "last_error": self.last_error, "handled": self.consumer.handled,
                "dead_letters": self.consumer.dead_letters}

    # -- the paho client -------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{self.settings.client_id}-{self.settings.gallery}",
                             protocol=mqtt.MQTTv311)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            if self.broker.ca is not None and not os.path.isfile(self.broker.ca):
                raise ConfigError(f"MQTT URL {self.shown_url}: ca file {self.broker.ca} not found")
            if self.broker.ca is not None:
                client.tls_set(ca_certs=self.broker.ca, cert_reqs=ssl.CERT_REQUIRED)
            else:
                client.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system's CAs
        client.will_set(self.topics.availability, OFFLINE, qos=max(1, self.qos), retain=True)
        client.reconnect_delay_set(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connect_problem(f"broker refused the connection: {reason_code}")
            return
        self._last_connect_error = None
        log.info("MQTT bridge connected to %s", self.shown_url)
        self._announce.set()
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning("MQTT bridge lost the broker %s (%s); reconnecting, events stay pending in Redis",
                        self.shown_url, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._connect_problem("cannot connect")

    def _connect_problem(self, what: str) -> None:
        if what != self._last_connect_error:  # once per distinct problem, not once per retry
            log.warning("MQTT broker %s: %s; retrying with backoff", self.shown_url, what)
            self._last_connect_error = what

    # -- the delivery thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._connected.wait(0.2):
                continue
            try:
                self._step()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - broker or Redis trouble: entries stay pending, retry
                failures += 1
                self.failures += 1
                self.last_error = self.consumer.last_error or f"{type(exc).__name__}: {exc}"
                self.consumer.last_error = None
                delay = min(5.0, 0.1 * 2.0 ** (failures - 1))
                log.warning("MQTT bridge: %s; retrying in %.1f s", self.last_error, delay)
                self._stop.wait(delay)

    def _step(self) -> None:
        if not self._loaded:
            self._load_state()
        if self._announce.is_set():
            self._announce.clear()
            try:
                self._announce_all()
            except Exception:
                self._announce.set()
                raise
        elif time.monotonic() - self._names_read_at >= self.settings.names_refresh_s:
            self._sync_persons()
        self._expire_presence()
        self.consumer.poll(self._handle, self.settings.block_ms)

    def _load_state(self) -> None:
        r = self.redis
        self._presence = {_text(k): json.loads(v) for k, v in r.hgetall(self._keys["presence"]).items()}
        self._persons = {_text(k): _text(v) for k, v in r.hgetall(self._keys["persons"]).items()}
        self._cameras = {_text(k): _text(v) for k, v in r.hgetall(self._keys["cameras"]).items()}
        self._last_person = {_text(k): _text(v) for k, v in r.hgetall(self._keys["last"]).items()}
        self._loaded = True

    # -- announcing ------------------------------------------------------------------------------------
    def _announce_all(self) -> None:
        messages = [(self.topics.availability, ONLINE, True)]
        if self.settings.discovery:
            for camera, camera_slug in self._cameras.items():
                topic, config = self.discovery.camera(camera, camera_slug)
                messages.append((topic, _json(config), True))
        self._publish(messages)
        self._sync_persons(force=True)

    def _read_names(self) -> set[str] | None:
        if self.names_source is None:
            return None
        names = {item if isinstance(item, str) else item.name for item in self.names_source()}
        self._names, self._names_read_at = names, time.monotonic()
        return names

    def _sync_persons(self, force: bool = False) -> None:
        """The gallery's persons: new ones get a discovery config (and a presence state), removed ones lose
        theirs, their retained presence and any camera's "last person" naming them; all of them are announced
        again when `force` (a new connection: the broker may have lost its retained messages)."""
        names = self._read_names()
        if names is None:
            return
        wanted = slugs(names)
        discovery = self.settings.discovery
        messages, gone, removed = [], [], []
        for name, old_slug in self._persons.items():
            if name not in wanted or wanted[name] != old_slug:
                messages += [(self.topics.person_state(old_slug), "", True),
                             (self.topics.person_attributes(old_slug), "", True)]
                if discovery and name not in wanted:
                    messages.append((self.discovery.person_topic(name), "", True))
                gone.append(name)
                if name not in wanted:
                    removed.append(name)
        cleared = [camera for camera, last in self._last_person.items() if last in removed]
        for camera in cleared:
            camera_slug = self._cameras.get(camera)
            if camera_slug is not None:
                messages += [(self.topics.camera_last_person(camera_slug), "", True),
                             (self.topics.camera_attributes(camera_slug), "", True)]
        added = {}
        for name, person_slug in sorted(wanted.items()):
            if force or self._persons.get(name) != person_slug:
                if discovery:
                    topic, config = self.discovery.person(name, person_slug)
                    messages.append((topic, _json(config), True))
                presence = self._presence.get(name)
                state = HOME if presence is not None and presence.get("home") else NOT_HOME
                messages.append((self.topics.person_state(person_slug), state, True))
                added[name] = person_slug
        if not messages:
            return
        self._publish(messages)
        pipe = self.redis.pipeline(transaction=False)
        for name in gone:
            self._persons.pop(name, None)
        for name in removed:
            pipe.hdel(self._keys["persons"], name)
            pipe.hdel(self._keys["presence"], name)
            self._presence.pop(name, None)
        for camera in cleared:
            pipe.hdel(self._keys["last"], camera)
            self._last_person.pop(camera, None)
        if added:
            pipe.hset(self._keys["persons"], mapping=added)
            self._persons.update(added)
        pipe.execute()
        if removed or not force:
            log.info("MQTT bridge: %d persons added, %d removed", len(set(added) - set(gone)), len(removed))

    # -- one event -------------------------------------------------------------------------------------
    def _handle(self, event: Event) -> None:
        data = event.to_json()
        data.pop("crop_jpeg_b64", None)  # never a face crop over MQTT
        data["gallery"] = self.settings.gallery
        camera_slug = self._camera_slug(event.camera) if event.camera else None
        messages = []
        new_camera = camera_slug is not None and event.camera not in self._cameras
        if new_camera and self.settings.discovery:
            topic, config = self.discovery.camera(event.camera, camera_slug)
            messages.append((topic, _json(config), True))
        messages.append((self.topics.event(slug(event.type) or "event", camera_slug), _json(data), False))
        presence = None
        if event.type == IDENTITY_CONFIRMED and camera_slug is not None:
            now = time.time()
            seen = min(now, event.time) if event.time > WALL_CLOCK_AFTER else now
            shown = event.identity if event.identity is not None else UNKNOWN
            messages += [(self.topics.camera_last_person(camera_slug), shown, True),
                         (self.topics.camera_attributes(camera_slug),
                          _json({"name": event.identity, "unknown_id": event.unknown_id, "time": event.time,
                                 "similarity": data["similarity"], "track": event.track,
                                 "event_id": event.event_id}), True)]
            person_slug = self._person_slug(event.identity) if event.identity is not None else None
            if person_slug is not None:
                last_seen = max(seen, float(self._presence.get(event.identity, {}).get("last_seen", 0.0)))
                home = now - last_seen < self.settings.presence_timeout_s
                presence = {"last_seen": last_seen, "home": home}
                messages += [(self.topics.person_state(person_slug), HOME if home else NOT_HOME, True),
                             (self.topics.person_attributes(person_slug),
                              _json({"name": event.identity, "camera": event.camera, "time": event.time,
                                     "similarity": data["similarity"], "last_seen": last_seen,
                                     "event_id": event.event_id}), True)]
        self._publish(messages)
        if new_camera:
            self._remember_camera(event.camera, camera_slug)
        if event.type == IDENTITY_CONFIRMED and camera_slug is not None:
            pipe = self.redis.pipeline(transaction=False)
            if event.identity is not None:
                pipe.hset(self._keys["last"], event.camera, event.identity)
                self._last_person[event.camera] = event.identity
            elif self._last_person.pop(event.camera, None) is not None:
                pipe.hdel(self._keys["last"], event.camera)
            if presence is not None:
                pipe.hset(self._keys["presence"], event.identity, _json(presence))
                self._presence[event.identity] = presence
            pipe.execute()

    def _camera_slug(self, camera: str) -> str:
        known = self._cameras.get(camera)
        if known is not None:
            return known
        base = slug(camera)
        taken = set(self._cameras.values())
        return base if base and base not in taken else stable_id(camera)

    def _remember_camera(self, camera: str, camera_slug: str) -> None:
        if not self.redis.hsetnx(self._keys["cameras"], camera, camera_slug):
            camera_slug = _text(self.redis.hget(self._keys["cameras"], camera))  # another bridge was first
        self._cameras[camera] = camera_slug

    def _person_slug(self, name: str) -> str | None:
        """The slug of an enrolled person; None for a name no longer in the gallery (no presence for it)."""
        if name in self._persons:
            return self._persons[name]
        if self.names_source is None:  # no gallery to ask: any name seen is a person
            return slugs({*self._presence, name})[name]
        self._sync_persons()  # enrolled since the last look?
        return self._persons.get(name)

    def _expire_presence(self) -> None:
        now = time.time()
        for name, presence in list(self._presence.items()):
            if not presence.get("home") or now - float(presence["last_seen"]) < self.settings.presence_timeout_s:
                continue
            person_slug = self._persons.get(name) if self.names_source is not None else slugs({*self._presence})[name]
            if person_slug is not None:
                self._publish([(self.topics.person_state(person_slug), NOT_HOME, True)])
            presence = {**presence, "home": False}
            self.redis.hset(self._keys["presence"], name, _json(presence))
            self._presence[name] = presence

    # -- publishing ------------------------------------------------------------------------------------
    def _publish(self, messages: list[tuple[str, str, bool]]) -> None:
        """Hand every message to the broker and wait for all the acknowledgements; BrokerUnavailable if any
        is missing (the caller then leaves its stream entry pending)."""
        infos = []
        for topic, payload, retain in messages:
            if not self._connected.is_set():
                raise BrokerUnavailable(f"not connected to the MQTT broker {self.shown_url}")
            info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"publish to {self.shown_url} failed: {mqtt.error_string(info.rc)}")
            infos.append(info)
        deadline = time.monotonic() + self.settings.publish_timeout_s
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                raise BrokerUnavailable(f"publish to {self.shown_url} failed: {exc}") from None
            if not info.is_published():
                raise BrokerUnavailable(f"no acknowledgement from {self.shown_url} within "
                                        f"{self.settings.publish_timeout_s:.0f} s")
        self.published += len(infos)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bridge_for(redis_client: Any, gallery: str, cfg: Any, names: Callable[[], Iterable[Any]] | None = None,
               *, consumer: str | None = None, start_id: str = "$", **overrides: Any) -> MqttBridge:
    """The bridge of `gallery` from the `mqtt` config section `cfg` (url, group, and the MqttSettings fields):
    reads `events_key(gallery)` with group `cfg.group` as consumer `consumer` (default `<client_id>-<gallery>`:
    stable across restarts, so its own pending entries are picked up again). Not started."""
    if not getattr(cfg, "url", None):
        raise ConfigError("mqtt.url is not set: no broker to publish to")
    settings = MqttSettings.from_config(cfg, gallery, **overrides)
    reader = StreamConsumer(redis_client, events_key(gallery), getattr(cfg, "group", "mqtt"),
                            consumer or f"{settings.client_id}-{gallery}", start_id=start_id)
    return MqttBridge(cfg.url, reader, names, settings)
