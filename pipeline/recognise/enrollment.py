"""Enrollment: turning photos, folders and videos of one person into accepted templates, with a reason for
every input that was not accepted. The library side of `enroll.py`; it neither prints nor writes Redis.

Each input (an image, or a sampled frame of a video) is accepted with one template or rejected with one of
REJECTIONS or a quality-gate reason (`pipeline.recognise.quality.REASONS`). The subject of a photo is its only face that
is big and confident enough (`QualityGates.candidates`); with `largest=True` the largest such face.

Each accepted face also keeps the embedder's aligned crop, as a JPEG (`crop_jpeg`, quality CROP_QUALITY at the
embedder's own size): the gallery stores it with the template, so templates can be re-embedded when the model
changes, and the console can show what was enrolled.

A video is sampled (one frame in `video_every`, `video_max_frames` at most) and its accepted frames are
candidates: `video_templates` of them are kept (0: all), chosen by `pick_diverse`: the best by `face_quality` first,
then each time the one farthest from those kept, never a near-duplicate of one. Every other accepted frame gets one
of SKIPS as its reason, so a video's outcomes still count every sampled frame.

A template id is the sha256 of the file's bytes (+ ":<frame>" for a video frame), so enrolling the same file
twice, under any name or path, is recognised by the gallery as a duplicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.errors import SourceError
from pipeline.core.faces import Faces
from pipeline.core.images import VIDEO_SUFFIXES, read_image
from pipeline.core.inputs import expand_inputs, find_files
from pipeline.core.protocols import Detector, Embedder
from pipeline.gallery.names import validate_name
from pipeline.recognise.diverse import DUPLICATE_ABOVE, pick_diverse
from pipeline.recognise.judge import FaceJudge
from pipeline.recognise.quality import QualityGates, face_quality

log = logging.getLogger(__name__)

UNREADABLE = "unreadable or not an image"
NO_FACE = "no face"
SEVERAL_FACES = "several faces (use --largest)"
REJECTIONS = (UNREADABLE, NO_FACE, SEVERAL_FACES)
# An accepted video frame not kept as a template (see `pick_diverse`).
SIMILAR_FRAME = "similar to a kept frame"
NOT_DIVERSE = "not among the most diverse frames"
SKIPS = (SIMILAR_FRAME, NOT_DIVERSE)

# Candidate frames: one in VIDEO_EVERY (a sixth of a second at 30 fps), VIDEO_MAX_FRAMES at most (10 s at 30 fps);
# VIDEO_TEMPLATES of the accepted ones are kept (README "Enrolling from a video": measured spread and coverage).
VIDEO_EVERY = 5
VIDEO_MAX_FRAMES = 60
VIDEO_TEMPLATES = 5
DETECT_BATCH = 8  # video frames per detector call (same size, so they share P-Net calls)
# JPEG quality of a kept enrolment crop: ~8 kB at 150 px; re-embedding the decoded JPEG lands within 0.001 cosine
# of the template (23 faces of ../shared/data: mean 0.0005; quality 80 doubles it, 95 costs 40% more bytes).
CROP_QUALITY = 90


@dataclass(frozen=True)
class Outcome:
    """What became of one input: accepted (`template_id` set) or rejected (`reason` set)."""

    path: str
    frame: int | None = None  # video frame number; None for a still image
    template_id: str | None = None
    reason: str | None = None
    detail: str | None = None  # e.g. the SourceError message behind UNREADABLE
    measures: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.template_id is not None

    @property
    def where(self) -> str:
        return self.path if self.frame is None else f"{self.path}#{self.frame}"

    def as_dict(self) -> dict:
        return {"path": self.path, "frame": self.frame, "accepted": self.accepted, "template_id": self.template_id,
                "reason": self.reason, "detail": self.detail, "measures": self.measures}


@dataclass
class EnrollmentReport:
    """Every outcome, and the templates of the accepted ones (rows of `embeddings` match `template_ids`, and so
    do `crop_jpegs`: each template's aligned crop as a JPEG, None where none was kept)."""

    outcomes: list[Outcome] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    template_ids: list[str] = field(default_factory=list)
    crop_jpegs: list[bytes | None] = field(default_factory=list)

    @property
    def accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.accepted]

    @property
    def rejected(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.accepted]

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(o.reason for o in self.rejected).most_common())

    def matrix(self) -> np.ndarray:
        """(n, dim) float32 templates of the accepted inputs."""
        return np.stack(self.embeddings).astype(np.float32) if self.embeddings else np.zeros((0, 0), np.float32)

    def crops(self) -> list[bytes | None]:
        """The JPEG of each accepted face's aligned crop, parallel to `template_ids` (GalleryStore.add's `crops`)."""
        return list(self.crop_jpegs)

    def accept(self, outcome: Outcome, embedding: np.ndarray, crop_jpeg: bytes | None = None) -> None:
        self.outcomes.append(outcome)
        self.embeddings.append(embedding)
        self.template_ids.append(outcome.template_id)
        self.crop_jpegs.append(crop_jpeg)


