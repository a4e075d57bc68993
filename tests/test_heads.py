"""The depth and referring-segmentation models: shapes, gradients, the pipeline, bad inputs, checkpoints."""

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import photo, random_inputs, tiny_config
from test_losses import ref_gm, ref_mask_loss, ref_ssi
from transformers import AutoModelForDepthEstimation, pipeline

from modeling_versavit import (
    VersaViTConfig,
    VersaViTForDepthEstimation,
    VersaViTForMultiTask,
    VersaViTForReferringSegmentation,
    VersaViTImageProcessor,
    VersaViTModel,
)
from modeling_versavit.modeling_versavit import (
    TraceableDepthEstimationHead,
    VersaViTDepthHead,
    VersaViTSegmentationHead,
)


def block_grads(model) -> list[bool]:
    """Per tower block: did any of its parameters receive a non-zero gradient?"""
    blocks = model.config.backbone.blocks(model.visual)
    return [any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters()) for block in blocks]


# ------------------------------------------------------------------------------------------------- depth
def test_the_traceable_depth_head_is_depth_anything_s_head():
    """Same parameters as transformers' `DepthAnythingDepthEstimationHead` and, on the same weights, the same output
    for square and non-square grids: only the output size stays symbolic (for torch.export)."""
    from transformers import DepthAnythingConfig
    from transformers.models.depth_anything.modeling_depth_anything import DepthAnythingDepthEstimationHead

    torch.manual_seed(0)
    config = DepthAnythingConfig(fusion_hidden_size=16, head_hidden_size=8, head_in_index=-1)
    ours, theirs = TraceableDepthEstimationHead(config), DepthAnythingDepthEstimationHead(config)
    assert theirs.load_state_dict(ours.state_dict()) is not None
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for height, width in ((4, 4), (3, 7)):
        fused = [torch.randn(2, 16, 8 * height, 8 * width)]
        expected = theirs(fused, height, width)
        assert expected.shape == (2, 14 * height, 14 * width)
        torch.testing.assert_close(ours(fused, height, width), expected, rtol=0, atol=0)


def test_under_bf16_autocast_the_depth_loss_keeps_the_float32_value():
    """A fresh head predicts a nearly flat map (~1.04 ± 0.0035 here) whose variation is all the scale-and-shift-
    invariant loss reads; a bf16 last convolution rounded it away (loss 8.11 against 7.13 in float32)."""
    torch.manual_seed(0)
    model = VersaViTForDepthEstimation(tiny_config(depth_neck_hidden_sizes=[16, 32, 64],
                                                   depth_fusion_hidden_size=16)).train()
    inputs = random_inputs(model.config, [(4, 4), (4, 4)])
    labels = torch.rand(2, 56, 56, generator=torch.Generator().manual_seed(1)) + 0.1
    exact = model(**inputs, labels=labels)
    assert exact.predicted_depth.std() < 0.01 * exact.predicted_depth.mean()  # the case that needs the precision
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(**inputs, labels=labels)
    assert mixed.predicted_depth.dtype == torch.float32
    assert mixed.loss.item() == pytest.approx(exact.loss.item(), rel=1e-2)


@pytest.mark.parametrize("grid", [(4, 4), (6, 10)])
def test_depth_prediction_has_the_input_size(family, grid):
    torch.manual_seed(0)
    model = VersaViTForDepthEstimation(tiny_config(family)).eval()
    inputs = random_inputs(model.config, [grid, grid])
    with torch.no_grad():
        out = model(**inputs)
    assert out.predicted_depth.shape == (2, model.config.patch_size * grid[0], model.config.patch_size * grid[1])
    assert (out.predicted_depth >= 0).all() and out.predicted_depth.std() > 0 and out.loss is None


