"""The camera registry against a real Redis: CRUD, the version counter, YAML files, hostile input."""

from __future__ import annotations

import logging

import pytest

from pipeline.cameras import CameraRegistry
from pipeline.cameras.keys import CAMERA_NAME
from pipeline.core.errors import ConfigError
from pipeline.gallery.keys import CAMERA_NAME as GALLERY_CAMERA_NAME

SETTINGS = {"fps_cap": 7.5, "min_face_size": 24, "masks": [[[0, 0], [10.25, 0], [10, 1e-9]]],
            "motion": {"enabled": False, "alpha": 0.1 + 0.2}, "note": "Überwachung ☃", "nothing": None}


@pytest.fixture
def registry(redis_client):
    return CameraRegistry(redis_client)


def test_the_camera_name_rule_is_the_gallerys():
    assert CAMERA_NAME.pattern == GALLERY_CAMERA_NAME.pattern


def test_add_get_list_remove(registry):
    added = registry.add("door", "rtsp://cam/1", SETTINGS)
    registry.add("yard", "/videos/yard.mp4", enabled=False)
    assert registry.get("door") == added
    assert registry.get("door").settings == SETTINGS  # floats, unicode, nesting, null: exact
    assert [(c.name, c.enabled) for c in registry.list()] == [("door", True), ("yard", False)]
    registry.remove("door")
    assert [c.name for c in registry.list()] == ["yard"]
    with pytest.raises(ConfigError, match="'door' is not registered"):
        registry.get("door")
    with pytest.raises(ConfigError, match="'door' is not registered"):
        registry.remove("door")


def test_add_refuses_an_existing_name_unless_replacing(registry):
    registry.add("door", "rtsp://cam/1", {"fps_cap": 5})
    with pytest.raises(ConfigError, match="already registered"):
        registry.add("door", "rtsp://cam/2")
    assert registry.get("door").url == "rtsp://cam/1"
    registry.add("door", "rtsp://cam/2", replace=True)
    assert registry.get("door").url == "rtsp://cam/2" and registry.get("door").settings == {}


def test_every_change_moves_the_version_and_reads_do_not(registry):
    seen = [registry.version()]
    for change in (lambda: registry.add("a", "rtsp://a"), lambda: registry.disable("a"),
                   lambda: registry.enable("a"), lambda: registry.remove("a")):
        change()
        registry.list()
        seen.append(registry.version())
    assert seen == sorted(set(seen)) and len(seen) == 5
    registry.add("b", "rtsp://b")
    before = registry.version()
    registry.enable("b")  # already enabled: nothing changed, nothing for workers to re-read
    assert registry.version() == before


def test_enable_disable(registry):
    registry.add("door", "rtsp://cam/1")
    registry.disable("door")
    assert registry.get("door").enabled is False
    registry.enable("door")
    assert registry.get("door").enabled is True
    with pytest.raises(ConfigError, match="'ghost' is not registered"):
        registry.disable("ghost")


def test_load_yaml_replaces_and_prunes(registry, tmp_path):
    registry.add("old", "rtsp://old")
    registry.add("door", "rtsp://was")
    path = tmp_path / "cameras.yaml"
    path.write_text("door:\n  url: rtsp://cam/1\n  fps_cap: 5\n  masks: [[[0, 0], [4, 0], [4, 4]]]\n"
                    "yard:\n  url: /v/yard.mp4\n  enabled: false\n", encoding="utf-8")
    assert registry.load_yaml(path) == ["door", "yard"]
    door = registry.get("door")
    assert (door.url, door.settings) == ("rtsp://cam/1", {"fps_cap": 5, "masks": [[[0, 0], [4, 0], [4, 4]]]})
    assert registry.get("yard").enabled is False
    assert [c.name for c in registry.list()] == ["door", "old", "yard"]
    registry.load_yaml(path, prune=True)
    assert [c.name for c in registry.list()] == ["door", "yard"]


