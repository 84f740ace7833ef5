"""Model-card options the embedder obeys: flip averaging (crop + mirror, renormalised sum) and shifted views on real
faces, and the card's list of harmonic models and its shifts, validated at load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.images import read_image
from pipeline.core.model_card import load_card
from pipeline.core.views import shifted
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder

PHOTOS = ["ageitgey_face_recognition_examples/knn_examples/test/obama_and_biden.jpg",
          "ageitgey_face_recognition_examples/other_photos/two_people.jpg"]


def card_copy(tmp_path, **changes):
    """The shipped card with `changes`, beside the shipped ONNX (referenced by absolute path)."""
    card = json.loads(DEFAULT_MODEL.read_text())
    cohort = {**card["cohort"], "file": str(DEFAULT_MODEL.parent / card["cohort"]["file"]), "harmonic_thresholds": {}}
    card.update(onnx=str(DEFAULT_MODEL.parent / card["onnx"]), harmonic_thresholds={}, cohort=cohort, **changes)
    path = tmp_path / f"card-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def crops(shared_data):
    from pipeline.detect import MTCNN

    detector, embedder = MTCNN(max_side=1280), Embedder()
    out = []
    for photo in PHOTOS:
        image = read_image(shared_data / photo)
        out.append(embedder.crops(image, detector.detect_one(image)))
    embedder.close()
    crops = np.concatenate(out)
    assert len(crops) >= 4
    return crops


def test_flip_average_is_the_renormalised_sum_of_crop_and_mirror(crops, tmp_path):
    plain, flipped = Embedder(card_copy(tmp_path, flip_average=False)), Embedder(card_copy(tmp_path, flip_average=True))
    a, b = plain.embed(crops), plain.embed(np.ascontiguousarray(crops[:, :, ::-1]))
    expected = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    got = flipped.embed(crops)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # A face and its mirror image get the same flip-averaged embedding; without it they differ.
    np.testing.assert_allclose(flipped.embed(np.ascontiguousarray(crops[:, :, ::-1])), got, atol=1e-5)
    assert np.max(np.abs(a - b)) > 1e-2
    # The shipped model was measured so, and its card says it.
    assert load_card(DEFAULT_MODEL).flip_average


def test_harmonic_with_holds_fingerprints(tmp_path):
    card = load_card(card_copy(tmp_path, harmonic_with=["0123456789abcdef"]))
    assert card.accepts("0123456789abcdef") and card.accepts(card.fingerprint)
    assert not card.accepts("fedcba9876543210")
    for bad in (["not-a-fingerprint"], ["0123456789ABCDEF"], "0123456789abcdef"):
        with pytest.raises(ConfigError, match="harmonic_with"):
            load_card(card_copy(tmp_path, harmonic_with=bad))


def test_shift_views_are_summed_with_their_mirror_images(crops, tmp_path):
    plain = Embedder(card_copy(tmp_path, flip_average=False))
    shifts = [(3, 0), (-3, 0), (0, 3), (0, -3)]
    tta = Embedder(card_copy(tmp_path, flip_average=True, test_time_shifts=shifts))
    views = [crops, *(shifted(crops, dx, dy) for dx, dy in shifts)]
    total = sum(plain.embed(v) + plain.embed(np.ascontiguousarray(v[:, :, ::-1])) for v in views)
    got = tta.embed(crops)
    np.testing.assert_allclose(got, total / np.linalg.norm(total, axis=1, keepdims=True), atol=1e-5)
    # A shift moves the face: the view's embedding is not the crop's, yet the same person's.
    moved, still = plain.embed(views[1]), plain.embed(crops)
    assert np.max(np.abs(moved - still)) > 1e-3 and np.min(np.sum(moved * still, axis=1)) > 0.9


def test_shifted_moves_pixels_and_repeats_the_edge(crops):
    moved = shifted(crops[:1], 3, -2)
    np.testing.assert_array_equal(moved[0, 10:-10, 13:-10], crops[0, 12:-8, 10:-13])
    np.testing.assert_array_equal(moved[0, 5, :3], np.repeat(crops[0, 7, :1], 3, axis=0))
    assert moved.shape == crops[:1].shape and moved.dtype == np.uint8


def test_test_time_shifts_are_small_and_non_zero(tmp_path):
    for bad in ([(0, 0)], [(40, 0)], [(0, -19)], [(1, 2, 3)]):
        with pytest.raises(ConfigError, match="test_time_shifts"):
            load_card(card_copy(tmp_path, test_time_shifts=bad))
    assert load_card(card_copy(tmp_path, test_time_shifts=[(18, -18)])).test_time_shifts == [(18, -18)]


def test_trainer_views_rewrites_the_views_and_drops_what_they_invalidate(tmp_path, capsys):
    """`python -m trainer views`: new views change every embedding, so the card's thresholds and measured figures
    go with the old ones; bad shifts are refused in one line and leave the card as it was."""
    from trainer.__main__ import main

    path = card_copy(tmp_path)
    before = path.read_bytes()
    assert main(["views", "--model", str(path), "--flip-average", "--shift-average", "40"]) == 2
    assert "test_time_shifts" in capsys.readouterr().err and path.read_bytes() == before
    assert main(["views", "--model", str(path), "--flip-average", "--shift-average", "3"]) == 0
    card = load_card(path)
    assert card.flip_average and card.test_time_shifts == [(3, 0), (-3, 0)]
    assert card.thresholds == {} and card.harmonic_thresholds == {} and "open_set_calibration" not in card.metrics
    assert card.cohort is None  # the cohort's embeddings were made with the old views
    assert card.harmonic_with == load_card(DEFAULT_MODEL).harmonic_with and "views" in card.training["views_command"]
    from pipeline.gallery.threshold import operating_point

    with pytest.raises(ConfigError, match="has no calibrated thresholds"):  # nothing runs on stale thresholds
        operating_point(card, "auto", 0.01, [1, 1])


@pytest.mark.parametrize("base, tta", [("facestream-default.json", "facestream-default-tta.json"),
                                       ("facestream-default-heldout.json", "facestream-default-heldout-tta.json")])
def test_the_shift_view_cards_are_their_models_with_their_own_thresholds(base, tta):
    """The opt-in cards run the same ONNX (so they search the same galleries) with shift views, and carry
    thresholds calibrated for those views, for their own and for v1's templates."""
    from pipeline.core.model_card import fingerprint_file, onnx_path

    models = DEFAULT_MODEL.parent
    plain, shifted_card = load_card(models / base), load_card(models / tta)
    assert shifted_card.fingerprint == plain.fingerprint == fingerprint_file(onnx_path(shifted_card, models / tta))
    assert shifted_card.flip_average and shifted_card.test_time_shifts == [(3, 0), (-3, 0)]
    assert plain.test_time_shifts == [] and plain.flip_average
    assert set(shifted_card.thresholds) == set(plain.thresholds) and shifted_card.thresholds != plain.thresholds
    assert set(shifted_card.harmonic_thresholds) == set(plain.harmonic_thresholds) == set(plain.harmonic_with)
    # Its own score cohort, embedded with its views, and that score's curves for its own and v1's templates.
    assert shifted_card.cohort.sha256 != plain.cohort.sha256 and shifted_card.cohort.size == plain.cohort.size
    assert set(shifted_card.cohort.harmonic_thresholds) == set(plain.harmonic_with)
    assert shifted_card.cohort.thresholds != plain.cohort.thresholds
    # Calibrated on embeddings of its own views (the embedding cache keys on them), not on the plain card's.
    assert shifted_card.metrics["open_set_calibration"]["cache"] != plain.metrics["open_set_calibration"]["cache"]
