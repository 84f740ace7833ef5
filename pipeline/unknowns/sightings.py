"""The unknown people of a gallery in Redis: sightings (a face seen: int8 embedding, small crop, camera, time)
and the clusters that group them under stable pseudonymous ids ("unknown-3fa2b9c1").

Every write is one MULTI/EXEC under WATCH of the unknowns' `head` (which it bumps), as the gallery store does:
a killed process leaves a cluster with all of its first sightings or nothing, and two writers never interleave.
Sightings expire: `purge` drops those older than the retention and the oldest beyond the size cap, and a
cluster left without sightings goes with them. Key layout: keys.py.

Every sighting and cluster records the model that embedded its faces (`model`: the embedder's fingerprint, given
by the composition root, services.unknown_store). A harmonic model's live run may match an older model's gallery
(pipeline/gallery/binding.py), and its sightings are its own model's embeddings: they must never become that
gallery's templates or negatives (pipeline/unknowns/operations.py refuses), nor share a cluster with the older
model's faces. So a cluster holds one model's faces: `add` and `merge` refuse another model's, and `members`
(what a live directory assigns to and re-clusters) lists the clusters of one model only; two models' clusters
live side by side in one gallery's unknowns, each run joining its own.

Sightings and clusters stored before models were recorded carry none; they are taken as the gallery's model
(`legacy_model`), which keeps old data nameable as it was: until harmonic models, only a gallery's own model
could open it, so its live runs wrote them.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from pipeline.core.errors import GalleryError
from pipeline.gallery.clients import REDIS_ERRORS
from pipeline.gallery.keys import GalleryKeys
from pipeline.unknowns.keys import (
    CLUSTER_PREFIX,
    IDENTITY_ALIAS,
    UnknownKeys,
    validate_cluster_id,
    validate_owner,
    validate_sighting_id,
)
from pipeline.unknowns.provenance import check_joinable, check_mergeable
from pipeline.unknowns.records import (
    DAY_S,
    Cluster,
    Members,
    Purged,
    Seen,
    Sighting,
    cluster_of,
    decode_rows,
    encode_embeddings,
    jpeg,
    members_of,
    owner_entry,
    parse_owner,
)

__all__ = ["DAY_S", "Cluster", "Members", "Purged", "Seen", "Sighting", "UnknownStore"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 200


class UnknownStore:
    """`UnknownStore(client, "default", model=embedder.fingerprint)`: the sightings and clusters of gallery
    "default", those it writes recorded as that model's. A store that records faces must be given the model;
    without one (the operator's: it only moves, merges and deletes) what it writes counts as the gallery's model,
    like sightings stored before models were recorded."""

    def __init__(self, client: redis.Redis, gallery: str = "default", *, retention_s: float = 7 * DAY_S,
                 max_sightings: int = 50_000, max_per_cluster: int = 200, crop_px: int = 96,
                 model: str | None = None):
        if retention_s <= 0 or max_sightings < 1 or max_per_cluster < 1 or crop_px < 16:
            raise GalleryError(f"unknowns settings out of range: retention_s={retention_s}, max_sightings="
                               f"{max_sightings}, max_per_cluster={max_per_cluster}, crop_px={crop_px}")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise GalleryError(f"the unknowns' model fingerprint must be a non-empty string, got {model!r}")
        self.client = client
        self.model = model
        self.gallery = gallery
        self.keys = UnknownKeys(gallery)
        self.retention_s = float(retention_s)
        self.max_sightings = int(max_sightings)
        self.max_per_cluster = int(max_per_cluster)
        self.crop_px = int(crop_px)

    # -- reads ----------------------------------------------------------------------------------------
    def head(self) -> int:
        with self._errors("read head"):
            return int(self.client.hget(self.keys.head, "seq") or 0)

    def legacy_model(self) -> str | None:
        """The model of a sighting or cluster stored without one: the gallery's (the module notes); None for a
        gallery bound to no model."""
        with self._errors("read the gallery's model"):
            bound = self.client.hget(GalleryKeys(self.gallery).meta, "fingerprint")
        return bound.decode() if bound else None

    def writer_model(self) -> str | None:
        """The model of the sightings this store writes: `model`, else the gallery's."""
        return self.model or self.legacy_model()

    def models(self) -> Counter[str | None]:
        """Clusters per model."""
        with self._errors("list clusters"):
            records = self.client.hvals(self.keys.clusters)
        legacy = self.legacy_model()
        return Counter(json.loads(r).get("model") or legacy for r in records)

    def clusters(self) -> list[Cluster]:
        """Every cluster, most recently seen first."""
        with self._errors("list clusters"):
            records = self.client.hgetall(self.keys.clusters)
            ids = sorted(k.decode() for k in records)
            pipe = self.client.pipeline(transaction=False)
            for cluster_id in ids:
                pipe.zcard(self.keys.owned(cluster_id))
            counts = pipe.execute()
        legacy = self.legacy_model()
        found = [cluster_of(i, records[i.encode()], n, legacy_model=legacy) for i, n in zip(ids, counts)]
        return sorted(found, key=lambda c: -c.last_seen)

    def cluster(self, cluster_id: str) -> Cluster:
        """One cluster, with the cameras it was seen on; GalleryError saying where a merged/named id went."""
        cluster_id = validate_cluster_id(cluster_id)
        with self._errors("read cluster"):
            record = self.client.hget(self.keys.clusters, cluster_id)
            if record is None:
                raise GalleryError(self._gone(cluster_id))
            sids = [s.decode() for s in self.client.zrange(self.keys.owned(cluster_id), 0, -1)]
            pipe = self.client.pipeline(transaction=False)
            for sid in sids:
                pipe.hget(self.keys.sighting(sid), "camera")
            cameras = sorted({c.decode() for c in pipe.execute() if c is not None})
        return cluster_of(cluster_id, record, len(sids), tuple(cameras), self.legacy_model())

    def resolve(self, cluster_id: str) -> str:
        """The id a (possibly merged) cluster id stands for now: a cluster id, or "identity:<id>" once named."""
        cluster_id = validate_cluster_id(cluster_id)
        with self._errors("resolve cluster"):
            seen = {cluster_id}
            while True:
                target = self.client.hget(self.keys.aliases, cluster_id)
                if target is None:
                    return cluster_id
                cluster_id = target.decode()
                if cluster_id.startswith(IDENTITY_ALIAS) or cluster_id in seen:
                    return cluster_id
                seen.add(cluster_id)

    def sightings(self, owner: str, *, crops: bool = False, limit: int | None = None) -> list[Sighting]:
        """The sightings of a cluster or an identity, newest first."""
        owner = validate_owner(owner)
        with self._errors("read sightings"):
            sids = [s.decode() for s in self.client.zrevrange(self.keys.owned(owner), 0, -1 if limit is None
                                                              else max(limit, 1) - 1)]
            return self._read(sids, crops)

    def sighting(self, sighting_id: str, crops: bool = True) -> Sighting | None:
        with self._errors("read sighting"):
            found = self._read([sighting_id], crops)
        return found[0] if found else None

    def event_sighting(self, event_id: str) -> Sighting | None:
        """The face behind an event (identity_confirmed), while its sighting is kept."""
        with self._errors("read event sighting"):
            sid = self.client.hget(self.keys.events, str(event_id))
            found = self._read([sid.decode()], False) if sid else []
        return found[0] if found else None

    def members(self, max_members: int = 16, model: str | None = None) -> Members:
        """The clusters of `model` (default: `writer_model()`, those this store's sightings may join) as the
        clusterer sees them, read at one head: one member per track (the unit mean of the track's sightings), the
        first `max_members` tracks of each cluster, and the sums over all of them. Other models' clusters are
        left out: faces of two models are never compared."""
        with self._errors("read members"):
            seq = self.head()
            legacy = self.legacy_model()
            wanted = model or self.model or legacy
            records = {k.decode(): json.loads(v) for k, v in self.client.hgetall(self.keys.clusters).items()}
            ids = sorted(i for i, r in records.items() if (r.get("model") or legacy) == wanted)
            pipe = self.client.pipeline(transaction=False)
            for cluster_id in ids:
                pipe.zrange(self.keys.owned(cluster_id), 0, -1)  # oldest first
            sid_lists = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            for sids in sid_lists:
                for sid in sids:
                    pipe.hmget(self.keys.sighting(sid.decode()), "emb", "camera", "track")
            replies = iter(pipe.execute())
        tracks: list[dict[tuple[bytes, bytes], list[bytes]]] = []
        for sids in sid_lists:
            by_track: dict[tuple[bytes, bytes], list[bytes]] = {}
            for _ in sids:
                blob, camera, track = next(replies)
                if blob is not None:  # expired by its backstop TTL before purge got to it
                    by_track.setdefault((camera, track), []).append(blob)
            tracks.append(by_track)
        return members_of(ids, [records[i]["created"] for i in ids], tracks, max_members, seq)

    def stats(self) -> dict:
        with self._errors("read stats"):
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(self.keys.sightings).hlen(self.keys.clusters).zrange(self.keys.sightings, 0, 0, withscores=True)
            count, clusters, oldest = pipe.execute()
        return {"sightings": int(count), "clusters": int(clusters),
                "oldest": float(oldest[0][1]) if oldest else None, "retention_days": self.retention_s / DAY_S,
                "max_sightings": self.max_sightings}

    # -- writes ---------------------------------------------------------------------------------------
    def new_cluster(self, seen: Sequence[Seen]) -> str:
        """A new cluster holding `seen` (at least one face), created with them in one transaction."""
        rows = encode_embeddings(seen)
        cluster_id = CLUSTER_PREFIX + secrets.token_hex(4)

        def prepare() -> tuple[str, Callable]:
            evict = self._evictions(len(rows))
            now = max(s.time for s in seen)

            def write(p) -> None:
                record = {"created": min(s.time for s in seen), "last_seen": now}
                p.hset(self.keys.clusters, cluster_id, json.dumps({**record, "model": self.model} if self.model
                                                                  else record))
                self._queue_sightings(p, cluster_id, seen, rows)
                self._queue_delete(p, evict)
            return cluster_id, write
        return self._commit(prepare, "create a cluster")

    def add(self, owner: str, seen: Sequence[Seen]) -> str:
        """Record `seen` under `owner`: a cluster (followed through merges; GalleryError if it was forgotten or
        named) or an identity id. Returns the owner the sightings went to. GalleryError for a cluster of another
        model than this store's (a cluster holds one model's faces)."""
        owner = validate_owner(owner)
        rows = encode_embeddings(seen)
        is_cluster = owner.startswith(CLUSTER_PREFIX)

        def prepare() -> tuple[str, Callable]:
            target = self.resolve(owner) if is_cluster else owner
            record = self.client.hget(self.keys.clusters, target) if is_cluster else None
            if is_cluster and record is None:
                raise GalleryError(self._gone(owner))
            if record is not None:
                legacy = self.legacy_model()
                check_joinable(target, json.loads(record).get("model") or legacy, self.model or legacy)
            evict = self._evictions(len(rows), target if is_cluster else None)

            def write(p) -> None:
                if record is not None:
                    updated = json.loads(record)
                    updated["last_seen"] = max(updated["last_seen"], max(s.time for s in seen))
                    if self.model:  # a cluster stored without its model (the gallery's) now says so
                        updated["model"] = self.model
                    p.hset(self.keys.clusters, target, json.dumps(updated))
                self._queue_sightings(p, target, seen, rows)
                self._queue_delete(p, evict)
            return target, write
        return self._commit(prepare, "record sightings")

    def merge(self, survivor: str, others: Iterable[str]) -> list[str]:
        """Move the sightings of `others` into `survivor`; their ids become aliases of it. Returns those merged.
        GalleryError (nothing merged) if they hold faces of different models."""
        survivor = validate_cluster_id(survivor)
        others = [validate_cluster_id(o) for o in others]
        if survivor in others:
            raise GalleryError(f"cannot merge {survivor} into itself")

        def prepare() -> tuple[list[str], Callable]:
            records = dict(zip([survivor, *others], self.client.hmget(self.keys.clusters, [survivor, *others])))
            missing = [c for c, r in records.items() if r is None]
            if missing:
                raise GalleryError(self._gone(missing[0]))
            legacy = self.legacy_model()
            check_mergeable(survivor, {c: json.loads(r).get("model") or legacy for c, r in records.items()})
            moving = {o: self._owned_details(o) for o in others}
            kept = json.loads(records[survivor])
            for other in others:
                record = json.loads(records[other])
                kept = {**kept, "created": min(kept["created"], record["created"]),
                        "last_seen": max(kept["last_seen"], record["last_seen"])}
            repoint = self._aliases_to(others)

            def write(p) -> None:
                for other, sids in moving.items():
                    for sid, _, event in sids:
                        p.hset(self.keys.owners, sid, owner_entry(survivor, event))
                    p.zunionstore(self.keys.owned(survivor), [self.keys.owned(survivor), self.keys.owned(other)])
                    p.unlink(self.keys.owned(other))
                    p.hdel(self.keys.clusters, other)
                    p.hset(self.keys.aliases, other, survivor)
                for alias in repoint:
                    p.hset(self.keys.aliases, alias, survivor)
                p.hset(self.keys.clusters, survivor, json.dumps(kept))
            return others, write
        return self._commit(prepare, "merge clusters")

    def forget(self, cluster_id: str) -> int:
        """Delete a cluster, every sighting and crop it holds, and every alias to it; returns the sightings."""
        cluster_id = validate_cluster_id(cluster_id)

        def prepare() -> tuple[int, Callable]:
            if not self.client.hexists(self.keys.clusters, cluster_id):
                raise GalleryError(self._gone(cluster_id))
            doomed = self._owned_details(cluster_id)
            aliases = self._aliases_to([cluster_id])

            def write(p) -> None:
                self._queue_delete(p, doomed)
                p.unlink(self.keys.owned(cluster_id))
                p.hdel(self.keys.clusters, cluster_id)
                if aliases:
                    p.hdel(self.keys.aliases, *aliases)
            return len(doomed), write
        return self._commit(prepare, "forget a cluster")

    def forget_sighting(self, cluster_id: str, sighting_id: str) -> bool:
        """"Not this person": one face leaves the cluster (deleted, with its crop); the cluster goes with its last
        face. Returns whether the cluster is still there."""
        cluster_id, sighting_id = validate_cluster_id(cluster_id), validate_sighting_id(sighting_id)

        def prepare() -> tuple[bool, Callable]:
            if not self.client.hexists(self.keys.clusters, cluster_id):
                raise GalleryError(self._gone(cluster_id))
            if self.client.zscore(self.keys.owned(cluster_id), sighting_id) is None:
                raise GalleryError(f"no sighting {sighting_id} in {cluster_id} (already removed, or never its face)")
            doomed = self._details([sighting_id])
            emptied = self._emptied(doomed)
            aliases = self._aliases_to(emptied)

            def write(p) -> None:
                self._queue_delete(p, doomed)
                for gone in emptied:
                    p.unlink(self.keys.owned(gone))
                    p.hdel(self.keys.clusters, gone)
                if aliases:
                    p.hdel(self.keys.aliases, *aliases)
            return not emptied, write
        return self._commit(prepare, "forget a sighting")

    def purge(self, now: float | None = None) -> Purged:
        """Drop sightings older than the retention and the oldest beyond `max_sightings`; then empty clusters."""
        now = time.time() if now is None else float(now)

        def prepare() -> tuple[Purged, Callable]:
            old = [s.decode() for s in self.client.zrangebyscore(self.keys.sightings, "-inf",
                                                                   f"({now - self.retention_s}")]
            excess = self.client.zcard(self.keys.sightings) - len(old) - self.max_sightings
            if excess > 0:
                old += [s.decode() for s in self.client.zrange(self.keys.sightings, len(old), len(old) + excess - 1)]
            doomed = self._details(old)
            emptied = self._emptied(doomed)

            def write(p) -> None:
                self._queue_delete(p, doomed)
                for cluster_id in emptied:
                    p.unlink(self.keys.owned(cluster_id))
                    p.hdel(self.keys.clusters, cluster_id)
                aliases = self._aliases_to(emptied)
                if aliases:
                    p.hdel(self.keys.aliases, *aliases)
            return Purged(len(doomed), len(emptied)), write
        return self._commit(prepare, "purge sightings")

    # -- the gallery's transactions (GalleryStore.add/remove `also`): one MULTI for both ---------------------
    def naming(self, cluster_id: str) -> Callable[[str], Callable]:
        """`also` for GalleryStore.add: the cluster's sightings move to the new identity, its id becomes an alias."""
        cluster_id = validate_cluster_id(cluster_id)

        def also(identity_id: str) -> Callable:
            if not self.client.hexists(self.keys.clusters, cluster_id):
                raise GalleryError(self._gone(cluster_id))
            moving = self._owned_details(cluster_id)
            repoint = self._aliases_to([cluster_id])

            def write(p) -> None:
                for sid, _, event in moving:
                    p.hset(self.keys.owners, sid, owner_entry(identity_id, event))
                p.zunionstore(self.keys.owned(identity_id), [self.keys.owned(identity_id), self.keys.owned(cluster_id)])
                p.unlink(self.keys.owned(cluster_id))
                p.hdel(self.keys.clusters, cluster_id)
                for alias in [cluster_id, *repoint]:
                    p.hset(self.keys.aliases, alias, IDENTITY_ALIAS + identity_id)
                p.hincrby(self.keys.head, "seq", 1)
            return write
        return also

    def forgetting(self) -> Callable[[str], Callable]:
        """`also` for GalleryStore.remove: every sighting of the identity goes, and aliases to it."""
        def also(identity_id: str) -> Callable:
            doomed = self._owned_details(identity_id)
            target = IDENTITY_ALIAS + identity_id
            aliases = [k.decode() for k, v in self.client.hgetall(self.keys.aliases).items() if v.decode() == target]

            def write(p) -> None:
                self._queue_delete(p, doomed)
                p.unlink(self.keys.owned(identity_id))
                if aliases:
                    p.hdel(self.keys.aliases, *aliases)
                p.hincrby(self.keys.head, "seq", 1)
            return write
        return also

    # -- internals ------------------------------------------------------------------------------------
    def _queue_sightings(self, p, owner: str, seen: Sequence[Seen], rows: list[bytes]) -> None:
        for s, row in zip(seen, rows, strict=True):
            sid = secrets.token_hex(8)
            fields: dict[str, Any] = {"camera": s.camera, "track": s.track, "time": repr(s.time),
                                      "quality": repr(float(s.quality)), "emb": row}
            if self.model:
                fields["model"] = self.model
            p.hset(self.keys.owners, sid, owner_entry(owner, s.event_id))
            if s.event_id:
                fields["event"] = s.event_id
                p.hset(self.keys.events, s.event_id, sid)
            if s.crop is not None:
                fields["crop"] = jpeg(s.crop, self.crop_px)
            p.hset(self.keys.sighting(sid), mapping=fields)
            # Backstop: a sighting nobody purges (no process running) still disappears a day after its retention.
            p.expireat(self.keys.sighting(sid), int(s.time + self.retention_s + DAY_S))
            p.zadd(self.keys.sightings, {sid: s.time})
            p.zadd(self.keys.owned(owner), {sid: s.time})

    def _evictions(self, adding: int, cluster_id: str | None = None) -> list[tuple[str, str, str | None]]:
        """Sightings to drop so the caps hold after adding `adding`: the oldest of the cluster, then overall."""
        sids: list[str] = []
        if cluster_id is not None:
            over = self.client.zcard(self.keys.owned(cluster_id)) + adding - self.max_per_cluster
            if over > 0:
                sids += [s.decode() for s in self.client.zrange(self.keys.owned(cluster_id), 0, over - 1)]
        over = self.client.zcard(self.keys.sightings) + adding - len(sids) - self.max_sightings
        if over > 0:
            oldest = [s.decode() for s in self.client.zrange(self.keys.sightings, 0, over + len(sids) - 1)]
            sids += [s for s in oldest if s not in set(sids)][:over]
        return self._details(sids)

    def _details(self, sids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """(sid, owner, event id) of each sighting, from the owners hash (it outlives an expired sighting)."""
        if not sids:
            return []
        entries = self.client.hmget(self.keys.owners, list(sids))
        return [(sid, *parse_owner(entry)) for sid, entry in zip(sids, entries)]

    def _owned_details(self, owner: str) -> list[tuple[str, str, str | None]]:
        return [(sid, owner, event) for sid, _, event in
                self._details([s.decode() for s in self.client.zrange(self.keys.owned(owner), 0, -1)])]

    def _emptied(self, doomed: Sequence[tuple[str, str, str | None]]) -> list[str]:
        """Clusters that `doomed` leaves without sightings."""
        losing: dict[str, int] = {}
        for _, owner, _ in doomed:
            if owner.startswith(CLUSTER_PREFIX):
                losing[owner] = losing.get(owner, 0) + 1
        return [c for c, n in losing.items() if self.client.zcard(self.keys.owned(c)) <= n]

    def _queue_delete(self, p, doomed: Sequence[tuple[str, str, str | None]]) -> None:
        for sid, owner, event in doomed:
            p.unlink(self.keys.sighting(sid))
            p.zrem(self.keys.sightings, sid)
            p.hdel(self.keys.owners, sid)
            if owner:
                p.zrem(self.keys.owned(owner), sid)
            if event:
                p.hdel(self.keys.events, event)

    def _aliases_to(self, targets: Sequence[str]) -> list[str]:
        if not targets:
            return []
        wanted = set(targets)
        return [k.decode() for k, v in self.client.hgetall(self.keys.aliases).items() if v.decode() in wanted]

    def _read(self, sids: Sequence[str], crops: bool) -> list[Sighting]:
        if not sids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            pipe.hgetall(self.keys.sighting(sid))
        owners = self.client.hmget(self.keys.owners, list(sids))
        found, legacy = [], None
        for sid, fields, entry in zip(sids, pipe.execute(), owners):
            if not fields or b"emb" not in fields or entry is None:
                continue
            if b"model" not in fields and legacy is None:
                legacy = (self.legacy_model(),)  # read once, and only for sightings stored without their model
            model = fields[b"model"].decode() if b"model" in fields else legacy[0]
            found.append(Sighting(sid, parse_owner(entry)[0], fields[b"camera"].decode(),
                                  fields[b"track"].decode(), float(fields[b"time"]), float(fields[b"quality"]),
                                  fields[b"event"].decode() if b"event" in fields else None,
                                  decode_rows([fields[b"emb"]])[0], fields.get(b"crop") if crops else None, model))
        return found

    def _gone(self, cluster_id: str) -> str:
        target = self.resolve(cluster_id)
        if target.startswith(IDENTITY_ALIAS):
            return f"{cluster_id} was named: its faces now belong to identity {target[len(IDENTITY_ALIAS):]}"
        if target != cluster_id:
            return f"{cluster_id} was merged into {target}"
        return f"no unknown person {cluster_id} in gallery {self.gallery!r} (forgotten, expired, or never seen)"

    def _commit(self, prepare: Callable[[], tuple[Any, Callable]], what: str) -> Any:
        """`prepare` reads under WATCH of the head and returns (result, writer); the writer runs in MULTI/EXEC
        with the head bumped, or everything is read again when another writer got in first."""
        for attempt in range(MAX_ATTEMPTS):
            with self._errors(what), self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.keys.head)
                    result, write = prepare()
                    pipe.multi()
                    write(pipe)
                    pipe.hincrby(self.keys.head, "seq", 1)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    time.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
        raise GalleryError(f"{what} in gallery {self.gallery!r} gave up after {MAX_ATTEMPTS} attempts: "
                           "other writers changed the unknowns every time")

    @contextmanager
    def _errors(self, what: str):
        try:
            yield
        except REDIS_ERRORS as exc:  # RedisCluster raises some errors that are not RedisErrors
            raise GalleryError(f"Redis failed to {what} for the unknowns of gallery {self.gallery!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
