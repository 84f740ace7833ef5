"""Hostile and bad input, end to end: every case gets one error line naming the problem, a non-zero exit from
the CLIs, and nothing written (the gallery's Redis keys dumped before and after, no output files).

The CLIs are called in-process (`main(argv)`) on the session's Redis server, so no case pays for a fresh
interpreter; every call still loads the models, as a user's would.
"""

from __future__ import annotations

import base64
import json
import re
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import enroll
import run
from pipeline.core.errors import EngineError, GalleryError, SourceError
from pipeline.core.images import MAX_PIXELS, read_image
from pipeline.gallery import GalleryStore
from pipeline.gallery.portable import export_gallery, import_gallery
from pipeline.recognise.embedder import DEFAULT_MODEL

AGEITGEY = "ageitgey_face_recognition_examples"
LIN = f"{AGEITGEY}/reference_photos/lin-manuel-miranda.png"
OBAMA = f"{AGEITGEY}/other_photos/obama.jpg"
UNICODE_NAMES = ["Zoë Ångström 李小龍", "😀 Emoji Person", "محمد علي", "שָׁלוֹם"]


# -- helpers ------------------------------------------------------------------------------------------------
def dump(client) -> dict[bytes, bytes]:
    """Every key of the server with its DUMP serialisation: equal dumps, equal contents."""
    return {key: client.dump(key) for key in sorted(client.scan_iter("*"))}


