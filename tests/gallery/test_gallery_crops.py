"""Aligned enrolment crops against a real Redis, from real photos: written in the templates' transaction, read
back as JPEGs of the aligned face that re-embed to their templates, carried by export/import, and gone with
every template or identity they belong to (right to be forgotten)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipeline.core.errors import GalleryError
from pipeline.gallery import GalleryStore
from pipeline.gallery.keys import GalleryKeys
from pipeline.gallery.portable import export_gallery, import_gallery
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder
from pipeline.recognise.enrollment import Enroller, EnrollmentReport
from pipeline.recognise.quality import QualityGates

AGEITGEY = "ageitgey_face_recognition_examples"
PHOTOS = [f"{AGEITGEY}/reference_photos/lin-manuel-miranda.png", f"{AGEITGEY}/other_photos/obama.jpg",
          f"{AGEITGEY}/other_photos/obama2.jpg", f"{AGEITGEY}/other_photos/biden.jpg"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def report(shared_data, embedder) -> EnrollmentReport:
    """Four real photos through the enrolment path: templates, ids and the JPEG of each aligned crop."""
    from pipeline.detect import MTCNN

    enroller = Enroller(MTCNN(max_side=1280), embedder, QualityGates())
    report = EnrollmentReport()
    for photo in PHOTOS:
        enroller.add_file(shared_data / photo, report)
    assert len(report.accepted) == len(PHOTOS), report.rejected_by_reason()
    return report


def crop_keys(client) -> list[bytes]:
    return [k for k in client.scan_iter("fs:*") if b":crops:" in k]


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def test_crops_are_kept_with_their_templates_and_re_embed_to_them(redis_client, report, embedder):
    store = GalleryStore(redis_client, "g")
    result = store.add("Ada", report.matrix(), report.template_ids, embedder.fingerprint, crops=report.crops())
    assert result.added == len(PHOTOS)
    crops = store.crops("Ada")
    assert sorted(crops) == sorted(report.template_ids)
    assert store.crop(result.identity.id, report.template_ids[0]) == crops[report.template_ids[0]]
    assert store.crop(result.identity.id, "no-such-template") is None
    images = [decode(crops[t]) for t in report.template_ids]
    assert {im.shape for im in images} == {(*embedder.size, 3)}  # the embedder's own aligned crop, full size
    assert all(len(crops[t]) < 20_000 for t in report.template_ids)
    # Good enough to re-enrol from: re-embedding the stored JPEG lands on the template it was kept with.
    again = embedder.embed(np.stack([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in images]))
    cosine = np.sum(again * report.matrix(), axis=1)
    assert cosine.min() > 0.995, cosine
    # The snapshot (what every worker reads) does not carry them.
    assert store.snapshot().matrix.shape[0] == len(PHOTOS)


def test_a_failed_write_writes_neither_templates_nor_crops(redis_client, report, embedder):
    store = GalleryStore(redis_client, "g")
    rows, tids, jpegs = report.matrix(), report.template_ids, report.crops()

    def refuse(identity_id):
        raise GalleryError("the other writer says no")
    with pytest.raises(GalleryError, match="says no"):
        store.add("Ada", rows, tids, embedder.fingerprint, crops=jpegs, also=refuse)
    with pytest.raises(GalleryError, match="JPEG bytes"):
        store.add("Ada", rows, tids, embedder.fingerprint, crops=[*jpegs[:-1], b"not a jpeg"])
    with pytest.raises(GalleryError, match="one JPEG .* per template id"):
        store.add("Ada", rows, tids, embedder.fingerprint, crops=jpegs[:-1])
    assert store.identities() == [] and crop_keys(redis_client) == []
    # One write, one change: templates and crops land in the same MULTI/EXEC.
    store.add("Ada", rows, tids, embedder.fingerprint, crops=jpegs)
    assert redis_client.xlen(store.keys.changes) == 1 and len(store.crops("Ada")) == len(tids)


def test_a_template_without_a_crop_gets_one_when_enrolled_again(redis_client, report, embedder):
    store = GalleryStore(redis_client, "g")
    rows, tids, jpegs = report.matrix(), report.template_ids, report.crops()
    store.add("Ada", rows[:2], tids[:2], embedder.fingerprint, crops=[jpegs[0], None])
    assert sorted(store.crops("Ada")) == [tids[0]]
    again = store.add("Ada", rows, tids, embedder.fingerprint, crops=jpegs)
    assert (again.added, again.duplicates) == (2, 2)
    assert store.crops("Ada") == dict(zip(tids, jpegs))
    assert store.add("Ada", rows, tids, embedder.fingerprint, crops=jpegs).added == 0  # nothing left to write
    assert redis_client.xlen(store.keys.changes) == 2


def test_removing_templates_identities_or_the_gallery_deletes_their_crops(redis_client, report, embedder):
    store = GalleryStore(redis_client, "g")
    rows, tids, jpegs = report.matrix(), list(report.template_ids), report.crops()
    auto = ["auto-" + t[:16] for t in tids[2:]]
    store.add("Ada", rows, tids[:2] + auto, embedder.fingerprint, crops=jpegs)
    store.add("Bob", rows, tids, embedder.fingerprint, crops=jpegs)
    assert store.remove_templates("Ada", [tids[0]]) == 1
    assert sorted(store.crops("Ada")) == sorted([tids[1], *auto])
    assert store.remove_auto_templates("Ada") == {"Ada": 2}
    assert sorted(store.crops("Ada")) == [tids[1]]
    assert store.remove("Ada") == 1
    assert [k for k in crop_keys(redis_client)] == [GalleryKeys("g").crops(store.get("Bob").id).encode()]
    store.clear()
    assert crop_keys(redis_client) == []


def test_export_import_carries_the_crops(redis_client, report, embedder, tmp_path):
    store = GalleryStore(redis_client, "g")
    store.add("Ada", report.matrix(), report.template_ids, embedder.fingerprint, crops=report.crops())
    export_gallery(store, tmp_path / "with.json")
    export_gallery(store, tmp_path / "without.json", crops=False)
    assert "crops" not in json.loads((tmp_path / "without.json").read_text())["identities"][0]
    other = GalleryStore(redis_client, "h")
    assert import_gallery(other, tmp_path / "with.json").added == len(PHOTOS)
    assert other.crops("Ada") == store.crops("Ada")

    doc = json.loads((tmp_path / "with.json").read_text())
    doc["identities"][0]["crops"] = {"not-a-template": next(iter(doc["identities"][0]["crops"].values()))}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(GalleryError, match="not in \"template_ids\""):
        import_gallery(GalleryStore(redis_client, "i"), tmp_path / "bad.json")
    assert not list(redis_client.scan_iter("fs:{i}:*"))


@pytest.mark.parametrize("camera", ["", "a:b", "{x}", "cam 1", "x" * 129, "é"])
def test_camera_names_must_be_safe_in_keys(camera):
    with pytest.raises(GalleryError, match="invalid camera name"):
        GalleryKeys("g").live(camera)


def test_camera_keys_share_the_gallery_hash_tag():
    keys = GalleryKeys("g")
    assert (keys.live("cam0"), keys.camera("door-1.b")) == ("fs:{g}:live:cam0", "fs:{g}:camera:door-1.b")
    assert keys.camera_pattern == "fs:{g}:camera:*"
