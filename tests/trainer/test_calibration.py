"""`trainer calibrate`: blockwise impostor order statistics vs brute force, the people split, the cache, the card."""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.core.model_card import load_card, save_card
from trainer.__main__ import main
from trainer.calibration import (
    calibrate,
    cross_identity_pairs,
    far_grid,
    half_of,
    impostor_tail,
    thresholds_report,
    unseen_people,
)
from trainer.embedding_cache import Embedded, EmbeddingCache
from trainer.metrics import far_key, threshold_at_far
from trainer.prepare import CropOutcome

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "facestream-default.json"


def random_set(n=90, people=25, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.integers(0, people, size=n)


def brute_force(x, labels):
    impostors, genuine = [], []
    for i, j in itertools.combinations(range(len(x)), 2):
        (genuine if labels[i] == labels[j] else impostors).append(float(np.dot(x[i], x[j])))
    return np.array(impostors), np.array(genuine)


def test_far_grid():
    assert [far_key(f) for f in far_grid()] == ["1e-2", "5e-3", "2e-3", "1e-3", "5e-4", "2e-4", "1e-4", "5e-5",
                                                "2e-5", "1e-5", "5e-6", "2e-6", "1e-6"]
    assert far_grid(1e-3, 1e-4) == (1e-3, 5e-4, 2e-4, 1e-4)
    with pytest.raises(ValueError):
        far_grid(1e-6, 1e-2)


@pytest.mark.parametrize("block", [1, 7, 32, 512])
@pytest.mark.parametrize("seed", [0, 1])
def test_blockwise_thresholds_equal_brute_force(block, seed):
    x, labels = random_set(seed=seed)
    impostors, genuine = brute_force(x, labels)
    fars = (0.3, 0.1, 0.05, 0.01, 0.002, 1e-4)
    tail = impostor_tail(x, labels, max_far=max(fars), block=block)
    assert tail.pairs == impostors.size == cross_identity_pairs(labels)
    assert tail.top.size == int(np.floor(0.3 * impostors.size)) + 1
    np.testing.assert_allclose(np.sort(tail.genuine), np.sort(genuine), atol=1e-12)
    np.testing.assert_allclose(tail.top, np.sort(impostors)[::-1][:tail.top.size], atol=1e-12)
    for far in fars:
        assert tail.threshold_at(far) == pytest.approx(threshold_at_far(impostors, far), abs=1e-12)
    report = thresholds_report(tail, fars)
    for far in fars:
        t = report["thresholds_at_far"][far_key(far)]
        allowed = int(np.floor(far * impostors.size + 1e-9))
        assert np.sum(impostors > t + 1e-12) == allowed  # no ties in random data: exactly that many accepted
        assert np.sum(impostors >= t - 1e-12) == allowed + 1  # and the next impostor sits just below
        assert report["tar_at_far"][far_key(far)] == pytest.approx(np.mean(genuine >= t))


@pytest.mark.parametrize("block", [1, 7, 512])
def test_cross_model_tail_scores_every_ordered_pair_of_two_models(block):
    """An older model's templates (`gallery`) against this model's faces: pairs (i, j) and (j, i) are two
    comparisons, an image against itself none."""
    x, labels = random_set(seed=3)
    old, _ = random_set(seed=4)
    impostors = [float(old[i] @ x[j]) for i in range(len(x)) for j in range(len(x))
                 if i != j and labels[i] != labels[j]]
    genuine = [float(old[i] @ x[j]) for i in range(len(x)) for j in range(len(x)) if i != j and labels[i] == labels[j]]
    tail = impostor_tail(x, labels, max_far=0.1, block=block, gallery=old)
    assert tail.pairs == len(impostors) == 2 * cross_identity_pairs(labels)
    np.testing.assert_allclose(tail.top, np.sort(impostors)[::-1][:tail.top.size], atol=1e-12)
    np.testing.assert_allclose(np.sort(tail.genuine), np.sort(genuine), atol=1e-12)
    assert tail.threshold_at(0.01) == pytest.approx(threshold_at_far(np.array(impostors), 0.01), abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        impostor_tail(x, labels, gallery=old[:-1])


def test_a_card_uses_its_cross_model_thresholds_on_a_harmonic_gallery(tmp_path):
    from pipeline.core.errors import ConfigError

    shipped = load_card(MODEL)
    old = "0123456789abcdef"
    cross = {"1e-2": 0.7, "1e-3": 0.8}
    card = shipped.model_copy(update={"harmonic_with": [old], "harmonic_thresholds": {old: cross}, "cohort": None})
    card = load_card(save_card(card, tmp_path / "card.json"))  # validated as it is read
    assert card.against(old).thresholds == cross and card.against(old).fingerprint == card.fingerprint
    assert card.against(card.fingerprint) is card and card.against(None) is card
    assert card.against("fedcba9876543210") is card  # not harmonic: opening such a gallery is refused elsewhere
    bad = json.loads((tmp_path / "card.json").read_text())
    bad["harmonic_with"] = []
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="harmonic_thresholds for models not in harmonic_with"):
        load_card(tmp_path / "bad.json")


def test_tail_refuses_a_far_beyond_what_it_kept():
    x, labels = random_set()
    tail = impostor_tail(x, labels, max_far=0.01)
    with pytest.raises(ValueError, match="only"):
        tail.threshold_at(0.1)
    with pytest.raises(ValueError, match="two identities"):
        impostor_tail(x[:5], np.zeros(5))


def test_half_of_is_a_fixed_even_split():
    names = [f"Person_{i}" for i in range(2000)]
    halves = [half_of(n) for n in names]
    assert halves == [half_of(n) for n in names]
    assert 0.45 < halves.count("calibration") / len(names) < 0.55
    assert half_of("Aaron_Eckhart") in ("calibration", "benchmark")


def lfw_subset(tmp_path, shared_data, people):
    """A folder-per-person tree of real LFW people (symlinked) and a 2-fold pairs file over them."""
    source = shared_data / "lfw" / "images"
    root = tmp_path / "lfw" / "images"
    root.mkdir(parents=True)
    for name in people:
        (root / name).symlink_to(source / name, target_is_directory=True)
    return root


def test_unseen_people_roles(tmp_path, shared_data):
    singles = [d.name for d in sorted((shared_data / "lfw" / "images").iterdir())
               if len(list(d.glob("*.jpg"))) == 1][:12]
    multi = ["Abdullah_Gul", "Colin_Powell", "Tony_Blair"]
    root = lfw_subset(tmp_path, shared_data, multi + singles)
    pairs = tmp_path / "pairs.txt"
    # fold 1 uses Colin_Powell, fold 2 Abdullah_Gul and a one-image person: hold out fold 2
    pairs.write_text(f"2\t1\nColin_Powell\t1\t2\nColin_Powell\t1\tTony_Blair\t1\n"
                     f"Abdullah_Gul\t1\t2\nAbdullah_Gul\t1\t{singles[0]}\t1\n")
    people = unseen_people(root, pairs, [2])
    assert list(people.fold_people) == ["Abdullah_Gul"]
    assert len(people.fold_people["Abdullah_Gul"]) == len(list((root / "Abdullah_Gul").glob("*.jpg")))
    assert set(people.calibration_singles) | set(people.benchmark_singles) == set(singles)
    assert all(half_of(n) == "benchmark" for n in people.benchmark_singles)
    assert set(people.calibration()) == {"Abdullah_Gul", *people.calibration_singles}
    assert not set(people.calibration()) & set(people.benchmark_singles)
    # A model trained on every identity with 2+ images (no held-out folds): only the one-image people are unseen.
    everyone = unseen_people(root, pairs, [])
    assert everyone.fold_people == {} and set(everyone.calibration()) == set(people.calibration_singles)


class FakeCropper:
    size, fallback, fallback_fraction = (4, 4), "centre", 0.6
    template = np.zeros((5, 2), np.float32)

    class detector:
        min_face_size, thresholds, scale_factor = 20, (0.6, 0.7, 0.7), 0.709

    def __init__(self):
        self.seen = 0

    def crop(self, images):
        self.seen += len(images)
        return [CropOutcome(np.full((4, 4, 3), int(image.mean()) % 256, np.uint8), "detected") for image in images]


def test_embedding_cache_embeds_each_image_once(tmp_path, shared_data):
    root = shared_data / "lfw" / "images"
    paths = sorted((root / "Abdullah_Gul").glob("*.jpg"))[:5]
    calls = []

    def embed(crops):
        calls.append(len(crops))
        return np.hstack([crops.reshape(len(crops), -1)[:, :3].astype(np.float32), np.ones((len(crops), 1))])

    cropper = FakeCropper()
    cache = EmbeddingCache(tmp_path, root, "f" * 16, cropper)
    first = cache.embed(paths[:3], embed, progress=False)
    assert isinstance(first, Embedded) and first.embeddings.shape == (3, 4) and cropper.seen == 3
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1, rtol=1e-6)
    again = EmbeddingCache(tmp_path, root, "f" * 16, FakeCropper())  # from disk
    both = again.embed(paths, embed, progress=False)
    assert again.cropper.seen == 2 and len(again) == 5
    np.testing.assert_array_equal(both.embeddings[:3], first.embeddings)
    assert EmbeddingCache(tmp_path, root, "e" * 16, FakeCropper()).path != cache.path  # another model