def bomb_png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of `width` x `height` black pixels, made without ever holding the pixels.

    Deflate blocks ending in a full flush are byte-aligned and independent, so the compressed form of a band
    of zero rows can be repeated; the Adler-32 of n zero bytes is (n mod 65521) << 16 | 1.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = width + 1  # filter byte + pixels
    band = 100
    assert height % band == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes(row * band)) + deflate.flush(zlib.Z_FULL_FLUSH)
    ending = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty final block
    total = row * height
    stream = b"\x78\xda" + block * (height // band) + ending + struct.pack(">I", (total % 65521) << 16 | 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def test_bomb_png_is_a_valid_png():
    small = bomb_png(300, 200)  # same construction, small enough to decode
    image = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (200, 300) and not image.any()
    assert zlib.decompress(small[41:-16]) == bytes(301 * 200)  # the IDAT payload: a complete zlib stream


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(bomb_png(30_000, 30_000))
    return path


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory, shared_data, bomb) -> dict[str, tuple[Path, str]]:
    """case -> (a file with an image extension, what the error must say)."""
    folder = tmp_path_factory.mktemp("hostile")
    jpeg = (shared_data / OBAMA).read_bytes()
    files = {
        "text-as-jpg": ("notes.jpg", b"these are meeting notes, not a photo\n" * 20, "not a decodable image"),
        "random-as-png": ("noise.png", np.random.default_rng(0).bytes(4096), "not a decodable image"),
        "png-header-only": ("header.png", bomb_png(300, 200)[:33], "not a decodable image"),
        "empty": ("empty.jpg", b"", "the file is empty (0 bytes)"),
        "truncated-jpeg": ("truncated.jpg", jpeg[: len(jpeg) // 2], "the JPEG is truncated"),
    }
    out = {}
    for case, (name, data, message) in files.items():
        (folder / name).write_bytes(data)
        out[case] = (folder / name, message)
    out["bomb"] = (bomb, "declares 30000x30000 pixels (900 MP), over the limit of 100 MP")
    return out


def default_fingerprint() -> str:
    return json.loads(DEFAULT_MODEL.read_text())["fingerprint"]


def cli_args(redis_server) -> list[str]:
    return ["--redis-url", redis_server.url, "--model", str(DEFAULT_MODEL), "--set", "detector.engine=onnxruntime"]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# -- images ---------------------------------------------------------------------------------------------------
def test_decompression_bomb_is_refused_from_its_header(bomb):
    assert bomb.stat().st_size < 1_000_000  # 900 MP in under a megabyte
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    with pytest.raises(SourceError, match=r"declares 30000x30000 pixels \(900 MP\), over the limit of 100 MP") as err:
        read_image(bomb)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100_000  # < 100 MB more at peak
    assert str(bomb) in str(err.value) and "refused before decoding" in str(err.value)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_pixel_limit_applies_to_every_common_format(tmp_path, ext):
    path = tmp_path / f"wide{ext}"
    assert cv2.imwrite(str(path), np.zeros((20, 60, 3), np.uint8))
    assert read_image(path).shape == (20, 60, 3)
    with pytest.raises(SourceError, match=r"declares 60x20 pixels"):
        read_image(path, max_pixels=1000)
    assert MAX_PIXELS == 100_000_000


@pytest.mark.parametrize("case", ["text-as-jpg", "random-as-png", "png-header-only", "empty", "truncated-jpeg",
                                  "bomb"])
def test_hostile_files_raise_source_error_naming_file_and_problem(hostile_files, case):
    path, message = hostile_files[case]
    with pytest.raises(SourceError, match=re.escape(message)) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_hostile_files_through_enroll_add_write_nothing(hostile_files, redis_server, redis_client, capsys):
    GalleryStore(redis_client).add("Ada", np.eye(1, 128, dtype=np.float32), ["a"], default_fingerprint())
    before = dump(redis_client)
    paths = [str(path) for path, _ in hostile_files.values()]
    code = enroll.main(cli_args(redis_server) + ["add", "--name", "Mallory", *paths])
    out, err = capsys.readouterr()
    assert code == enroll.EXIT_NOTHING_ENROLLED
    for case, (path, message) in hostile_files.items():
        [line] = [line for line in out.splitlines() if line.startswith(f"rejected  {path}:")]
        assert "unreadable or not an image" in line and message in line, (case, line)
    assert f"rejected   {len(paths)}" in out
    assert err.strip() == f"nothing enrolled: none of {len(paths)} inputs was accepted; the gallery is unchanged"
    assert dump(redis_client) == before


def test_gray_rgba_and_16_bit_photos_are_enrolled(shared_data, tmp_path, redis_server, redis_client, capsys):
    photo = read_image(shared_data / LIN)
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    variants = {"gray.png": gray, "rgba.png": cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA),
                "deep.png": photo.astype(np.uint16) * 257, "gray16.png": gray.astype(np.uint16) * 257}
    for name, pixels in variants.items():
        assert cv2.imwrite(str(tmp_path / name), pixels)
    code = enroll.main(cli_args(redis_server) + ["--json", "add", "--name", "Lin", str(tmp_path)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["accepted"] == 4, result["outcomes"]
    # The 16-bit copies hold the same pixels as the 8-bit ones: same content would be a different file
    # digest, so four templates; the gray pair embeds near-identically.
    rows = GalleryStore(redis_client).templates("Lin")
    assert rows.shape == (4, 128) and float((rows @ rows.T).min()) > 0.9


# -- names ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("a/b", "contains the path separator '/'"),
    ("..\\..\\etc", "contains the path separator '\\\\'"),
    ("Ada\nLovelace", "contains a control character (U+000A) at position 3"),
    ("bell\x07", "contains a control character (U+0007)"),
    ("esc\x1b[31m", "contains a control character (U+001B)"),
    ("x" * 10_000, "is 10000 characters long; at most 200 allowed"),
    ("", "add needs --name NAME"),
])
def test_bad_names_are_refused_at_the_cli_before_anything_is_read(name, message, shared_data, redis_server,
                                                                  redis_client, capsys):
    before = dump(redis_client)
    code = enroll.main(cli_args(redis_server) + ["add", "--name", name, str(shared_data / LIN)])
    line = one_error_line(capsys.readouterr().err)
    assert code == enroll.EXIT_ERROR and message in line and len(line) < 300
    assert dump(redis_client) == before


def test_unicode_names_round_trip_through_add_list_show_export_import(shared_data, tmp_path, redis_server,
                                                                     redis_client, capsys):
    base = cli_args(redis_server)
    first, *others = UNICODE_NAMES
    assert enroll.main(base + ["add", "--name", first, str(shared_data / LIN)]) == 0
    for name in others:  # the rest as folders of a --tree: one model load for all of them
        (tmp_path / "tree" / name).mkdir(parents=True)
        (tmp_path / "tree" / name / "photo.png").symlink_to(shared_data / LIN)
    assert enroll.main(base + ["add", "--tree", str(tmp_path / "tree")]) == 0
    capsys.readouterr()

    def listed(gallery: str) -> list[str]:
        capsys.readouterr()
        assert enroll.main(base + ["--gallery", gallery, "--json", "list"]) == 0
        return sorted(p["name"] for p in json.loads(capsys.readouterr().out)["identities"])

    assert listed("default") == sorted(UNICODE_NAMES)
    for name in UNICODE_NAMES:
        capsys.readouterr()
        assert enroll.main(base + ["--json", "show", name]) == 0
        assert json.loads(capsys.readouterr().out)["name"] == name
    assert enroll.main(base + ["export", str(tmp_path / "g.json")]) == 0
    exported = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert sorted(p["name"] for p in exported["identities"]) == sorted(UNICODE_NAMES)
    assert enroll.main(base + ["--gallery", "copy", "import", str(tmp_path / "g.json")]) == 0
    assert listed("copy") == sorted(UNICODE_NAMES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=40), st.text(st.characters(codec="utf-8"), min_size=1, max_size=12),
                      st.sampled_from(["a/b", "x" * 201, " pad", "\u2028", "\x00", "-rf", "--help"])))
