"""PKSampler: batch shape, replacement and exclusion, epochs, determinism, DDP split."""

import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from trainer.sampler import PKSampler

# 30 identities: identity i has (i % 7) + 1 images, labels shuffled through the dataset.
SIZES = [(i % 7) + 1 for i in range(30)]
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(30) * 10, SIZES))


def batches(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_batch_holds_p_identities_with_k_images_each():
    sampler = PKSampler(LABELS, p=4, k=3, seed=1)
    out = batches(sampler)
    assert len(out) == len(sampler) > 0
    for batch in out:
        assert len(batch) == 12
        rows = LABELS[batch].reshape(4, 3)  # identity-major: K consecutive images per identity
        assert (rows == rows[:, :1]).all() and len(set(rows[:, 0].tolist())) == 4


def test_small_identities_use_every_image_then_repeat_and_tiny_ones_are_excluded():
    sampler = PKSampler(LABELS, p=2, k=5, seed=0, min_images=3)
    seen = set()
    for batch in batches(sampler):
        for label in set(LABELS[batch].tolist()):
            own = [i for i in batch if LABELS[i] == label]
            available = int(np.sum(LABELS == label))
            assert available >= 3, "identities below min_images must be excluded"
            assert len(set(own)) == min(available, 5), "all distinct images before any repeat"
            seen.add(label)
    eligible = sum(s >= 3 for s in SIZES)
    assert len(sampler.identities) == eligible
    assert len(seen) == (eligible // 2) * 2


def test_an_epoch_uses_each_identity_at_most_once_and_drops_the_remainder():
    sampler = PKSampler(LABELS, p=4, k=2, seed=0)  # 30 − 5 singletons = 25 identities → 6 batches
    out = batches(sampler)
    assert len(sampler) == len(out) == 6
    labels = [label for b in out for label in set(LABELS[b].tolist())]
    assert len(labels) == len(set(labels)) == 24


def test_deterministic_by_seed_and_epoch():
    def run(seed, epoch):
        return batches(PKSampler(LABELS, p=3, k=4, seed=seed), epoch)

    assert run(5, 0) == run(5, 0)
    assert run(5, 0) != run(5, 1)
    assert run(5, 0) != run(6, 0)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_identities_equal_lengths_and_the_single_process_batches(world_size):
    ranks = [PKSampler(LABELS, p=3, k=2, seed=7, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = [batches(s, epoch=2) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == (25 // 3) // world_size
    identities = [set(LABELS[batch].tolist()) for rank in per_rank for batch in rank]
    assert sum(len(s) for s in identities) == len(set().union(*identities)), "an identity on two ranks"
    single = batches(PKSampler(LABELS, p=3, k=2, seed=7), epoch=2)
    interleaved = [per_rank[r][step] for step in range(len(per_rank[0])) for r in range(world_size)]
    assert interleaved == single[: len(interleaved)]


def test_works_as_a_dataloader_batch_sampler():
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(LABELS))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PKSampler(LABELS, p=2, k=2))
    (labels,) = next(iter(loader))
    assert labels.shape == (4,) and len(set(labels.tolist())) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(p=1, k=2), "P >= 2"),
        (dict(p=2, k=1), "K >= 2"),
        (dict(p=2, k=2, min_images=0), "min_images"),
        (dict(p=2, k=2, rank=2, world_size=2), "rank"),
        (dict(p=20, k=2, world_size=2), "at least P × world_size = 40 identities"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PKSampler(LABELS, **kwargs)
