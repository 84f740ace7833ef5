"""What the reel contains, read back from its ground truth (not from the plan's intent), so a test can hold
the builder to its scenarios.

- a cut "in place": an actor of a shot's first frame whose box overlaps (IoU >= CUT_IOU) an actor of the
  previous shot's last frame, who is another person; counted by kind (known->stranger, ...);
- a crossing: two actors of a shot whose boxes overlap on some frames and whose left-right order flips;
- an occlusion: an actor hidden (visible < VISIBLE_MIN) for a run of frames and visible again after it.
"""

from __future__ import annotations

VISIBLE_MIN = 0.5  # below: the face is hidden; a "don't care" box in the scores
CUT_IOU = 0.3


def iou(a, b) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def kind(enrolled: bool) -> str:
    return "known" if enrolled else "stranger"


def cuts_in_place(truth: dict) -> list[dict]:
    """Every in-place cut: {"frame", "slot_iou", "from", "to", "kind"}."""
    found = []
    for shot in truth["shots"][1:]:
        first = shot["start"]
        for new in truth["boxes"][first]:
            for old in truth["boxes"][first - 1]:
                overlap = iou(new["box"], old["box"])
                if overlap >= CUT_IOU and old["name"] != new["name"]:
                    found.append({"frame": first, "slot_iou": round(overlap, 3), "from": old["appearance"],
                                  "to": new["appearance"], "kind": f"{kind(old['enrolled'])}->{kind(new['enrolled'])}"})
    return found


def crossings(truth: dict) -> list[dict]:
    """Pairs of actors that walk past each other: {"shot", "actors", "overlap_frames"}."""
    found = []
    for shot in truth["shots"]:
        frames = truth["boxes"][shot["start"]:shot["start"] + shot["frames"]]
        ids = [a["appearance"] for a in shot["actors"]]
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                pairs = [(_by_id(f, ids[i])["box"], _by_id(f, ids[j])["box"]) for f in frames]
                overlap = sum(iou(a, b) > 0 for a, b in pairs)
                flipped = (pairs[0][0][0] < pairs[0][1][0]) != (pairs[-1][0][0] < pairs[-1][1][0])
                if overlap and flipped:
                    found.append({"shot": shot["index"], "actors": [ids[i], ids[j]], "overlap_frames": overlap})
    return found


def occlusions(truth: dict) -> list[dict]:
    """Hidden runs followed by the face being visible again: {"appearance", "first", "frames"}."""
    found = []
    for shot in truth["shots"]:
        frames = truth["boxes"][shot["start"]:shot["start"] + shot["frames"]]
        for actor in shot["actors"]:
            seen = [_by_id(f, actor["appearance"])["visible"] >= VISIBLE_MIN for f in frames]
            k = 0
            while k < len(seen):
                if seen[k]:
                    k += 1
                    continue
                run = next((j for j in range(k, len(seen)) if seen[j]), None)
                if run is not None and k > 0:
                    found.append({"appearance": actor["appearance"], "first": shot["start"] + k, "frames": run - k})
                k = run if run is not None else len(seen)
    return found


def describe(truth: dict) -> dict:
    """The reel in numbers: shots, scenarios, people, appearances."""
    cuts: dict[str, int] = {}
    for cut in cuts_in_place(truth):
        cuts[cut["kind"]] = cuts.get(cut["kind"], 0) + 1
    actors = [a for s in truth["shots"] for a in s["actors"]]
    people = truth["people"]
    shot_kinds: dict[str, int] = {}
    for s in truth["shots"]:
        shot_kinds[s["kind"]] = shot_kinds.get(s["kind"], 0) + 1
    return {"frames": truth["frames"], "seconds": round(truth["frames"] / truth["fps"], 2),
            "size": [truth["width"], truth["height"]], "fps": truth["fps"], "seed": truth["seed"],
            "shots": len(truth["shots"]), "shot_kinds": shot_kinds,
            "scenarios": {"cuts_in_place": dict(sorted(cuts.items())),
                          "crossings": len(crossings(truth)), "occlusions": len(occlusions(truth))},
            "people": {"enrolled": sum(p["enrolled"] for p in people),
                       "strangers": sum(not p["enrolled"] and not p["single_image"] for p in people),
                       "single_image_strangers": sum(p["single_image"] for p in people)},
            "appearances": {"known": sum(a["enrolled"] for a in actors),
                            "stranger": sum(not a["enrolled"] for a in actors)},
            "gt_boxes": sum(len(f) for f in truth["boxes"])}


def _by_id(frame: list[dict], appearance: str) -> dict:
    return next(b for b in frame if b["appearance"] == appearance)
