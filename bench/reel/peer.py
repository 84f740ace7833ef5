"""The same reel through face_recognition (dlib HOG + ResNet), in its own venv (bench.pipeline's PEER_VENV).

Upstream's video examples, per processed frame: `face_locations` (HOG) + `face_encodings` + `face_distance`;
the name is the nearest enrolled encoding when `compare_faces` (tolerance 0.6) accepts it, as in
`facerec_from_webcam_faster.py`. Enrolled from the same photos as facestream (the first face found in each).
Two settings differ from upstream's defaults, for time on a 2-core box, and both are reported:
`number_of_times_to_upsample=0` (faces are >= 120 px, HOG finds >= 80 px without upsampling; one pyramid level
less is the same pixel work as upstream's 640x360 clip) and one frame in `every` processed (the faster example
processes every other frame); only processed frames are scored, so compare `wrong_name_rate`, not counts.
It writes one JSON line per processed frame in the shape of run.py's --tracks log, without track ids.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.pipeline import ensure_peer_venv

TOLERANCE = 0.6

PEER_SCRIPT = r"""
import json, sys, time
import cv2, face_recognition
clip, people, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
every, upsample = int(sys.argv[4]), int(sys.argv[5])
names, known = [], []
for name, photo in people:
    found = face_recognition.face_encodings(face_recognition.load_image_file(photo))
    if found:
        names.append(name)
        known.append(found[0])
capture = cv2.VideoCapture(clip)
frame, processed, started, cpu = 0, 0, time.perf_counter(), time.process_time()
with open(out, "w") as log:
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if frame % every == 0:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            locations = face_recognition.face_locations(rgb, number_of_times_to_upsample=upsample)
            faces = []
            for (top, right, bottom, left), encoding in zip(locations, face_recognition.face_encodings(rgb, locations)):
                name, distance = None, None
                if known:
                    distances = face_recognition.face_distance(known, encoding)
                    best = int(distances.argmin())
                    if face_recognition.compare_faces(known, encoding, tolerance=TOLERANCE)[best]:
                        name, distance = names[best], float(distances[best])
                faces.append({"box": [left, top, right, bottom], "identity": name, "distance": distance,
                              "track": None})
            log.write(json.dumps({"frame": frame, "faces": faces}) + "\n")
            processed += 1
        frame += 1
wall = time.perf_counter() - started
print(json.dumps({"frames": frame, "processed": processed, "enrolled": len(names), "wall_s": round(wall, 1),
                  "fps": round(processed / wall, 2),
                  "cpu_ms_per_frame": round(1000 * (time.process_time() - cpu) / max(processed, 1), 1)}))
""".replace("TOLERANCE", repr(TOLERANCE))


def run_peer(video: Path, people: list[tuple[str, Path]], out: Path, every: int = 5, upsample: int = 0) -> dict:
    """Run the peer over `video`; its summary, with `out` holding one JSON line per processed frame."""
    python = ensure_peer_venv()
    result = subprocess.run([str(python), "-c", PEER_SCRIPT, str(video),
                             json.dumps([(name, str(photo)) for name, photo in people]), str(out), str(every),
                             str(upsample)], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"face_recognition run failed: {result.stderr.strip()[-2000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    summary.update({"every": every, "upsample": upsample, "tolerance": TOLERANCE})
    return summary


def read_peer(path: Path, frames: int) -> tuple[list[list[dict]], list[int]]:
    """The peer's faces per frame, and which frames it processed (only those are scored)."""
    per_frame: list[list[dict]] = [[] for _ in range(frames)]
    processed = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if 0 <= record["frame"] < frames:
            per_frame[record["frame"]] = record["faces"]
            processed.append(record["frame"])
    return per_frame, processed
