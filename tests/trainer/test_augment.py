"""Augment: shape/dtype kept, seeded determinism, identity when disabled, each operation does its job."""

import dataclasses

import cv2
import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from trainer.augment import Augment, AugmentConfig

OFF = AugmentConfig.disabled()


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A textured, asymmetric 112×112 RGB crop (a colour gradient plus a bright block on the left)."""
    y, x = np.mgrid[0:112, 0:112]
    image = np.stack([x * 2, y * 2, (x + y) % 256], axis=2).astype(np.uint8)
    image[40:70, 10:30] = (250, 240, 30)
    return image


def only(**kwargs) -> AugmentConfig:
    return dataclasses.replace(OFF, **kwargs)


def test_default_config_keeps_shape_and_dtype_and_leaves_the_input_alone(crop):
    before = crop.copy()
    augment = Augment(AugmentConfig(jpeg_p=1.0, grayscale_p=0.5), seed=3)
    for _ in range(5):
        out = augment(crop)
        assert out.shape == crop.shape and out.dtype == np.uint8
    assert np.array_equal(crop, before)


def test_deterministic_by_seed(crop):
    def run(seed):
        augment = Augment(AugmentConfig(jpeg_p=0.5), seed=seed)
        return [augment(crop) for _ in range(4)]

    assert all(np.array_equal(a, b) for a, b in zip(run(1), run(1)))
    assert not all(np.array_equal(a, b) for a, b in zip(run(1), run(2)))


def test_disabled_is_identity_and_returns_a_copy(crop):
    out = Augment(OFF, seed=0)(crop)
    assert np.array_equal(out, crop) and out is not crop


def test_flip_really_flips(crop):
    out = Augment(only(flip_p=1.0))(crop)
    assert np.array_equal(out, crop[:, ::-1])
    assert out.flags.c_contiguous and not np.shares_memory(out, crop)


@pytest.mark.parametrize(
    "config",
    [
        only(brightness=0.4),
        only(contrast=0.4),
        only(saturation=0.4),
        only(shift=0.1),
        only(scale=0.1),
        only(jpeg_p=1.0, jpeg_quality=(20, 30)),
        only(grayscale_p=1.0),
    ],
    ids=["brightness", "contrast", "saturation", "shift", "scale", "jpeg", "grayscale"],
)
def test_each_operation_changes_the_crop_a_little(crop, config):
    out = Augment(config, seed=0)(crop)
    assert out.shape == crop.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - crop.astype(int)).mean()
    assert 0 < diff < 60


def test_grayscale_gives_equal_channels(crop):
    out = Augment(only(grayscale_p=1.0))(crop)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_brightness_scales_pixel_values(crop):
    outs = [Augment(only(brightness=0.3), seed=s)(crop).astype(float).mean() for s in range(6)]
    assert min(outs) < crop.mean() < max(outs)


def test_shift_uses_replicated_borders_not_black(crop):
    white = np.full((64, 64, 3), 200, dtype=np.uint8)
    out = Augment(only(shift=0.2, scale=0.2), seed=1)(white)
    assert np.array_equal(out, white)


def test_on_a_real_lfw_face(shared_data):
    path = next(iter(sorted((shared_data / "lfw" / "images").glob("*/*_0001.jpg"))))
    face = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[69:181, 69:181]  # central 112×112
    out = Augment(AugmentConfig(flip_p=0.0, jpeg_p=1.0), seed=0)(np.ascontiguousarray(face))
    assert out.shape == (112, 112, 3) and 0 < np.abs(out.astype(int) - face.astype(int)).mean() < 30


@pytest.mark.parametrize(
    "kwargs",
    [dict(flip_p=1.5), dict(brightness=-0.1), dict(shift=1.0), dict(jpeg_quality=(90, 10)), dict(jpeg_quality=(0, 50))],
)
def test_invalid_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)])
def test_wrong_input_says_what_it_got(bad):
    with pytest.raises(ValueError, match="uint8 of shape"):
        Augment()(bad)
