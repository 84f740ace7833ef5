"""Identity voting: majority and share within the window, quality gating, one confirmation per appearance.

The voter only decides: it keys ballots by (camera, track id) and never sees a track; applying a confirmation
to the track is the tracker's (tests/video/test_tracker.py, tests/video/test_stages.py).
"""

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.app.config import VotingConfig, load_app_config
from pipeline.app.services import identity_voter
from pipeline.core.errors import ConfigError
from pipeline.gallery.matcher import Match
from pipeline.video.voting import IdentityVoter


def track(track_id=1, camera="cam0") -> tuple[str, int]:
    """A track as the voter knows it: (camera, track id)."""
    return camera, track_id


def match(identity, similarity=0.8) -> Match:
    return Match(identity, None if identity is None else f"id-{identity}", similarity, None, None, None)


def cast(voter, t, names, start=0, quality_ok=True):
    """Vote `names` on consecutive frames; returns {frame: Confirmation} for the frames that confirmed."""
    out = {}
    for frame, name in enumerate(names, start):
        confirmation = voter.vote(*t, match(name, 0.7 if name is None else 0.9), frame, quality_ok)
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


def test_min_share_holds_back_a_contested_track():
    voter, t = IdentityVoter(min_votes=3, window=10, min_share=0.7), track()
    confirmations = cast(voter, t, ["ann", "bob", "ann", "bob", "ann", "bob", "ann", "ann", "ann", "ann"])
    # ann has 3 votes at frame 4 (3/5), then 4/7, 5/8, 6/9: only 7/10 at frame 9 reaches the share.
    assert list(confirmations) == [9]
    assert confirmations[9].identity == "ann" and confirmations[9].votes == 7


def test_only_faces_that_passed_the_quality_gates_vote():
    voter, t = IdentityVoter(min_votes=3), track()
    assert cast(voter, t, ["ann"] * 10, quality_ok=False) == {}
    assert voter.vote(*t, None, 11, True) is None  # no match (not embedded this frame): no vote
    assert voter.votes(*t) == []


def test_one_confirmation_per_appearance_and_a_debounced_change():
    voter, t = IdentityVoter(min_votes=3, window=10, min_share=0.6, debounce_frames=30), track()
    first = cast(voter, t, ["ann"] * 40)
    assert list(first) == [2]  # 38 more ann votes: nothing new
    # A different person takes over the track at frame 40 (e.g. a tracker swap): needs 6 of the last 10.
    second = cast(voter, t, ["bob"] * 20, start=40)
    assert list(second) == [45] and second[45].identity == "bob"
    # Back to ann at once: a majority by frame 55, but within 30 frames of bob's confirmation.
    third = cast(voter, t, ["ann"] * 40, start=60)
    assert list(third) == [75] and third[75].identity == "ann"  # 45 + 30: the debounce, then once


def test_unknown_is_confirmed_once_under_the_anonymous_id():
    voter, t = IdentityVoter(min_votes=3), track(7, "door")
    confirmations = cast(voter, t, [None] * 30)
    assert len(confirmations) == 1
    (c,) = confirmations.values()
    assert c.identity is None and c.similarity == pytest.approx(0.7) and (c.camera, c.track_id) == ("door", 7)


def test_tracks_vote_independently_and_end_forgets():
    voter = IdentityVoter(min_votes=2, window=4, min_share=0.5)
    a, b, other_camera = track(1), track(2), track(1, "cam1")
    assert cast(voter, a, ["ann", "ann"])
    assert cast(voter, b, ["bob", "bob"])[1].identity == "bob"
    assert cast(voter, other_camera, ["cat", "cat"])[1].identity == "cat"
    assert len(voter) == 3
    voter.end(*a)
    assert len(voter) == 2 and voter.votes(*a) == []


def test_impossible_settings_are_rejected():
    """Checked once, where config is read (the voter takes plain values)."""
    with pytest.raises(ConfigError, match=r"min_votes \(5\) cannot exceed the window \(4\)"):
        load_app_config(None, ["voting.min_votes=5", "voting.window=4"])
    with pytest.raises(ValueError, match="cannot exceed"):
        VotingConfig(min_votes=5, window=4)
    with pytest.raises(ConfigError, match="voting.min_votes"):
        load_app_config(None, ["voting.min_votes=0"])
    voter = identity_voter(load_app_config(None, ["voting.min_votes=4", "voting.window=4"]))
    assert (voter.min_votes, voter.window, voter.min_share) == (4, 4, VotingConfig().min_share)


def test_library_defaults_equal_the_config_section():
    defaults = {name: p.default for name, p in inspect.signature(IdentityVoter).parameters.items()}
    assert defaults == VotingConfig().model_dump()


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


def test_weak_evidence_alone_never_confirms_a_name():
    voter, t = IdentityVoter(), track()
    for frame in range(30):  # weak votes of the most weight a weak face can have, all for one name
        assert voter.vote(*t, match("ann", 0.95), frame, weight=0.5, strong=False) is None
    assert voter.vote(*t, match("ann", 0.95), 30) is None  # one strict face: still short of min_strong_votes
    confirmed = voter.vote(*t, match("ann", 0.95), 31)
    assert confirmed is not None and confirmed.identity == "ann"


def test_strong_evidence_confirms_fast_and_weak_evidence_may_confirm_unknown():
    strong, t = IdentityVoter(), track()
    assert [strong.vote(*t, match("ann", 0.9), f) is not None for f in range(3)] == [False, False, True]
    weak = IdentityVoter()
    out = [weak.vote(*t, match(None, 0.5), f, weight=0.5, strong=False) for f in range(6)]
    assert [c is not None for c in out] == [False] * 5 + [True] and out[-1].identity is None


def test_two_strong_votes_plus_weak_weight_confirm():
    voter, t = IdentityVoter(), track()
    assert voter.vote(*t, match("ann", 0.9), 0) is None
    assert voter.vote(*t, match("ann", 0.9), 1, weight=0.5, strong=False) is None
    assert voter.vote(*t, match("ann", 0.9), 2, weight=0.5, strong=False) is None  # weight 2, one strong
    confirmed = voter.vote(*t, match("ann", 0.9), 3)
    assert confirmed is not None and confirmed.votes == 4