def test_fuzz_rename_at_the_cli_renames_or_fails_in_one_line(redis_server, redis_client, capsys, name):
    """`enroll.py rename` takes a name to the gallery with no model in the way: the cheapest CLI-level fuzz."""
    redis_client.flushall()
    store = GalleryStore(redis_client)
    store.add("Ada", np.eye(1, 128, dtype=np.float32), ["a"], "m")
    before = dump(redis_client)
    code = enroll.main(["--redis-url", redis_server.url, "rename", "--", "Ada", name])
    out, err = capsys.readouterr()
    if code == 0:
        assert [i.name for i in store.identities()] == [store.get(name).name]
    else:
        assert code == enroll.EXIT_ERROR and "identity name" in one_error_line(err) or name == "Ada"
        assert dump(redis_client) == before


# -- gallery files, models, configs ---------------------------------------------------------------------------
def unit(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or inf"),
    ("wrong-dim", "holds 256 bytes; 1 float32 template(s) of dim 128 need 512"),
    ("dim-64", "holds 128-d templates; refusing 64-d ones"),
])
def test_enroll_import_of_a_crafted_file_writes_nothing(case, message, tmp_path, redis_server, redis_client, capsys):
    store = GalleryStore(redis_client)
    store.add("Ada", unit(1), ["a"], "m")
    export_gallery(store, tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    rows = {"nan": np.full((1, 128), np.nan, "<f4"), "wrong-dim": unit(1, 64), "dim-64": unit(1, 64)}[case]
    doc["identities"][0].update(name="Eve", template_ids=["e"],
                                templates=base64.b64encode(rows.astype("<f4").tobytes()).decode())
    if case == "dim-64":
        doc["dim"] = 64
    (tmp_path / "g.json").write_text(json.dumps(doc))
    before = dump(redis_client)
    code = enroll.main(["--redis-url", redis_server.url, "import", str(tmp_path / "g.json")])
    line = one_error_line(capsys.readouterr().err)
    assert code == enroll.EXIT_ERROR and message in line
    assert str(tmp_path / "g.json") in line or case == "dim-64"  # a file problem names the file
    assert dump(redis_client) == before


@pytest.fixture
def other_model_card(tmp_path) -> Path:
    """The default model's card under another fingerprint (as a retrained model would have)."""
    card = json.loads(DEFAULT_MODEL.read_text())
    (tmp_path / card["onnx"]).symlink_to(DEFAULT_MODEL.parent / card["onnx"])
    path = tmp_path / "other.json"
    path.write_text(json.dumps({**card, "fingerprint": "0123456789abcdef"}))
    return path


def test_gallery_of_another_model_is_refused_by_enroll_and_run(other_model_card, shared_data, tmp_path,
                                                               redis_server, redis_client, capsys, keep_sigint):
    bound = default_fingerprint()
    GalleryStore(redis_client).add("Ada", unit(1), ["a"], bound)
    before = dump(redis_client)
    code = enroll.main(["--redis-url", redis_server.url, "--model", str(other_model_card), "add", "--name", "Lin",
                        str(shared_data / LIN)])
    line = one_error_line(capsys.readouterr().err)
    assert code == enroll.EXIT_ERROR and bound in line and "0123456789abcdef" in line
    code = run.main(["--redis-url", redis_server.url, "--model", str(other_model_card), "--source",
                     str(shared_data / LIN), "--output", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err)
    assert code == run.EXIT_ERROR and bound in line and "0123456789abcdef" in line
    assert dump(redis_client) == before and not (tmp_path / "out").exists()


@pytest.fixture
def keep_sigint():
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def garbage_models(folder: Path) -> dict[str, tuple[Path, str]]:
    """case -> (a --model argument, what the error must say)."""
    card = json.loads(DEFAULT_MODEL.read_text())
    made = {}
    for case, onnx_bytes, message in [
        ("onnx-is-text", b"not a model at all\n", "is not a valid ONNX model"),
        ("onnx-is-jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "is not a valid ONNX model"),
        ("onnx-is-empty", b"", "is not a valid ONNX model"),
    ]:
        (folder / f"{case}.onnx").write_bytes(onnx_bytes)
        (folder / f"{case}.json").write_text(json.dumps({**card, "onnx": f"{case}.onnx"}))
        made[case] = (folder / f"{case}.json", f"{folder / case}.onnx {message}")
    made["onnx-missing"] = (folder / "missing.json", f"ONNX model not found: {folder / 'nothing.onnx'}")
    (folder / "missing.json").write_text(json.dumps({**card, "onnx": "nothing.onnx"}))
    for case, text, message in [
        ("card-is-binary", b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a JSON text file (not UTF-8)"),
        ("card-is-text", b"model: yes\n", "not JSON"),
        ("card-missing-keys", b'{"model_id": 7}', "model_id: Input should be a valid string; fingerprint: Field"),
    ]:
        (folder / f"{case}.json").write_bytes(text)
        made[case] = (folder / f"{case}.json", f"invalid model card {folder / case}.json: {message}")
    return made


MODEL_CASES = ["onnx-is-text", "onnx-is-jpeg", "onnx-is-empty", "onnx-missing", "card-is-binary", "card-is-text",
               "card-missing-keys"]


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_model_that_is_not_onnx_is_one_clear_error(case, tmp_path, shared_data, redis_server, redis_client,
                                                     capsys, keep_sigint):
    model, message = garbage_models(tmp_path)[case]
    assert_both_clis_refuse(["--model", str(model)], message, tmp_path, shared_data, redis_server, redis_client,
                            capsys)


def assert_both_clis_refuse(options, message, tmp_path, shared_data, redis_server, redis_client, capsys):
    """enroll.py add and run.py given `options` each fail with one line holding `message`, writing nothing."""
    before = dump(redis_client)
    code = enroll.main(["--redis-url", redis_server.url, *options, "add", "--name", "Lin", str(shared_data / LIN)])
    assert code == enroll.EXIT_ERROR and message in one_error_line(capsys.readouterr().err)
    code = run.main(["--redis-url", redis_server.url, *options, "--source", str(shared_data / LIN),
                     "--output", str(tmp_path / "out")])
    assert code == run.EXIT_ERROR and message in one_error_line(capsys.readouterr().err)
    assert dump(redis_client) == before and not (tmp_path / "out").exists()


def test_engine_error_for_garbage_onnx_names_the_file(tmp_path):
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    (tmp_path / "model.onnx").write_bytes(b"\x00" * 100)
    with pytest.raises(EngineError, match=f"{tmp_path / 'model.onnx'} is not a valid ONNX model"):
        OnnxRuntimeEngine(tmp_path / "model.onnx")


BAD_CONFIGS = {
    "yaml-syntax": ("run:\n  detect_every: 3\n   oops: [\n", "malformed YAML in {file}, line 3 column 8"),
    "unclosed-quote": ('redis:\n  url: "redis://x\n', "malformed YAML in {file}, line"),
    "tab-indent": ("run:\n\tdetect_every: 3\n", "malformed YAML in {file}, line 2 column 1"),
    "unknown-key": ("run:\n  detect_evry: 3\n", "unknown key 'run.detect_evry' in {file}"),
    "unknown-section": ("runn: {}\n", "unknown key 'runn' in {file}"),
    "not-a-mapping": ("- a\n- b\n", "{file}: top level must be a mapping of sections, got list"),
    "binary": (b"\xff\xfe\x00garbage", "cannot read config file {file}: not a UTF-8 text file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_files_are_one_clear_error_in_every_cli(case, tmp_path, shared_data, redis_server, redis_client,
                                                           capsys, keep_sigint):
    text, message = BAD_CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_both_clis_refuse(["--config", str(config)], message.format(file=config), tmp_path, shared_data,
                            redis_server, redis_client, capsys)


@pytest.mark.parametrize("case", ["yaml-syntax", "unknown-key", "binary"])
def test_trainer_refuses_bad_config_files_in_one_log_line(case, tmp_path, capsys):
    from trainer.__main__ import main as trainer_main

    pytest.importorskip("torch")
    text, message = BAD_CONFIGS[case]
    if case == "unknown-key":  # the trainer's own sections
        text, message = "data:\n  cache: x\n  chache: y\n", "unknown key 'data.chache' in {file}"
    config = tmp_path / "train.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = trainer_main(["train", "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "ERROR" in err and message.format(file=config) in err
    assert list(tmp_path.iterdir()) == [config]


def test_bad_override_value_is_one_clear_error(capsys, redis_server):
    code = enroll.main(["--redis-url", redis_server.url, "--set", "run.detect_every=[", "list"])
    line = one_error_line(capsys.readouterr().err)
    assert code == enroll.EXIT_ERROR and "override 'run.detect_every=[': the value is malformed YAML" in line


# -- export/import fuzz -------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    """Every (path) into a JSON document, the root included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate(doc, path, value, how: str):
    if not path:
        return value
    node = doc
    for part in path[:-1]:
        node = node[part]
    if how == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
def export_text(tmp_path_factory, redis_server) -> str:
    client = redis_server.client()
    client.flushall()
    store = GalleryStore(client, "fuzzsrc")
    store.add("Ada", unit(2, seed=1), ["a0", "a1"], "model-1", metadata={"team": "red"})
    store.add("李小龍", unit(1, seed=2), ["x"], "model-1")
    path = tmp_path_factory.mktemp("fuzz") / "g.json"
    export_gallery(store, path)
    client.flushall()
    return path.read_text(encoding="utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_mutated_gallery_files_import_or_raise_gallery_error(export_text, redis_client, tmp_path, data):
    redis_client.flushall()
    target = GalleryStore(redis_client, "dst")
    target.add("Bob", unit(1, seed=5), ["b"], "model-1")  # a gallery with something to lose
    kind = data.draw(st.sampled_from(["field", "truncate", "bytes"]))
    if kind == "field":
        doc = json.loads(export_text)
        path = data.draw(st.sampled_from(list(_paths(doc))))
        how = data.draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        raw = json.dumps(_mutate(doc, path, data.draw(json_values), how), ensure_ascii=False).encode()
    elif kind == "truncate":
        raw = export_text.encode()[: data.draw(st.integers(0, len(export_text.encode()) - 1))]
    else:
        raw = bytearray(export_text.encode())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    file = tmp_path / "mutated.json"
    file.write_bytes(raw)
    before = dump(redis_client)
    try:
        result = import_gallery(target, file)
    except GalleryError as exc:
        assert "\n" not in str(exc)
        assert dump(redis_client) == before
    else:
        assert target.get("Bob").templates == 1
        assert len(target.identities()) >= 1 + result.created
