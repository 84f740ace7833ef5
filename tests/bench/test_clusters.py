"""bench.clusters: its metrics on hand-made label sets with hand-computed values, the sweep's choice rule, and a
small real run on a few held-out LFW people."""

import numpy as np
import pytest

from bench import clusters as bench
from bench.clusters import best_setting, build_photos, cluster_metrics, dbscan_report

# Photos of people 0,0,0,1,1,2 in clusters A={0,1}, B={2,3,4}, C={5}: B holds person 0's third photo.
TRUTH, LABELS = [0, 0, 0, 1, 1, 2], ["a", "a", "b", "b", "b", "c"]


def test_metrics_by_hand():
    m = cluster_metrics(TRUTH, LABELS)
    # same-cluster pairs: A 1, B 3 = 4; same-person pairs: 3 + 1 = 4; both: (0,1) and (3,4)
    assert m["pair_precision"] == pytest.approx(2 / 4) and m["pair_recall"] == pytest.approx(2 / 4)
    # BCubed precision per photo: 1, 1, 1/3, 2/3, 2/3, 1; recall: 2/3, 2/3, 1/3, 1, 1, 1 -> both 7/9
    assert m["bcubed_precision"] == pytest.approx(7 / 9) and m["bcubed_recall"] == pytest.approx(7 / 9)
    assert m["bcubed_f"] == pytest.approx(7 / 9)
    assert m["false_merge_rate"] == pytest.approx(1 / 3)
    assert (m["clusters"], m["people"], m["images"]) == (3, 3, 6)


def test_metrics_at_the_extremes():
    alone = cluster_metrics(TRUTH, range(6))
    assert alone["pair_precision"] == 1.0 and alone["pair_recall"] == 0.0  # no pair together: vacuous precision
    assert alone["bcubed_precision"] == 1.0 and alone["bcubed_recall"] == pytest.approx((3 * 1 / 3 + 2 / 2 + 1) / 6)
    one = cluster_metrics(TRUTH, [7] * 6)
    assert one["pair_precision"] == pytest.approx(4 / 15) and one["pair_recall"] == 1.0
    assert one["bcubed_precision"] == pytest.approx((3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6)
    assert one["false_merge_rate"] == 1.0 and one["clusters"] == 1
    perfect = cluster_metrics(TRUTH, [5, 5, 5, -1, -1, 9])
    assert all(perfect[k] == 1.0 for k in ("pair_precision", "pair_recall", "bcubed_f"))
    assert perfect["false_merge_rate"] == 0.0
    with pytest.raises(ValueError, match="equal-length"):
        cluster_metrics([0, 1], [0])


def test_metrics_do_not_depend_on_label_names_or_order():
    rng = np.random.default_rng(0)
    truth, labels = rng.integers(0, 6, 50), rng.integers(0, 9, 50)
    order = rng.permutation(50)
    base = cluster_metrics(truth, labels)
    for other in (cluster_metrics(truth * 10 + 3, np.asarray([f"c{x}" for x in labels])),
                  cluster_metrics(truth[order], labels[order])):
        assert other == pytest.approx(base)


def row(rate, far, p, p_min, b, r):
    return {"merge_rate": rate, "merge_far": far, "pair_precision": p, "pair_precision_min": p_min,
            "bcubed_precision": b, "pair_recall": r}


def test_best_setting_needs_precision_in_every_order_and_by_photo():
    rows = [row(0.1, 1e-3, 0.995, 0.985, 0.999, 0.99),  # one order below target
            row(0.01, 1e-3, 0.995, 0.991, 0.90, 0.98),  # pairwise fine, BCubed not
            row(0.01, 1e-4, 0.995, 0.992, 0.995, 0.95),
            row(0.001, 1e-4, 0.999, 0.998, 0.999, 0.90)]
    assert best_setting(rows)["merge_far"] == 1e-4 and best_setting(rows)["merge_rate"] == 0.01
    assert best_setting(rows, bcubed=False)["bcubed_precision"] == 0.90
    assert best_setting(rows, target=0.9999) is None


def test_dbscan_noise_is_singletons():
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    points = unit(np.array([[1, 0, 0], [1, 0.01, 0], [1, 0, 0.01], [0, 1, 0], [0, 0, 1]], float))
    report = dbscan_report(points, np.array([0, 0, 0, 1, 2]), eps=0.05)
    assert report["noise"] == 2 and report["clusters"] == 3 and report["bcubed_f"] == 1.0


@pytest.fixture(scope="module")
def few_people(shared_data):
    """Five held-out people with 4+ photos (their first 4) and ten benchmark-half strangers, as bench.clusters
    builds them."""
    lfw = shared_data / "lfw"
    every = build_photos(lfw / "images", lfw / "pairs_shared_folds.txt", [6, 7])
    sizes = np.bincount(every.person)
    chosen = [p for p in np.flatnonzero((sizes >= 4) & (sizes < 20))[:5]]
    strangers = np.flatnonzero(sizes == 1)[:10]
    keep = [i for p in chosen for i in np.flatnonzero(every.person == p)[:4]] + \
           [int(np.flatnonzero(every.person == p)[0]) for p in strangers]
    return bench.Photos([every.paths[i] for i in keep], every.person[keep], 15, 10), lfw / "images"


def test_a_real_run_keeps_people_apart(few_people, tmp_path, monkeypatch):
    from pipeline.core.model_card import load_card

    monkeypatch.setattr(bench, "STATE", tmp_path)  # embed afresh, away from the repo's cache
    photos, images = few_people
    model = bench.HELDOUT_MODEL
    embeddings, _ = bench.facestream_embeddings(photos.paths, images, model)
    order = photos.order(0)
    report = bench.facestream_report(embeddings[order], photos.person[order], load_card(model),
                                     bench.MERGE_RATE, bench.MERGE_FAR, bench.MAX_MEMBERS)
    assert report["images"] == 30 and report["people"] == 15
    assert report["pair_precision"] == 1.0 and report["false_merge_rate"] == 0.0
    assert report["bcubed_recall"] > report["before_recluster"]["bcubed_recall"] - 1e-9
    assert report["bcubed_f"] > 0.8
    immich = dbscan_report(embeddings, photos.person)
    assert immich["clusters"] < report["clusters"]  # 0.5 cosine distance is loose for this model's scores


def test_chinese_whispers_anchor_runs_dlib(few_people, tmp_path, monkeypatch):
    from trainer.teacher import TEACHER_VENV

    if not (TEACHER_VENV / "bin" / "python").is_file():
        pytest.skip(f"dlib's teacher venv not found at {TEACHER_VENV} (trainer.teacher.TEACHER_INSTALL builds it)")
    monkeypatch.setattr(bench, "STATE", tmp_path)
    photos, _ = few_people
    first = bench.Photos(photos.paths[:12], photos.person[:12], 3, 0)  # three people, four photos each
    report = bench.chinese_whispers_report(first)
    assert report["images"] == 12 and report["people"] == 3 and report["no_face"] <= 1
    assert report["bcubed_f"] > 0.8 and report["versions"]["dlib"]
    assert len(list(tmp_path.glob("clusters/dlib-*.npz"))) == 1  # descriptors cached for the next run
