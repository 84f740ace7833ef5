"""Safe self-enrolment on the real Hamilton clip (gallery.auto_enrol): confident faces of Lin-Manuel Miranda add
marked templates that still match his enrolled photo, never more than the cap, and one command removes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.app.config import AppConfig, load_app_config
from pipeline.app.services import gallery_operating_point
from pipeline.app.session import RunOptions, Session
from pipeline.core.model_card import load_card
from pipeline.gallery import GalleryStore
from pipeline.gallery.identity import is_auto

CLIP = "ageitgey_face_recognition_examples/video/short_hamilton_clip.mp4"
PHOTOS = {"Lin-Manuel Miranda": "ageitgey_face_recognition_examples/reference_photos/lin-manuel-miranda.png",
          "Alex Lacamoire": "ageitgey_face_recognition_examples/reference_photos/alex-lacamoire.png"}
GALLERY = "test-self-enrol"


@pytest.fixture
def gallery(redis_server, enrol_photos):
    enrol_photos(GALLERY, PHOTOS)
    return GalleryStore(redis_server.client(), GALLERY), load_card(Path("models/facestream-default.json"))


def run(redis_server, shared_data, overrides: list[str]) -> dict:
    session = Session(load_app_config(None, overrides),
                      RunOptions(sources=[("stage", str(shared_data / CLIP))], gallery=GALLERY,
                                 redis_url=redis_server.url))
    try:
        return session.run()
    finally:
        session.close()


def test_off_by_default_the_gallery_does_not_change(gallery, redis_server, shared_data):
    store, _ = gallery
    run(redis_server, shared_data, [])
    assert [i.templates for i in store.identities()] == [1, 1]


def test_confident_faces_add_capped_marked_templates_that_match_the_photo(gallery, redis_server, shared_data):
    store, card = gallery
    summary = run(redis_server, shared_data, ["gallery.auto_enrol=true", "self_enrolment.margin_above=0.05",
                                              "self_enrolment.max_auto=3"])
    decisions = summary["unknowns"]["self_enrolment"]
    assert decisions.get("added", 0) >= 1, decisions
    lin = store.get("Lin-Manuel Miranda")
    _, template_ids, templates = store.read_full(lin.id)
    auto = np.array([is_auto(t) for t in template_ids])
    assert 1 <= auto.sum() <= 3 and (~auto).sum() == 1
    threshold = gallery_operating_point(AppConfig(), card, [1, 1]).threshold
    assert (templates[auto] @ templates[~auto][0] >= threshold).all()  # the drift guard held
    assert store.get("Alex Lacamoire").templates == 1  # never seen confidently: untouched
    assert store.remove_auto_templates(None) == {"Lin-Manuel Miranda": int(auto.sum())}
    assert store.get("Lin-Manuel Miranda").templates == 1
