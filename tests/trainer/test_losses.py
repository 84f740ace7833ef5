"""Triplet and distillation losses against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from trainer.losses import DistillationLoss, ThresholdLoss, TripletLoss, teacher_mean


def idx(*values):
    return torch.tensor(values, dtype=torch.long)


# Unit vectors with easy d²: e0·e1 = 0 → d² 2; e0·e2 = −1 → d² 4; e0·e3 = 0.6 → d² 0.8.
POINTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])


@pytest.mark.parametrize(
    "triplets, expected_loss, expected_active",
    [
        ((idx(0), idx(1), idx(3)), 2.0 - 0.8 + 0.2, 1.0),  # hard negative: loss 1.4
        ((idx(0), idx(3), idx(1)), 0.0, 0.0),  # 0.8 − 2 + 0.2 < 0
        ((idx(0), idx(1), idx(2)), 0.0, 0.0),  # 2 − 4 + 0.2 < 0
        ((idx(0, 0, 0), idx(1, 3, 1), idx(3, 1, 2)), 1.4 / 3, 1 / 3),  # mean over all given triplets
        ((idx(0), idx(1), idx(1)), 0.2, 1.0),  # n = p: exactly the margin
    ],
)
def test_triplet_loss_hand_computed(triplets, expected_loss, expected_active):
    out = TripletLoss(0.2)(POINTS, triplets)
    assert out.loss.item() == pytest.approx(expected_loss, abs=1e-6)
    assert out.active_fraction == pytest.approx(expected_active)
    assert out.triplets == len(triplets[0])


def test_triplet_loss_normalises_its_input():
    out = TripletLoss(0.2)(POINTS * 3.0, (idx(0), idx(1), idx(3)))
    assert out.loss.item() == pytest.approx(1.4, abs=1e-6)


def test_triplet_loss_gradient_matches_hand_derivation():
    # On unit vectors d²(a, x) = 2 − 2·a·x, so an active triplet has ∂loss/∂a = 2(n − p); normalisation's
    # Jacobian only removes the component along a, which n − p does not have here.
    emb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    TripletLoss(0.2)(emb, (idx(0), idx(1), idx(2))).loss.backward()
    assert torch.allclose(emb.grad[0], torch.tensor([0.0, -2.0, 2.0]), atol=1e-6)


def test_zero_triplets_give_a_zero_loss_that_can_backpropagate():
    emb = torch.randn(4, 8, requires_grad=True)
    out = TripletLoss(0.2)(emb, (idx(), idx(), idx()))
    assert out.loss.item() == 0.0 and out.loss.grad_fn is not None
    assert out.active_fraction == 0.0 and out.triplets == 0
    out.loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_triplet_loss_rejects_negative_margin_and_ragged_triplets():
    with pytest.raises(ConfigError):
        TripletLoss(-1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        TripletLoss(0.2)(POINTS, (idx(0, 1), idx(1), idx(2)))


def test_centred_cosine_hand_computed():
    teacher = torch.tensor([[2.0, 1.0], [0.0, 1.0]])  # centred on (1, 1): (1, 0) and (−1, 0)
    student = torch.tensor([[1.0, 0.0], [0.0, 5.0]])  # cos 1 with the first, 0 with the second
    loss = DistillationLoss("centred_cosine", teacher_mean=torch.tensor([1.0, 1.0]))(student, teacher)
    assert loss.item() == pytest.approx(0.5)


def test_centred_cosine_refuses_raw_teacher_vectors():
    with pytest.raises(ConfigError, match="training-set mean"):
        DistillationLoss("centred_cosine")


def test_relational_hand_computed():
    s = 1 / math.sqrt(2)
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]])  # off-diagonal cosines 0, s, s
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # 1, 0, 0 (3-d is fine)
    loss = DistillationLoss("relational", teacher_mean=torch.zeros(3))(student, teacher)
    assert loss.item() == pytest.approx((1.0 + 0.5 + 0.5) * 2 / 6, abs=1e-6)


def test_relational_without_a_mean_ignores_the_teachers_common_component():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    common = torch.tensor([5.0, -3.0, 4.0, 2.0])
    loss = DistillationLoss("relational")
    assert loss(student, teacher + common).item() == pytest.approx(loss(student, teacher).item(), abs=1e-5)


def test_teacher_mean_centres_dlib_like_vectors():
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(200, 8, generator=g) * 0.3 + torch.ones(8)  # a large shared direction
    centred = torch.nn.functional.normalize(raw - teacher_mean(raw), dim=1)
    raw_cos = torch.nn.functional.normalize(raw, dim=1) @ torch.nn.functional.normalize(raw, dim=1).T
    assert raw_cos.mean() > 0.8 and (centred @ centred.T).sum() / 200**2 < 0.05


@pytest.mark.parametrize("mode", ["centred_cosine", "relational"])
def test_distillation_losses_backpropagate_to_the_student_only(mode):
    student = torch.randn(5, 4, requires_grad=True)
    teacher = torch.randn(5, 4, requires_grad=True)
    DistillationLoss(mode, teacher_mean=torch.zeros(4))(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_distillation_shape_errors():
    with pytest.raises(ValueError, match="equal B"):
        DistillationLoss("relational")(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="equal dimensions"):
        DistillationLoss("centred_cosine", teacher_mean=torch.zeros(8))(torch.randn(3, 4), torch.randn(3, 8))
    with pytest.raises(ConfigError):
        DistillationLoss("raw_cosine")


def unit_at(*degrees: float) -> torch.Tensor:
    """Unit vectors in the plane at these angles: cos between two is cos of the angle between them."""
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(radians), torch.sin(radians)], dim=1)


def test_threshold_loss_hand_computed():
    # threshold 0.8, margin 0.1: negatives above 0.75 and positives below 0.85 count.
    loss_fn = ThresholdLoss(0.8, 0.1)
    rows, labels = unit_at(0.0), torch.tensor([0])
    pool = unit_at(0.0, 30.0, 40.0, 20.0, 80.0)  # itself, a positive at cos .866 (fine) and at .766 (under),
    pool_labels = torch.tensor([0, 0, 0, 1, 1])  # a negative at .940 (over) and at .174 (fine)
    skip = torch.tensor([[True, False, False, False, False]])
    loss, stats = loss_fn(rows, labels, pool, pool_labels, skip)
    expected = ((0.85 - math.cos(math.radians(40))) + (math.cos(math.radians(20)) - 0.75)) / 2
    assert loss.item() == pytest.approx(expected)
    assert stats == {"open_set/negatives_over": 1.0, "open_set/positives_under": 1.0}


def test_threshold_loss_is_an_attached_zero_when_every_pair_is_on_its_side():
    rows = unit_at(0.0, 90.0).requires_grad_(True)
    loss, stats = ThresholdLoss(0.8, 0.1)(rows, torch.tensor([0, 1]), rows, torch.tensor([0, 1]),
                                          torch.eye(2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and stats["open_set/negatives_over"] == 0.0 and rows.grad is not None


def test_threshold_loss_gradient_pushes_a_close_stranger_away():
    rows = unit_at(0.0).requires_grad_(True)
    stranger = unit_at(10.0)
    loss, _ = ThresholdLoss(0.8, 0.1)(rows, torch.tensor([0]), stranger, torch.tensor([1]))
    loss.backward()
    step = F.normalize(rows.detach() - 0.1 * rows.grad, dim=1)
    assert (step @ stranger.T).item() < (rows.detach() @ stranger.T).item()


@pytest.mark.parametrize(("threshold", "margin"), [(1.0, 0.1), (-1.0, 0.1), (0.8, -0.1), (0.8, 1.0)])
def test_threshold_loss_refuses_thresholds_outside_the_cosine_range(threshold, margin):
    with pytest.raises(ConfigError, match="threshold must be in"):
        ThresholdLoss(threshold, margin)
