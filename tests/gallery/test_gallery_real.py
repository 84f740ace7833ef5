"""The gallery on real embeddings: shared LFW people through our detector and the shipped model."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.images import read_image
from pipeline.detect import MTCNN
from pipeline.gallery import GalleryStore
from pipeline.gallery.matcher import Matcher
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
    matcher = Matcher(store.snapshot(), threshold=threshold_from_card(embedder.card, "1e-3"))
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
