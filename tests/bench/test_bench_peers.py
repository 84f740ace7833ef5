"""bench.peers' pieces that need no peer venv: ratios, figure rows, the README table, the torchvision stand-in."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.peers.lfw import pairs_subset, write_pairs_file
from bench.peers.report import figure_rows, ratio, ratios, row
from bench.peers.torchvision_standin import batched_nms, nms, to_tensor
from bench.peers.venvs import write_torchvision_standin
from bench.readme_table import END, START, format_value, splice, table, update_readme
from trainer.pairs import read_pairs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ours, theirs, better, expected", [
    (0.99, 0.98, "higher", round(0.99 / 0.98, 3)),  # accuracy: facestream / peer
    (40.0, 4.0, "higher", 10.0),  # throughput
    (10.0, 50.0, "lower", 5.0),  # times: a speedup, peer / facestream
    (50.0, 10.0, "lower", 0.2),  # slower than the peer: < 1
    (None, 3.0, "higher", None),  # a skipped side
    (1.0, 0.0, "higher", None),  # undefined
])
def test_ratio_is_above_one_when_facestream_is_better(ours, theirs, better, expected):
    assert ratio(ours, theirs, better) == expected


def test_ratio_rejects_unknown_direction():
    with pytest.raises(ValueError, match="better must be"):
        ratio(1.0, 2.0, "faster")


def test_row_names_its_ratio_by_direction_and_peer():
    times = row("detector_ms_per_frame", "detector", "ms", "lower", "facenet-pytorch MTCNN", 50.0, 150.0)
    assert times["ratio"] == 3.0
    assert times["ratio_name"] == "detector_ms_per_frame_facestream_speedup_vs_facenet_pytorch"
    assert times["ratio_definition"] == "peer / facestream (speedup)"
    rates = row("pipeline_fps", "fps", "fps", "higher", "face_recognition 1.3.0", 30.0, 3.0)
    assert rates["ratio_name"] == "pipeline_fps_facestream_over_face_recognition"
    assert "skipped" not in rates


def sample_result(facenet_skipped: bool = False) -> dict:
    """The smallest `bench.peers` result that `figure_rows` and `table` read."""
    facenet = {"skipped": "stand-in failed"} if facenet_skipped else {
        "speed": {"ms_per_frame": 150.0, "cpu_ms_per_frame": 120.0}, "recall": {"recall": 0.9767}}
    return {
        "lfw": {"folds": [6, 7], "pairs": 1200,
                "facestream": {"accuracy": 0.9925, "embed": {"faces_per_s": 100.0, "cpu_ms_per_face": 9.0,
                                                             "batch": 32}, "align_ms_per_face": 0.5},
                "face_recognition": {"accuracy": 0.985, "embed": {"faces_per_s": 5.0, "cpu_ms_per_face": 120.0}}},
        "detection": {"min_face_size": 20, "threads": 1, "facenet_pytorch": facenet,
                      "facestream": {"recall": {"recall": 1.0, "faces": 43},
                                     "speed": {"ms_per_frame": 50.0, "cpu_ms_per_frame": 48.0}},
                      "face_recognition": {"recall": {"recall": 0.9535}}},
        "pipeline": {"fps": 30.0, "peer_fps": 3.0, "cpu_ms_per_frame": 20.0, "peer_cpu_ms_per_frame": 200.0,
                     "fps_detect_every_1": 12.0, "cpu_ms_per_frame_detect_every_1": 60.0,
                     "settings": {"run": {"detect_every": 3}}},
        "gallery": {"templates": 1_000_000, "facestream": {"p50_ms": 1.5, "top1_agreement": 1.0},
                    "peer": {"p50_ms": 900.0}},
        "machine": {"cpu": "Test CPU", "cores": 2, "python": "3.11.7", "date_utc": "2026-01-01 00:00",
                    "load_average_1m": 1.0},
        "versions": {"onnxruntime": "1.0", "dlib": "20.0.1", "facenet_pytorch": None},
    }


def test_figure_rows_cover_every_figure_with_ratios():
    rows = figure_rows(sample_result())
    keys = {r["key"] for r in rows}
    assert {"lfw_accuracy", "detection_recall", "detector_ms_per_frame", "embedding_faces_per_s", "pipeline_fps",
            "gallery_search_ms"} <= keys
    by_name = ratios(rows)
    assert by_name["gallery_search_ms_facestream_speedup_vs_face_recognition"] == 600.0
    assert by_name["pipeline_fps_facestream_over_face_recognition"] == 10.0
    assert by_name["detector_ms_per_frame_facestream_speedup_vs_facenet_pytorch"] == 3.0
    assert len(by_name) == len(rows)  # one ratio name per row: no collisions


def test_a_skipped_peer_keeps_its_rows_with_the_reason():
    rows = [r for r in figure_rows(sample_result(facenet_skipped=True)) if r["peer"].startswith("facenet")]
    assert rows and all(r["ratio"] is None and r["skipped"] == "stand-in failed" for r in rows)
    assert "| skipped |" in table({**sample_result(True), "figures": figure_rows(sample_result(True))})


def test_table_has_a_row_per_figure_and_the_machine():
    result = {**sample_result(), "figures": figure_rows(sample_result())}
    text = table(result)
    lines = text.splitlines()
    assert "Test CPU (2 cores" in lines[0] and "dlib 20.0.1" in lines[0] and "facenet_pytorch" not in lines[0]
    assert sum(line.startswith("| ") for line in lines) == len(result["figures"]) + 1  # + header
    assert "| 98.50% | 99.25% | **1.008×** |" in text
    assert "| 900.0 | 1.50 | **600.00×** |" in text


@pytest.mark.parametrize("value, unit, text", [
    (0.9925, "fraction", "99.25%"), (0.138, "ms", "0.138"), (2.003, "ms", "2.00"), (38.295, "ms", "38.3"),
    (12345.0, "ms", "12,345"), (None, "ms", "skipped"),
])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


def test_splice_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    update_readme(readme, {**sample_result(), "figures": figure_rows(sample_result())})
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n" + START + "\nMeasured ")
    assert text.endswith(f"{END}\nafter\n") and "old table" not in text
    assert splice(text, "x") == splice(splice(text, "y"), "x")  # idempotent


def test_splice_without_markers_is_an_error():
    with pytest.raises(ValueError, match="markers"):
        splice("# no markers\n", "table")


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS by definition: in score order, keep a box unless a kept box of its class overlaps it more."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed, count, threshold", [(0, 60, 0.5), (1, 200, 0.7), (2, 120, 0.3), (3, 1, 0.5)])
def test_standin_batched_nms_matches_brute_force(seed, count, threshold):
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 200, (count, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (count, 2))], axis=1).astype(np.float32)
    scores = rng.permutation(count).astype(np.float32) / count  # distinct: the order is unambiguous
    classes = rng.integers(0, 3, count)
    kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == brute_force_nms(boxes, scores, classes, threshold)


def test_standin_nms_of_nothing_is_empty():
    empty = batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert nms(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.9]), 0.5).tolist() == [0]


def test_standin_to_tensor_scales_uint8_like_torchvision():
    image = np.full((4, 6, 3), 255, np.uint8)
    tensor = to_tensor(image)
    assert tensor.shape == (3, 4, 6) and tensor.dtype == torch.float32 and float(tensor.max()) == 1.0
    assert float(to_tensor(np.full((2, 2, 3), 7.0, np.float32)).max()) == 7.0  # floats are not rescaled


def test_standin_package_provides_what_facenet_pytorch_imports(tmp_path):
    """The written package, on PYTHONPATH, satisfies detect_face.py's torchvision imports (run in a child
    process so no `torchvision` module lingers in this one)."""
    spec = importlib.util.find_spec("facenet_pytorch")  # located, not imported: its __init__ needs requests
    if spec is None:
        pytest.skip("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0)")
    write_torchvision_standin(tmp_path)
    detect_face = Path(spec.origin).parent / "models" / "utils" / "detect_face.py"
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('detect_face', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "import torch; print(m.batched_nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]), "
            "torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5).tolist())")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code, str(detect_face)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [0]


def test_quick_pairs_subset_round_trips_through_a_pairs_file(shared_data, tmp_path):
    lfw = shared_data / "lfw"
    pairs = pairs_subset(lfw / "pairs_shared_folds.txt", lfw / "images", [6, 7], per_fold=3)
    assert len(pairs) == 12 and sum(p.same for p in pairs) == 6
    again = read_pairs(write_pairs_file(pairs, tmp_path / "pairs.txt"), lfw / "images")
    assert [(p.first, p.second, p.same) for p in again] == [(p.first, p.second, p.same) for p in pairs]
    assert sorted({p.fold for p in again}) == [1, 2]
