"""Negative templates ("this face is not Alice"): the store, snapshots, mirrors, and the matcher's refusals."""

import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryMirror, GalleryStore, Snapshot
from pipeline.gallery.matcher import NO_SIMILARITY, Matcher
from pipeline.gallery.search import ApproximateSearch, ExactSearch, ServerSearch, StaticSource

DIM = 8


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def at(cos: float, axis: int = 1) -> np.ndarray:
    """A unit vector at cosine `cos` from the first axis (the query below)."""
    vector = np.zeros(DIM, np.float32)
    vector[0], vector[axis] = cos, np.sqrt(1 - cos**2)
    return vector


QUERY = at(1.0)[None]


def gallery_keys(client) -> dict[bytes, bytes]:
    return {k: client.dump(k) for k in client.scan_iter("fs:*")}


@pytest.fixture
def store(redis_client) -> GalleryStore:
    return GalleryStore(redis_client, "neg")


# -- the store -----------------------------------------------------------------------------------------
def test_negatives_are_stored_read_back_and_logged(store):
    ada = store.add("Ada", unit(2, seed=1), ["a0", "a1"], "m").identity
    seq = store.head()[0]
    faces = unit(3, seed=2)
    assert store.add_negatives("Ada", faces, ["n2", "n0", "n1"]) == 3
    np.testing.assert_array_equal(store.negatives("Ada"), faces[[1, 2, 0]])  # ordered by template id
    assert store.add_negatives("Ada", faces[:2], ["n2", "n9"]) == 1  # a known id is not stored again
    (change, again) = store.changes(f"{seq}-0")
    assert (change.op, change.identity_ids, change.names) == ("negative", (ada.id,), ("Ada",))
    assert again.op == "negative"
    assert store.get("Ada").templates == 2  # negatives are not templates
    np.testing.assert_array_equal(store.templates("Ada"), store.read_full(ada.id)[2])

    seq = store.head()[0]
    assert store.add_negatives("Ada", faces[:1], ["n0"]) == 0 and store.head()[0] == seq  # nothing new: no write
    assert store.clear_negatives("Ada") == 4
    assert not store.client.exists(store.keys.negative_ids)  # no identity has negatives any more
    assert store.negatives("Ada").shape == (0, DIM)
    assert store.clear_negatives("Ada") == 0 and store.head()[0] == seq + 1
    assert store.changes(f"{seq}-0")[0].op == "negative"


def test_int8_gallery_keeps_negatives_in_its_dtype(redis_client):
    store = GalleryStore(redis_client, "small", dtype="int8")
    ada = store.add("Ada", unit(1), ["a"], "m").identity
    faces = unit(2, seed=3)
    store.add_negatives("Ada", faces, ["n0", "n1"])
    assert redis_client.hstrlen(store.keys.negatives(ada.id), "n0") == DIM + 4
    assert np.abs(store.negatives("Ada") - faces).max() < 0.01


def test_remove_and_clear_delete_negatives_too(store, redis_client):
    ada = store.add("Ada", unit(1), ["a"], "m").identity
    bob = store.add("Bob", unit(1, seed=1), ["b"], "m").identity
    store.add_negatives("Ada", unit(2, seed=2), ["n0", "n1"])
    store.add_negatives("Bob", unit(1, seed=3), ["n0"])
    assert redis_client.smembers(store.keys.negative_ids) == {ada.id.encode(), bob.id.encode()}
    store.remove("Ada")
    assert not redis_client.exists(store.keys.negatives(ada.id)) and redis_client.exists(store.keys.negatives(bob.id))
    assert redis_client.smembers(store.keys.negative_ids) == {bob.id.encode()}
    store.clear()
    assert [k for k in redis_client.scan_iter(f"{store.keys.base}:*") if b":neg" in k] == []


