"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`, CC0) as a PyTorch module.

The network is the `anet_type` of dlib's dnn_face_recognition_ex.cpp: a 29-conv ResNet on 150x150 RGB chips,
128-d output. dlib's `affine` layers (batch norm frozen after training) are folded into the preceding conv's
weights and bias when the weights are loaded, so the torch graph is conv/relu/pool only. Behaviours of dlib
that differ from common PyTorch defaults, and that parity depends on:

- a strided conv or pool has no padding (dlib's default padding is k//2 only for stride 1);
- `add_prev` adds tensors of different shapes as if the smaller one were zero-padded at the end of each axis
  (channels, rows, columns); the skip path of a downsampling block is a 2x2 average pool with no projection,
  so its missing channels are zeros, and in the last two levels the pooled skip is even *larger* (4x4, 2x2)
  than the strided conv's output (3x3, 1x1);
- the input is (pixel - channel mean) / 256 with dlib's training-set means, on RGB.

dlib's descriptors are not unit length; the module L2-normalises them unless `normalize=False`.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core.errors import ConfigError, EngineError
from trainer.models.dlib_format import LAYER, LOSS, DlibLayer, read_dlib_net_file
from trainer.models.registry import Preprocess, register_model

log = logging.getLogger(__name__)

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_INSTALL_HINT = "pip install --no-deps face-recognition-models==0.3.0"
# input_rgb_image_sized's defaults, also stored in the model file (checked on load).
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_INPUT_SCALE = 256.0
CHIP_SIZE = 150  # dlib.get_face_chip(img, shape, size=150, padding=0.25), as the model was trained
CHIP_PADDING = 0.25

# Where MTCNN's 5 landmarks (left eye, right eye, nose tip, mouth left, mouth right; left = smaller x) fall in
# dlib's 150x150 chip (padding 0.25), in output pixels (x, y): the mean over 200 LFW faces of MTCNN's landmarks,
# detected on the full image and mapped through dlib's own chip transform (measured from dlib). Aligning with a
# similarity transform onto it gave crops at cosine 0.994 (mean) to dlib's chips on 199 other LFW faces.
MTCNN_TEMPLATE_150 = np.array(
    [[47.83, 45.91], [102.32, 45.91], [75.05, 78.15], [50.90, 105.24], [99.05, 105.35]], dtype=np.float32
)

PREPROCESS = Preprocess(input_size=(CHIP_SIZE, CHIP_SIZE), mean=DLIB_MEAN_RGB, std=(DLIB_INPUT_SCALE,) * 3)

# (channels, downsample) per residual block, input side first: alevel4 .. alevel0.
_BLOCKS = (
    [(32, False)] * 3
    + [(64, True)] + [(64, False)] * 3
    + [(128, True)] + [(128, False)] * 2
    + [(256, True)] + [(256, False)] * 2
    + [(256, True)]
)  # fmt: skip


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: a + b where each tensor is zero-padded at the end of C, H and W to the larger shape."""
    with warnings.catch_warnings():
        # ONNX tracing warns that these shape comparisons become constants. They may: C, H and W are fixed by the
        # model's fixed 150x150 input; only the batch axis is dynamic, and it is the same for a and b.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if a.shape[1:] == b.shape[1:]:
            return a + b
        size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def pad(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's `ares` / `ares_down`: relu(add_prev(conv-affine-relu-conv-affine(x), x or avg_pool2x2(x)))."""

    def __init__(self, in_channels: int, channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if downsample else 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_padded(y, skip))


@register_model("dlib_resnet", PREPROCESS)
class DlibResNet(nn.Module):
    """150x150 RGB chip (normalised by `PREPROCESS`) -> 128-d embedding, unit length if `normalize`.

    `weights`: None (random init), "dlib" (the installed face-recognition-models package's file), or a path
    to a `dlib_face_recognition_resnet_model_v1.dat`.
    """

    embedding_dim = 128

    def __init__(self, weights: str | Path | None = None, normalize: bool = True):
        super().__init__()
        self.normalize = normalize
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, channels = [], 32
        for out_channels, downsample in _BLOCKS:
            blocks.append(ResidualBlock(channels, out_channels, downsample))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, self.embedding_dim, bias=False)
        # dlib's unit embeddings share one large common direction (strangers sit at cosine ~0.83). With
        # `centre` set to their mean, outputs are re-centred and re-normalised, so strangers sit near 0 and
        # FaceNet's margin means what it says; zeros (the default) leave dlib's geometry untouched.
        self.register_buffer("centre", torch.zeros(self.embedding_dim))
        if weights is not None:
            load_dlib_weights(self, locate_dlib_model(None if weights == "dlib" else weights))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x).mean(dim=(2, 3))
        x = self.fc(x)
        if not self.normalize:
            return x
        return F.normalize(F.normalize(x, dim=1) - self.centre, dim=1)

    def convs(self) -> list[nn.Conv2d]:
        """Every conv in forward order, as dlib's file lists them."""
        return [self.stem] + [conv for block in self.blocks for conv in (block.conv1, block.conv2)]


