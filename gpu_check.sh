#!/usr/bin/env bash
# GPU check for the torch-cuda engine, run on a lent H200 with the machine's own python and torch (our venv is
# not there, and the machine reaches no package index, so nothing is installed).
#
# Decision: weights travel as a .pt state dict made here, because the GPU box may lack the `onnx` package:
#     .venv/bin/python -c "from engines.torch_cuda_engine import export_state_dict as e; \
#         from trainer.models import create_model; \
#         e('models/facestream-default.json', 'state/models/facestream-default.pt', create_model)"
# then run with carry=["state/models/facestream-default.pt", "state/gpu_crops.npy"] (the crops are optional:
# random faces otherwise; the whole crop cache is ~680 MB, over the carry limit, so 256 real crops travel in
# state/gpu_crops.npy: make it with
#     .venv/bin/python -c "import numpy as np; np.save('state/gpu_crops.npy', np.load('state/crops/lfw150/crops.npy', mmap_mode='r')[:256])"
# ). ORT-CPU is timed only if onnxruntime imports there. Output: $OUT/gpu_check.json (also printed).
set -euo pipefail
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
PYTHONPATH=. timeout 540 python3 - "$OUT" <<'PY' 2> "$OUT/stderr.log" | tee "$OUT/gpu_check.json"
import json, sys, time
from pathlib import Path
import numpy as np, torch
from engines.torch_cuda_engine import TorchCudaEngine, read_card
from trainer.models import create_model  # the architectures: engines/ never imports the trainer itself

out, card_path = Path(sys.argv[1]), Path("models/facestream-default.json")
card, onnx = read_card(card_path), Path("models/facestream-default.onnx")
weights = Path("state/models/facestream-default.pt")
crops_file = Path("state/gpu_crops.npy")
crops = np.load(crops_file) if crops_file.is_file() else np.random.default_rng(0).uniform(0, 255, (256, 150, 150, 3))
x = ((crops.astype(np.float32) - np.float32(card["mean"])) / np.float32(card["std"])).transpose(0, 3, 1, 2)
x = np.ascontiguousarray(np.resize(x, (256, *x.shape[1:])))
report = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
          "faces": str(crops_file) if crops_file.is_file() else "random", "engines": {}}

def timed(engine, name, min_s=2.0):
    rows = {}
    for b in (1, 16, 64, 256):
        feeds = {name: x[:b]}
        engine.run(feeds); engine.run(feeds)
        times, start = [], time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < min_s:
            t0 = time.perf_counter(); engine.run(feeds); times.append(time.perf_counter() - t0)
        p50 = float(np.median(times))
        rows[str(b)] = {"faces_per_s": round(b / p50, 1), "p50_ms": round(p50 * 1000, 3), "runs": len(times)}
    return rows

outputs = {}
for label, opts in {"torch-cuda-fp16-graphs": {"cuda_graphs": True}, "torch-cuda-fp16-eager": {"cuda_graphs": False}}.items():
    try:
        eng = TorchCudaEngine(onnx, create_model, weights=weights if weights.is_file() else None, **opts)
        report["engines"][label] = timed(eng, eng.inputs[0].name)
        outputs[label] = eng.run({eng.inputs[0].name: x[:64]})[eng.outputs[0].name]
    except Exception as exc:
        report["engines"][label] = {"error": repr(exc)}
try:
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    ort_cpu = OnnxRuntimeEngine(onnx, providers=["CPUExecutionProvider"])
    report["engines"]["onnxruntime-cpu"] = timed(ort_cpu, "image", min_s=1.0)
    ref = ort_cpu.run({"image": x[:64]})["embedding"]
    report["parity_vs_ort_cpu"] = {k: {"min_cosine": float(np.min(np.sum(v * ref, 1) / np.linalg.norm(v, axis=1))),
                                       "max_abs_diff": float(np.abs(v - ref).max())} for k, v in outputs.items()}
except Exception as exc:
    report["engines"]["onnxruntime-cpu"] = {"error": repr(exc)}
print(json.dumps(report, indent=2))
PY
