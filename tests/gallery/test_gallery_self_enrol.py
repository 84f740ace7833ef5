"""Self-enrolment rules and template removal (auto templates) against a real redis-server."""

import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryMirror, GalleryStore
from pipeline.gallery import self_enrol as se
from pipeline.gallery.identity import AUTO_PREFIX
from pipeline.gallery.self_enrol import SelfEnrolment, auto_template_id

DIM = 16
THRESHOLD = 0.5


def turned(degrees: float, axis: int = 1) -> np.ndarray:
    """A unit vector `degrees` away from the first axis, towards `axis`."""
    vector = np.zeros(DIM, np.float32)
    vector[0], vector[axis] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return vector


def at(cos: float, axis: int = 1) -> np.ndarray:
    return turned(float(np.degrees(np.arccos(cos))), axis)


MANUAL = turned(0)


def gallery_keys(client) -> dict[bytes, bytes]:
    return {k: client.dump(k) for k in client.scan_iter("fs:*")}


@pytest.fixture
def store(redis_client) -> GalleryStore:
    store = GalleryStore(redis_client, "self")
    store.add("Ada", MANUAL[None], ["photo-1"], "model-1")
    return store


def ada_id(store) -> str:
    return store.get("Ada").id


def consider(enrol, store, face, similarity=None, runner_up=0.2, strong=True, identity_id=None):
    similarity = float(max(store.templates("Ada") @ face)) if similarity is None else similarity
    return enrol.consider(store, identity_id or ada_id(store), face, similarity, runner_up, THRESHOLD, strong)


def test_a_clear_strong_match_becomes_one_auto_template(store):
    enrol = SelfEnrolment()
    face = at(0.8)
    decision = consider(enrol, store, face)
    assert decision == se.Decision(True, se.ADDED, auto_template_id(face))
    assert decision.template_id.startswith(AUTO_PREFIX) and len(decision.template_id) == len(AUTO_PREFIX) + 16
    _, tids, templates = store.read_full(ada_id(store))
    assert tids == [decision.template_id, "photo-1"]
    np.testing.assert_allclose(templates[0], face, atol=1e-6)
    assert enrol.decisions == {se.ADDED: 1}
    assert consider(enrol, store, at(0.8), runner_up=None).reason == se.NOT_DIVERSE  # it has that face now


def test_the_template_id_is_the_hash_of_the_int8_rounded_face():
    face = at(0.8)
    assert auto_template_id(face) == auto_template_id(face + 1e-4)  # rounding to int8 absorbs noise
    assert auto_template_id(face) != auto_template_id(at(0.79))


def with_auto(store, *faces):
    for face in faces:
        store.add("Ada", face[None], [auto_template_id(face)], "model-1")
    return store


