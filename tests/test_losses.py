"""The depth and mask losses against plain-formula references written here with loops and numpy."""

import math

import numpy as np
import pytest
import torch

from modeling_versavit import contrastive_loss, depth_loss, gradient_matching_loss, mask_loss, ssi_loss
from modeling_versavit.losses_versavit import depth_validity

EPS = 1e-6


# ---------------------------------------------------------------- references (supplement §7 and §8.1, as written)
def ref_normalise(values: list[float]) -> list[float]:
    ordered = sorted(values)
    median = ordered[(len(ordered) - 1) // 2]  # lower median
    scale = sum(abs(v - median) for v in values) / len(values)
    return [(v - median) / max(scale, EPS) for v in values]


def ref_residual(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """d̂* - d̂ at valid pixels of one image, 0 elsewhere."""
    coords = [(i, j) for i in range(pred.shape[0]) for j in range(pred.shape[1]) if valid[i, j]]
    residual = np.zeros(pred.shape)
    if coords:
        p = ref_normalise([float(pred[c]) for c in coords])
        t = ref_normalise([float(target[c]) for c in coords])
        for c, a, b in zip(coords, p, t):
            residual[c] = a - b
    return residual


def ref_ssi(pred, target, valid) -> float:
    losses = []
    for b in range(pred.shape[0]):
        count = int(valid[b].sum())
        if count:
            losses.append(np.abs(ref_residual(pred[b], target[b], valid[b]))[valid[b]].sum() / count)
    return float(np.mean(losses)) if losses else 0.0


def ref_gm(pred, target, valid, scales) -> float:
    losses = []
    for b in range(pred.shape[0]):
        if not valid[b].any():
            continue
        residual = ref_residual(pred[b], target[b], valid[b])
        total = 0.0
        for k in range(scales):
            step = 2**k
            r, m = residual[::step, ::step], valid[b][::step, ::step]
            grads = 0.0
            for i in range(r.shape[0]):
                for j in range(r.shape[1]):
                    if j + 1 < r.shape[1] and m[i, j] and m[i, j + 1]:
                        grads += abs(r[i, j + 1] - r[i, j])
                    if i + 1 < r.shape[0] and m[i, j] and m[i + 1, j]:
                        grads += abs(r[i + 1, j] - r[i, j])
            total += grads / max(int(m.sum()), 1)
        losses.append(total)
    return float(np.mean(losses)) if losses else 0.0


def ref_mask_loss(logits, targets, bce_weight, dice_weight) -> float:
    bces, dices = [], []
    for x, g in zip(logits, targets):
        p = 1 / (1 + np.exp(-x.astype(np.float64)))
        bces.append(float(np.mean(-(g * np.log(p) + (1 - g) * np.log(1 - p)))))
        dices.append(1 - (2 * float((p * g).sum()) + 1) / (float(p.sum()) + float(g.sum()) + 1))
    return bce_weight * float(np.mean(bces)) + dice_weight * float(np.mean(dices))


# ---------------------------------------------------------------- cases
def random_case(seed, batch=3, height=13, width=17, valid_fraction=0.7):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.1, 3.0, (batch, height, width))
    target = rng.uniform(0.5, 10.0, (batch, height, width))
    valid = rng.uniform(size=(batch, height, width)) < valid_fraction
    return pred, target, valid


def as_tensors(*arrays):
    return [torch.tensor(a) for a in arrays]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scales", [1, 3])
def test_ssi_and_gm_match_the_formula(seed, scales):
    pred, target, valid = random_case(seed)
    p, t, v = as_tensors(pred, target, valid)
    assert ssi_loss(p, t, v).item() == pytest.approx(ref_ssi(pred, target, valid), rel=1e-9, abs=1e-12)
    assert gradient_matching_loss(p, t, v, scales).item() == pytest.approx(
        ref_gm(pred, target, valid, scales), rel=1e-9, abs=1e-12
    )


def test_constant_target_and_empty_images_stay_finite():
    pred, target, valid = random_case(3)
    target[0] = 4.2  # constant target: zero scale
    valid[1] = False  # an image with no valid pixel is left out of the mean
    p, t, v = as_tensors(pred, target, valid)
    p.requires_grad_(True)
    loss, terms = depth_loss(p, t, v, ssi_weight=1.0, gm_weight=0.5, gm_scales=3)
    expected = ref_ssi(pred, target, valid) + 0.5 * ref_gm(pred, target, valid, 3)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert terms["loss_ssi"].item() == pytest.approx(ref_ssi(pred, target, valid), rel=1e-9)
    loss.backward()
    assert torch.isfinite(p.grad).all() and (p.grad[1] == 0).all()


def test_all_invalid_mask_gives_zero_with_a_graph():
    pred, target, _ = random_case(4)
    p = torch.tensor(pred, requires_grad=True)
    loss, _ = depth_loss(p, torch.tensor(target), torch.zeros(pred.shape, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(p.grad, torch.zeros_like(p))


def test_nan_inf_zero_and_negative_labels_are_masked_not_propagated():
    pred, target, valid = random_case(5, valid_fraction=1.0)
    holes = np.random.default_rng(6).uniform(size=target.shape)
    dirty = target.copy()
    dirty[holes < 0.1] = np.nan
    dirty[(holes >= 0.1) & (holes < 0.2)] = np.inf
    dirty[(holes >= 0.2) & (holes < 0.25)] = 0.0
    dirty[(holes >= 0.25) & (holes < 0.3)] = -1.0
    p = torch.tensor(pred, requires_grad=True)
    loss, _ = depth_loss(p, torch.tensor(dirty), gm_weight=0.5, gm_scales=2)
    expected_valid = holes >= 0.3
    expected = ref_ssi(pred, target, expected_valid) + 0.5 * ref_gm(pred, target, expected_valid, 2)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert torch.isfinite(p.grad).all()


def test_real_disparity_with_inf_holes():
    """scikit-image's stereo_motorcycle disparity marks unknown pixels with inf."""
    import skimage.data

    _, _, disparity = skimage.data.stereo_motorcycle()
    disparity = disparity[::8, ::8].astype(np.float64)
    assert np.isinf(disparity).any()
    target = torch.tensor(disparity)[None]
    pred = torch.rand_like(target, requires_grad=True)
    loss, terms = depth_loss(pred, target)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    valid = torch.isfinite(target) & (target > 0)
    assert terms["loss_ssi"].item() == pytest.approx(
        ref_ssi(pred.detach().numpy(), disparity[None], valid.numpy()), rel=1e-9
    )


def test_depth_loss_shape_and_mask_errors():
    with pytest.raises(ValueError, match=r"labels: depth labels of shape \(2, 5, 5\) do not match"):
        depth_loss(torch.rand(2, 4, 4), torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="labels_mask: shape"):
        depth_loss(torch.rand(2, 4, 4), torch.rand(2, 4, 4), torch.ones(2, 4, 5, dtype=torch.bool))


@pytest.mark.parametrize("empty", [False, True])
def test_mask_loss_matches_the_formula(empty):
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (4, 9, 11))
    targets = (rng.uniform(size=(4, 9, 11)) < 0.3).astype(np.float64)
    if empty:
        targets[1] = 0.0  # an empty target mask is a valid target
    loss, terms = mask_loss(torch.tensor(logits), torch.tensor(targets), bce_weight=2.0, dice_weight=0.5)
    assert loss.item() == pytest.approx(ref_mask_loss(logits, targets, 2.0, 0.5), rel=1e-6)
    assert set(terms) == {"loss_bce", "loss_dice"}
    bool_loss, _ = mask_loss(torch.tensor(logits), torch.tensor(targets).bool(), 2.0, 0.5)
    assert bool_loss.item() == pytest.approx(loss.item(), rel=1e-12)


def test_confident_empty_prediction_of_an_empty_mask_costs_nothing():
    loss, _ = mask_loss(torch.full((1, 8, 8), -30.0), torch.zeros(1, 8, 8))
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert math.isfinite(loss.item())


def test_mask_label_errors():
    with pytest.raises(ValueError, match=r"labels: mask labels of shape \(2, 8, 9\) do not match the predicted masks"):
        mask_loss(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="labels: mask labels must be binary"):
        mask_loss(torch.zeros(1, 2, 2), torch.tensor([[[0.0, 0.5], [1.0, 1.0]]]))


def test_disparity_labels_of_zero_supervise_and_depth_zeros_do_not():
    """The sky (disparity 0) pulls the prediction there; in depth space 0 is a hole and leaves it free."""
    labels = torch.rand(1, 16, 16) + 0.5
    labels[:, :4] = 0.0  # sky rows
    labels[:, 8, 8] = float("nan")
    assert depth_validity(labels, label_space="disparity")[:, :4].all()
    assert not depth_validity(labels, label_space="depth")[:, :4].any()
    assert not depth_validity(labels, label_space="disparity")[0, 8, 8]
    for space, supervised in (("disparity", True), ("depth", False)):
        prediction = (torch.rand(1, 16, 16) + 0.5).requires_grad_(True)
        loss, _ = depth_loss(prediction, labels, label_space=space)
        loss.backward()
        assert bool(prediction.grad[:, :4].abs().sum() > 0) is supervised, space
    with pytest.raises(ValueError, match="label_space: expected 'depth' or 'disparity'"):
        depth_validity(labels, label_space="inverse")


def test_the_defaults_are_the_paper_s_weights_and_scales():
    """depth_loss defaults: λ_ssi 1, λ_gm 0.5 over 4 scales; mask_loss: λ_bce 2, λ_dice 0.5 (supplement §8.1)."""
    pred, target, valid = random_case(7, height=20, width=24)
    p, t, v = as_tensors(pred, target, valid)
    loss, _ = depth_loss(p, torch.where(v, t, torch.nan))
    assert loss.item() == pytest.approx(ref_ssi(pred, target, valid) + 0.5 * ref_gm(pred, target, valid, 4), rel=1e-9)
    rng = np.random.default_rng(8)
    logits, masks = rng.normal(size=(3, 9, 11)), (rng.uniform(size=(3, 9, 11)) < 0.4).astype(np.float64)
    loss, _ = mask_loss(torch.tensor(logits), torch.tensor(masks))
    assert loss.item() == pytest.approx(ref_mask_loss(logits, masks, 2.0, 0.5), rel=1e-9)
    # and the parts' own defaults: 4 gradient-matching scales, depth labels (0 is a hole), the sigmoid loss
    assert gradient_matching_loss(p, t, v).item() == pytest.approx(ref_gm(pred, target, valid, 4), rel=1e-9)
    labels = torch.tensor([[0.0, 2.0], [float("nan"), 1.0]])
    assert depth_validity(labels).tolist() == [[False, True], [False, True]]
    images, texts, scale, bias = torch.randn(4, 6), torch.randn(4, 6), torch.tensor(2.0), torch.tensor(-3.0)
    assert torch.equal(contrastive_loss(images, texts, scale, bias)[0],
                       contrastive_loss(images, texts, scale, bias, kind="sigmoid")[0])


def test_an_image_with_one_valid_pixel_counts_with_a_zero_loss():
    """One valid pixel normalises to 0 in both maps: the image adds a 0 to the mean over images (it is not dropped)."""
    pred, target, valid = random_case(9, batch=2)
    valid[1] = False
    valid[1, 3, 4] = True
    p, t, v = as_tensors(pred, target, valid)
    assert ssi_loss(p, t, v).item() == pytest.approx(ref_ssi(pred, target, valid), rel=1e-9)
    assert ssi_loss(p, t, v).item() == pytest.approx(ssi_loss(p[:1], t[:1], v[:1]).item() / 2, rel=1e-9)


def test_half_precision_predictions_reduce_in_float32():
    """bf16 predictions and logits (bf16 autocast) give float32 losses equal to the float32 losses of the same
    values."""
    pred, target, valid = random_case(10, height=16, width=16)
    p = torch.tensor(pred, dtype=torch.bfloat16)
    t = torch.tensor(target, dtype=torch.float32)
    t[~torch.tensor(valid)] = torch.nan
    low, terms = depth_loss(p, t.double())  # float64 labels too: the loss reduces in float32 all the same
    full, _ = depth_loss(p.float(), t)
    assert low.dtype == torch.float32 and terms["loss_gm"].dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), rel=1e-6)
    logits = torch.tensor(np.random.default_rng(11).normal(size=(2, 8, 8)), dtype=torch.bfloat16)
    masks = torch.zeros(2, 8, 8)
    masks[0, 2:5, 1:6] = 1
    low, _ = mask_loss(logits, masks)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(mask_loss(logits.float(), masks)[0].item(), rel=1e-6)


