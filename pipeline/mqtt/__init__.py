"""MQTT: the gallery's events from its Redis stream to a broker, with Home Assistant discovery (bridge.py).

Imports pipeline.core, pipeline.events and pipeline.redis only; serve.py (through pipeline.app) builds the
bridge with `bridge_for(redis_client, gallery, cfg.mqtt, names)` and calls `start()` / `stop()`.
"""

from pipeline.mqtt.bridge import (
    Broker,
    BrokerUnavailable,
    MqttBridge,
    MqttSettings,
    bridge_for,
    state_key,
)
from pipeline.mqtt.discovery import Discovery
from pipeline.mqtt.topics import Topics, slug, slugs, stable_id

__all__ = ["Broker", "BrokerUnavailable", "Discovery", "MqttBridge", "MqttSettings", "Topics", "bridge_for", "slug",
           "slugs", "stable_id", "state_key"]
