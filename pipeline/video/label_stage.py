"""Box labels: each tracked frame as the plain `Annotated` record the output stage draws.

Labels are text and tuples, so the tracker's mutable tracks never cross a thread boundary. Made last in a
batch, after the votes, so a box names the identity confirmed on that very frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.frames import Frame
from pipeline.video.output import BoxLabel
from pipeline.video.track_stage import Tracked
from pipeline.video.tracker import Track


@dataclass(frozen=True)
class Annotated:
    frame: Frame
    labels: tuple[BoxLabel, ...]
    received: float  # perf_counter when the frame left its source queue
    detected: bool


class LabelStage:
    """`annotate(tracked, received)` -> `Annotated`: "#<track id> <name or anonymous id> <similarity>" per box."""

    def annotate(self, tracked: Tracked, received: float) -> Annotated:
        labels = tuple(box_label(track, predicted) for track, predicted in tracked.shown)
        return Annotated(tracked.frame, labels, received, tracked.detected)


def box_label(track: Track, predicted: bool) -> BoxLabel:
    known = bool(track.identity_confirmed and track.identity)
    text = f"#{track.id} {track.identity if known else track.anon_id}"
    if track.similarity is not None:
        text += f" {track.similarity:.2f}"
    return BoxLabel(tuple(float(v) for v in track.box), text, known=known, predicted=predicted)