def crop_jpeg(crop_rgb: np.ndarray, quality: int = CROP_QUALITY) -> bytes:
    """An aligned RGB crop (h, w, 3) uint8 as JPEG bytes, at its own size."""
    image = np.asarray(crop_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SourceError(f"an aligned crop must be an (h, w, 3) uint8 image, got {image.dtype} {image.shape}")
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise SourceError(f"could not JPEG-encode an aligned crop of shape {image.shape}")
    return data.tobytes()


def tree_identities(root: str | Path) -> dict[str, list[Path]]:
    """`root/<name>/...` -> {name: files}: one identity per sub-folder, every name validated first."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"--tree root {root} is not a folder")
    # find_files, not expand_inputs: an identity folder with nothing usable is reported as skipped, not fatal.
    people = {validate_name(d.name): find_files(d) for d in sorted(root.iterdir()) if d.is_dir()}
    loose = [p.name for p in root.iterdir() if p.is_file()]
    if loose:
        log.warning("ignoring %d file(s) directly in %s (only sub-folders are identities): %s",
                    len(loose), root, ", ".join(sorted(loose)[:5]))
    if not people:
        raise SourceError(f"--tree root {root} has no sub-folders (one per identity)")
    return people


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Enroller:
    """Judges and embeds the faces of inputs; `collect` is the one-call form."""

    def __init__(self, detector: Detector, embedder: Embedder, gates: QualityGates, largest: bool = False,
                 video_every: int = VIDEO_EVERY, video_max_frames: int = VIDEO_MAX_FRAMES,
                 video_templates: int = VIDEO_TEMPLATES):
        if video_every < 1 or video_max_frames < 1:
            raise SourceError(f"video_every and video_max_frames must be >= 1, got {video_every}, "
                              f"{video_max_frames}")
        if isinstance(video_templates, bool) or not isinstance(video_templates, (int, np.integer)) \
                or video_templates < 0:
            raise SourceError(f"video_templates must be an integer >= 0 (0 keeps every accepted frame), "
                              f"got {video_templates!r}")
        self.detector, self.embedder, self.gates = detector, embedder, gates
        self.largest = largest
        # Every measure of every rejection goes into the report, even of a face too small to embed.
        self._judge = FaceJudge(embedder, gates, measure_rejected=True)
        self.video_every, self.video_max_frames = video_every, video_max_frames
        self.video_templates = int(video_templates)

    def add_file(self, path: Path, report: EnrollmentReport) -> None:
        """Judge `path` (an image, or a video by extension) and append its outcome(s) to `report`."""
        try:
            digest = file_digest(path)
            if path.suffix.lower() in VIDEO_SUFFIXES:
                self._add_video(path, digest, report)
            else:
                image = read_image(path)
                self._add_image(path, image, digest, None, self.detector.detect_one(image), report)
        except SourceError as exc:
            report.outcomes.append(Outcome(str(path), reason=UNREADABLE, detail=str(exc)))
        except OSError as exc:  # unreadable file (permissions, vanished): same reason as read_image gives
            report.outcomes.append(Outcome(str(path), reason=UNREADABLE, detail=f"cannot read {path}: {exc}"))

    def _add_image(self, path: Path, image: np.ndarray, digest: str, frame: int | None,
                   faces: Faces, report: EnrollmentReport) -> None:
        template_id = digest if frame is None else f"{digest}:{frame}"
        where = dict(path=str(path), frame=frame)
        if not len(faces):
            report.outcomes.append(Outcome(**where, reason=NO_FACE))
            return
        subject = self._subject(faces)
        if subject is None:
            report.outcomes.append(Outcome(**where, reason=SEVERAL_FACES,
                                           detail=f"{len(self.gates.candidates(faces))} faces"))
            return
        judged = self._judge.judge(image, faces, subject)
        if not judged.ok:
            report.outcomes.append(Outcome(**where, reason=judged.verdict.reason, measures=judged.verdict.measures))
            return
        embedding = self._judge.embed([judged.crop])[0]
        report.accept(Outcome(**where, template_id=template_id, measures=judged.verdict.measures), embedding,
                      crop_jpeg(judged.crop))

    def _subject(self, faces: Faces) -> int | None:
        """The face to judge: the only candidate, the largest with `largest`, None if several are left.

        With no candidate the largest face is judged, so the rejection names why it is not one.
        """
        candidates = self.gates.candidates(faces)
        if len(candidates) == 1 or (len(candidates) > 1 and self.largest):
            return int(candidates[0])
        if len(candidates) > 1:
            return None
        return int(np.argmax(faces.area))

    def _add_video(self, path: Path, digest: str, report: EnrollmentReport) -> None:
        candidates = EnrollmentReport()
        batch: list[tuple[int, np.ndarray]] = []
        for number, frame in self._sampled_frames(path):
            batch.append((number, frame))
            if len(batch) == DETECT_BATCH:
                self._judge_frames(path, digest, batch, candidates)
                batch = []
        if batch:
            self._judge_frames(path, digest, batch, candidates)
        self._keep_diverse(candidates, report)

    def _keep_diverse(self, candidates: EnrollmentReport, report: EnrollmentReport) -> None:
        """Move a video's outcomes into `report` in frame order, accepting only the `video_templates` chosen."""
        matrix = candidates.matrix()
        if self.video_templates == 0 or len(matrix) <= 1:
            chosen = list(range(len(matrix)))
        else:
            quality = np.array([face_quality(o.measures) for o in candidates.accepted])
            chosen = pick_diverse(matrix, quality, self.video_templates)
        kept = set(chosen)
        row = 0  # the accepted outcomes are the rows of `matrix`, in order
        for outcome in candidates.outcomes:
            if not outcome.accepted:
                report.outcomes.append(outcome)
                continue
            if row in kept:
                report.accept(outcome, candidates.embeddings[row], candidates.crop_jpegs[row])
            else:
                report.outcomes.append(skipped(outcome, matrix, row, chosen, candidates.accepted))
            row += 1

    def _judge_frames(self, path: Path, digest: str, batch: list[tuple[int, np.ndarray]],
                      report: EnrollmentReport) -> None:
        found = self.detector.detect([frame for _, frame in batch])
        for (number, frame), faces in zip(batch, found, strict=True):
            self._add_image(path, frame, digest, number, faces, report)

    def _sampled_frames(self, path: Path) -> Iterator[tuple[int, np.ndarray]]:
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise SourceError(f"cannot open video {path}: not a decodable video")
            number, sampled = 0, 0
            while sampled < self.video_max_frames:
                if number % self.video_every == 0:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    sampled += 1
                    yield number, np.ascontiguousarray(frame)
                elif not capture.grab():  # grab without decoding to pixels: skipped frames cost little
                    break
                number += 1
            if sampled == 0:
                raise SourceError(f"cannot read video {path}: no frame could be decoded")
        finally:
            capture.release()


def skipped(outcome: Outcome, matrix: np.ndarray, row: int, chosen: list[int], accepted: list[Outcome]) -> Outcome:
    """Accepted video frame `row` of `matrix` not among the `chosen` rows: why, and the kept frame nearest to it."""
    cosines = matrix[chosen] @ matrix[row]
    nearest = int(np.argmax(cosines))
    reason = SIMILAR_FRAME if cosines[nearest] >= DUPLICATE_ABOVE else NOT_DIVERSE
    detail = (f"cosine {cosines[nearest]:.3f} to frame {accepted[chosen[nearest]].frame}; "
              f"{len(chosen)} of {len(matrix)} accepted frames kept")
    return dataclasses.replace(outcome, template_id=None, reason=reason, detail=detail)


def collect(inputs: Sequence[str | Path], detector, embedder: Embedder, gates: QualityGates, largest: bool = False,
            video_every: int = VIDEO_EVERY, video_max_frames: int = VIDEO_MAX_FRAMES,
            video_templates: int = VIDEO_TEMPLATES,
            on_file: Callable[[Path], None] | None = None) -> EnrollmentReport:
    """Judge every image and video under `inputs` (files or folders); `on_file(path)` after each file."""
    enroller = Enroller(detector, embedder, gates, largest, video_every, video_max_frames, video_templates)
    report = EnrollmentReport()
    for path in expand_inputs(inputs):
        enroller.add_file(path, report)
        if on_file is not None:
            on_file(path)
    return report
