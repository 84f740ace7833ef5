"""Scores of decisions over time: predicted boxes per frame against the reel's ground truth.

Per frame, predicted boxes are matched one-to-one to ground-truth boxes with IoU >= IOU_MIN (minimum total
1 - IoU, `assignment.assign`). Ground-truth boxes less than VISIBLE_MIN visible are "don't care": a
prediction matched to one is neither a hit nor a false positive (a wrong name on it still counts).

- wrong_name_frames: matched frame-boxes whose shown name is not the person's (any name on a stranger);
  also split by the truth (known / stranger) and by the kind of shot (cut / cross / occlude).
- id_switches: MOT's: a ground-truth appearance's matched track id differs from its previous matched one.
- idf1: Ristani et al. 2016 over the whole reel: the one-to-one mapping of GT appearances (one per actor per
  shot) to track ids that maximises IDTP (co-matched frames); IDF1 = 2 IDTP / (GT boxes + predicted boxes),
  don't-care boxes left out of both.
- coverage: share of known appearances shown with their correct name in at least one frame.
- wrong_confirmations: identity_confirmed events naming an enrolled identity that is not the person the
  track covers at that frame (its nearest matched frame); unresolved if the track never matched anyone.
- merged_tracks: tracks matched to more than one person (a track carried across a cut or a crossing).

Predictions without track ids (the peer) get the per-frame metrics only; the identity metrics are None.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from bench.reel.scenes import VISIBLE_MIN, iou

IOU_MIN = 0.5
TARGETS = {"wrong_name_frames": ("<=", 0), "idf1": (">=", 0.9), "coverage": (">=", 0.9)}
_FORBIDDEN = 1e6


def match_boxes(truth: list, predicted: list, iou_min: float = IOU_MIN) -> list[tuple[int, int]]:
    """(truth index, predicted index) pairs: one-to-one, IoU >= iou_min, minimum total (1 - IoU)."""
    if not truth or not predicted:
        return []
    overlaps = np.array([[iou(t, p) for p in predicted] for t in truth])
    cost = np.where(overlaps >= iou_min, 1.0 - overlaps, _FORBIDDEN)
    return [(t, p) for t, p in assign(cost) if cost[t, p] < _FORBIDDEN]


def read_tracks(path: Path, frames: int, camera: str | None = None) -> list[list[dict]]:
    """run.py's --tracks log as one list of faces per frame (frames it never logged: no faces)."""
    per_frame: list[list[dict]] = [[] for _ in range(frames)]
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if (camera is None or record["camera"] == camera) and 0 <= record["frame"] < frames:
            per_frame[record["frame"]] = record["faces"]
    return per_frame


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class _Tally:
    """Running counts over the frames."""

    def __init__(self):
        self.wrong = {"known": 0, "stranger": 0}
        self.wrong_by_appearance: dict[str, int] = defaultdict(int)
        self.named_unmatched = self.matched = self.gt_boxes = self.pred_boxes = self.switches = 0
        self.shown_right: set[str] = set()
        self.co_matched: dict[tuple[str, int], int] = defaultdict(int)
        self.last_track: dict[str, int] = {}
        self.track_people: dict[int, set[str]] = defaultdict(set)
        self.track_frames: dict[int, list[tuple[int, str]]] = defaultdict(list)

    def add_frame(self, frame: int, truth: list[dict], predicted: list[dict]) -> None:
        pairs = match_boxes([t["box"] for t in truth], [p["box"] for p in predicted])
        matched = {p for _, p in pairs}
        self.named_unmatched += sum(1 for i, p in enumerate(predicted) if i not in matched and p.get("identity"))
        hidden = sum(1 for t, _ in pairs if truth[t]["visible"] < VISIBLE_MIN)
        self.gt_boxes += sum(t["visible"] >= VISIBLE_MIN for t in truth)
        self.pred_boxes += len(predicted) - hidden
        for t, p in pairs:
            self._add_pair(frame, truth[t], predicted[p])

    def _add_pair(self, frame: int, truth: dict, predicted: dict) -> None:
        name, person, appearance = predicted.get("identity"), truth["name"], truth["appearance"]
        if name is not None and name != person:
            self.wrong["known" if truth["enrolled"] else "stranger"] += 1
            self.wrong_by_appearance[appearance] += 1
        if name is not None and name == person:
            self.shown_right.add(appearance)
        track = predicted.get("track")
        if track is not None:
            if self.last_track.get(appearance, track) != track:
                self.switches += 1
            self.last_track[appearance] = track
            self.track_people[track].add(person)
            self.track_frames[track].append((frame, person))
        if truth["visible"] >= VISIBLE_MIN:
            self.matched += 1
            if track is not None:
                self.co_matched[(appearance, track)] += 1


