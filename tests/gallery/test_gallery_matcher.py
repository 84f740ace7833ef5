"""Open-set matcher: hand-computed identity scores, thresholds, runner-up, live mirrors, and a NumPy oracle."""

from dataclasses import replace

import numpy as np
import pytest

from bench.gallery import synthetic_gallery
from pipeline.core.errors import ConfigError, GalleryError
from pipeline.core.model_card import ModelCard
from pipeline.gallery import Snapshot
from pipeline.gallery.matcher import NO_SIMILARITY, Match, Matcher
from pipeline.gallery.search import ApproximateSearch, ExactSearch
from pipeline.gallery.threshold import threshold_from_card

DIM = 4
QUERY = np.eye(1, DIM, dtype=np.float32)


def at(cos: float, axis: int = 1) -> np.ndarray:
    """A unit vector at cosine `cos` from QUERY."""
    vector = np.zeros(DIM, np.float32)
    vector[0], vector[axis] = cos, np.sqrt(1 - cos**2)
    return vector


def snapshot_of(people: dict[str, list[np.ndarray]], dtype: str = "float32") -> Snapshot:
    names = list(people)
    rows = [v for name in names for v in people[name]]
    matrix = np.array(rows, np.float32).reshape(-1, DIM)
    owner = np.array([i for i, name in enumerate(names) for _ in people[name]], np.int32)
    scales = None
    if dtype == "int8":
        scales = (np.abs(matrix).max(axis=1) / 127.0).astype(np.float32)
        matrix = np.round(matrix / scales[:, None]).astype(np.int8)
    return Snapshot("1-0", "fp", dtype, [f"id-{n}" for n in names], names, matrix, scales, owner)


# alice: 0.9, 0.5   bob: 0.8, 0.75   carol: 0.6   (cosine with QUERY)
PEOPLE = {"alice": [at(0.9), at(0.5, 2)], "bob": [at(0.8, 3), at(0.75)], "carol": [at(0.6, 2)]}


@pytest.mark.parametrize("score,k,best,best_sim,runner,runner_sim", [
    ("max", 32, "alice", 0.9, "bob", 0.8),
    ("max", 2, "alice", 0.9, "bob", 0.8),
    ("mean_top2", 32, "bob", 0.775, "alice", 0.7),
    # top 2 templates are alice 0.9 and bob 0.8: both re-scored, bob's 0.775 < 0.8 -> search widens
    ("mean_top2", 2, "bob", 0.775, "alice", 0.7),
])
def test_identity_scores_hand_computed(score, k, best, best_sim, runner, runner_sim):
    (match,) = Matcher(ExactSearch(snapshot_of(PEOPLE)), threshold=0.5, score=score, k=k).match(QUERY)
    assert (match.identity, match.identity_id, match.runner_up) == (best, f"id-{best}", runner)
    assert match.similarity == pytest.approx(best_sim, abs=1e-6)
    assert match.runner_up_similarity == pytest.approx(runner_sim, abs=1e-6)
    assert match.margin == pytest.approx(best_sim - runner_sim, abs=1e-6)


def test_mean_top2_of_single_template_identity_is_its_max():
    (match,) = Matcher(ExactSearch(snapshot_of({"carol": [at(0.6)], "dan": [at(0.3), at(0.1)]})), 0.0,
                       score="mean_top2").match(QUERY)
    assert match.identity == "carol" and match.similarity == pytest.approx(0.6, abs=1e-6)
    assert match.runner_up_similarity == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("threshold,known", [(0.85, True), (0.95, False), (0.9, True)])
def test_open_set_threshold(threshold, known):
    snapshot = snapshot_of(PEOPLE)
    if threshold == 0.9:  # exactly the best score: accepted (>=)
        threshold = float(ExactSearch(snapshot).search(QUERY, 1).similarities[0, 0])
    (match,) = Matcher(ExactSearch(snapshot), threshold).match(QUERY)
    assert match.identity == ("alice" if known else None)
    assert match.identity_id == ("id-alice" if known else None)
    # An unknown face still reports how close the best candidate came.
    assert match.similarity == pytest.approx(0.9, abs=1e-6) and match.runner_up == "bob"


def test_single_identity_has_no_runner_up():
    (match,) = Matcher(ExactSearch(snapshot_of({"alice": [at(0.9)]})), 0.5).match(QUERY)
    assert match == Match("alice", "id-alice", pytest.approx(0.9, abs=1e-6), None, None, None, 0.5)


def test_empty_gallery_makes_every_face_unknown():
    empty = Snapshot("0-0", None, "float32", [], [], np.zeros((0, DIM), np.float32), None, np.zeros(0, np.int32))
    matches = Matcher(ExactSearch(empty), 0.5).match(np.repeat(QUERY, 3, axis=0))
    assert matches == [Match(None, None, NO_SIMILARITY, None, None, None, 0.5)] * 3


def test_no_faces_no_matches():
    assert Matcher(ExactSearch(snapshot_of(PEOPLE)), 0.5).match(np.zeros((0, DIM), np.float32)) == []


def test_identity_with_more_templates_than_k_still_gets_runner_up():
    many = {"alice": [at(0.9 - 0.01 * i) for i in range(10)], "bob": [at(0.5, 2)]}
    (match,) = Matcher(ExactSearch(snapshot_of(many)), 0.5, k=4).match(QUERY)
    assert (match.identity, match.runner_up) == ("alice", "bob")


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_batched_equals_one_by_one(dtype):
    gallery = synthetic_gallery(200, per_identity=3, queries=20, seed=5)
    snapshot = Snapshot("1-0", "fp", "float32", [f"i{n}" for n in range(200)], [f"p{n}" for n in range(200)],
                        gallery.templates, None, gallery.owner)
    if dtype == "int8":
        scales = (np.abs(gallery.templates).max(axis=1) / 127).astype(np.float32)
        codes = np.round(gallery.templates / scales[:, None]).astype(np.int8)
        snapshot = replace(snapshot, dtype="int8", matrix=codes, scales=scales)
    matcher = Matcher(ExactSearch(snapshot), 0.5, score="mean_top2", k=4)
    batched = matcher.match(gallery.queries)
    for query, match in zip(gallery.queries, batched):
        (single,) = matcher.match(query[None])
        assert single.identity == match.identity and single.runner_up == match.runner_up
        assert single.similarity == pytest.approx(match.similarity, abs=1e-5)


@pytest.mark.parametrize("score", ["max", "mean_top2"])
def test_best_identity_matches_numpy_oracle(score):
    """Every identity scored from all its templates by NumPy; the matcher's best must be the same."""
    rng = np.random.default_rng(7)
    gallery = synthetic_gallery(300, per_identity=4, queries=60, seed=6)
    keep = rng.random(len(gallery.owner)) < 0.7  # 0-4 templates per identity
    templates, owner = gallery.templates[keep], gallery.owner[keep]
    owner = np.unique(owner, return_inverse=True)[1].astype(np.int32)
    n = int(owner.max()) + 1
    snapshot = Snapshot("1-0", "fp", "float32", [f"i{x}" for x in range(n)], [f"p{x}" for x in range(n)],
                        templates, None, owner)
    sims = gallery.queries @ templates.T
    matches = Matcher(ExactSearch(snapshot), 0.5, score=score, k=3).match(gallery.queries)
    for row, match in zip(sims, matches):
        per = [np.sort(row[owner == i])[::-1] for i in range(n)]
        scores = np.array([p[0] if score == "max" or len(p) == 1 else p[:2].mean() for p in per])
        best = int(np.argmax(scores))
        assert match.similarity == pytest.approx(scores[best], abs=1e-5)
        assert match.identity in (None, f"p{best}")
        if score == "max":
            assert match.runner_up_similarity == pytest.approx(np.sort(scores)[-2], abs=1e-5)


class FakeMirror:
    def __init__(self, snapshot):
        self.snapshot = snapshot

    def current(self):
        return self.snapshot


def test_live_mirror_matches_new_enrolments():
    mirror = FakeMirror(snapshot_of({"carol": [at(0.6, 2)]}))
    matcher = Matcher(ExactSearch(mirror), threshold=0.7)
    assert matcher.match(QUERY)[0].identity is None
    mirror.snapshot = snapshot_of({"carol": [at(0.6, 2)], "erin": [at(0.95)]})
    assert matcher.match(QUERY)[0].identity == "erin"


def test_matcher_over_approximate_search():
    gallery = synthetic_gallery(5000, queries=100, seed=8)
    snapshot = Snapshot("1-0", "fp", "float32", [f"i{n}" for n in range(5000)], [f"p{n}" for n in range(5000)],
                        gallery.templates, None, gallery.owner)
    matches = Matcher(ApproximateSearch(snapshot), threshold=0.5).match(gallery.queries)
    truth = [f"p{o}" for o in gallery.query_owner]
    assert np.mean([m.identity == t for m, t in zip(matches, truth)]) >= 0.99


@pytest.mark.parametrize("embeddings,message", [
    (np.ones((2, 3), np.float32), r"shape \(M, 4\), got \(2, 3\)"),
    (np.ones((1, 4), np.int64), "dtype int64"),
    (np.array([[0, np.inf, 0, 0]], np.float32), "finite"),
])
def test_bad_embeddings_are_refused(embeddings, message):
    with pytest.raises(GalleryError, match=message):
        Matcher(ExactSearch(snapshot_of(PEOPLE)), 0.5).match(embeddings)


def test_bad_settings_are_refused():
    with pytest.raises(GalleryError, match="score must be"):
        Matcher(ExactSearch(snapshot_of(PEOPLE)), 0.5, score="median")
    with pytest.raises(GalleryError, match=r"needs a search backend \(e.g. ExactSearch\(mirror\)\), got object"):
        Matcher(object(), 0.5)
    with pytest.raises(GalleryError, match=r"needs a search backend .*got FakeMirror"):
        Matcher(FakeMirror(snapshot_of(PEOPLE)), 0.5)  # a mirror is not a search: say which one
    with pytest.raises(GalleryError, match="expected a GalleryMirror or a Snapshot, got object"):
        ExactSearch(object())


def card(thresholds):
    return ModelCard(model_id="m", fingerprint="f" * 16, architecture="a", onnx="m.onnx", input_size=(160, 160),
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), template=[(0.0, 0.0)] * 5, thresholds=thresholds)


def test_threshold_from_card():
    model = card({"1e-3": 0.52, "1e-4": 0.61})
    assert threshold_from_card(model) == 0.52
    assert threshold_from_card(model, far="1e-4") == 0.61
    assert threshold_from_card(model, far=1e-4) == 0.61
    assert threshold_from_card(model, override=0.4) == 0.4
    with pytest.raises(ConfigError, match="no threshold for FAR 1e-5"):
        threshold_from_card(model, far="1e-5")
    with pytest.raises(ConfigError, match=r"in \[-1, 1\], got 1.5"):
        threshold_from_card(model, override=1.5)
