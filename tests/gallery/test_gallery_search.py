"""Template search backends against the NumPy top-k oracle (exact), recall (ann), and a real Redis (server)."""


import numpy as np
import pytest

from bench.gallery import synthetic_gallery
from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryStore, Snapshot
from pipeline.gallery.search import (
    ApproximateSearch,
    ExactSearch,
    ServerSearch,
    StaticSource,
    available_searches,
    create_search,
)


def make_snapshot(templates: np.ndarray, owner: np.ndarray, dtype: str = "float32") -> Snapshot:
    count = int(owner.max()) + 1 if len(owner) else 0
    ids, names = [f"id{i}" for i in range(count)], [f"person{i}" for i in range(count)]
    matrix, scales = templates.astype(np.float32), None
    if dtype == "int8":
        scales = (np.abs(templates).max(axis=1) / 127.0).astype(np.float32)
        matrix = np.round(templates / scales[:, None]).astype(np.int8)
    return Snapshot("0-0", "fp", dtype, ids, names, matrix, scales, owner.astype(np.int32))


def decoded(snapshot: Snapshot) -> np.ndarray:
    if snapshot.dtype == "int8":
        return snapshot.matrix.astype(np.float32) * snapshot.scales[:, None]
    return snapshot.matrix


def oracle(snapshot: Snapshot, queries: np.ndarray, k: int):
    """Full sort of every similarity: the reference top-k."""
    sims = queries @ decoded(snapshot).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


@pytest.fixture(scope="module")
def small():
    gallery = synthetic_gallery(300, per_identity=3, queries=40, seed=1)
    return gallery


@pytest.mark.parametrize("dtype,decode", [("float32", "copy"), ("int8", "copy"), ("int8", "blocks")])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_exact_matches_numpy_oracle(small, dtype, decode, k):
    snapshot = make_snapshot(small.templates, small.owner, dtype)
    hits = ExactSearch(snapshot, decode=decode, block_rows=128).search(small.queries, k)
    rows, sims = oracle(snapshot, small.queries, k)
    np.testing.assert_allclose(hits.similarities, sims, rtol=0, atol=1e-5)
    # Rows agree wherever the similarity is not tied with a neighbour.
    assert np.mean(hits.rows == rows) > 0.99
    assert hits.labels is snapshot


def test_int8_similarities_close_to_float32(small):
    exact32 = ExactSearch(make_snapshot(small.templates, small.owner)).search(small.queries, 1)
    exact8 = ExactSearch(make_snapshot(small.templates, small.owner, "int8")).search(small.queries, 1)
    assert np.mean(exact32.rows == exact8.rows) == 1.0
    np.testing.assert_allclose(exact8.similarities, exact32.similarities, atol=0.01)


def test_batched_equals_one_by_one(small):
    search = ExactSearch(make_snapshot(small.templates, small.owner, "int8"))
    batched = search.search(small.queries, 4)
    for i, query in enumerate(small.queries):
        single = search.search(query[None], 4)
        np.testing.assert_array_equal(single.rows[0], batched.rows[i])
        np.testing.assert_allclose(single.similarities[0], batched.similarities[i], atol=1e-6)


def test_fewer_templates_than_k_are_padded():
    snapshot = make_snapshot(np.eye(3, 8, dtype=np.float32), np.array([0, 1, 1]))
    hits = ExactSearch(snapshot).search(np.eye(1, 8, dtype=np.float32), 5)
    assert hits.rows.tolist() == [[0, 1, 2, -1, -1]] or hits.rows.tolist() == [[0, 2, 1, -1, -1]]
    assert np.isneginf(hits.similarities[0, 3:]).all()


def test_empty_gallery_returns_no_rows():
    snapshot = make_snapshot(np.zeros((0, 8), np.float32), np.zeros(0, np.int32))
    hits = ExactSearch(snapshot).search(np.ones((2, 8), np.float32), 3)
    assert (hits.rows == -1).all() and np.isneginf(hits.similarities).all()


@pytest.mark.parametrize("backend", [ExactSearch, lambda source: ApproximateSearch(source, exact_below=0)])
def test_gallery_never_written_has_no_dim_yet_and_answers_no_rows(redis_client, backend):
    """A gallery nobody has enrolled into has no dim: its snapshot is (0, 0), and any embedding is a query."""
    snapshot = GalleryStore(redis_client, "nobody").snapshot()
    assert snapshot.matrix.shape == (0, 0)
    hits = backend(snapshot).search(np.eye(2, 128, dtype=np.float32), 3)
    assert hits.rows.shape == (2, 3) and (hits.rows == -1).all() and np.isneginf(hits.similarities).all()


@pytest.mark.parametrize("queries,message", [
    (np.ones((2, 7), np.float32), r"shape \(M, 8\), got \(2, 7\)"),
    (np.ones(8, np.float32), r"shape \(M, 8\), got \(8,\)"),
    (np.ones((2, 8), np.int32), "dtype int32"),
    (np.array([[np.nan] * 8], np.float32), r"rows \[0\]"),
])
def test_bad_queries_name_expected_and_actual(queries, message):
    snapshot = make_snapshot(np.eye(3, 8, dtype=np.float32), np.array([0, 1, 2]))
    with pytest.raises(GalleryError, match=message):
        ExactSearch(snapshot).search(queries, 1)


def test_registry_creates_by_name_and_refuses_unknown(small):
    assert {"exact", "ann", "server"} <= set(available_searches())
    assert isinstance(create_search("exact", make_snapshot(small.templates, small.owner)), ExactSearch)
    with pytest.raises(GalleryError, match="unknown gallery search 'hnsw'"):
        create_search("hnsw", None)


