"""What `bench.cameras` measures in one run, from its events and clocks: time to name, faces lost, CPU.

Time to name, per track (the face's first frame -> its first `identity_confirmed`, known or unknown):

    first  = origin[camera] + first_frame / fps     when the camera produced the track's first frame (monotonic s)
    named  = the moment the identity_confirmed event reached the bus (monotonic s, `emitted_s`)
    time_to_name_s = named - first

`origin[camera]` is the monotonic time the live-paced source delivered media time 0 (`FrameSource` paces frame
k at origin + k / fps), so `first` is when a real camera would have captured that frame. `first_frame` is the
track's first detected frame (`track_ended` extra), not the face's appearance in the clip: a face detected late
(every 3rd frame, dropped frames) starts its clock late. Split-off tracks (`track_started` with `split_from`)
are not new faces and are left out. Split into media_s (confirming frame - first frame, media time: the votes
it took) + lag_s (the confirming frame's capture -> the event: queues and compute). Without clocks (hand-made
events) time_to_name_s = media_s.

Faces lost, per camera of an N-camera run: named tracks the 1-camera run of the same clip had, minus the named
tracks this camera had (never below 0); `faces_lost` sums the cameras. A count, not a match of faces.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

IDENTITY_CONFIRMED, TRACK_STARTED, TRACK_ENDED = "identity_confirmed", "track_started", "track_ended"


def process_cpu_s() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_percent(cpu_s: float, wall_s: float, cores: int | None = None) -> dict:
    """CPU over a run as % of one core and % of the machine (`cores`, default the cores this process may use)."""
    cores = cores or len(os.sched_getaffinity(0)) or 1
    one = 100.0 * cpu_s / wall_s if wall_s > 0 else 0.0
    return {"of_one_core": round(one, 1), "of_machine": round(one / cores, 1), "cores": cores}


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, float), q)), 3) if len(values) else None


def naming_times(events: Iterable[Mapping], fps: float | Mapping[str, float],
                 origins: Mapping[str, float | None] | None = None) -> list[dict]:
    """One row per named, non-split track: camera, track, first/confirm frame, media_s, lag_s, time_to_name_s."""
    started, ended, confirmed = {}, {}, {}
    for e in events:
        key = (e["camera"], e["track"])
        if e["type"] == TRACK_STARTED:
            started.setdefault(key, e)
        elif e["type"] == TRACK_ENDED:
            ended[key] = e
        elif e["type"] == IDENTITY_CONFIRMED:
            confirmed.setdefault(key, e)  # the first confirmation is the name; later ones are re-confirmations
    rows = []
    for key, event in confirmed.items():
        start = started.get(key)
        if start is not None and "split_from" in start.get("extra", {}):
            continue
        camera, rate = key[0], fps[key[0]] if isinstance(fps, Mapping) else fps
        first = (ended.get(key) or {}).get("extra", {}).get("first_frame")
        if first is None:  # no track_ended (a run cut short): the tracker's confirmation frame is the best bound
            first = start["frame"] if start is not None else event["frame"]
        media = (event["frame"] - first) / rate
        origin = (origins or {}).get(camera)
        if origin is not None and event.get("emitted_s") is not None:
            total = event["emitted_s"] - (origin + first / rate)
        else:
            total = media
        rows.append({"camera": camera, "track": key[1], "first_frame": first, "frame": event["frame"],
                     "unknown": event.get("identity") is None, "media_s": round(media, 3),
                     "lag_s": round(total - media, 3), "time_to_name_s": round(total, 3)})
    return rows


def track_counts(events: Iterable[Mapping]) -> dict[str, dict[str, int]]:
    """Per camera: `tracks` (confirmed by the tracker, split-offs excluded) and `named` (of those, confirmed)."""
    events = list(events)
    split = {(e["camera"], e["track"]) for e in events
             if e["type"] == TRACK_STARTED and "split_from" in e.get("extra", {})}
    counts: dict[str, dict[str, int]] = {}
    for e in events:
        key = (e["camera"], e["track"])
        if key in split:
            continue
        if e["type"] == TRACK_STARTED:
            counts.setdefault(e["camera"], {"tracks": 0, "named": 0})["tracks"] += 1
    named = {(e["camera"], e["track"]) for e in events if e["type"] == IDENTITY_CONFIRMED} - split
    for camera, _ in named:
        counts.setdefault(camera, {"tracks": 0, "named": 0})["named"] += 1
    return counts


def faces_lost(named_per_camera: Mapping[str, int], baseline: int | None) -> dict:
    """Named tracks each camera missed against the 1-camera run's `baseline`: per camera, total, ratio."""
    if baseline is None:
        return {"faces_lost": None, "faces_lost_per_camera": None, "named_ratio": None}
    lost = {camera: max(0, baseline - named) for camera, named in named_per_camera.items()}
    total = sum(named_per_camera.values())
    ratio = round(total / (baseline * len(named_per_camera)), 3) if baseline and named_per_camera else None
    return {"faces_lost": sum(lost.values()), "faces_lost_per_camera": lost, "named_ratio": ratio}
