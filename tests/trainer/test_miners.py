"""Miners against a brute-force loop over every (a, p, n) of small random batches; the mining curriculum."""

import time

import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from trainer.curriculum import Curriculum, Stage
from trainer.miners import (
    BatchAllMiner,
    BatchHardMiner,
    MiningStats,
    SemiHardMiner,
    create_miner,
    squared_distances,
)

SEEDS = range(6)
MARGINS = (0.2, 0.5)


def random_batch(seed: int, size: int = 14, dim: int = 3):
    """Low-dimensional embeddings (so easy, semi-hard and hard negatives all occur) and labels with singletons."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (size,), generator=g)
    labels[-1] = 99  # always one singleton
    return torch.randn(size, dim, generator=g), labels


class BruteForce:
    """Every ordered (a, p) pair and every negative, classified with the miner's own float32 distances."""

    def __init__(self, embeddings, labels, margin):
        self.d = squared_distances(embeddings).numpy()
        self.margin = np.float32(margin)
        lab = labels.tolist()
        n = len(lab)
        self.pairs = [(a, p) for a in range(n) for p in range(n) if a != p and lab[a] == lab[p]]
        self.negatives = {a: [x for x in range(n) if lab[x] != lab[a]] for a in range(n)}
        self.positives = {a: [p for p in range(n) if p != a and lab[p] == lab[a]] for a in range(n)}

    def bound(self, a, p):
        return np.float32(self.d[a, p]) + self.margin  # float32, as the miner adds it

    def semihard(self, a, p):
        return [x for x in self.negatives[a] if self.d[a, p] < self.d[a, x] < self.bound(a, p)]

    def hard(self, a, p):
        return [x for x in self.negatives[a] if self.d[a, x] <= self.d[a, p]]

    def active(self, a, p):
        return [x for x in self.negatives[a] if self.d[a, x] < self.bound(a, p)]

    def check_stats(self, stats):
        assert stats.anchor_positive_pairs == len(self.pairs)
        assert stats.valid_triplets == sum(len(self.negatives[a]) for a, _ in self.pairs)
        assert stats.active_triplets == sum(len(self.active(a, p)) for a, p in self.pairs)


def as_list(triplets):
    for t in triplets:
        assert t.dtype == torch.long
    return list(zip(*(t.tolist() for t in triplets)))


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("seed", SEEDS)
def test_semihard_random_returns_one_candidate_for_every_pair_that_has_one(seed, margin):
    emb, labels = random_batch(seed)
    oracle = BruteForce(emb, labels, margin)
    miner = SemiHardMiner(margin, generator=torch.Generator().manual_seed(seed))
    got = as_list(miner.mine(emb, labels))
    expected_pairs = {(a, p) for a, p in oracle.pairs if oracle.semihard(a, p)}
    assert expected_pairs, "test batch should contain semi-hard negatives"
    assert len(got) == len({(a, p) for a, p, _ in got}), "one negative per pair"
    assert {(a, p) for a, p, _ in got} == expected_pairs
    for a, p, n in got:
        assert n in oracle.semihard(a, p)
    oracle.check_stats(miner.last_stats)
    assert miner.last_stats.triplets == len(got)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("seed", SEEDS)
def test_semihard_hardest_picks_nearest_semihard_negative(seed, margin):
    emb, labels = random_batch(seed)
    oracle = BruteForce(emb, labels, margin)
    got = as_list(SemiHardMiner(margin, select="hardest").mine(emb, labels))
    assert {(a, p) for a, p, _ in got} == {(a, p) for a, p in oracle.pairs if oracle.semihard(a, p)}
    for a, p, n in got:
        assert oracle.d[a, n] == min(oracle.d[a, x] for x in oracle.semihard(a, p))


@pytest.mark.parametrize("select", ["random", "hardest"])
@pytest.mark.parametrize("seed", SEEDS)
def test_semihard_fallback_takes_easiest_hard_negative(seed, select):
    margin = 0.2
    emb, labels = random_batch(seed)
    oracle = BruteForce(emb, labels, margin)
    miner = SemiHardMiner(margin, select=select, fallback_to_hard=True, generator=torch.Generator().manual_seed(0))
    got = {(a, p): n for a, p, n in as_list(miner.mine(emb, labels))}
    for a, p in oracle.pairs:
        semihard, hard = oracle.semihard(a, p), oracle.hard(a, p)
        if semihard:
            assert got[(a, p)] in semihard
        elif hard:
            assert oracle.d[a, got[(a, p)]] == max(oracle.d[a, x] for x in hard)
        else:
            assert (a, p) not in got
    assert miner.last_stats.triplets == len(got)