# (face, similarity reported by the matcher, runner-up, strong, setup, options) -> reason
RULES = {
    "accepted": (at(0.8), 0.8, 0.2, True, None, {}, se.ADDED),
    "no runner-up": (at(0.8), 0.8, None, True, None, {}, se.ADDED),
    "weak face": (at(0.8), 0.8, 0.2, False, None, {}, se.WEAK_FACE),
    "low similarity": (at(0.55), 0.55, 0.2, True, None, {}, se.LOW_SIMILARITY),
    "just high enough": (at(0.6), 0.6, 0.2, True, None, {}, se.ADDED),
    "small margin": (at(0.8), 0.8, 0.75, True, None, {}, se.SMALL_MARGIN),
    "cap": (at(0.7, 3), 0.7, 0.2, True, lambda s: with_auto(s, at(0.8)), {"max_auto": 1}, se.AUTO_CAP),
    "under the cap": (at(0.7, 3), 0.7, 0.2, True, lambda s: with_auto(s, at(0.8)), {"max_auto": 2}, se.ADDED),
    "not diverse": (at(0.95), 0.95, 0.2, True, None, {}, se.NOT_DIVERSE),
    "not diverse from an auto": (at(0.8, 2), 0.8, 0.2, True,
                                 lambda s: with_auto(s, (at(0.8, 2) + 0.05 * at(0, 5)) / 1.00125), {},
                                 se.NOT_DIVERSE),
    "drift": (turned(75), 0.9, 0.2, True, lambda s: with_auto(s, turned(50)), {}, se.DRIFT),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_each_rule(store, redis_client, case):
    face, similarity, runner_up, strong, setup, options, reason = RULES[case]
    if setup:
        setup(store)
    before = gallery_keys(redis_client)
    enrol = SelfEnrolment(**options)
    decision = enrol.consider(store, ada_id(store), face, similarity, runner_up, THRESHOLD, strong)
    assert decision.reason == reason and decision.added == (reason == se.ADDED)
    assert enrol.decisions == {reason: 1}
    if reason != se.ADDED:
        assert decision.template_id is None and gallery_keys(redis_client) == before


def test_a_harmonic_models_faces_are_never_added_to_the_older_models_gallery(store, redis_client, caplog):
    # The live pipeline runs model-2 (harmonic with model-1) against Ada's model-1 gallery: it matches her, but a
    # face that passes every rule is a decision, not a crash, and is warned about once.
    enrol = SelfEnrolment(fingerprint="model-2")
    before = gallery_keys(redis_client)
    with caplog.at_level("WARNING", logger="pipeline.gallery.self_enrol"):
        decisions = [consider(enrol, store, at(cos)) for cos in (0.8, 0.75, 0.7)]
    assert [d.reason for d in decisions] == [se.OTHER_MODEL] * 3 and not any(d.added for d in decisions)
    assert enrol.decisions == {se.OTHER_MODEL: 3} and gallery_keys(redis_client) == before
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "model-1" in warnings[0] and "model-2" in warnings[0] and "migrate --model" in warnings[0]
    # Its own model's gallery: added, under the embedder's fingerprint.
    assert consider(SelfEnrolment(fingerprint="model-1"), store, at(0.8)).reason == se.ADDED


def test_an_identity_that_is_gone_is_a_decision_not_an_error(store, redis_client):
    enrol = SelfEnrolment()
    assert enrol.consider(store, "0" * 32, at(0.8), 0.8, 0.2, THRESHOLD, True).reason == se.NO_IDENTITY
    assert [i.name for i in store.identities()] == ["Ada"]


def test_identity_removed_between_the_rules_and_the_write_is_not_re_created(store):
    enrol, identity_id, read_full = SelfEnrolment(), ada_id(store), store.read_full

    def read_then_remove(wanted):
        found = read_full(wanted)
        store.remove("Ada")  # another worker forgets Ada while we decide
        return found
    store.read_full = read_then_remove
    assert enrol.consider(store, identity_id, at(0.8), 0.8, 0.2, THRESHOLD, True).reason == se.NO_IDENTITY
    assert store.identities() == []


def test_identity_renamed_away_and_name_reused_gets_nothing(store):
    enrol, identity_id, read_full = SelfEnrolment(), ada_id(store), store.read_full

    def read_then_reuse(wanted):
        found = read_full(wanted)
        store.rename("Ada", "Ada L")
        store.add("Ada", turned(90)[None], ["other"], "model-1")  # a different person now called Ada
        return found
    store.read_full = read_then_reuse
    assert enrol.consider(store, identity_id, at(0.8), 0.8, 0.2, THRESHOLD, True).reason == se.NO_IDENTITY
    assert store.get("Ada").templates == 1 and store.get("Ada L").templates == 1


def test_the_cap_is_rechecked_in_the_write(store):
    enrol, read_full = SelfEnrolment(max_auto=1), store.read_full

    def read_then_fill(wanted):
        found = read_full(wanted)
        with_auto(store, at(0.7, 3))  # another worker self-enrols Ada meanwhile
        return found
    store.read_full = read_then_fill
    assert enrol.consider(store, ada_id(store), at(0.8), 0.8, 0.2, THRESHOLD, True).reason == se.AUTO_CAP
    assert store.get("Ada").templates == 2


def test_a_walk_away_from_the_manual_template_stops_where_it_no_longer_matches_it(store):
    """Each face turns 25 degrees further from the enrolled photo and is a confident match of the identity's
    nearest template; without the drift guard every step would become the next link of the chain."""
    enrol = SelfEnrolment(margin_above=0.1, diversity=0.92, max_auto=10)
    decisions = []
    for step in range(1, 5):
        face = turned(25 * step)
        similarity = float(max(store.templates("Ada") @ face))  # what the matcher reports: best template
        assert similarity >= THRESHOLD + 0.1  # confident: the similarity rule would let every step through
        decisions.append(enrol.consider(store, ada_id(store), face, similarity, None, THRESHOLD, True).reason)
    # cos(50 deg) = 0.64 >= 0.5 still matches the photo; cos(75 deg) = 0.26 does not, nor anything further.
    assert decisions == [se.ADDED, se.ADDED, se.DRIFT, se.DRIFT]
    _, tids, templates = store.read_full(ada_id(store))
    assert sum(t.startswith(AUTO_PREFIX) for t in tids) == 2
    assert (templates @ MANUAL).min() >= THRESHOLD  # every template still matches what the person enrolled


def test_the_drift_guard_is_on_the_matchers_cohort_normalised_score(store):
    """With a cohort, the matcher's similarity and threshold are raw cosine minus the face's offset: the guard
    subtracts it too, so a face whose raw cosine to the photo clears the threshold only by less than its
    offset is not added."""
    face = at(0.55)  # raw 0.55 to the enrolled photo: above THRESHOLD (0.5) on raw cosines
    with_auto(store, at(0.9))  # an auto template the face is close to (the matcher named it through that one)
    best = float(max(store.templates("Ada") @ face))
    plain = SelfEnrolment(margin_above=0.0, min_margin=0.0, diversity=0.999)
    assert plain.consider(store, ada_id(store), face, best, None, THRESHOLD, True).reason == se.ADDED
    store.remove_auto_templates("Ada")
    with_auto(store, at(0.9))
    offset = 0.1  # the face resembles strangers: its scores are 0.1 lower, 0.55 - 0.1 < 0.5 to the photo
    decision = plain.consider(store, ada_id(store), face, best - offset, None, THRESHOLD, True, offset)
    assert decision.reason == se.DRIFT
    with pytest.raises(GalleryError, match="finite offset"):
        plain.consider(store, ada_id(store), face, best, None, THRESHOLD, True, float("nan"))


def test_an_identity_with_only_auto_templates_never_self_enrols(redis_client):
    store = GalleryStore(redis_client, "autos")
    store.add("Bot", MANUAL[None], [auto_template_id(MANUAL)], "m")
    identity_id = store.get("Bot").id
    assert SelfEnrolment().consider(store, identity_id, at(0.8), 0.8, None, THRESHOLD, True).reason == se.DRIFT


HOSTILE = {
    "nan face": (lambda f: np.full(DIM, np.nan), 0.8, "NaN or inf"),
    "wrong dim": (lambda f: f[:8] / np.linalg.norm(f[:8]), 0.8, "holds 16-d templates; refusing a 8-d face"),
    "not unit": (lambda f: 3 * f, 0.8, "unit length"),
    "nan similarity": (lambda f: f, float("nan"), "finite similarity"),
    "no similarity": (lambda f: f, None, "finite similarity"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inputs_are_refused_with_nothing_written(store, redis_client, case):
    make, similarity, message = HOSTILE[case]
    before = gallery_keys(redis_client)
    with pytest.raises(GalleryError, match=message):
        SelfEnrolment().consider(store, ada_id(store), make(at(0.8)), similarity, 0.2, THRESHOLD, True)
    with pytest.raises(GalleryError, match="finite threshold"):  # a Match decided without one
        SelfEnrolment().consider(store, ada_id(store), at(0.8), 0.8, 0.2, None, True)
    assert gallery_keys(redis_client) == before


@pytest.mark.parametrize("options, message", [
    ({"diversity": 0.0}, "diversity must be a cosine in"), ({"diversity": 1.5}, "diversity"),
    ({"max_auto": 0}, "max_auto must be a positive integer"), ({"max_auto": 2.5}, "max_auto"),
    ({"margin_above": -0.1}, "margin_above"), ({"min_margin": float("nan")}, "min_margin"),
])
def test_settings_are_checked(options, message):
    with pytest.raises(GalleryError, match=message):
        SelfEnrolment(**options)


# -- removing templates ----------------------------------------------------------------------------------
def test_remove_templates_drops_only_those_and_logs_one_change(store):
    store.add("Ada", np.stack([at(0.7), at(0.6)]), ["photo-2", "photo-3"], "model-1")
    seq = store.head()[0]
    assert store.remove_templates("Ada", ["photo-2", "photo-3", "not-there", "photo-3"]) == 2
    assert store.read_full(ada_id(store))[1] == ["photo-1"]
    (change,) = store.changes(f"{seq}-0")
    assert (change.op, change.identity_ids, change.names) == ("remove_templates", (ada_id(store),), ("Ada",))
    assert store.remove_templates("Ada", ["not-there"]) == 0 and store.head()[0] == seq + 1  # no-op: no write


def test_remove_auto_templates_never_touches_manual_ones(store, redis_client):
    with_auto(store, at(0.8), at(0.7, 3))
    store.add("Bob", np.stack([turned(90), turned(80, 2)]), ["b1", auto_template_id(turned(80, 2))], "model-1")
    store.add("Cy", turned(90, 3)[None], ["c1"], "model-1")
    seq = store.head()[0]
    with GalleryMirror(store, poll_ms=50) as mirror:
        assert store.remove_auto_templates("Ada") == {"Ada": 2}
        assert store.read_full(ada_id(store))[1] == ["photo-1"]
        assert store.remove_auto_templates() == {"Bob": 1}
        assert store.remove_auto_templates() == {}
        assert mirror.wait_for(lambda s: len(s.owner) == 3, 2)
    assert [c.op for c in store.changes(f"{seq}-0")] == ["remove_templates"] * 2
    assert {i.name: i.templates for i in store.identities()} == {"Ada": 1, "Bob": 1, "Cy": 1}


def test_removing_templates_from_a_server_index_removes_their_elements(redis_client):
    store = GalleryStore.open(redis_client, "indexed", server_index_for_new=True)
    store.add("Ada", np.stack([MANUAL, at(0.8)]), ["photo-1", auto_template_id(at(0.8))], "m")
    assert redis_client.execute_command("VCARD", store.keys.vset) == 2
    store.remove_auto_templates()
    assert redis_client.execute_command("VCARD", store.keys.vset) == 1


REMOVAL_HOSTILE = {
    "unknown name": (lambda s: s.remove_templates("Nobody", ["photo-1"]), "no identity named 'Nobody'"),
    "empty ids": (lambda s: s.remove_templates("Ada", []), "no template ids given"),
    "string ids": (lambda s: s.remove_templates("Ada", "photo-1"), "must be a list of strings"),
    "last template": (lambda s: s.remove_templates("Ada", ["photo-1", auto_template_id(at(0.8))]),
                      "would leave 'Ada' without templates"),
    "unknown auto": (lambda s: s.remove_auto_templates("Nobody"), "no identity named 'Nobody'"),
    "only auto": (lambda s: s.remove_auto_templates(), "'Bot' has only auto templates"),
}


@pytest.mark.parametrize("case", sorted(REMOVAL_HOSTILE))
def test_hostile_removals_are_refused_with_nothing_written(store, redis_client, case):
    with_auto(store, at(0.8))
    store.add("Bot", MANUAL[None], [auto_template_id(turned(5))], "model-1")
    before = gallery_keys(redis_client)
    call, message = REMOVAL_HOSTILE[case]
    with pytest.raises(GalleryError, match=message):
        call(store)
    assert gallery_keys(redis_client) == before
