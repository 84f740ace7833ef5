"""The static camera of `bench.cameras`: a still scene where, now and then, a face walks across.

    background: a frame of the meeting clip with every face the detector finds pixelated away, so the still
                scene itself holds nobody to recognise (people's bodies, a room: what a fixed camera sees)
    walkers:    real face photos (LFW, ../shared/data/lfw), the face region cut from the 250x250 photo and
                scaled to ~190 px high, pasted with a feathered oval edge; each crosses the frame from left to
                right in `walk_s` seconds, one walk at a time, at the times in `walks`
    noise:      light Gaussian sensor noise on every frame (a real still camera never repeats a frame exactly)

Written once under state/cameras/ (git-ignored) with cv2.VideoWriter (mp4v); nothing of ../shared/data is
copied into the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

SIZE = (1280, 720)
FPS = 25.0
SECONDS = 20.0
WALK_S = 4.0  # a person crossing a room; at 25 fps the face moves ~9 px a frame
WALKS = (4.0, 13.0)  # seconds into the scene where a walk starts; the rest of the time nothing moves
FACE_HEIGHT = 190  # px in the scene: well above the 50 px quality gate
NOISE_SIGMA = 2.0  # grey levels; far below motion gating's 12-level sensitivity


def face_cut(photo: np.ndarray, height: int = FACE_HEIGHT) -> np.ndarray:
    """The face region of an LFW photo (250x250, face centred), scaled to `height` px, BGR."""
    h, w = photo.shape[:2]
    top, bottom, left, right = int(0.22 * h), int(0.86 * h), int(0.26 * w), int(0.74 * w)
    region = photo[top:bottom, left:right]
    scale = height / region.shape[0]
    return cv2.resize(region, (max(1, round(region.shape[1] * scale)), height), interpolation=cv2.INTER_LINEAR)


def oval_mask(height: int, width: int) -> np.ndarray:
    """A feathered oval alpha (0..1, float32): the pasted face fades into the scene instead of a hard box."""
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (width // 2, height // 2), (int(width * 0.47), int(height * 0.48)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, width / 20))[..., None]


def hide_faces(image: np.ndarray, boxes: Sequence[Sequence[float]], block: int = 24) -> np.ndarray:
    """`image` with each box (x1, y1, x2, y2, grown by a quarter) pixelated into `block` px squares."""
    out = image.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in boxes:
        gx, gy = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
        a, b = max(0, int(x1 - gx)), max(0, int(y1 - gy))
        c, d = min(w, int(x2 + gx)), min(h, int(y2 + gy))
        if c - a < 2 or d - b < 2:
            continue
        small = cv2.resize(out[b:d, a:c], (max(1, (c - a) // block), max(1, (d - b) // block)),
                           interpolation=cv2.INTER_AREA)
        out[b:d, a:c] = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_NEAREST)
    return out


def walker_position(t: float, start: float, walk_s: float, frame_w: int, face_w: int) -> int | None:
    """Left edge (px) of a face walking left to right, `t` seconds into the scene; None when off screen."""
    progress = (t - start) / walk_s
    if not 0.0 <= progress <= 1.0:
        return None
    return round(-face_w + progress * (frame_w + face_w))


def scene_frame(background: np.ndarray, faces: Sequence[np.ndarray], t: float, walks: Sequence[float],
                walk_s: float, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The scene at `t` s: the background, the face of each walk under way pasted, sensor noise."""
    frame = background.astype(np.float32)
    h, w = frame.shape[:2]
    for k, start in enumerate(walks):
        face = faces[k % len(faces)]
        fh, fw = face.shape[:2]
        left = walker_position(t, start, walk_s, w, fw)
        if left is None:
            continue
        top = int(0.28 * h) + (k % 2) * int(0.12 * h)
        a, c = max(0, left), min(w, left + fw)
        if c <= a:
            continue
        alpha = oval_mask(fh, fw)[:, a - left:c - left]
        patch = face[:, a - left:c - left].astype(np.float32)
        frame[top:top + fh, a:c] = alpha * patch + (1 - alpha) * frame[top:top + fh, a:c]
    if noise > 0:
        frame += rng.normal(0.0, noise, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_scene(path: Path, background: np.ndarray, faces: Sequence[np.ndarray], seconds: float = SECONDS,
                fps: float = FPS, walks: Sequence[float] = WALKS, walk_s: float = WALK_S,
                noise: float = NOISE_SIGMA, seed: int = 0) -> Path:
    """Write the scene (mp4v, the background's size) to `path`: round(seconds * fps) frames."""
    if not faces:
        raise ValueError("write_scene needs at least one face photo")
    h, w = background.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial" + path.suffix)  # a killed run leaves no half video behind
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter cannot write {partial}")
    rng = np.random.default_rng(seed)
    try:
        for i in range(round(seconds * fps)):
            writer.write(scene_frame(background, faces, i / fps, walks, walk_s, rng, noise))
    finally:
        writer.release()
    partial.replace(path)
    return path


def static_scene_path(folder: Path, seconds: float = SECONDS, walk_s: float = WALK_S) -> Path:
    return folder / f"static_scene_{seconds:g}s_walk{walk_s:g}s.mp4"


def first_frame(clip: Path, size: tuple[int, int] = SIZE) -> np.ndarray:
    capture = cv2.VideoCapture(str(clip))
    ok, image = capture.read()
    capture.release()
    if not ok:
        raise OSError(f"cannot read a frame of {clip}")
    return cv2.resize(image, size) if (image.shape[1], image.shape[0]) != size else image


def build_static_scene(path: Path, clip: Path, photos: Sequence[Path],
                       find_faces: Callable[[np.ndarray], Sequence[Sequence[float]]], **scene) -> Path:
    """The static camera's video at `path`, built once: `clip`'s first frame with the faces `find_faces` returns
    hidden (twice: a pixelated face can still look like one), the `photos`' faces walking across."""
    if path.is_file():  # the file name carries the scene's settings (static_scene_path): a change rebuilds it
        return path
    background = first_frame(clip)
    for _ in range(2):
        boxes = find_faces(background)
        if len(boxes) == 0:
            break
        background = hide_faces(background, boxes)
    faces = []
    for photo in photos:
        image = cv2.imread(str(photo))
        if image is None:
            raise OSError(f"cannot read {photo}")
        faces.append(face_cut(image))
    return write_scene(path, background, faces, **scene)
