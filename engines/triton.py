"""Triton Inference Server: export a model repository for an embedder, and a `triton` engine that calls one.

    python -m engines.triton export --model models/facestream-default.json --repo triton_models [--plan x.plan]

writes `<repo>/<name>/config.pbtxt` and `<repo>/<name>/1/model.onnx` (platform `onnxruntime_onnx`) or, with
`--plan`, `<repo>/<name>/1/model.plan` (platform `tensorrt_plan`). Dims in the config leave out the batch
axis, which Triton adds itself when `max_batch_size > 0`; dynamic batching merges requests from several
cameras into one batch. The `triton` engine talks HTTP through `tritonclient.http`, an optional extra
imported only when such an engine is created.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import ClosingEngine, TensorSpec, empty_outputs, validate_feeds
from engines.registry import register_engine
from pipeline.core.errors import ConfigError, EngineError, EngineUnavailable, FacestreamError
from pipeline.core.logs import configure_logging
from pipeline.core.model_card import load_card, onnx_path

log = logging.getLogger(__name__)

# numpy dtype <-> Triton config `TYPE_*` and protocol datatype strings.
TRITON_TYPES: dict[np.dtype, tuple[str, str]] = {
    np.dtype(name): (f"TYPE_{wire}", wire)
    for name, wire in [("float32", "FP32"), ("float16", "FP16"), ("float64", "FP64"), ("int8", "INT8"),
                       ("uint8", "UINT8"), ("int32", "INT32"), ("int64", "INT64"), ("bool", "BOOL")]
}
DEFAULT_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 2000  # 2 ms: a camera frame is worth waiting that long for a fuller batch


@dataclass(frozen=True)
class TritonConfig:
    """What `config.pbtxt` says; `render` writes it, `parse_config` reads one back."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1

    def render(self) -> str:
        lines = [f'name: "{self.name}"', f'platform: "{self.platform}"', f"max_batch_size: {self.max_batch_size}"]
        for section, specs in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{section} [")
            lines.append(",\n".join(_tensor_block(spec) for spec in specs))
            lines.append("]")
        lines += ["dynamic_batching {",
                  f"  preferred_batch_size: [ {', '.join(str(b) for b in self.preferred_batch_sizes)} ]",
                  f"  max_queue_delay_microseconds: {self.max_queue_delay_us}",
                  "}",
                  "instance_group [",
                  f"  {{ count: {self.instance_count} kind: {self.instance_kind} }}",
                  "]"]
        return "\n".join(lines) + "\n"


def _tensor_block(spec: TensorSpec) -> str:
    # Triton prepends the batch axis itself; the rest must be fixed or -1 (dynamic).
    dims = ", ".join(str(d) if isinstance(d, int) and d >= 0 else "-1" for d in spec.shape[1:])
    return f'  {{\n    name: "{spec.name}"\n    data_type: {triton_type(spec.dtype)[0]}\n    dims: [ {dims} ]\n  }}'


def triton_type(dtype: np.dtype) -> tuple[str, str]:
    try:
        return TRITON_TYPES[np.dtype(dtype)]
    except KeyError:
        raise EngineError(f"dtype {dtype} has no Triton equivalent here; supported: "
                          f"{sorted(str(d) for d in TRITON_TYPES)}") from None


def preferred_batches(max_batch: int) -> tuple[int, ...]:
    """Powers of two from 4 up to `max_batch` (and `max_batch` itself): sizes TensorRT profiles tune for."""
    sizes = [b for b in (4, 8, 16, 32, 64, 128) if b <= max_batch]
    return tuple(sorted(set(sizes + [max_batch])))


def export_repository(card_path: str | Path, repo: str | Path, plan: str | Path | None = None,
                      max_batch: int = DEFAULT_MAX_BATCH, name: str | None = None,
                      instance_kind: str = "KIND_GPU") -> Path:
    """Write `<repo>/<name>/config.pbtxt` + `1/model.onnx|model.plan`; return the model folder."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    card_path = Path(card_path)
    card = load_card(card_path)
    model_file = onnx_path(card, card_path)
    inputs, outputs = _onnx_specs(model_file)
    name = name or card.model_id
    folder = Path(repo) / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    if plan is not None:
        plan = Path(plan)
        if not plan.is_file():
            raise ConfigError(f"TensorRT plan not found: {plan}")
        check_plan_batch(plan, max_batch)
        platform, target = "tensorrt_plan", version / "model.plan"
        shutil.copyfile(plan, target)
    else:
        platform, target = "onnxruntime_onnx", version / "model.onnx"
        copy_onnx(model_file, target)
    config = TritonConfig(name, platform, max_batch, inputs, outputs, preferred_batches(max_batch),
                          instance_kind=instance_kind)
    (folder / "config.pbtxt").write_text(config.render(), encoding="utf-8")
    # The card travels with the model so a client can check normalisation and fingerprint.
    shutil.copyfile(card_path, folder / "model_card.json")
    log.info("wrote Triton model %s (%s) to %s", name, platform, folder)
    return folder


def copy_onnx(source: Path, target: Path) -> None:
    """Copy an ONNX and every external-data file it names (paths relative to the ONNX, as the format says)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(source), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in _all_tensors(model.graph) if uses_external_data(t)}
    shutil.copyfile(source, target)
    for location in sorted(locations):
        relative = Path(location)
        if relative.is_absolute() or ".." in relative.parts:
            raise ConfigError(f"{source}: external data location {location!r} must stay beside the model")
        if not (source.parent / relative).is_file():
            raise ConfigError(f"{source}: external data file {location!r} is missing")
        (target.parent / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / relative, target.parent / relative)


