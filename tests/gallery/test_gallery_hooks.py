"""Other writers joining a gallery write (`add`/`remove` with `also` and `watch`) against a real redis-server."""

import threading

import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryStore


def unit(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gallery_keys(client) -> dict[bytes, bytes]:
    return {k: client.dump(k) for k in client.scan_iter("fs:*")}


@pytest.fixture
def store(redis_client) -> GalleryStore:
    return GalleryStore(redis_client, "hooks")


def side_key(store: GalleryStore, what: str) -> str:
    return f"{store.keys.base}:{what}"


def test_hooked_add_and_remove_land_together_for_a_reader_in_a_transaction(store, redis_client, redis_server):
    """A reader that reads both keys in one MULTI never sees the identity without the hook's key or back."""
    stop, torn, reads = threading.Event(), [], []
    client = redis_server.client()

    def reader():
        while not stop.is_set():
            names, sidecar = client.pipeline(transaction=True).hexists(store.keys.names, "Ada").exists(
                side_key(store, "owned:ada")).execute()
            reads.append(bool(names))
            if bool(names) != bool(sidecar):
                torn.append((names, sidecar))

    def move(identity_id):
        return lambda pipe: pipe.hset(side_key(store, "owned:ada"), mapping={"sid": identity_id})

    def forget(identity_id):
        return lambda pipe: pipe.delete(side_key(store, "owned:ada"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            result = store.add("Ada", unit(1, seed=i), [f"t{i}"], "m", also=move)
            assert redis_client.hget(side_key(store, "owned:ada"), "sid").decode() == result.identity.id
            store.remove("Ada", also=forget)
    finally:
        stop.set()
        thread.join()
        client.close()
    assert torn == [] and any(reads) and not all(reads)  # the reader saw both states, never half of one
    assert [c.op for c in store.changes("0-0")] == ["add", "remove"] * 60  # one change per hooked write


def test_hook_reads_fresh_state_and_a_conflict_on_a_watched_key_retries_the_whole_write(store, redis_client):
    count_key = side_key(store, "count")
    redis_client.set(count_key, 1)
    calls = []

    def copy_count(identity_id):
        seen = int(store.client.get(count_key))
        calls.append(seen)
        if len(calls) == 1:
            redis_client.set(count_key, 2)  # another writer changes the key between our read and our EXEC
        return lambda pipe: pipe.set(side_key(store, "copied"), seen)

    result = store.add("Ada", unit(2), ["a", "b"], "m", also=copy_count, watch=[count_key])
    assert calls == [1, 2]  # prepare and hook ran again on fresh reads
    assert int(redis_client.get(side_key(store, "copied"))) == 2
    assert result.added == 2 and store.get("Ada").templates == 2
    assert [c.op for c in store.changes("0-0")] == ["add"]


def test_without_watching_the_key_the_conflict_goes_unnoticed(store, redis_client):
    """The control for the test above: only `watch` makes the extra key part of the transaction's guard."""
    count_key = side_key(store, "count")
    redis_client.set(count_key, 1)
    calls = []

    def copy_count(identity_id):
        seen = int(store.client.get(count_key))
        calls.append(seen)
        redis_client.set(count_key, 2)
        return lambda pipe: pipe.set(side_key(store, "copied"), seen)

    store.add("Ada", unit(1), ["a"], "m", also=copy_count)
    assert calls == [1] and int(redis_client.get(side_key(store, "copied"))) == 1


def test_a_gallery_error_in_the_hook_writes_nothing(store, redis_client):
    store.add("Bob", unit(1, seed=1), ["b"], "m")
    before = gallery_keys(redis_client)

    def refuse(identity_id):
        raise GalleryError("cluster unknown-00000000 was merged meanwhile")

    with pytest.raises(GalleryError, match="merged meanwhile"):
        store.add("Ada", unit(1), ["a"], "m", also=refuse)
    with pytest.raises(GalleryError, match="merged meanwhile"):
        store.remove("Bob", also=refuse)
    assert gallery_keys(redis_client) == before


def test_the_hook_gets_the_identity_id_new_or_existing(store):
    seen = []

    def record(identity_id):
        seen.append(identity_id)
        return lambda pipe: None

    created = store.add("Ada", unit(1), ["a"], "m", also=record)
    again = store.add("Ada", unit(1, seed=2), ["b"], "m", also=record)
    assert seen == [created.identity.id, created.identity.id] == [again.identity.id] * 2
    store.remove("Ada", also=record)
    assert seen[-1] == created.identity.id


def test_a_hooked_add_of_duplicate_templates_still_lands_the_hooks_commands(store, redis_client):
    store.add("Ada", unit(1), ["a"], "m")
    seq = store.head()[0]
    result = store.add("Ada", unit(1), ["a"], "m",
                       also=lambda identity_id: lambda pipe: pipe.set(side_key(store, "moved"), identity_id))
    assert (result.added, result.duplicates) == (0, 1)
    assert redis_client.get(side_key(store, "moved")).decode() == result.identity.id
    change = store.changes(f"{seq}-0")[-1]
    assert (change.op, change.identity_ids, change.names) == ("add", (result.identity.id,), ("Ada",))


@pytest.mark.parametrize("watch, message", [
    (["other:key"], "is not a key of gallery 'hooks'"),
    (["fs:{other}:sightings"], "is not a key of gallery 'hooks'"),
    ([7], "is not a key of gallery"),
])
def test_watched_keys_must_share_the_gallerys_hash_tag(store, redis_client, watch, message):
    with pytest.raises(GalleryError, match=message):
        store.add("Ada", unit(1), ["a"], "m", also=lambda i: lambda p: None, watch=watch)
    assert gallery_keys(redis_client) == {}


def test_a_hook_that_returns_no_writer_is_refused_with_nothing_written(store, redis_client):
    with pytest.raises(GalleryError, match="must return a writer"):
        store.add("Ada", unit(1), ["a"], "m", also=lambda identity_id: None)
    assert gallery_keys(redis_client) == {}
