"""Held-out metrics: hand-computed cases and a plain numpy reference on random inputs."""

import numpy as np
import pytest
import torch

from versavit_trainer.metrics import mask_ious, relative_depth_metrics


def numpy_relative_depth(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    valid = np.isfinite(target) & (target > 0)
    p, d = prediction[valid].astype(np.float64), target[valid].astype(np.float64)
    a = np.stack([p, np.ones_like(p)], 1)
    (scale, shift), *_ = np.linalg.lstsq(a, d, rcond=None)
    aligned = np.maximum(scale * p + shift, 1e-6 * d.max())
    abs_rel = np.mean(np.abs(aligned - d) / d)
    delta1 = np.mean(np.maximum(aligned / d, d / aligned) < 1.25)
    return abs_rel, delta1


def test_an_affine_copy_of_the_target_is_perfect():
    target = torch.rand(8, 9) * 5 + 1
    target[0, :3] = float("nan")  # unlabelled
    target[1, 0] = float("inf")
    score = relative_depth_metrics(3.0 * target.nan_to_num(0, 0, 0) - 2.0, target)
    assert score["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert score["delta1"] == 1.0


def test_hand_computed_case():
    # Targets 1, 2, 3, 4 and a constant prediction: the least-squares fit is the mean, 2.5 everywhere.
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    score = relative_depth_metrics(torch.ones(2, 2), target)
    assert score["abs_rel"] == pytest.approx((1.5 / 1 + 0.5 / 2 + 0.5 / 3 + 1.5 / 4) / 4)
    # ratios 2.5, 1.25, 1.2, 1.6: only 1.2 is below the threshold 1.25 (strictly)
    assert score["delta1"] == pytest.approx(0.25)


def test_matches_numpy_reference_on_random_maps():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        target = torch.rand(16, 20, generator=generator) * 10 + 0.5
        target[torch.rand(16, 20, generator=generator) < 0.2] = float("nan")
        prediction = torch.randn(16, 20, generator=generator)
        score = relative_depth_metrics(prediction, target)
        abs_rel, delta1 = numpy_relative_depth(prediction.numpy(), target.numpy())
        assert score["abs_rel"] == pytest.approx(abs_rel, rel=1e-6)
        assert score["delta1"] == pytest.approx(delta1)


def test_too_few_labelled_pixels_and_shape_errors():
    target = torch.full((4, 4), float("nan"))
    assert relative_depth_metrics(torch.rand(4, 4), target) is None
    with pytest.raises(ValueError, match=r"prediction shape \(4, 5\) does not match target \(4, 4\)"):
        relative_depth_metrics(torch.rand(4, 5), torch.rand(4, 4))


def test_mask_ious_hand_cases():
    predicted = torch.zeros(3, 2, 2, dtype=torch.bool)
    target = torch.zeros(3, 2, 2, dtype=torch.bool)
    predicted[0, 0, :] = True          # 2 pixels, 1 shared with the target's 2 -> 1 / 3
    target[0, :, 0] = True
    predicted[1] = target[1] = True    # perfect -> 1
    # mask 2: both empty -> 1
    iou, intersection, union = mask_ious(predicted, target)
    assert iou.tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    assert intersection.tolist() == [1, 4, 0]
    assert union.tolist() == [3, 4, 0]
    empty_prediction = torch.zeros(1, 2, 2, dtype=torch.bool)
    assert mask_ious(empty_prediction, torch.ones(1, 2, 2, dtype=torch.bool))[0].item() == 0.0
    with pytest.raises(ValueError, match="do not match"):
        mask_ious(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


def test_mask_ious_match_numpy_on_random_masks():
    rng = np.random.default_rng(0)
    predicted, target = rng.random((6, 7, 9)) < 0.4, rng.random((6, 7, 9)) < 0.5
    iou, _, _ = mask_ious(torch.from_numpy(predicted), torch.from_numpy(target))
    expected = [(p & t).sum() / (p | t).sum() for p, t in zip(predicted, target)]
    assert iou.tolist() == pytest.approx(expected)