def test_depth_loss_reaches_exactly_the_layers_it_reads(family):
    torch.manual_seed(0)
    model = VersaViTForDepthEstimation(tiny_config(family, depth_layer_indices=[0, 1, 2])).train()
    inputs = random_inputs(model.config, [(4, 6), (4, 6)])
    size = model.config.patch_size
    out = model(**inputs, labels=torch.rand(2, 4 * size, 6 * size) + 0.5)
    out.loss.backward()
    assert block_grads(model) == [True, True, False]  # hidden_states 1 and 2 are blocks 0 and 1; block 2 is unread
    assert all(p.grad.abs().sum() > 0 for p in model.get_input_embeddings().parameters())
    # the frozen mergers into the MLLM (Qwen3-VL: the PatchMerger and the DeepStack mergers)
    owned = [p for module in model.config.backbone.owned_modules(model.visual) for p in module.parameters()]
    assert bool(owned) == bool(model.config.backbone.mllm_owned)  # InternViT: the connector is outside the tower
    assert all(p.grad is None and not p.requires_grad for p in owned)
    if family == "qwen3_vl":
        assert {id(p) for p in model.visual.deepstack_merger_list.parameters()} <= {id(p) for p in owned}
    head_params = [p for p in model.depth_head.parameters()]
    assert all(p.grad is not None for p in head_params)  # no unused head parameter (DDP-safe)


def test_depth_labels_with_holes_train_and_mixed_sizes_fail(family):
    import skimage.data

    torch.manual_seed(0)
    model = VersaViTForDepthEstimation(tiny_config(family)).train()
    inputs = random_inputs(model.config, [(4, 6)])
    _, _, disparity = skimage.data.stereo_motorcycle()  # inf where unknown
    labels = torch.nn.functional.interpolate(
        torch.tensor(disparity)[None, None],
        size=(4 * model.config.patch_size, 6 * model.config.patch_size),
        mode="nearest",
    )[0]
    assert torch.isinf(labels).any()
    out = model(**inputs, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.depth_head.parameters())
    assert set(out.loss_terms) == {"loss_ssi", "loss_gm"}
    with pytest.raises(ValueError, match=r"image_grid_thw: depth estimation needs every image to share one patch grid"):
        model(**random_inputs(model.config, [(4, 6), (6, 4)]))


@pytest.mark.parametrize("model_class", [VersaViTForDepthEstimation, VersaViTForMultiTask])
def test_the_depth_loss_is_the_configured_weighting_of_the_two_terms(model_class):
    """`model(..., labels=).loss` = depth_ssi_weight x L_ssi + depth_gm_weight x L_gm over depth_gm_scales, with the
    terms written out plainly (test_losses' references) on the model's own prediction: weights that differ from the
    defaults and from each other, so a swapped or dropped weight (or scale count) cannot pass."""
    torch.manual_seed(0)
    config = tiny_config(depth_ssi_weight=0.7, depth_gm_weight=0.2, depth_gm_scales=2, tasks=["depth"])
    model = model_class(config).eval()
    inputs = random_inputs(config, [(4, 6), (4, 6)])
    size = config.patch_size
    labels = torch.rand(2, 4 * size, 6 * size, generator=torch.Generator().manual_seed(1)) + 0.5
    labels[0, :5] = float("nan")  # holes stay out of both terms
    with torch.no_grad():
        out = model(**inputs, labels=labels) if model_class is VersaViTForDepthEstimation else model(
            task="depth", **inputs, labels=labels)
    pred, target = out.predicted_depth.double().numpy(), labels.double().numpy()
    valid = np.isfinite(target) & (target > 0)
    ssi, gm = ref_ssi(pred, target, valid), ref_gm(pred, target, valid, 2)
    assert ssi > 0 and gm > 0 and abs(ssi - gm) > 0.05 * ssi  # the terms are told apart
    assert out.loss.item() == pytest.approx(0.7 * ssi + 0.2 * gm, rel=1e-5)
    assert out.loss_terms["loss_ssi"].item() == pytest.approx(ssi, rel=1e-5)
    assert out.loss_terms["loss_gm"].item() == pytest.approx(gm, rel=1e-5)


