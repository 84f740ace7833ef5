"""Negatives from outside the batch: PoolMiner against a brute-force loop, and the memory bank's ring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainer.pool_miner import MemoryBank, PoolMiner

MARGIN = 0.2


def _brute_force(anchors, labels, positives, pool, pool_labels, same_set):
    """Every (a, p) pair, and the rule spelled out as a loop over the pool."""
    ua, up, un = (F.normalize(x, dim=1) for x in (anchors, positives, pool))
    out = []
    for a in range(len(anchors)):
        for p in range(len(positives)):
            if labels[a] != labels[p] or (same_set and a == p):
                continue
            d_ap = float(2 - 2 * ua[a] @ up[p])
            negs = [(float(2 - 2 * ua[a] @ un[n]), n) for n in range(len(pool)) if pool_labels[n] != labels[a]]
            semi = [(d, n) for d, n in negs if d_ap < d < d_ap + MARGIN]
            hard = [(d, n) for d, n in negs if d <= d_ap]
            if semi:
                out.append((a, p, min(semi)[1]))
            elif hard:
                out.append((a, p, max(hard)[1]))
    return sorted(out)


@pytest.mark.parametrize("same_set", [True, False])
def test_pool_miner_matches_brute_force(same_set):
    gen = torch.Generator().manual_seed(3)
    anchors = torch.randn(24, 8, generator=gen)
    labels = torch.arange(6).repeat_interleave(4)
    positives = anchors if same_set else anchors + 0.5 * torch.randn(24, 8, generator=gen)
    pool = torch.randn(80, 8, generator=gen)
    pool_labels = torch.randint(0, 12, (80,), generator=gen)
    miner = PoolMiner(MARGIN)
    a, p, n = miner.mine(anchors, labels, positives, pool, pool_labels, same_set=same_set)
    assert sorted(zip(a.tolist(), p.tolist(), n.tolist())) == _brute_force(anchors, labels, positives, pool,
                                                                           pool_labels, same_set)
    pairs = 24 * 3 if same_set else 24 * 4  # a's own row is a positive when positives are another model's
    assert miner.last_stats.anchor_positive_pairs == pairs
    assert all(pool_labels[n_] != labels[a_] for a_, n_ in zip(a.tolist(), n.tolist())), "never a same-label negative"


def test_pool_miner_gives_nothing_when_every_negative_is_beyond_the_margin():
    anchors = torch.tensor([[1.0, 0.0], [0.99, 0.1]])
    labels = torch.tensor([0, 0])
    pool = torch.tensor([[-1.0, 0.0]])
    a, _, _ = PoolMiner(MARGIN).mine(anchors, labels, anchors, pool, torch.tensor([1]), same_set=True)
    assert len(a) == 0


def test_pool_miner_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same rows"):
        PoolMiner(MARGIN).mine(torch.zeros(4, 8), torch.zeros(3), torch.zeros(4, 8), torch.zeros(2, 8),
                               torch.zeros(2), same_set=True)


def test_memory_bank_keeps_the_last_rows_and_survives_a_checkpoint():
    bank = MemoryBank(size=5, dim=2)
    for step in range(4):  # 4 pushes of 2 rows into 5 slots: the last 5 rows stay
        bank.push(torch.tensor([[1.0, float(step)], [2.0, float(step)]]), torch.tensor([2 * step, 2 * step + 1]))
    assert len(bank) == 5
    assert sorted(bank.labels.tolist()) == [3, 4, 5, 6, 7]
    assert torch.allclose(bank.embeddings.norm(dim=1), torch.ones(5)), "rows are stored unit length"
    restored = MemoryBank(size=5, dim=2)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.embeddings, bank.embeddings) and torch.equal(restored.labels, bank.labels)