def test_calibrate_command_writes_a_card_that_round_trips(tmp_path, shared_data):
    people = ["Abdullah_Gul", "Colin_Powell", "Aaron_Eckhart", "Aaron_Guiel", "Aaron_Patterson"]
    root = lfw_subset(tmp_path, shared_data, people)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nColin_Powell\t1\t2\nColin_Powell\t1\tAaron_Eckhart\t1\n"
                     "Abdullah_Gul\t1\t2\nAbdullah_Gul\t1\tAaron_Guiel\t1\n")
    save_card(load_card(MODEL).model_copy(update={"cohort": None}), tmp_path / "card.json")  # the raw curve alone
    (tmp_path / load_card(MODEL).onnx).symlink_to(MODEL.parent / load_card(MODEL).onnx)
    args = ["calibrate", "--images", str(root), "--pairs", str(pairs), "--folds", "2", "--model",
            str(tmp_path / "card.json"), "--cache", str(tmp_path / "cache"), "--strictest", "1e-2",
            "--loosest", "1e-1", "--include-bench-strangers", "--update-card", "--json"]
    assert main(args) == 0
    card = load_card(tmp_path / "card.json")
    record = card.metrics["open_set_calibration"]
    n_gul = len(list((root / "Abdullah_Gul").glob("*.jpg")))
    singles = [p for p in people if len(list((root / p).glob("*.jpg"))) == 1]
    assert record["identities"] == 1 + len(singles) and record["images"] == n_gul + len(singles)
    assert record["impostor_pairs"] == n_gul * len(singles) + len(singles) * (len(singles) - 1) // 2
    assert list(card.thresholds) == ["1e-1", "5e-2", "2e-2", "1e-2"] == list(record["thresholds_at_far"])
    assert card.threshold_at(1e-2) == record["thresholds_at_far"]["1e-2"]
    assert load_card(save_card(card, tmp_path / "again.json")) == card  # round trip
    assert json.loads((tmp_path / "again.json").read_text())["thresholds"] == card.thresholds
    # the cache holds every image now: recomputing reproduces the thresholds without embedding anything
    cache_file = Path(record["cache"])
    assert cache_file.is_file()
    embedded = np.load(cache_file)["keys"]
    assert len(embedded) == record["images"]