@pytest.mark.parametrize("model_class", [VersaViTForReferringSegmentation, VersaViTForMultiTask])
def test_the_mask_loss_is_the_configured_weighting_of_bce_and_dice(model_class):
    """`model(..., labels=).loss` = segmentation_bce_weight x BCE + segmentation_dice_weight x Dice, written out."""
    torch.manual_seed(0)
    config = tiny_config(segmentation_bce_weight=0.3, segmentation_dice_weight=1.7, tasks=["segmentation"])
    model = model_class(config).eval()
    inputs = random_inputs(config, [(4, 6), (4, 6)])
    size = config.patch_size
    labels = (torch.rand(3, 4 * size, 6 * size, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    kwargs = dict(text_embeds=torch.randn(3, 24), expression_image_index=torch.tensor([0, 1, 1]), labels=labels)
    with torch.no_grad():
        out = model(**inputs, **kwargs) if model_class is VersaViTForReferringSegmentation else model(
            task="segmentation", **inputs, **kwargs)
    logits, targets = out.pred_masks.double().numpy(), labels.double().numpy()
    bce, dice = ref_mask_loss(logits, targets, 1.0, 0.0), ref_mask_loss(logits, targets, 0.0, 1.0)
    assert abs(bce - dice) > 0.05 * bce  # the terms are told apart
    assert out.loss.item() == pytest.approx(0.3 * bce + 1.7 * dice, rel=1e-5)
    assert out.loss_terms["loss_bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out.loss_terms["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_depth_estimation_pipeline_on_a_real_photo():
    torch.manual_seed(0)
    model = VersaViTForDepthEstimation(tiny_config("qwen2_vl")).eval()
    processor = VersaViTImageProcessor(size={"shortest_edge": 3136, "longest_edge": 224 * 224})
    estimator = pipeline("depth-estimation", model=model, image_processor=processor)
    image = PIL.Image.fromarray(photo("astronaut"))
    result = estimator(image)
    assert tuple(result["predicted_depth"].shape) == (image.height, image.width)
    assert result["depth"].size == image.size
    assert isinstance(AutoModelForDepthEstimation.from_config(model.config), VersaViTForDepthEstimation)


def test_depth_head_parameter_count_at_paper_scale():
    with torch.device("meta"):
        head = VersaViTDepthHead(VersaViTConfig())
    count = sum(p.numel() for p in head.parameters())
    print(f"DPT head on the Qwen2-VL-7B tower: {count / 1e6:.1f}M parameters (paper Table 13: 37.0M)")
    assert 30e6 < count < 45e6


# ------------------------------------------------------------------------------------------------- segmentation
def test_many_expressions_on_one_image_run_the_backbone_once(family):
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config(family)).eval()
    calls = []
    model.visual.register_forward_hook(lambda *args: calls.append(1))
    inputs = random_inputs(model.config, [(6, 10)])
    with torch.no_grad():
        out = model(**inputs, text_embeds=torch.randn(5, 24), expression_image_index=torch.zeros(5, dtype=torch.long))
    assert calls == [1]
    assert out.pred_masks.shape == (5, 6 * model.config.patch_size, 10 * model.config.patch_size)  # the input size
    assert out.image_embeddings.shape == (1, 32, 6, 10)
    assert not torch.allclose(out.pred_masks[0], out.pred_masks[1])  # different expressions, different masks


def test_expressions_route_to_their_images():
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config()).eval()
    inputs = random_inputs(model.config, [(4, 4), (4, 4)])
    text = torch.randn(3, 24)
    with torch.no_grad():
        joint = model(**inputs, text_embeds=text, expression_image_index=torch.tensor([1, 0, 1])).pred_masks
        alone = model(
            inputs["pixel_values"][16:], inputs["image_grid_thw"][1:], text_embeds=text[[0, 2]],
            expression_image_index=torch.tensor([0, 0]),
        ).pred_masks
        batched = model(**inputs, text_embeds=torch.stack([text[[1, 1]], text[[0, 2]]])).pred_masks
    torch.testing.assert_close(joint[[0, 2]], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[2:], alone, rtol=1e-5, atol=1e-5)


def test_segmentation_loss_trains_every_layer_and_head_parameter(family):
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config(family)).train()
    inputs = random_inputs(model.config, [(4, 6), (4, 6)])
    labels = torch.zeros(3, 4 * model.config.patch_size, 6 * model.config.patch_size)
    labels[0, 10:30, 20:50] = 1  # expression 2's target is empty: a valid target
    labels[1, :5] = 1
    out = model(**inputs, text_embeds=torch.randn(3, 24), expression_image_index=torch.tensor([0, 1, 1]), labels=labels)
    out.loss.backward()
    assert all(block_grads(model))  # the head reads the last layer: every block is trained
    assert all(p.grad is None for m in model.config.backbone.owned_modules(model.visual) for p in m.parameters())
    trainable = [(n, p) for n, p in model.segmentation_head.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []  # no unused head parameter (DDP-safe)
    assert not model.segmentation_head.positional_embedding.positional_embedding.requires_grad
    assert set(out.loss_terms) == {"loss_bce", "loss_dice"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"text_embeds": torch.randn(2, 23)}, r"text_embeds: expected width config.text_embed_dim=24"),
        ({"text_embeds": torch.randn(3, 24)}, r"expression_image_index: required when the number of expressions \(3\)"),
        (
            {"text_embeds": torch.randn(2, 24), "expression_image_index": torch.tensor([0, 2])},
            r"expression_image_index: expected 2 integer indices in \[0, 2\)",
        ),
        ({"text_embeds": torch.randn(3, 1, 24)}, r"text_embeds: a 3-D tensor needs one row per image \(2\)"),
        (
            {"text_embeds": torch.randn(2, 24), "labels": torch.zeros(2, 56, 56)},
            r"labels: mask labels of shape \(2, 56, 56\) do not match",
        ),
        (
            {"text_embeds": torch.randn(2, 24), "labels": torch.full((2, 56, 84), 0.5)},
            "labels: mask labels must be binary",
        ),
    ],
)
def test_segmentation_bad_inputs_are_clear_errors(kwargs, message):
    model = VersaViTForReferringSegmentation(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(**random_inputs(model.config, [(4, 6), (4, 6)]), **kwargs)


def test_non_square_positional_encoding_follows_the_grid():
    head = VersaViTSegmentationHead(tiny_config())
    encoding = head.grid_positional_embeddings(3, 5)
    assert encoding.shape == (1, 32, 3, 5)
    square = head.grid_positional_embeddings(5, 5)
    torch.testing.assert_close(encoding[0, :, 1, :], square[0, :, 2, :])  # the same normalised row centre (0.5)
    assert head.positional_embedding.positional_embedding.std().item() < 3  # SAM's unit scale, not hidden/2


def test_segmentation_head_starts_from_sam_s_own_init():
    """SAM's code leaves every layer at PyTorch's default init: Linear weights kaiming-uniform (|w| <= 1/sqrt(fan_in),
    std 1/sqrt(3 fan_in)), embeddings (mask, IoU and no-mask tokens) N(0, 1). The library-wide normal(0.02) left the
    tokens ~50x smaller, and the decoder segmented every object before it read the text."""
    torch.manual_seed(0)
    config = tiny_config(segmentation_hidden_size=64, segmentation_decoder_mlp_dim=256)
    head = VersaViTForReferringSegmentation(config).segmentation_head
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 10  # the prompt encoder, the decoder's attention, MLPs and hypernetworks
    for module in linears:
        bound = 1 / module.in_features ** 0.5
        assert module.weight.abs().max() <= bound
        assert abs(module.weight.std().item() * (3 * module.in_features) ** 0.5 - 1) < 0.25
    tokens = torch.cat([head.mask_decoder.mask_tokens.weight.flatten(), head.mask_decoder.iou_token.weight.flatten(),
                        head.no_mask_embed.weight.flatten()])
    assert 0.7 < tokens.std().item() < 1.3
    tower = VersaViTModel(config).visual
    assert 0.015 < tower.blocks[0].mlp.fc1.weight.std().item() < 0.025  # the tower keeps normal(0.02)


def test_text_embeddings_are_layer_normalised_before_the_prompt_encoder():
    """With `segmentation_normalize_text` (the default) the masks do not depend on the embeddings' scale or offset;
    turned off, the prompt encoder reads the embeddings as they are (a model trained that way loads unchanged)."""
    torch.manual_seed(0)
    model = VersaViTForReferringSegmentation(tiny_config()).eval()
    assert not list(model.segmentation_head.text_norm.parameters())  # no new weights: checkpoints keep their keys
    inputs = random_inputs(model.config, [(4, 6)])
    text = torch.nn.functional.normalize(torch.randn(2, 24), dim=-1)
    index = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        unit = model(**inputs, text_embeds=text, expression_image_index=index).pred_masks
        scaled = model(**inputs, text_embeds=7 * text + 3, expression_image_index=index).pred_masks
        torch.testing.assert_close(scaled, unit, rtol=1e-4, atol=1e-4)
        mean, std = text.mean(-1, keepdim=True), text.var(-1, unbiased=False, keepdim=True).add(1e-5).sqrt()
        model.config.segmentation_normalize_text = False
        raw = VersaViTForReferringSegmentation(model.config).eval()
        raw.load_state_dict(model.state_dict())
        by_hand = raw(**inputs, text_embeds=(text - mean) / std, expression_image_index=index).pred_masks
        torch.testing.assert_close(by_hand, unit, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(raw(**inputs, text_embeds=text, expression_image_index=index).pred_masks, unit)


def test_segmentation_head_parameter_count_at_paper_scale():
    with torch.device("meta"):
        head = VersaViTSegmentationHead(VersaViTConfig())
    count = sum(p.numel() for p in head.parameters())
    print(f"Segmentation head (4096-d text embeddings): {count / 1e6:.2f}M parameters (paper Table 13: 4.8M)")
    assert 3e6 < count < 8e6


# ------------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("model_class", [VersaViTForDepthEstimation, VersaViTForReferringSegmentation])
def test_task_models_round_trip(tmp_path, model_class):
    torch.manual_seed(0)
    model = model_class(tiny_config("qwen2_5_vl")).eval()
    model.save_pretrained(tmp_path)
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    inputs = random_inputs(model.config, [(4, 6)])
    extra = {"text_embeds": torch.randn(1, 24)} if model_class is VersaViTForReferringSegmentation else {}
    with torch.no_grad():
        first, second = model(**inputs, **extra), reloaded.eval()(**inputs, **extra)
    assert torch.equal(first[0], second[0])


def test_depth_checkpoint_loads_into_the_backbone_only_with_its_keys(tmp_path):
    torch.manual_seed(0)
    depth = VersaViTForDepthEstimation(tiny_config())
    depth.save_pretrained(tmp_path)
    backbone, info = VersaViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert all(torch.equal(v, depth.state_dict()[k]) for k, v in backbone.state_dict().items())


def test_every_family_s_multitask_model_trains_a_few_steps(family):
    """Depth and referring segmentation heads on every tower family: AdamW steps on a fixed batch bring both losses
    down, and every block and head parameter moves."""
    from modeling_versavit import VersaViTForMultiTask

    torch.manual_seed(0)
    model = VersaViTForMultiTask(tiny_config(family, tasks=["depth", "segmentation"])).train()
    inputs = random_inputs(model.config, [(4, 4), (4, 4)])
    side = 4 * model.config.patch_size
    depth = torch.rand(2, side, side) + 0.5
    masks = torch.zeros(2, side, side)
    masks[0, : side // 2] = masks[1, :, side // 2 :] = 1
    text = torch.randn(2, model.config.text_embed_dim)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        depth_loss = model(task="depth", **inputs, labels=depth).loss
        seg_loss = model(task="segmentation", **inputs, text_embeds=text, expression_image_index=torch.tensor([0, 1]),
                         labels=masks).loss
        optimizer.zero_grad()
        (depth_loss + seg_loss).backward()
        optimizer.step()
        losses.append((depth_loss.item(), seg_loss.item()))
    assert losses[-1][0] < losses[0][0] and losses[-1][1] < losses[0][1], losses
    moved = {name for name, p in model.named_parameters() if name in before and not torch.equal(p, before[name])}
    blocks = model.config.backbone.blocks(model.visual)
    assert all(any(f".{i}." in name for name in moved if name.startswith("visual.")) for i in range(len(blocks)))
    assert {name for name in before if name.startswith(("depth_head.", "segmentation_head."))} <= moved
