"""Config files: pydantic sections that reject unknown keys, YAML files, `key.path=value` overrides.

Only entry points call `load_config`; they pass plain values down to the library. Unknown keys are
rejected with an error naming the key and the file, so a typo never silently falls back to a default.
Each program defines its own root model (`pipeline.app.config.AppConfig`, `trainer.config.TrainConfig`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def load_config(path: str | Path | None, overrides: Sequence[str] = (), *, model: type[M]) -> M:
    """Read `path` (YAML) into `model`, apply `a.b=value` overrides (values parsed as YAML)."""
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path, "config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        _apply_override(data, item)
        source += f" + {item}"
    return validate(model, data, source)


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's data (None when empty); ConfigError naming `what` and the file, and the line of bad YAML."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {path}: not a UTF-8 text file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {path}{_yaml_where(exc)}") from None


def validate(model: type[M], data: Any, source: str) -> M:
    """`data` as `model`; ConfigError naming each bad key of `source` (a file, a camera's stored settings)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`, line L column C: problem` from PyYAML's multi-line report (the CLIs print errors as one line)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{where}: {problem}"


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
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: the value is malformed YAML{_yaml_where(exc)}") from None


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
