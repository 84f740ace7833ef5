"""Upgrading the model, against a real Redis server and real photos: a harmonic model (its card lists the
gallery's model in `harmonic_with`) matches an older model's gallery but never writes to it; `enroll.py migrate`
re-embeds a gallery from its stored aligned crops into a gallery bound to the new model.

The "new model" is the shipped one with other ONNX metadata (its doc_string): the same graph, so the same
embedding of the same crop, under another fingerprint. That gives migrated templates an exact oracle: the old
model's embedding of the stored crop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import enroll
from pipeline.app.config import AppConfig
from pipeline.app.migration import MIGRATED, NEED_NEW_PHOTOS, alignment_mismatch, open_migration, target_gallery
from pipeline.app.operator import Operator
from pipeline.app.services import open_live_gallery
from pipeline.core.errors import ConfigError, GalleryError
from pipeline.core.images import read_image
from pipeline.core.model_card import fingerprint_file, load_card, onnx_path, save_card
from pipeline.gallery import GalleryStore
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder
from pipeline.recognise.enrollment import Enroller, EnrollmentReport
from pipeline.recognise.quality import QualityGates

REPO = Path(__file__).resolve().parents[2]
AGEITGEY = "ageitgey_face_recognition_examples"
PEOPLE = {"Lin": [f"{AGEITGEY}/reference_photos/lin-manuel-miranda.png"],
          "Obama": [f"{AGEITGEY}/other_photos/obama.jpg", f"{AGEITGEY}/other_photos/obama2.jpg"],
          "Biden": [f"{AGEITGEY}/other_photos/biden.jpg"]}
PROBE = f"{AGEITGEY}/knn_examples/test/obama1.jpg"  # enrolled nowhere
NEW_ID = "facestream-test-v2"
TARGET = f"default.{NEW_ID}"
AUTO = "auto-0123456789abcdef"


@pytest.fixture(scope="module")
def old() -> Embedder:
    return Embedder(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def cards(tmp_path_factory, old) -> dict[str, Path]:
    """The v2 model (the shipped graph under another fingerprint): a card harmonic with v1, and a plain one."""
    import onnx

    folder = tmp_path_factory.mktemp("v2")
    model = onnx.load(str(onnx_path(old.card, DEFAULT_MODEL)))
    model.doc_string = "the default model's graph under another fingerprint (tests/app/test_migrate.py)"
    onnx.save(model, str(folder / "v2.onnx"))
    base = old.card.model_copy(update={"model_id": NEW_ID, "fingerprint": fingerprint_file(folder / "v2.onnx"),
                                       "onnx": "v2.onnx", "harmonic_with": [], "harmonic_thresholds": {},
                                       "cohort": None})  # raw cosines: the cohort is tested on its own
    assert base.fingerprint != old.fingerprint
    # As calibrated by `trainer calibrate --gallery-model`: v2 faces against v1 templates, a curve of their own.
    cross = {far: threshold - 0.05 for far, threshold in base.thresholds.items()}
    return {"harmonic": save_card(base.model_copy(update={"harmonic_with": [old.fingerprint]}),
                                  folder / "harmonic.json"),
            "calibrated": save_card(base.model_copy(update={"harmonic_with": [old.fingerprint],
                                                            "harmonic_thresholds": {old.fingerprint: cross}}),
                                    folder / "calibrated.json"),
            "plain": save_card(base, folder / "plain.json")}


@pytest.fixture(scope="module")
def harmonic(cards) -> Embedder:
    return Embedder(cards["harmonic"])


@pytest.fixture(scope="module")
def detector():
    from pipeline.detect import MTCNN

    return MTCNN(max_side=1280)


@pytest.fixture(scope="module")
def reports(shared_data, old, detector) -> dict[str, EnrollmentReport]:
    """Each person's photos through the enrolment path (templates, ids, aligned JPEG crops), once."""
    enroller, found = Enroller(detector, old, QualityGates()), {}
    for name, photos in PEOPLE.items():
        found[name] = EnrollmentReport()
        for photo in photos:
            enroller.add_file(shared_data / photo, found[name])
        assert len(found[name].accepted) == len(photos), found[name].rejected_by_reason()
    return found


