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
    monkeypatch.setattr(on_device.engine, "run_crops", lambda batch, *a: seen.append(batch.dtype) or run_crops(batch, *a))
    monkeypatch.setattr(on_device.engine, "run", lambda feeds: pytest.fail("float32 feed made on the CPU"))
    np.testing.assert_allclose(on_device.embed(crops), on_cpu.embed(crops), atol=1e-4)
    assert seen == [np.uint8]  # one engine call: every face and its mirror image
    on_cpu.close()
    on_device.close()
