"""`trainer export`: a finished run -> ONNX (dynamic batch) + model card, checked torch vs ONNX Runtime."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engines import create_engine
from engines.base import TensorSpec
from engines.onnx_export import export_onnx
from pipeline.core.align import default_template
from pipeline.core.errors import EngineError
from pipeline.core.model_card import ModelCard, fingerprint_file, load_card, save_card
from pipeline.core.settings import load_config
from trainer.config import TrainConfig
from trainer.crops import CropCache
from trainer.models import create_model, model_preprocess

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4


def model_template(name: str) -> np.ndarray:
    """The 5-point template the model was trained with, in crop pixels."""
    if name == "dlib_resnet":
        from trainer.models.dlib_resnet import MTCNN_TEMPLATE_150

        return np.asarray(MTCNN_TEMPLATE_150, np.float32)
    return default_template(model_preprocess(name).input_size)


def load_run(run: Path) -> tuple[TrainConfig, torch.nn.Module]:
    cfg = load_config(run / "config.resolved.yaml", model=TrainConfig)
    model = create_model(cfg.model.name)
    model.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
    return cfg, model.eval()


def parity(model: torch.nn.Module, onnx: Path, batch: np.ndarray) -> float:
    """Max abs difference between torch and ONNX Runtime on `batch`; raises above the tolerance."""
    spec_in = [TensorSpec("image", (None, *batch.shape[1:]), np.float32)]
    spec_out = [TensorSpec("embedding", (None, 128), np.float32)]
    torch_out = create_engine("torch", module=model, inputs=spec_in, outputs=spec_out).run({"image": batch})
    with create_engine("onnxruntime", model_path=onnx) as ort:
        ort_out = ort.run({"image": batch})
    diff = float(np.abs(torch_out["embedding"] - ort_out["embedding"]).max())
    if diff > PARITY_TOLERANCE:
        raise EngineError(f"exported {onnx} disagrees with torch: max abs diff {diff:.2e} > {PARITY_TOLERANCE}")
    return diff


def harmonic_with(cfg: TrainConfig, summary: dict) -> dict | None:
    """{model_id, fingerprint} of the model the run was trained to stay compatible with, or None. The run's
    summary has it as trained; older runs name only the card, read now."""
    if cfg.compat.model is None:
        return None
    if "harmonic_with" in summary:
        return summary["harmonic_with"]
    old = load_card(cfg.compat.model)
    return {"model_id": old.model_id, "fingerprint": old.fingerprint}


def export(run: str | Path, out: str | Path, model_id: str | None = None, metrics: dict | None = None,
           thresholds: dict | None = None, flip_average: bool = False,
           test_time_shifts: Sequence[tuple[int, int]] = ()) -> Path:
    """Write `out` (.onnx) and its card (.json beside it); returns the card's path. A run trained with a
    compatibility term (`compat.model`) is harmonic with that model: the card lists its fingerprint."""
    run, out = Path(run), Path(out)
    cfg, model = load_run(run)
    prep = model_preprocess(cfg.model.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, *prep.input_size)
    export_onnx(model, (example,), out, input_names=["image"], output_names=["embedding"],
                dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
    cache = CropCache.open(cfg.data.cache)
    crops = cache.crops[: min(16, len(cache))].astype(np.float32)
    batch = np.ascontiguousarray(((crops - prep.mean) / prep.std).transpose(0, 3, 1, 2)).astype(np.float32)
    diff = parity(model, out, batch)
    summary_path = run / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    harmonic = harmonic_with(cfg, summary)
    card = ModelCard(
        model_id=model_id or out.stem, fingerprint=fingerprint_file(out), architecture=cfg.model.name,
        onnx=out.name, input_size=prep.input_size, mean=prep.mean, std=prep.std,
        template=[tuple(map(float, p)) for p in model_template(cfg.model.name)],
        thresholds=thresholds or {}, harmonic_with=[harmonic["fingerprint"]] if harmonic else [],
        flip_average=flip_average, test_time_shifts=list(test_time_shifts),
        training={"data": {"cache": str(cfg.data.cache), **cache.counts,
                           "holdout_pairs": str(cfg.data.holdout_pairs) if cfg.data.holdout_pairs else None,
                           "holdout_folds": cfg.data.holdout_folds},
                  "init": cfg.model.init, "margin": cfg.mining.margin,
                  "distillation": cfg.distill.model_dump() if cfg.distill.enabled else None,
                  "memory": cfg.memory.model_dump() if cfg.memory.enabled else None,
                  "compat": {**cfg.compat.model_dump(mode="json"), **harmonic} if harmonic else None,
                  **summary,
                  "export_command": shlex.join(["python", "-m", "trainer", *sys.argv[1:]])},
        metrics={**(metrics or {}), "export_parity_max_abs_diff": diff},
    )
    log.info("exported %s (fingerprint %s), torch vs ORT max abs diff %.2e", out, card.fingerprint, diff)
    return save_card(card, out.with_suffix(".json"))