HOSTILE = {
    "unknown name": (lambda s: s.add_negatives("Nobody", unit(1), ["n"]), "no identity named 'Nobody'"),
    "wrong dim": (lambda s: s.add_negatives("Ada", unit(1, dim=4), ["n"]), "holds 8-d templates; refusing 4-d"),
    "nan": (lambda s: s.add_negatives("Ada", np.full((1, DIM), np.nan), ["n"]), "NaN or inf"),
    "not unit": (lambda s: s.add_negatives("Ada", 2 * unit(1), ["n"]), "unit length"),
    "empty ids": (lambda s: s.add_negatives("Ada", unit(1)[:0], []), "no negative ids given"),
    "ids count": (lambda s: s.add_negatives("Ada", unit(2), ["n"]), "need one template id per row"),
    "ids string": (lambda s: s.add_negatives("Ada", unit(1), "n"), "must be a list of strings"),
    "bad id": (lambda s: s.add_negatives("Ada", unit(1), [""]), "template id is empty"),
    "bad name": (lambda s: s.add_negatives("A/da", unit(1), ["n"]), "path separator"),
    "read unknown": (lambda s: s.negatives("Nobody"), "no identity named 'Nobody'"),
    "clear unknown": (lambda s: s.clear_negatives("Nobody"), "no identity named 'Nobody'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_negatives_are_refused_with_nothing_written(store, redis_client, case):
    store.add("Ada", unit(1), ["a"], "m")
    store.add_negatives("Ada", unit(1, seed=5), ["n0"])
    before = gallery_keys(redis_client)
    call, message = HOSTILE[case]
    with pytest.raises(GalleryError, match=message):
        call(store)
    assert gallery_keys(redis_client) == before


# -- snapshots and mirrors -----------------------------------------------------------------------------
def test_snapshot_carries_negatives_with_their_owners_read_only(store):
    store.add("Ada", unit(1), ["a"], "m")
    store.add("Bob", unit(1, seed=1), ["b"], "m")
    store.add("Cy", unit(1, seed=2), ["c"], "m")
    store.add_negatives("Cy", unit(2, seed=3), ["n0", "n1"])
    store.add_negatives("Ada", unit(1, seed=4), ["n0"])
    snap = store.snapshot()
    assert snap.negatives.shape == (3, DIM) and snap.negatives.dtype == np.float32
    for name in ("Ada", "Bob", "Cy"):
        mine = snap.negatives[snap.negative_owner == snap.names.index(name)]
        np.testing.assert_array_equal(mine, store.negatives(name).reshape(-1, DIM))
    assert not snap.negatives.flags.writeable and not snap.negative_owner.flags.writeable


def snapshot_of(people: dict[str, list[np.ndarray]], negatives: dict[str, list[np.ndarray]]) -> Snapshot:
    names = list(people)
    matrix = np.array([v for n in names for v in people[n]], np.float32).reshape(-1, DIM)
    owner = np.array([i for i, n in enumerate(names) for _ in people[n]], np.int32)
    refused = [v for n in names for v in negatives.get(n, [])]
    return Snapshot("1-0", "fp", "float32", [f"id-{n}" for n in names], names, matrix, None, owner,
                    negatives=np.array(refused, np.float32).reshape(-1, DIM),
                    negative_owner=np.array([i for i, n in enumerate(names) for _ in negatives.get(n, [])],
                                            np.int32))


def test_merged_keeps_negatives_with_their_identities_when_others_are_replaced_or_dropped():
    a, b, c, d = (at(0.1 * i, 2) for i in range(1, 5))
    old = snapshot_of({"A": [a], "B": [b], "C": [c]}, {"A": [a, b], "C": [c]})
    fresh = snapshot_of({"B": [b], "D": [d]}, {"B": [d], "D": [a]})
    merged = old.merged(fresh, {"id-A", "id-B", "id-D"}, "2-0", "")
    assert merged.names == ["C", "B", "D"]
    expected = {"C": [c], "B": [d], "D": [a]}
    for identity_id, name in zip(merged.identity_ids, merged.names):
        np.testing.assert_array_equal(merged.negatives_of(identity_id), np.array(expected[name]))
    assert merged.negatives_of("id-A").shape[0] == 0
    untouched = old.merged(snapshot_of({}, {}), set(), "2-0", "")
    np.testing.assert_array_equal(untouched.negatives, old.negatives)


def test_mirror_follows_negatives_through_the_change_stream(store):
    store.add("Ada", unit(1), ["a"], "m")
    with GalleryMirror(store, poll_ms=50) as mirror:
        assert len(mirror.current().negatives) == 0
        store.add_negatives("Ada", unit(2, seed=1), ["n0", "n1"])
        assert mirror.wait_for(lambda s: len(s.negatives) == 2, 2)
        np.testing.assert_array_equal(mirror.current().negatives_of(store.get("Ada").id), store.negatives("Ada"))
        store.clear_negatives("Ada")
        assert mirror.wait_for(lambda s: len(s.negatives) == 0, 2)
        store.add_negatives("Ada", unit(1, seed=2), ["n2"])
        assert mirror.wait_for(lambda s: len(s.negatives) == 1, 2)
        store.remove("Ada")
        assert mirror.wait_for(lambda s: len(s.negatives) == 0 and not s.names, 2)


# -- the matcher ---------------------------------------------------------------------------------------
# alice 0.9, bob 0.8, carol 0.6 (cosine with QUERY)
PEOPLE = {"alice": [at(0.9)], "bob": [at(0.8, 2)], "carol": [at(0.6, 3)]}


@pytest.mark.parametrize("negatives, threshold, name, similarity, runner_up, refused", [
    ({}, 0.5, "alice", 0.9, "bob", None),
    ({"alice": [at(0.85, 4)]}, 0.5, "alice", 0.9, "bob", None),  # less like the negative than like alice
    ({"alice": [at(0.95, 4)]}, 0.5, "bob", 0.8, "carol", "alice"),  # the decision passes to bob
    ({"alice": [at(0.95, 4)], "bob": [at(0.85, 5)]}, 0.5, "carol", 0.6, None, "alice"),
    ({"alice": [at(0.95, 4)]}, 0.85, None, 0.8, "carol", "alice"),  # bob still needs the threshold
    ({"bob": [at(0.95, 4)]}, 0.5, "alice", 0.9, "bob", None),  # below the winner nothing is checked
    ({"alice": [at(0.95, 4)]}, 0.95, None, 0.9, "bob", None),  # alice unknown anyway: nothing refused
])
def test_refusal_hand_computed(negatives, threshold, name, similarity, runner_up, refused):
    (match,) = Matcher(ExactSearch(snapshot_of(PEOPLE, negatives)), threshold).match(QUERY)
    assert (match.identity, match.runner_up, match.refused) == (name, runner_up, refused)
    assert match.similarity == pytest.approx(similarity, abs=1e-6)
    assert match.identity_id == (f"id-{name}" if name else None)


def test_everyone_refused_is_unknown():
    snapshot = snapshot_of({"alice": [at(0.9)]}, {"alice": [at(0.95, 4)]})
    (match,) = Matcher(ExactSearch(snapshot), 0.5).match(QUERY)
    assert (match.identity, match.similarity, match.refused) == (None, NO_SIMILARITY, "alice")


def test_refusal_widens_the_search_when_every_top_k_identity_is_refused():
    people = {f"p{i}": [at(0.9 - 0.01 * i, 2 + i % 6)] for i in range(6)}
    refused = {f"p{i}": [at(0.99, 2 + (i + 1) % 6)] for i in range(3)}
    (match,) = Matcher(ExactSearch(snapshot_of(people, refused)), 0.5, k=2).match(QUERY)
    assert (match.identity, match.runner_up, match.refused) == ("p3", "p4", "p0")


def test_negatives_from_a_source_reach_every_backend(redis_client):
    """Server search labels carry no negatives: the matcher reads them from the mirror instead."""
    store = GalleryStore.open(redis_client, "indexed", server_index_for_new=True)
    for name, rows in PEOPLE.items():
        store.add(name, np.array(rows), ["t"], "m")
    store.add_negatives("alice", at(0.95, 4)[None], ["not-alice"])
    with GalleryMirror(store, poll_ms=50) as mirror:
        for search in (ExactSearch(mirror), ApproximateSearch(mirror), ServerSearch.of_store(store)):
            (match,) = Matcher(search, 0.5, negatives=mirror).match(QUERY)
            assert (match.identity, match.refused) == ("bob", "alice"), type(search).__name__
        (plain,) = Matcher(ServerSearch.of_store(store), 0.5).match(QUERY)
        assert (plain.identity, plain.refused) == ("alice", None)  # no source, no snapshot labels: no negatives


def test_matcher_refuses_a_negatives_source_that_is_not_one():
    with pytest.raises(GalleryError, match="negatives must come from a GalleryMirror"):
        Matcher(ExactSearch(snapshot_of(PEOPLE, {})), 0.5, negatives=np.zeros(3))


def oracle(templates, owner, negatives, negative_owner, queries, threshold):
    """Brute force: identity max scores, best first; skip identities refused by a closer negative."""
    names = []
    for query in queries:
        sims = templates @ query
        scores = {o: sims[owner == o].max() for o in np.unique(owner)}
        name = None
        for o, score in sorted(scores.items(), key=lambda item: -item[1]):
            mine = negatives[negative_owner == o]
            if score >= threshold and len(mine) and (mine @ query).max() > score:
                continue
            name = int(o) if score >= threshold else None
            break
        names.append(name)
    return names


def random_gallery(identities=60, per=3, queries=400, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit(identities, dim, seed)
    owner = np.repeat(np.arange(identities, dtype=np.int32), per)
    templates = centres[owner] + 0.6 * rng.standard_normal((len(owner), dim)).astype(np.float32) / np.sqrt(dim)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    probes = centres[rng.integers(0, identities, queries)] + 0.7 * rng.standard_normal((queries, dim)) / np.sqrt(dim)
    probes = (probes / np.linalg.norm(probes, axis=1, keepdims=True)).astype(np.float32)
    return templates, owner, probes


def build(templates, owner, negatives=None, negative_owner=None):
    ids = [f"i{o}" for o in range(int(owner.max()) + 1)]
    extra = {} if negatives is None else {"negatives": negatives, "negative_owner": negative_owner}
    return Snapshot("1-0", "fp", "float32", ids, ids, templates, None, owner, **extra)


@pytest.mark.parametrize("k", [2, 32])
def test_oracle_identities_without_negatives_decide_exactly_as_before(k):
    templates, owner, probes = random_gallery()
    before = Matcher(ExactSearch(build(templates, owner)), 0.7, k=k).match(probes)
    empty = np.zeros((0, templates.shape[1]), np.float32), np.zeros(0, np.int32)
    assert Matcher(ExactSearch(build(templates, owner, *empty)), 0.7, k=k).match(probes) == before
    # Only identity 0 has negatives: a face can change only if it was named identity 0 before.
    target = 0
    named = [i for i, m in enumerate(before) if m.identity == f"i{target}"]
    assert len(named) >= 3
    negatives = probes[named[:3]] * 0.98 + 0.02 * unit(3, templates.shape[1], 7)
    negatives /= np.linalg.norm(negatives, axis=1, keepdims=True)
    after = Matcher(ExactSearch(build(templates, owner, negatives, np.zeros(3, np.int32))), 0.7,
                    k=k).match(probes)
    changed = [i for i, (b, a) in enumerate(zip(before, after)) if b != a]
    assert changed and all(before[i].identity == f"i{target}" for i in changed)
    assert all(after[i].identity != f"i{target}" and after[i].refused == f"i{target}" for i in changed)
    expected = oracle(templates, owner, negatives, np.zeros(3, np.int32), probes, 0.7)
    assert [m.identity for m in after] == [None if e is None else f"i{e}" for e in expected]


def test_oracle_many_identities_with_negatives():
    templates, owner, probes = random_gallery(seed=3)
    rng = np.random.default_rng(4)
    # Half the negatives near probes, owned by the identity that probe scores best (they refuse), half random.
    near = rng.choice(len(probes), 40, replace=False)
    best = owner[(probes[near] @ templates.T).argmax(axis=1)]
    jitter = probes[near] + 0.2 * unit(40, templates.shape[1], 6)
    negatives = np.concatenate([jitter / np.linalg.norm(jitter, axis=1, keepdims=True),
                                unit(40, templates.shape[1], 5)]).astype(np.float32)
    negative_owner = np.concatenate([best, rng.integers(0, int(owner.max()) + 1, 40)]).astype(np.int32)
    snapshot = build(templates, owner, negatives, negative_owner)
    expected = oracle(templates, owner, negatives, negative_owner, probes, 0.6)
    for k in (2, 8, 64):
        got = Matcher(ExactSearch(StaticSource(snapshot)), 0.6, k=k).match(probes)
        assert [m.identity for m in got] == [None if e is None else f"i{e}" for e in expected]
    assert sum(m.refused is not None for m in got) >= 10