@pytest.mark.parametrize("text, message", [
    ("door: rtsp://x\n", "camera 'door' must be a mapping"),
    ("door:\n  fps_cap: 5\n", "camera 'door' has no 'url'"),
    ("door:\n  url: ''\n", "url is empty"),
    ("door:\n  url: '   '\n", "url is empty"),
    ("door:\n  url: 5\n", "url must be a string"),
    ("door:\n  url: rtsp://x\n  enabled: maybe\n", "enabled must be true or false"),
    ("'a b':\n  url: rtsp://x\n", "invalid camera name 'a b'"),
    ("'{tag}':\n  url: rtsp://x\n", "invalid camera name"),
    ("12:\n  url: rtsp://x\n", "camera name must be a string"),
    ("door:\n  url: rtsp://x\n  when: 2024-01-01\n", "settings must be JSON values"),
    ("door:\n  url: rtsp://x\n  zones: {1: a}\n", "do not survive JSON"),
    ("door:\n  url: rtsp://x\n  gain: .nan\n", "settings must be JSON values"),
    ("door: [unclosed\n", "malformed YAML in"),
])
def test_a_bad_file_is_refused_whole_with_a_clear_message(registry, tmp_path, text, message):
    path = tmp_path / "cameras.yaml"
    path.write_text("good:\n  url: rtsp://good\n" + text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        registry.load_yaml(path)
    assert registry.list() == []  # all or nothing: the good camera before the bad one was not written


@pytest.mark.parametrize("text", ["- door\n- yard\n", "just a string\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_refused(registry, tmp_path, text):
    (tmp_path / "cameras.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping of camera name -> {url: ...") as refused:
        registry.load_yaml(tmp_path / "cameras.yaml")
    assert "cameras.yaml" in str(refused.value)


def test_missing_and_binary_files(registry, tmp_path):
    with pytest.raises(ConfigError, match="cannot read camera file"):
        registry.load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        registry.load_yaml(tmp_path / "bin.yaml")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert registry.load_yaml(tmp_path / "empty.yaml") == []


@pytest.mark.parametrize("name, url, settings, message", [
    ("", "rtsp://x", None, "invalid camera name ''"),
    ("a" * 129, "rtsp://x", None, r"129 characters"),
    ("a:b", "rtsp://x", None, "invalid camera name 'a:b'"),
    ("door\n", "rtsp://x", None, "invalid camera name"),
    (None, "rtsp://x", None, "camera name must be a string"),
    ("door", "", None, "url is empty"),
    ("door", "rtsp://x\nforged log line", None, "control character"),
    ("door", " rtsp://x", None, "whitespace at an end"),
    ("door", "rtsp://" + "x" * 5000, None, "5007 characters long; at most 4096"),
    ("door", "rtsp://x", {"big": "x" * 70_000}, "bytes as JSON; at most 65536"),
    ("door", "rtsp://x", {"url": "rtsp://y"}, "url cannot be a setting"),
    ("door", "rtsp://x", {"pts": (1, 2)}, "do not survive JSON"),
    ("door", "rtsp://x", {"on": object()}, "settings must be JSON values"),
    ("door", "rtsp://x", {"gain": float("inf")}, "settings must be JSON values"),
    ("door", "rtsp://x", ["fps_cap", 5], "settings must be a mapping"),
])
def test_add_refuses_hostile_input(registry, name, url, settings, message):
    with pytest.raises(ConfigError, match=message):
        registry.add(name, url, settings)
    assert registry.list() == []


def test_passwords_in_urls_never_reach_logs_or_reprs(registry, caplog):
    caplog.set_level(logging.DEBUG, logger="pipeline.cameras")
    camera = registry.add("door", "rtsp://admin:hunter2@10.0.0.5/stream")
    with pytest.raises(ConfigError) as refused:
        registry.add("yard", "rtsp://admin:hunter2@10.0.0.6/s\n")
    assert registry.get("door").url == "rtsp://admin:hunter2@10.0.0.5/stream"  # stored as given
    assert "door" in caplog.text and "10.0.0.5" in caplog.text
    for text in (caplog.text, repr(camera), str(refused.value)):
        assert "hunter2" not in text

