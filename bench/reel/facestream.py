"""facestream over the reel, through its real command lines: `enroll.py add --tree` then `run.py --tracks`.

A fresh embedded Redis (pipeline.redis.server.EmbeddedRedis) in a scratch folder holds the scratch gallery,
so nothing of the user's galleries is read or changed; it is stopped afterwards. The enrolment tree is one
folder per enrolled person holding a link to their enrolment photo (a photo the reel never shows).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.redis.server import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
GALLERY = "bench-reel"


def enrolment_tree(truth: dict, lfw: Path, root: Path) -> Path:
    """`root/<name>/<photo>` links to each enrolled person's enrolment photo."""
    for person in truth["people"]:
        if person["enrolled"]:
            photo = lfw / person["enrol_photo"]
            link = root / person["name"] / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(photo.resolve())
    return root


def run_facestream(video: Path, truth: dict, lfw: Path, work: Path, extra: list[str] = (),
                   model: Path | None = None) -> dict:
    """Enrol, run, and collect: {"enrol", "run" (run.py's summary), "tracks", "events", timings}. `model`: the
    card both commands use (None: their default)."""
    tree = enrolment_tree(truth, lfw, work / "enrol")
    server = EmbeddedRedis(work / "redis").start()
    try:
        common = ["--gallery", GALLERY, "--redis-url", server.url, *(["--model", str(model)] if model else [])]
        started = time.perf_counter()
        enrol = _call([str(REPO / "enroll.py"), *common, "--json", "add", "--tree", str(tree), "--largest"])
        enrol_s = time.perf_counter() - started
        paths = {k: work / f"{k}.jsonl" for k in ("tracks", "events")}
        summary = work / "summary.json"
        started = time.perf_counter()
        _call([str(REPO / "run.py"), "--source", str(video), *common, "--tracks", str(paths["tracks"]),
               "--events", str(paths["events"]), "--summary-json", str(summary), *extra])
        run_s = time.perf_counter() - started
    finally:
        server.stop()
    report = json.loads(enrol.stdout.strip().splitlines()[-1])
    rejected = [{"person": Path(o["path"]).parent.name, "reason": o["reason"], "detail": o["detail"]}
                for o in report["outcomes"] if not o["accepted"]]
    return {"enrolled": len(report["identities"]), "in_gallery": sorted(i["name"] for i in report["identities"]),
            "enrol_rejected": rejected,
            "run": json.loads(summary.read_text(encoding="utf-8")), "tracks": paths["tracks"],
            "events": paths["events"], "enrol_s": round(enrol_s, 1), "run_s": round(run_s, 1)}


def _call(args: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


def as_enrolled(truth: dict, in_gallery: set[str]) -> dict:
    """The truth as the gallery actually holds it: a person whose enrolment photo enroll.py refused (it says why)
    is not in the gallery, so for scoring they are a stranger, whom no box may name."""
    def mark(record: dict) -> dict:
        return {**record, "enrolled": record["enrolled"] and record["name"] in in_gallery}

    return {**truth, "people": [mark(p) for p in truth["people"]],
            "shots": [{**s, "actors": [mark(a) for a in s["actors"]]} for s in truth["shots"]],
            "boxes": [[mark(b) for b in frame] for frame in truth["boxes"]]}
