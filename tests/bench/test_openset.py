"""bench.openset's pieces that need no embedding: the protocol on real LFW, DIR/FPIR against a loop oracle."""

import numpy as np
import pytest

from bench.openset import (
    FPIRS,
    _distances,
    at_threshold,
    build_protocol,
    identification,
    normalised,
)
from trainer.calibration import half_of


def test_protocol_keeps_strangers_out_of_calibration(shared_data):
    lfw = shared_data / "lfw"
    protocol = build_protocol(lfw / "images", lfw / "pairs_shared_folds.txt", [6, 7])
    assert len(protocol.names) == len(protocol.enrolled) == 333
    assert len(protocol.probes) == protocol.probe_identity.size == 1777
    assert all(p.stem.endswith("_0001") for p in protocol.enrolled)
    assert not set(protocol.enrolled) & set(protocol.probes)
    for i in (0, 100, 332):
        assert protocol.probes[int(np.flatnonzero(protocol.probe_identity == i)[0])].parent.name == protocol.names[i]
    strangers = {p.parent.name for p in protocol.strangers}
    cohort = {p.parent.name for p in protocol.cohort}
    assert not strangers & cohort and not strangers & set(protocol.names)
    assert all(half_of(n) == "benchmark" for n in strangers) and all(half_of(n) == "calibration" for n in cohort)


def oracle(probe_scores, stranger_scores, truth, fpir):
    """Loop version: the strictest-first scan for the lowest threshold letting at most fpir x strangers through."""
    best = sorted(stranger_scores.max(axis=1), reverse=True)
    allowed = int(np.floor(fpir * len(best) + 1e-9))
    threshold = np.nextafter(best[allowed], np.inf)
    hits = 0
    for scores, who in zip(probe_scores, truth):
        hits += int(np.argmax(scores) == who and scores.max() >= threshold)
    return hits / len(truth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dir_at_fpir_matches_a_loop(seed):
    rng = np.random.default_rng(seed)
    probes, strangers = rng.normal(size=(300, 20)), rng.normal(size=(2000, 20))
    truth = rng.integers(0, 20, size=300)
    probes[np.arange(300), truth] += 2.0  # mated probes score higher on their own identity
    result = identification(probes, strangers, truth)
    assert result["rank1"] == pytest.approx(np.mean(probes.argmax(axis=1) == truth))
    for fpir in FPIRS:
        assert result["dir_at_fpir"][str(fpir)] == pytest.approx(oracle(probes, strangers, truth, fpir))
        assert result["fpir_measured"][str(fpir)] <= fpir
    t = result["threshold_at_fpir"]["0.01"]
    assert at_threshold(probes, strangers, truth, t) == {"fpir": result["fpir_measured"]["0.01"],
                                                         "dir": result["dir_at_fpir"]["0.01"]}


def test_distances_are_face_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 128)), rng.normal(size=(7, 128))
    expected = np.array([[np.linalg.norm(x - y) for y in b] for x in a])
    np.testing.assert_allclose(_distances(a, b), expected, rtol=1e-10)


def test_normalised_reports_each_mode():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    gallery, cohort = unit(rng.normal(size=(10, 16))), unit(rng.normal(size=(50, 16)))
    truth = rng.integers(0, 10, size=40)
    probes = unit(gallery[truth] + 0.5 * rng.normal(size=(40, 16)))
    report = normalised(gallery, probes, unit(rng.normal(size=(200, 16))), cohort, truth)
    assert set(report) == {"znorm", "tnorm", "snorm", "cohort_images"} and report["cohort_images"] == 50
    # T-norm shifts and scales each query's row alike: the ranking, so rank-1, cannot change
    assert report["tnorm"]["rank1"] == pytest.approx(np.mean((probes @ gallery.T).argmax(axis=1) == truth))
