"""The gallery on real embeddings: shared LFW people through our detector and the shipped model."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.app.config import load_app_config
from pipeline.app.services import make_matcher, open_gallery
from pipeline.core.images import read_image
from pipeline.detect import MTCNN
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ApproximateSearch, ExactSearch, ServerSearch
from pipeline.gallery.threshold import threshold_from_card
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder

PEOPLE = 40


@pytest.fixture(scope="module")
def lfw_embeddings(shared_data):
    """(names, enrolment embeddings, probe embeddings): first and second image of 40 shared LFW people."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"default model card {DEFAULT_MODEL} not found")
    root = shared_data / "lfw" / "images"
    people = [d for d in sorted(root.iterdir()) if len(list(d.glob("*.jpg"))) >= 2][:PEOPLE]
    detector, embedder = MTCNN(), Embedder()
    pairs = []
    for person in people:
        crops = []
        for path in sorted(person.glob("*.jpg"))[:2]:
            image = read_image(path)
            faces = detector.detect_one(image)
            centre = np.array(image.shape[1::-1]) / 2
            nearest = int(np.argmin(np.linalg.norm((faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2 - centre, axis=1)))
            crops.append(embedder.crops(image, faces[[nearest]])[0])
        pairs.append(embedder.embed(np.stack(crops)))
    return [p.name for p in people], np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), embedder


def _top1(redis_client, dtype, names, enrol, probes, embedder):
    store = GalleryStore(redis_client, f"real-{dtype}", dtype=dtype)
    for name, embedding in zip(names, enrol, strict=True):
        store.add(name, embedding[None], [f"{name}-1"], embedder.fingerprint)
    matcher = Matcher(ExactSearch(store.snapshot()), threshold=threshold_from_card(embedder.card, "1e-3"))
    return matcher.match(probes)


def test_int8_and_float32_galleries_agree_on_real_embeddings(redis_client, lfw_embeddings):
    names, enrol, probes, embedder = lfw_embeddings
    exact = _top1(redis_client, "float32", names, enrol, probes, embedder)
    compact = _top1(redis_client, "int8", names, enrol, probes, embedder)
    agreement = np.mean([a.identity == b.identity for a, b in zip(exact, compact, strict=True)])
    assert agreement >= 0.99, f"int8 vs float32 open-set decisions agree on only {agreement:.1%}"
    sims = np.array([m.similarity for m in exact]) - np.array([m.similarity for m in compact])
    assert np.abs(sims).max() < 0.01, "int8 similarities drift from float32"
    correct = np.mean([m.identity == name for m, name in zip(exact, names, strict=True)])
    assert correct >= 0.8, f"only {correct:.0%} of probes matched their own enrolment at FAR 1e-3"


def _enrol_indexed(redis_client, names, enrol, embedder) -> GalleryStore:
    """The LFW people in a gallery that also keeps a vector set, so every backend can search it."""
    writer = GalleryStore.open(redis_client, "choices", server_index_for_new=True)
    for name, embedding in zip(names, enrol, strict=True):
        writer.add(name, embedding[None], [f"{name}-1"], embedder.fingerprint)
    return open_gallery(redis_client, "choices", embedder.fingerprint)


@pytest.mark.parametrize("choice,backend", [("auto", ApproximateSearch), ("exact", ExactSearch),
                                            ("ann", ApproximateSearch), ("server", ServerSearch)])
def test_every_search_choice_matches_the_identities_exact_search_matches(redis_client, lfw_embeddings, choice,
                                                                         backend):
    """`gallery.search=<choice>` through the composition root, on a real gallery in the real Redis server."""
    names, enrol, probes, embedder = lfw_embeddings
    store = _enrol_indexed(redis_client, names, enrol, embedder)
    threshold = threshold_from_card(embedder.card, "1e-3")
    with GalleryMirror(store) as mirror:
        matcher = make_matcher(load_app_config(None, [f"gallery.search={choice}"]), mirror, store, threshold)
        matched = matcher.match(probes)
        exact = Matcher(ExactSearch(mirror), threshold).match(probes)
    assert type(matcher.search) is backend
    assert [m.identity for m in matched] == [m.identity for m in exact]
    np.testing.assert_allclose([m.similarity for m in matched], [m.similarity for m in exact], atol=1e-4)
    assert np.mean([m.identity == name for m, name in zip(exact, names, strict=True)]) >= 0.8  # a real gallery


def test_faiss_index_on_real_embeddings_matches_like_exact_search(redis_client, lfw_embeddings):
    """40 people stay below ann's exact fallback; with it off, the PQ index itself proposes the candidates."""
    names, enrol, probes, embedder = lfw_embeddings
    store = _enrol_indexed(redis_client, names, enrol, embedder)
    threshold = threshold_from_card(embedder.card, "1e-3")
    with GalleryMirror(store) as mirror:
        search = ApproximateSearch(mirror, exact_below=0)
        matched = Matcher(search, threshold).match(probes)
        exact = Matcher(ExactSearch(mirror), threshold).match(probes)
    assert search._index is not None and search._index.ntotal == len(names)
    assert [m.identity for m in matched] == [m.identity for m in exact]
