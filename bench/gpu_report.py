"""Summarise a gpu_check.sh result (its JSON lines, fetched from a lent GPU machine) against the faces/s goal.

    python -m bench.gpu_report docs/gpu/h200-gpu_check.jsonl [--before OLD.jsonl] [--plot PNG] [--json]

Prints, per path that ran, faces/s at each batch size and the smallest batch reaching GOAL faces/s; `--before`
adds another run's embedder row (the code before a change) to the table and the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cli import finish
from pipeline.core.errors import ConfigError

GOAL = 20_000  # faces/s, the target for one GPU
PLOTTED = {  # path -> legend label, in drawing order
    "embedder-torch-cuda-end-to-end": "Embedder end to end (uint8 in, flip on GPU)",
    "embedder-torch-cuda-cpu-normalise": "Embedder, normalised on the CPU",
    "torch-cuda-fp16-graphs": "torch-cuda engine, fp16, CUDA graphs, NHWC",
    "torch-cuda-fp16-graphs-nchw": "torch-cuda engine, fp16, CUDA graphs, NCHW",
    "torch-cuda-fp16-eager": "torch-cuda engine, fp16, eager",
    "torch-cuda-device-resident-float16-nhwc": "network alone (input on the GPU), fp16 NHWC",
    "onnxruntime-cpu": "ONNX Runtime CPU (the box's 16 cores)",
}


def read_rows(path: Path) -> dict[str, dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read gpu_check output {path}: {exc}") from exc
    if not rows or rows[0].get("path") != "environment":
        raise ConfigError(f"{path} is not gpu_check.sh output (its first line must be the environment row)")
    return {row["path"]: row for row in rows}


def summarise(rows: dict[str, dict], before: dict[str, dict] | None) -> dict:
    paths = {}
    for name, row in rows.items():
        if row.get("status") != "ok" or "faces_per_s" not in row:
            continue
        rates = {int(b): v for b, v in row["faces_per_s"].items()}
        reaching = [b for b, v in sorted(rates.items()) if v >= GOAL]
        paths[name] = {"faces_per_s": rates, "goal_reached_at_batch": reaching[0] if reaching else None}
    if before and "embedder-torch-cuda-end-to-end" in before:
        rates = {int(b): v for b, v in before["embedder-torch-cuda-end-to-end"]["faces_per_s"].items()}
        paths["embedder-before"] = {"faces_per_s": rates, "goal_reached_at_batch": None}
    env = rows["environment"]
    return {"goal_faces_per_s": GOAL, "gpu": env.get("gpu"), "torch": env.get("torch"), "cuda": env.get("cuda"),
            "paths": paths,
            "skipped": {n: r.get("reason") for n, r in rows.items() if r.get("status") == "skipped"},
            "errors": {n: r.get("error") for n, r in rows.items() if r.get("status") == "error"}}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5))
    labels = {**PLOTTED, "embedder-before": "Embedder before (float32 made on the CPU)"}
    for name, label in labels.items():
        if name in result["paths"]:
            rates = result["paths"][name]["faces_per_s"]
            style = ":" if name == "embedder-before" else ("-" if name.startswith("embedder") else "--")
            ax.plot(list(rates), list(rates.values()), "o" + style, label=label)
    ax.axhline(GOAL, color="k", lw=1, ls="-.", label=f"goal {GOAL:,} faces/s")
    ax.set(xscale="log", yscale="log", xlabel="faces per call (batch)", ylabel="faces/s",
           title=f"facestream embedder on {result['gpu']} (torch {result['torch']}); embedder rows count faces, "
                 "each seen twice (flip)")
    ax.title.set_fontsize(9)
    ax.set_xticks([1, 16, 64, 256], ["1", "16", "64", "256"])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(result: dict) -> None:
    print(f"{result['gpu']}, goal {GOAL:,} faces/s")
    for name, row in result["paths"].items():
        rates = " ".join(f"b{b}:{v:>9,.0f}" for b, v in row["faces_per_s"].items())
        print(f"{name:<44} {rates}  goal at batch {row['goal_reached_at_batch']}")
    for name, reason in result["skipped"].items():
        print(f"{name:<44} skipped: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path)
    parser.add_argument("--before", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    def produce() -> dict:
        result = summarise(read_rows(args.result), read_rows(args.before) if args.before else None)
        if args.plot:
            plot(result, args.plot)
        return result

    return finish(produce, args.json, show)


if __name__ == "__main__":
    sys.exit(main())