def idf1(co_matched: dict[tuple[str, int], int], gt_boxes: int, pred_boxes: int) -> tuple[float, int]:
    """(IDF1, IDTP) for co-matched frame counts keyed by (GT id, track id)."""
    if gt_boxes + pred_boxes == 0:
        return 1.0, 0
    gt_ids = sorted({g for g, _ in co_matched})
    track_ids = sorted({t for _, t in co_matched})
    counts = np.zeros((len(gt_ids), len(track_ids)))
    for (g, t), n in co_matched.items():
        counts[gt_ids.index(g), track_ids.index(t)] = n
    idtp = int(sum(counts[g, t] for g, t in assign(-counts)))
    return 2 * idtp / (gt_boxes + pred_boxes), idtp


def confirmations(events: list[dict], track_frames: dict[int, list[tuple[int, str]]],
                  enrolled: set[str]) -> dict:
    """identity_confirmed events checked against who the track covered at (or nearest to) that frame."""
    wrong, unresolved, named = [], 0, 0
    for event in events:
        if event.get("type") != "identity_confirmed" or not event.get("identity"):
            continue
        named += 1
        seen = track_frames.get(event["track"])
        if not seen:
            unresolved += 1
            continue
        _, person = min(seen, key=lambda fp: (abs(fp[0] - event["frame"]), fp[0] > event["frame"]))
        if event["identity"] in enrolled and event["identity"] != person:
            wrong.append({"frame": event["frame"], "track": event["track"], "shown": event["identity"],
                          "truth": person})
    return {"wrong_confirmations": len(wrong), "confirmations": named, "unresolved_confirmations": unresolved,
            "wrong_confirmation_list": wrong}


def score(truth: dict, predicted: list[list[dict]], events: list[dict] | None = None) -> dict:
    """Every metric of the module docstring, for one run over the reel."""
    tally = _Tally()
    for frame, gt in enumerate(truth["boxes"]):
        tally.add_frame(frame, gt, predicted[frame] if frame < len(predicted) else [])
    tracked = any(f.get("track") is not None for faces in predicted for f in faces)
    known = [a["appearance"] for s in truth["shots"] for a in s["actors"] if a["enrolled"]]
    shot_kind = {a["appearance"]: s["kind"] for s in truth["shots"] for a in s["actors"]}
    by_kind: dict[str, int] = {}
    for appearance, n in tally.wrong_by_appearance.items():
        by_kind[shot_kind[appearance]] = by_kind.get(shot_kind[appearance], 0) + n
    result = {"wrong_name_frames": sum(tally.wrong.values()), "wrong_name_frames_by_truth": tally.wrong,
              "wrong_name_frames_by_shot": dict(sorted(by_kind.items())),
              "wrong_name_appearances": len(tally.wrong_by_appearance),
              "named_unmatched_boxes": tally.named_unmatched,
              "wrong_name_rate": round(sum(tally.wrong.values()) / max(tally.matched, 1), 4),
              "id_switches": tally.switches if tracked else None, "idf1": None, "idtp": None,
              "coverage": round(len(tally.shown_right & set(known)) / max(len(known), 1), 4),
              "known_appearances_named": len(tally.shown_right & set(known)),
              "merged_tracks": sum(len(p) > 1 for p in tally.track_people.values()) if tracked else None,
              "frames": len(truth["boxes"]), "gt_boxes": tally.gt_boxes, "predicted_boxes": tally.pred_boxes,
              "matched_boxes": tally.matched, "known_appearances": len(known),
              "stranger_appearances": sum(not a["enrolled"] for s in truth["shots"] for a in s["actors"])}
    if tracked:
        value, idtp = idf1(tally.co_matched, tally.gt_boxes, tally.pred_boxes)
        result["idf1"], result["idtp"] = round(value, 4), idtp
    if events is not None:
        enrolled = {p["name"] for p in truth["people"] if p["enrolled"]}
        result.update(confirmations(events, tally.track_frames, enrolled))
    result["targets"] = targets(result)
    return result


def targets(result: dict) -> dict:
    """{metric: {"target": ">= 0.9", "met": bool | None}} for TARGETS."""
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = result.get(key)
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        out[key] = {"target": f"{op} {bound}", "value": value, "met": met}
    return out


def assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of a minimum-cost one-to-one assignment (scipy's Hungarian solver), row order."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols)]