# -- approximate -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large():
    return synthetic_gallery(20_000, per_identity=1, queries=500, seed=2)


@pytest.mark.parametrize("dtype,options", [("float32", {}), ("int8", {}), ("float32", {"nlist": 64, "nprobe": 32})])
def test_ann_agrees_with_exact_top1(large, dtype, options):
    snapshot = make_snapshot(large.templates, large.owner, dtype)
    exact = ExactSearch(snapshot).search(large.queries, 5)
    ann = ApproximateSearch(snapshot, **options).search(large.queries, 5)
    assert np.mean(ann.rows[:, 0] == exact.rows[:, 0]) >= 0.99
    # Candidates are re-scored from the snapshot: reported similarities are the exact ones.
    found = ann.rows[:, 0] == exact.rows[:, 0]
    np.testing.assert_allclose(ann.similarities[found, 0], exact.similarities[found, 0], atol=1e-5)


def test_ann_adds_appended_rows_and_rebuilds_after_removal(large):
    base = make_snapshot(large.templates[:15_000], large.owner[:15_000])
    mirror = StaticSource(base)
    search = ApproximateSearch(mirror)
    search.search(large.queries[:2], 1)
    index = search._index
    grown = make_snapshot(large.templates, large.owner)
    object.__setattr__(mirror, "snapshot", grown)  # the mirror moved on: new enrolments
    newcomers = large.queries[large.query_owner >= 15_000]
    hits = search.search(newcomers, 1)
    assert search._index is index and index.ntotal == 20_000  # incremental, same training
    exact = ExactSearch(grown).search(newcomers, 1)
    assert np.mean(hits.rows[:, 0] == exact.rows[:, 0]) >= 0.99
    keep = np.arange(20_000) % 7 != 0  # removals shift rows: everything is re-added
    shrunk = make_snapshot(large.templates[keep], large.owner[keep])
    object.__setattr__(mirror, "snapshot", shrunk)
    enrolled = large.queries[keep[large.query_owner]]  # strangers' top-1 is a near-tie: not compared
    hits = search.search(enrolled, 1)
    assert search._index.ntotal == keep.sum()
    assert np.mean(hits.rows[:, 0] == ExactSearch(shrunk).search(enrolled, 1).rows[:, 0]) >= 0.99


def test_ann_small_gallery_is_exact(small):
    snapshot = make_snapshot(small.templates, small.owner)
    hits = ApproximateSearch(snapshot).search(small.queries, 3)
    np.testing.assert_array_equal(hits.rows, ExactSearch(snapshot).search(small.queries, 3).rows)


# -- server (Redis 8 vector sets) ---------------------------------------------------------------------
def vadd_all(client, key, templates, owner, quant):
    pipe = client.pipeline(transaction=False)
    for row, vector in enumerate(templates):
        pipe.execute_command("VADD", key, "FP32", vector.astype("<f4").tobytes(), f"t{row}", quant)
    pipe.execute()


@pytest.mark.parametrize("quant", ["Q8", "NOQUANT"])
def test_server_vsim_agrees_with_exact_mirror(redis_client, quant):
    gallery = synthetic_gallery(2000, per_identity=2, queries=200, seed=3)
    vadd_all(redis_client, "fs:{g}:vset", gallery.templates, gallery.owner, quant)
    resolve = lambda elements: [(f"id{gallery.owner[int(e[1:])]}", f"person{gallery.owner[int(e[1:])]}")
                                for e in elements]
    server = ServerSearch(redis_client, gallery="g", resolve=resolve).search(gallery.queries, 3)
    snapshot = make_snapshot(gallery.templates, gallery.owner)
    exact = ExactSearch(snapshot).search(gallery.queries, 3)
    server_ids = [server.labels.identity_ids[o] for o in server.labels.owner[server.rows[:, 0]]]
    exact_ids = [snapshot.identity_ids[o] for o in snapshot.owner[exact.rows[:, 0]]]
    assert np.mean(np.array(server_ids) == np.array(exact_ids)) >= 0.99
    # VSIM's (1 + cos) / 2 converted back to cosine.
    atol = 1e-4 if quant == "NOQUANT" else 0.02
    np.testing.assert_allclose(server.similarities[:, 0], exact.similarities[:, 0], atol=atol)


def test_server_missing_vector_set_is_an_empty_gallery(redis_client):
    server = ServerSearch(redis_client, gallery="none", resolve=lambda elements: [])
    hits = server.search(np.ones((2, 8), np.float32) / np.sqrt(8), 3)
    assert (hits.rows == -1).all()


def test_server_search_of_a_store_resolves_its_identities(redis_client):
    store = GalleryStore.open(redis_client, "indexed", server_index_for_new=True)
    templates = np.eye(3, 8, dtype=np.float32)
    for name, row in zip(["Ada", "Bob", "Cy"], templates):
        store.add(name, row[None], [f"{name}-0"], "m")
    hits = ServerSearch.of_store(store).search(templates[[1]], 2)
    assert hits.labels.names[hits.labels.owner[hits.rows[0, 0]]] == "Bob"
    assert hits.similarities[0, 0] == pytest.approx(1.0, abs=1e-4)


def test_server_search_refuses_a_gallery_without_a_vector_set(redis_client):
    store = GalleryStore(redis_client, "plain")
    ServerSearch.of_store(store)  # never written: nothing to refuse yet
    store.add("Ada", np.eye(1, 8, dtype=np.float32), ["a"], "m")
    with pytest.raises(GalleryError, match="gallery 'plain' was created without a server index"):
        ServerSearch.of_store(store)
