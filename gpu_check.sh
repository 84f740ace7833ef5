#!/usr/bin/env bash
# GPU check for every NVIDIA path, run on a lent H200 with the machine's own python and packages (our venv is
# not there and the machine reaches no package index; only pydantic's wheels are carried). Each path prints one JSON line:
#     {"path": "torch-cuda-fp16-graphs", "status": "ok", "faces_per_s": {"1": .., "16": .., "64": .., "256": ..},
#      "p50_ms": {...}, "parity_vs_ort_cpu": {"max_abs_diff": .., "min_cosine": ..}}
# or {"path": ..., "status": "skipped", "reason": "..."} for what the machine lacks (no CUDA, a wheel that does not
# import, a provider missing from the onnxruntime build or failing to load), or "status": "error" when a path that
# should run fails. Paths: torch-cuda FP16 with and without CUDA graphs, ORT CUDA EP, ORT TensorRT EP (FP16),
# TensorRT + pycuda (fp32, and fp16 on TensorRT 10), all against ORT CPU on the same 64 faces.
#
# Also: the real Embedder end to end on torch-cuda (uint8 crops in, mirror images and normalisation on the GPU via
# run_crops, and the same with the normalisation on the CPU), the network alone on device-resident input (fp16/bf16,
# NCHW/NHWC, CUDA events), and the host-to-device copy of a 256-face batch as float32 and as uint8.
#
# How it was run on an H200 (docs/gpu/, `python -m bench.gpu_report` summarises and plots it):
#   - the working tree that travels is capped at 64 MiB, so the two ONNX files the check does not use
#     (models/facestream-default-heldout.onnx, models/facestream-v1.onnx) were moved out for the call;
#   - weights come from the ONNX (the box has the onnx package); where it lacks it, carry a .pt made here with
#         .venv/bin/python -c "from engines.torch_cuda_engine import export_state_dict as e; \
#             from trainer.models import create_model; \
#             e('models/facestream-default.json', 'state/models/facestream-default.pt', create_model)"
#   - 64 real aligned crops travel in state/gpu_crops.npy (random faces otherwise), made with
#         .venv/bin/python -c "import numpy as np; np.save('state/gpu_crops.npy', \
#             np.load('state/crops/lfw150/crops.npy', mmap_mode='r')[:64])"
#   - the Embedder rows need pydantic (the card's schema), absent there: its wheels (pydantic, pydantic_core,
#     annotated-types, typing-inspection for cp312) travel in .whl/ and are installed to /tmp/site on PYTHONPATH;
#   - carry=["state/gpu_crops.npy", ".whl"]; command: GPU_CHECK_MIN_S=1 OUT=$OUT bash gpu_check.sh (~45 s).
# Without `onnx` the TensorRT path cannot build a plan (engines.build reads the ONNX's precision with it) and
# says so. PYTHON picks the interpreter (python3 there; `PYTHON=.venv/bin/python bash gpu_check.sh` here, where
# every GPU path reports skipped). GPU_CHECK_MIN_S: seconds timed per batch size (default 1).
# Output: $OUT/gpu_check.jsonl (also printed), $OUT/stderr.log, $OUT/nvidia-smi.csv.
set -euo pipefail
OUT="${OUT:-out/gpu_check}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout 540 "$PYTHON" - "$OUT" <<'PY' 2> "$OUT/stderr.log" | tee "$OUT/gpu_check.jsonl"
import importlib, importlib.util, json, os, sys, tempfile, time, traceback
from pathlib import Path
import numpy as np

