"""FP16 and INT8 (Q/DQ) copies of the shipped model: graph form, same I/O, and embeddings close to fp32.

The held-out test crops are real aligned faces of the validation-fold people, whom calibration never sees.
Bounds: measured worst-case cosine vs fp32 over 64 such crops was 1.0000 (fp16) and 0.996 (int8, 256-crop
calibration, stem conv kept float); the asserts leave margin for calibration-sample variation.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest

from engines import create_engine
from pipeline.core.model_card import fingerprint_file, load_card, onnx_path
from trainer.precision import calibration_crops, convert, heldout_names, normalise

REPO = Path(__file__).resolve().parents[2]
# The held-out twin of the shipped model (same network and recipe): its card names validation folds, which the
# shipped model, trained on every identity, has none of.
CARD = REPO / "models" / "facestream-default-heldout.json"
CACHE = REPO / "state" / "crops" / "lfw150"

pytestmark = pytest.mark.skipif(not CARD.is_file(), reason=f"needs the shipped model card {CARD}")


@pytest.fixture(scope="module")
def card():
    return load_card(CARD)


@pytest.fixture(scope="module")
def crop_cache(card, shared_data, tmp_path_factory) -> Path:
    """The trainer's LFW crop cache if `trainer prepare` made it, else a small one of real LFW faces made now:
    3 images of 40 training people (calibration) and 4 of 20 validation-fold people (held-out checks)."""
    if (CACHE / "meta.json").is_file():
        return CACHE
    from pipeline.detect import MTCNN
    from trainer.export import model_template
    from trainer.prepare import prepare

    images = shared_data / "lfw" / "images"
    held = heldout_names(card)
    people = [d for d in sorted(images.iterdir()) if len(list(d.glob("*.jpg"))) >= 4]
    chosen = [d for d in people if d.name not in held][:40] + [d for d in people if d.name in held][:20]
    root = tmp_path_factory.mktemp("lfw-subset")
    for person in chosen:
        (root / person.name).mkdir()
        for image in sorted(person.glob("*.jpg"))[: 4 if person.name in held else 3]:
            (root / person.name / image.name).symlink_to(image)
    out = tmp_path_factory.mktemp("crops") / "lfw150"
    prepare(root, out, size=card.input_size, template=model_template(card.architecture), progress=False,
            detector=MTCNN(engine="torch"))
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory, card, crop_cache):
    out = tmp_path_factory.mktemp("precision")
    return {p: convert(CARD, p, out, calibration=crop_cache, calibration_size=96) for p in ("fp16", "int8")}


@pytest.fixture(scope="module")
def heldout_inputs(card, crop_cache):
    """64 normalised crops of validation-fold people (calibration excludes them)."""
    from trainer.crops import CropCache

    names = heldout_names(card)
    cache = CropCache.open(crop_cache)
    mask = np.array([cache.identities[label] in names for label in cache.labels])
    chosen = np.sort(np.random.default_rng(1).choice(np.flatnonzero(mask), 64, replace=False))
    return normalise(np.asarray(cache.crops[chosen]), card)


def embed(path, inputs):
    with create_engine("onnxruntime", model_path=path, providers=["CPUExecutionProvider"]) as engine:
        return engine, engine.run({"image": inputs})["embedding"]


def test_calibration_excludes_validation_people(card, crop_cache):
    from trainer.crops import CropCache

    names = heldout_names(card)
    assert len(names) > 100
    cache = CropCache.open(crop_cache)
    crops = calibration_crops(crop_cache, 64, names)
    assert crops.shape == (64, 150, 150, 3) and crops.dtype == np.uint8
    allowed = [i for i, label in enumerate(cache.labels) if cache.identities[label] not in names]
    # Every calibration crop is one of the allowed crops (fixed seed: the same draw again).
    assert np.array_equal(crops, np.asarray(cache.crops[np.sort(
        np.random.default_rng(0).choice(np.array(allowed), 64, replace=False))]))


def test_int8_graph_has_qdq_nodes(converted):
    card_path = converted["int8"]
    model = onnx.load(str(onnx_path(load_card(card_path), card_path)))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    convs_quantised = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear")
    assert convs_quantised >= 28  # every conv but the stem has its weights quantised


def test_fp16_graph_has_float16_weights_and_float32_io(converted):
    card_path = converted["fp16"]
    model = onnx.load(str(onnx_path(load_card(card_path), card_path)))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("precision, min_cosine, min_mean", [("fp16", 0.999, 0.9999), ("int8", 0.98, 0.995)])
def test_embeddings_match_fp32(converted, card, heldout_inputs, precision, min_cosine, min_mean):
    reference_engine, reference = embed(onnx_path(card, CARD), heldout_inputs)
    card_path = converted[precision]
    new_card = load_card(card_path)
    engine, embeddings = embed(onnx_path(new_card, card_path), heldout_inputs)
    assert [s.describe() for s in engine.inputs] == [s.describe() for s in reference_engine.inputs]
    assert [(s.name, s.dtype) for s in engine.outputs] == [(s.name, s.dtype) for s in reference_engine.outputs]
    cosine = np.sum(reference * embeddings, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(embeddings, axis=1))
    assert cosine.min() > min_cosine, f"{precision}: worst cosine {cosine.min():.4f}"
    assert cosine.mean() > min_mean, f"{precision}: mean cosine {cosine.mean():.4f}"


def test_card_records_precision_and_new_fingerprint(converted, card):
    for precision, card_path in converted.items():
        new = load_card(card_path)
        assert new.fingerprint == fingerprint_file(onnx_path(new, card_path)) != card.fingerprint
        assert new.onnx.endswith(f"-{precision}.onnx")
        assert new.training["precision"]["precision"] == precision
        assert new.training["precision"]["source_fingerprint"] == card.fingerprint
        assert new.metrics["precision"] == precision
        assert (new.mean, new.std, new.template) == (card.mean, card.std, card.template)


def test_unknown_precision_is_a_config_error(tmp_path):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="precision must be one of"):
        convert(CARD, "int4", tmp_path)
