"""Home Assistant MQTT discovery: one device per gallery, a sensor per camera (the last person confirmed there)
and a presence binary sensor per enrolled person.

    <discovery_prefix>/sensor/<node>/camera_<camera id>/config          retained JSON config
    <discovery_prefix>/binary_sensor/<node>/person_<person id>/config   retained JSON config

`<node>` is `<topic prefix>_<gallery>` as a slug; the ids are `topics.stable_id` (slug + name hash), so an
entity keeps its unique_id for as long as its name exists. An empty retained payload on a config topic removes
the entity (what the bridge sends when a person leaves the gallery).
"""

from __future__ import annotations

from pipeline.mqtt.topics import Topics, slug, stable_id

ONLINE, OFFLINE = "online", "offline"
HOME, NOT_HOME = "home", "not_home"


class Discovery:
    def __init__(self, discovery_prefix: str, topics: Topics):
        self.prefix = discovery_prefix.strip("/")
        self.topics = topics
        self.node = slug(f"{topics.prefix}_{topics.gallery}") or "facestream"

    @property
    def device(self) -> dict:
        return {"identifiers": [self.node], "name": f"facestream {self.topics.gallery}",
                "manufacturer": "facestream", "model": "face recognition"}

    def _common(self, unique_id: str) -> dict:
        return {"unique_id": unique_id, "availability_topic": self.topics.availability,
                "payload_available": ONLINE, "payload_not_available": OFFLINE,
                "device": self.device, "origin": {"name": "facestream"}}

    def camera_topic(self, camera: str) -> str:
        return f"{self.prefix}/sensor/{self.node}/camera_{stable_id(camera)}/config"

    def camera(self, camera: str, camera_slug: str) -> tuple[str, dict]:
        """(config topic, config) of the sensor holding the last person confirmed on `camera`."""
        config = {"name": f"{camera} last person", **self._common(f"{self.node}_camera_{stable_id(camera)}"),
                  "state_topic": self.topics.camera_last_person(camera_slug),
                  "json_attributes_topic": self.topics.camera_attributes(camera_slug),
                  "icon": "mdi:face-recognition"}
        return self.camera_topic(camera), config

    def person_topic(self, name: str) -> str:
        return f"{self.prefix}/binary_sensor/{self.node}/person_{stable_id(name)}/config"

    def person(self, name: str, person_slug: str) -> tuple[str, dict]:
        """(config topic, config) of the presence sensor of enrolled person `name`."""
        config = {"name": name, **self._common(f"{self.node}_person_{stable_id(name)}"),
                  "device_class": "presence", "payload_on": HOME, "payload_off": NOT_HOME,
                  "state_topic": self.topics.person_state(person_slug),
                  "json_attributes_topic": self.topics.person_attributes(person_slug)}
        return self.person_topic(name), config
