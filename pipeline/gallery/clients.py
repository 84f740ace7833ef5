"""What the library needs to treat a single server (`redis.Redis`) and Redis Cluster (`redis.cluster.RedisCluster`)
alike: a private copy of a client (RedisCluster has no single `connection_pool` to copy: its copy is a new
RedisCluster seeded with every node the original knows, with the same per-node options), WAIT routed to the
master that owns a key, and the exceptions either can raise.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

# What a Redis call can raise: RedisCluster also raises RedisClusterException (e.g. SlotNotCoveredError while a
# failed master's slots have no owner yet), which is not a RedisError.
REDIS_ERRORS = (redis.RedisError, RedisClusterException)

# Per-node options RedisCluster adds itself (bound to the original client): never copied.
_CLUSTER_OWN_OPTIONS = ("redis_connect_func", "oss_cluster_maint_notifications_handler")


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def private_copy(client: redis.Redis | RedisCluster, retry: Retry | None = None) -> redis.Redis | RedisCluster:
    """A new client on the same server (or cluster) as `client`, with its own connections; `retry` replaces
    the client's automatic retries when given."""
    if is_cluster(client):
        options = {k: v for k, v in client.nodes_manager.connection_kwargs.items() if k not in _CLUSTER_OWN_OPTIONS}
        seeds = [ClusterNode(node.host, node.port) for node in client.get_nodes()]
        extra = {"retry": retry} if retry is not None else {}
        return RedisCluster(startup_nodes=seeds, **extra, **options)
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **({"retry": retry} if retry is not None else {})}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def wait_for_replicas(client: redis.Redis | RedisCluster, key: str, replicas: int, timeout_ms: int) -> int:
    """WAIT for `replicas` replicas to have this connection's writes; how many confirmed within `timeout_ms`.
    On a cluster WAIT goes to the master that owns `key`'s slot (WAIT itself has no key to route by)."""
    if is_cluster(client):
        return int(client.wait(replicas, timeout_ms, target_nodes=client.get_node_from_key(key)))
    return int(client.wait(replicas, timeout_ms))
