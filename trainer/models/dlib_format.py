"""Reader for a dlib DNN saved with `dlib::serialize(net, out)` (e.g. dlib's face-recognition ResNet `.dat`).

No dlib needed: this follows dlib's documented encodings (dlib/serialize.h, dlib/dnn/tensor.h, core.h and each
layer's serialize() in layers.h, input.h, loss.h):

- integers: one control byte (low 4 bits: byte count, 0x80: negative, 0x70: must be 0), then the magnitude
  little-endian; floats and doubles: an integer mantissa and an integer exponent (value = m * 2**e, with
  exponents 32000/32001/32002 for +inf/-inf/nan); bools: the ASCII bytes '1'/'0'; strings: a length, then bytes.
- tensors: version 2, (num_samples, k, nr, nc), then raw little-endian float32; alias tensors (views into a
  layer's params): version 1 and the four dimensions only.
- the network itself is not self-describing: each wrapper (`add_loss_layer`, `add_layer`, `add_tag_layer`,
  `add_skip_layer`) writes a version and then its sub-network *before* its own layer, so a file reads as the
  versions of every wrapper from the loss inwards, then the input layer, then each layer's details from the
  input outwards. The caller therefore passes the wrapper kinds (`structure`); the layers' details start
  with a version string ("con_4", "affine_", ...) that identifies and checks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.core.errors import EngineError

# Wrapper kinds the caller lists, outermost first. "tag<N>"/"skip<N>" carry their id, which dlib keeps in the
# C++ type only, so the caller knows it and the file does not.
LOSS, LAYER = "loss", "layer"

_FLOAT_SPECIALS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_MAX_STRING = 1 << 16  # dlib's version strings are short; a huge length means the bytes are not a dlib net


@dataclass(frozen=True)
class DlibLayer:
    """One layer of a dlib net, in forward order: its kind, scalar settings and float32 arrays."""

    kind: str  # input_rgb_image_sized, con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip, loss_metric
    attrs: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class _Stream:
    """Cursor over the file's bytes; every read names what it wanted when the bytes run out or look wrong."""

    def __init__(self, data: bytes, source: str):
        self.data = memoryview(data)
        self.pos = 0
        self.source = source
        self.where = "network header"

    def fail(self, problem: str) -> EngineError:
        return EngineError(f"{self.source}: not a readable dlib network: {problem} at byte {self.pos} ({self.where})")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends while reading {what} ({n} bytes needed, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.fail(f"byte 0x{control:02x} is not a dlib integer control byte while reading {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"{what} uses dlib's pre-2013 ASCII float format, which this reader does not support")
        mantissa, exponent = self.int(what), self.int(what)
        if exponent in _FLOAT_SPECIALS:
            return _FLOAT_SPECIALS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self, what: str) -> bool:
        byte = self.take(1, what)[0]
        if byte not in (ord("0"), ord("1")):
            raise self.fail(f"byte 0x{byte:02x} is not a dlib bool ('0' or '1') while reading {what}")
        return byte == ord("1")

    def string(self, what: str) -> str:
        size = self.int(what)
        if not 0 <= size <= _MAX_STRING:
            raise self.fail(f"implausible string length {size} while reading {what}")
        raw = bytes(self.take(size, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII bytes {raw[:16]!r} while reading {what}") from None

    def version(self, what: str, allowed: Sequence[int]) -> int:
        version = self.int(f"{what} version")
        if version not in allowed:
            raise self.fail(f"{what} version {version}, expected one of {list(allowed)}")
        return version

    def tensor(self, what: str) -> np.ndarray:
        self.version(f"tensor {what}", (2,))
        shape = tuple(self.int(f"tensor {what} dims") for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative tensor dims {shape} for {what}")
        count = math.prod(shape)
        raw = self.take(4 * count, f"{count} floats of tensor {what}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version(f"alias tensor {what}", (1,))
        return tuple(self.int(f"alias tensor {what} dims") for _ in range(4))


# ---- layer details, each keyed by the version string its serialize() writes first -------------------------


def _input_rgb_image_sized(s: _Stream, version: str) -> DlibLayer:
    mean = tuple(s.float(f"average {c}") for c in ("red", "green", "blue"))
    return DlibLayer("input_rgb_image_sized", {"mean_rgb": mean, "size": (s.int("rows"), s.int("cols"))})


def _con(s: _Stream, version: str) -> DlibLayer:
    params = s.tensor("params").reshape(-1)
    attrs = {"num_filters": s.int("num_filters"), "kernel": (s.int("nr"), s.int("nc"))}
    attrs["stride"] = (s.int("stride_y"), s.int("stride_x"))
    attrs["padding"] = (s.int("padding_y"), s.int("padding_x"))
    filters, biases = s.alias("filters"), s.alias("biases")
    for name in ("learning_rate_mult", "weight_decay_mult", "bias_learning_rate_mult", "bias_weight_decay_mult"):
        attrs[name] = s.float(name)
    use_bias = s.bool("use_bias") if version in ("con_5", "con_6") else True
    if version == "con_6" and s.bool("use_relu"):
        raise s.fail("con_ with a fused relu (use_relu) is not supported")
    n_weights, n_bias = math.prod(filters), math.prod(biases) if use_bias else 0
    if params.size != n_weights + n_bias:
        raise s.fail(f"con_ params hold {params.size} floats, filters {filters} + biases {biases} need {n_weights + n_bias}")
    arrays = {"weight": params[:n_weights].reshape(filters)}
    if n_bias:
        arrays["bias"] = params[n_weights:]
    return DlibLayer("con", attrs, arrays)


def _affine(s: _Stream, version: str) -> DlibLayer:
    params = s.tensor("params").reshape(-1)
    gamma, beta = s.alias("gamma"), s.alias("beta")
    mode = s.int("mode")
    n = math.prod(gamma)
    if math.prod(beta) != n or params.size != 2 * n:
        raise s.fail(f"affine_ params hold {params.size} floats for gamma {gamma} and beta {beta}")
    return DlibLayer("affine", {"mode": mode, "shape": gamma}, {"gamma": params[:n], "beta": params[n:]})


def _pool(kind: str) -> Callable[[_Stream, str], DlibLayer]:
    def read(s: _Stream, version: str) -> DlibLayer:
        attrs = {"kernel": (s.int("nr"), s.int("nc")), "stride": (s.int("stride_y"), s.int("stride_x"))}
        attrs["padding"] = (s.int("padding_y"), s.int("padding_x"))
        return DlibLayer(kind, attrs)  # kernel (0, 0): the whole input ("avg_pool_everything")

    return read


def _fc(s: _Stream, version: str) -> DlibLayer:
    num_outputs, num_inputs = s.int("num_outputs"), s.int("num_inputs")
    params = s.tensor("params").reshape(-1)
    weights, biases = s.alias("weights"), s.alias("biases")
    attrs = {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": s.int("bias_mode")}
    for name in ("learning_rate_mult", "weight_decay_mult", "bias_learning_rate_mult", "bias_weight_decay_mult"):
        attrs[name] = s.float(name)
    n_weights = num_inputs * num_outputs
    n_bias = math.prod(biases)
    if math.prod(weights) != n_weights or params.size != n_weights + n_bias:
        raise s.fail(f"fc_ params hold {params.size} floats for weights {weights} and biases {biases}")
    # dlib computes output = input @ W with W stored (num_inputs, num_outputs), row-major.
    arrays = {"weight": params[:n_weights].reshape(num_inputs, num_outputs)}
    if n_bias:
        arrays["bias"] = params[n_weights:]
    return DlibLayer("fc", attrs, arrays)


def _loss_metric(s: _Stream, version: str) -> DlibLayer:
    return DlibLayer("loss_metric", {"margin": s.float("margin"), "distance_threshold": s.float("dist_thresh")})


def _no_settings(kind: str) -> Callable[[_Stream, str], DlibLayer]:
    return lambda s, version: DlibLayer(kind)


_READERS: dict[str, Callable[[_Stream, str], DlibLayer]] = {
    "input_rgb_image_sized": _input_rgb_image_sized,
    "con_4": _con, "con_5": _con, "con_6": _con,
    "affine_": _affine,
    "relu_": _no_settings("relu"),
    "add_prev_": _no_settings("add_prev"),
    "max_pool_2": _pool("max_pool"),
    "avg_pool_2": _pool("avg_pool"),
    "fc_2": _fc,
    "loss_metric_2": _loss_metric,
}  # fmt: skip


def _details(s: _Stream) -> DlibLayer:
    version = s.string("layer version string")
    reader = _READERS.get(version)
    if reader is None:
        raise s.fail(f"layer type {version!r} is not supported (supported: {', '.join(sorted(_READERS))})")
    s.where = f"{s.where}: {version}"
    return reader(s, version)


def _layer_trailer(s: _Stream, version: int, over_input: bool) -> None:
    """Skip add_layer's training state (flags, cached outputs and gradients; empty in a cleaned net)."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        s.bool(name)
    s.tensor("x_grad")
    s.tensor("cached_output")
    if over_input:
        s.tensor("grad_final")
        if version >= 3:
            s.int("sample_expansion_factor")
    elif version >= 2:
        s.tensor("params_grad")


def read_dlib_net(data: bytes, structure: Sequence[str], source: str = "<bytes>") -> list[DlibLayer]:
    """Parse a serialised dlib net into its layers in forward order (input first, loss last).

    `structure` lists the net's wrappers from the loss inwards, as its C++ type nests them: "loss", "layer"
    (add_layer), "tag<N>", "skip<N>". The innermost must be the add_layer that sits on the input layer.
    """
    if not structure or structure[-1] != LAYER:
        raise EngineError("a dlib net structure must end with the add_layer on top of the input layer")
    s = _Stream(data, source)
    loss: list[DlibLayer] = []
    versions: list[int] = []
    for depth, kind in enumerate(structure):
        s.where = f"wrapper {depth} ({kind})"
        innermost = depth == len(structure) - 1
        if kind == LOSS:
            versions.append(s.version("add_loss_layer", (1,)))
            loss.append(_details(s))  # the loss details precede its sub-network
        elif kind == LAYER:
            versions.append(s.version("add_layer", (2, 3) if innermost else (1, 2)))
        elif kind.startswith(("tag", "skip")):
            versions.append(s.version(kind, (1,)))
        else:
            raise EngineError(f"unknown dlib wrapper kind {kind!r} in structure at position {depth}")
    s.where = "input layer"
    layers = [_details(s)]
    for depth in range(len(structure) - 1, -1, -1):
        kind = structure[depth]
        s.where = f"wrapper {depth} ({kind})"
        if kind == LAYER:
            layers.append(_details(s))
            _layer_trailer(s, versions[depth], over_input=depth == len(structure) - 1)
        elif kind != LOSS:
            name = kind.rstrip("0123456789")
            layers.append(DlibLayer(name, {"id": int(kind[len(name) :])}))
    if s.pos != len(s.data):
        s.where = "end of network"
        raise s.fail(f"{len(s.data) - s.pos} unexpected bytes after the network")
    return layers + loss


def read_dlib_net_file(path: str | Path, structure: Sequence[str]) -> list[DlibLayer]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read dlib model file {path}: {exc.strerror}") from None
    return read_dlib_net(data, structure, source=str(path))
