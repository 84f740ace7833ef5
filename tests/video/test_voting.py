"""Identity voting: majority and share within the window, quality gating, one confirmation per appearance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import ConfigError
from pipeline.gallery.matcher import Match
from pipeline.video.tracker import Track
from pipeline.video.voting import IdentityVoter


def track(track_id=1, camera="cam0") -> Track:
    return Track(id=track_id, camera=camera, box=np.zeros(4, np.float32), anon_id=f"{camera}-t{track_id}")


def match(identity, similarity=0.8) -> Match:
    return Match(identity, None if identity is None else f"id-{identity}", similarity, None, None, None)


def cast(voter, t, names, start=0, quality_ok=True):
    """Vote `names` on consecutive frames; returns {frame: Confirmation} for the frames that confirmed."""
    out = {}
    for frame, name in enumerate(names, start):
        confirmation = voter.vote(t, match(name, 0.7 if name is None else 0.9), frame, quality_ok)
        if confirmation is not None:
            out[frame] = confirmation
    return out


def test_majority_confirms_at_min_votes():
    voter, t = IdentityVoter(min_votes=3, window=10, min_share=0.6), track()
    confirmations = cast(voter, t, ["ann", "ann", "ann", "ann"])
    assert list(confirmations) == [2]
    c = confirmations[2]
    assert (c.track_id, c.camera, c.identity, c.votes, c.frame) == (1, "cam0", "ann", 3, 2)
    assert c.similarity == pytest.approx(0.9)
    assert (t.identity, t.similarity, t.identity_confirmed) == ("ann", pytest.approx(0.9), True)


def test_min_share_holds_back_a_contested_track():
    voter, t = IdentityVoter(min_votes=3, window=10, min_share=0.7), track()
    confirmations = cast(voter, t, ["ann", "bob", "ann", "bob", "ann", "bob", "ann", "ann", "ann", "ann"])
    # ann has 3 votes at frame 4 (3/5), then 4/7, 5/8, 6/9: only 7/10 at frame 9 reaches the share.
    assert list(confirmations) == [9]
    assert confirmations[9].identity == "ann" and confirmations[9].votes == 7


def test_only_faces_that_passed_the_quality_gates_vote():
    voter, t = IdentityVoter(min_votes=3), track()
    assert cast(voter, t, ["ann"] * 10, quality_ok=False) == {}
    assert voter.vote(t, None, 11, True) is None  # no match (not embedded this frame): no vote
    assert voter.votes(t) == [] and not t.identity_confirmed


def test_one_confirmation_per_appearance_and_a_debounced_change():
    voter, t = IdentityVoter(min_votes=3, window=10, min_share=0.6, debounce_frames=30), track()
    first = cast(voter, t, ["ann"] * 40)
    assert list(first) == [2]  # 38 more ann votes: nothing new
    # A different person takes over the track at frame 40 (e.g. a tracker swap): needs 6 of the last 10.
    second = cast(voter, t, ["bob"] * 20, start=40)
    assert list(second) == [45] and second[45].identity == "bob" and t.identity == "bob"
    # Back to ann at once: a majority by frame 55, but within 30 frames of bob's confirmation.
    third = cast(voter, t, ["ann"] * 40, start=60)
    assert list(third) == [75] and third[75].identity == "ann"  # 45 + 30: the debounce, then once


def test_unknown_is_confirmed_once_under_the_anonymous_id():
    voter, t = IdentityVoter(min_votes=3), track(7, "door")
    confirmations = cast(voter, t, [None] * 30)
    assert len(confirmations) == 1
    (c,) = confirmations.values()
    assert c.identity is None and c.similarity == pytest.approx(0.7) and c.track_id == 7
    assert t.identity_confirmed and t.identity is None and t.anon_id == "door-t7"


def test_tracks_vote_independently_and_end_forgets():
    voter = IdentityVoter(min_votes=2, window=4, min_share=0.5)
    a, b, other_camera = track(1), track(2), track(1, "cam1")
    assert cast(voter, a, ["ann", "ann"])
    assert cast(voter, b, ["bob", "bob"])[1].identity == "bob"
    assert cast(voter, other_camera, ["cat", "cat"])[1].identity == "cat"
    assert len(voter) == 3
    voter.end(a)
    assert len(voter) == 2 and voter.votes(a) == []


def test_impossible_settings_are_rejected():
    with pytest.raises(ConfigError, match="cannot exceed"):
        IdentityVoter(min_votes=5, window=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ann", "bob", None]), max_size=80),
       st.integers(1, 3), st.integers(3, 8), st.sampled_from([0.34, 0.5, 0.6, 0.8]), st.integers(0, 10))
def test_every_confirmation_is_backed_by_the_window(names, min_votes, window, min_share, debounce):
    voter, t = IdentityVoter(min_votes, window, min_share, debounce), track()
    confirmations = cast(voter, t, names)
    previous = None
    for frame, c in confirmations.items():
        recent = names[max(0, frame + 1 - window):frame + 1]
        assert c.votes == recent.count(c.identity) >= min_votes
        assert c.votes / len(recent) >= min_share
        if previous is not None:
            assert c.identity != previous.identity and frame - previous.frame >= debounce
        previous = c
