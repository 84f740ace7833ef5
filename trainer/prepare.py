"""`trainer prepare`: a folder-per-identity image tree -> an aligned-crop cache (`trainer.crops`).

Each image is read, MTCNN runs on batches of images, the face nearest the image centre (weighted by its
size: LFW's labelled person is the centred one) is aligned to the 5-point template, and the crop is stored
as RGB. An image with no detected face either gets a centred square crop (`fallback="centre"`, for datasets
that are already cropped to the face, like ORL or Yale) or is recorded as `no_face`; an image that cannot be
decoded is recorded as `unreadable`. Work is committed in chunks, so a re-run resumes where the last stopped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.core.errors import ConfigError, EngineError, SourceError
from pipeline.core.faces import Faces
from pipeline.core.images import IMAGE_SUFFIXES
from pipeline.core.protocols import Detector
from trainer.crops import CropCache, CropWriter, cache_fingerprint

log = logging.getLogger(__name__)

FALLBACKS = ("centre", "none")


@dataclass(frozen=True)
class ImageTree:
    """Images of a folder-per-identity tree: `paths` relative to the root (POSIX), `labels` index `identities`."""

    identities: list[str]
    paths: list[str]
    labels: list[int]


@dataclass(frozen=True)
class CropOutcome:
    """What became of one image: an RGB crop ("detected" | "centre_fallback"), or none ("no_face")."""

    crop: np.ndarray | None
    status: str


@dataclass(frozen=True)
class PrepareSummary:
    out: str
    images: int
    processed: int
    crops: int
    detected: int
    fallback: int
    failed: int
    no_face: int
    unreadable: int
    identities: int
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scan_tree(root: str | Path) -> ImageTree:
    """Every image file one level below `root` (`<root>/<identity>/<file>`), identities and files sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image tree {root} is not a folder")
    identities, paths, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.iterdir()
                       if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".") and not f.is_dir())
        if not files:
            log.warning("%s holds no images; skipped", folder)
            continue
        label = len(identities)
        identities.append(folder.name)
        paths.extend(f"{folder.name}/{f.name}" for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise SourceError(f"no images under {root} (expected <root>/<identity>/<image> with one of "
                          f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageTree(identities, paths, labels)


def choose_face(faces: Faces, shape: tuple[int, ...]) -> int:
    """Index of the face to keep: the largest box area minus twice its squared offset from the image centre.

    The rule of FaceNet's `align_dataset_mtcnn`: in LFW-style photos the labelled person is centred, and a
    big face slightly off-centre still beats a small one in the middle.
    """
    if len(faces) == 0:
        raise ValueError("choose_face needs at least one face")
    centre = np.array([shape[1] / 2.0, shape[0] / 2.0])
    box_centre = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2.0
    offset = np.sum((box_centre - centre) ** 2, axis=1)
    return int(np.argmax(faces.area - 2.0 * offset))


def centre_box(shape: tuple[int, ...], size: tuple[int, int], fraction: float = 1.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the largest centred box with the crop's aspect ratio, scaled by `fraction`."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fallback fraction must be in (0, 1], got {fraction}")
    img_h, img_w = shape[:2]
    aspect = size[1] / size[0]  # width / height
    box_h = min(img_h, img_w / aspect) * fraction
    box_w = box_h * aspect
    x0, y0 = round((img_w - box_w) / 2), round((img_h - box_h) / 2)
    return x0, y0, x0 + max(1, round(box_w)), y0 + max(1, round(box_h))


def centre_crop(image: np.ndarray, size: tuple[int, int], fraction: float = 1.0) -> np.ndarray:
    """The centred box of `image` resized to `size` (h, w); same channel order as the input."""
    x0, y0, x1, y1 = centre_box(image.shape, size, fraction)
    return cv2.resize(image[y0:y1, x0:x1], (size[1], size[0]), interpolation=cv2.INTER_AREA)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Grayscale (H, W) or (H, W, 1) images become 3-channel BGR; colour images pass through."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


class FaceCropper:
    """Detect (in batches), choose the centred face, align it; fall back to a centre crop when asked."""

    def __init__(self, detector: Detector, size: tuple[int, int], template: np.ndarray | None = None,
                 fallback: str = "centre", fallback_fraction: float = 1.0):
        if fallback not in FALLBACKS:
            raise ConfigError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        from pipeline.core.align import align, default_template

        self._align = align
        self.detector = detector
        self.size = (int(size[0]), int(size[1]))
        # The template actually used, recorded in the cache (align's default for this size when none is given).
        self.template = np.asarray(default_template(self.size) if template is None else template, np.float32)
        self.fallback = fallback
        self.fallback_fraction = fallback_fraction

    def crop(self, images: Sequence[np.ndarray]) -> list[CropOutcome]:
        """One outcome per BGR image, crops RGB uint8 (h, w, 3). Images of one size share detector passes."""
        images = [as_bgr(image) for image in images]
        faces = self.detector.detect(images) if images else []
        return [self._one(image, found) for image, found in zip(images, faces, strict=True)]

    def _one(self, image: np.ndarray, faces: Faces) -> CropOutcome:
        if len(faces):
            landmarks = faces.landmarks[choose_face(faces, image.shape)]
            crop = self._align(image, landmarks, size=self.size, template=self.template)
            if crop.shape[:2] != self.size:
                raise EngineError(f"align returned a {crop.shape[0]}x{crop.shape[1]} (h x w) crop for size "
                                  f"{self.size} (h, w): the aligner reads size in another order")
            return CropOutcome(np.ascontiguousarray(crop[..., ::-1]), "detected")
        if self.fallback == "centre":
            crop = centre_crop(image, self.size, self.fallback_fraction)
            return CropOutcome(np.ascontiguousarray(crop[..., ::-1]), "centre_fallback")
        return CropOutcome(None, "no_face")


def detector_settings(detector: Detector) -> dict[str, Any]:
    """The settings that change what a detector finds (recorded in the cache, part of its fingerprint)."""
    thresholds = getattr(detector, "thresholds", None)
    return {"name": type(detector).__name__, "min_face_size": getattr(detector, "min_face_size", None),
            "thresholds": None if thresholds is None else list(thresholds),
            "scale_factor": getattr(detector, "scale_factor", None)}


def prepare(root: str | Path, out: str | Path, size: tuple[int, int] = (160, 160),
            template: np.ndarray | None = None, fallback: str = "centre", *,
            detector: Detector, fallback_fraction: float = 1.0,
            batch_size: int = 16, chunk_size: int = 256, limit: int | None = None,
            progress: bool = True) -> PrepareSummary:
    """Build (or resume, or just report) the crop cache of the image tree `root` in the folder `out`.

    `detector` finds the faces (the caller builds it, e.g. MTCNN(engine="torch"): the trainer imports only
    the kernel of pipeline/, docs/architecture.md).
    `limit` stops after that many more images (committed, not finalised): a re-run continues from there.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    root, out = Path(root), Path(out)
    tree = scan_tree(root)
    cropper = FaceCropper(detector, size, template, fallback, fallback_fraction)
    settings = {"template": cropper.template.round(4).tolist(),
                "detector": detector_settings(detector), "fallback": fallback,
                "fallback_fraction": fallback_fraction}
    if CropCache.is_complete(out):
        return _finished_summary(out, tree, cropper.size, settings)
    writer = CropCache.create(out, sources=tree.paths, labels=tree.labels, identities=tree.identities,
                              size=cropper.size, settings=settings, chunk_size=chunk_size)
    end = len(tree.paths) if limit is None else min(len(tree.paths), writer.next_source + limit)
    with tqdm(total=len(tree.paths), initial=writer.next_source, unit="img", desc=f"prepare {root.name}",
              disable=not progress) as bar:
        while writer.next_source < end:
            batch = tree.paths[writer.next_source:min(end, writer.next_source + batch_size)]
            _crop_batch(root, batch, cropper, writer)
            bar.update(len(batch))
    writer.commit()
    complete = writer.next_source == len(tree.paths)
    counts = writer.finalise({"root": str(root), "engine": getattr(detector, "engine", None)}).counts if complete else writer.counts
    summary = _summary(out, counts, complete)
    log.info("prepare %s -> %s: %s", root, out, summary)
    return summary


def _crop_batch(root: Path, batch: list[str], cropper: FaceCropper, writer: CropWriter) -> None:
    """Read a batch of images, crop the readable ones together, and add every outcome in source order."""
    from pipeline.core.images import read_image

    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, rel in enumerate(batch):
        try:
            images[i] = read_image(root / rel)
        except SourceError as exc:
            errors[i] = str(exc)
    outcomes = dict(zip(images, cropper.crop(list(images.values())), strict=True))
    for i in range(len(batch)):
        if i in errors:
            writer.add_failure("unreadable", errors[i])
        elif outcomes[i].crop is None:
            writer.add_failure("no_face", "no face detected")
        else:
            writer.add_crop(outcomes[i].crop, outcomes[i].status)


def _summary(out: Path, counts: dict[str, int], complete: bool) -> PrepareSummary:
    return PrepareSummary(out=str(out), images=counts["images"], processed=counts["processed"],
                          crops=counts["crops"], detected=counts["detected"], fallback=counts["centre_fallback"],
                          failed=counts["no_face"] + counts["unreadable"], no_face=counts["no_face"],
                          unreadable=counts["unreadable"], identities=counts["identities"], complete=complete)


def _finished_summary(out: Path, tree: ImageTree, size: tuple[int, int], settings: dict[str, Any]) -> PrepareSummary:
    cache = CropCache.open(out)
    expected = cache_fingerprint(tree.paths, tree.labels, tree.identities, size, settings)
    if cache.meta.get("fingerprint") != expected:
        raise ConfigError(f"{out} already holds a finished crop cache made from other images or settings; "
                          "delete it or choose another output folder")
    log.info("%s is already a finished crop cache of %d crops; nothing to do", out, len(cache))
    return _summary(out, cache.counts, True)