# ------------------------------------------------------------------------------------- image-text contrastive
def test_sigmoid_and_softmax_contrastive_losses_equal_their_formulas_written_out():
    """SigLIP: -1/B sum_ij log sigmoid(z_ij (t <x_i, y_j> + b)); CLIP: the mean of the two cross-entropies with
    softmax written as exp / sum exp, on unnormalised random embeddings; gradients reach the scale and the bias."""
    torch.manual_seed(0)
    images, texts = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    loss, logits = contrastive_loss(images, texts, scale, bias, kind="sigmoid")
    expected = 0.0
    for i in range(5):
        for j in range(5):
            cosine = float(images[i] @ texts[j] / (images[i].norm() * texts[j].norm()))
            z = 1.0 if i == j else -1.0
            expected += -math.log(1 / (1 + math.exp(-z * (10.0 * cosine - 10.0))))
    assert logits.shape == (5, 5)
    assert loss.item() == pytest.approx(expected / 5, rel=1e-5)
    loss.backward()
    assert scale.grad is not None and bias.grad is not None

    scale = torch.tensor(math.log(1 / 0.07))
    loss, _ = contrastive_loss(images, texts, scale, kind="softmax")
    cosines = [[float(images[i] @ texts[j] / (images[i].norm() * texts[j].norm())) / 0.07 for j in range(5)]
               for i in range(5)]
    image_to_text = -sum(cosines[i][i] - math.log(sum(math.exp(c) for c in cosines[i])) for i in range(5)) / 5
    text_to_image = -sum(cosines[j][j] - math.log(sum(math.exp(cosines[i][j]) for i in range(5))) for j in range(5)) / 5
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-5)
    # CLIP clamps the temperature at 100; SigLIP's scale is not clamped.
    clamped, _ = contrastive_loss(images, texts, torch.tensor(10.0), kind="softmax")
    at_100, _ = contrastive_loss(images, texts, torch.tensor(math.log(100.0)), kind="softmax")
    assert clamped.item() == pytest.approx(at_100.item())
    _, logits = contrastive_loss(images, texts, torch.tensor(math.log(300.0)), torch.tensor(0.0), kind="sigmoid")
    cosine = float(images[0] @ texts[1] / (images[0].norm() * texts[1].norm()))
    assert logits[0, 1].item() == pytest.approx(300.0 * cosine, rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "hinge"}, r"kind: expected one of \('sigmoid', 'softmax'\), got 'hinge'"),
    ({"texts": torch.randn(4, 6)}, r"image_embeds \(5, 8\) and text_embeds \(4, 6\)"),
    ({"images": torch.randn(5, 8, 1), "texts": torch.randn(5, 8, 1)}, r"image_embeds \(5, 8, 1\) and text_embeds"),
    ({"texts": torch.full((5, 8), float("inf"))}, "text_embeds: contains NaN or inf"),
    ({"images": torch.full((5, 8), float("nan"))}, "image_embeds: contains NaN or inf"),
    ({"kind": "softmax", "bias": torch.tensor(0.0)}, "the softmax loss takes no bias"),
    ({"bias": None}, "the sigmoid loss takes a bias"),
])
def test_contrastive_loss_refuses_bad_inputs_by_name(kwargs, message):
    args = {"images": torch.randn(5, 8), "texts": torch.randn(5, 8), "bias": torch.tensor(-10.0), "kind": "sigmoid"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        contrastive_loss(args["images"], args["texts"], torch.tensor(1.0), args["bias"], kind=args["kind"])
