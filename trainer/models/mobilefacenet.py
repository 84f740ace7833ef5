"""MobileFaceNet (Chen et al. 2018): a ~1M-parameter embedder for real-time CPU inference.

112×112 input; inverted-residual bottlenecks with PReLU; a global depthwise convolution (GDConv)
instead of average pooling, so every spatial position of the final 7×7 map gets its own weight —
the paper's reason for the architecture (face crops are aligned, the centre matters more). The
paper's 128-d linear embedding is followed by BatchNorm and, here, L2 normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models.registry import Preprocess, register_model

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 1.
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBN(nn.Sequential):
    """Conv ("same" padding unless `valid`) → BatchNorm → PReLU (or no activation when `linear`)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, linear: bool = False,
        valid: bool = False,
    ):
        padding = 0 if valid else (kernel - 1) // 2
        layers = [
            nn.Conv2d(cin, cout, kernel, stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if not linear:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise (stride), 1×1 linear projection; skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            ConvBN(cin, hidden),
            ConvBN(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            ConvBN(hidden, cout, linear=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


@register_model("mobilefacenet", Preprocess(input_size=(112, 112), mean=(127.5,) * 3, std=(128.0,) * 3))
class MobileFaceNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB → (N, embedding_dim) unit vectors."""

    def __init__(self, embedding_dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = [ConvBN(3, 64, kernel=3, stride=2), ConvBN(64, 64, kernel=3, groups=64)]
        cin = 64
        for expansion, cout, repeats, stride in BOTTLENECKS:
            for i in range(repeats):
                layers.append(Bottleneck(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers.append(ConvBN(cin, 512))
        self.features = nn.Sequential(*layers)
        self.gdconv = ConvBN(512, 512, kernel=7, groups=512, linear=True, valid=True)  # 7×7 → 1×1, position-aware pooling
        self.embedding = nn.Conv2d(512, embedding_dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)
        self._init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdconv(self.features(x))
        x = self.bn(self.embedding(x).flatten(1))
        return F.normalize(x, dim=1)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
