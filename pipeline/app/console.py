"""The console's composition (serve.py): config -> the operator, the Redis client, API keys, browser sessions and
the `console` section's limits, handed to pipeline.api.create_app as built services."""

from __future__ import annotations

from pathlib import Path

from pipeline.api.access import ApiKeys, Sessions
from pipeline.api.services import Limits, Services
from pipeline.app.config import AppConfig
from pipeline.app.operator import Operator
from pipeline.app.services import redis_client


def console_limits(cfg: AppConfig) -> Limits:
    c = cfg.console
    return Limits(max_upload_bytes=c.max_upload_bytes, max_upload_pixels=c.max_upload_pixels,
                  recognize_per_minute=c.recognize_per_minute, session_hours=c.session_hours,
                  retention_days=cfg.unknowns.retention_days)


def console_services(cfg: AppConfig, gallery: str, model: Path, redis_url: str | None = None,
                     client=None) -> Services:
    """Everything the console serves, for one gallery; `client` (a test's Redis) instead of connecting."""
    client = client if client is not None else redis_client(cfg, redis_url)
    limits = console_limits(cfg)
    keys = ApiKeys(client)
    operator = Operator(cfg, client, gallery, model, max_pixels=limits.max_upload_pixels)
    return Services(operator=operator, client=client, gallery=gallery, keys=keys,
                    sessions=Sessions(client, keys, limits.session_hours), limits=limits)


def api_keys(cfg: AppConfig, redis_url: str | None = None) -> ApiKeys:
    """The key store (enroll.py keys)."""
    return ApiKeys(redis_client(cfg, redis_url))


def mqtt_bridge(cfg: AppConfig, services: Services):
    """The MQTT bridge of the console's gallery (pipeline/mqtt), not started; None when `mqtt.url` is unset.
    Home Assistant's per-person sensors follow the gallery's identities."""
    if not cfg.mqtt.url:
        return None
    from pipeline.mqtt import bridge_for

    store = services.operator.store
    return bridge_for(services.client, services.gallery, cfg.mqtt, store.identities)
