"""Inception-ResNet-v1 (Szegedy et al. 2016), the FaceNet-family backbone, with a 128-d embedding.

160×160 input, ~23M parameters: the accurate, heavy option (GPU training and inference); use
`mobilefacenet` for CPU real time. Module names follow the widely used `facenet-pytorch` layout
(`conv2d_1a`, `repeat_1`, `mixed_6a`, `block8`, `last_linear`, `last_bn`, ...) so a trunk trained
there can be loaded with `load_state_dict(..., strict=False)`; its 512-d head does not fit ours.
The paper's embedding is 128-d on the unit hypersphere (Schroff et al. 2015, §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.registry import Preprocess, register_model


class BasicConv2d(nn.Sequential):
    """Conv (no bias) → BatchNorm (TensorFlow's eps 1e-3) → ReLU, named conv/bn/relu."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU()


def _chain(*specs) -> nn.Module:
    """A branch from (cin, cout, kernel, stride, padding) tuples (a lone conv is not wrapped, as upstream)."""
    convs = [BasicConv2d(*spec) for spec in specs]
    return convs[0] if len(convs) == 1 else nn.Sequential(*convs)


class ResidualInception(nn.Module):
    """Parallel branches → concat → 1×1 conv back to `channels` → scaled residual add → ReLU (optional)."""

    def __init__(self, channels: int, branches: list[nn.Module], concat: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.n_branches = len(branches)
        self.conv2d = nn.Conv2d(concat, channels, kernel_size=1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], dim=1)
        return self.relu(x + self.scale * self.conv2d(out))


def block35(scale: float = 0.17) -> ResidualInception:
    """35×35 grid (Inception-ResNet-A), 256 channels."""
    branches = [
        _chain((256, 32, 1)),
        _chain((256, 32, 1), (32, 32, 3, 1, 1)),
        _chain((256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)),
    ]
    return ResidualInception(256, branches, concat=96, scale=scale)


def block17(scale: float = 0.10) -> ResidualInception:
    """17×17 grid (Inception-ResNet-B), 896 channels, factorised 7×7."""
    branches = [
        _chain((896, 128, 1)),
        _chain((896, 128, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0))),
    ]
    return ResidualInception(896, branches, concat=256, scale=scale)


def block8(scale: float = 0.20, relu: bool = True) -> ResidualInception:
    """8×8 grid (Inception-ResNet-C), 1792 channels, factorised 3×3."""
    branches = [
        _chain((1792, 192, 1)),
        _chain((1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0))),
    ]
    return ResidualInception(1792, branches, concat=384, scale=scale, relu=relu)


class Reduction(nn.Module):
    """Grid reduction: strided branches plus a 3×3/2 max-pool, concatenated."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.add_module(f"branch{len(branches)}", nn.MaxPool2d(3, stride=2))
        self.n_branches = len(branches) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], dim=1)


def mixed_6a() -> Reduction:
    """35 → 17, 256 → 896 channels."""
    return Reduction([_chain((256, 384, 3, 2)), _chain((256, 192, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))])


def mixed_7a() -> Reduction:
    """17 → 8, 896 → 1792 channels."""
    return Reduction([
        _chain((896, 256, 1), (256, 384, 3, 2)),
        _chain((896, 256, 1), (256, 256, 3, 2)),
        _chain((896, 256, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2)),
    ])


@register_model("inception_resnet_v1", Preprocess(input_size=(160, 160), mean=(127.5,) * 3, std=(128.0,) * 3))
class InceptionResnetV1(nn.Module):
    """(N, 3, 160, 160) normalised RGB → (N, embedding_dim) unit vectors."""

    def __init__(self, embedding_dim: int = 128, dropout: float = 0.2):
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = mixed_6a()
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = mixed_7a()
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, embedding_dim, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_dim, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stem in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                     self.conv2d_4a, self.conv2d_4b):
            x = stem(x)
        x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
        x = self.avgpool_1a(self.block8(x)).flatten(1)
        x = self.last_bn(self.last_linear(self.dropout(x)))
        return F.normalize(x, dim=1)
