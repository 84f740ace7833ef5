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
