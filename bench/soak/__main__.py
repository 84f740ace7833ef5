"""Soak test: one long-running run.py over the looped sample videos while another process enrols and removes people.

    python -m bench.soak --minutes 10 --json --plot docs/soak-rss.png   # one JSON object on stdout
    python -m bench.soak --minutes 1                                      # a readable summary

What runs, all on one scratch embedded Redis server in a temporary state folder:

- a churn process (its own interpreter) enrols the Hamilton clip's two people from their reference photos into
  gallery `soak`, then every `--churn-every` s enrols an LFW person from two photos (quality gates and all, as
  `enroll.py add` does) and, once `--keep` of them are enrolled, removes the oldest. The pool of LFW people is
  cycled, so names come back after they were removed.
- `run.py` (a subprocess, measured from outside) streams the Hamilton clip, the crowd clip (facenet-pytorch) and
  the meeting clip (OpenCV tutorial media) as three cameras. Files are looped with `sources.reconnect=true`: a
  file that ends is reopened (its media clock continues), so one process runs for the whole soak. At the end it
  gets SIGINT (Ctrl-C) and must exit 0 with its summary.

Every `--sample-s` s the VmRSS of run.py, redis-server and the churn process is read from /proc, the clock
starting at run.py's "streaming" log line (models loaded). After the warm-up (the later of `--warmup-min` and
every camera's first loop, at most a third of the run) run.py's RSS is summarised: start / end (medians of the
first / last tenth of the post-warm-up samples), max, and the slope of a least-squares line in MB/hour.
`flat` = slope < FLAT_SLOPE_MB_H and end - start < FLAT_GROWTH_MB. tracemalloc (Python objects and NumPy
buffers) cannot see what ONNX Runtime, torch, FFmpeg or the allocator keep: RSS from outside sees everything.
Redis grows by design (the event and change streams are capped only at ~100k entries): its RSS and
`used_memory` are reported, not judged.

errors = run.py exit status != 0 (or killed) + ERROR/CRITICAL/Traceback lines in its log + source read errors +
churn failures (exceptions; a photo the quality gates reject is "skipped", not an error) + events lost (event
ids in the JSONL file but not in the Redis Stream, or the other way round). `ok` = flat and errors == 0; the
exit status is 0 only if ok. fps = frames recognised / run.py's streaming wall time, on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

from bench.soak.churn import churn, finish_churn, wait_event
from bench.soak.inputs import LFW, PEOPLE, REPO, VIDEOS
from bench.soak.memory import sample
from bench.soak.plot import plot
from bench.soak.report import redis_memory, report
from bench.soak.run_py import STOP_TIMEOUT_S, cpu_s, start_run_py, stop_run_py, wait_streaming


def soak(args: argparse.Namespace) -> dict:
    """Scratch Redis in a temporary state folder, the churn process, run.py; everything measured and checked."""
    from pipeline.redis.server import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="facestream-soak-") as folder:
        tmp = Path(folder)
        state = tmp / "state"
        overrides = [*args.set, "redis.url=null", f"redis.state_dir={state}"]
        server = EmbeddedRedis(state / "redis").start()
        try:
            return drive(args, tmp, server, overrides)
        finally:
            server.stop()


def drive(args: argparse.Namespace, tmp: Path, server, overrides: list[str]) -> dict:
    from pipeline.core.errors import FacestreamError

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited from this one
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    settings = {"config": str(args.config), "overrides": overrides, "model": str(args.model),
                "every_s": args.churn_every, "keep": args.keep, "pool": args.pool, "parent": os.getpid()}
    churner = context.Process(target=churn, args=(settings, ready, stop, results), name="soak-churn")
    churner.start()
    run = {}
    try:
        if not wait_event(ready, churner, args.start_timeout):
            raise FacestreamError(f"the churn process did not enrol the Hamilton pair within {args.start_timeout} s "
                                  f"(exit code {churner.exitcode})")
        redis_before = redis_memory(server)
        proc = start_run_py(tmp, args, overrides)
        try:
            run["streaming"] = wait_streaming(proc, tmp / "run.log", args.start_timeout)
            seconds = args.minutes * 60.0
            every = run["sample_s"] = args.sample_s or min(5.0, max(0.5, seconds / 60.0))
            pids = {"run_py": proc.pid, "redis": server.pid, "churn": churner.pid}
            cpu_before = cpu_s(proc.pid)
            run["samples"] = sample(pids, seconds, every, proc, tmp / "run.log") if run["streaming"] else []
            run["cpu_s"] = (cpu_s(proc.pid) or 0.0) - (cpu_before or 0.0)
        finally:
            run["exit"] = stop_run_py(proc)
        run["churn"] = finish_churn(churner, stop, results, STOP_TIMEOUT_S)
    finally:
        if churner.is_alive():
            churner.terminate()
            churner.join(10)
    run["redis_memory"] = {"before_mb": redis_before, "after_mb": redis_memory(server)}
    return report(args, tmp, server, run)


def print_summary(r: dict) -> None:
    run_py = r["rss"]["run_py"] or {}
    print(f"frames      {r['frames']} in {r['streaming_wall_s']} s = {r['fps']} fps ({r['cpu_ms_per_frame']} CPU "
          "ms/frame); loops " + ", ".join(f"{k} {v['loops']}" for k, v in r["sources"].items()))
    print(f"run.py RSS  {run_py.get('start_mb')} -> {run_py.get('end_mb')} MB after warm-up, max "
          f"{run_py.get('max_mb')}, slope {run_py.get('slope_mb_per_h')} MB/h: flat={r['flat']}")
    print(f"            {r['flat_criterion']}")
    print(f"events      {r['events']}; JSONL {r['events_jsonl']}, stream {r['events_stream']}, lost {r['events_lost']}")
    print(f"churn       {r['churn']}")
    print(f"errors      {r['errors']} {r['error_detail']}" + "".join(f"\n  {line}" for line in r["error_lines"]))
    print(f"ok          {r['ok']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="streaming time (model loading excluded)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of RSS over time")
    parser.add_argument("--warmup-min", type=float, default=3.0, help="excluded from the RSS trend (≤ 1/3 run)")
    parser.add_argument("--sample-s", type=float, default=None, help="RSS sampling period (default: ≤ 5 s)")
    parser.add_argument("--churn-every", type=float, default=3.0, help="seconds between two enrolments")
    parser.add_argument("--keep", type=int, default=4, help="LFW people enrolled at once before removals")
    parser.add_argument("--pool", type=int, default=40, help="LFW people cycled through")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="s for model loading and enrolment")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "facestream-default.json")
    args = parser.parse_args(argv)

    from pipeline.core.errors import FacestreamError
    from pipeline.core.logs import configure_logging

    configure_logging("WARNING")
    missing = [str(p) for p in [*VIDEOS.values(), *(f for fs in PEOPLE.values() for f in fs), LFW] if not p.exists()]
    if missing:
        print(f"error: soak data not found (../shared/data sits beside the checkout): {', '.join(missing)}",
              file=sys.stderr)
        return 2
    try:
        result = soak(args)
    except FacestreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot is not None:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
