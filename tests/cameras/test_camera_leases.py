"""Leases against a real Redis: one owner at a time, fencing tokens, renew/release only by the owner."""

from __future__ import annotations

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.cameras import Holder, LeaseManager
from pipeline.cameras.keys import lease as lease_key
from pipeline.core.errors import ConfigError, GalleryError

TTL = 0.3


@pytest.fixture
def pair(redis_client):
    return LeaseManager(redis_client, "w1", ttl_s=TTL), LeaseManager(redis_client, "w2", ttl_s=TTL)


def test_claim_is_exclusive(pair):
    a, b = pair
    first = a.claim("door")
    assert first is not None and (first.camera, first.worker_id) == ("door", "w1")
    assert b.claim("door") is None
    assert a.claim("door") is None  # not even the owner gets a second lease
    assert b.holders(["door", "yard"]) == {"door": Holder("w1", first.token)}


def test_tokens_rise_strictly_across_owners_and_releases(pair):
    a, b = pair
    tokens = []
    for owner in (a, b, a, b, a):
        lease = owner.claim("door")
        tokens.append(lease.token)
        assert owner.release(lease)
    assert tokens == sorted(set(tokens)) and len(tokens) == 5
    taken_over = b.claim("door")
    time.sleep(TTL + 0.05)
    assert a.claim("door").token > taken_over.token  # after expiry too


def test_renew_extends_and_is_refused_after_expiry_and_takeover(pair):
    a, b = pair
    lease = a.claim("door")
    for _ in range(3):  # renewals keep it past several TTLs
        time.sleep(TTL / 2)
        lease = a.renew(lease)
        assert lease is not None
    assert b.claim("door") is None
    time.sleep(TTL + 0.05)
    assert not lease.valid()
    assert a.renew(lease) is None  # expired: nobody holds it, and renew does not resurrect it
    assert a.holders(["door"]) == {}
    stale = lease
    fresh = b.claim("door")
    assert a.renew(stale) is None
    assert b.holders(["door"]) == {"door": Holder("w2", fresh.token)}


def test_release_of_someone_elses_lease_is_refused(pair, redis_client):
    a, b = pair
    old = a.claim("door")
    time.sleep(TTL + 0.05)
    new = b.claim("door")
    assert a.release(old) is False  # same worker name or not, the token differs: nothing deleted
    assert b.check(new)
    with pytest.raises(ConfigError, match="belongs to worker 'w2', not 'w1'"):
        a.release(new)
    assert redis_client.get(lease_key("door")) == f"{new.token}:w2".encode()


def test_check_is_false_after_takeover(pair):
    a, b = pair
    lease = a.claim("door")
    assert a.check(lease)
    time.sleep(TTL + 0.05)
    assert not a.check(lease)  # expired
    b.claim("door")
    assert not a.check(lease)  # and taken over


def test_validity_is_local_and_ends_before_redis_expires_the_key(redis_client):
    manager = LeaseManager(redis_client, "w1", ttl_s=1.0, margin=0.2)
    before = time.monotonic()
    lease = manager.claim("door")
    after = time.monotonic()
    assert lease.valid() and before + 0.8 <= lease.deadline <= after + 0.8  # ttl - margin, from the send
    assert not lease.valid(now=lease.deadline)
    pttl = redis_client.pttl(lease_key("door"))
    assert pttl > (lease.deadline - time.monotonic()) * 1000  # Redis keeps it longer than we trust it


def test_a_stalled_worker_knows_on_waking(pair):
    a, b = pair
    lease = a.claim("door")
    time.sleep(TTL + 0.1)  # the "stall": no renewal for a whole TTL (and past it on the Redis server's clock)
    assert not lease.valid()
    assert b.claim("door") is not None


@pytest.mark.parametrize("worker, ttl, margin, message", [
    ("a:b", 1.0, 0.1, "invalid worker id"),
    ("", 1.0, 0.1, "invalid worker id"),
    ("w", 0.0, 0.1, "ttl_s must be at least"),
    ("w", float("nan"), 0.1, "ttl_s must be at least"),
    ("w", 1.0, 1.0, "margin must be"),
])
def test_bad_arguments(redis_client, worker, ttl, margin, message):
    with pytest.raises(ConfigError, match=message):
        LeaseManager(redis_client, worker, ttl_s=ttl, margin=margin)


def test_a_bad_camera_name_is_refused(pair):
    with pytest.raises(ConfigError, match="invalid camera name"):
        pair[0].claim("{x}")


def test_redis_down_is_a_gallery_error():
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(GalleryError, match="claim camera 'door': Redis failed"):
        LeaseManager(dead, "w1").claim("door")
