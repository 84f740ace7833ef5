"""Input discovery (`pipeline.core.inputs`): files as given, folders searched without entering symlinked folders;
then `enroll.py add` on a folder holding only a symlink loop, and on real photos beside one, against real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import SourceError
from pipeline.core.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from pipeline.core.inputs import expand_inputs, find_files

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "facestream-default.json"
OBAMA = "ageitgey_face_recognition_examples/knn_examples/train/obama"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """photos/ with nested, upper-case, video and ignored files, a dangling link, a folder named like a photo,
    and a link back up to itself."""
    root = tmp_path / "photos"
    for name in ("b.jpg", "a/c.PNG", "a/d/e.ppm", "clip.mp4", "notes.txt", "folder.jpg/inner.webp"):
        touch(root / name)
    (root / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "loop").symlink_to(root)
    return root


def test_find_files_searches_folders_once_and_never_enters_a_symlinked_one(tree):
    assert find_files(tree) == [tree / "a/c.PNG", tree / "a/d/e.ppm", tree / "b.jpg", tree / "clip.mp4",
                                tree / "folder.jpg/inner.webp"]
    assert find_files(tree, IMAGE_SUFFIXES) == [tree / "a/c.PNG", tree / "a/d/e.ppm", tree / "b.jpg",
                                                tree / "folder.jpg/inner.webp"]
    assert find_files(tree, VIDEO_SUFFIXES) == [tree / "clip.mp4"]


def test_expand_inputs_keeps_named_files_and_the_order_given(tree):
    notes = tree / "notes.txt"
    assert expand_inputs([notes, tree / "a"]) == [notes, tree / "a/c.PNG", tree / "a/d/e.ppm"]
    with pytest.raises(SourceError, match=f"input {tree / 'absent'} does not exist"):
        expand_inputs([tree / "a", tree / "absent"])


@pytest.mark.parametrize(("suffixes", "kinds"), [(IMAGE_SUFFIXES | VIDEO_SUFFIXES, "images or videos"),
                                                 (IMAGE_SUFFIXES, "images"), (VIDEO_SUFFIXES, "videos")])
def test_a_folder_with_nothing_usable_is_an_error_naming_folder_and_links(tmp_path, suffixes, kinds):
    folder = tmp_path / "empty"
    folder.mkdir()
    touch(folder / "notes.txt")
    with pytest.raises(SourceError, match=rf"^no {kinds} found in {folder} \(searched for \.") as info:
        expand_inputs([folder], suffixes)
    assert "links" not in str(info.value)
    (folder / "loop").symlink_to(folder)
    with pytest.raises(SourceError, match=f"links to folders are not followed: {folder / 'loop'}$"):
        expand_inputs([folder], suffixes)


# -- enroll.py ------------------------------------------------------------------------------------------
@pytest.fixture
def enroll_py(redis_server, redis_client):
    """`enroll_py(*args)` -> finished enroll.py process on the test server."""
    if not MODEL.is_file():
        pytest.skip(f"needs the shipped model card {MODEL}")

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(REPO / "enroll.py"), "--redis-url", redis_server.url, "--model", str(MODEL),
                   "--set", "detector.engine=onnxruntime", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    return run


def test_enroll_of_a_folder_holding_only_a_symlink_loop_names_the_problem(enroll_py, redis_client, tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    (folder / "loop").symlink_to(folder)
    done = enroll_py("add", "--name", "X", str(folder))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: no images or videos found in {folder} ")
    assert line.endswith(f"links to folders are not followed: {folder / 'loop'}")
    assert redis_client.dbsize() == 0


def test_enroll_finds_photos_beside_a_symlink_loop_once(enroll_py, redis_client, shared_data, tmp_path):
    folder = tmp_path / "obama"
    folder.mkdir()
    photos = sorted((shared_data / OBAMA).glob("*.jpg"))
    assert len(photos) == 2
    for photo in photos:
        (folder / photo.name).symlink_to(photo)
    (folder / "loop").symlink_to(folder)
    done = enroll_py("--json", "add", "--name", "Obama", str(folder))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [o["path"] for o in report["outcomes"]] == [str(folder / p.name) for p in photos]
    assert (report["accepted"], report["added"]) == (2, 2)