@pytest.fixture
def source(redis_client, reports, old) -> GalleryStore:
    """Gallery `default` of v1 as enroll.py leaves it, plus what it keeps besides templates: metadata, one
    self-enrolled template (Obama), one negative (Lin: "Biden's face is not Lin")."""
    store = GalleryStore(redis_client, "default")
    for name, report in reports.items():
        store.add(name, report.matrix(), report.template_ids, old.fingerprint, crops=report.crops(),
                  metadata={"team": "hamilton"} if name == "Lin" else None)
    store.add("Obama", reports["Obama"].matrix()[:1] * -1.0, [AUTO], old.fingerprint)
    store.add_negatives("Lin", reports["Biden"].matrix(), ["not-biden"])
    return store


def dump(client, gallery: str) -> dict[bytes, bytes]:
    """Every key of the gallery with its DUMP: equal results mean nothing was written in between."""
    return {k: client.dump(k) for k in client.scan_iter(f"fs:{{{gallery}}}:*")}


def embed_photo(embedder: Embedder, detector, path: Path) -> np.ndarray:
    image = read_image(path)
    faces = detector.detect_one(image)
    return embedder.embed(embedder.crops(image, faces[[int(faces.area.argmax())]]))


# -- harmonic models: match an older model's gallery, never write to it ---------------------------------------------
def test_a_harmonic_model_matches_the_v1_gallery_and_a_plain_v2_is_refused(redis_server, redis_client, source, old,
                                                                           cards, harmonic, detector, shared_data):
    probe = embed_photo(harmonic, detector, shared_data / PROBE)
    live = open_live_gallery(AppConfig(), harmonic, "default", redis_server.url)
    try:
        (match,) = live.matcher.match(probe)
        assert match.identity == "Obama", match
        before = dump(redis_client, "default")
        with pytest.raises(GalleryError, match=f"holds templates of model {old.fingerprint}; refusing templates "
                                               f"of model {harmonic.fingerprint} .*migrate --model"):
            live.store.add("Obama", probe, ["probe"], harmonic.fingerprint, crops=None)
        assert dump(redis_client, "default") == before  # nothing stored changed
    finally:
        live.close()
    # A card calibrated against v1's templates matches the v1 gallery at the threshold of that curve.
    uncalibrated = live.operating.current().threshold
    calibrated = open_live_gallery(AppConfig(), Embedder(cards["calibrated"]), "default", redis_server.url)
    try:
        assert calibrated.operating.current().threshold == pytest.approx(uncalibrated - 0.05, abs=1e-6)
    finally:
        calibrated.close()
    with pytest.raises(GalleryError) as refused:
        open_live_gallery(AppConfig(), Embedder(cards["plain"]), "default", redis_server.url)
    message = str(refused.value)
    assert old.fingerprint in message and harmonic.fingerprint in message
    assert "enroll.py --gallery default migrate --model NEW_CARD.json" in message


def test_the_operator_searches_with_a_harmonic_model_but_never_adds_negatives(redis_client, source, cards,
                                                                              shared_data):
    operator = Operator(AppConfig(), redis_client, "default", cards["harmonic"])
    (face,) = operator.search(shared_data / PROBE)
    assert [f.id for f in face.found if f.kind == "identity"] == ["Obama"]
    before = dump(redis_client, "default")
    with pytest.raises(GalleryError, match="may match them but not add to them: .*migrate --model"):
        operator.reject_photo(shared_data / PROBE, "Biden")
    assert dump(redis_client, "default") == before


