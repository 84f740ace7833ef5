"""Gallery export/import: a JSON round trip, strict validation before any write, idempotent re-import."""

import base64
import json
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryStore
from pipeline.gallery.names import validate_name
from pipeline.gallery.portable import export_gallery, import_gallery


def unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def contents(store: GalleryStore) -> dict:
    """name -> (created, metadata, template ids, templates): what a round trip must keep."""
    out = {}
    for identity in store.identities():
        found, tids, rows = store.read_full(identity.id)
        out[identity.name] = (found.created, found.metadata, tids, rows)
    return out


def assert_same_contents(a: dict, b: dict, atol: float = 0.0) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name][:3] == b[name][:3]
        np.testing.assert_allclose(a[name][3], b[name][3], atol=atol, rtol=0)


@pytest.fixture
def source(redis_client) -> GalleryStore:
    store = GalleryStore(redis_client, "src")
    store.add("Ada", unit(3, seed=1), ["a0", "a1", "a2"], "model-1", metadata={"team": "red", "n": 1})
    store.add("李小龍", unit(1, seed=2), ["x"], "model-1")
    return store


def test_export_import_round_trip(source, redis_client, tmp_path):
    path = tmp_path / "gallery.json"
    assert export_gallery(source, path) == 2
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert (doc["format"], doc["version"], doc["fingerprint"], doc["dim"]) == ("facestream-gallery", 1, "model-1", 128)
    target = GalleryStore(redis_client, "dst")
    result = import_gallery(target, path)
    assert (result.identities, result.created, result.added, result.duplicates) == (2, 2, 4, 0)
    assert_same_contents(contents(source), contents(target))  # float32: bit-exact
    assert target.fingerprint == "model-1"
    again = import_gallery(target, path)
    assert (again.created, again.added, again.duplicates) == (0, 0, 4)
    assert target.get("Ada").templates == 3


def test_negatives_travel_with_their_identity(source, redis_client, tmp_path):
    faces = unit(2, seed=7)
    source.add_negatives("Ada", faces, ["not-1", "not-0"])
    path = tmp_path / "gallery.json"
    export_gallery(source, path)
    people = {p["name"]: p for p in json.loads(path.read_text(encoding="utf-8"))["identities"]}
    assert people["Ada"]["negative_ids"] == ["not-0", "not-1"] and "negatives" not in people["李小龍"]
    target = GalleryStore(redis_client, "dst")
    assert import_gallery(target, path).negatives == 2
    np.testing.assert_array_equal(target.negatives("Ada"), faces[[1, 0]])
    assert target.negatives("李小龍").shape == (0, 128)
    assert import_gallery(target, path).negatives == 0  # idempotent like templates


def test_int8_gallery_exports_float32_and_reimports_the_same_codes(redis_client, tmp_path):
    store = GalleryStore(redis_client, "q", dtype="int8")
    store.add("Ada", unit(4), ["0", "1", "2", "3"], "m")
    path = tmp_path / "g.json"
    export_gallery(store, path)
    float_copy = GalleryStore(redis_client, "f")
    import_gallery(float_copy, path)
    np.testing.assert_allclose(float_copy.templates("Ada"), store.templates("Ada"), atol=1e-7)
    int8_copy = GalleryStore(redis_client, "q2", dtype="int8")
    import_gallery(int8_copy, path)
    np.testing.assert_array_equal(int8_copy.snapshot().matrix, store.snapshot().matrix)


def test_import_refuses_another_model_and_writes_nothing(source, redis_client, tmp_path):
    path = tmp_path / "g.json"
    export_gallery(source, path)
    other = GalleryStore(redis_client, "other")
    other.add("Cy", unit(1), ["c"], "model-2")
    before = contents(other)
    with pytest.raises(GalleryError, match="holds templates of model model-2; refusing templates of model model-1"):
        import_gallery(other, path)
    assert_same_contents(before, contents(other))


