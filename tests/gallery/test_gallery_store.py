"""The Redis gallery store against a real redis-server: round trips, refusals, atomicity, concurrency."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.codec import decode, encode, to_float
from pipeline.gallery.names import validate_name

REPO = Path(__file__).resolve().parents[2]


def unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gallery_keys(client) -> dict[bytes, bytes]:
    """Every key with its DUMP: two equal results mean nothing was written in between."""
    return {k: client.dump(k) for k in client.scan_iter("fs:*")}


@pytest.fixture
def store(redis_client) -> GalleryStore:
    return GalleryStore(redis_client, "test")


def test_add_get_list_templates_rename_remove_round_trip(store):
    ada, bob = unit(3, seed=1), unit(2, seed=2)
    first = store.add("Ada", ada, ["a0", "a1", "a2"], "model-1", metadata={"team": "red"})
    assert first.created and first.added == 3 and first.duplicates == 0
    assert store.add("Bob", bob, ["b0", "b1"], "model-1").identity.templates == 2
    got = store.get("Ada")
    assert (got.id, got.name, got.metadata, got.templates) == (first.identity.id, "Ada", {"team": "red"}, 3)
    assert [i.name for i in store.identities()] == ["Ada", "Bob"]
    np.testing.assert_array_equal(store.templates("Ada"), ada)  # float32: bit-exact, ordered by template id
    assert store.fingerprint == "model-1"

    renamed = store.rename("Ada", "Ada Lovelace")
    assert renamed.id == got.id and store.get("Ada Lovelace").templates == 3
    with pytest.raises(GalleryError, match="no identity named 'Ada'"):
        store.get("Ada")
    assert store.remove("Ada Lovelace") == 3
    assert [i.name for i in store.identities()] == ["Bob"]
    assert not store.client.exists(store.keys.identity(got.id))  # every template gone with it
    assert [c.op for c in store.changes("0-0")] == ["add", "add", "rename", "remove"]


def test_adding_to_an_existing_identity_merges_metadata_and_keeps_created(store):
    first = store.add("Ada", unit(1, seed=1), ["a0"], "m", metadata={"a": 1})
    again = store.add("Ada", unit(1, seed=2), ["a1"], "m", metadata={"b": 2})
    assert not again.created and again.identity.created == first.identity.created
    assert store.get("Ada").metadata == {"a": 1, "b": 2} and store.get("Ada").templates == 2


def test_same_template_id_is_never_stored_twice(store):
    rows = unit(3)
    assert store.add("Ada", rows[:2], ["t0", "t1"], "m").added == 2
    again = store.add("Ada", rows, ["t0", "t1", "t2"], "m")
    assert (again.added, again.duplicates, again.identity.templates) == (1, 2, 3)
    seq = store.head()[0]
    repeat = store.add("Ada", rows[:1], ["t0"], "m")
    assert (repeat.added, repeat.duplicates) == (0, 1) and store.head()[0] == seq  # no write, no change logged
    within = store.add("Bob", np.stack([rows[0], rows[1]]), ["x", "x"], "m")
    assert (within.added, within.duplicates) == (1, 1)
    np.testing.assert_array_equal(store.templates("Bob"), rows[:1])  # the first occurrence wins


def test_int8_decoding_error_is_small_and_top1_agrees_with_float32():
    gallery, queries = unit(2000, seed=3), unit(300, seed=4)
    codes, scales = decode(encode(gallery, "int8"), "int8", 128)
    assert encode(gallery[:1], "int8")[0].__len__() == 132 and encode(gallery[:1], "float32")[0].__len__() == 512
    decoded = to_float(codes, scales)
    bound = scales[:, None] / 2 + 1e-7  # round-to-nearest: at most half a step per component
    assert np.all(np.abs(decoded - gallery) <= bound)
    assert np.min(np.sum(decoded * gallery, axis=1) / np.linalg.norm(decoded, axis=1)) > 0.9995
    # Brute force: queries near a gallery row (genuine) and random ones (impostors).
    genuine = gallery[:300] + 0.05 * queries
    genuine /= np.linalg.norm(genuine, axis=1, keepdims=True)
    for q in (genuine, queries):
        exact, quantised = q @ gallery.T, q @ decoded.T
        top_exact, top_q = exact.argmax(axis=1), quantised.argmax(axis=1)
        # Disagreement only where the two best exact scores are within the quantisation error.
        gap = np.sort(exact, axis=1)[:, -1] - np.sort(exact, axis=1)[:, -2]
        assert np.all((top_exact == top_q) | (gap < 0.01))
        assert np.mean(top_exact == top_q) >= 0.95


def test_int8_gallery_round_trip_and_dtype_mismatch(redis_client):
    store = GalleryStore(redis_client, "small", dtype="int8")
    rows = unit(4)
    store.add("Ada", rows, ["0", "1", "2", "3"], "m")
    assert redis_client.hstrlen(store.keys.identity(store.get("Ada").id), "0") == 132
    assert np.abs(store.templates("Ada") - rows).max() < 0.005
    snap = store.snapshot()
    assert snap.dtype == "int8" and snap.matrix.dtype == np.int8 and snap.scales.shape == (4,)
    with pytest.raises(GalleryError, match="stores int8 templates; this store was opened with dtype='float32'"):
        GalleryStore(redis_client, "small", dtype="float32").add("Bob", rows[:1], ["b"], "m")


def test_other_model_is_refused_naming_both_fingerprints(store):
    store.add("Ada", unit(1), ["a"], "facenet-v1")
    with pytest.raises(GalleryError, match=r"gallery 'test' holds templates of model facenet-v1; refusing "
                                           r"templates of model facenet-v2 .*enroll.py --gallery test migrate "
                                           r"--model NEW_CARD.json"):
        store.add("Bob", unit(1), ["b"], "facenet-v2")
    store.remove("Ada")  # an empty gallery is unbound: re-enrolment with the new model works
    assert store.fingerprint is None
    store.add("Bob", unit(1), ["b"], "facenet-v2")
    assert store.fingerprint == "facenet-v2"


def test_open_keeps_an_existing_gallerys_settings_and_applies_new_ones_only_to_a_new_gallery(redis_client):
    fresh = GalleryStore.open(redis_client, "made", dtype_for_new="int8", server_index_for_new=True)
    assert (fresh.dtype, fresh.server_index, fresh.meta()) == ("int8", True, {})
    fresh.add("Ada", unit(1), ["a"], "model-1")
    assert redis_client.exists(fresh.keys.vset)
    again = GalleryStore.open(redis_client, "made", dtype_for_new="float32", server_index_for_new=False)
    assert (again.dtype, again.server_index) == ("int8", True)  # as created, whatever the caller would pick
    again.add("Bob", unit(1, seed=2), ["b"], "model-1")
    assert redis_client.execute_command("VCARD", again.keys.vset) == 2
    assert GalleryStore.open(redis_client, "made", fingerprint="model-1").dtype == "int8"


def test_open_refuses_another_models_gallery_naming_both_fingerprints(store):
    assert GalleryStore.open(store.client, "test", fingerprint="facenet-v2").meta() == {}  # empty: unbound
    store.add("Ada", unit(1), ["a"], "facenet-v1")
    with pytest.raises(GalleryError, match=r"gallery 'test' holds templates of model facenet-v1, but the embedder "
                                           r"is model facenet-v2: use the gallery's model \(--model\), or re-embed "
                                           r"the gallery for the new model: enroll.py --gallery test migrate "
                                           r"--model NEW_CARD.json"):
        GalleryStore.open(store.client, "test", fingerprint="facenet-v2")
    assert GalleryStore.open(store.client, "test").fingerprint == "facenet-v1"  # no fingerprint: no check


def test_a_harmonic_model_opens_an_older_models_gallery_to_match_but_never_writes_to_it(store):
    store.add("Ada", unit(1), ["a"], "facenet-v1")
    # The embedder's card lists the gallery's model in harmonic_with: opened, snapshot as stored.
    opened = GalleryStore.open(store.client, "test", fingerprint="facenet-v2", harmonic_with=["facenet-v1"])
    assert opened.snapshot().names == ["Ada"] and opened.fingerprint == "facenet-v1"
    # Harmonic with other models only: refused, naming both and what it is harmonic with.
    with pytest.raises(GalleryError, match=r"holds templates of model facenet-v1, but the embedder is model "
                                           r"facenet-v2 \(harmonic with facenet-v0 only\).*migrate --model"):
        GalleryStore.open(store.client, "test", fingerprint="facenet-v2", harmonic_with=["facenet-v0"])
    before = gallery_keys(store.client)
    for write in (lambda: opened.add("Bob", unit(1, seed=1), ["b"], "facenet-v2"),
                  lambda: opened.add("Ada", unit(1, seed=1), ["a2"], "facenet-v2"),
                  lambda: opened.add_many([("Cy", unit(1, seed=2), ["c"])], "facenet-v2")):
        with pytest.raises(GalleryError, match="refusing templates of model facenet-v2 .*never mixes"):
            write()
    assert gallery_keys(store.client) == before  # nothing stored changed


BAD_EMBEDDINGS = {
    "nan": (lambda r: np.where(np.arange(128) == 5, np.nan, r), "NaN or inf"),
    "inf": (lambda r: np.where(np.arange(128) == 0, np.inf, r), "NaN or inf"),
    "non-unit": (lambda r: r * 1.42, "unit length"),
    "zero": (lambda r: np.zeros_like(r), "unit length"),
    "wrong-dim": (lambda r: r[:, :64] / np.linalg.norm(r[:, :64], axis=1, keepdims=True), r"\b64\b"),
    "one-d": (lambda r: r[0], "one template id per row"),
    "ids-count": (lambda r: np.concatenate([r, r]), "one template id per row"),
}


@pytest.mark.parametrize("case", sorted(BAD_EMBEDDINGS))
def test_bad_embeddings_are_refused_with_nothing_written(store, case):
    store.add("Ada", unit(1), ["a"], "m")
    before = gallery_keys(store.client)
    make, message = BAD_EMBEDDINGS[case]
    rows = make(unit(2, seed=9))
    with pytest.raises(GalleryError, match=message):
        store.add("Bob", rows, ["b0", "b1"], "m")
    with pytest.raises(GalleryError, match=message):
        store.add_many([("Cy", unit(1, seed=8), ["c"]), ("Bob", rows, ["b0", "b1"])], "m")
    assert gallery_keys(store.client) == before


VALID_NAMES = ["Ada", "Ada Lovelace", "O'Brien-Smith, Jr.", "李小龍", "Zoë", "Ελένη", "محمد", "😀 emoji",
               "a" * 200, "name.with.dots", "tab\u00a0nbsp inside"]
INVALID_NAMES = {
    "": "empty", "   ": "only whitespace", " Ada": "starts or ends with whitespace",
    "a/b": "path separator '/'", "a\\b": "path separator", "x" * 201: "201 characters",
    "x" * 10_000: "10000 characters", "Ada\nLovelace": "control character", "A\x00da": "control character",
    "bell\x07": "control character", "line\u2028sep": "line separator", "\ud800": "lone surrogate",
}


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_names_round_trip_exactly(store, name):
    store.add(name, unit(1), ["t"], "m")
    assert store.get(name).name == name and [i.name for i in store.identities()] == [name]


def test_names_are_nfc_normalised(store):
    decomposed = unicodedata.normalize("NFD", "Zoë")
    assert decomposed != "Zoë"
    store.add(decomposed, unit(1), ["t"], "m")
    assert store.get("Zoë").name == "Zoë" and store.add("Zoë", unit(1), ["u"], "m").created is False


@pytest.mark.parametrize("name, message", sorted(INVALID_NAMES.items()))
def test_invalid_names_are_refused_naming_the_problem(store, name, message):
    with pytest.raises(GalleryError, match=message):
        store.add(name, unit(1), ["t"], "m")
    assert gallery_keys(store.client) == {}


@pytest.mark.parametrize("gallery", ["", "a{b}", "a:b", "a b", "x" * 65, "-lead"])
def test_invalid_gallery_names_are_refused(redis_client, gallery):
    with pytest.raises(GalleryError, match="invalid gallery name"):
        GalleryStore(redis_client, gallery)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=260), st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)))
def test_fuzz_names_round_trip_or_raise_gallery_error(store, name):
    try:
        accepted = validate_name(name)
    except GalleryError:
        return
    assert accepted == unicodedata.normalize("NFC", name)
    result = store.add(name, unit(1), ["t"], "m")
    assert store.get(accepted).name == accepted == result.identity.name
    assert store.remove(accepted) == 1


def test_rename_refuses_existing_name_and_missing_source(store):
    store.add("Ada", unit(1), ["a"], "m")
    store.add("Bob", unit(1), ["b"], "m")
    with pytest.raises(GalleryError, match="already has an identity named 'Bob'"):
        store.rename("Ada", "Bob")
    with pytest.raises(GalleryError, match="no identity named 'Cy'"):
        store.rename("Cy", "Dee")
    with pytest.raises(GalleryError, match="no identity named 'Cy'"):
        store.remove("Cy")
    assert store.rename("Ada", "Ada").name == "Ada"


def test_add_many_counts_templates_and_merges_repeated_names(store):
    rows = unit(6)
    items = [("Ada", rows[0:2], ["a0", "a1"]), ("Bob", rows[2:3], ["b0"]), ("Ada", rows[3:5], ["a1", "a2"])]
    assert store.add_many(items, "m", batch=2) == 4
    assert store.get("Ada").templates == 3 and store.get("Bob").templates == 1
    assert store.add_many(items, "m") == 0


def test_clear_drops_the_gallery_and_logs_it(store):
    store.add("Ada", unit(1), ["a"], "m")
    store.clear()
    assert store.identities() == [] and store.fingerprint is None and store.meta() == {}
    assert [c.op for c in store.changes("0-0")] == ["clear"]
    assert len(store.snapshot().identity_ids) == 0


def test_snapshot_readers_never_see_half_an_identity(store):
    """Identities get 40 templates per add: every snapshot must show each with a multiple of 40."""
    per, rounds, stop, seen, bad = 40, 30, threading.Event(), [], []

    def read(source):
        while not stop.is_set():
            snap = source()
            counts = np.bincount(snap.owner, minlength=len(snap.identity_ids))
            bad.extend(int(c) for c in counts if c % per)
            seen.append(len(snap.owner))

    with GalleryMirror(store, poll_ms=20) as mirror:
        readers = [threading.Thread(target=read, args=(s,)) for s in (store.snapshot, mirror.current)]
        for thread in readers:
            thread.start()
        for i in range(rounds):
            name = f"person{i % 10}"  # the second and third round add to existing identities
            store.add(name, unit(per, seed=i), [f"t{i}-{j}" for j in range(per)], "m")
        assert mirror.wait_for(lambda s: len(s.owner) == rounds * per, 5)
        stop.set()
        for thread in readers:
            thread.join()
    assert bad == [] and len(seen) > 5 and max(seen) > 0


def run_python(code: str, *args, **kwargs) -> subprocess.Popen:
    """A child Python running `code` with the repo importable and `args` as sys.argv[1:]."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=REPO, env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


