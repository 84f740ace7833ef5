"""Enrollment on real photos and video: every rejection reason through `pipeline.recognise.enrollment`, then `enroll.py`
as a subprocess against a real Redis server (add, duplicates, list, show, rename, remove, export/import,
--tree, video, errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.errors import GalleryError, SourceError
from pipeline.core.images import read_image
from pipeline.gallery import GalleryStore
from pipeline.recognise.embedder import DEFAULT_MODEL, Embedder
from pipeline.recognise.enrollment import NO_FACE, SEVERAL_FACES, UNREADABLE, Enroller, EnrollmentReport, collect
from pipeline.recognise.quality import EXTREME_POSE, LOW_SCORE, TOO_BLURRED, TOO_SMALL, QualityGates

REPO = Path(__file__).resolve().parents[2]
AGEITGEY = "ageitgey_face_recognition_examples"
LIN = f"{AGEITGEY}/reference_photos/lin-manuel-miranda.png"
CLIP = f"{AGEITGEY}/video/short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def model_card(tmp_path_factory) -> Path:
    """The default model's card; until it is trained, a stand-in: dlib's ResNet exported to ONNX + a card."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from engines.onnx_export import export_onnx
    from pipeline.core.model_card import ModelCard, fingerprint_file, save_card

    torch = pytest.importorskip("torch")
    from trainer.models import create_model, model_preprocess
    from trainer.models.dlib_resnet import MTCNN_TEMPLATE_150

    try:
        module = create_model("dlib_resnet", weights="dlib").eval()
    except Exception as exc:  # the weights are a pip package that may be missing
        pytest.skip(f"no default model and no dlib weights for a stand-in: {exc}")
    folder = tmp_path_factory.mktemp("standin")
    onnx_file = export_onnx(module, (torch.zeros(1, 3, 150, 150),), folder / "standin.onnx", ["image"], ["embedding"],
                            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
    pre = model_preprocess("dlib_resnet")
    card = ModelCard(model_id="standin-dlib", fingerprint=fingerprint_file(onnx_file), architecture="dlib_resnet",
                     onnx=onnx_file.name, input_size=tuple(pre.input_size), mean=tuple(pre.mean), std=tuple(pre.std),
                     template=MTCNN_TEMPLATE_150.tolist(), thresholds={"1e-3": 0.55})
    return save_card(card, folder / "standin.json")


@pytest.fixture(scope="module")
def enroller(model_card) -> Enroller:
    from pipeline.detect import MTCNN

    return Enroller(MTCNN(max_side=1280), Embedder(model_card), QualityGates())


def judge(enroller: Enroller, *paths: Path) -> list:
    report = EnrollmentReport()
    for path in paths:
        enroller.add_file(Path(path), report)
    return report.outcomes


def hamilton_frame(shared_data: Path, number: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(shared_data / CLIP))
    capture.set(cv2.CAP_PROP_POS_FRAMES, number)
    ok, frame = capture.read()
    capture.release()
    assert ok, f"cannot read frame {number} of the Hamilton clip"
    return frame


# -- pipeline.recognise.enrollment, gate by gate --------------------------------------------------------------------
def test_frontal_photos_are_accepted(enroller, shared_data):
    folders = [shared_data / AGEITGEY / "other_photos", shared_data / AGEITGEY / "knn_examples" / "train"]
    paths = sorted(p for folder in folders for p in folder.rglob("*.jp*g"))
    outcomes = {Path(o.path).relative_to(shared_data / AGEITGEY).as_posix(): o for o in judge(enroller, *paths)}
    assert outcomes.pop("other_photos/two_people.jpg").reason == SEVERAL_FACES
    rejected = {name: (o.reason, o.measures) for name, o in outcomes.items() if not o.accepted}
    assert len(outcomes) == 20 and not rejected


@pytest.mark.parametrize("case, reason", [
    ("dogs", NO_FACE),
    ("two_people", SEVERAL_FACES),
    ("small", TOO_SMALL),
    ("blurred", TOO_BLURRED),
    ("profile", EXTREME_POSE),
    ("low_score", LOW_SCORE),
    ("text_as_jpg", UNREADABLE),
    ("empty", UNREADABLE),
])
def test_each_rejection_reason_on_real_images(enroller, shared_data, tmp_path, case, reason):
    obama = shared_data / AGEITGEY / "other_photos" / "obama.jpg"
    made = {  # derived images are made here, from the real ones; the shared data is never copied
        "small": lambda: cv2.resize(read_image(obama), None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA),
        "blurred": lambda: cv2.GaussianBlur(read_image(obama), (0, 0), 8),
        "profile": lambda: hamilton_frame(shared_data, 30),  # Alex Lacamoire's profile close-up
        "low_score": lambda: hamilton_frame(shared_data, 60),  # a smeared frame: a face at score 0.86
    }
    given = {"dogs": shared_data / "dlib_face_detection_examples" / "dogs.jpg",
             "two_people": shared_data / AGEITGEY / "other_photos" / "two_people.jpg"}
    path = given.get(case, tmp_path / f"{case}.png")
    if case in made:
        assert cv2.imwrite(str(path), made[case]())
    elif case == "text_as_jpg":
        path = tmp_path / "notes.jpg"
        path.write_text("not an image\n")
    elif case == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    [outcome] = judge(enroller, path)
    assert not outcome.accepted and outcome.reason == reason, outcome
    if reason == UNREADABLE:
        assert str(path) in outcome.detail  # the SourceError message, naming the file


def test_largest_accepts_the_multi_face_photo(enroller, shared_data):
    path = shared_data / AGEITGEY / "other_photos" / "two_people.jpg"
    largest = Enroller(enroller.detector, enroller.embedder, enroller.gates, largest=True)
    [outcome] = judge(largest, path)
    assert outcome.accepted and outcome.measures["face_px"] > 150


def test_collect_walks_folders_and_ids_templates_by_content(enroller, shared_data, tmp_path):
    photo = shared_data / LIN
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "copy.png").symlink_to(photo)
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")
    report = collect([tmp_path, photo], enroller.detector, enroller.embedder, enroller.gates)
    assert [o.path for o in report.outcomes] == [str(tmp_path / "sub" / "copy.png"), str(photo)]
    assert report.template_ids[0] == report.template_ids[1] and len(report.template_ids[0]) == 64
    assert report.matrix().shape == (2, 128)
    with pytest.raises(SourceError, match="does not exist"):
        collect([tmp_path / "absent"], enroller.detector, enroller.embedder, enroller.gates)


