"""`evaluate` on a small real LFW subset with a deterministic embedder: plumbing and internal consistency."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import EngineError
from pipeline.core.faces import Faces
from trainer.evaluate import evaluate
from trainer.metrics import best_threshold, kfold_accuracy, roc_curve, tar_at_far
from trainer.pairs import read_pairs
from trainer.plots import plot_evaluation, plot_roc

SIZE = (112, 112)


class RandomProjection:
    """A fixed random projection of the 24x24 grey crop: deterministic, cheap, better than chance on LFW."""

    def __init__(self, dim: int = 128):
        self.matrix = np.random.default_rng(0).normal(size=(24 * 24 + 1, dim)).astype(np.float32)
        self.calls: list[tuple] = []

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append((crops.shape, crops.dtype))
        grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (24, 24), interpolation=cv2.INTER_AREA) for c in crops]
        x = np.stack(grey).reshape(len(crops), -1).astype(np.float32)
        x -= x.mean(axis=1, keepdims=True)
        x = np.hstack([x, np.ones((len(x), 1), np.float32)])  # a flat (blank) crop must not project to zero
        out = x @ self.matrix
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class NoFaces:
    """A detector that never finds a face: every image takes the centre-crop fallback."""

    min_face_size, thresholds, scale_factor = 20, (0.6, 0.7, 0.7), 0.709

    def detect(self, images):
        return [Faces.empty() for _ in images]


@pytest.fixture(scope="module")
def subset(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A 2-fold View-2 file of real pairs (5 matched + 5 mismatched per fold) over a tree of symlinks,
    one mismatched pair using a blank image on which no face can be found."""
    lfw = shared_data / "lfw"
    lines = (lfw / "pairs_shared_folds.txt").read_text().splitlines()[1:]
    chosen = []
    for fold in range(2):
        block = lines[fold * 600:(fold + 1) * 600]
        chosen += block[:5] + block[300:305]
    chosen[9] = "Blank\t1\t" + "\t".join(chosen[9].split()[2:])
    root = tmp_path_factory.mktemp("lfw_subset")
    images = root / "images"
    for line in chosen:
        for name in {f for f in line.split() if not f.isdigit()} - {"Blank"}:
            if not (images / name).exists():
                (images / name).mkdir(parents=True)
                for f in (lfw / "images" / name).iterdir():
                    (images / name / f.name).symlink_to(f)
    (images / "Blank").mkdir()
    cv2.imwrite(str(images / "Blank" / "Blank_0001.jpg"), np.full((250, 250, 3), 90, np.uint8))
    pairs = root / "pairs.txt"
    pairs.write_text("2\t5\n" + "\n".join(chosen) + "\n")
    return pairs, images


@pytest.fixture(scope="module")
def result(subset):
    from pipeline.detect import MTCNN

    embed = RandomProjection()
    out = evaluate(*subset, embed, MTCNN(), size=SIZE, batch_size=8, roc=True, progress=False)
    return out, embed


def test_evaluate_counts(result, subset):
    out, embed = result
    pairs = read_pairs(*subset)
    images = {p for pair in pairs for p in (pair.first, pair.second)}
    assert out["pairs"] == 20 and out["folds"] == 2 and out["pair_folds"] == [1, 2]
    assert out["images"] == len(images)
    assert 1 <= out["no_detection"] <= 3  # the blank image, perhaps an odd LFW photo
    assert out["embedding_dim"] == 128
    assert sum(shape[0] for shape, _ in embed.calls) == len(images)  # every image embedded exactly once
    assert all(shape[1:] == (*SIZE, 3) and dtype == np.uint8 for shape, dtype in embed.calls)
    assert out["genuine_pairs"] == out["impostor_pairs"] == 10


def test_evaluate_metrics_are_consistent(result):
    out, _ = result
    scores, labels = np.array(out["scores"]), np.array(out["labels"])
    assert np.all(np.abs(scores) <= 1 + 1e-6)
    folds = np.repeat([1, 2], 10)
    kfold = kfold_accuracy(scores, labels, folds)
    assert out["accuracy"] == pytest.approx(kfold.mean) and out["accuracy_std"] == pytest.approx(kfold.std)
    assert out["fold_accuracies"] == pytest.approx(kfold.accuracies.tolist())
    assert 0 <= out["accuracy"] <= 1 and out["accuracy_std"] >= 0
    assert (out["threshold"], out["accuracy_at_threshold"]) == pytest.approx(best_threshold(scores, labels))
    assert out["accuracy_at_threshold"] >= max(out["fold_accuracies"]) - 0.5
    roc = roc_curve(scores, labels)
    assert out["val_at_far"] == pytest.approx(tar_at_far(roc, out["far"])[0])
    assert 0 <= out["eer"] <= 1 and 0 <= out["auc"] <= 1
    assert 1 - out["accuracy_at_threshold"] <= out["eer"] + 1e-9  # balanced classes
    t = out["thresholds_at_far"]
    assert set(t) == {"1e-2", "1e-3", "1e-4"} and t["1e-2"] <= t["1e-3"] <= t["1e-4"]
    assert t["1e-4"] > scores[~labels].max()  # 10 impostors cannot resolve FAR 1e-4: above every impostor
    assert out["far_resolution"] == pytest.approx(0.1) and "1e-3" in out["fars_below_resolution"]
    assert len(out["roc"]["far"]) == len(out["roc"]["tar"]) and out["roc"]["thresholds"][0] is None


def test_evaluate_plot(result, tmp_path):
    out, _ = result
    png = plot_evaluation(out, tmp_path / "plots" / "roc.png", title="random projection")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    roc_only = plot_roc(out["roc"]["far"], out["roc"]["tar"], tmp_path / "roc_only.png",
                        points={"VAL": (out["far"], out["val_at_far"])}, negatives=10)
    assert roc_only.stat().st_size > 5_000
    with pytest.raises(ValueError, match="roc=True"):
        plot_evaluation({k: v for k, v in out.items() if k != "roc"}, tmp_path / "x.png")


def test_single_fold_uses_stratified_folds(subset):
    out = evaluate(*subset, RandomProjection(), NoFaces(), size=SIZE, folds=[2], n_folds=5, progress=False)
    assert out["pairs"] == 10 and out["pair_folds"] == [2] and out["folds"] == 5
    assert out["no_detection"] == out["images"]
    assert "roc" not in out and "scores" not in out


def test_bad_embedder_is_an_engine_error(subset):
    with pytest.raises(EngineError, match=r"must return \(\d+, D\) embeddings"):
        evaluate(*subset, lambda crops: np.ones((len(crops) + 1, 8)), NoFaces(), size=SIZE, progress=False)


def test_open_set_thresholds_use_every_cross_identity_pair():
    from trainer.evaluate import open_set_thresholds

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    people = np.repeat(np.arange(30), 3)
    emb = centres[people] + 0.3 * rng.normal(size=(90, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = open_set_thresholds(emb.astype(np.float32), [f"p{i}" for i in people])
    assert out["genuine_pairs"] == 30 * 3 and out["impostor_pairs"] == 90 * 89 // 2 - 90
    t = out["thresholds_at_far"]
    assert t["1e-4"] >= t["1e-3"] >= t["1e-2"]
    sims = emb @ emb.T
    impostors = sims[np.triu(np.ones((90, 90), bool), 1) & (people[:, None] != people[None, :])]
    assert np.mean(impostors >= t["1e-2"]) <= 1e-2  # at most the named share of impostors accepted