ENROL = """
    import sys, time, numpy as np, redis
    from pipeline.gallery import GalleryStore
    port, password, worker = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = GalleryStore(redis.Redis(port=port, password=password), "test")
    rng = np.random.default_rng(worker)
    def unit(n):
        x = rng.standard_normal((n, 128)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(8):
        store.add(f"w{worker}-p{i}", unit(3), [f"{worker}-{i}-{j}" for j in range(3)], "m")
        store.add("Shared", unit(1), [f"shared-{worker}-{i}"], "m")
    print(time.time())
"""


def test_concurrent_enrolment_from_several_processes_ends_consistent(store, redis_server):
    workers = [run_python(ENROL, redis_server.port, redis_server.password, w) for w in range(4)]
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    identities = {i.name: i for i in store.identities()}
    assert len(identities) == 4 * 8 + 1
    assert identities["Shared"].templates == 4 * 8
    assert all(i.templates == 3 for n, i in identities.items() if n != "Shared")
    # Names, identity keys and the change log agree: one change per write, numbered without gaps.
    names = {k.decode(): v.decode() for k, v in store.client.hgetall(store.keys.names).items()}
    assert {n: i.id for n, i in identities.items()} == names
    id_keys = {k.decode() for k in store.client.scan_iter(store.keys.identity("*"))}
    assert id_keys == {store.keys.identity(i) for i in names.values()}
    changes = store.changes("0-0", count=1000)
    assert [c.seq for c in changes] == list(range(1, 4 * 8 * 2 + 1))
    assert store.head()[0] == 4 * 8 * 2
    assert len({c.epoch for c in changes}) == 1
    snap = store.snapshot()
    assert len(snap.owner) == 4 * 8 * 3 + 4 * 8