# -- enroll.py ------------------------------------------------------------------------------------------
@pytest.fixture
def cli(redis_server, redis_client, model_card):
    """`cli(*args, gallery=...)` -> (exit code, stdout, stderr) of enroll.py on the test server."""
    def run(*args: str, gallery: str = "default", expect: int | None = 0):
        command = [sys.executable, str(REPO / "enroll.py"), "--redis-url", redis_server.url, "--model",
                   str(model_card), "--gallery", gallery, "--set", "detector.engine=onnxruntime", *args]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        if expect is not None:
            assert done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.returncode, done.stdout, done.stderr
    return run


def as_json(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print one line, got {stdout!r}"
    return json.loads(lines[0])


def test_add_twice_list_show_rename_remove(cli, redis_client, shared_data):
    photos = [str(shared_data / LIN), str(shared_data / AGEITGEY / "knn_examples" / "train" / "obama")]
    first = as_json(cli("--json", "add", "--name", "Lin", *photos)[1])
    assert (first["accepted"], first["added"], first["duplicates"]) == (3, 3, 0)
    assert first["identities"][0]["created"] is True
    again = as_json(cli("add", "--json", "--name", "Lin", *photos)[1])
    assert (again["accepted"], again["added"], again["duplicates"]) == (3, 0, 3)
    store = GalleryStore(redis_client)
    assert store.get("Lin").templates == 3 and store.templates("Lin").shape == (3, 128)
    # Each template keeps its aligned enrolment crop, a JPEG at the embedder's size.
    crops = store.crops("Lin")
    assert sorted(crops) == sorted(o["template_id"] for o in first["outcomes"] if o["accepted"])
    assert {cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).shape for j in crops.values()} == {(150, 150, 3)}

    listed = as_json(cli("list", "--json")[1])
    assert [(p["name"], p["templates"]) for p in listed["identities"]] == [("Lin", 3)]
    shown = cli("show", "Lin")[1]
    assert "templates: 3" in shown and first["outcomes"][0]["template_id"] in shown
    cli("rename", "Lin", "Lin-Manuel Miranda")
    assert [p.name for p in store.identities()] == ["Lin-Manuel Miranda"]

    code, out, err = cli("remove", "Lin-Manuel Miranda")
    assert "3 templates" in out
    assert store.identities() == [] and not [k for k in redis_client.scan_iter("*") if b"ident" in k.lower()]
    assert not [k for k in redis_client.scan_iter("*") if b":crops:" in k]
    code, out, err = cli("show", "Lin-Manuel Miranda", expect=2)
    assert err.strip().count("\n") == 0 and "no identity named" in err and "Traceback" not in err