out = Path(sys.argv[1])
card_path, onnx = Path("models/facestream-default.json"), Path("models/facestream-default.onnx")
card = json.loads(card_path.read_text())
weights = Path("state/models/facestream-default.pt")
crops_file = Path("state/gpu_crops.npy")
BATCHES, MIN_S = (1, 16, 64, 256), float(os.environ.get("GPU_CHECK_MIN_S", "1"))
crops = np.load(crops_file) if crops_file.is_file() else np.random.default_rng(0).uniform(0, 255, (256, 150, 150, 3))
x = ((crops.astype(np.float32) - np.float32(card["mean"])) / np.float32(card["std"])).transpose(0, 3, 1, 2)
x = np.ascontiguousarray(np.resize(x, (256, *x.shape[1:])))
trt_cache = Path(tempfile.gettempdir()) / "facestream-gpu-check"  # plans are GPU-local; nothing comes back

def emit(row):
    print(json.dumps(row), flush=True)

def version(module):
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception as exc:  # a wheel that is absent or broken: report, never stop
        return f"absent ({type(exc).__name__}: {exc})"

def timed(engine):
    name, rows = engine.inputs[0].name, {}
    for b in BATCHES:
        feeds = {name: x[:b]}
        engine.run(feeds); engine.run(feeds)
        times, start = [], time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < MIN_S:
            t0 = time.perf_counter(); engine.run(feeds); times.append(time.perf_counter() - t0)
        rows[b] = float(np.median(times))
    return {"faces_per_s": {str(b): round(b / t, 1) for b, t in rows.items()},
            "p50_ms": {str(b): round(t * 1000, 3) for b, t in rows.items()}}

