"""ONNX export of P/R/O-Net (dynamic batch; P-Net also dynamic height and width) and its on-disk cache.

The cache folder holds `pnet.onnx`, `rnet.onnx`, `onet.onnx` and `mtcnn.json`, which records the sha256 of
the weight files they came from, the opset and the graph version; a missing file or a changed fingerprint
triggers a re-export, so upgrading facenet-pytorch's weights can never leave stale graphs behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from pipeline.core.errors import EngineError
from pipeline.detect.nets import NETS, load_net, weights_dir

log = logging.getLogger(__name__)

OPSET = 17
# Bump when the nets' graphs change without a weight change (2: PReLU as Relu/Mul/Add), so caches re-export.
GRAPH_VERSION = 2
INPUT_NAME = "input"
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "pnet": ("reg", "prob"),
    "rnet": ("reg", "prob"),
    "onet": ("reg", "landmarks", "prob"),
}
# Example input sizes for tracing; P-Net's spatial size is dynamic, so its example is arbitrary (>= 12).
EXAMPLE_SIZES = {"pnet": (40, 52), "rnet": (24, 24), "onet": (48, 48)}
DEFAULT_MODEL_DIR = Path("state/models/mtcnn")
MANIFEST = "mtcnn.json"


def weights_fingerprint() -> dict[str, str]:
    folder = weights_dir()
    return {name: hashlib.sha256((folder / f"{name}.pt").read_bytes()).hexdigest() for name in NETS}


def expected_manifest() -> dict:
    return {"opset": OPSET, "graph_version": GRAPH_VERSION, "weights_sha256": weights_fingerprint()}


def export_net(name: str, path: Path) -> Path:
    """Export one net to `path` (written atomically, so a concurrent reader never sees half a file)."""
    from torch.export import Dim

    net = load_net(name, "cpu")
    height, width = EXAMPLE_SIZES[name]
    dims = {0: Dim("batch", min=1)}
    if name == "pnet":
        dims |= {2: Dim("height", min=12), 3: Dim("width", min=12)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        # Batch 2 in the example so the exporter cannot specialise the batch axis to 1.
        torch.onnx.export(
            net, (torch.zeros(2, 3, height, width),), tmp, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES[name]), dynamic_shapes=(dims,), opset_version=OPSET,
            dynamo=True, external_data=False, verbose=False,
        )  # fmt: skip
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared by workers under other users
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many unrelated types; all mean "no model"
        Path(tmp).unlink(missing_ok=True)
        raise EngineError(f"ONNX export of MTCNN {name} to {path} failed: {exc}") from exc
    log.info("exported MTCNN %s to %s", name, path)
    return path


def export_onnx(out_dir: str | Path = DEFAULT_MODEL_DIR) -> dict[str, Path]:
    """Export all three nets to `out_dir` (overwriting) and write the manifest; returns name -> path."""
    out_dir = Path(out_dir)
    paths = {name: export_net(name, out_dir / f"{name}.onnx") for name in NETS}
    manifest = expected_manifest()
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return paths


def cached_onnx(model_dir: str | Path = DEFAULT_MODEL_DIR) -> dict[str, Path]:
    """The exported nets under `model_dir`, exporting them first if any is missing or stale."""
    model_dir = Path(model_dir)
    paths = {name: model_dir / f"{name}.onnx" for name in NETS}
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = None
    if manifest != expected_manifest():
        log.info("MTCNN ONNX cache at %s is missing or stale; exporting", model_dir)
        return export_onnx(model_dir)
    for name, path in paths.items():
        if not path.is_file() or path.stat().st_size == 0:
            log.info("MTCNN ONNX cache at %s lacks %s; exporting it", model_dir, path.name)
            export_net(name, path)
    return paths