def test_semihard_random_is_deterministic_given_a_generator():
    emb, labels = random_batch(0, size=40, dim=4)

    def run(seed):
        return as_list(SemiHardMiner(0.5, generator=torch.Generator().manual_seed(seed)).mine(emb, labels))

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_hard_matches_brute_force(seed):
    emb, labels = random_batch(seed)
    oracle = BruteForce(emb, labels, 0.2)
    miner = BatchHardMiner(margin=0.2)
    got = as_list(miner.mine(emb, labels))
    anchors = {a for a in range(len(labels)) if oracle.positives[a] and oracle.negatives[a]}
    assert sorted(a for a, _, _ in got) == sorted(anchors)
    for a, p, n in got:
        assert labels[a] == labels[p] != labels[n] and a != p
        assert oracle.d[a, p] == max(oracle.d[a, x] for x in oracle.positives[a])
        assert oracle.d[a, n] == min(oracle.d[a, x] for x in oracle.negatives[a])
    oracle.check_stats(miner.last_stats)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("seed", SEEDS)
def test_batch_all_matches_brute_force(seed, margin):
    emb, labels = random_batch(seed)
    oracle = BruteForce(emb, labels, margin)
    miner = BatchAllMiner(margin)
    got = as_list(miner.mine(emb, labels))
    expected = {(a, p, n) for a, p in oracle.pairs for n in oracle.active(a, p)}
    assert len(got) == len(set(got))
    assert set(got) == expected
    oracle.check_stats(miner.last_stats)
    assert miner.last_stats.active_fraction == pytest.approx(len(expected) / miner.last_stats.valid_triplets)


MINERS = [
    lambda: SemiHardMiner(0.2, generator=torch.Generator().manual_seed(0)),
    lambda: SemiHardMiner(0.2, fallback_to_hard=True),
    lambda: BatchHardMiner(0.2),
    lambda: BatchAllMiner(0.2),
]


@pytest.mark.parametrize("make", MINERS)
@pytest.mark.parametrize(
    "labels",
    [[3, 3, 3, 3, 3], [0, 1, 2, 3, 4], [7], []],
    ids=["one-identity", "all-singletons", "single-face", "empty"],
)
def test_batches_without_valid_triplets_give_empty_long_tensors(make, labels):
    labels = torch.tensor(labels, dtype=torch.long)
    emb = torch.randn(len(labels), 8)
    miner = make()
    triplets = miner.mine(emb, labels)
    assert [t.shape for t in triplets] == [(0,)] * 3 and all(t.dtype == torch.long for t in triplets)
    assert miner.last_stats.valid_triplets == 0 and miner.last_stats.active_fraction == 0.0


def one_hot(*axes):
    return torch.eye(4)[list(axes)]


def test_ties_at_both_ends_of_the_semihard_interval_are_excluded():
    # anchor 0 and positive 1 coincide (d²=0); negative 2 coincides too (d²=0: a tie with d²(a,p), hard);
    # negative 3 is orthogonal (d²=2 exactly: a tie with d²(a,p) + α when α = 2).
    emb, labels = one_hot(0, 0, 0, 1), torch.tensor([0, 0, 1, 2])
    assert as_list(SemiHardMiner(2.0, select="hardest").mine(emb, labels)) == []
    assert sorted(as_list(SemiHardMiner(2.5, select="hardest").mine(emb, labels))) == [(0, 1, 3), (1, 0, 3)]
    fallback = SemiHardMiner(2.0, fallback_to_hard=True).mine(emb, labels)
    assert sorted(as_list(fallback)) == [(0, 1, 2), (1, 0, 2)]


def test_tied_duplicates_of_the_positive_count_as_active_for_batch_all():
    # Negative 2 duplicates positive 1 (d² = 2 for both); negative 3 is the anchor's antipode (d² = 4).
    emb, labels = torch.cat([one_hot(0, 1, 1), -one_hot(0)]), torch.tensor([0, 0, 1, 2])
    got = set(as_list(BatchAllMiner(0.2).mine(emb, labels)))
    assert (0, 1, 2) in got and (0, 1, 3) not in got  # loss 0.2 > 0 vs. loss -1.8


def test_miners_do_not_track_gradients():
    emb = torch.randn(12, 8, requires_grad=True)
    labels = torch.arange(6).repeat_interleave(2)
    for make in MINERS:
        for t in make().mine(emb, labels):
            assert not t.requires_grad
    assert emb.grad is None


def test_semihard_handles_a_paper_sized_batch_quickly():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1800, 128, generator=g)
    labels = torch.arange(45).repeat_interleave(40)
    miner = SemiHardMiner(0.2, generator=g)
    miner.mine(emb[:64], labels[:64])  # warm-up
    # CPU time on one thread: a wall-clock bound would fail whenever other jobs share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        a, _, _ = miner.mine(emb, labels)
        elapsed = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    assert miner.last_stats.anchor_positive_pairs == 45 * 40 * 39
    assert len(a) > 0.9 * 45 * 40 * 39
    assert elapsed < 1.0, f"semi-hard mining of 1,800 embeddings took {elapsed:.2f} CPU s"