# -- enroll.py migrate ----------------------------------------------------------------------------------------
@pytest.fixture
def cli(redis_server, redis_client):
    """`cli(*args, gallery=..., expect=0)` -> (exit code, stdout, stderr) of enroll.py on the test server."""
    def run(*args: str, gallery: str = "default", expect: int | None = 0):
        command = [sys.executable, str(REPO / "enroll.py"), "--redis-url", redis_server.url, "--gallery", gallery,
                   *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if expect is not None:
            assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr
    return run


@pytest.fixture
def main(redis_server, redis_client, capsys):
    """`cli` in this process (enroll.main: the same parsing, config and exit codes, without a start-up)."""
    def run(*args: str, gallery: str = "default", expect: int | None = 0):
        capsys.readouterr()
        code = enroll.main(["--redis-url", redis_server.url, "--gallery", gallery, *args])
        out, err = capsys.readouterr()
        if expect is not None:
            assert code == expect, f"exit {code}\n{out}\n{err}"
        return code, out, err
    return run


def as_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one line, got {stdout!r}"
    return json.loads(lines[0])


def decoded_rgb(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_migrate_moves_everyone_and_a_rerun_finds_them_all_there(cli, redis_client, source, old, cards):
    before = dump(redis_client, "default")
    report = as_json(cli("--json", "migrate", "--model", str(cards["harmonic"]))[1])
    assert (report["gallery"], report["into"], report["dry_run"]) == ("default", TARGET, False)
    assert (report["from_model"], report["to_model"]) == (old.fingerprint, load_card(cards["harmonic"]).fingerprint)
    assert {p["name"]: p["templates"] for p in report["migrated"]} == {"Biden": 1, "Lin": 1, "Obama": 2}
    assert report["already"] == report["need_new_photos"] == []
    assert report["not_carried"] == {"self_enrolled": {"Obama": 1}, "negatives": {"Lin": 1}, "unknown_people": 0,
                                     "unknown_sightings": 0}
    target = GalleryStore(redis_client, TARGET)
    assert target.fingerprint == report["to_model"] and target.dtype == source.dtype
    for person in source.identities():
        moved = target.get(person.name)
        _, tids, _ = target.read_full(moved.id)
        _, source_tids, enrolled = source.read_full(person.id)
        manual = [t for t in source_tids if not t.startswith("auto-")]
        assert tids == manual and (moved.metadata, moved.created) == (person.metadata, person.created)
        crops = target.crops(person.name)
        assert crops == {t: source.crops(person.name)[t] for t in manual}  # the same JPEG bytes
        # Same graph: the new templates are the old model's embeddings of the stored crops ...
        oracle = old.embed(np.stack([decoded_rgb(crops[t]) for t in tids]))
        np.testing.assert_allclose(target.templates(person.name), oracle, atol=1e-5)
        # ... which are within JPEG loss of the templates enrolled from the photos.
        cosine = np.sum(target.templates(person.name) * enrolled[[source_tids.index(t) for t in tids]], axis=1)
        assert cosine.min() > 0.995, cosine
    assert target.negatives("Lin").shape[0] == 0
    assert dump(redis_client, "default") == before  # the source is never modified

    written = dump(redis_client, TARGET)
    code, out, err = cli("migrate", "--model", str(cards["harmonic"]))
    assert [line.split()[:2] for line in out.splitlines()[:3]] == [["already", "Biden:"], ["already", "Lin:"],
                                                                   ["already", "Obama:"]]
    assert "migrated 0, already 3, need new photos 0" in out and "'default' is unchanged" in out
    assert "not carried: 1 self-enrolled template (Obama 1)" in out and "1 negative template (Lin 1)" in out
    assert dump(redis_client, TARGET) == written and dump(redis_client, "default") == before


def test_a_person_without_crops_needs_new_photos_and_a_rerun_finishes_the_rest(cli, redis_client, source, cards):
    biden = source.get("Biden").id
    kept = source.read_crops(biden)
    redis_client.delete(source.keys.crops(biden))
    code, out, _ = cli("--json", "migrate", "--model", str(cards["harmonic"]), expect=1)
    report = as_json(out)
    assert report["need_new_photos"] == [{"name": "Biden", "templates": 1,
                                          "reason": "no enrolment crop is kept for its 1 template"}]
    assert sorted(p["name"] for p in report["migrated"]) == ["Lin", "Obama"]
    target = GalleryStore(redis_client, TARGET)
    assert sorted(p.name for p in target.identities()) == ["Lin", "Obama"]  # Biden: nothing written
    code, out, _ = cli("migrate", "--model", str(cards["harmonic"]), expect=1)
    assert "needs new photos Biden: no enrolment crop" in " ".join(out.split())
    assert "need new photos 1 (Biden)" in out

    redis_client.hset(source.keys.crops(biden), mapping=kept)  # new photos, as it were: the rest is finished
    report = as_json(cli("--json", "migrate", "--model", str(cards["harmonic"]))[1])
    assert ([p["name"] for p in report["migrated"]], sorted(p["name"] for p in report["already"])) == (
        ["Biden"], ["Lin", "Obama"])
    assert {p.name: p.templates for p in target.identities()} == {"Biden": 1, "Lin": 1, "Obama": 2}


def test_dry_run_reports_and_writes_nothing(main, redis_client, source, cards):
    before = {k: redis_client.dump(k) for k in redis_client.scan_iter("*")}
    report = as_json(main("--json", "migrate", "--model", str(cards["harmonic"]), "--dry-run")[1])
    assert report["dry_run"] is True and len(report["migrated"]) == 3
    code, out, _ = main("migrate", "--dry-run", "--model", str(cards["harmonic"]))
    assert out.count("would migrate") == 4  # three people and the summary
    assert {k: redis_client.dump(k) for k in redis_client.scan_iter("*")} == before


def test_into_another_models_gallery_or_the_source_is_refused(main, redis_client, source, cards, reports):
    GalleryStore(redis_client, "other").add("Cy", reports["Lin"].matrix(), ["c"], "0123456789abcdef")
    before = {k: redis_client.dump(k) for k in redis_client.scan_iter("*")}
    for into, expected in (("other", "gallery 'other' holds templates of model 0123456789abcdef, not of model"),
                           ("default", "is the source gallery")):
        code, _, err = main("migrate", "--model", str(cards["harmonic"]), "--into", into, expect=2)
        assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert {k: redis_client.dump(k) for k in redis_client.scan_iter("*")} == before


def hostile_cards(folder: Path, cards: dict[str, Path]) -> dict[str, tuple[list[str], str, str]]:
    """case -> (arguments, gallery, what the one error line says)."""
    (folder / "text.json").write_text("not a card {")
    long_id = load_card(cards["harmonic"]).model_copy(update={"model_id": "v" * 70})
    (folder / "v2.onnx").symlink_to(cards["harmonic"].parent / "v2.onnx")
    save_card(long_id, folder / "long.json")
    return {"missing card": (["--model", str(folder / "absent.json")], "default", "cannot read model card"),
            "not JSON": (["--model", str(folder / "text.json")], "default", "not JSON"),
            "no such gallery": (["--model", str(cards["harmonic"])], "nobody", "gallery 'nobody' does not exist"),
            "same model": (["--model", str(DEFAULT_MODEL)], "default", "already holds templates of model"),
            "unnamable target": (["--model", str(folder / "long.json")], "default", "name one with --into"),
            "bad target": (["--model", str(cards["harmonic"]), "--into", "a:b"], "default", "invalid gallery name"),
            "wrong old card": (["--model", str(cards["harmonic"]), "--from-model", str(cards["plain"])], "default",
                               "--from-model")}


def test_hostile_input_is_one_error_line_and_exit_2(main, redis_client, source, cards, tmp_path):
    before = {k: redis_client.dump(k) for k in redis_client.scan_iter("*")}
    for case, (args, gallery, expected) in hostile_cards(tmp_path, cards).items():
        code, out, err = main("migrate", *args, gallery=gallery, expect=2)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (case, err)
        assert expected in err, (case, err)
    assert {k: redis_client.dump(k) for k in redis_client.scan_iter("*")} == before


# -- the library: crops that cannot be re-embedded, cards that do not agree ------------------------------------
def test_a_crop_of_another_size_needs_new_photos(redis_client, source, old, harmonic, reports):
    # Named from an unknown person: its template's crop is the 96 px sighting crop, which the model cannot take.
    lin = reports["Lin"]
    small = cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(lin.crops()[0], np.uint8), cv2.IMREAD_COLOR),
                                            (96, 96)))[1].tobytes()
    source.add("Lin", lin.matrix(), ["sighting-0123456789abcdef"], old.fingerprint, crops=[small])
    migration = open_migration(redis_client, "default", harmonic.card, lambda: harmonic,
                               old_cards=[DEFAULT_MODEL.parent])
    people = {p.name: p for p in map(migration.migrate, migration.people())}
    assert people["Lin"].state == NEED_NEW_PHOTOS and people["Obama"].state == MIGRATED
    assert people["Lin"].reason == f"1 of 2 templates' crops are 96x96, model {NEW_ID} takes 150x150"
    assert [p.name for p in GalleryStore(redis_client, TARGET).identities()] == ["Biden", "Obama"]


def test_cards_that_align_otherwise_or_name_no_valid_gallery():
    v1 = load_card(DEFAULT_MODEL)
    shifted = v1.model_copy(update={"model_id": "v2", "template": [(x + 2.0, y) for x, y in v1.template]})
    assert alignment_mismatch(v1, shifted) == (f"its crops are aligned to model {v1.model_id}'s 5-point "
                                               "template, not to model v2's")
    bigger = v1.model_copy(update={"model_id": "v2", "input_size": (160, 160)})
    assert alignment_mismatch(v1, bigger) == (f"its crops are 150x150 (model {v1.model_id}); model v2 "
                                              "takes 160x160")
    assert alignment_mismatch(v1, v1) is None
    assert target_gallery("default", "facestream-v2", None) == "default.facestream-v2"
    assert target_gallery("default", "x", "mine") == "mine"
    with pytest.raises(ConfigError, match="name one with --into"):
        target_gallery("default", "model/v2", None)
    with pytest.raises(GalleryError, match="invalid gallery name"):
        target_gallery("default", "x", "a{b}")
