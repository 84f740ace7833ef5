"""The embedder's normalisation: on the CPU, one channel plane at a time, the same values as the whole-array
expression; handed to the engine as uint8 where the engine normalises on its device (torch-cuda)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.images import read_image
from pipeline.recognise.embedder import Embedder
from trainer.models import create_model

PHOTO = "ageitgey_face_recognition_examples/knn_examples/test/obama_and_biden.jpg"


@pytest.fixture(scope="module")
def crops(shared_data):
    from pipeline.detect import MTCNN

    image = read_image(shared_data / PHOTO)
    embedder = Embedder()
    out = embedder.crops(image, MTCNN(max_side=1280).detect_one(image))
    embedder.close()
    assert len(out) >= 2, f"expected Obama and Biden, found {len(out)} faces"
    return out


@pytest.mark.parametrize("std", [None, (57.3, 61.1, 59.9)], ids=["card", "uneven-std"])
def test_normalise_gives_exactly_the_whole_array_values(crops, std):
    embedder = Embedder()
    if std is not None:  # a std that is no power of two: division rounding must still match
        embedder.std = np.asarray(std, np.float32)
    expected = ((crops.astype(np.float32) - embedder.mean) / embedder.std).transpose(0, 3, 1, 2)
    got = embedder.normalise(crops)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    embedder.close()


def test_engine_that_normalises_on_its_device_gets_uint8_and_agrees_with_onnxruntime(crops, monkeypatch):
    on_cpu = Embedder()
    on_device = Embedder(engine="torch-cuda", create_model=create_model, device="cpu", fp16=False,
                         cuda_graphs=False)
    assert not on_cpu.device_preprocessing and on_device.device_preprocessing
    seen = []
    run_crops = on_device.engine.run_crops

    def spy(batch, mean, std, mirror=False):
        seen.append((batch.dtype, len(batch), mirror))
        return run_crops(batch, mean, std, mirror=mirror)

    monkeypatch.setattr(on_device.engine, "run_crops", spy)
    monkeypatch.setattr(on_device.engine, "run", lambda feeds: pytest.fail("float32 feed made on the CPU"))
    np.testing.assert_allclose(on_device.embed(crops), on_cpu.embed(crops), atol=1e-4)
    # One engine call of the crops alone: their mirror images are made on the device.
    assert seen == [(np.uint8, len(crops), True)]
    on_device.batch_size = 2  # one face per call, its mirror beside it: same embeddings in the same order
    np.testing.assert_allclose(on_device.embed(crops), on_cpu.embed(crops), atol=1e-4)
    assert seen[1:] == [(np.uint8, 1, True)] * len(crops)
    on_cpu.close()
    on_device.close()


def test_shift_views_with_mirrors_made_on_the_device_agree_with_onnxruntime(crops):
    card = Embedder().card_path.parent / "facestream-default-tta.json"
    on_cpu = Embedder(card)
    on_device = Embedder(card, engine="torch-cuda", create_model=create_model, device="cpu", fp16=False,
                         cuda_graphs=False)
    assert on_device.card.test_time_shifts and on_device.card.flip_average
    np.testing.assert_allclose(on_device.embed(crops), on_cpu.embed(crops), atol=1e-4)
    on_cpu.close()
    on_device.close()
