"""Box labels: each tracked frame as the plain `Annotated` record the output stage draws and logs.

Labels are text and tuples, so the tracker's mutable tracks never cross a thread boundary. Made last in a
batch, after the votes, so a box names the identity confirmed on that very frame. `ShownFace` is the same
box as plain values (track id, shown identity, landmarks on detected frames) for the `--tracks` log
(`pipeline.video.track_log`). A track in doubt (the appearance gate saw its face change, not yet re-verified)
is drawn without its name or similarity: "#7 cam0-t7 ?".
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.frames import Frame
from pipeline.video.output import BoxLabel
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track


@dataclass(frozen=True)
class ShownFace:
    """One drawn box as plain values."""

    box: tuple[float, float, float, float]  # xyxy
    landmarks: tuple[tuple[float, float], ...] | None  # 5 points on a detected frame; None when predicted
    track: int
    identity: str | None  # the name on the box: the track's confirmed known identity
    similarity: float | None
    anon_id: str
    predicted: bool
    unknown_id: str | None = None  # the unknown person's stable id, when the track has one


@dataclass(frozen=True)
class Annotated:
    frame: Frame
    labels: tuple[BoxLabel, ...]
    received: float  # perf_counter when the frame left its source queue
    detected: bool
    shown: tuple[ShownFace, ...] = ()  # the same boxes as `labels`, in the same order


class LabelStage:
    """`annotate(tracked, received)` -> `Annotated`: "#<track id> <name, unknown id or anonymous id> <similarity>"
    per box."""

    def annotate(self, tracked: Tracked, received: float) -> Annotated:
        labels = tuple(box_label(track, predicted) for track, predicted in tracked.shown)
        rows = {a.track.id: a.face_index for a in tracked.assignments}
        shown = tuple(shown_face(track, predicted, tracked, rows.get(track.id)) for track, predicted in tracked.shown)
        return Annotated(tracked.frame, labels, received, tracked.detected, shown)


def shown_identity(track: Track) -> str | None:
    """The name on the box: the confirmed known identity, unless the track is in doubt."""
    return track.identity if track.identity_confirmed and track.identity and not track.in_doubt else None


def shown_similarity(track: Track) -> float | None:
    return None if track.similarity is None or track.in_doubt else float(track.similarity)


def box_label(track: Track, predicted: bool) -> BoxLabel:
    identity, similarity = shown_identity(track), shown_similarity(track)
    text = f"#{track.id} {identity or track.unknown_id or track.anon_id}"
    if track.in_doubt:
        text += " ?"
    elif similarity is not None:
        text += f" {similarity:.2f}"
    return BoxLabel(tuple(float(v) for v in track.box), text, known=identity is not None, predicted=predicted)


def shown_face(track: Track, predicted: bool, tracked: Tracked, row: int | None) -> ShownFace:
    landmarks = None
    if not predicted and row is not None and tracked.faces is not None:
        landmarks = tuple((round(float(x), 1), round(float(y), 1)) for x, y in tracked.faces.landmarks[row])
    similarity = shown_similarity(track)
    similarity = None if similarity is None else round(similarity, 4)
    return ShownFace(tuple(round(float(v), 1) for v in track.box), landmarks, track.id, shown_identity(track),
                     similarity, track.anon_id, predicted, track.unknown_id)
