"""MTCNN on real photos: recall on dlib's labelled faces, face counts on CompreFace's samples, batching,
torch vs ONNX Runtime parity, NMS against a NumPy oracle, and input validation."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.detection_metrics import MatchCounts, match, read_imglab
from pipeline.core.errors import EngineError
from pipeline.core.images import read_image
from pipeline.detect import MTCNN, cached_onnx
from pipeline.detect import nets as nets_module
from pipeline.detect.boxes import batched_nms, greedy_nms, nms
from pipeline.detect.mtcnn import pyramid_scales

# CompreFace's digit-named photos are <= 820 px; its 3000-7000 px phone photos would be detected on a copy
# downscaled to this longer side (faces there are hundreds of px, so nothing is lost and it is ~50x faster).
MAX_SIDE = 1024


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(max_side=MAX_SIDE)


@pytest.fixture(scope="module")
def dlib_images(shared_data: Path):
    folder = shared_data / "dlib_face_detection_examples"
    return read_imglab(folder / "training.xml") + read_imglab(folder / "testing.xml")


def test_recall_on_dlib_labelled_faces(detector, dlib_images):
    counts = MatchCounts()
    for labelled in dlib_images:
        faces = detector.detect_one(read_image(labelled.path))
        counts.add(labelled.path.name, *match(faces.xyxy, faces.score, labelled, min_iou=0.4))
    assert counts.faces == 43
    assert counts.recall >= 0.95, counts.per_image
    assert counts.false_positives <= 1, counts.per_image


def compreface_counted(shared_data: Path) -> list[Path]:
    folder = shared_data / "compreface_sample_images" / "images"
    return sorted(p for p in folder.glob("*.jpg") if re.fullmatch(r"\d+_\d\.jpg", p.name))


def test_face_counts_on_compreface_samples(detector, shared_data):
    paths = compreface_counted(shared_data)
    assert len(paths) == 9, f"expected 9 NNN_D.jpg files, found {[p.name for p in paths]}"
    wrong = {}
    for path in paths:
        found = len(detector.detect_one(read_image(path)))
        if found != int(path.stem[-1]):
            wrong[path.name] = found
    assert not wrong, f"face counts differ from the file names: {wrong}"


def test_faces_are_sane(detector, shared_data):
    faces = detector.detect_one(read_image(shared_data / "compreface_sample_images/images/016_8.jpg"))
    assert len(faces) == 8
    assert np.all(faces.score > 0.7) and np.all(np.diff(faces.score) <= 0), "scores are sorted, best first"
    inside = (faces.landmarks >= faces.xyxy[:, None, :2] - 2) & (faces.landmarks <= faces.xyxy[:, None, 2:] + 2)
    assert inside.all(), "landmarks lie within their box"
    assert np.all(faces.landmarks[:, 0, 0] < faces.landmarks[:, 1, 0]), "left eye is left of the right eye"
    assert np.all(faces.landmarks[:, 3, 0] < faces.landmarks[:, 4, 0]), "mouth corners ordered left, right"


def assert_same_faces(a, b, atol=1e-3):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=atol)
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)


def test_batched_detect_equals_one_by_one(detector, shared_data):
    folder = shared_data / "compreface_sample_images" / "images"
    # 013 and 014 share a size (one P-Net batch per level); 010 differs; 017 has no faces.
    images = [read_image(folder / name) for name in ("013_4.jpg", "014_5.jpg", "010_2.jpg", "017_0.jpg")]
    batched = detector.detect(images)
    assert [len(f) for f in batched] == [4, 5, 2, 0]
    for image, faces in zip(images, batched, strict=True):
        assert_same_faces(faces, detector.detect_one(image))
    assert detector.detect([]) == []


def test_max_face_size_skips_only_the_levels_for_larger_faces():
    everything = pyramid_scales(360, 640, 40, 0.709)
    assert pyramid_scales(360, 640, 40, 0.709, None) == everything
    assert pyramid_scales(360, 640, 40, 0.709, 10_000) == everything
    kept = pyramid_scales(360, 640, 40, 0.709, 200)
    assert kept == everything[: len(kept)] and 0 < len(kept) < len(everything)
    faces = [12 / s for s in everything]  # the face size a level's P-Net cell finds
    assert max(12 / s for s in kept) <= 200 < faces[len(kept)]
    assert pyramid_scales(360, 640, 40, 0.709, 40) == everything[:1]


def test_max_face_size_keeps_the_answers_for_smaller_faces(detector, dlib_images, shared_data):
    # Parity with the default (every level): levels for faces over twice the largest face in a photo never
    # contribute to its answers, so with max_face_size at twice that the faces are the same to the bit; at
    # 1.5x the same faces are found (counts), within a few px (their boxes come from R-Net's nudges of
    # partial-face proposals the skipped levels also made).
    paths = [labelled.path for labelled in dlib_images] + compreface_counted(shared_data)
    compared = 0
    for path in paths:
        image = read_image(path)
        reference = detector.detect_one(image)
        if len(reference) == 0:
            continue
        largest = float(np.max(np.maximum(*(reference.xyxy[:, 2:] - reference.xyxy[:, :2]).T)))
        assert_same_faces(MTCNN(max_side=MAX_SIDE, max_face_size=max(20, 2 * largest)).detect_one(image),
                          reference, atol=0)
        assert len(MTCNN(max_side=MAX_SIDE, max_face_size=max(20, 1.5 * largest)).detect_one(image)) == len(reference)
        compared += 1
    assert compared >= 15, compared  # 8 dlib photos, 8 CompreFace photos with faces


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mtcnn_onnx")
    cached_onnx(folder)
    return folder


def test_onnxruntime_engine_matches_torch(onnx_dir, shared_data):
    image = read_image(shared_data / "compreface_sample_images/images/016_8.jpg")
    ort_detector = MTCNN(engine="onnxruntime", model_dir=onnx_dir, max_side=MAX_SIDE)
    torch_detector = MTCNN(engine="torch", max_side=MAX_SIDE)
    assert_same_faces(ort_detector.detect_one(image), torch_detector.detect_one(image), atol=0.05)


def test_octave_pyramid_keeps_recall(dlib_images):
    octave = MTCNN(max_side=MAX_SIDE, pyramid="octave")
    counts = MatchCounts()
    for labelled in dlib_images:
        faces = octave.detect_one(read_image(labelled.path))
        counts.add(labelled.path.name, *match(faces.xyxy, faces.score, labelled, min_iou=0.4))
    assert counts.recall >= 0.95 and counts.false_positives <= 1, counts.per_image


def test_channel_prelu_equals_torch_prelu():
    prelu = torch.nn.PReLU(6)
    torch.nn.init.uniform_(prelu.weight, -1.3, 1.3)  # the pretrained slopes span about that range
    ours = nets_module.ChannelPReLU(6)
    ours.load_state_dict(prelu.state_dict())
    x = torch.randn(3, 6, 5, 7)
    torch.testing.assert_close(ours(x), prelu(x), atol=1e-6, rtol=1e-6)


def test_onnx_cache_is_reused_and_regenerated(onnx_dir):
    paths = cached_onnx(onnx_dir)
    assert set(paths) == {"pnet", "rnet", "onet"}
    stamps = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    assert {n: p.stat().st_mtime_ns for n, p in cached_onnx(onnx_dir).items()} == stamps, "cache hit re-exported"
    paths["rnet"].unlink()
    assert cached_onnx(onnx_dir)["rnet"].is_file()
    manifest = onnx_dir / "mtcnn.json"
    manifest.write_text(manifest.read_text().replace('"graph_version"', '"old_graph_version"'))
    cached_onnx(onnx_dir)
    assert all(p.stat().st_mtime_ns > stamps[n] for n, p in paths.items()), "an older graph was not re-exported"


def test_nms_matches_the_numpy_oracle():
    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(8, 60, (400, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0.5, 1.0, 400).astype(np.float32)
    for threshold in (0.3, 0.5, 0.7):
        expected = greedy_nms(boxes, scores, threshold)
        np.testing.assert_array_equal(np.sort(nms(boxes, scores, threshold)), np.sort(expected))
    groups = rng.integers(0, 3, 400)
    kept = batched_nms(boxes, scores, groups, 0.5)
    members = [np.flatnonzero(groups == g) for g in range(3)]
    expected = np.concatenate([m[greedy_nms(boxes[m], scores[m], 0.5)] for m in members])
    np.testing.assert_array_equal(np.sort(kept), np.sort(expected))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((40, 40, 3), np.float32), "dtype uint8"),
        (np.zeros((40, 40), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((40, 40, 4), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((0, 40, 3), np.uint8), "empty"),
        ("frame.jpg", "numpy array"),
    ],
)
def test_bad_images_are_refused(detector, image, message):
    with pytest.raises(EngineError, match=message):
        detector.detect([image])


def test_tiny_image_has_no_faces(detector):
    assert len(detector.detect_one(np.zeros((8, 8, 3), np.uint8))) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_face_size": 5}, "min_face_size"), ({"thresholds": (0.6, 0.7)}, "thresholds"),
     ({"scale_factor": 1.2}, "scale_factor"), ({"engine": "tensorflow"}, "unknown MTCNN engine"),
     ({"pyramid": "gauss"}, "pyramid"), ({"min_face_size": 40, "max_face_size": 30}, "max_face_size")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(EngineError, match=message):
        MTCNN(**kwargs)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(nets_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError, match=re.escape("pip install --no-deps facenet-pytorch==2.6.0")):
        nets_module.load_net("pnet")


def test_big_batches_run_in_chunks_with_the_same_outputs(onnx_dir):
    # A crowded frame's thousands of R-Net proposals go through in bounded chunks: same numbers, same order.
    from pipeline.detect.net_engines import MAX_BATCH, NetEngine, in_chunks

    net = NetEngine.onnx("rnet", onnx_dir / "rnet.onnx", threads=1)
    crops = np.random.default_rng(0).uniform(-1, 1, (2 * MAX_BATCH + 17, 3, 24, 24)).astype(np.float32)
    whole = net._run(crops)
    chunked = net(crops)
    assert [a.shape for a in chunked] == [a.shape for a in whole] == [(len(crops), 4), (len(crops), 2)]
    for a, b in zip(chunked, whole):
        np.testing.assert_allclose(a, b, atol=1e-5)
    calls = []
    in_chunks(lambda x: (calls.append(len(x)) or x,), crops, 100)
    assert calls == [100, 100, 73]


def test_both_backends_run_through_the_engine_registry(onnx_dir):
    # One backend layer: the torch reference and the ONNX path are engines from engines.create_engine, and the
    # specs given to the torch engine are those the export declares (names, dtypes, fixed sizes).
    from pipeline.detect.net_engines import NetEngine

    for name in ("pnet", "rnet", "onet"):
        reference, exported = NetEngine.torch(name), NetEngine.onnx(name, onnx_dir / f"{name}.onnx", threads=1)
        assert (reference.engine.name, exported.engine.name) == ("torch", "onnxruntime")
        for ours, theirs in ((reference.engine.inputs, exported.engine.inputs),
                             (reference.engine.outputs, exported.engine.outputs)):
            assert [(s.name, s.dtype, s.rank) for s in ours] == [(s.name, s.dtype, s.rank) for s in theirs]
            fixed = [[d if isinstance(d, int) else None for d in s.shape] for s in ours]
            assert fixed == [[d if isinstance(d, int) else None for d in s.shape] for s in theirs], name
    with pytest.raises(EngineError, match="must have size 24 on axis 2"):
        NetEngine.torch("rnet")(np.zeros((1, 3, 48, 48), np.float32))


def test_mtcnn_sessions_keep_no_per_shape_memory_plans(onnx_dir):
    """Every pyramid level and batch of crops is a new shape: ORT's memory patterns would be planned and kept
    per shape (566 vs 374 MB RSS over 1,500 crops of random sizes), so the nets run without them."""
    detector = MTCNN(engine="onnxruntime", model_dir=onnx_dir)
    for net in (detector.pnet, detector.rnet, detector.onet):
        assert net.engine._session.get_session_options().enable_mem_pattern is False
