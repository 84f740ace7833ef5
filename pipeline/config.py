"""Validated configuration: pydantic models, YAML files in configs/, `key.path=value` overrides.

Only entry points call `load_config`; they pass plain values down to the library. Unknown keys are
rejected with an error naming the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisConfig(Section):
    # None: the embedded server kept under `state_dir` (started on first use). Otherwise any
    # redis:// or rediss:// URL, with user/password if the server wants them; used as is.
    url: str | None = None
    state_dir: Path = Path("state")


class EngineConfig(Section):
    name: Literal["auto", "onnxruntime", "torch"] = "onnxruntime"
    # ONNX Runtime providers in order of preference; None: the best the machine has.
    providers: list[str] | None = None
    # ORT silently runs on CPU when a requested provider fails; we refuse that unless allowed.
    allow_fallback: bool = False
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = library default")


class DetectorConfig(Section):
    min_face_size: int = Field(20, ge=8)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = Field(0.709, gt=0.1, lt=1.0)
    # ONNX Runtime on one thread is the fastest CPU path measured (bench/detect.py); torch is the oracle.
    engine: Literal["torch", "onnxruntime"] = "onnxruntime"
    threads: int = Field(1, ge=0, description="intra-op threads; 1 beats 2 on a 2-core machine under load")
    pyramid: Literal["area", "octave", "fast"] = "area"
    # Larger frames are detected on a downscaled copy: phone photos (4000 px) would cost seconds each.
    max_side: int | None = Field(1280, ge=48)


class QualityConfig(Section):
    """Gate thresholds; defaults calibrated on the shared test photos (see the module's calibration notes)."""

    min_face_px: int = Field(50, ge=0, description="shorter side of the detector's box, px")
    min_sharpness: float = Field(30.0, ge=0, description="variance of the Laplacian, 112 px crop")
    max_yaw: float = Field(45.0, gt=0, le=90, description="degrees, landmark estimate")
    max_pitch: float = Field(35.0, gt=0, le=90, description="degrees, landmark estimate")
    min_score: float = Field(0.93, ge=0, le=1, description="detector confidence")


class DemoConfig(Section):
    inputs: list[Path] = []
    output_dir: Path = Path("out/demo")


class AppConfig(Section):
    redis: RedisConfig = RedisConfig()
    engine: EngineConfig = EngineConfig()
    detector: DetectorConfig = DetectorConfig()
    quality: QualityConfig = QualityConfig()
    demo: DemoConfig = DemoConfig()


def load_config(path: str | Path | None = None, overrides: list[str] = (), model: type[BaseModel] = AppConfig):
    """Read `path` (YAML) into `model`, apply `a.b=value` overrides (values parsed as YAML)."""
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"malformed YAML in {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        _apply_override(data, item)
        source += f" + {item}"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' in {source}")
        else:
            lines.append(f"invalid value for '{key}' in {source}: {err['msg']}")
    return "; ".join(lines)


def save_resolved(config: BaseModel, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the config actually used next to the outputs it produced."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    target.write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False), encoding="utf-8")
    return target
