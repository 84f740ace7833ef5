"""load_config and load_card: every bad file is one ConfigError line naming the file, the key or the line."""

from __future__ import annotations

import json

import pytest

from pipeline.app.config import AppConfig, load_app_config
from pipeline.core.errors import ConfigError
from pipeline.core.model_card import load_card
from pipeline.core.settings import save_resolved


@pytest.mark.parametrize("text, message", [
    ("run:\n  detect_every: 3\n   oops: [\n", r"malformed YAML in {file}, line 3 column 8: mapping values are not "
                                             r"allowed here$"),
    ("run: {detect_every: 3\n", r"malformed YAML in {file}, line 2 column 1: "),
    ("redis:\n  url: 'redis://x\n", r"malformed YAML in {file}, line 3 column 1: "),
    ("run:\n  detect_evry: 3\n", r"^unknown key 'run.detect_evry' in {file}$"),
    ("run:\n  detect_every: 0\n", r"^invalid value for 'run.detect_every' in {file}: Input should be greater"),
    ("- a\n", r"^{file}: top level must be a mapping of sections, got list$"),
])
def test_bad_yaml_names_file_and_line_or_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.format(file=path)) as err:
        load_app_config(path)
    assert "\n" not in str(err.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match=f"cannot read config file {tmp_path / 'absent.yaml'}: No such file"):
        load_app_config(tmp_path / "absent.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(ConfigError, match="bin.yaml: not a UTF-8 text file"):
        load_app_config(tmp_path / "bin.yaml")


@pytest.mark.parametrize("overrides, message", [
    (["run.detect_every=["], r"override 'run.detect_every=\[': the value is malformed YAML, line 1 column 2"),
    (["run.nope=1"], r"unknown key 'run.nope' in <defaults> \+ run.nope=1"),
    (["novalue"], "must look like section.key=value"),
    (["run.detect_every=3", "run.detect_every.x=1"], "'detect_every' is not a section"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_app_config(None, overrides)


def test_empty_file_is_the_defaults_and_resolved_config_reloads(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    cfg = load_app_config(tmp_path / "empty.yaml", ["run.detect_every=5"])
    assert cfg == AppConfig(run={"detect_every": 5})
    assert load_app_config(save_resolved(cfg, tmp_path)) == cfg


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00", "not a JSON text file (not UTF-8)"),
    (b"{not json", "not JSON (Expecting property name"),
    (b"[1, 2]", "<root>: Input should be a valid dictionary"),
    (b'{"model_id": 7}', "model_id: Input should be a valid string; fingerprint: Field required;"),
])
def test_bad_model_cards_are_one_line(tmp_path, content, message):
    path = tmp_path / "card.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"invalid model card {path}: ") as err:
        load_card(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=f"cannot read model card {tmp_path / 'absent.json'}"):
        load_card(tmp_path / "absent.json")


def test_card_with_many_problems_is_summarised(tmp_path):
    path = tmp_path / "card.json"
    path.write_text(json.dumps({"extra": 1}))
    with pytest.raises(ConfigError, match=r"and \d+ more$"):
        load_card(path)


def test_engine_auto_builds_the_first_engine_that_starts_here(monkeypatch):
    """engine.name=auto: each preferred engine is constructed in turn and skipped on EngineError (an ORT build
    that lists TensorRT without TensorRT installed), ending on what works; here, the CPU."""
    import numpy as np

    from engines import onnxruntime_engine
    from pipeline.app.services import make_embedder
    from pipeline.recognise.embedder import DEFAULT_MODEL

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]  # built with, not usable
    monkeypatch.setattr(onnxruntime_engine.ort, "get_available_providers", lambda: listed)
    embedder = make_embedder(load_app_config(None, ["engine.name=auto"]), DEFAULT_MODEL)
    assert embedder.engine.name == "onnxruntime" and embedder.engine.providers == ["CPUExecutionProvider"]
    crops = np.zeros((2, *embedder.size, 3), np.uint8)
    assert embedder.embed(crops).shape == (2, embedder.card.embedding_dim)