def test_calibrate_takes_embeddings_in_path_order():
    x, labels = random_set(n=40, people=8)
    people = {f"p{k}": [Path(f"p{k}/{i}.jpg") for i in np.flatnonzero(labels == k)] for k in np.unique(labels)}
    lookup = {path: x[int(path.stem)] for paths in people.values() for path in paths}
    result = calibrate(people, lambda paths: Embedded(np.stack([lookup[p] for p in paths]),
                                                      np.array(["detected"] * len(paths))), far_grid(1e-1, 1e-2))
    impostors, _ = brute_force(x, labels)
    assert result["impostor_pairs"] == impostors.size
    assert result["thresholds_at_far"]["1e-2"] == pytest.approx(threshold_at_far(impostors, 1e-2), abs=1e-12)


def test_eval_update_card_keeps_the_calibrated_curve(tmp_path):
    from types import SimpleNamespace

    from trainer.__main__ import _record_in_card

    shipped = load_card(MODEL)
    assert "open_set_calibration" in shipped.metrics
    path = save_card(shipped, tmp_path / "card.json")
    keys = ("accuracy", "accuracy_std", "val_at_far", "far", "auc", "eer", "threshold", "pairs", "images",
            "no_detection", "pair_folds")
    result = {**dict.fromkeys(keys, 0.5), "open_set": {"thresholds_at_far": {"1e-3": 0.5}}}
    _record_in_card(SimpleNamespace(card=shipped), SimpleNamespace(pairs="p.txt", model=path), result)
    card = load_card(path)
    assert card.thresholds == shipped.thresholds
    assert card.metrics["lfw"]["open_set"] == {"thresholds_at_far": {"1e-3": 0.5}}


