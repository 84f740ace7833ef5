"""The model card: the JSON sidecar that travels with every exported embedder ONNX file.

It carries what inference needs (input size, normalisation, alignment template, thresholds, test-time views)
and what a reader needs to trust the model (training data, command, metrics). The gallery stores
`fingerprint` and refuses templates from any other model, except the older models this one was trained to be
harmonic with (`harmonic_with`): their templates and this model's probes are comparable.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.errors import ConfigError

_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


class ScoreCohort(BaseModel):
    """Faces the model never trained on, against which a face's match score is normalised
    (pipeline/gallery/cohort.py): score = cosine - weight x (mean of the face's top-k cosines to the cohort -
    centre). Made by `trainer cohort`; its thresholds by `trainer calibrate` on other unseen people."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="(size, embedding_dim) float32 unit rows, .npy, relative to the card")
    sha256: str = Field(description="of the file, first 16 hex digits")
    size: int = Field(gt=0)
    k: int = Field(gt=0)
    weight: float = Field(gt=0, le=2)
    centre: float = Field(ge=-1, le=1, description="the cohort's own mean top-k cosine (leave one out)")
    people: str = ""
    # The match threshold curves of the normalised score: {FAR: threshold}, and per harmonic older model.
    thresholds: dict[str, float] = {}
    harmonic_thresholds: dict[str, dict[str, float]] = {}

    @model_validator(mode="after")
    def _k_within_cohort(self):
        if self.k > self.size:
            raise ValueError(f"cohort k ({self.k}) exceeds its size ({self.size})")
        return self


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: str
    fingerprint: str = Field(description="sha256 of the ONNX file, first 16 hex digits")
    architecture: str
    onnx: str = Field(description="ONNX file name, relative to the card")
    input_size: tuple[int, int] = Field(description="(height, width) of the aligned crop")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    embedding_dim: int = 128
    template: list[tuple[float, float]] = Field(description="5-point alignment template, crop pixels")
    # Similarity (cosine) thresholds keyed by false-accept rate, e.g. {"1e-3": 0.52}.
    thresholds: dict[str, float] = {}
    # Fingerprints of older models whose embeddings this one was trained to match (trainer `compat`).
    harmonic_with: list[str] = []
    # This model's faces against a harmonic model's templates score differently from against its own, so the
    # same FAR needs its own curve: {older fingerprint: {FAR: threshold}} (trainer calibrate --gallery-model).
    harmonic_thresholds: dict[str, dict[str, float]] = {}
    # Embed the crop and its mirror image and use their renormalised sum.
    flip_average: bool = False
    # Also embed the crop shifted by each (dx, dy) pixels (and its mirror image, with flip_average), and use the
    # renormalised sum of every view (pipeline.core.views): steadier against landmark jitter, at that many
    # times the embedder's cost.
    test_time_shifts: list[tuple[int, int]] = []
    # Cohort score normalisation for the live matcher (None: the matcher compares raw cosines with `thresholds`).
    cohort: ScoreCohort | None = None
    training: dict[str, Any] = {}
    metrics: dict[str, Any] = {}

    @field_validator("template")
    @classmethod
    def _five_points(cls, value):
        if len(value) != 5:
            raise ValueError(f"template must have 5 points, got {len(value)}")
        return value

    @field_validator("harmonic_with")
    @classmethod
    def _fingerprints(cls, value):
        bad = [f for f in value if not _FINGERPRINT.fullmatch(f)]
        if bad:
            raise ValueError(f"harmonic_with holds fingerprints (16 lowercase hex digits), got {bad}")
        return value

    @model_validator(mode="after")
    def _small_shifts(self):
        limit = min(self.input_size) // 8
        bad = [s for s in self.test_time_shifts if max(abs(s[0]), abs(s[1])) > limit or s == (0, 0)]
        if bad:
            raise ValueError(f"test_time_shifts are non-zero (dx, dy) of at most {limit} pixels "
                             f"(1/8 of the crop), got {bad}")
        return self

    @model_validator(mode="after")
    def _thresholds_of_harmonic_models(self):
        unknown = sorted((set(self.harmonic_thresholds) | set(self.cohort.harmonic_thresholds if self.cohort else {}))
                         - set(self.harmonic_with))
        if unknown:
            raise ValueError(f"harmonic_thresholds for models not in harmonic_with: {unknown}")
        return self

    def against(self, fingerprint: str | None) -> ModelCard:
        """This card as used on a gallery of the model `fingerprint`: for an older model it is harmonic with and
        has calibrated thresholds for, those thresholds replace its own."""
        if fingerprint == self.fingerprint or fingerprint not in self.harmonic_thresholds:
            return self
        return self.model_copy(update={"thresholds": self.harmonic_thresholds[fingerprint]})

    def matching(self, fingerprint: str | None, normalise: bool = True) -> ModelCard:
        """This card as the matcher uses it on a gallery of the model `fingerprint`: with a cohort (and
        `normalise`), its thresholds are the normalised score's (those calibrated against that harmonic model's
        templates when it has them); else `against(fingerprint)`."""
        if self.cohort is None or not normalise:
            return self.against(fingerprint)
        if not self.cohort.thresholds:
            raise ConfigError(f"model card {self.model_id} has a cohort without calibrated thresholds: run python -m "
                              "trainer calibrate --update-card on it, or set run.normalise: false")
        own = fingerprint == self.fingerprint or fingerprint not in self.cohort.harmonic_thresholds
        return self.model_copy(update={"thresholds": self.cohort.thresholds if own
                                       else self.cohort.harmonic_thresholds[fingerprint]})

    def accepts(self, fingerprint: str) -> bool:
        """Whether templates embedded by the model with this fingerprint can be compared with this model's."""
        return fingerprint == self.fingerprint or fingerprint in self.harmonic_with

    def threshold_at(self, far: str | float) -> float:
        key = far if isinstance(far, str) else f"{far:.0e}".replace("e-0", "e-")
        if key not in self.thresholds:
            raise ConfigError(f"model card {self.model_id} has no threshold for FAR {key}; "
                              f"it has {sorted(self.thresholds)}")
        return self.thresholds[key]


def fingerprint_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        card = ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read model card {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"invalid model card {path}: not a JSON text file (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid model card {path}: not JSON ({exc})") from None
    except ValidationError as exc:
        raise ConfigError(f"invalid model card {path}: {_one_line(exc)}") from None
    return card


def _one_line(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: the CLIs print errors as one line."""
    problems = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")


def onnx_path(card: ModelCard, card_path: str | Path) -> Path:
    return Path(card_path).parent / card.onnx


def save_card(card: ModelCard, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
