"""A stand-in for the two torchvision functions facenet-pytorch's MTCNN imports, with torch and NumPy only.

PyPI's torchvision wheels are built against one torch release each and none matches torch 2.13, so
`bench.peers.venvs` copies this file into the facenet-pytorch peer venv as `torchvision/_standin.py` and
re-exports it as `torchvision.ops.boxes.batched_nms` and `torchvision.transforms.functional.to_tensor`.
Semantics follow torchvision: NMS keeps boxes in decreasing score order and drops a box whose IoU with a
kept one is strictly above the threshold (areas without the +1 of the MATLAB original); `batched_nms` runs
it per class by shifting each class's boxes apart. The greedy loop is NumPy (torchvision's is C++): its time
is counted in `NMS_SECONDS` so a benchmark can say how much of the peer's time the stand-in took.
"""

from __future__ import annotations

import time

import numpy as np
import torch

NMS_SECONDS = [0.0]  # one mutable cell: the peer worker reads it after timing


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes kept by greedy NMS, highest score first."""
    started = time.perf_counter()
    b = boxes.detach().cpu().double().numpy()
    order = np.argsort(-scores.detach().cpu().double().numpy(), kind="stable")
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = []
    while order.size:
        first, rest = order[0], order[1:]
        keep.append(first)
        width = np.clip(np.minimum(b[first, 2], b[rest, 2]) - np.maximum(b[first, 0], b[rest, 0]), 0, None)
        height = np.clip(np.minimum(b[first, 3], b[rest, 3]) - np.maximum(b[first, 1], b[rest, 1]), 0, None)
        inter = width * height
        iou = inter / np.maximum(areas[first] + areas[rest] - inter, np.finfo(np.float64).tiny)
        order = rest[iou <= iou_threshold]
    NMS_SECONDS[0] += time.perf_counter() - started
    return torch.as_tensor(np.asarray(keep, np.int64), device=boxes.device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class of `idxs`: boxes of different classes never suppress each other."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # torchvision's coordinate trick: offset each class beyond the largest coordinate so classes never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def to_tensor(picture) -> torch.Tensor:
    """(H, W, C) array -> (C, H, W) float tensor; uint8 is scaled to [0, 1] as torchvision does."""
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor
