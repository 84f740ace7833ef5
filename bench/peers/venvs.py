"""The peers' virtual environments under .cache/ (built on first use) and running a worker script in one.

Peers never enter the project's venv: dlib and a second torch stack would pollute it. face_recognition's venv
is the one `bench.pipeline` already builds (.cache/peer-venv). facenet-pytorch's (.cache/facenet-venv) holds
torch 2.13 (the local CPU wheel), NumPy, Pillow, requests and tqdm (imported by its package `__init__`) and
facenet-pytorch itself without its dependencies, plus a stand-in `torchvision` (see `bench.peers.torchvision_standin`).

A worker is a script run by the peer's interpreter in isolated mode (`-I`: the script's folder, `bench/`, is
not on sys.path, so none of our modules can shadow the peer's). It gets one JSON job as its argument, reports
progress as `progress DONE TOTAL` lines on stderr and prints one JSON object as its last stdout line.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import deque
from pathlib import Path

from tqdm import tqdm

from bench.pipeline import PEER_VENV, ensure_peer_venv
from pipeline.core.errors import FacestreamError

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
FACENET_VENV = REPO / ".cache" / "facenet-venv"
FACENET_INSTALL = (["torch==2.13.0", "numpy", "Pillow", "requests", "tqdm"], ["--no-deps", "facenet-pytorch==2.6.0"])
STANDIN_SOURCE = PACKAGE / "torchvision_standin.py"
# torchvision's import paths that facenet_pytorch uses -> what each module re-exports from the stand-in.
STANDIN_MODULES = {
    "__init__.py": '__version__ = "0.0+facestream-standin"\n',
    "ops/__init__.py": "from torchvision._standin import batched_nms, nms\n",
    "ops/boxes.py": "from torchvision._standin import batched_nms, nms\n",
    "transforms/__init__.py": "",
    "transforms/functional.py": "from torchvision._standin import to_tensor\n",
}


class PeerError(FacestreamError):
    """A peer's venv could not be built or its worker failed."""


def face_recognition_python() -> Path:
    return ensure_peer_venv()


def facenet_python() -> Path:
    python = FACENET_VENV / "bin" / "python"
    stamp = FACENET_VENV / ".installed"
    if not stamp.exists():
        log.warning("creating %s for facenet-pytorch (first use) ...", FACENET_VENV)
        _run(["python3", "-m", "venv", str(FACENET_VENV)])
        pip = [str(FACENET_VENV / "bin" / "pip"), "install", "-q"]
        _run(pip + FACENET_INSTALL[0])
        _run(pip + FACENET_INSTALL[1])
        stamp.touch()
    # Rewritten on every use so the venv always runs the stand-in the tests checked.
    write_torchvision_standin(site_packages(python))
    return python


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def write_torchvision_standin(site: Path) -> Path:
    package = site / "torchvision"
    for relative, text in {**STANDIN_MODULES, "_standin.py": STANDIN_SOURCE.read_text()}.items():
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
    return package


def run_worker(python: Path, worker: str, job: dict, label: str) -> dict:
    """Run bench/peers/<worker>.py under `python` with `job`; its progress drives a tqdm bar on stderr."""
    command = [str(python), "-I", str(PACKAGE / f"{worker}.py"), json.dumps(job)]
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process, \
            tqdm(desc=label, file=sys.stderr, leave=False) as bar:
        for line in process.stderr:
            fields = line.split()
            if len(fields) == 3 and fields[0] == "progress":
                bar.total = int(fields[2])
                bar.n = int(fields[1])
                bar.refresh()
            else:
                tail.append(line.rstrip())
        stdout = process.stdout.read()
    if process.returncode != 0 or not stdout.strip():
        raise PeerError(f"{worker} ({label}) failed with exit code {process.returncode}: " + "\n".join(tail))
    return json.loads(stdout.strip().splitlines()[-1])


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PeerError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")


__all__ = ["PEER_VENV", "FACENET_VENV", "PeerError", "face_recognition_python", "facenet_python", "run_worker",
           "write_torchvision_standin"]