@pytest.mark.parametrize(
    "build",
    [lambda: SemiHardMiner(-0.1), lambda: SemiHardMiner(0.2, select="easy"), lambda: create_miner("hardest", 0.2)],
)
def test_bad_settings_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_create_miner_passes_the_margin_through():
    assert create_miner("semihard", 0.3, select="hardest").margin == 0.3
    assert isinstance(create_miner("batch_hard", 0.3), BatchHardMiner)


def test_shape_errors_say_expected_and_actual():
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\), got \(3,\)"):
        SemiHardMiner(0.2).mine(torch.randn(4, 8), torch.zeros(3, dtype=torch.long))


# --- curriculum (trainer/curriculum.py), driven by synthetic active-fraction sequences ---


def drive(curriculum, fractions):
    return [curriculum.step(f) for f in fractions]


def test_advances_when_the_windowed_mean_falls_below_the_threshold():
    cur = Curriculum(margin=0.2, threshold=0.1, window=3)
    assert isinstance(cur.miner, SemiHardMiner) and cur.stage_index == 0
    records = drive(cur, [0.5, 0.5, 0.5, 0.05, 0.05, 0.05])
    # means over the last 3: 0.5, 0.5, 0.5, 0.35, 0.2, 0.05 → the sixth step advances
    assert [r["curriculum/advanced"] for r in records] == [0, 0, 0, 0, 0, 1]
    assert [r["curriculum/stage"] for r in records] == [0, 0, 0, 0, 0, 1]
    assert records[-1]["curriculum/active_fraction_mean"] == pytest.approx(0.05)
    assert isinstance(cur.miner, BatchHardMiner) and cur.steps == 6


def test_needs_a_full_window_in_the_stage_and_never_leaves_the_last_stage():
    cur = Curriculum(margin=0.2, threshold=0.1, window=3)
    stages = [r["curriculum/stage"] for r in drive(cur, [0.0] * 10)]
    assert stages == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]


def test_min_steps_delays_the_first_transition():
    cur = Curriculum(margin=0.2, threshold=0.1, window=2, min_steps=5)
    stages = [r["curriculum/stage"] for r in drive(cur, [0.0] * 6)]
    assert stages == [0, 0, 0, 0, 1, 1]


def test_margin_schedule_scales_the_one_config_margin_for_miner_and_loss():
    stages = [Stage("semihard"), Stage("semihard", margin_scale=1.5, options={"select": "hardest"}), Stage("batch_hard")]
    cur = Curriculum(margin=0.2, stages=stages, threshold=0.2, window=2)
    margins = [r["curriculum/margin"] for r in drive(cur, [0.1, 0.1, 0.5, 0.1, 0.1, 0.1])]
    assert margins == pytest.approx([0.2, 0.3, 0.3, 0.3, 0.2, 0.2])
    assert cur.base_margin == 0.2
    assert cur.miner.margin == cur.loss.margin == pytest.approx(0.2)


def test_in_between_stage_uses_its_options_and_the_scaled_margin():
    stages = [Stage("semihard"), Stage("semihard", margin_scale=1.5, options={"select": "hardest"})]
    cur = Curriculum(margin=0.2, stages=stages, threshold=0.5, window=1)
    cur.step(0.0)
    assert cur.miner.select == "hardest" and cur.miner.margin == pytest.approx(0.3) == cur.loss.margin


def test_accepts_mining_stats_from_a_miner():
    cur = Curriculum(margin=0.2, threshold=0.5, window=1)
    emb, labels = torch.randn(16, 8), torch.arange(4).repeat_interleave(4)
    cur.miner.mine(emb, labels)
    stats = cur.miner.last_stats
    record = cur.step(stats)
    assert isinstance(stats, MiningStats)
    assert record["curriculum/active_fraction"] == pytest.approx(stats.active_fraction)


def test_state_dict_round_trip_resumes_mid_window():
    a = Curriculum(margin=0.2, threshold=0.1, window=3)
    drive(a, [0.5, 0.0])
    b = Curriculum(margin=0.2, threshold=0.1, window=3)
    b.load_state_dict(a.state_dict())
    assert drive(a, [0.0, 0.0]) == drive(b, [0.0, 0.0])
    assert a.stage_index == b.stage_index == 1 and a.steps == b.steps == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stages=[]),
        dict(stages=[Stage("hardest")]),
        dict(stages=[Stage("semihard", margin_scale=-1)]),
        dict(threshold=1.5),
        dict(window=0),
    ],
)
def test_bad_curriculum_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        Curriculum(margin=0.2, **kwargs)
