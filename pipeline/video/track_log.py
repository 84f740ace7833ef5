"""The `--tracks` log: one JSON line per processed frame and camera, with exactly the boxes the annotated
video draws (non-tentative tracks), for benchmarks and audits that need per-frame identities.

    {"camera": "cam0", "frame": 61, "time": 2.44, "detected": true,
     "faces": [{"box": [x1, y1, x2, y2], "landmarks": [[x, y] x 5] | null, "track": 9,
                "identity": "Lin-Manuel Miranda" | null, "similarity": 0.71 | null, "anon_id": "cam0-t9",
                "unknown_id": "unknown-3fa2b9c1" | null, "predicted": false}]}

`identity` is the name on the box (the track's confirmed known identity); `landmarks` is null on frames the
detector skipped (the box is the tracker's prediction). Fed from the `Annotated` records of the output thread,
so the log and the video cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.video.label_stage import Annotated, ShownFace


def track_record(item: Annotated) -> dict:
    frame = item.frame
    return {"camera": frame.camera, "frame": frame.index, "time": round(float(frame.timestamp), 4),
            "detected": bool(item.detected), "faces": [face_record(f) for f in item.shown]}


def face_record(face: ShownFace) -> dict:
    return {"box": list(face.box), "landmarks": [list(p) for p in face.landmarks] if face.landmarks else None,
            "track": face.track, "identity": face.identity, "similarity": face.similarity,
            "anon_id": face.anon_id, "unknown_id": face.unknown_id, "predicted": face.predicted}


class TrackLog:
    """`write(annotated)` per processed frame; `close()` flushes. The file is truncated when opened."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.lines = 0

    def write(self, item: Annotated) -> None:
        self._file.write(json.dumps(track_record(item), separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
