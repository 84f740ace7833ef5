"""The registry, leases and membership on a real Redis Cluster (3 masters + 3 replicas): every script's keys
share the `{cameras}` slot, so the same code runs unchanged on a RedisCluster client."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from pipeline.cameras import CameraRegistry, LeaseKeeper, LeaseManager, Membership, keys

HARNESS = Path(__file__).resolve().parents[1] / "cluster" / "conftest.py"


@pytest.fixture(scope="module")
def cluster_client(tmp_path_factory):
    """The tests/cluster harness, loaded by path (a conftest is not importable by name from here)."""
    spec = importlib.util.spec_from_file_location("cluster_harness", HARNESS)
    harness = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("cluster_harness", harness)  # its dataclasses look their module up there
    spec.loader.exec_module(harness)
    cluster = harness._cluster_or_skip(tmp_path_factory.mktemp("cameras-cluster"))
    from pipeline.redis.connect import connect
    client = connect(cluster.url, tmp_path_factory.mktemp("state"))
    yield client
    client.close()
    cluster.stop()


def test_every_key_is_in_one_slot():
    from redis.crc import key_slot
    names = [keys.DEFS, keys.DISABLED, keys.VERSION, keys.WORKERS, keys.lease("a"), keys.token("a"), keys.worker("w")]
    assert len({key_slot(k.encode()) for k in names}) == 1


def test_registry_leases_and_keeper_on_a_cluster(cluster_client):
    registry = CameraRegistry(cluster_client)
    registry.load_mapping({"door": {"url": "rtsp://x/1", "fps_cap": 2.5}, "yard": {"url": "rtsp://x/2"}},
                          prune=True)
    registry.disable("yard")
    assert [(c.name, c.enabled, c.settings) for c in registry.list()] == [("door", True, {"fps_cap": 2.5}),
                                                                          ("yard", False, {})]
    a, b = LeaseManager(cluster_client, "wa", ttl_s=0.5), LeaseManager(cluster_client, "wb", ttl_s=0.5)
    lease = a.claim("cam")
    assert b.claim("cam") is None and a.check(lease) and a.renew(lease) is not None
    assert a.holders(["cam", "none"])["cam"].worker_id == "wa"
    assert a.release(lease) and b.claim("cam").token > lease.token
    keeper = LeaseKeeper(registry, a, Membership(cluster_client, "wa", 2, ttl_s=0.5))
    assert [s.camera for s in keeper.tick().started] == ["door"]
    time.sleep(0.2)
    keeper.tick()
    assert [w.worker_id for w in Membership(cluster_client, "probe", 0, 0.5).live()] == ["wa"]
    assert keeper.stop().stopped == ("door",)
