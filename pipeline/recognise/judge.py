"""Crop -> quality gate -> embed: the one way every caller (video stage, photos, enrolment) judges a face.

`FaceJudge(embedder, gates).judge(image, faces, i)` -> `Judged(crop, verdict)`: the embedder's aligned crop of
face `i` when it passed every gate (ready for `embed`), else None with the verdict saying why. With `evidence`
(`EvidenceGates`, the video path only) a face that fails the strict gates but passes the hard minimums keeps
its crop too, as weak evidence with its `weight` (strict faces weigh 1); enrolment and photos never use it.

The size gate comes first and needs no crop: on crowd video most faces are small background faces, and
aligning them only to reject them would cost a warp each. It is the very rule `QualityGates.check` applies, so
skipping the rest changes no verdict. The embedder's crop is reused for the sharpness gate only when it frames
the face as the gate's own template does (`crop_fits`, true of the default model); any other model's crop
would shift the sharpness measure, so the gates align their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.faces import Faces
from pipeline.core.protocols import Embedder
from pipeline.recognise.quality import (
    TOO_SMALL,
    EvidenceGates,
    QualityGates,
    QualityVerdict,
    crop_fits,
    face_px,
)


@dataclass(frozen=True)
class Judged:
    crop: np.ndarray | None  # aligned RGB crop (h, w, 3) uint8 of a face that passed; None when it failed
    verdict: QualityVerdict  # the strict gates'
    weight: float = 1.0  # 1: passed the strict gates; (0, 1): weak evidence (`EvidenceGates`); 0: rejected

    @property
    def ok(self) -> bool:
        """Passed the strict gates."""
        return self.verdict.ok

    @property
    def usable(self) -> bool:
        """Worth embedding: passed the strict gates, or the evidence minimums."""
        return self.crop is not None


class FaceJudge:
    """`judge(image_bgr, faces, i) -> Judged`; `embed(crops) -> (N, dim)` embeddings of the judged crops.

    `measure_rejected`: take every measure of a face even when the size gate already rejects it (enrolment
    reports them all); by default a face too small is rejected before any crop is made.
    """

    def __init__(self, embedder: Embedder, gates: QualityGates, *, measure_rejected: bool = False,
                 evidence: EvidenceGates | None = None):
        self.embedder, self.gates = embedder, gates
        self.measure_rejected = measure_rejected
        self.evidence = evidence
        self._size_floor = min(gates.min_face_px, evidence.min_face_px) if evidence else gates.min_face_px
        self._crop_fits_gates = crop_fits(embedder.template, embedder.size)

    def judge(self, image_bgr: np.ndarray, faces: Faces, index: int) -> Judged:
        px = face_px(faces.xyxy[index])
        if px < self._size_floor and not self.measure_rejected:
            return Judged(None, QualityVerdict(False, TOO_SMALL, {"face_px": px}), 0.0)
        crop = self.embedder.crops(image_bgr, faces[index])[0]
        verdict = self.gates.check(image_bgr, index, faces, crop if self._crop_fits_gates else None)
        if verdict.ok:
            return Judged(crop, verdict, 1.0)
        weight = self.evidence.weight(verdict.measures) if self.evidence is not None else 0.0
        return Judged(crop if weight > 0 else None, verdict, weight)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of crops that passed, in one batch (the engine's batching does the rest)."""
        return self.embedder.embed(np.stack(crops))
