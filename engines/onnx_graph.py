"""What an ONNX file says about itself, read before any backend loads it: input specs, float type, Q/DQ nodes.

engines.build decides from these how to build a TensorRT plan (precision comes from the ONNX since TensorRT 11).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from engines.base import TensorSpec
from pipeline.core.errors import EngineError

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def onnx_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Graph inputs that are not initializers, as TensorSpecs (symbolic or missing dims -> None)."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else None
            for d in tensor_type.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        specs.append(TensorSpec(value.name, dims, dtype))
    return specs


def onnx_float_dtype(specs: Sequence[TensorSpec]) -> np.dtype:
    """The float type of the model's float inputs (fp32 when none are float)."""
    floats = {spec.dtype for spec in specs if spec.dtype in FLOAT_DTYPES}
    if len(floats) > 1:
        raise EngineError(
            f"inputs mix float types {sorted(map(str, floats))}; cannot tell the model's precision"
        )
    return next(iter(floats), np.dtype(np.float32))


def onnx_has_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def onnx_compute_dtype(model: onnx.ModelProto) -> np.dtype:
    """The float type the graph computes in: fp16 when inputs, initializers or Casts carry FLOAT16, else fp32.

    An FP16 ONNX made with `keep_io_types=True` (trainer/precision.py) has float32 inputs and FLOAT16 weights
    behind Casts, so the inputs alone would call it fp32; a strongly typed TensorRT network would still run fp16.
    """
    half = onnx.TensorProto.FLOAT16
    inputs = onnx_float_dtype(onnx_input_specs(model))
    if inputs == np.float16:
        return inputs
    graph = model.graph
    if any(init.data_type == half for init in graph.initializer):
        return np.dtype(np.float16)
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute):
            return np.dtype(np.float16)
        if node.op_type == "Constant" and any(a.t.data_type == half for a in node.attribute if a.HasField("t")):
            return np.dtype(np.float16)
    return np.dtype(np.float32)
