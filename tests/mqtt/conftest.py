"""A real mosquitto broker on a free loopback port, and a subscriber that records what it gets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


class Mosquitto:
    """`mosquitto -c <temp config>`: listener on 127.0.0.1:<port>, persistence in the temp folder (so a
    restart keeps retained messages and persistent sessions), optionally a password file."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, tls: bool = False):
        self.folder, self.port = Path(folder), free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {self.folder}/",
                 f"log_dest file {self.folder / 'mosquitto.log'}"]
        self.tls_port: int | None = None
        if tls:  # a second listener with TLS, its certificate signed by a CA made here (ca.pem)
            self.tls_port = free_port()
            self.ca = self._make_certificates()
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {self.ca}",
                      f"certfile {self.folder / 'server.pem'}", f"keyfile {self.folder / 'server.key'}"]
        if os.geteuid() == 0:  # as root mosquitto would switch to its own user, which cannot read pytest's tmp
            lines.append("user root")
        if users:
            passwords = self.folder / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([MOSQUITTO_PASSWD, *(["-c"] if i == 0 else []), "-b", str(passwords), user,
                                password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def _make_certificates(self) -> Path:
        d, ec = self.folder, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        for args in (["req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem", "-days", "1",
                      "-subj", "/CN=facestream test CA"],
                     ["req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=127.0.0.1"],
                     ["x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
                      "-CAcreateserial", "-out", d / "server.pem", "-days", "1", "-extfile", d / "san.ext"]):
            subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
        return d / "ca.pem"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        if not wait_until(self._listening, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {(self.folder / 'mosquitto.log').read_text()}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: saves the persistence file
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


class Subscriber:
    """A paho client recording (topic, payload text, retain) of everything under `topics`; subscribes again on
    every connect. `persistent`: a session the broker keeps while it is away (clean_session False)."""

    def __init__(self, port: int, topics=("#",), client_id: str = "", persistent: bool = False, auth=None):
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber never subscribed"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def last(self, topic: str) -> str | None:
        found = self.on(topic)
        return found[-1] if found else None

    def json(self, topic: str) -> dict:
        return json.loads(self.last(topic))

    def topics_seen(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(port: int, **kwargs) -> Subscriber:
        made.append(Subscriber(port, **kwargs))
        return made[-1]
    yield make
    for s in made:
        s.close()
