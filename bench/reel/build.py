"""Render the reel (OpenCV VideoWriter, mp4v, 1280x720 at 25 fps) and its ground truth (JSON beside it).

Each actor is its LFW photo under a feathered ellipse around the face, scaled and moved by a similarity
transform; its ground-truth box is the photo's MTCNN face box mapped through that same transform, so it is
the box a perfect detector would report. `visible` is the share of that box not covered by actors in front
or by an occluding rectangle; boxes with visible < VISIBLE_MIN are "don't care" in the scores (nobody can
recognise a face that is not there, and nobody should be blamed for still tracking it).

truth.json: {"fps", "width", "height", "frames", "seed", "people": [...], "shots": [...],
             "boxes": [[{"appearance", "name", "enrolled", "box": [x1, y1, x2, y2], "visible"}, ...] per frame],
             "description": {...}}
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np

from bench.reel.cast import FaceBoxes, Person, choose_cast
from bench.reel.plan import FPS, HEIGHT, WIDTH, Actor, Shot, plan_reel
from bench.reel.scenes import describe
from pipeline.core.errors import SourceError

FEATHER = 15  # px (source photo) of the ellipse's soft edge
BACKGROUND_CORNER = 80  # px: the blurred-photo background is this corner of an LFW photo (its backdrop, no face)
REEL_VERSION = 2  # bump when the rendering or the plan changes: cached reels are keyed by it


class Renderer:
    """Frames of the reel, shot by shot; caches each photo and its ellipse mask."""

    def __init__(self):
        self._photos: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        self._backgrounds: dict[tuple, np.ndarray] = {}

    def frame(self, shot: Shot, k: int) -> tuple[np.ndarray, list[dict]]:
        """Frame `k` of `shot` and its ground-truth boxes (paste order)."""
        image = self.background(shot.background).copy()
        t = k / max(shot.frames - 1, 1)
        layers = [self._paste(image, actor, t) for actor in shot.actors]
        cover = np.zeros((HEIGHT, WIDTH), np.float32)
        for actor, (box, _, _) in zip(shot.actors, layers):
            if actor.occluded and actor.occluded[0] <= k < actor.occluded[1]:
                x1, y1, x2, y2 = _grow(box, 1.3)
                image[y1:y2, x1:x2] = actor.occluder
                cover[y1:y2, x1:x2] = 1.0
        visible = [0.0] * len(layers)
        for i in reversed(range(len(layers))):  # front to back
            box, roi, alpha = layers[i]
            visible[i] = _visible(cover, box)
            if roi is not None:
                x0, y0, x1, y1 = roi
                np.maximum(cover[y0:y1, x0:x1], alpha, out=cover[y0:y1, x0:x1])
        truth = [{"appearance": a.appearance, "name": a.name, "enrolled": a.enrolled,
                  "box": [round(c, 1) for c in box], "visible": round(seen, 3)}
                 for a, (box, _, _), seen in zip(shot.actors, layers, visible)]
        return image, truth

    def background(self, spec: tuple) -> np.ndarray:
        if spec not in self._backgrounds:
            if spec[0] == "plain":
                image = np.full((HEIGHT, WIDTH, 3), spec[1], np.uint8)
            else:
                corner = cv2.imread(str(spec[1]))[:BACKGROUND_CORNER, :BACKGROUND_CORNER]
                image = cv2.GaussianBlur(cv2.resize(corner, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), (0, 0), 12)
            self._backgrounds[spec] = image
        return self._backgrounds[spec]

    def _photo(self, actor: Actor) -> tuple[np.ndarray, np.ndarray]:
        if actor.photo not in self._photos:
            image = cv2.imread(str(actor.photo))
            x1, y1, x2, y2 = actor.face_box
            w, h = x2 - x1, y2 - y1
            mask = np.zeros(image.shape[:2], np.float32)
            centre = (round((x1 + x2) / 2), round((y1 + y2) / 2 - 0.08 * h))
            cv2.ellipse(mask, centre, (round(0.78 * w), round(0.95 * h)), 0, 0, 360, 1.0, -1)
            self._photos[actor.photo] = image, cv2.GaussianBlur(mask, (0, 0), FEATHER / 2)
        return self._photos[actor.photo]

    def _paste(self, image: np.ndarray, actor: Actor, t: float):
        """Blend the actor in; (face box in the frame, pasted region or None, its alpha)."""
        photo, mask = self._photo(actor)
        cx, cy, face = actor.motion.at(t)
        x1, y1, x2, y2 = actor.face_box
        s = face / (x2 - x1)
        tx, ty = cx - s * (x1 + x2) / 2, cy - s * (y1 + y2) / 2
        box = (s * x1 + tx, s * y1 + ty, s * x2 + tx, s * y2 + ty)
        h, w = photo.shape[:2]
        rx0, ry0 = max(int(np.floor(tx)), 0), max(int(np.floor(ty)), 0)
        rx1, ry1 = min(int(np.ceil(tx + s * w)), WIDTH), min(int(np.ceil(ty + s * h)), HEIGHT)
        if rx1 <= rx0 or ry1 <= ry0:
            return box, None, None
        matrix = np.float32([[s, 0, tx - rx0], [0, s, ty - ry0]])
        size = (rx1 - rx0, ry1 - ry0)
        patch = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR)
        roi = image[ry0:ry1, rx0:rx1].astype(np.float32)
        a = alpha[..., None]
        image[ry0:ry1, rx0:rx1] = np.clip(roi * (1 - a) + patch * a + 0.5, 0, 255).astype(np.uint8)
        return box, (rx0, ry0, rx1, ry1), alpha


def _grow(box, factor: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, factor * (x2 - x1) / 2, factor * (y2 - y1) / 2
    return (max(int(cx - hw), 0), max(int(cy - hh), 0), min(int(cx + hw), WIDTH), min(int(cy + hh), HEIGHT))


def _visible(cover: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, WIDTH), min(y2, HEIGHT)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    return float(1.0 - cover[y1:y2, x1:x2].mean())


def write_reel(shots: list[Shot], video: Path) -> list[list[dict]]:
    """Encode every frame to `video`; the ground-truth boxes of each frame."""
    video.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SourceError(f"OpenCV cannot write {video} (mp4v)")
    renderer, boxes = Renderer(), []
    try:
        for shot in shots:
            for k in range(shot.frames):
                image, truth = renderer.frame(shot, k)
                writer.write(image)
                boxes.append(truth)
    finally:
        writer.release()
    return boxes


def shot_dict(shot: Shot, root: Path) -> dict:
    return {"index": shot.index, "kind": shot.kind, "start": shot.start, "frames": shot.frames,
            "background": shot.background[0],
            "actors": [{"appearance": a.appearance, "name": a.name, "enrolled": a.enrolled,
                        "photo": str(a.photo.relative_to(root)), "occluded": list(a.occluded) if a.occluded else None}
                       for a in shot.actors]}


def build_reel(cast: list[Person], shots: list[Shot], folder: Path, seed: int, lfw: Path) -> dict:
    """`folder/reel.mp4` and `folder/truth.json`; the truth."""
    boxes = write_reel(shots, folder / "reel.mp4")
    shot_dicts = [shot_dict(s, lfw) for s in shots]
    truth = {"fps": FPS, "width": WIDTH, "height": HEIGHT, "frames": len(boxes), "seed": seed,
             "people": [p.as_dict(lfw) for p in cast], "shots": shot_dicts, "boxes": boxes}
    truth["description"] = describe(truth)
    (folder / "truth.json").write_text(json.dumps(truth, separators=(",", ":")) + "\n", encoding="utf-8")
    return truth


def background_photos(lfw: Path, cast: list[Person], seed: int, count: int = 24) -> list[Path]:
    """Photos of people outside the cast (only a corner of each is shown, blurred)."""
    taken = {p.folder for p in cast}
    folders = sorted(d.name for d in (lfw / "images").iterdir() if d.is_dir() and d.name not in taken)
    chosen = random.Random(seed).sample(folders, min(count, len(folders)))
    return [min((lfw / "images" / f).glob("*.jpg")) for f in sorted(chosen)]


def reel_folder(state: Path, seed: int, enrolled: int, singles: int, seconds: float) -> Path:
    return state / f"v{REEL_VERSION}-seed{seed}-people{enrolled}-singles{singles}-{seconds:g}s"


def ensure_reel(lfw: Path, state: Path, seed: int, enrolled: int, singles: int, seconds: float) -> tuple[Path, dict]:
    """The reel's folder and truth: built once per (seed, people, length), then read from `state`."""
    folder = reel_folder(state, seed, enrolled, singles, seconds)
    if (folder / "truth.json").is_file() and (folder / "reel.mp4").is_file():
        return folder, json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    boxes = FaceBoxes(state / "face_boxes.json", _photo_detector)
    try:
        cast = choose_cast(lfw, enrolled, singles, seed, boxes)
    finally:
        boxes.save()
    shots = plan_reel(cast, seconds, seed, background_photos(lfw, cast, seed))
    folder.mkdir(parents=True, exist_ok=True)
    return folder, build_reel(cast, shots, folder, seed, lfw)


def _photo_detector():
    from pipeline.app.config import load_app_config
    from pipeline.app.services import make_detector

    return make_detector(load_app_config(None))