def test_rejections_are_reported_and_nothing_accepted_writes_nothing(cli, redis_client, shared_data, tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    dogs = shared_data / "dlib_face_detection_examples" / "dogs.jpg"
    code, out, err = cli("add", "--name", "Nobody", str(dogs), str(tmp_path / "text.jpg"), expect=1)
    assert f"rejected  {dogs}: no face" in out and f"{tmp_path / 'text.jpg'}: unreadable or not an image" in out
    assert "nothing enrolled" in err and redis_client.dbsize() == 0
    code, out, err = cli("add", "--name", "a/b", str(shared_data / LIN), expect=2)
    assert err.startswith("error: ") and "/" in err and redis_client.dbsize() == 0
    code, out, err = cli("add", "--name", "Pair", str(shared_data / AGEITGEY / "other_photos" / "two_people.jpg"),
                         "--largest")
    assert "accepted   1" in out


def test_export_import_round_trip(cli, redis_client, shared_data, tmp_path):
    cli("add", "--name", "Lin", str(shared_data / LIN))
    cli("add", "--name", "Obama", str(shared_data / AGEITGEY / "knn_examples" / "train" / "obama"))
    cli("export", str(tmp_path / "gallery.json"))
    result = as_json(cli("--json", "import", str(tmp_path / "gallery.json"), gallery="copy")[1])
    assert (result["identities"], result["created"], result["added"]) == (2, 2, 3)
    source, copy = GalleryStore(redis_client), GalleryStore(redis_client, "copy")
    for name in ("Lin", "Obama"):
        np.testing.assert_array_equal(source.templates(name), copy.templates(name))
    assert copy.fingerprint == source.fingerprint


def test_add_tree_of_lfw_people(cli, redis_client, shared_data, tmp_path):
    people = ["George_W_Bush", "Colin_Powell", "Tony_Blair"]
    for person in people:
        (tmp_path / person).mkdir()
        for image in sorted((shared_data / "lfw" / "images" / person).glob("*.jpg"))[:2]:
            (tmp_path / person / image.name).symlink_to(image)
    result = as_json(cli("--json", "add", "--tree", str(tmp_path))[1])
    assert sorted(p["name"] for p in result["identities"]) == sorted(people)
    templates = {p.name: p.templates for p in GalleryStore(redis_client).identities()}
    assert templates == {person: 2 for person in people}, result["rejected_by_reason"]


def test_video_enrols_lin_manuel_miranda(cli, redis_client, shared_data, model_card):
    result = as_json(cli("--json", "add", "--name", "Lin", "--largest", "--video-every", "45",
                         "--video-max-frames", "6", str(shared_data / CLIP))[1])
    frames = {o["frame"]: o for o in result["outcomes"]}
    assert sorted(frames) == [0, 45, 90, 135, 180, 225]
    accepted = [f for f, o in frames.items() if o["accepted"]]
    assert len(accepted) >= 3 and all(o["template_id"].endswith(f":{f}") for f, o in frames.items() if o["accepted"])
    # The frames' templates are Lin-Manuel Miranda's: nearer his reference photo than Alex Lacamoire's (the
    # clip's other person). Relative, so it holds for the stand-in model as for the trained one.
    from pipeline.detect import MTCNN

    detector, embedder = MTCNN(), Embedder(model_card)
    references = []
    for name in ("lin-manuel-miranda.png", "alex-lacamoire.png"):
        photo = read_image(shared_data / AGEITGEY / "reference_photos" / name)
        faces = detector.detect_one(photo)
        references.append(embedder.embed(embedder.crops(photo, faces[int(np.argmax(faces.area))]))[0])
    lin, alex = (GalleryStore(redis_client).templates("Lin") @ np.stack(references).T).T
    assert (lin > alex).all(), (lin, alex)


def test_errors_exit_nonzero_with_one_line(cli, redis_client, shared_data, model_card, tmp_path):
    cli("add", "--name", "Lin", str(shared_data / LIN))
    # Another model (same network, another fingerprint) must not mix into this gallery.
    card = json.loads(model_card.read_text())
    (tmp_path / card["onnx"]).symlink_to(model_card.parent / card["onnx"])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**card, "fingerprint": "0123456789abcdef"}))
    code, out, err = cli("--model", str(other), "add", "--name", "Lin", str(shared_data / LIN), expect=2)
    assert "0123456789abcdef" in err and len(err.strip().splitlines()) == 1
    assert GalleryStore(redis_client).get("Lin").templates == 1
    done = subprocess.run([sys.executable, str(REPO / "enroll.py"), "--redis-url", "redis://127.0.0.2:1",
                           "list"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(GalleryError):
        GalleryStore(redis_client).get("a/b")
