"""The gallery in Redis: identities, their templates, and the change stream every mirror follows.

Every write (add, remove, rename, import, clear, and the edits of template_edits.py) is one MULTI/EXEC under
WATCH of the gallery's `head` key, which every write also updates: two writers of one gallery can never
interleave (the loser's EXEC fails and it retries on fresh reads), and the change-stream entry is appended in
the same transaction, so a reader never sees half an identity nor a change that is not in the stream. Key
layout: keys.py; what an add writes (decided before the transaction): identity.py; the gallery's
dtype/dim/model: binding.py; stream entries: changes.py; aligned enrolment crops (`crops:<id>`, written with their
templates in the same transaction, deleted with them): identity.py; negatives and template removal: template_edits.py;
other writers joining a transaction (`also`): plan.py. `GalleryStore.open` is the one way callers open an
existing or new gallery.

Redis Cluster: every key carries the gallery's hash tag, so each transaction runs on the one master owning that
slot. Replication is asynchronous, so a master killed right after EXEC can take the write with it; with
`wait_replicas=N` every write is followed by `WAIT N wait_timeout_ms` on the connection that made it (WAIT
covers only that connection's writes, hence a private client for writes, used under a lock), and a write that
fewer than N replicas confirmed in time raises GalleryError (it is on the master, but not yet safe from a kill).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import redis

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.binding import bind, check_model
from pipeline.gallery.changes import Change, change_fields, parse_change, text
from pipeline.gallery.clients import REDIS_ERRORS, private_copy, wait_for_replicas
from pipeline.gallery.identity import (
    RECORD_FIELD,
    AddResult,
    Entry,
    Identity,
    Pending,
    encode_entries,
    fold_entry,
    identity_of,
    record_of,
)
from pipeline.gallery.keys import CHANGES_MAXLEN, GalleryKeys, element, element_identity, validate_gallery
from pipeline.gallery.names import validate_name
from pipeline.gallery.plan import Hook, Plan, with_hook
from pipeline.gallery.snapshot import Snapshot, freeze
from pipeline.gallery.template_edits import TemplateEdits

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 200  # WATCH conflicts before giving up; each loser retries after a short random pause
READ_CHUNK = 1000  # identities per pipelined read


class GalleryStore(TemplateEdits):
    """`GalleryStore(client, "default", dtype="int8")`; `reconnect` makes a new client after a failure
    (an embedded server restarted on another port), otherwise the client's pool reconnects by itself.
    `client` may be a RedisCluster; `wait_replicas`: replicas that must confirm each write (module notes)."""

    def __init__(self, client: redis.Redis, gallery: str = "default", *,
                 dtype: Literal["float32", "int8"] = "float32", server_index: bool = False,
                 reconnect: Callable[[], redis.Redis] | None = None, wait_replicas: int = 0,
                 wait_timeout_ms: int = 2000):
        self.client = client
        self.gallery = validate_gallery(gallery)
        self.keys = GalleryKeys(gallery)
        self.dtype = codec.check_dtype(dtype)
        self.server_index = bool(server_index)
        self._factory = reconnect
        if int(wait_replicas) < 0 or int(wait_timeout_ms) <= 0:
            raise GalleryError(f"wait_replicas must be >= 0 and wait_timeout_ms > 0, got {wait_replicas} and "
                               f"{wait_timeout_ms}")
        self.wait_replicas, self.wait_timeout_ms = int(wait_replicas), int(wait_timeout_ms)
        self._writer: redis.Redis | None = None  # the private client of replicated writes (made on first use)
        self._write_lock = threading.Lock()

    @classmethod
    def open(cls, client: redis.Redis, gallery: str = "default", *, fingerprint: str | None = None,
             harmonic_with: Collection[str] = (), dtype_for_new: Literal["float32", "int8"] = "float32",
             server_index_for_new: bool = False, reconnect: Callable[[], redis.Redis] | None = None,
             wait_replicas: int = 0, wait_timeout_ms: int = 2000) -> GalleryStore:
        """The store of `gallery` as it was created (its dtype and server index; the `_for_new` settings only
        apply to a gallery never written). With `fingerprint`: GalleryError if it holds templates of a model other
        than that one and those in `harmonic_with` (binding.check_model: to match; writes still take only the
        gallery's own model).
        """
        meta = cls(client, gallery).meta()
        new = not meta.get("dtype")
        store = cls(client, gallery, dtype=dtype_for_new if new else meta["dtype"],
                    server_index=server_index_for_new if new else meta.get("server_index") == "1", reconnect=reconnect,
                    wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
        if fingerprint is not None:
            check_model(meta, store.gallery, fingerprint, harmonic_with)
        return store

    def reconnect(self, client: redis.Redis | None = None) -> None:
        """Switch to `client`, or to a new one from the `reconnect` factory (no-op without either)."""
        if client is None and self._factory is None:
            return
        old, self.client = self.client, client if client is not None else self._factory()
        with self._write_lock:
            writer, self._writer = self._writer, None
        for stale in (old, writer):
            try:
                if stale is not None:
                    stale.close()
            except REDIS_ERRORS:
                pass

    def bind(self, meta: dict[str, str], dim: int, fingerprint: str) -> tuple[dict, bool]:
        """binding.bind for this store: (meta fields to write, keep the vector set?); raises on a mismatch."""
        return bind(meta, self.gallery, self.dtype, self.server_index, dim, fingerprint)

    # -- reads ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """dtype, dim, fingerprint, server_index, format; empty for a gallery never written."""
        with self._errors("read meta"):
            return text(self.client.hgetall(self.keys.meta))

    @property
    def fingerprint(self) -> str | None:
        return self.meta().get("fingerprint") or None

    def head(self) -> tuple[int, str]:
        """(last change number, epoch); (0, "") for a gallery never written."""
        with self._errors("read head"):
            seq, epoch = self.client.hmget(self.keys.head, "seq", "epoch")
        return int(seq or 0), (epoch or b"").decode()

    def get(self, name: str) -> Identity:
        name = validate_name(name)
        with self._errors("get"):
            identity_id = self.client.hget(self.keys.names, name)
            found = self._identities([identity_id.decode()]) if identity_id else []
        if not found:
            raise GalleryError(f"no identity named {name!r} in gallery {self.gallery!r}")
        return found[0]

    def identities(self) -> list[Identity]:
        """Every identity, sorted by name."""
        with self._errors("list identities"):
            ids = [i.decode() for i in self.client.hvals(self.keys.names)]
            return sorted(self._identities(ids), key=lambda identity: identity.name)

    def templates(self, name: str) -> np.ndarray:
        """(n, dim) float32 templates of `name`, ordered by template id."""
        found = self.read_full(self.get(name).id)
        if found is None:
            raise GalleryError(f"no identity named {name!r} in gallery {self.gallery!r}")
        return found[2]

    def crops(self, name: str) -> dict[str, bytes]:
        """template id -> JPEG of the aligned enrolment crop, for the templates of `name` that have one."""
        return self.read_crops(self.get(name).id)

    def read_crops(self, identity_id: str) -> dict[str, bytes]:
        """`crops` by identity id (empty if it has none or is gone)."""
        with self._errors("read crops"):
            return {t.decode(): jpeg for t, jpeg in self.client.hgetall(self.keys.crops(identity_id)).items()}

    def crop(self, identity_id: str, template_id: str) -> bytes | None:
        """The JPEG of one template's aligned enrolment crop; None if it has none (or is gone)."""
        with self._errors("read crop"):
            return self.client.hget(self.keys.crops(identity_id), template_id)

    def snapshot(self) -> Snapshot:
        """The whole gallery. `stream_id` is read first: the data may already include later changes,
        which a mirror replays again (harmlessly: it re-fetches the identities they name)."""
        with self._errors("snapshot"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self.keys.head, "seq", "epoch").hgetall(self.keys.meta).hvals(self.keys.names)
            (seq, epoch), meta, ids = pipe.execute()
        part = self.fetch([i.decode() for i in ids], text(meta))
        return freeze(replace(part, stream_id=f"{int(seq or 0)}-0", epoch=(epoch or b"").decode()))

    def fetch(self, identity_ids: Sequence[str], meta: dict[str, str] | None = None) -> Snapshot:
        """The rows of those `identity_ids` that exist (`stream_id` "0-0": the caller knows which)."""
        with self._errors("read identities"):
            meta = self.meta() if meta is None else meta
            ids, names, blobs, owner, negatives, negative_owner = [], [], [], [], [], []
            for start in range(0, len(identity_ids), READ_CHUNK):
                chunk = identity_ids[start:start + READ_CHUNK]
                # Not a transaction: each key is read atomically, and a write landing between an identity and its
                # negatives logs a change after the caller's stream id, so the mirror re-fetches it anyway.
                pipe = self.client.pipeline(transaction=False)
                pipe.smismember(self.keys.negative_ids, chunk)
                for identity_id in chunk:
                    pipe.hgetall(self.keys.identity(identity_id))
                flagged, *replies = pipe.execute()
                refused = self._negatives_of([i for i, f in zip(chunk, flagged) if f])
                for identity_id, fields in zip(chunk, replies):
                    record = fields.pop(RECORD_FIELD, None)
                    if record is None:
                        continue  # removed since the caller learnt its id
                    owner += [len(ids)] * len(fields)
                    blobs += [fields[key] for key in sorted(fields)]
                    mine = refused.get(identity_id, {})
                    negative_owner += [len(ids)] * len(mine)
                    negatives += [mine[key] for key in sorted(mine)]
                    ids.append(identity_id)
                    names.append(json.loads(record)["name"])
        dtype, dim = meta.get("dtype", self.dtype), int(meta.get("dim", 0))
        matrix, scales = codec.decode(blobs, dtype, dim)
        return Snapshot(stream_id="0-0", fingerprint=meta.get("fingerprint") or None, dtype=dtype,
                        identity_ids=ids, names=names, matrix=matrix, scales=scales,
                        owner=np.asarray(owner, dtype=np.int32), negatives=codec.to_float(*codec.decode(
                            negatives, dtype, dim)), negative_owner=np.asarray(negative_owner, dtype=np.int32))

    def _negatives_of(self, identity_ids: list[str]) -> dict[str, dict]:
        """identity id -> its negatives hash, for identities known to have some (one round trip, none if none)."""
        if not identity_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for identity_id in identity_ids:
            pipe.hgetall(self.keys.negatives(identity_id))
        return dict(zip(identity_ids, pipe.execute()))

    def read_full(self, identity_id: str) -> tuple[Identity, list[str], np.ndarray] | None:
        """(identity, its template ids, its float32 templates in that order), or None if absent."""
        with self._errors("read identity"):
            pipe = self.client.pipeline(transaction=True)
            fields, meta = pipe.hgetall(self.keys.identity(identity_id)).hgetall(self.keys.meta).execute()
        if RECORD_FIELD not in fields:
            return None
        identity = identity_of(identity_id, fields)
        meta, tids = text(meta), sorted(k for k in fields if k != RECORD_FIELD)
        matrix, scales = codec.decode([fields[t] for t in tids], meta["dtype"], int(meta["dim"]))
        return identity, [t.decode() for t in tids], codec.to_float(matrix, scales)

    def changes(self, after: str, block_ms: int | None = None, count: int = 1000) -> list[Change]:
        """Changes after stream id `after`, waiting up to `block_ms` for the first (None: no wait)."""
        with self._errors("read changes"):
            reply = self.client.xread({self.keys.changes: after}, count=count, block=block_ms or None)
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [parse_change(entry_id, fields) for entry_id, fields in entries]

    def resolve_elements(self, elements: Sequence[bytes | str]) -> list[tuple[str, str]]:
        """Vector-set elements -> [(identity id, name)], aligned; name "" if the identity is gone."""
        ids = [element_identity(e) for e in elements]
        unique = list(dict.fromkeys(ids))
        with self._errors("resolve elements"):
            pipe = self.client.pipeline(transaction=False)
            for identity_id in unique:
                pipe.hget(self.keys.identity(identity_id), RECORD_FIELD)
            names = {i: json.loads(r)["name"] if r else "" for i, r in zip(unique, pipe.execute())}
        return [(i, names[i]) for i in ids]

    # -- writes ---------------------------------------------------------------------------------
    def add(self, name: str, embeddings: np.ndarray, template_ids: Sequence[str], fingerprint: str,
            metadata: dict | None = None, *, also: Hook | None = None, watch: Sequence[str] = (),
            crops: Sequence[bytes | None] | None = None) -> AddResult:
        """Add templates to `name` (created if new; `metadata` merged into its metadata). A template id
        the identity already has is counted as a duplicate and not stored again.

        `crops`, parallel to `template_ids`: the JPEG of each template's aligned enrolment crop (or None), kept
        in the same transaction; a duplicate template without a stored crop gets the one given.

        `also(identity_id)` lets another writer of this gallery's hash tag join the transaction: it runs on fresh
        reads (through `self.client`) under WATCH of the gallery's head and of the `watch` keys, and returns a
        writer whose commands are queued in the same MULTI. A watched key changing retries the whole write; a
        GalleryError from `also` writes nothing. With `also` the write commits even if every template is a
        duplicate, so the other writer's commands always land.
        """
        entry = encode_entries([(name, embeddings, template_ids)], self.dtype, metadata=[metadata],
                               crops=[crops])[0]
        return self._write([entry], fingerprint, "add", also, watch)[0]

    def add_many(self, items: Iterable[tuple[str, np.ndarray, Sequence[str]]], fingerprint: str,
                 batch: int = 500) -> int:
        """Bulk enrolment, one transaction per `batch` identities; returns the templates added."""
        added, chunk = 0, []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                added += sum(r.added for r in self._write(encode_entries(chunk, self.dtype), fingerprint, "add"))
                chunk = []
        if chunk:
            added += sum(r.added for r in self._write(encode_entries(chunk, self.dtype), fingerprint, "add"))
        return added

    def import_identity(self, name: str, embeddings: np.ndarray, template_ids: Sequence[str],
                        fingerprint: str, metadata: dict | None, created: float,
                        crops: Sequence[bytes | None] | None = None) -> AddResult:
        """`add` keeping the identity's original creation time (used by portable.import_gallery)."""
        entry = encode_entries([(name, embeddings, template_ids)], self.dtype, [metadata], [created], [crops])[0]
        return self._write([entry], fingerprint, "import")[0]

    def remove(self, name: str, *, also: Hook | None = None, watch: Sequence[str] = ()) -> int:
        """Delete the identity, every template, crop and negative of it; returns the number of templates removed.
        `also`, `watch`: as for `add` (e.g. delete what other writers keep about the person in the same MULTI)."""
        name = validate_name(name)

        def prepare(pipe, meta) -> Plan:
            identity_id = self._require_id(name)
            tids = [t.decode() for t in self.client.hkeys(self.keys.identity(identity_id)) if t != RECORD_FIELD]
            last = self.client.hlen(self.keys.names) == 1

            def write(p) -> None:
                p.unlink(self.keys.identity(identity_id), self.keys.negatives(identity_id),
                         self.keys.crops(identity_id))
                p.srem(self.keys.negative_ids, identity_id)
                p.hdel(self.keys.names, name)
                if meta.get("server_index") == "1":
                    for tid in tids:
                        p.execute_command("VREM", self.keys.vset, element(identity_id, tid))
                if last:  # an empty gallery may be re-enrolled with another model
                    p.hdel(self.keys.meta, "fingerprint")
            return with_hook(Plan(len(tids), write, "remove", [identity_id], [name]), also, identity_id, name)
        return self._commit(prepare, "remove", self._watched(watch))

    def rename(self, old: str, new: str) -> Identity:
        old, new = validate_name(old), validate_name(new)

        def prepare(pipe, meta) -> Plan:
            identity_id = self._require_id(old)
            found = self._identities([identity_id])[0]
            if new == old:
                return Plan(found)
            if self.client.hexists(self.keys.names, new):
                raise GalleryError(f"cannot rename {old!r} to {new!r}: gallery {self.gallery!r} already has "
                                   f"an identity named {new!r}")
            renamed = replace(found, name=new)

            def write(p) -> None:
                p.hdel(self.keys.names, old).hset(self.keys.names, new, identity_id)
                p.hset(self.keys.identity(identity_id), RECORD_FIELD, record_of(renamed))
            return Plan(renamed, write,
                         "rename", [identity_id], [new])
        return self._commit(prepare, "rename")

    def clear(self) -> None:
        """Drop every identity, template, crop, negative and setting of the gallery; `head` stays, so mirrors
        notice."""
        def prepare(pipe, meta) -> Plan:
            ids = [i.decode() for i in self.client.hvals(self.keys.names)]
            keys = [self.keys.identity(i) for i in ids] + [self.keys.negatives(i) for i in ids]
            keys += [self.keys.crops(i) for i in ids]
            keys += [self.keys.meta, self.keys.names, self.keys.vset, self.keys.negative_ids]

            def write(p) -> None:
                for start in range(0, len(keys), 10_000):
                    p.unlink(*keys[start:start + 10_000])
                p.xtrim(self.keys.changes, maxlen=0)
            return Plan(None, write, "clear", [], [])  # ids not listed: a mirror re-snapshots on clear
        self._commit(prepare, "clear")

    # -- internals ------------------------------------------------------------------------------
    def _write(self, entries: list[Entry], fingerprint: str, op: str, also: Hook | None = None,
               watch: Sequence[str] = ()) -> list[AddResult]:
        """Add `entries` (one transaction); an entry whose templates are all known writes nothing, unless
        hooked (`also`: single-entry adds only)."""
        names = list(dict.fromkeys(e.name for e in entries))

        def prepare(pipe, meta) -> Plan:
            updates, indexed = self.bind(meta, entries[0].rows.shape[1], fingerprint)
            known = {n: i.decode() for n, i in zip(names, self.client.hmget(self.keys.names, names)) if i}
            state = self._known_state(known)
            results, touched = [], {}
            for entry in entries:
                result, writes = fold_entry(entry, state, known)
                results.append(result)
                if writes:
                    touched.setdefault(result.identity.id, entry.name)

            def write(p) -> None:
                if updates:
                    p.hset(self.keys.meta, mapping=updates)
                new = {n: i for n, i in known.items() if state[i].new}
                if new:
                    p.hset(self.keys.names, mapping=new)
                for identity_id in touched:
                    self._queue_identity(p, state[identity_id], indexed)
            plan = Plan(results, write, op if touched else None, list(touched), list(touched.values()))
            return with_hook(plan, also, results[0].identity.id, results[0].identity.name, op)
        return self._commit(prepare, op, self._watched(watch))

    def _known_state(self, known: dict[str, str]) -> dict[str, Pending]:
        """Per existing identity id: its record, template ids and which have a crop, read in one pipeline."""
        pipe = self.client.pipeline(transaction=False)
        for identity_id in known.values():
            pipe.hget(self.keys.identity(identity_id), RECORD_FIELD).hkeys(self.keys.identity(identity_id))
            pipe.hkeys(self.keys.crops(identity_id))
        replies = pipe.execute()
        state = {}
        for identity_id, record, tids, cropped in zip(known.values(), replies[::3], replies[1::3], replies[2::3]):
            tids = {t.decode() for t in tids if t != RECORD_FIELD}
            state[identity_id] = Pending(identity_of(identity_id, {RECORD_FIELD: record}, len(tids)), tids,
                                         cropped={t.decode() for t in cropped})
        return state

    def _queue_identity(self, p, pending: Pending, indexed: bool) -> None:
        identity = pending.identity
        fields = dict(pending.blobs)
        if pending.record_changed:
            fields[RECORD_FIELD] = record_of(identity)
        if fields:  # a duplicate that only gains its crop changes nothing else
            p.hset(self.keys.identity(identity.id), mapping=fields)
        if pending.crops:
            p.hset(self.keys.crops(identity.id), mapping=pending.crops)
        if indexed:
            # Q8 matches an int8 gallery's own precision; a float32 gallery keeps exact vectors (NOQUANT).
            quant = "Q8" if self.dtype == "int8" else "NOQUANT"
            attribute = json.dumps({"identity": identity.id})
            for tid, row in pending.rows:
                p.execute_command("VADD", self.keys.vset, "FP32", row.astype("<f4").tobytes(),
                                  element(identity.id, tid), quant, "SETATTR", attribute)

    def _commit(self, prepare: Callable[[Any, dict], Plan], what: str, watch: Sequence[str] = ()) -> Any:
        """Run `prepare` on fresh reads under WATCH of `head` (and `watch`), then its writes + change entry in
        MULTI; with `wait_replicas`, WAIT for the replicas on the same connection before returning."""
        with self._write_lock if self.wait_replicas else nullcontext():
            writer = self._replicated_writer() if self.wait_replicas else self.client
            for attempt in range(MAX_ATTEMPTS):
                with self._errors(what), writer.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self.keys.head, *watch)
                        seq, epoch = self._head_for_write(pipe)
                        plan = prepare(pipe, text(pipe.hgetall(self.keys.meta)))
                        if plan.op is None:
                            return plan.result
                        pipe.multi()
                        plan.write(pipe)
                        self._log(pipe, seq + 1, epoch, plan)
                        pipe.execute()
                    except redis.WatchError:
                        # Another writer got in first: back off a little (more after each loss) and re-read.
                        time.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
                        continue
                if self.wait_replicas:
                    self._confirm_replicated(writer, what)
                return plan.result
        raise GalleryError(f"{what} on gallery {self.gallery!r} gave up after {MAX_ATTEMPTS} attempts: "
                           "other writers changed the gallery every time")

    def _replicated_writer(self) -> redis.Redis:
        # Private, used only under the write lock: the connection that ran EXEC is the one its pool hands back
        # next (pools reuse the last released connection), so WAIT counts replicas for exactly this write.
        if self._writer is None:
            self._writer = private_copy(self.client)
        return self._writer

    def _confirm_replicated(self, writer: redis.Redis, what: str) -> None:
        with self._errors(f"confirm replication of {what}"):
            acked = wait_for_replicas(writer, self.keys.head, self.wait_replicas, self.wait_timeout_ms)
        if acked < self.wait_replicas:
            raise GalleryError(f"{what} on gallery {self.gallery!r} is on the Redis master but only {acked} of "
                               f"{self.wait_replicas} replica(s) confirmed it within {self.wait_timeout_ms} ms: it "
                               "could be lost if that master fails now (are the replicas linked?)")

    def _head_for_write(self, pipe) -> tuple[int, str]:
        seq, epoch = pipe.hmget(self.keys.head, "seq", "epoch")
        if seq is None and pipe.exists(self.keys.changes):  # head lost but stream kept: continue its numbers
            seq = pipe.xinfo_stream(self.keys.changes)["last-generated-id"].split(b"-")[0]
        return int(seq or 0), (epoch.decode() if epoch else secrets.token_hex(8))

    def _log(self, pipe, seq: int, epoch: str, plan: Plan) -> None:
        pipe.hset(self.keys.head, mapping={"seq": seq, "epoch": epoch})
        pipe.xadd(self.keys.changes, change_fields(plan.op, plan.ids, plan.names, epoch), id=f"{seq}-0",
                  maxlen=CHANGES_MAXLEN, approximate=True)

    def _watched(self, watch: Sequence[str]) -> tuple[str, ...]:
        """`watch` keys checked to share the gallery's hash tag (a transaction cannot span Cluster slots)."""
        keys = (watch,) if isinstance(watch, str) else tuple(watch)
        for key in keys:
            if not isinstance(key, str) or not key.startswith(self.keys.base + ":"):
                raise GalleryError(f"watched key {key!r} is not a key of gallery {self.gallery!r} (it must start "
                                   f"with {self.keys.base + ':'!r} to share its hash tag)")
        return keys

    def _require_id(self, name: str) -> str:
        identity_id = self.client.hget(self.keys.names, name)
        if identity_id is None:
            raise GalleryError(f"no identity named {name!r} in gallery {self.gallery!r}")
        return identity_id.decode()

    def _identities(self, ids: Sequence[str]) -> list[Identity]:
        found = []
        for start in range(0, len(ids), READ_CHUNK):
            pipe = self.client.pipeline(transaction=True)
            for identity_id in ids[start:start + READ_CHUNK]:
                pipe.hget(self.keys.identity(identity_id), RECORD_FIELD).hlen(self.keys.identity(identity_id))
            replies = pipe.execute()
            found += [identity_of(i, {RECORD_FIELD: r}, n - 1)
                      for i, r, n in zip(ids[start:], replies[::2], replies[1::2]) if r is not None]
        return found

    @contextmanager
    def _errors(self, what: str):
        try:
            yield
        except REDIS_ERRORS as exc:
            raise GalleryError(f"Redis failed to {what} for gallery {self.gallery!r}: "
                               f"{type(exc).__name__}: {exc}") from exc
