"""Held-out metrics: hand-computed cases and a plain numpy reference on random inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from versavit_trainer.metrics import mask_ious, relative_depth_metrics, retrieval_recall


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


def numpy_mean_iou(predictions, targets, num_classes, ignore_index=255):
    intersect, union, label = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for p, t in zip(predictions, targets):
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        for c in range(num_classes):
            intersect[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
            label[c] += np.sum(t == c)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
    return np.nanmean(iou), iou, intersect.sum() / label.sum()


def test_mean_iou_hand_computed_with_an_absent_class_and_ignored_pixels():
    from versavit_trainer.metrics import mean_iou

    target = torch.tensor([[0, 0], [1, 255]])
    prediction = torch.tensor([[0, 1], [1, 3]])  # class 2 appears nowhere; the ignored pixel's prediction is dropped
    result = mean_iou([prediction], [target], num_classes=4)
    # class 0: I=1, U=2; class 1: I=1, U=2; class 2: absent (NaN); class 3: I=0, U=0 after ignoring -> NaN
    assert result["per_category_iou"][:2] == [0.5, 0.5]
    assert all(np.isnan(result["per_category_iou"][2:]))
    assert result["mean_iou"] == 0.5 and result["overall_accuracy"] == pytest.approx(2 / 3)
    perfect = mean_iou([target.clone()], [target], num_classes=4)
    assert perfect["mean_iou"] == 1.0 and perfect["overall_accuracy"] == 1.0


def test_mean_iou_reduce_zero_label_and_errors():
    from versavit_trainer.metrics import mean_iou

    target = torch.tensor([[0, 1], [2, 2]])  # ADE20k style: 0 = background (ignored), classes 1..2 -> 0..1
    prediction = torch.tensor([[1, 0], [1, 0]])
    result = mean_iou([prediction], [target], num_classes=2, reduce_zero_label=True)
    # after reduction: target [[ign, 0], [1, 1]]; prediction kept at [0, 1, 0] -> class 0: I=1, U=2; class 1: I=1, U=2
    assert result["per_category_iou"] == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\) or 255, found \[7\]"):
        mean_iou([prediction], [torch.tensor([[7, 1], [0, 0]])], num_classes=2)
    with pytest.raises(ValueError, match="no image"):
        mean_iou([], [], num_classes=2)


def test_mean_iou_matches_numpy_on_random_label_maps():
    from versavit_trainer.metrics import mean_iou

    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 6, (20, 30)) for _ in range(3)]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    predictions = [rng.integers(0, 6, (20, 30)) for _ in range(3)]
    result = mean_iou([torch.from_numpy(p) for p in predictions], [torch.from_numpy(t) for t in targets], 7)
    miou, iou, accuracy = numpy_mean_iou(predictions, targets, 7)
    assert result["mean_iou"] == pytest.approx(miou)
    np.testing.assert_allclose(result["per_category_iou"], iou)
    assert result["overall_accuracy"] == pytest.approx(accuracy)


def test_depth_metrics_hand_case_perfect_and_invalid():
    from versavit_trainer.metrics import depth_metrics, eigen_crop, garg_crop

    target = torch.tensor([[1.0, 2.0], [4.0, float("nan")]])
    prediction = torch.tensor([[2.0, 2.0], [2.0, 5.0]])
    result = depth_metrics(prediction, target)
    assert result["abs_rel"] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    assert result["rmse"] == pytest.approx(np.sqrt((1 + 0 + 4) / 3))
    assert result["log10"] == pytest.approx((np.log10(2) + 0 + np.log10(2)) / 3)
    assert result["delta1"] == pytest.approx(1 / 3) and result["delta2"] == pytest.approx(1 / 3)
    assert result["delta3"] == pytest.approx(1 / 3)  # ratios 2, 1, 2: only 1 is below 1.25^3 = 1.953
    perfect = depth_metrics(target.nan_to_num(1.0), target)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["delta1"] == 1
    assert depth_metrics(prediction, torch.full((2, 2), float("nan"))) is None
    assert depth_metrics(prediction, target, max_depth=1.5)["abs_rel"] == pytest.approx(0.5)  # 2 clamped to 1.5, vs 1
    assert eigen_crop(480, 640).sum() == (471 - 45) * (601 - 41)
    assert garg_crop(375, 1242)[200, 600] and not garg_crop(375, 1242)[0, 0]


def test_depth_metrics_match_numpy_on_random_maps():
    from versavit_trainer.metrics import depth_metrics

    rng = np.random.default_rng(1)
    g = rng.uniform(0.5, 10, (30, 40))
    g[rng.random(g.shape) < 0.2] = 0  # unlabelled
    p = rng.uniform(0.1, 12, (30, 40))
    result = depth_metrics(torch.from_numpy(p), torch.from_numpy(g), max_depth=10)
    valid = (g > 1e-3) & (g <= 10)
    pv, gv = np.clip(p[valid], 1e-3, 10), g[valid]
    ratio = np.maximum(pv / gv, gv / pv)
    expected = {
        "abs_rel": np.mean(np.abs(pv - gv) / gv), "sq_rel": np.mean((pv - gv) ** 2 / gv),
        "rmse": np.sqrt(np.mean((pv - gv) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(pv) - np.log(gv)) ** 2)),
        "log10": np.mean(np.abs(np.log10(pv) - np.log10(gv))), "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2), "delta3": np.mean(ratio < 1.25**3),
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_relative_depth_in_disparity_space_and_with_a_mask():
    target = torch.rand(6, 7) * 9 + 1
    disparity = 2.5 / target + 0.3  # an affine copy of the true disparity
    score = relative_depth_metrics(disparity, target, space="disparity")
    assert score["abs_rel"] == pytest.approx(0.0, abs=1e-6) and score["delta1"] == 1.0
    assert relative_depth_metrics(disparity, target)["abs_rel"] > 0.01  # not affine in depth
    mask = torch.zeros(6, 7, dtype=torch.bool)
    mask[0, :2] = True
    prediction = target.clone()
    prediction[1:] = 100.0  # wrong only outside the mask
    assert relative_depth_metrics(prediction, target, mask=mask)["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="space: expected 'depth' or 'disparity', got 'log'"):
        relative_depth_metrics(prediction, target, space="log")


def test_referring_masks_are_scored_at_each_images_original_resolution():
    """refCOCO's cIoU is defined at the image's own size: the logits are resized there, not the ground truth to the
    input size. Checked against the formula written out, on a wide image where the two disagree."""
    from versavit_trainer.metrics import evaluate_segmentation

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 28, 28, generator=generator)
    originals = [torch.rand(30, 97, generator=generator) > 0.6, torch.zeros(41, 23, dtype=torch.bool)]
    originals[1][5:20, 3:9] = True

    class Fixed(torch.nn.Module):
        def forward(self, pixel_values, image_grid_thw, text_embeds, expression_image_index):
            return type("Out", (), {"pred_masks": logits})()

    resized = [F.interpolate(logit[None, None], size=m.shape, mode="bilinear", align_corners=False)[0, 0] > 0
               for logit, m in zip(logits, originals)]
    inter = [float((p & m).sum()) for p, m in zip(resized, originals)]
    union = [float((p | m).sum()) for p, m in zip(resized, originals)]
    squashed = torch.stack(
        [F.interpolate(m[None, None].float(), size=(28, 28), mode="nearest")[0, 0] for m in originals]
    )
    batch = {"pixel_values": None, "image_grid_thw": None, "text_embeds": None, "expression_image_index": None,
             "labels": squashed, "original_masks": originals}
    result = evaluate_segmentation(Fixed(), [batch])
    assert result["ciou"] == pytest.approx(sum(inter) / sum(union))
    assert result["miou"] == pytest.approx(sum(i / u for i, u in zip(inter, union)) / 2)
    at_input_size = evaluate_segmentation(Fixed(), [{k: v for k, v in batch.items() if k != "original_masks"}])
    assert at_input_size["ciou"] != pytest.approx(result["ciou"], abs=1e-3)  # the old scoring differs here


def test_pairwise_depth_order_by_hand():
    from versavit_trainer.metrics import pairwise_depth_order

    disparity = torch.tensor([[1.0, 2.0, 2.0], [0.5, 3.0, 0.0]])
    pairs = [
        {"point1": [1, 1], "point2": [0, 0], "closer_point": "point1"},   # 3.0 > 1.0: right
        {"point1": [0, 0], "point2": [1, 1], "closer_point": "point1"},   # 1.0 < 3.0: wrong
        {"point1": [0, 1], "point2": [0, 2], "closer_point": "point1"},   # a tie counts wrong
        {"point1": [1, 2], "point2": [1, 0], "closer_point": "point2"},   # 0.0 < 0.5: right
    ]
    assert pairwise_depth_order(disparity, pairs) == (2, 4)
    # the same map read as depth: smaller is closer; the tie stays wrong
    assert pairwise_depth_order(disparity, pairs, space="depth") == (1, 4)
    with pytest.raises(ValueError, match=r"point2 \[2, 0\] lies outside the 2x3 image"):
        pairwise_depth_order(disparity, [{"point1": [0, 0], "point2": [2, 0], "closer_point": "point1"}])


# ---------------------------------------------------------------------------------------- image-text retrieval
def test_retrieval_recall_on_hand_made_cases_with_ties():
    # 3 images, 4 captions (image 0 has two). Image 1's caption ties with a negative: ties count against it.
    similarity = torch.tensor([
        [0.9, 0.1, 0.5, 0.2],   # image 0: own captions 0 and 2 score 0.9 / 0.5 -> best is rank 0
        [0.3, 0.4, 0.4, 0.1],   # image 1: own caption 1 scores 0.4, tied with caption 2 -> rank 1
        [0.2, 0.3, 0.1, 0.1],   # image 2: own caption 3 scores 0.1, below 0.2 and 0.3, tied with caption 2 -> rank 3
    ])
    text_image = torch.tensor([0, 1, 0, 2])
    scores = retrieval_recall(similarity, text_image, ks=(1, 2, 5))
    assert scores["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert scores["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert scores["image_to_text_R@5"] == pytest.approx(1.0)
    # Text ranks: caption 0 -> image 0 best (0); caption 1 -> image 1 at 0.4 beats 0.3, 0.1 (0);
    # caption 2 -> image 0 at 0.5 beats 0.4 (0); caption 3 -> image 2 at 0.1 ties images 1 and 0 score 0.1, 0.2 (2).
    assert scores["text_to_image_R@1"] == pytest.approx(3 / 4)
    assert scores["text_to_image_R@2"] == pytest.approx(3 / 4)
    assert scores["text_to_image_R@5"] == pytest.approx(1.0)
    assert scores["mean_recall"] == pytest.approx((1 / 3 + 2 / 3 + 1 + 3 / 4 + 3 / 4 + 1) / 6)
    # A constant similarity retrieves nothing at R@1 (no lucky tie-break).
    flat = retrieval_recall(torch.zeros(3, 4), text_image, ks=(1,))
    assert flat["image_to_text_R@1"] == 0 and flat["text_to_image_R@1"] == 0


def test_retrieval_recall_equals_a_loop_over_rankings():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.randn(20, 50, generator=generator)
    text_image = torch.cat([torch.arange(20), torch.randint(0, 20, (30,), generator=generator)])
    scores = retrieval_recall(similarity, text_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        hits = 0
        for i in range(20):
            top = torch.topk(similarity[i], k).indices.tolist()
            hits += any(text_image[j] == i for j in top)
        assert scores[f"image_to_text_R@{k}"] == pytest.approx(hits / 20)
        hits = sum(int(text_image[j]) in torch.topk(similarity[:, j], k).indices.tolist() for j in range(50))
        assert scores[f"text_to_image_R@{k}"] == pytest.approx(hits / 50)


@pytest.mark.parametrize("similarity, text_image, message", [
    (torch.zeros(3), torch.tensor([0, 1, 2]), r"similarity: expected \(num_images, num_texts\)"),
    (torch.full((2, 2), float("nan")), torch.tensor([0, 1]), "similarity: contains NaN"),
    (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "text_image: expected 2 integer image indices"),
    (torch.zeros(2, 2), torch.tensor([0, 2]), r"text_image: indices must lie in \[0, 2\)"),
    (torch.zeros(3, 2), torch.tensor([0, 1]), r"images \[2\] have no caption"),
])
def test_retrieval_recall_refuses_bad_inputs_by_name(similarity, text_image, message):
    with pytest.raises(ValueError, match=message):
        retrieval_recall(similarity, text_image)