def locate_dlib_model(path: str | Path | None = None) -> Path:
    """The .dat file: `path` if given, else the one inside the installed `face_recognition_models` package.

    The package is found without importing it (its __init__ needs setuptools' pkg_resources).
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"dlib model file {path} not found")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"dlib's face-recognition weights come from the face-recognition-models package, which is not "
            f"installed (a training-time extra); install it with: {DLIB_INSTALL_HINT}"
        )
    found = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_MODEL_FILE
    if not found.is_file():
        raise ConfigError(f"face_recognition_models is installed but has no {found}; reinstall: {DLIB_INSTALL_HINT}")
    return found


def dlib_structure() -> list[str]:
    """anet_type's wrappers from the loss inwards, as dlib's C++ template aliases nest them."""
    block = [LAYER] * 5  # affine, con, relu, affine, con
    ares = [LAYER, LAYER] + block + ["tag1"]  # relu, add_prev1, block, tag1
    ares_down = [LAYER, LAYER, LAYER, "skip1", "tag2"] + block + ["tag1"]  # relu, add_prev2, avg_pool, ...
    levels = []
    for channels, downsample in reversed(_BLOCKS):
        levels += ares_down if downsample else ares
    return [LOSS, LAYER, LAYER] + levels + [LAYER] * 4  # loss, fc, avg_pool | ... | max_pool, relu, affine, con


def load_dlib_weights(model: DlibResNet, path: Path) -> None:
    """Read dlib's file into `model`, folding each affine into its conv; raise EngineError on any mismatch."""
    layers = read_dlib_net_file(path, dlib_structure())
    _check_input(layers[0], path)
    _check_pools(layers, path)
    convs = model.convs()
    pairs = [(a, b) for a, b in zip(layers, layers[1:]) if a.kind == "con"]
    if len(pairs) != len(convs) or any(b.kind != "affine" for _, b in pairs):
        raise EngineError(f"{path}: expected {len(convs)} con+affine pairs, found {len(pairs)}")
    with torch.no_grad():
        for index, (conv, (con, affine)) in enumerate(zip(convs, pairs)):
            weight, bias = _fold(con, affine, conv, f"{path}: conv {index}")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
        fc = [layer for layer in layers if layer.kind == "fc"]
        if len(fc) != 1 or fc[0].arrays["weight"].shape != (model.fc.in_features, model.fc.out_features):
            raise EngineError(f"{path}: expected one fc layer {model.fc.in_features}->{model.fc.out_features}")
        if "bias" in fc[0].arrays:
            raise EngineError(f"{path}: the fc layer has a bias; dlib's face ResNet uses fc_no_bias")
        model.fc.weight.copy_(torch.from_numpy(fc[0].arrays["weight"].T.copy()))
    log.info("loaded dlib ResNet weights from %s (%d convs)", path, len(convs))


def _check_input(layer: DlibLayer, path: Path) -> None:
    if layer.kind != "input_rgb_image_sized" or layer.attrs["size"] != (CHIP_SIZE, CHIP_SIZE):
        raise EngineError(f"{path}: expected a {CHIP_SIZE}x{CHIP_SIZE} RGB input layer, found {layer}")
    if not np.allclose(layer.attrs["mean_rgb"], DLIB_MEAN_RGB, atol=1e-3):
        raise EngineError(f"{path}: input means {layer.attrs['mean_rgb']} differ from PREPROCESS {DLIB_MEAN_RGB}")


# What forward() hard-codes for dlib's pools: the stem's max_pool, 4 skip-path avg_pools, then the global mean.
_POOLS = [("max_pool", (3, 3), (2, 2))] + [("avg_pool", (2, 2), (2, 2))] * 4 + [("avg_pool", (0, 0), (1, 1))]


def _check_pools(layers: list[DlibLayer], path: Path) -> None:
    pools = [(x.kind, x.attrs["kernel"], x.attrs["stride"]) for x in layers if x.kind.endswith("_pool")]
    unpadded = all(x.attrs["padding"] == (0, 0) for x in layers if x.kind.endswith("_pool"))
    if pools != _POOLS or not unpadded:
        raise EngineError(f"{path}: pooling layers {pools} differ from this network's {_POOLS} (unpadded)")


def _fold(con: DlibLayer, affine: DlibLayer, conv: nn.Conv2d, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """conv then per-channel gamma*x+beta == one conv with weights scaled by gamma and bias gamma*b+beta."""
    weight = con.arrays["weight"]
    if weight.shape != tuple(conv.weight.shape):
        raise EngineError(f"{where}: dlib filters {weight.shape}, torch conv {tuple(conv.weight.shape)}")
    if con.attrs["stride"] != conv.stride or con.attrs["padding"] != conv.padding:
        raise EngineError(
            f"{where}: dlib stride/padding {con.attrs['stride']}/{con.attrs['padding']}, "
            f"torch {conv.stride}/{conv.padding}"
        )
    gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
    if gamma.shape != (weight.shape[0],):
        raise EngineError(f"{where}: affine has {gamma.shape} scales for {weight.shape[0]} filters")
    bias = con.arrays.get("bias", np.zeros(weight.shape[0], np.float32))
    # Fold in float64 so the fused weights differ from dlib's two-step arithmetic by float32 rounding only.
    folded_w = weight.astype(np.float64) * gamma.astype(np.float64)[:, None, None, None]
    folded_b = bias.astype(np.float64) * gamma + beta
    return torch.from_numpy(folded_w.astype(np.float32)), torch.from_numpy(folded_b.astype(np.float32))
