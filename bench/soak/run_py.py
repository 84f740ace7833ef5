"""run.py as a subprocess measured from outside: started over the three looped clips, stopped with Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.soak.inputs import GALLERY, REPO, VIDEOS

STREAMING_LINE = re.compile(r" run: streaming ")
STOP_TIMEOUT_S = 60.0


def start_run_py(tmp: Path, args: argparse.Namespace, overrides: list[str]) -> subprocess.Popen:
    sources = [f"--source={camera}={path}" for camera, path in VIDEOS.items()]
    sets = [f"--set={item}" for item in overrides + ["sources.reconnect=true", "sources.backoff_initial=0.05"]]
    command = [sys.executable, str(REPO / "run.py"), *sources, "--gallery", GALLERY, "--model", str(args.model),
               "--config", str(args.config), *sets, "--events", str(tmp / "events.jsonl"),
               "--summary-json", str(tmp / "summary.json"), "--log-level", "INFO"]
    with open(tmp / "run.log", "wb") as log, open(tmp / "run.out", "wb") as out:
        # Own session: a Ctrl-C at the terminal reaches only us; we stop run.py ourselves.
        return subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                start_new_session=True)


def wait_streaming(proc: subprocess.Popen, log: Path, timeout: float) -> bool:
    """True once run.py logged that it streams; False if it exited or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if STREAMING_LINE.search(log.read_text(errors="replace")):
            return True
        time.sleep(0.2)
    return False


def stop_run_py(proc: subprocess.Popen) -> int | None:
    """SIGINT (Ctrl-C), then SIGKILL after STOP_TIMEOUT_S; the exit status, None when it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
