"""Who is in the reel: LFW people the default model never saw, half of them enrolled, and where each photo's face is.

Never seen in training (models/MODEL_CARD.md): everyone in folds 6 and 7 of `pairs_shared_folds.txt`, and
every person with a single image (training used identities with 2+ images). People of those folds with 3+
images are drawn with the seed; the first half are enrolled (one photo each that the reel never shows), the
other half are strangers; single-image people of the "benchmark" half (trainer.calibration.half_of: the
other half set the open-set thresholds) are extra strangers.

Each reel photo's face box comes from the project's MTCNN (the same detector run.py uses), run once per photo
and cached in `state/reel/face_boxes.json`: the box nearest the centre of the 250x250 deep-funneled image.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import SourceError
from trainer.calibration import half_of
from trainer.pairs import read_pairs

UNSEEN_FOLDS = (6, 7)
MIN_IMAGES = 3  # one to enrol, at least two for the reel (alternated across shots)
REEL_PHOTOS = 4  # at most this many reel photos per person (keeps the one-off MTCNN pass short)
CENTRE_TOLERANCE = 40.0  # px: a photo whose nearest face centre is further from (125, 125) is not used


@dataclass(frozen=True)
class Person:
    """One person of the reel: `photos` are the reel's (each with its face box), `enrol_photo` only if enrolled."""

    name: str  # as shown on screen and stored in the gallery ("Abdullah Gul")
    folder: str  # LFW folder name ("Abdullah_Gul")
    enrolled: bool
    single_image: bool
    photos: tuple[Path, ...]
    boxes: tuple[tuple[float, float, float, float], ...]  # face box of each photo, source pixels
    enrol_photo: Path | None = None

    def as_dict(self, root: Path) -> dict:
        return {"name": self.name, "enrolled": self.enrolled, "single_image": self.single_image,
                "photos": [str(p.relative_to(root)) for p in self.photos],
                "enrol_photo": str(self.enrol_photo.relative_to(root)) if self.enrol_photo else None}


def unseen_fold_people(pairs_file: Path, images: Path) -> list[str]:
    """Folder names of everyone in the unseen folds, in file order."""
    pairs = read_pairs(pairs_file, images, folds=UNSEEN_FOLDS)
    return list(dict.fromkeys(n for p in pairs for n in (p.first.parent.name, p.second.parent.name)))


def image_files(images: Path, folder: str) -> list[Path]:
    return sorted((images / folder).glob("*.jpg"))


def single_image_people(images: Path) -> list[str]:
    """One-image people of the benchmark half (the calibration half chose the thresholds: not unseen material)."""
    return sorted(d.name for d in images.iterdir()
                  if d.is_dir() and half_of(d.name) == "benchmark" and len(image_files(images, d.name)) == 1)


def choose_cast(lfw: Path, enrolled: int, singles: int, seed: int, face_box) -> list[Person]:
    """`enrolled` known people, as many fold strangers, `singles` single-image strangers; deterministic in `seed`.

    `face_box(path) -> (x1, y1, x2, y2) | None` locates the face of a reel photo; photos without one are skipped,
    and so is a person left with fewer than two reel photos (one for a stranger with a single image).
    """
    images = lfw / "images"
    rng = random.Random(seed)
    fold = [n for n in unseen_fold_people(lfw / "pairs_shared_folds.txt", images)
            if len(image_files(images, n)) >= MIN_IMAGES]
    rng.shuffle(fold)
    cast: list[Person] = []
    for folder in fold:
        known = sum(p.enrolled for p in cast) < enrolled
        if not known and len(cast) >= 2 * enrolled:
            break
        files = image_files(images, folder)
        enrol_photo = rng.choice(files)
        person = _person(folder, [f for f in files if f != enrol_photo], face_box, rng, known, 2,
                         enrol_photo if known else None)
        if person is not None:
            cast.append(person)
    if len(cast) < 2 * enrolled:
        raise SourceError(f"only {len(cast)} usable people with {MIN_IMAGES}+ images in folds {UNSEEN_FOLDS}; "
                          f"{2 * enrolled} needed for {enrolled} enrolled")
    pool = single_image_people(images)
    rng.shuffle(pool)
    for folder in pool:
        if sum(p.single_image for p in cast) >= singles:
            break
        person = _person(folder, image_files(images, folder), face_box, rng, False, 1, None)
        if person is not None:
            cast.append(person)
    return cast


def _person(folder: str, files: list[Path], face_box, rng: random.Random, enrolled: bool, needed: int,
            enrol_photo: Path | None) -> Person | None:
    picked = sorted(rng.sample(files, min(REEL_PHOTOS, len(files))))
    found = [(f, face_box(f)) for f in picked]
    found = [(f, b) for f, b in found if b is not None]
    if len(found) < needed:
        return None
    return Person(folder.replace("_", " "), folder, enrolled, needed == 1, tuple(f for f, _ in found),
                  tuple(b for _, b in found), enrol_photo)


class FaceBoxes:
    """`boxes(path)`: the MTCNN face box nearest the photo's centre, cached in a JSON file keyed by path."""

    def __init__(self, cache: Path, detector_factory):
        self.cache = cache
        self._make_detector = detector_factory
        self._detector = None
        self._known: dict[str, list[float] | None] = (json.loads(cache.read_text()) if cache.is_file() else {})
        self._dirty = False

    def __call__(self, path: Path) -> tuple[float, float, float, float] | None:
        key = f"{path.parent.name}/{path.name}"
        if key not in self._known:
            self._known[key] = self._detect(path)
            self._dirty = True
        box = self._known[key]
        return None if box is None else tuple(box)

    def _detect(self, path: Path) -> list[float] | None:
        from pipeline.core.images import read_image

        if self._detector is None:
            self._detector = self._make_detector()
        image = read_image(path)
        faces = self._detector.detect_one(image)
        centre = (image.shape[1] / 2, image.shape[0] / 2)
        best, best_distance = None, CENTRE_TOLERANCE
        for x1, y1, x2, y2 in faces.xyxy.tolist():
            distance = ((x1 + x2) / 2 - centre[0]) ** 2 + ((y1 + y2) / 2 - centre[1]) ** 2
            if distance ** 0.5 <= best_distance:
                best, best_distance = [round(v, 2) for v in (x1, y1, x2, y2)], distance ** 0.5
        return best

    def save(self) -> None:
        if self._dirty:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.cache.write_text(json.dumps(self._known, indent=0, sort_keys=True) + "\n")
            self._dirty = False
