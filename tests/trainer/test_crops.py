"""The crop cache format (chunked, resumable, read-only memory maps) and `trainer prepare`, which fills it."""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.align import default_template
from pipeline.core.errors import ConfigError, FacestreamError
from pipeline.core.faces import Faces
from trainer.crops import CropCache, _shrink_npy
from trainer.prepare import CropOutcome, FaceCropper, centre_box, choose_face, prepare, scan_tree

SIZE = (8, 6)
SOURCES = [f"id{i % 3}/img{i}.jpg" for i in range(10)]
LABELS = [i % 3 for i in range(10)]
IDENTITIES = ["id0", "id1", "id2"]
SETTINGS = {"template": None, "detector": {"name": "Fake"}, "fallback": "centre"}


def crop_for(i: int) -> np.ndarray:
    return np.full((*SIZE, 3), i, dtype=np.uint8)


def writer(folder, chunk_size=4, settings=SETTINGS):
    return CropCache.create(folder, sources=SOURCES, labels=LABELS, identities=IDENTITIES, size=SIZE,
                            settings=settings, chunk_size=chunk_size)


def feed(w, stop=None):
    """Image 3 has no face, image 7 is unreadable, image 5 is a centre fallback, the rest are detected."""
    while w.next_source < (stop or len(SOURCES)):
        i = w.next_source
        if i == 3:
            w.add_failure("no_face", "no face detected")
        elif i == 7:
            w.add_failure("unreadable", "cannot decode")
        else:
            w.add_crop(crop_for(i), "centre_fallback" if i == 5 else "detected")


def check_cache(cache: CropCache):
    kept = [i for i in range(10) if i not in (3, 7)]
    assert len(cache) == 8 and cache.crops.shape == (8, *SIZE, 3)
    assert isinstance(cache.crops, np.memmap) and not cache.crops.flags.writeable
    np.testing.assert_array_equal(cache.crops[:, 0, 0, 0], kept)
    np.testing.assert_array_equal(cache.labels, [LABELS[i] for i in kept])
    assert cache.labels.dtype == np.int32
    assert cache.paths == [SOURCES[i] for i in kept]
    assert cache.status == ["centre_fallback" if i == 5 else "detected" for i in kept]
    assert cache.failures == [{"path": SOURCES[3], "reason": "no_face", "detail": "no face detected"},
                              {"path": SOURCES[7], "reason": "unreadable", "detail": "cannot decode"}]
    assert cache.counts == {"images": 10, "processed": 10, "crops": 8, "detected": 7, "centre_fallback": 1,
                            "no_face": 1, "unreadable": 1, "identities": 3, "identities_with_crops": 3}
    assert cache.size == SIZE and cache.identities == IDENTITIES
    assert cache.meta["detector"] == {"name": "Fake"} and cache.meta["template"] is None
    assert np.load(cache.folder / "crops.npy").shape == (8, *SIZE, 3)  # the file itself was shrunk


def test_write_and_open(tmp_path):
    w = writer(tmp_path / "cache")
    feed(w)
    check_cache(w.finalise())
    check_cache(CropCache.open(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "progress.json").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["crops.npy", "labels.npy", "meta.json"]


def test_unfinished_cache_does_not_open(tmp_path):
    w = writer(tmp_path / "cache")
    feed(w, stop=5)
    w.commit()
    with pytest.raises(FacestreamError, match="not a finished crop cache.*re-run prepare to resume"):
        CropCache.open(tmp_path / "cache")


def test_resume_after_crash_loses_only_uncommitted_work(tmp_path):
    w = writer(tmp_path / "cache", chunk_size=4)
    feed(w, stop=6)  # 4 committed by the chunk, 2 pending
    w._crops[3:] = 255  # rows written after the last commit hold junk, as a crashed run would leave them
    w._crops.flush()
    del w  # crash: no commit
    state = json.loads((tmp_path / "cache" / "progress.json").read_text())
    assert state["next_source"] == 4 and len(state["paths"]) == 3  # image 3 was a failure
    resumed = writer(tmp_path / "cache", chunk_size=4)
    assert resumed.next_source == 4 and resumed.resumed_from == 4
    feed(resumed)
    check_cache(resumed.finalise())


def test_resume_after_crash_inside_finalise(tmp_path):
    w = writer(tmp_path / "cache")
    feed(w)
    w.commit()
    _shrink_npy(tmp_path / "cache" / "crops.npy", 8)  # finalise got this far, then died
    check_cache(writer(tmp_path / "cache").finalise())


def test_resume_with_other_settings_is_refused(tmp_path):
    w = writer(tmp_path / "cache")
    feed(w, stop=5)
    w.commit()
    with pytest.raises(ConfigError, match="other images or settings"):
        writer(tmp_path / "cache", settings={**SETTINGS, "fallback": "none"})


def test_finished_cache_is_not_rewritten(tmp_path):
    w = writer(tmp_path / "cache")
    feed(w)
    w.finalise()
    with pytest.raises(FacestreamError, match="already holds a finished crop cache"):
        writer(tmp_path / "cache")


@pytest.mark.parametrize("call, message", [
    (lambda w: w.add_crop(np.zeros((4, 4, 3), np.uint8), "detected"), r"shape \(8, 6, 3\)"),
    (lambda w: w.add_crop(crop_for(0), "maybe"), "crop status must be one of"),
    (lambda w: w.add_failure("lost"), "failure reason must be one of"),
    (lambda w: w.finalise(), "0 of 10 source images have an outcome"),
])
def test_writer_rejects_bad_input(tmp_path, call, message):
    with pytest.raises((ValueError, FacestreamError), match=message):
        call(writer(tmp_path / "cache"))


def test_all_failures_give_an_empty_cache(tmp_path):
    w = CropCache.create(tmp_path / "c", sources=["a/1.jpg"], labels=[0], identities=["a"], size=SIZE,
                         settings=SETTINGS)
    w.add_failure("no_face")
    cache = w.finalise()
    assert len(cache) == 0 and cache.crops.shape == (0, *SIZE, 3)
    assert cache.counts["identities_with_crops"] == 0


def test_shrink_npy_keeps_leading_rows(tmp_path):
    path = tmp_path / "a.npy"
    data = np.arange(12 * 5 * 3, dtype=np.uint8).reshape(12, 5, 3)
    np.save(path, data)
    _shrink_npy(path, 10)
    np.testing.assert_array_equal(np.load(path), data[:10])
    _shrink_npy(path, 10)  # idempotent
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), data[:10])


