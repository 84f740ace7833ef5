"""Reduced-precision copies of an exported embedder: FP16 and INT8 (Q/DQ) ONNX files with their own cards.

TensorRT 11 dropped the implicit FP16/INT8 builder flags and calibrators: a network's precision now comes
from the ONNX itself. So the conversion happens here, once, on the ONNX file:

- fp16: weights and activations in float16, graph inputs/outputs kept float32 (callers feed the same arrays);
- int8: QuantizeLinear/DequantizeLinear pairs from ONNX Runtime's static quantisation, per-channel weights,
  activation ranges calibrated on real aligned faces normalised exactly as the card says.

Calibration crops never come from the people of the validation folds (the card's `holdout_pairs` /
`holdout_folds`), so the accuracy measured on those folds is not flattered by calibrating on them.

    python -m trainer.precision int8 --model models/facestream-default.json --out models/int8
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engines import create_engine
from pipeline.core.errors import ConfigError, EngineError, FacestreamError
from pipeline.core.logs import configure_logging
from pipeline.core.model_card import ModelCard, fingerprint_file, load_card, onnx_path, save_card
from trainer.crops import CropCache
from trainer.pairs import read_pairs

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
DEFAULT_CALIBRATION = Path("state/crops/lfw150")
DEFAULT_CALIBRATION_SIZE = 512
CALIBRATION_BATCH = 16
CALIBRATION_SEED = 0


def normalise(crops_rgb: np.ndarray, card: ModelCard) -> np.ndarray:
    """(N, h, w, 3) uint8 RGB crops -> (N, 3, h, w) float32, exactly as `pipeline.recognise.embedder.Embedder` feeds them."""
    mean = np.asarray(card.mean, np.float32)
    std = np.asarray(card.std, np.float32)
    return np.ascontiguousarray(((crops_rgb.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))


def heldout_names(card: ModelCard, pairs_file: str | Path | None = None,
                  folds: list[int] | None = None) -> set[str]:
    """People of the card's validation folds (or of `pairs_file`/`folds` when given): never calibrated on."""
    data = card.training.get("data", {})
    pairs_file = pairs_file or data.get("holdout_pairs")
    folds = folds or data.get("holdout_folds")
    if not pairs_file or not folds:
        log.warning("model card %s names no held-out folds; calibrating on any identity", card.model_id)
        return set()
    pairs = read_pairs(pairs_file, images=".", folds=folds)
    return {path.parent.name for pair in pairs for path in (pair.first, pair.second)}


def calibration_crops(cache_dir: str | Path, size: int, exclude: set[str], seed: int = CALIBRATION_SEED,
                      input_size: tuple[int, int] | None = None) -> np.ndarray:
    """`size` crops drawn at random (fixed seed) from a crop cache, skipping identities in `exclude`."""
    cache = CropCache.open(cache_dir)
    if input_size is not None and tuple(cache.size) != tuple(input_size):
        raise ConfigError(f"calibration cache {cache_dir} holds {cache.size} crops; the model takes {input_size}")
    names = cache.identities
    allowed = np.array([name not in exclude for name in names], dtype=bool)
    candidates = np.flatnonzero(allowed[cache.labels])
    if len(candidates) < size:
        raise ConfigError(f"calibration cache {cache_dir} has {len(candidates)} crops outside the held-out "
                          f"identities; {size} requested")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, size=size, replace=False))
    log.info("calibrating on %d crops of %d identities (%d held-out identities excluded)", size,
             len(np.unique(cache.labels[chosen])), int((~allowed).sum()))
    return np.asarray(cache.crops[chosen])


