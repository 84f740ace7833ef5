"""read_image: SourceError naming the file for unreadable input; every decodable format comes back BGR uint8."""

import cv2
import numpy as np
import pytest

from pipeline.core.errors import SourceError
from pipeline.core.images import read_image


@pytest.fixture
def jpeg_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", lambda jpg: b"", "0 bytes"),
        ("text.jpg", lambda jpg: b"this is not an image\n" * 10, "not a decodable image"),
        ("truncated.jpg", lambda jpg: jpg[: len(jpg) // 2], "truncated|not a decodable image"),
    ],
)
def test_unreadable_files_raise_naming_the_file(tmp_path, jpeg_bytes, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content(jpeg_bytes))
    with pytest.raises(SourceError, match=reason) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_jpeg_reads_as_bgr(tmp_path, jpeg_bytes):
    path = tmp_path / "ok.jpg"
    path.write_bytes(jpeg_bytes)
    image = read_image(path)
    assert image.shape == (64, 80, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    ("pixels", "expected_bgr"),
    [
        (np.full((4, 5), 200, np.uint8), (200, 200, 200)),  # grayscale
        (np.dstack([np.full((4, 5, 3), (10, 20, 30), np.uint8), np.full((4, 5), 128, np.uint8)]), (10, 20, 30)),  # BGRA
        (np.full((4, 5, 3), (1000, 20000, 65535), np.uint16), (3, 78, 255)),  # 16-bit colour: high byte
        (np.full((4, 5), 51400, np.uint16), (200, 200, 200)),  # 16-bit grayscale
    ],
)
def test_png_formats_convert_to_bgr_uint8(tmp_path, pixels, expected_bgr):
    path = tmp_path / "in.png"
    assert cv2.imwrite(str(path), pixels)
    image = read_image(path)
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], expected_bgr)
