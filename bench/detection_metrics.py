"""Face-box ground truth in dlib's imglab XML, and matching detections against it (recall, false positives).

imglab boxes are `<box top left width height [ignore='1']>`. An ignored box is excluded from recall, and a
detection that matches one is not a false positive (the annotator marked the face as too hard or unclear).
Matching is greedy by detection score, one detection per box, at IoU >= `min_iou`; dlib's boxes are
tighter and differently shaped than MTCNN's, which is why the agreed criterion is IoU >= 0.4, not 0.5.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import SourceError


@dataclass(frozen=True)
class LabelledImage:
    """One image's ground truth: face boxes (N, 4) xyxy float32, and which of them are marked ignore."""

    path: Path
    xyxy: np.ndarray
    ignore: np.ndarray

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise SourceError(f"{self.path}: boxes must have shape (N, 4), got {self.xyxy.shape}")
        if self.ignore.shape != (len(self.xyxy),):
            raise SourceError(f"{self.path}: ignore must have shape ({len(self.xyxy)},), got {self.ignore.shape}")


@dataclass
class MatchCounts:
    """Totals over images: faces (non-ignored boxes), matched faces, and unmatched detections."""

    faces: int = 0
    matched: int = 0
    false_positives: int = 0
    per_image: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.matched / self.faces if self.faces else 1.0

    def add(self, name: str, faces: int, matched: int, false_positives: int) -> None:
        self.faces += faces
        self.matched += matched
        self.false_positives += false_positives
        self.per_image[name] = {"faces": faces, "matched": matched, "false_positives": false_positives}


def read_imglab(xml_path: str | Path) -> list[LabelledImage]:
    """Parse an imglab dataset file; image paths are resolved relative to the XML's folder."""
    xml_path = Path(xml_path)
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise SourceError(f"cannot read imglab file {xml_path}: {exc}") from exc
    images = []
    for node in root.iter("image"):
        boxes, ignore = [], []
        for box in node.iter("box"):
            top, left = float(box.get("top", 0)), float(box.get("left", 0))
            width, height = float(box.get("width", 0)), float(box.get("height", 0))
            boxes.append([left, top, left + width, top + height])
            ignore.append(box.get("ignore", "0") == "1")
        xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
        images.append(LabelledImage(xml_path.parent / node.get("file", ""), xyxy, np.asarray(ignore, bool)))
    return images


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) of xyxy boxes."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match(
    detections: np.ndarray, scores: np.ndarray, truth: LabelledImage, min_iou: float = 0.4
) -> tuple[int, int, int]:
    """(faces, matched, false_positives) for one image; each box is matched by at most one detection."""
    iou = iou_matrix(detections.astype(np.float64), truth.xyxy.astype(np.float64))
    taken = np.zeros(len(truth.xyxy), bool)
    matched = false_positives = 0
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(~taken & (iou[d] >= min_iou), iou[d], -1.0)
        best = int(np.argmax(candidates)) if len(candidates) else -1
        if best < 0 or candidates[best] < 0:
            false_positives += 1  # duplicates of an already-matched face land here too
            continue
        taken[best] = True
        matched += int(not truth.ignore[best])
    return int((~truth.ignore).sum()), matched, false_positives
