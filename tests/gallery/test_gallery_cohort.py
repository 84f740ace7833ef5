"""Cohort score normalisation: the offset, the card's cohort file and curves, and the matcher deciding on it."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError, GalleryError
from pipeline.core.model_card import ScoreCohort, fingerprint_file, load_card, save_card
from pipeline.gallery import Snapshot
from pipeline.gallery.cohort import Cohort, load_cohort, top_k_mean
from pipeline.gallery.matcher import Matcher
from pipeline.gallery.search import ExactSearch, StaticSource

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "facestream-default.json"


def unit(n, dim=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_top_k_mean_is_the_mean_of_the_k_best_cosines():
    faces, cohort = unit(5, seed=1), unit(30, seed=2)
    brute = np.sort(faces @ cohort.T, axis=1)[:, ::-1][:, :4].mean(axis=1)
    np.testing.assert_allclose(top_k_mean(faces, cohort, 4), brute, rtol=1e-6)
    # leave one out: a cohort face's cosine 1.0 to itself never counts
    own = top_k_mean(cohort, cohort, 3, leave_one_out=True)
    sims = cohort @ cohort.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(own, np.sort(sims, axis=1)[:, ::-1][:, :3].mean(axis=1), rtol=1e-6)
    assert np.all(own < 1.0)


def test_offsets_are_weighted_distance_from_the_centre():
    vectors = unit(40, seed=3)
    cohort = Cohort(vectors, k=5, weight=0.75, centre=0.2)
    faces = unit(6, seed=4)
    np.testing.assert_allclose(cohort.offsets(faces), 0.75 * (top_k_mean(faces, vectors, 5) - 0.2), rtol=1e-6)
    assert cohort.offsets(np.zeros((0, 8), np.float32)).shape == (0,)
    with pytest.raises(ConfigError, match="cannot score faces of shape"):
        cohort.offsets(unit(2, dim=4))


# -- the card's cohort ----------------------------------------------------------------------------------
def card_with_cohort(tmp_path, vectors, **spec):
    """A copy of the shipped card whose cohort file is `vectors` (written beside it)."""
    np.save(tmp_path / "c.npy", vectors)
    fields = {"file": "c.npy", "sha256": fingerprint_file(tmp_path / "c.npy"), "size": len(vectors), "k": 3,
              "weight": 0.75, "centre": 0.1, "thresholds": {"1e-2": 0.3, "1e-3": 0.4}, **spec}
    card = load_card(SHIPPED).model_copy(update={"cohort": ScoreCohort(**fields)})
    return load_card(save_card(card, tmp_path / "card.json")), tmp_path / "card.json"


def test_the_shipped_cards_carry_a_calibrated_cohort():
    for name in ("facestream-default.json", "facestream-default-heldout.json", "facestream-v1.json"):
        card = load_card(REPO / "models" / name)
        cohort = load_cohort(card, REPO / "models" / name)  # the committed file matches the card's sha256
        assert cohort is not None and cohort.vectors.shape == (card.cohort.size, 128)
        np.testing.assert_allclose(np.linalg.norm(cohort.vectors, axis=1), 1.0, atol=1e-5)
        assert len(card.cohort.thresholds) == 13 and card.matching(card.fingerprint).thresholds == card.cohort.thresholds
    v2 = load_card(SHIPPED)
    assert set(v2.cohort.harmonic_thresholds) == set(v2.harmonic_with)  # v1 galleries have their own curve


def test_load_cohort_refuses_a_missing_altered_or_misshapen_file(tmp_path):
    vectors = unit(20, dim=128, seed=5)
    card, path = card_with_cohort(tmp_path, vectors)
    np.testing.assert_array_equal(load_cohort(card, path).vectors, vectors)
    assert load_cohort(card.model_copy(update={"cohort": None}), path) is None
    (tmp_path / "c.npy").write_bytes((tmp_path / "c.npy").read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ConfigError, match="does not match the card's sha256"):
        load_cohort(card, path)
    (tmp_path / "c.npy").unlink()
    with pytest.raises(ConfigError, match="cohort file .*c.npy is missing"):
        load_cohort(card, path)
    card, path = card_with_cohort(tmp_path, unit(20, dim=64, seed=5))
    with pytest.raises(ConfigError, match=r"must be float32 \(20, 128\)"):
        load_cohort(card, path)
    card, path = card_with_cohort(tmp_path, vectors)
    (tmp_path / "c.npy").write_text("not numpy")
    spec = card.cohort.model_copy(update={"sha256": fingerprint_file(tmp_path / "c.npy")})
    with pytest.raises(ConfigError, match="not a numpy array"):
        load_cohort(card.model_copy(update={"cohort": spec}), path)


def test_card_validation_of_the_cohort(tmp_path):
    card, path = card_with_cohort(tmp_path, unit(20, dim=128))
    bad = json.loads(path.read_text())
    bad["cohort"]["k"] = 21
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"cohort k \(21\) exceeds its size \(20\)"):
        load_card(tmp_path / "bad.json")
    bad["cohort"]["k"], bad["cohort"]["harmonic_thresholds"] = 3, {"0123456789abcdef": {"1e-2": 0.3}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="harmonic_thresholds for models not in harmonic_with"):
        load_card(tmp_path / "bad.json")


def test_matching_card_takes_the_cohort_curve_for_the_gallery_model(tmp_path):
    shipped = load_card(SHIPPED)
    old = shipped.harmonic_with[0]
    card, _ = card_with_cohort(tmp_path, unit(20, dim=128), harmonic_thresholds={old: {"1e-2": 0.35}})
    assert card.matching(card.fingerprint).thresholds == {"1e-2": 0.3, "1e-3": 0.4}
    assert card.matching(None).thresholds == {"1e-2": 0.3, "1e-3": 0.4}  # a gallery not yet written
    assert card.matching(old).thresholds == {"1e-2": 0.35}
    assert card.matching(old, normalise=False).thresholds == shipped.harmonic_thresholds[old]  # raw cosine curves
    assert card.matching(card.fingerprint, normalise=False) is card
    empty = card.model_copy(update={"cohort": card.cohort.model_copy(update={"thresholds": {}})})
    with pytest.raises(ConfigError, match="cohort without calibrated thresholds.*run.normalise: false"):
        empty.matching(card.fingerprint)


# -- the matcher ------------------------------------------------------------------------------------------
DIM = 4


def at(cos, axis=1):
    vector = np.zeros(DIM, np.float32)
    vector[0], vector[axis] = cos, np.sqrt(1 - cos**2)
    return vector


def gallery(people):
    names = list(people)
    matrix = np.array([v for n in names for v in people[n]], np.float32)
    owner = np.array([i for i, n in enumerate(names) for _ in people[n]], np.int32)
    return Snapshot("1-0", "fp", "float32", [f"id-{n}" for n in names], names, matrix, None, owner)


class FixedOffsets(Cohort):
    """A cohort whose offsets are given per face (the real one is tested above)."""

    def __init__(self, offsets):
        super().__init__(np.eye(DIM, dtype=np.float32), 1, 1.0, 0.0)
        object.__setattr__(self, "fixed", np.asarray(offsets, np.float64))

    def offsets(self, faces):
        return self.fixed[: len(faces)]


def test_the_offset_lowers_every_score_of_a_face_and_decides_at_the_threshold():
    snapshot = gallery({"alice": [at(0.9)], "bob": [at(0.8, 2)]})
    faces = np.stack([at(1.0), at(1.0)])
    raw = Matcher(ExactSearch(snapshot), 0.85).match(faces)
    matched = Matcher(ExactSearch(snapshot), 0.85, cohort=FixedOffsets([0.02, 0.1])).match(faces)
    assert [m.identity for m in raw] == ["alice", "alice"]
    # a face like everyone (offset 0.1) falls below the threshold; one like few (0.02) keeps its name
    assert [m.identity for m in matched] == ["alice", None]
    for m, offset in zip(matched, (0.02, 0.1)):
        assert m.similarity == pytest.approx(0.9 - offset, abs=1e-6)
        assert m.runner_up == "bob" and m.runner_up_similarity == pytest.approx(0.8 - offset, abs=1e-6)
        assert m.margin == pytest.approx(0.1, abs=1e-6) and m.threshold == 0.85


def test_a_negative_still_refuses_on_raw_cosines():
    snapshot = gallery({"alice": [at(0.9)], "bob": [at(0.85, 2)]})
    negative = at(0.95, 3)[None]  # the face is more like this "not Alice" face (0.95) than like Alice (0.9)
    snapshot = replace(snapshot, negatives=negative, negative_owner=np.array([0], np.int32))
    (match,) = Matcher(ExactSearch(snapshot), 0.8, negatives=StaticSource(snapshot),
                       cohort=FixedOffsets([0.04])).match(at(1.0)[None])
    assert match.refused == "alice" and match.identity == "bob"
    assert match.similarity == pytest.approx(0.85 - 0.04, abs=1e-6)


def test_the_matcher_refuses_what_is_not_a_cohort():
    with pytest.raises(GalleryError, match="cohort must be a Cohort"):
        Matcher(ExactSearch(gallery({"alice": [at(0.9)]})), 0.5, cohort=np.zeros((3, DIM)))


def test_real_cohort_offsets_rank_faces_like_everyone_above_faces_like_few():
    """On the shipped model's own cohort: a face built as the mean of many cohort faces (a face like everyone)
    gets a larger offset than one of the cohort's own faces, far from most of the others."""
    card = load_card(SHIPPED)
    cohort = load_cohort(card, SHIPPED)
    generic = cohort.vectors[:200].mean(axis=0)
    generic /= np.linalg.norm(generic)
    own = cohort.offsets(cohort.vectors[200:210])
    assert cohort.offsets(generic[None])[0] > own.max()
