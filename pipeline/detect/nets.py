"""P-Net, R-Net and O-Net as torch modules, with the layer names of facenet-pytorch's state dicts.

The layer names must match exactly so `load_state_dict(torch.load(...))` works on the `.pt` files that the
facenet-pytorch package ships as data. Its code is never imported (it pulls in torchvision, which we lack);
only the weight files are located through the import system.

Each net returns probabilities (softmax inside the graph), so the exported ONNX files are self-contained.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from pipeline.core.errors import EngineError

WEIGHTS_PACKAGE = "facenet_pytorch"
INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


class ChannelPReLU(nn.PReLU):
    """nn.PReLU (same parameter name, so the state dicts load) computed as relu(x) * (1 - a) + x * a.

    Same values, but ONNX Runtime runs ONNX's PRelu as a slow broadcast op outside its blocked (NCHWc)
    conv layout: it was a third of R-Net's and O-Net's time. Relu and per-channel Mul/Add stay in the
    blocked layout (ORT turns the Mul into a depthwise conv there): each net ~1.3-1.4x faster in ORT.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight.view(1, -1, *([1] * (x.dim() - 2)))
        return torch.relu(x) * (1 - slope) + x * slope


class PNet(nn.Module):
    """Proposal net: fully convolutional, any H, W >= 12. Returns (reg (N,4,h,w), prob (N,2,h,w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = ChannelPReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = ChannelPReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = ChannelPReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refine net on 24x24 crops. Returns (reg (N,4), prob (N,2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = ChannelPReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = ChannelPReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = ChannelPReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = ChannelPReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights come from a TF/Caffe model that flattened in (W, H, C) order.
        x = x.permute(0, 3, 2, 1).contiguous().flatten(1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net on 48x48 crops. Returns (reg (N,4), landmarks (N,10: 5 x then 5 y), prob (N,2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = ChannelPReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = ChannelPReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = ChannelPReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = ChannelPReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = ChannelPReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous().flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def weights_dir() -> Path:
    """The folder holding facenet-pytorch's pnet.pt/rnet.pt/onet.pt, found without importing the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(f"MTCNN weights not found: package {WEIGHTS_PACKAGE!r} is not installed ({INSTALL_HINT})")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if all((folder / f"{name}.pt").is_file() for name in NETS):
            return folder
    raise EngineError(
        f"MTCNN weights pnet.pt/rnet.pt/onet.pt missing from {list(spec.submodule_search_locations)} "
        f"(reinstall: {INSTALL_HINT})"
    )


def load_net(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """One pretrained net ("pnet", "rnet" or "onet") in eval mode on `device`."""
    if name not in NETS:
        raise EngineError(f"unknown MTCNN net {name!r}; expected one of {sorted(NETS)}")
    path = weights_dir() / f"{name}.pt"
    net = NETS[name]()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError) as exc:  # corrupt file or a layer-name mismatch
        raise EngineError(f"cannot load MTCNN weights {path}: {exc}") from exc
    try:
        return net.to(device).eval()
    except (RuntimeError, AssertionError) as exc:  # e.g. "cuda" on a CPU-only torch build
        raise EngineError(f"cannot move MTCNN {name} to device {device!r}: {exc}") from exc