def corrupt(doc: dict, case: str) -> dict:
    """`doc` (a valid export of the `source` gallery) broken in one way."""
    last = doc["identities"][-1]
    nan = np.full((1, 128), np.nan, "<f4")
    big = unit(1) * 3
    edits = {
        "format": lambda: doc.update(format="something-else"),
        "version": lambda: doc.update(version=99),
        "identities": lambda: doc.update(identities={"Ada": 1}),
        "fingerprint": lambda: doc.update(fingerprint=""),
        "dim": lambda: doc.update(dim="128"),
        "dtype": lambda: doc.update(dtype="float16"),
        "missing-field": lambda: last.pop("created"),
        "extra-field": lambda: last.update(pickle="x"),
        "bad-name": lambda: last.update(name="a/b"),
        "duplicate-name": lambda: doc["identities"].append(dict(doc["identities"][0])),
        "base64": lambda: last.update(templates="not base64!"),
        "length": lambda: last.update(templates=base64.b64encode(b"\0" * 12).decode()),
        "nan": lambda: last.update(templates=base64.b64encode(nan.tobytes()).decode()),
        "non-unit": lambda: last.update(templates=base64.b64encode(big.astype("<f4").tobytes()).decode()),
        "template-ids": lambda: last.update(template_ids=[]),
        "repeated-template-id": lambda: doc["identities"][0].update(template_ids=["a0", "a0", "a1"]),
        "created": lambda: last.update(created="yesterday"),
        "metadata": lambda: last.update(metadata=[1, 2]),
        "negatives-alone": lambda: last.update(negatives=last["templates"]),
        "negative-ids-empty": lambda: last.update(negative_ids=[], negatives=""),
        "negatives-length": lambda: last.update(negative_ids=["n0", "n1"], negatives=last["templates"]),
        "negatives-nan": lambda: last.update(negative_ids=["n0"], negatives=base64.b64encode(nan.tobytes()).decode()),
    }
    edits[case]()
    return doc


BAD = {"format": "not a gallery file", "version": "version 99", "identities": "must be a list",
       "fingerprint": "must name the model", "dim": "positive integer", "dtype": "float16",
       "missing-field": "exactly the fields", "extra-field": "exactly the fields", "bad-name": "path separator",
       "duplicate-name": "appears twice", "base64": "not valid base64", "length": "holds 12 bytes",
       "nan": "NaN or inf", "non-unit": "unit length", "template-ids": "non-empty list",
       "repeated-template-id": "repeats an id", "created": "Unix time", "metadata": "must be an object",
       "negatives-alone": "exactly the fields", "negative-ids-empty": "negative_ids\" must be a non-empty list",
       "negatives-length": "\"negatives\" holds 512 bytes", "negatives-nan": "NaN or inf"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_refused_before_anything_is_written(source, redis_client, tmp_path, case):
    path = tmp_path / "g.json"
    export_gallery(source, path)
    path.write_text(json.dumps(corrupt(json.loads(path.read_text()), case)))
    target = GalleryStore(redis_client, "dst")
    with pytest.raises(GalleryError, match=BAD[case]):
        import_gallery(target, path)
    assert list(redis_client.scan_iter("fs:{dst}:*")) == []  # the valid identities before it were not written


@pytest.mark.parametrize("text, message", [("{", "not JSON"), ("[]", "not a gallery file"),
                                           ("\udcff", "not JSON")])
def test_unreadable_files_are_refused(redis_client, tmp_path, text, message):
    path = tmp_path / "g.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(GalleryError, match=message):
        import_gallery(GalleryStore(redis_client, "dst"), path)


valid_names = st.text(min_size=1, max_size=20).filter(lambda n: _valid(n))


def _valid(name: str) -> bool:
    try:
        validate_name(name)
        return True
    except GalleryError:
        return False


galleries = st.dictionaries(
    keys=valid_names.map(lambda n: unicodedata.normalize("NFC", n)),
    values=st.tuples(st.integers(1, 3), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5),
                                                        max_size=2)),
    max_size=4)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gallery=galleries, dtype=st.sampled_from(["float32", "int8"]), seed=st.integers(0, 1000))
def test_fuzz_random_galleries_round_trip(redis_client, tmp_path, gallery, dtype, seed):
    redis_client.flushall()
    source = GalleryStore(redis_client, "src", dtype=dtype)
    for i, (name, (count, metadata)) in enumerate(gallery.items()):
        source.add(name, unit(count, dim=16, seed=seed + i), [f"t{j}" for j in range(count)], "fp",
                   metadata=metadata)
    path = tmp_path / "fuzz.json"
    assert export_gallery(source, path) == len(gallery)
    target = GalleryStore(redis_client, "dst", dtype=dtype)
    result = import_gallery(target, path)
    assert result.created == len(gallery)
    assert_same_contents(contents(source), contents(target), atol=0.0)
    assert import_gallery(target, path).added == 0