def test_enrolment_in_another_process_is_visible_within_a_second(store, redis_server):
    store.add("Ada", unit(1), ["a"], "m")
    with GalleryMirror(store, poll_ms=200) as mirror:
        code = """
            import sys, time, numpy as np, redis
            from pipeline.gallery import GalleryStore
            store = GalleryStore(redis.Redis(port=int(sys.argv[1]), password=sys.argv[2]), "test")
            x = np.ones((1, 128), np.float32) / np.sqrt(128)
            sys.stdin.readline()  # start when the parent is watching
            began = time.time()  # before the write: the measured latency includes the write itself
            store.add("Remote", x, ["r"], "m")
            print(began, flush=True)
        """
        child = run_python(code, redis_server.port, redis_server.password)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert mirror.wait_for(lambda s: "Remote" in s.names, 10)
        seen = time.time()
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        latency = seen - float(out.split()[-1])
        print(f"cross-process visibility: {latency * 1000:.0f} ms")
        assert latency < 1.0, f"mirror saw the remote enrolment after {latency:.3f} s"


def test_server_index_follows_adds_and_removes(redis_client):
    store = GalleryStore(redis_client, "vs", server_index=True)
    ada, bob = unit(3, seed=1), unit(2, seed=2)
    store.add("Ada", ada, ["a0", "a1", "a2"], "m")
    store.add("Bob", bob, ["b0", "b1"], "m")
    key = store.keys.vset
    assert redis_client.execute_command("VCARD", key) == 5
    info = redis_client.execute_command("VINFO", key)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert info[b"quant-type"] == b"f32"  # NOQUANT for a float32 gallery
    top = redis_client.execute_command("VSIM", key, "FP32", bob[1].tobytes(), "COUNT", 1)
    assert store.resolve_elements(top) == [(store.get("Bob").id, "Bob")]
    attribute = redis_client.execute_command("VGETATTR", key, top[0])
    assert json.loads(attribute) == {"identity": store.get("Bob").id}
    assert store.remove("Ada") == 3
    assert redis_client.execute_command("VCARD", key) == 2
    store.rename("Bob", "Robert")
    assert store.resolve_elements(top) == [(store.get("Robert").id, "Robert")]
    GalleryStore(redis_client, "plain").add("y", unit(1), ["y"], "m")
    with pytest.raises(GalleryError, match="created without a server index"):
        GalleryStore(redis_client, "plain", server_index=True).add("x", unit(1), ["x"], "m")


def test_int8_server_index_uses_q8(redis_client):
    store = GalleryStore(redis_client, "vs8", dtype="int8", server_index=True)
    store.add("Ada", unit(2), ["a0", "a1"], "m")
    info = redis_client.execute_command("VINFO", store.keys.vset)
    info = dict(zip(info[::2], info[1::2])) if isinstance(info, list) else info
    assert info[b"quant-type"] == b"int8"