class CropCalibrationReader:
    """ORT `CalibrationDataReader` over normalised crops, in batches of `batch_size`."""

    def __init__(self, inputs: np.ndarray, input_name: str, batch_size: int = CALIBRATION_BATCH):
        self.inputs = inputs
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[np.ndarray] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = iter([self.inputs[i:i + self.batch_size] for i in range(0, len(self.inputs), self.batch_size)])


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and activations, float32 graph I/O (ORT's own converter; no extra package)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types inserts Casts at the graph edges, so callers keep feeding float32 crops.
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(converted, str(dst))


def convert_int8(src: Path, dst: Path, inputs: np.ndarray, input_name: str) -> None:
    """Static Q/DQ INT8: per-channel symmetric weights, activation ranges from `inputs` (normalised crops)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        # Pre-processing folds the exporter's dynamic-shape subgraphs (Shape/Gather/Pad) and fuses what
        # can be fused, so Q/DQ lands around the convolutions rather than around shape arithmetic.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
        stem = input_convs(prepared, input_name)
        quantize_static(
            str(prepared), str(dst), CropCalibrationReader(inputs, input_name),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # The stem conv sees the raw normalised image: quantising it alone dropped the worst-case cosine
            # vs fp32 on held-out faces from 0.996 to 0.898 (mean 0.998 -> 0.987), for ~5% of the MACs.
            nodes_to_exclude=stem,
            # Symmetric activations put zero-point at 0, which TensorRT requires for its INT8 kernels.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )


def input_convs(path: Path, input_name: str) -> list[str]:
    """Names of the Conv nodes that read the graph input directly (kept in float by `convert_int8`)."""
    import onnx

    model = onnx.load(str(path))
    return [node.name for node in model.graph.node if node.op_type == "Conv" and input_name in node.input]


def verify_runs(path: Path, reference: Path, sample: np.ndarray) -> float:
    """Load `path` on ORT CPU, check it has `reference`'s I/O, run `sample`; return the worst cosine vs reference."""
    with create_engine("onnxruntime", model_path=reference, providers=["CPUExecutionProvider"]) as ref, \
            create_engine("onnxruntime", model_path=path, providers=["CPUExecutionProvider"]) as new:
        if [s.name for s in new.inputs] != [s.name for s in ref.inputs] or \
                [(s.name, s.dtype) for s in new.outputs] != [(s.name, s.dtype) for s in ref.outputs] or \
                new.inputs[0].dtype != ref.inputs[0].dtype:
            raise EngineError(f"{path} changed the model's I/O: {[s.describe() for s in new.inputs + new.outputs]} "
                              f"vs {[s.describe() for s in ref.inputs + ref.outputs]}")
        feeds = {ref.inputs[0].name: sample}
        out_name = ref.outputs[0].name
        a, b = ref.run(feeds)[out_name], new.run(feeds)[out_name]
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def convert(card_path: str | Path, precision: str, out_dir: str | Path,
            calibration: str | Path = DEFAULT_CALIBRATION,
            calibration_size: int = DEFAULT_CALIBRATION_SIZE) -> Path:
    """Write `<out_dir>/<stem>-<precision>.onnx` and its card; return the card's path."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    card_path = Path(card_path)
    card = load_card(card_path)
    src = onnx_path(card, card_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(card.onnx).stem
    dst = out_dir / f"{stem}-{precision}.onnx"
    input_name = _input_name(src)
    note: dict = {"precision": precision, "source_fingerprint": card.fingerprint, "source_onnx": card.onnx}
    if precision == "fp16":
        convert_fp16(src, dst)
        note["converter"] = "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"
        sample = normalise(calibration_crops(calibration, 32, heldout_names(card), input_size=card.input_size),
                           card)
    else:
        exclude = heldout_names(card)
        crops = calibration_crops(calibration, calibration_size, exclude, input_size=card.input_size)
        inputs = normalise(crops, card)
        convert_int8(src, dst, inputs, input_name)
        sample = inputs[:32]
        note.update({"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                     "per_channel": True, "symmetric": True, "float_nodes": "stem conv (reads the image)",
                     "calibration": {"cache": str(calibration), "crops": int(calibration_size),
                                                          "method": "MinMax", "seed": CALIBRATION_SEED,
                                                          "excluded_identities": len(exclude)}})
    worst = verify_runs(dst, src, sample)
    note["min_cosine_vs_fp32"] = round(worst, 5)
    log.info("%s written; worst cosine vs fp32 on %d crops: %.5f", dst, len(sample), worst)
    new_card = card.model_copy(update={
        "model_id": f"{card.model_id}-{precision}", "fingerprint": fingerprint_file(dst), "onnx": dst.name,
        "training": {**card.training, "precision": note},
        # The fp32 LFW numbers do not describe this file; keep them only as the source's, clearly labelled.
        "metrics": {"precision": precision, "source_metrics": card.metrics},
    })
    return save_card(new_card, out_dir / f"{stem}-{precision}.json")


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initialisers = {init.name for init in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initialisers]
    if len(names) != 1:
        raise EngineError(f"{path}: expected one graph input, got {names}")
    return names[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.precision", description=__doc__.split("\n")[0])
    parser.add_argument("precision", choices=PRECISIONS)
    parser.add_argument("--model", type=Path, required=True, help="model card (.json) of the fp32 model")
    parser.add_argument("--out", type=Path, required=True, help="folder for the converted ONNX and its card")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION, help="crop cache (int8)")
    parser.add_argument("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("INFO")
    try:
        card = convert(args.model, args.precision, args.out, args.calibration, args.calibration_size)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