def _all_tensors(graph):
    """Initializers and Constant-node tensors of `graph` and of its subgraphs (If/Loop bodies)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _all_tensors(sub)


def check_plan_batch(plan: Path, max_batch: int) -> None:
    """Refuse a plan whose optimisation profile stops below `max_batch`: Triton would send batches it cannot run.

    Needs TensorRT (on the GPU box that built the plan); without it the check is skipped with a warning.
    """
    from engines.build import import_tensorrt, trt_logger

    try:
        trt = import_tensorrt()
    except EngineError as exc:
        log.warning("cannot check %s against max_batch_size %d: %s", plan, max_batch, exc)
        return
    engine = trt.Runtime(trt_logger(trt)).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise ConfigError(f"TensorRT {trt.__version__} could not deserialize {plan}")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    plan_max = min(int(engine.get_tensor_profile_shape(n, 0)[2][0]) for n in inputs)
    if plan_max < max_batch:
        raise ConfigError(f"{plan} takes batches up to {plan_max} (its profile), below max_batch_size {max_batch}; "
                          f"rebuild it with --max-batch {max_batch} or export with --max-batch {plan_max}")


def _onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(path), load_external_data=False)
    initialisers = {init.name for init in model.graph.initializer}

    def specs(values) -> list[TensorSpec]:
        out = []
        for value in values:
            if value.name in initialisers:
                continue
            tensor = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
            out.append(TensorSpec(value.name, dims, tensor_dtype_to_np_dtype(tensor.elem_type)))
        return out

    return specs(model.graph.input), specs(model.graph.output)


def parse_config(text: str) -> dict[str, Any]:
    """Read back the subset of `config.pbtxt` that `TritonConfig.render` writes (for tests and checks)."""
    def scalar(key: str) -> str:
        match = re.search(rf"^{key}:\s*(\S+)", text, re.MULTILINE)
        if match is None:
            raise ConfigError(f"config.pbtxt has no {key}")
        return match.group(1).strip('"')

    def tensors(section: str) -> list[dict[str, Any]]:
        body = re.search(rf"^{section} \[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
        if body is None:
            return []
        return [{"name": n, "data_type": t, "dims": [int(d) for d in dims.replace(",", " ").split()]}
                for n, t, dims in re.findall(r'name: "([^"]+)"\s+data_type: (\w+)\s+dims: \[([^\]]*)\]', body.group(1))]

    batching = re.search(r"dynamic_batching \{(.*?)\}", text, re.DOTALL)
    preferred = re.search(r"preferred_batch_size: \[([^\]]*)\]", batching.group(1)) if batching else None
    delay = re.search(r"max_queue_delay_microseconds: (\d+)", batching.group(1)) if batching else None
    instance = re.search(r"count: (\d+) kind: (\w+)", text)
    return {
        "name": scalar("name"), "platform": scalar("platform"), "max_batch_size": int(scalar("max_batch_size")),
        "input": tensors("input"), "output": tensors("output"),
        "dynamic_batching": None if batching is None else {
            "preferred_batch_size": [int(b) for b in preferred.group(1).replace(",", " ").split()] if preferred else [],
            "max_queue_delay_microseconds": int(delay.group(1)) if delay else 0},
        "instance_group": None if instance is None else {"count": int(instance.group(1)), "kind": instance.group(2)},
    }


@register_engine("triton")
class TritonEngine(ClosingEngine):
    """A model served by Triton over HTTP; same contract as the local engines (numpy feeds in, dict out)."""

    name = "triton"

    def __init__(self, url: str, model_name: str, model_version: str = "", timeout_s: float = 10.0,
                 model_path: str | Path | None = None) -> None:
        # `model_path`: the local ONNX the served model was exported from, taken like every engine's (the card
        # travels with it); Triton serves its own copy, so it is not read here.
        client_module = _tritonclient()
        self.url, self.model_name, self.model_version = url, model_name, model_version
        self._http = client_module
        self._client = None
        host, ssl = split_url(url)
        try:
            self._client = client_module.InferenceServerClient(url=host, ssl=ssl, connection_timeout=timeout_s,
                                                               network_timeout=timeout_s)
            if not self._client.is_model_ready(model_name, model_version):
                raise EngineError(f"Triton at {url} has no ready model {model_name!r}")
            metadata = self._client.get_model_metadata(model_name, model_version)
            config = self._client.get_model_config(model_name, model_version)
        except EngineError:
            raise
        except Exception as exc:  # connection refused, HTTP errors, InferenceServerException
            raise EngineUnavailable(f"cannot reach Triton model {model_name!r} at {url}: {exc}") from exc
        self.inputs = [_spec_from_metadata(t) for t in metadata["inputs"]]
        self.outputs = [_spec_from_metadata(t) for t in metadata["outputs"]]
        # Triton refuses a request above max_batch_size rather than splitting it; 0 means the model does its
        # own batching (one request, whatever its size).
        self.max_batch_size = int(config.get("max_batch_size", 0))
        if self.max_batch_size < 0:
            raise EngineError(f"Triton model {model_name!r} reports max_batch_size {self.max_batch_size}")

    @classmethod
    def is_available(cls) -> bool:
        try:
            _tritonclient()
        except EngineError:
            return False
        return True

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._client is None:
            raise EngineError(f"engine for Triton model {self.model_name} is closed")
        batch = validate_feeds(self.inputs, feeds)
        if batch == 0:
            return empty_outputs(self.outputs)
        step = self.max_batch_size or batch
        chunks = [self._infer({name: array[start:start + step] for name, array in feeds.items()})
                  for start in range(0, batch, step)]
        if len(chunks) == 1:
            return chunks[0]
        return {spec.name: np.concatenate([c[spec.name] for c in chunks]) for spec in self.outputs}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        requests = []
        for spec in self.inputs:
            array = feeds[spec.name]
            request = self._http.InferInput(spec.name, list(array.shape), triton_type(spec.dtype)[1])
            request.set_data_from_numpy(array, binary_data=True)
            requests.append(request)
        wanted = [self._http.InferRequestedOutput(spec.name, binary_data=True) for spec in self.outputs]
        try:
            result = self._client.infer(self.model_name, requests, model_version=self.model_version, outputs=wanted)
        except Exception as exc:  # refused, timed out, or the server failed: it may answer again later
            raise EngineUnavailable(f"Triton inference failed for {self.model_name} at {self.url}: {exc}") from exc
        return {spec.name: result.as_numpy(spec.name) for spec in self.outputs}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None



def split_url(url: str) -> tuple[str, bool]:
    """`http://host:8000` -> ("host:8000", False), `https://...` -> (..., True): tritonclient wants no scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, False
    if scheme.lower() not in ("http", "https"):
        raise EngineError(f"Triton URL {url!r}: the triton engine speaks HTTP; use host:port, http:// or https://")
    if not rest or "/" in rest.rstrip("/"):
        raise EngineError(f"Triton URL {url!r} must be host:port, without a path")
    return rest.rstrip("/"), scheme.lower() == "https"