@pytest.mark.parametrize("block", [1, 7, 512])
@pytest.mark.parametrize("with_gallery", [False, True])
def test_tail_with_query_offsets_scores_every_ordered_pair_less_the_faces_offset(block, with_gallery):
    """The matcher's cohort-normalised score: template i (this model's, or an older one's) against face j,
    minus face j's offset; (i, j) and (j, i) differ, so both are counted."""
    x, labels = random_set(seed=5)
    templates = random_set(seed=6)[0] if with_gallery else x
    offsets = np.random.default_rng(7).uniform(-0.1, 0.2, size=len(x))
    scores = [(float(templates[i] @ x[j] - offsets[j]), labels[i] == labels[j])
              for i in range(len(x)) for j in range(len(x)) if i != j]
    impostors = np.array([s for s, same in scores if not same])
    genuine = np.array([s for s, same in scores if same])
    tail = impostor_tail(x, labels, max_far=0.1, block=block, gallery=templates if with_gallery else None,
                         query_offsets=offsets)
    assert tail.pairs == impostors.size == 2 * cross_identity_pairs(labels)
    np.testing.assert_allclose(tail.top, np.sort(impostors)[::-1][:tail.top.size], atol=1e-12)
    np.testing.assert_allclose(np.sort(tail.genuine), np.sort(genuine), atol=1e-12)
    assert tail.threshold_at(0.01) == pytest.approx(threshold_at_far(impostors, 0.01), abs=1e-12)
    with pytest.raises(ValueError, match="query offsets must have shape"):
        impostor_tail(x, labels, query_offsets=offsets[:-1])


def test_cohort_people_are_never_the_people_that_calibrate_it(tmp_path, shared_data):
    singles = [d.name for d in sorted((shared_data / "lfw" / "images").iterdir())
               if len(list(d.glob("*.jpg"))) == 1][:12]
    root = lfw_subset(tmp_path, shared_data, ["Abdullah_Gul", "Colin_Powell", *singles])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nColin_Powell\t1\t2\nColin_Powell\t1\tAbdullah_Gul\t1\n"
                     "Abdullah_Gul\t1\t2\nAbdullah_Gul\t1\tColin_Powell\t1\n")
    people = unseen_people(root, pairs, [2])
    assert people.cohort() == people.calibration_singles and people.cohort()
    assert set(people.cohort_free()) == set(people.fold_people)
    assert set(people.cohort_free(True)) == {*people.fold_people, *people.benchmark_singles}
    assert not set(people.cohort_free(True)) & set(people.cohort())


