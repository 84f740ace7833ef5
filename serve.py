#!/usr/bin/env python
"""facestream console: the web console and the REST API (/api/v1, OpenAPI docs at /api/v1/docs) over the
gallery, the event stream, the unknown people and the workers' live snapshots in Redis. A separate process:
it serves any number of run.py workers that share the Redis, and outlives their restarts.

    python serve.py [--host 127.0.0.1] [--port 8080] [--gallery NAME] [--redis-url URL] [--model CARD]
                    [--config FILE] [--set key=value ...]

Host and port default to the `console` section (127.0.0.1:8080: this machine only). Log in, or call the API,
with a key from `enroll.py keys create --role admin|viewer`. Exit status: 0 on Ctrl-C; 2 on an error.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from pipeline.core.errors import FacestreamError
from pipeline.core.logs import configure_logging

log = logging.getLogger("serve")
EXIT_ERROR = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pipeline.recognise.embedder import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=None, help="address to bind (default: console.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: console.port, 8080)")
    parser.add_argument("--gallery", default="default", help="gallery name (default: default)")
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: redis.url, else the embedded server)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="embedder model card (JSON)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--mqtt-only", action="store_true",
                        help="run only the MQTT bridge (mqtt.url), no web console")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        from pipeline.api import create_app
        from pipeline.app.config import load_app_config
        from pipeline.app.console import console_services, mqtt_bridge
        from pipeline.app.services import set_threads

        cfg = load_app_config(args.config, args.set)
        set_threads()
        host = args.host or cfg.console.host
        port = args.port or cfg.console.port
        if not 1 <= port <= 65535:
            raise FacestreamError(f"--port must be 1-65535, got {port}")
        services = console_services(cfg, args.gallery, args.model, args.redis_url)
        bridge = mqtt_bridge(cfg, services)
        if args.mqtt_only and bridge is None:
            raise FacestreamError("--mqtt-only needs mqtt.url (e.g. --set mqtt.url=mqtt://127.0.0.1:1883)")
        app = None if args.mqtt_only else create_app(services)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if bridge is not None:
        bridge.start()  # publishes from the event stream in its own thread; a broker outage loses nothing
        log.info("MQTT bridge for gallery %r to %s", args.gallery, bridge.shown_url)
    try:
        return run_console(app, host, port, args) if app is not None else wait_for_interrupt()
    finally:
        if bridge is not None:
            bridge.stop()


def wait_for_interrupt() -> int:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


def run_console(app, host: str, port: int, args: argparse.Namespace) -> int:
    import uvicorn

    if not is_loopback(host):
        log.warning("binding %s: the console is reachable from other machines; keys and the login guard it, but "
                    "traffic is plain HTTP unless a TLS proxy sits in front", host)
    log.info("console for gallery %r on http://%s:%d/ (API docs: /api/v1/docs)", args.gallery, host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level=args.log_level.lower(), access_log=False,
                    server_header=False)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
