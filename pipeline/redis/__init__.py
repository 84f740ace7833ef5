"""Redis: `connect.connect(url, state_dir)` for a client (a RedisCluster for `redis+cluster://` URLs),
`server.EmbeddedRedis` started when nothing answers locally.

connect -> server -> process, and both -> urls (client options, redaction); nothing imports back up that chain.
Nothing is re-exported here: the function `connect` would shadow its own module `pipeline.redis.connect`.
"""
