"""Edits to an enrolled identity beyond adding templates: negative templates, and removing templates.

Negatives ("this face is not Alice") live beside the identity (`fs:{g}:neg:<id>`, listed in `neg-ids`,
keys.py), encoded like templates in the gallery's dtype, and go with it on `remove`/`clear`. Removing templates
is how self-enrolment is undone: `remove_auto_templates` drops the `auto-` templates and never a manual one; a
removed template's enrolment crop (`crops:<id>`) goes with it. Each edit is one transaction of the store
(`_commit`) with a change-stream entry naming the identity, so every mirror re-fetches it.

A mixin of GalleryStore: it uses the store's client, keys and transaction machinery.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.identity import RECORD_FIELD, is_auto
from pipeline.gallery.keys import element
from pipeline.gallery.names import validate_name, validate_template_id
from pipeline.gallery.plan import Plan

NEGATIVE_OP = "negative"
REMOVE_TEMPLATES_OP = "remove_templates"
READ_CHUNK = 1000  # identities per pipelined read


class TemplateEdits:
    """Negative templates and template removal; see the module docstring."""

    # -- negatives ------------------------------------------------------------------------------
    def add_negatives(self, name: str, embeddings: np.ndarray, template_ids: Sequence[str]) -> int:
        """Store faces that are NOT `name` (a face more like them than like `name` is refused that name);
        returns how many were new (a template id `name` already has as a negative is not stored again)."""
        name = validate_name(name)
        ids = _template_ids(template_ids, "negative")
        array = np.asarray(embeddings)
        if array.ndim != 2 or len(array) != len(ids):
            raise GalleryError(f"identity {name!r}: negatives of shape {array.shape} need one template id per row, "
                               f"got {len(ids)} id(s)")
        rows = codec.check_embeddings(array)

        def prepare(pipe, meta) -> Plan:
            identity_id = self._require_id(name)
            if rows.shape[1] != int(meta["dim"]):
                raise GalleryError(f"gallery {self.gallery!r} holds {meta['dim']}-d templates; refusing "
                                   f"{rows.shape[1]}-d negatives for {name!r}")
            key = self.keys.negatives(identity_id)
            stored = {t.decode() for t in self.client.hkeys(key)}
            new: dict[str, bytes] = {}
            for tid, blob in zip(ids, codec.encode(rows, meta["dtype"])):
                if tid not in stored and tid not in new:
                    new[tid] = blob
            if not new:
                return Plan(0)

            def write(p) -> None:
                p.hset(key, mapping=new).sadd(self.keys.negative_ids, identity_id)
            return Plan(len(new), write, NEGATIVE_OP, [identity_id], [name])
        return self._commit(prepare, "add negatives")

    def negatives(self, name: str) -> np.ndarray:
        """(n, dim) float32 negative templates of `name`, ordered by template id."""
        return self.read_negatives(self.get(name).id)[1]

    def read_negatives(self, identity_id: str) -> tuple[list[str], np.ndarray]:
        """(template ids, (n, dim) float32 rows in that order) of an identity's negatives; none if it has none."""
        with self._errors("read negatives"):
            pipe = self.client.pipeline(transaction=True)
            fields, meta = pipe.hgetall(self.keys.negatives(identity_id)).hgetall(self.keys.meta).execute()
        meta = {k.decode(): v.decode() for k, v in meta.items()}
        tids = sorted(fields)
        rows = codec.to_float(*codec.decode([fields[t] for t in tids], meta.get("dtype", self.dtype),
                                            int(meta.get("dim", 0))))
        return [t.decode() for t in tids], rows

    def clear_negatives(self, name: str) -> int:
        """Forget every negative of `name`; returns how many there were."""
        name = validate_name(name)

        def prepare(pipe, meta) -> Plan:
            identity_id = self._require_id(name)
            key = self.keys.negatives(identity_id)
            count = self.client.hlen(key)
            if not count:
                return Plan(0)

            def write(p) -> None:
                p.unlink(key)  # not chained: redis-py's ClusterPipeline.unlink returns None
                p.srem(self.keys.negative_ids, identity_id)
            return Plan(count, write, NEGATIVE_OP, [identity_id], [name])
        return self._commit(prepare, "clear negatives")

    # -- template removal -----------------------------------------------------------------------
    def remove_templates(self, name: str, template_ids: Sequence[str]) -> int:
        """Remove those templates of `name` (ids it does not have are ignored); returns how many went.
        Refuses to remove its last template: an identity without templates can never be matched."""
        name = validate_name(name)
        ids = _template_ids(template_ids, "template")

        def prepare(pipe, meta) -> Plan:
            identity_id = self._require_id(name)
            have = self._template_ids_of([identity_id])[identity_id]
            gone = [t for t in dict.fromkeys(ids) if t in have]
            if not gone:
                return Plan(0)
            if len(gone) == len(have):
                raise GalleryError(f"removing {len(gone)} template(s) would leave {name!r} without templates; "
                                   "remove the identity instead")
            return self._removal_plan({identity_id: gone}, {identity_id: name}, meta, len(gone))
        return self._commit(prepare, "remove templates")

    def remove_auto_templates(self, name: str | None = None) -> dict[str, int]:
        """Remove the self-enrolled (`auto-`) templates of `name`, or of every identity (None); manual templates
        are never touched. One transaction; returns name -> templates removed (identities that had some)."""
        name = None if name is None else validate_name(name)

        def prepare(pipe, meta) -> Plan:
            if name is None:
                names = {i.decode(): n.decode() for n, i in self.client.hgetall(self.keys.names).items()}
            else:
                names = {self._require_id(name): name}
            gone = {}
            for identity_id, tids in self._template_ids_of(list(names)).items():
                auto = sorted(t for t in tids if is_auto(t))
                if auto and len(auto) == len(tids):
                    raise GalleryError(f"{names[identity_id]!r} has only auto templates; removing them would "
                                       "leave it without templates: remove the identity instead")
                if auto:
                    gone[identity_id] = auto
            result = {names[i]: len(tids) for i, tids in gone.items()}
            return self._removal_plan(gone, names, meta, result) if gone else Plan(result)
        return self._commit(prepare, "remove auto templates")

    def _removal_plan(self, gone: dict[str, list[str]], names: dict[str, str], meta: dict, result) -> Plan:
        indexed = meta.get("server_index") == "1"

        def write(p) -> None:
            for identity_id, tids in gone.items():
                p.hdel(self.keys.identity(identity_id), *tids)
                p.hdel(self.keys.crops(identity_id), *tids)  # a removed template's crop goes with it
                if indexed:
                    for tid in tids:
                        p.execute_command("VREM", self.keys.vset, element(identity_id, tid))
        return Plan(result, write, REMOVE_TEMPLATES_OP, list(gone), [names[i] for i in gone])

    def _template_ids_of(self, identity_ids: list[str]) -> dict[str, set[str]]:
        found = {}
        for start in range(0, len(identity_ids), READ_CHUNK):
            chunk = identity_ids[start:start + READ_CHUNK]
            pipe = self.client.pipeline(transaction=False)  # inside the write's WATCH: a change retries it
            for identity_id in chunk:
                pipe.hkeys(self.keys.identity(identity_id))
            found.update({i: {t.decode() for t in tids if t != RECORD_FIELD} for i, tids in zip(chunk, pipe.execute())})
        return found


def _template_ids(template_ids: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(template_ids, str):
        raise GalleryError(f"{what} ids must be a list of strings, got the string {template_ids!r}")
    ids = tuple(validate_template_id(t) for t in template_ids)
    if not ids:
        raise GalleryError(f"no {what} ids given")
    return ids
