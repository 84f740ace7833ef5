"""The open-set operating point: FPIR algebra, log-FAR interpolation of the card's curve, no extrapolation."""

import logging
import math

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.model_card import ModelCard, load_card
from pipeline.gallery import Snapshot
from pipeline.gallery.threshold import (
    GalleryThreshold,
    effective_comparisons,
    far_at_threshold,
    far_for_fpir,
    fpir_of,
    operating_point,
    template_counts,
    threshold_at_far,
)
from pipeline.recognise.embedder import DEFAULT_MODEL

CURVE = {"1e-2": 0.80, "1e-3": 0.85, "1e-4": 0.88, "1e-5": 0.90, "1e-6": 0.92}


def card(thresholds=CURVE):
    return ModelCard(model_id="m", fingerprint="f" * 16, architecture="a", onnx="m.onnx", input_size=(160, 160),
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), template=[(0.0, 0.0)] * 5, thresholds=thresholds)


@pytest.mark.parametrize("counts, score, expected", [
    ([1, 1, 1], "max", 3.0),
    ([4, 1], "max", 5.0),
    ([4, 1], "mean_top2", 3.0),  # max(1, 4/2) + max(1, 1/2)
    ([3], "mean_top2", 1.5),
])
def test_effective_comparisons(counts, score, expected):
    assert effective_comparisons(counts, score) == expected


def test_effective_comparisons_rejects_bad_input():
    with pytest.raises(ConfigError, match="counts >= 1"):
        effective_comparisons([1, 0])
    with pytest.raises(ConfigError, match="score must be"):
        effective_comparisons([1], "mean")


@pytest.mark.parametrize("m", [1, 2, 333, 1000, 100_000])
def test_far_for_fpir_inverts_fpir(m):
    far = far_for_fpir(0.01, m)
    assert fpir_of(far, m) == pytest.approx(0.01, rel=1e-12)
    assert far == pytest.approx(1 - 0.99 ** (1 / m), rel=1e-9)
    # the per-identity algebra: 1 - (1 - FAR_id)^N with FAR_id = 1 - (1 - FAR)^k is 1 - (1 - FAR)^(k N)
    far_id = 1 - (1 - far) ** 2
    assert 1 - (1 - far_id) ** (m / 2) == pytest.approx(fpir_of(far, m), rel=1e-9)


def test_threshold_at_far_interpolates_in_log_far():
    model = card()
    assert threshold_at_far(model, 1e-3) == pytest.approx(0.85)
    assert threshold_at_far(model, 10 ** -3.5) == pytest.approx(0.865)
    assert threshold_at_far(model, 1e-6) == pytest.approx(0.92)
    with pytest.raises(ConfigError, match="outside model card m's calibrated range"):
        threshold_at_far(model, 1e-7)
    assert far_at_threshold(model, 0.865) == pytest.approx(10 ** -3.5)
    assert far_at_threshold(model, 0.95) is None


def test_auto_holds_fpir_for_the_gallery_size():
    model = card()
    point = operating_point(model, "auto", 0.01, [1] * 1000)
    assert point.rule == "fpir" and point.identities == 1000 and point.comparisons == 1000
    assert point.far == pytest.approx(1 - 0.99 ** (1 / 1000))
    assert point.expected_fpir == pytest.approx(0.01)
    x = math.log10(point.far)  # between 1e-5 (0.90) and 1e-4 (0.88)
    assert point.threshold == pytest.approx(0.90 + (x + 5) * (0.88 - 0.90))
    assert point.far_label == "1e-5"  # 1.005e-5, printed to two digits


def test_auto_threshold_rises_with_gallery_size_and_templates():
    model = card()
    sizes = [operating_point(model, "auto", 0.01, [1] * n).threshold for n in (2, 10, 100, 1000, 5000)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    one = operating_point(model, "auto", 0.01, [1] * 100).threshold
    four = operating_point(model, "auto", 0.01, [4] * 100).threshold
    top2 = operating_point(model, "auto", 0.01, [4] * 100, score="mean_top2").threshold
    assert one < top2 < four


def test_auto_uses_the_loosest_point_for_tiny_galleries():
    for templates in ([], [1]):
        point = operating_point(card(), "auto", 0.01, templates)
        assert point.far == 1e-2 and point.threshold == 0.80  # never extrapolated above the curve either
        assert point.expected_fpir == pytest.approx(fpir_of(1e-2, len(templates)))


def test_auto_refuses_to_extrapolate_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.gallery.threshold"):
        point = operating_point(card(), "auto", 0.01, [1] * 100_000)
    assert point.threshold == 0.92 and point.far == 1e-6
    assert point.expected_fpir == pytest.approx(1 - (1 - 1e-6) ** 100_000)
    assert "strictest calibrated FAR 1e-6" in caplog.text and "expect FPIR ~0.0952" in caplog.text


def test_fixed_far_and_override():
    model = card()
    point = operating_point(model, "1e-3", 0.01, [1] * 10)
    assert (point.rule, point.threshold, point.far, point.far_label) == ("far", 0.85, 1e-3, "1e-3")
    assert point.expected_fpir == pytest.approx(1 - 0.999 ** 10)
    with pytest.raises(ConfigError, match="no threshold for FAR 1e-9"):
        operating_point(model, "1e-9", 0.01, [1])
    override = operating_point(model, "auto", 0.01, [1] * 10, override=0.88)
    assert override.rule == "override" and override.threshold == 0.88
    assert override.far == pytest.approx(1e-4) and override.expected_fpir == pytest.approx(fpir_of(1e-4, 10))
    assert operating_point(model, "auto", 0.01, [1], override=0.99).far is None
    with pytest.raises(ConfigError, match="no calibrated thresholds"):
        operating_point(card({}), "auto", 0.01, [1])


def test_template_counts_from_a_snapshot():
    owner = np.array([0, 0, 2, 2, 2], np.int32)
    snapshot = Snapshot("1-0", "fp", "float32", ["a", "b", "c"], ["A", "B", "C"], np.zeros((5, 4), np.float32),
                        None, owner)
    assert template_counts(snapshot) == [2, 3]


def test_shipped_card_reaches_fpir_one_percent_for_a_thousand_people():
    model = load_card(DEFAULT_MODEL)
    assert min(float(k) for k in model.thresholds) <= 1e-6
    point = operating_point(model, "auto", 0.01, [1] * 1000)
    assert point.rule == "fpir" and point.expected_fpir == pytest.approx(0.01)
    assert model.thresholds["2e-5"] <= point.threshold <= model.thresholds["1e-5"]  # FAR 1.005e-5


class Snapshots:
    """A mirror stand-in whose snapshot the test replaces, as the change stream would."""

    def __init__(self, counts):
        self.set(counts)

    def set(self, counts):
        owner = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
        names = [f"p{i}" for i in range(len(counts))]
        self.snapshot = Snapshot("1-0", "fp", "float32", names, names, np.zeros((len(owner), 4), np.float32),
                                 None, owner)

    def current(self):
        return self.snapshot


def test_gallery_threshold_is_chosen_again_only_when_the_gallery_changes():
    model, calls = card(), []
    source = Snapshots([1, 1])

    def choose(counts):
        calls.append(list(counts))
        return operating_point(model, "auto", 0.01, counts)

    operating = GalleryThreshold(source, choose)
    small = operating.current()
    assert operating.current() is small and calls == [[1, 1]]  # same snapshot: nothing recomputed
    source.set([1] * 1000)
    large = operating.current()
    assert calls == [[1, 1], [1] * 1000] and large.threshold > small.threshold
    assert large.expected_fpir == pytest.approx(0.01)