def _tritonclient():
    try:
        from tritonclient import http
    except ImportError as exc:
        raise EngineError("the triton engine needs the tritonclient package "
                          "(pip install 'tritonclient[http]'); it is not installed here") from exc
    return http


def _spec_from_metadata(tensor: dict[str, Any]) -> TensorSpec:
    wire = {wire: dtype for dtype, (_, wire) in TRITON_TYPES.items()}
    if tensor["datatype"] not in wire:
        raise EngineError(f"Triton tensor {tensor['name']!r} has unsupported datatype {tensor['datatype']}")
    shape = tuple(None if int(d) < 0 else int(d) for d in tensor["shape"])
    return TensorSpec(tensor["name"], shape, wire[tensor["datatype"]])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines.triton", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write a Triton model repository for a model card")
    p.add_argument("--model", type=Path, required=True, help="model card (.json)")
    p.add_argument("--repo", type=Path, required=True, help="model repository folder")
    p.add_argument("--plan", type=Path, default=None, help="serialised TensorRT engine to serve instead of ONNX")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    p.add_argument("--name", default=None, help="model name in the repository (default: the card's model_id)")
    p.add_argument("--instance-kind", default="KIND_GPU", choices=["KIND_GPU", "KIND_CPU"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("INFO")
    try:
        folder = export_repository(args.model, args.repo, args.plan, args.max_batch, args.name, args.instance_kind)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder / "config.pbtxt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
