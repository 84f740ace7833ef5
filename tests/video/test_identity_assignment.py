"""One face <-> one identity per frame: the assignment against a brute-force oracle, its fallbacks, and the
stage never showing one name on two faces of a frame."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_verification import IMAGE, PersonJudge
from video_fakes import RecordingBus

from pipeline.core.faces import Faces
from pipeline.core.frames import Frame
from pipeline.gallery.matcher import Match
from pipeline.video.identity_assignment import (
    assign_identities,
    match_options,
    settled_match,
)
from pipeline.video.metrics import StageMetrics
from pipeline.video.stages import Detected, RecogniseStage
from pipeline.video.tracker import IouTracker


def brute_force(claims: list[dict[str, float]]) -> tuple[int, float]:
    """(named faces, summed similarity) of the best assignment, over every way to pick one option or none."""
    best = (0, 0.0)
    for pick in itertools.product(*[[None, *claim] for claim in claims]):
        named = [p for p in pick if p is not None]
        if len(named) != len(set(named)):
            continue
        score = (len(named), sum(claims[k][p] for k, p in enumerate(pick) if p is not None))
        best = max(best, score)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_assignment_matches_the_brute_force_oracle(seed):
    rng = np.random.default_rng(seed)
    names = ["ann", "bob", "cy"]
    claims = [{str(n): float(rng.uniform(0.8, 1.0)) for n in rng.choice(names, rng.integers(0, 3), replace=False)}
              for _ in range(rng.integers(1, 5))]
    got = assign_identities(claims)
    named = [g for g in got if g is not None]
    assert len(named) == len(set(named))  # never one name to two faces
    assert all(g is None or g in claims[k] for k, g in enumerate(got))
    score = (len(named), sum(claims[k][g] for k, g in enumerate(got) if g is not None))
    assert score[0] == brute_force(claims)[0] and score[1] == pytest.approx(brute_force(claims)[1])


def test_the_weaker_claim_falls_back_to_its_runner_up_or_unknown():
    threshold = 0.85  # each match carries the threshold it was decided at
    strong = Match("ann", "a", 0.95, "bob", 0.90, 0.05, threshold)
    weak = Match("ann", "a", 0.91, "bob", 0.80, 0.11, threshold)
    assert match_options(weak) == {"ann": 0.91}  # bob 0.80 is below the threshold: no fallback
    alone = Match("ann", "a", 0.95, "bob", 0.70, 0.25, threshold)
    assert assign_identities([match_options(alone), match_options(weak)]) == ["ann", None]
    # The strong face is confidently bob too: both get named (more names first, then more similarity).
    assert assign_identities([match_options(strong), match_options(weak)]) == ["bob", "ann"]
    assert settled_match(weak, None).identity is None
    runner = Match("ann", "a", 0.93, "bob", 0.88, 0.05, threshold)
    assert assign_identities([match_options(strong), match_options(runner)]) == ["ann", "bob"]
    promoted = settled_match(runner, "bob")
    assert (promoted.identity, promoted.similarity, promoted.runner_up) == ("bob", 0.88, "ann")
    unknown = Match("ann", "a", 0.95, "bob", 0.90, 0.05)  # no threshold known: the runner-up is no fallback
    assert match_options(unknown) == {"ann": 0.95}


class SameNameMatcher:
    """Both people look like ann to this matcher: person 95 at 0.95, person 96 at 0.90."""

    def match(self, embeddings):
        return [Match("ann", None, 0.95 if e.argmax() == 0 else 0.90, None, None, None, 0.85) for e in embeddings]


def test_two_faces_of_a_frame_never_show_the_same_name():
    bus = RecordingBus()
    stage = RecogniseStage(PersonJudge(), SameNameMatcher(), bus, StageMetrics(),
                           lambda camera: IouTracker(confirm_hits=1, camera=camera))
    two = Faces(np.array([[10, 20, 70, 80], [300, 20, 360, 80]], np.float32), np.zeros((2, 5, 2), np.float32),
                np.array([0.96, 0.95], np.float32))  # person 96 first: the weaker claim is the first face
    for i in range(8):
        out, = stage.process(Detected((Frame("cam", i, i / 25, IMAGE),), (two,), (0.0,)))
        names = [f.identity for f in out.shown if f.identity is not None]
        assert len(names) == len(set(names))
    assert {int(f.box[0]): f.identity for f in out.shown} == {10: None, 300: "ann"}
    confirmed = [(e.track, e.identity) for e in bus.events if e.type == "identity_confirmed"]
    assert ("ann" in {name for _, name in confirmed}) and len({t for t, n in confirmed if n == "ann"}) == 1