# --- `trainer prepare` on a small real tree: LFW, ORL (.pgm), Yale (.png), a blank image, a fake .jpg -----

CROP = (112, 112)


@pytest.fixture(scope="module")
def mtcnn():
    from pipeline.detect import MTCNN

    return MTCNN()


class StoppingDetector:
    """Wraps a detector and raises on call number `fail_on` (1-based): a crash in the middle of a run."""

    def __init__(self, inner, fail_on: int):
        self.inner, self.fail_on, self.calls = inner, fail_on, 0
        self.min_face_size, self.thresholds = inner.min_face_size, inner.thresholds
        self.scale_factor = inner.scale_factor

    def detect(self, images):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("simulated crash")
        return self.inner.detect(images)


# Record the wrapped detector's name, so a cache started by the real MTCNN resumes under the wrapper.
StoppingDetector.__name__ = "MTCNN"


@pytest.fixture(scope="module")
def tree(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    lfw = shared_data / "lfw" / "images"
    names = [d for d in sorted(p.name for p in lfw.iterdir())[:40] if len(list((lfw / d).iterdir())) >= 2][:6]
    for name in names:
        (root / name).mkdir()
        for image in sorted((lfw / name).iterdir())[:2]:
            (root / name / image.name).symlink_to(image)
    (root / names[0] / "notes.jpg").write_text("not an image")
    (root / "orl_s1").mkdir()
    for i in (1, 2, 3):
        (root / "orl_s1" / f"{i}.pgm").symlink_to(shared_data / "orl_att_faces" / "s1" / f"{i}.pgm")
    (root / "yale_subject01").mkdir()
    for cond in ("happy", "normal"):
        name = f"subject01.{cond}.png"
        (root / "yale_subject01" / name).symlink_to(shared_data / "yalefaces" / "subject01" / name)
    (root / "blank").mkdir()
    cv2.imwrite(str(root / "blank" / "grey.png"), np.full((120, 100), 128, np.uint8))
    (root / "empty_identity").mkdir()
    return root


@pytest.fixture(scope="module")
def full_cache(tree, mtcnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "cache"
    summary = prepare(tree, out, size=CROP, detector=mtcnn, batch_size=4, chunk_size=4, progress=False)
    return summary, CropCache.open(out)


def test_scan_tree(tree):
    scanned = scan_tree(tree)
    assert scanned.identities[-3:] == ["blank", "orl_s1", "yale_subject01"]  # empty_identity is skipped
    assert len(scanned.paths) == 19 and len(scanned.identities) == 9
    assert all(scanned.paths[i].startswith(scanned.identities[scanned.labels[i]] + "/") for i in range(19))


def test_prepare_real_tree(full_cache):
    summary, cache = full_cache
    assert summary.complete and summary.images == 19 and summary.processed == 19
    assert summary.unreadable == 1 and summary.no_face == 0 and summary.failed == 1
    assert summary.fallback == 1 and summary.detected == 17 and summary.crops == 18 == len(cache)
    assert cache.crops.shape == (18, *CROP, 3) and cache.crops.dtype == np.uint8
    assert cache.status[cache.paths.index("blank/grey.png")] == "centre_fallback"
    [failure] = cache.failures
    assert failure["path"].endswith("/notes.jpg") and failure["reason"] == "unreadable"
    assert "notes.jpg" in failure["detail"]
    assert len(set(cache.paths)) == len(cache.paths)
    for path, label in zip(cache.paths, cache.labels):
        assert path.split("/")[0] == cache.identities[label]
    assert cache.meta["detector"]["min_face_size"] == 20 and cache.meta["fallback"] == "centre"
    np.testing.assert_allclose(cache.meta["template"], default_template(CROP), atol=1e-4)  # the one used
    # Grayscale sources still give 3 equal channels; colour LFW crops do not.
    orl = cache.crops[cache.paths.index("orl_s1/1.pgm")]
    assert np.array_equal(orl[..., 0], orl[..., 2])
    lfw = cache.crops[0]
    assert not np.array_equal(lfw[..., 0], lfw[..., 2])


def test_prepare_rerun_does_nothing(full_cache, tree, mtcnn):
    summary, cache = full_cache
    before = (cache.folder / "meta.json").stat().st_mtime_ns
    again = prepare(tree, cache.folder, size=CROP, detector=StoppingDetector(mtcnn, fail_on=1), progress=False)
    assert again == summary and (cache.folder / "meta.json").stat().st_mtime_ns == before


def test_prepare_refuses_other_settings(full_cache, tree, mtcnn):
    with pytest.raises(ConfigError, match="other images or settings"):
        prepare(tree, full_cache[1].folder, size=(96, 96), detector=mtcnn, progress=False)


def test_prepare_resumes_after_limit_and_crash(full_cache, tree, mtcnn, tmp_path):
    out = tmp_path / "cache"
    # Batch boundaries match the full run's (limit 8 = two batches), so the detector sees the same batches and
    # the crops must come out bit-identical (MTCNN's float results depend slightly on batch composition).
    first = prepare(tree, out, size=CROP, detector=mtcnn, batch_size=4, chunk_size=4, limit=8, progress=False)
    assert not first.complete and first.processed == 8
    with pytest.raises(FacestreamError, match="unfinished"):
        CropCache.open(out)
    crashing = StoppingDetector(mtcnn, fail_on=2)  # batch 8-11 commits, then batch 12-15 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(tree, out, size=CROP, detector=crashing, batch_size=4, chunk_size=4, progress=False)
    assert json.loads((out / "progress.json").read_text())["next_source"] == 12
    final = prepare(tree, out, size=CROP, detector=mtcnn, batch_size=4, chunk_size=4, progress=False)
    reference = full_cache[1]
    cache = CropCache.open(out)
    assert final == dataclasses.replace(full_cache[0], out=str(out))
    assert cache.paths == reference.paths and cache.status == reference.status
    np.testing.assert_array_equal(cache.labels, reference.labels)
    np.testing.assert_array_equal(cache.crops, reference.crops)


def test_prepare_without_fallback_records_no_face(tree, mtcnn, tmp_path):
    small = tmp_path / "small"
    for rel in ("blank/grey.png", "orl_s1/1.pgm"):
        (small / rel).parent.mkdir(parents=True)
        (small / rel).symlink_to(tree / rel)
    summary = prepare(small, tmp_path / "cache", size=CROP, fallback="none", detector=mtcnn, progress=False)
    assert (summary.no_face, summary.detected, summary.fallback, summary.crops) == (1, 1, 0, 1)
    assert CropCache.open(tmp_path / "cache").failures[0]["reason"] == "no_face"


def test_choose_face_prefers_the_centred_face():
    # A 250x250 image: a big face in the corner and a smaller one in the middle.
    xyxy = np.array([[0, 0, 110, 110], [90, 90, 160, 160], [120, 120, 130, 130]], np.float32)
    faces = Faces(xyxy, np.zeros((3, 5, 2)), np.ones(3))
    assert choose_face(faces, (250, 250, 3)) == 1
    with pytest.raises(ValueError):
        choose_face(Faces.empty(), (250, 250, 3))


@pytest.mark.parametrize("shape, size, fraction, box", [
    ((112, 92, 3), (112, 112), 1.0, (0, 10, 92, 102)),
    ((250, 250, 3), (160, 160), 0.6, (50, 50, 200, 200)),
    ((100, 200, 3), (100, 50), 1.0, (75, 0, 125, 100)),
])
def test_centre_box(shape, size, fraction, box):
    assert centre_box(shape, size, fraction) == box


def test_cropper_fallback_on_blank_image(mtcnn):
    cropper = FaceCropper(mtcnn, (64, 48), fallback="centre")
    [outcome] = cropper.crop([np.full((80, 60), 200, np.uint8)])
    assert outcome.status == "centre_fallback" and outcome.crop.shape == (64, 48, 3)
    assert FaceCropper(mtcnn, (64, 48), fallback="none").crop([np.zeros((80, 60, 3), np.uint8)]) == [
        CropOutcome(None, "no_face")]