def test_cohort_then_calibrate_commands_write_the_normalised_curve(tmp_path, shared_data):
    """`trainer cohort` saves the model's embeddings of the calibration-half singles beside the card; `trainer
    calibrate` then also writes the normalised score's curve, from the other unseen people only; `trainer views`
    drops the cohort with the thresholds (its embeddings change)."""
    singles = [d.name for d in sorted((shared_data / "lfw" / "images").iterdir())
               if len(list(d.glob("*.jpg"))) == 1][:40]
    fold = ["Abdullah_Gul", "Colin_Powell"]
    root = lfw_subset(tmp_path, shared_data, fold + singles)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\t1\nColin_Powell\t1\t2\nColin_Powell\t1\tAbdullah_Gul\t1\n"
                     "Abdullah_Gul\t1\t2\nAbdullah_Gul\t1\tColin_Powell\t1\n")
    shipped = load_card(MODEL)
    save_card(shipped.model_copy(update={"cohort": None}), tmp_path / "card.json")
    (tmp_path / shipped.onnx).symlink_to(MODEL.parent / shipped.onnx)
    common = ["--images", str(root), "--pairs", str(pairs), "--model", str(tmp_path / "card.json"),
              "--cache", str(tmp_path / "cache")]
    assert main(["cohort", *common, "--k", "3"]) == 0
    card = load_card(tmp_path / "card.json")
    cohort_people = [n for n in singles if half_of(n) == "calibration"]
    assert card.cohort.size == len(cohort_people) and card.cohort.k == 3 and card.cohort.thresholds == {}
    assert card.cohort.file == "card-cohort.npy"
    from pipeline.gallery.cohort import load_cohort, top_k_mean

    cohort = load_cohort(card, tmp_path / "card.json")
    assert card.cohort.centre == pytest.approx(top_k_mean(cohort.vectors, cohort.vectors, 3, True).mean())
    with pytest.raises(ConfigError, match="without calibrated thresholds"):
        card.matching(card.fingerprint)

    assert main(["calibrate", *common, "--folds", "2", "--strictest", "1e-2", "--loosest", "1e-1",
                 "--update-card", "--json"]) == 0
    card = load_card(tmp_path / "card.json")
    record = card.metrics["open_set_calibration"]
    assert record["identities"] == 2 + len(cohort_people)  # the raw curve: as before
    normalised = record["cohort"]
    n_fold = sum(len(list((root / n).glob("*.jpg"))) for n in fold)
    n_gul = len(list((root / "Abdullah_Gul").glob("*.jpg")))
    assert normalised["identities"] == 2 and normalised["images"] == n_fold  # the cohort's faces never
    assert normalised["impostor_pairs"] == 2 * n_gul * (n_fold - n_gul)  # ordered pairs
    assert card.cohort.thresholds == normalised["thresholds_at_far"]
    assert card.matching(card.fingerprint).thresholds == card.cohort.thresholds

    assert main(["views", "--model", str(tmp_path / "card.json"), "--flip-average", "--shift-average", "3"]) == 0
    assert load_card(tmp_path / "card.json").cohort is None


def test_cohort_command_refuses_too_few_faces(tmp_path, shared_data):
    root = lfw_subset(tmp_path, shared_data, ["Abdullah_Gul", "Colin_Powell"])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t1\nColin_Powell\t1\t2\nColin_Powell\t1\tAbdullah_Gul\t1\n")
    shutil.copy(MODEL, tmp_path / "card.json")
    (tmp_path / load_card(MODEL).onnx).symlink_to(MODEL.parent / load_card(MODEL).onnx)
    assert main(["cohort", "--images", str(root), "--pairs", str(pairs), "--model", str(tmp_path / "card.json")]) == 2


def test_a_cross_model_calibration_lands_in_the_harmonic_curves_raw_and_normalised():
    from trainer.__main__ import _calibrated

    shipped = load_card(MODEL)
    old = shipped.harmonic_with[0]
    result = {"thresholds_at_far": {"1e-2": 0.71}, "cohort": {"thresholds_at_far": {"1e-2": 0.61}}}
    card = _calibrated(shipped, result, old)
    assert card.harmonic_thresholds[old] == {"1e-2": 0.71} and card.cohort.harmonic_thresholds[old] == {"1e-2": 0.61}
    assert card.thresholds == shipped.thresholds and card.cohort.thresholds == shipped.cohort.thresholds
    assert card.metrics["harmonic_calibration"][old] is result
    own = _calibrated(shipped, result, None)
    assert own.thresholds == {"1e-2": 0.71} and own.cohort.thresholds == {"1e-2": 0.61}
    assert own.harmonic_thresholds == shipped.harmonic_thresholds
    assert _calibrated(shipped.model_copy(update={"cohort": None}), {"thresholds_at_far": {"1e-2": 0.7}}, None).cohort is None