def parity(got, ref):
    if ref is None:
        return {"skipped": "no ORT CPU reference (onnxruntime does not import here)"}
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    cos = np.sum(got * ref, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return {"max_abs_diff": float(np.abs(got - ref).max()), "min_cosine": float(cos.min())}

env = {"path": "environment", "python": sys.version.split()[0], "numpy": np.__version__,
       "faces": str(crops_file) if crops_file.is_file() else "random", "batches": list(BATCHES)}
for module in ("torch", "onnxruntime", "onnx", "tensorrt", "pycuda"):
    env[module] = version(module)
try:
    import torch
    env["cuda"], env["gpu"] = torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as exc:
    env["cuda"] = f"torch absent ({exc})"
try:
    import onnxruntime as ort
    env["ort_providers"] = ort.get_available_providers()
except Exception:
    ort = None
emit(env)

ref = None
def run_path(label, make, why_not=None):
    """One JSON line for one path: skipped (why_not(), or an EngineError while building), ok, or error."""
    global ref
    reason = why_not() if why_not else None
    if reason:
        return emit({"path": label, "status": "skipped", "reason": reason})
    from pipeline.core.errors import EngineError
    try:
        engine = make()
    except (EngineError, ImportError) as exc:  # what this machine lacks: libraries, providers, packages
        return emit({"path": label, "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"})
    try:
        row = {"path": label, "status": "ok", **timed(engine)}
        got = engine.run({engine.inputs[0].name: x[:64]})[engine.outputs[0].name]
        if label == "onnxruntime-cpu":
            ref = got
        else:
            row["parity_vs_ort_cpu"] = parity(got, ref)
        row["providers"] = getattr(engine, "providers", None)
        emit(row)
    except Exception as exc:
        emit({"path": label, "status": "error", "error": repr(exc), "trace": traceback.format_exc(limit=3)})
    finally:
        try:
            engine.close()
        except Exception as exc:
            emit({"path": label, "status": "error", "error": f"close: {exc!r}"})

def no_ort():
    return None if ort is not None else "onnxruntime does not import here"

def no_provider(provider):
    def why():
        if ort is None:
            return "onnxruntime does not import here"
        if provider not in ort.get_available_providers():
            return f"{provider} is not in this onnxruntime build ({ort.get_available_providers()}); needs onnxruntime-gpu"
        return None
    return why

def no_cuda():
    try:
        import torch
    except ImportError as exc:
        return f"torch does not import: {exc}"
    return None if torch.cuda.is_available() else "torch.cuda.is_available() is False (no NVIDIA GPU or driver)"

def no_weights():
    if weights.is_file() or version("onnx")[0].isdigit():
        return no_cuda()
    return f"neither {weights} (carry it) nor the onnx package to read the weights from the ONNX"

def no_trt(precision):
    def why():
        for module in ("tensorrt", "pycuda"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed here (the TensorRT path needs tensorrt and pycuda)"
        if not version("onnx")[0].isdigit():
            return "the onnx package is missing: engines.build reads the ONNX's precision with it to build a plan"
        if precision == "fp16":
            from engines.build import legacy_precision_api
            if not legacy_precision_api(version("tensorrt")):
                return "TensorRT 11 builds fp16 only from an fp16 ONNX (trainer/precision.py makes one); not shipped"
        return None
    return why

def torch_cuda(graphs, channels_last=True):
    from engines.torch_cuda_engine import TorchCudaEngine
    from trainer.models import create_model  # the architectures: engines/ never imports the trainer itself
    return TorchCudaEngine(onnx, create_model, weights=weights if weights.is_file() else None, cuda_graphs=graphs,
                           channels_last=channels_last)

def ort_engine(kind):
    if kind == "cpu":
        from engines.onnxruntime_engine import OnnxRuntimeEngine
        return OnnxRuntimeEngine(onnx, providers=["CPUExecutionProvider"])
    from engines.ort_gpu import OrtCudaEngine, OrtTensorRTEngine
    return OrtCudaEngine(onnx) if kind == "cuda" else OrtTensorRTEngine(onnx, cache_dir=trt_cache / "ort", max_batch=256)

def tensorrt(precision):
    from engines.tensorrt_engine import TensorRTEngine
    return TensorRTEngine(onnx, max_batch=256, precision=precision, cache_dir=trt_cache / "trt")

def embedder_end_to_end():
    """What the pipeline gets: pipeline.recognise.Embedder on torch-cuda, aligned uint8 crops in, the card's views
    (mirror image) and unit embeddings out, normalised on the GPU (run_crops) or, in the -cpu-normalise row, on
    the CPU. faces_per_s counts faces, not views; each call is one engine batch of all its faces' views."""
    if no_weights():
        return emit({"path": "embedder-torch-cuda", "status": "skipped", "reason": no_weights()})
    try:
        from pipeline.recognise.embedder import Embedder
        from trainer.models import create_model
    except ImportError as exc:  # pydantic (the card's schema) is not on a bare GPU box: carry its wheels
        return emit({"path": "embedder-torch-cuda", "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"})
    faces = np.ascontiguousarray(np.resize(crops, (256, *crops.shape[1:])).astype(np.uint8))
    views = (2 if card.get("flip_average") else 1) * (1 + len(card.get("test_time_shifts") or []))  # as views()
    for label, on_device in (("embedder-torch-cuda-end-to-end", True), ("embedder-torch-cuda-cpu-normalise", False)):
        try:
            rows = {}
            for b in BATCHES:
                embedder = Embedder(card_path, engine="torch-cuda", batch_size=views * b, create_model=create_model,
                                    weights=weights if weights.is_file() else None)
                embedder.device_preprocessing = on_device
                embedder.embed(faces[:b]); embedder.embed(faces[:b])
                times, start = [], time.perf_counter()
                while len(times) < 5 or time.perf_counter() - start < MIN_S:
                    t0 = time.perf_counter(); embedder.embed(faces[:b]); times.append(time.perf_counter() - t0)
                rows[b] = float(np.median(times))
                embedder.close()
            emit({"path": label, "status": "ok", "views_per_face": views,
                  "faces_per_s": {str(b): round(b / t, 1) for b, t in rows.items()},
                  "p50_ms": {str(b): round(t * 1000, 3) for b, t in rows.items()}})
        except Exception as exc:
            emit({"path": label, "status": "error", "error": repr(exc), "trace": traceback.format_exc(limit=3)})

def device_resident():
    """The network alone: input already on the GPU, CUDA-graph replays timed with CUDA events, for fp16 and bf16,
    NCHW and channels_last. Set against the engine rows, it says how much of a batch is the copy in and out."""
    if no_weights():
        return emit({"path": "torch-cuda-device-resident", "status": "skipped", "reason": no_weights()})
    import torch
    from engines.torch_cuda_engine import build_module
    from trainer.models import create_model
    module, _, _ = build_module(card_path, create_model, weights if weights.is_file() else None)
    torch.backends.cudnn.benchmark = True  # the best kernels for each fixed shape: these rows are the ceiling
    try:
        transfer = {}  # host->device copy of one 256-face batch from pinned memory: float32 NCHW vs the uint8 crops
        for name, host in (("float32_nchw", torch.from_numpy(x[:256])), ("uint8_nhwc", torch.from_numpy(
                np.ascontiguousarray(np.resize(crops, (256, *crops.shape[1:])).astype(np.uint8))))):
            host = host.pin_memory()
            host.to("cuda"); torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                host.to("cuda", non_blocking=True)
            torch.cuda.synchronize()
            transfer[name] = round((time.perf_counter() - t0) / 20 * 1000, 3)
        emit({"path": "host-to-device-copy-256", "status": "ok", "ms": transfer})
    except Exception as exc:
        emit({"path": "host-to-device-copy-256", "status": "error", "error": repr(exc)})
    for dtype in (torch.float16, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            label = f"torch-cuda-device-resident-{str(dtype).split('.')[-1]}-{'nhwc' if layout is torch.channels_last else 'nchw'}"
            try:
                net = create_model(card["architecture"]).eval()
                net.load_state_dict(module.state_dict())
                net = net.to("cuda", dtype).to(memory_format=layout)
                rows = {}
                for b in BATCHES:
                    static_in = torch.from_numpy(x[:b]).to("cuda", dtype).contiguous(memory_format=layout)
                    stream = torch.cuda.Stream(); stream.wait_stream(torch.cuda.current_stream())
                    with torch.inference_mode():
                        with torch.cuda.stream(stream):
                            for _ in range(3):
                                net(static_in)
                        torch.cuda.current_stream().wait_stream(stream)
                        graph = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(graph):
                            net(static_in)
                    reps = max(20, int(2000 / b))
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    graph.replay(); torch.cuda.synchronize()
                    start.record()
                    for _ in range(reps):
                        graph.replay()
                    end.record(); torch.cuda.synchronize()
                    rows[b] = start.elapsed_time(end) / 1000 / reps
                emit({"path": label, "status": "ok",
                      "faces_per_s": {str(b): round(b / t, 1) for b, t in rows.items()},
                      "mean_ms": {str(b): round(t * 1000, 3) for b, t in rows.items()}})
            except Exception as exc:
                emit({"path": label, "status": "error", "error": repr(exc), "trace": traceback.format_exc(limit=3)})

run_path("onnxruntime-cpu", lambda: ort_engine("cpu"), no_ort)
run_path("torch-cuda-fp16-graphs", lambda: torch_cuda(True), no_weights)
run_path("torch-cuda-fp16-graphs-nchw", lambda: torch_cuda(True, channels_last=False), no_weights)
run_path("torch-cuda-fp16-eager", lambda: torch_cuda(False), no_weights)
run_path("onnxruntime-cuda", lambda: ort_engine("cuda"), no_provider("CUDAExecutionProvider"))
run_path("onnxruntime-tensorrt-fp16", lambda: ort_engine("tensorrt"), no_provider("TensorrtExecutionProvider"))
run_path("tensorrt-fp32", lambda: tensorrt("fp32"), no_trt("fp32"))
run_path("tensorrt-fp16", lambda: tensorrt("fp16"), no_trt("fp16"))
embedder_end_to_end()
device_resident()
PY
