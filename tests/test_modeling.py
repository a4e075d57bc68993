"""VersaViTModel against the transformers vision tower it wraps, and its dense-feature API."""

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import VISION_CONFIGS, random_inputs, tiny_config
from transformers.models.aimv2 import modeling_aimv2

from modeling_versavit import VersaViTImageProcessor, VersaViTModel
from modeling_versavit.backbone_base import MatmulPatchEmbed

# Different sizes, square and not, several attention windows for Qwen2.5-VL (8x8-patch windows).
MIXED_GRIDS = [(4, 6), (8, 2), (12, 16), (18, 10)]


def model_and_reference_tower(family, **config_kwargs):
    torch.manual_seed(0)
    config = tiny_config(family, **config_kwargs)
    model = VersaViTModel(config).eval()
    tower = config.backbone.tower_class._from_config(config.vision_config).eval()
    tower.load_state_dict(model.visual.state_dict())
    return model, tower


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_outputs_match_the_transformers_tower(qwen_family, dtype):
    # Equal up to rounding (float64: to 1e-12): the patch embedding runs as a matmul, not the tower's Conv3d.
    # SigLIP2 takes other inputs: test_siglip2_matches_transformers_on_its_own_inputs.
    family = qwen_family
    model, tower = model_and_reference_tower(family)
    model, tower = model.to(dtype), tower.to(dtype)
    inputs = random_inputs(model.config, MIXED_GRIDS)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    with torch.no_grad():
        ours = model(**inputs, output_hidden_states=True)
        theirs = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], output_hidden_states=True)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, **tolerance)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, **tolerance)
    assert len(ours.hidden_states) == model.config.num_hidden_layers + 1
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference, **tolerance)
    if family == "qwen3_vl":  # the DeepStack mergers' outputs, one per `deepstack_visual_indexes` entry
        assert len(ours.deepstack_features) == len(model.config.vision_config.deepstack_visual_indexes) == 2
        for mine, reference in zip(ours.deepstack_features, theirs.deepstack_features, strict=True):
            torch.testing.assert_close(mine, reference, **tolerance)
    else:
        assert ours.deepstack_features is None
    total = sum(h * w for h, w in MIXED_GRIDS)
    assert ours.last_hidden_state.shape == (total, model.config.embed_dim)
    assert ours.pooler_output.shape == (total // 4, model.config.merged_dim)


def test_the_matmul_patch_embedding_is_the_towers_conv3d(qwen_family):
    """Same values and weight gradient as the tower's Conv3d, the same parameter under the same name."""
    model, tower = model_and_reference_tower(qwen_family)
    ours, theirs = model.visual.patch_embed.double(), tower.patch_embed.double()
    assert isinstance(ours, MatmulPatchEmbed) and isinstance(theirs.proj, torch.nn.Conv3d)
    assert ours.proj is model.visual.patch_embed.proj and tuple(ours.proj.weight.shape) == tuple(
        theirs.proj.weight.shape
    )
    patches = torch.randn(37, model.config.patch_dim, dtype=torch.float64)
    upstream = torch.randn(37, model.config.embed_dim, dtype=torch.float64)
    (ours(patches) * upstream).sum().backward()
    (theirs(patches) * upstream).sum().backward()
    torch.testing.assert_close(ours(patches), theirs(patches), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.proj.weight.grad, theirs.proj.weight.grad, rtol=1e-12, atol=1e-12)
    if theirs.proj.bias is not None:  # Qwen3-VL / Qwen3.5 embed patches with a bias
        torch.testing.assert_close(ours.proj.bias.grad, theirs.proj.bias.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="patch_embed.proj: expected a Conv3d with kernel == stride"):
        MatmulPatchEmbed(SimpleNamespace(proj=torch.nn.Conv3d(3, 8, kernel_size=2, stride=1, bias=False)))


def test_dense_features_skip_the_merger_and_forward_runs_it(family):
    """The tower's PatchMerger output (SigLIP2: its pooling head's) is only `VersaViTModel.forward`'s: dense features
    do not compute it (nor keep its activations while training), and the tower is left as it was."""
    model, _ = model_and_reference_tower(family)
    model.train()
    merged_widths = []
    if not model.config.backbone.owned_modules(model.visual):  # InternViT: InternVL's connector is outside the tower
        assert model(**random_inputs(model.config, MIXED_GRIDS)).pooler_output is None
        return
    merger = model.config.backbone.owned_modules(model.visual)[0]
    merger.register_forward_hook(lambda module, args, output: merged_widths.append(output.shape[-1]))
    inputs = random_inputs(model.config, MIXED_GRIDS)
    model.get_dense_features(**inputs, layers=[-1], stack=False)
    # (one call per tower call: a fixed-resolution SigLIP tower runs each image size on its own)
    assert merged_widths and set(merged_widths) == {0} and "forward" not in vars(merger)
    width = model.config.merged_dim or model.config.embed_dim  # SigLIP2's head pools to its own width
    assert model(**inputs).pooler_output.shape[-1] == width and merged_widths[-1] == width


def test_weights_keep_the_mllm_visual_names(family):
    model, tower = model_and_reference_tower(family)
    assert set(model.state_dict()) == {f"visual.{key}" for key in tower.state_dict()}


def test_return_dict_false_gives_a_tuple():
    model, _ = model_and_reference_tower("qwen2_vl")
    inputs = random_inputs(model.config, [(4, 4)])
    with torch.no_grad():
        as_tuple = model(**inputs, return_dict=False)
        as_output = model(**inputs)
    assert isinstance(as_tuple, tuple)
    assert torch.equal(as_tuple[0], as_output.last_hidden_state)
    assert torch.equal(as_tuple[1], as_output.pooler_output)


def coordinate_image(height_patches: int, width_patches: int, patch: int = 14) -> np.ndarray:
    """A (3, H, W) image whose every pixel in patch (r, c) holds r in channel 0 and c in channel 1."""
    rows = np.repeat(np.arange(height_patches), patch)[:, None] * np.ones((1, width_patches * patch))
    cols = np.repeat(np.arange(width_patches), patch)[None, :] * np.ones((height_patches * patch, 1))
    return np.stack([rows, cols, np.zeros_like(rows)]).astype(np.float32)


def coordinate_inputs(config, grids):
    """Processor-layout inputs (the real `patchify`) of coordinate images with the given patch grids."""
    processor = VersaViTImageProcessor()
    rows, thw = [], []
    for h, w in grids:
        patches, gh, gw = processor.patchify(
            coordinate_image(h, w, config.patch_size),
            config.patch_size,
            config.spatial_merge_size,
            config.temporal_patch_size,
        )
        rows.append(torch.from_numpy(np.ascontiguousarray(patches)))
        thw.append([1, gh, gw])
    return {"pixel_values": torch.cat(rows), "image_grid_thw": torch.tensor(thw)}


def coordinate_reading_model(family, monkeypatch):
    """A tower whose patch embedding reads out (row, col) into channels 0 and 1 and whose blocks add nothing, so
    every layer's feature at a token is that token's own (row, col), wherever the tower moved it."""
    model, _ = model_and_reference_tower(family)
    config = model.config
    with torch.no_grad():
        if family == "siglip2":  # a Linear over (patch, patch, channel)-flattened pixels; a learned position grid
            weight = model.visual.embeddings.patch_embedding.weight.view(config.embed_dim, config.patch_size,
                                                                         config.patch_size, 3)
            bias = model.visual.embeddings.patch_embedding.bias
            model.visual.embeddings.position_embedding.weight.zero_()
            weight.zero_()
            weight[0, ..., 0] = weight[1, ..., 1] = 1.0 / config.patch_size**2
        elif family == "siglip":  # a Conv2d (C_out, C_in, patch, patch); a learned position grid
            weight = model.visual.embeddings.patch_embedding.weight
            bias = model.visual.embeddings.patch_embedding.bias
            model.visual.embeddings.position_embedding.weight.zero_()
            weight.zero_()
            weight[0, 0] = weight[1, 1] = 1.0 / config.patch_size**2
        elif family == "internvit":  # a Conv2d; a CLS token and a learned position grid (resized: zeros stay zeros)
            weight = model.visual.embeddings.patch_embeddings.projection.weight
            bias = model.visual.embeddings.patch_embeddings.projection.bias
            model.visual.embeddings.position_embeddings.zero_()
            weight.zero_()
            weight[0, 0] = weight[1, 1] = 1.0 / config.patch_size**2
        elif family == "aimv2":  # a Conv2d, then an RMSNorm and the sine-cosine positions, both taken out here
            weight = model.visual.embeddings.patch_embed.weight
            bias = model.visual.embeddings.patch_embed.bias
            model.visual.embeddings.rms_norm = torch.nn.Identity()
            monkeypatch.setattr(modeling_aimv2, "build_2d_sinusoidal_position_embedding",
                                lambda height, width, embed_dim, device, dtype: torch.zeros(
                                    height * width, embed_dim, device=device, dtype=dtype))
            weight.zero_()
            weight[0, 0] = weight[1, 1] = 1.0 / config.patch_size**2
        else:
            weight = model.visual.patch_embed.proj.weight  # (C, 3, temporal, patch, patch)
            bias = model.visual.patch_embed.proj.bias  # Qwen3-VL / Qwen3.5 only
            weight.zero_()
            pixels_per_channel = weight[0, 0].numel()
            weight[0, 0] = 1.0 / pixels_per_channel
            weight[1, 1] = 1.0 / pixels_per_channel
        if bias is not None:
            bias.zero_()
        if hasattr(model.visual, "pos_embed"):  # Qwen3-VL / Qwen3.5's learned position grid, added to every patch
            model.visual.pos_embed.weight.zero_()
        for block in config.backbone.blocks(model.visual):
            attention = config.backbone.attention(block)
            attn_out = next(getattr(attention, name) for name in ("proj", "out_proj", "projection_layer")
                            if hasattr(attention, name))
            mlp = getattr(block, "mlp", None) or block.ffn  # AIMv2: ffn
            mlp_out = next(getattr(mlp, name) for name in ("fc2", "linear_fc2", "down_proj") if hasattr(mlp, name))
            for linear in (attn_out, mlp_out):
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
    assert config.num_hidden_layers >= 2
    return model


@pytest.mark.parametrize("grids", [[(4, 6)], [(12, 16), (12, 16)], [(18, 10), (2, 2), (8, 20), (14, 6)]])
def test_dense_features_are_in_raster_order(family, grids, monkeypatch):
    model = coordinate_reading_model(family, monkeypatch)
    inputs = coordinate_inputs(model.config, grids)
    # SigLIP2's last layer is post-LayerNorm (it rescales the coordinates):
    # test_siglip2_matches_transformers_on_its_own_
    # inputs checks that one against SigLIP2's own raster-order output
    layers = [0, 2, -1] if family.startswith("qwen") else [0, 2]  # the others end in a norm
    with torch.no_grad():
        per_image = model.get_dense_features(**inputs, layers=layers, stack=False)
        stacked = model.get_dense_features(**inputs, layers=layers) if len(set(grids)) == 1 else None
    assert len(per_image) == len(layers)
    for layer_maps in per_image:
        for (h, w), feature_map in zip(grids, layer_maps, strict=True):
            assert feature_map.shape == (model.config.embed_dim, h, w)
            expected_rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
            expected_cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
            torch.testing.assert_close(feature_map[0], expected_rows, rtol=0, atol=1e-4)
            torch.testing.assert_close(feature_map[1], expected_cols, rtol=0, atol=1e-4)
    if stacked is not None:
        for layer_maps, batch in zip(per_image, stacked, strict=True):
            assert torch.equal(batch, torch.stack(layer_maps))


def test_dense_features_match_the_hidden_states(family):
    model, _ = model_and_reference_tower(family)
    inputs = random_inputs(model.config, [(8, 12), (8, 12)])
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        maps = model.get_dense_features(**inputs, layers=model.config.depth_layer_indices)
    for layer, feature_map in zip(model.config.depth_layer_indices, maps, strict=True):
        assert feature_map.shape == (2, model.config.embed_dim, 8, 12)
        # Same values, only reordered within each image: per image, the map's token vectors and the image's packed
        # rows (images come one after the other) are the same multiset, exactly.
        packed = hidden[layer].reshape(2, -1, model.config.embed_dim)
        for image in range(2):
            flat = feature_map[image].permute(1, 2, 0).reshape(-1, model.config.embed_dim)
            assert len(set(map(tuple, flat.tolist()))) == len(flat) == 8 * 12
            assert sorted(map(tuple, flat.tolist())) == sorted(map(tuple, packed[image].tolist())), image


def test_dense_features_stop_after_the_deepest_layer_read(family):
    """Blocks past the deepest requested layer do not run; the features are those of a full forward."""
    model, _ = model_and_reference_tower(family)
    inputs = random_inputs(model.config, [(4, 6)])
    ran = []
    for index, block in enumerate(model.config.backbone.blocks(model.visual)):
        block.register_forward_hook(lambda *args, index=index: ran.append(index))
    with torch.no_grad():
        (early,) = model.get_dense_features(**inputs, layers=[1])
        assert ran == [0]
        hidden_states = model(**inputs, output_hidden_states=True).hidden_states
    full = hidden_states[1]
    assert ran == [0, 0, 1, 2]
    # the tower is left whole: a later full forward still records every block (transformers hooks them once)
    assert len(hidden_states) == model.config.num_hidden_layers + 1
    assert len(model.config.backbone.blocks(model.visual)) == model.config.num_hidden_layers  # restored
    torch.testing.assert_close(early, model.config.backbone.feature_maps(model.config.vision_config, full,
                                                                       inputs["image_grid_thw"]))


def test_dense_feature_argument_errors():
    model, _ = model_and_reference_tower("qwen2_vl")
    inputs = random_inputs(model.config, [(4, 6), (6, 4)])
    with pytest.raises(ValueError, match="stack=True needs every image to share one patch grid"):
        model.get_dense_features(**inputs)
    with pytest.raises(ValueError, match="layers: index 4"):
        model.get_dense_features(**inputs, layers=[4], stack=False)
    video = {"pixel_values": torch.randn(2 * 16, model.config.patch_dim), "image_grid_thw": torch.tensor([[2, 4, 4]])}
    with pytest.raises(ValueError, match=r"t=2"):
        model.get_dense_features(**video)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda pv, g: (pv[:-1], g), "image_grid_thw describes 40 patches .* pixel_values has 39 rows"),
        (lambda pv, g: (pv, torch.tensor([[1, 4, 6], [1, 3, 5]])), r"image_grid_thw\[1\] = \[1, 3, 5\]"),
        (lambda pv, g: (pv, torch.tensor([[1, 4, 6], [0, 4, 4]])), r"image_grid_thw\[1\] = \[0, 4, 4\]"),
        (lambda pv, g: (pv[:, :-3], g), "pixel_values: rows have 1173 values, but this tower takes 1176"),
        (lambda pv, g: (pv[None], g), "pixel_values: expected a 2-D tensor"),
        (lambda pv, g: (pv.long(), g), "pixel_values: expected a floating-point tensor"),
        (lambda pv, g: (pv, g.float()), "image_grid_thw: expected an integer tensor"),
        (lambda pv, g: (pv, g[:, :2]), r"image_grid_thw: expected an integer tensor of shape \(num_images, 3\)"),
    ],
)
def test_mismatched_inputs_fail_before_any_compute(mutate, message):
    model, _ = model_and_reference_tower("qwen2_vl")
    inputs = random_inputs(model.config, [(4, 6), (4, 4)])
    pixel_values, grid = mutate(inputs["pixel_values"], inputs["image_grid_thw"])
    calls = []
    model.visual.patch_embed.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        model(pixel_values, grid)
    with pytest.raises(ValueError, match=message):
        model.get_dense_features(pixel_values, grid, stack=False)
    assert calls == []


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(family):
    model, _ = model_and_reference_tower(family)
    model.train()
    inputs = random_inputs(model.config, [(8, 8), (4, 12)])

    def gradients():
        model.zero_grad()
        out = model(**inputs)
        pooled = out.pooler_output.square().mean() if out.pooler_output is not None else 0  # InternViT: none
        (pooled + out.last_hidden_state.mean()).backward()
        # Qwen3-VL's DeepStack mergers feed neither output: no gradient, in both runs alike
        return {name: p.grad if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}

    reference = gradients()
    model.activation_checkpointing_enable()  # transformers v5's name for gradient_checkpointing_enable
    assert model.is_activation_checkpointing
    block_calls = []
    first = model.config.backbone.blocks(model.visual)[0]
    model.config.backbone.attention(first).register_forward_pre_hook(lambda *args: block_calls.append(1))
    model.zero_grad()
    model(**inputs)
    forward_calls = len(block_calls)  # 1 (a fixed-resolution SigLIP tower: one per image size)
    block_calls.clear()
    checkpointed = gradients()
    assert len(block_calls) == 2 * forward_calls  # forward, then recomputed during backward
    for name, grad in reference.items():
        if grad is None or checkpointed[name] is None:
            assert grad is None and checkpointed[name] is None and "deepstack" in name, name
            continue
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_eager_and_sdpa_attention_agree(tmp_path, family):
    model, _ = model_and_reference_tower(family)
    model.save_pretrained(tmp_path)
    inputs = random_inputs(model.config, MIXED_GRIDS)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        loaded = VersaViTModel.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert loaded.visual.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = loaded(**inputs)
    for key in ("last_hidden_state", "pooler_output"):  # (None both: InternViT has no pooled output)
        torch.testing.assert_close(getattr(outputs["eager"], key), getattr(outputs["sdpa"], key), rtol=1e-4,
                                   atol=1e-5)


def test_bfloat16(tmp_path, family):
    model, _ = model_and_reference_tower(family)
    model.save_pretrained(tmp_path)
    inputs = random_inputs(model.config, [(8, 8), (4, 6)])
    half = VersaViTModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    with torch.no_grad():
        reference = model(**inputs)
        out = half(**inputs)
        maps = half.get_dense_features(**inputs, stack=False)
    key = "pooler_output" if reference.pooler_output is not None else "last_hidden_state"  # InternViT: no pooling
    assert out[key].dtype == torch.bfloat16 and maps[0][0].dtype == torch.bfloat16
    torch.testing.assert_close(out[key].float(), reference[key], rtol=0.05, atol=0.05)


def test_no_split_modules_name_the_blocks(family):
    model, _ = model_and_reference_tower(family)
    block_class = type(model.config.backbone.blocks(model.visual)[0]).__name__
    assert block_class in model._no_split_modules


def reference_attention_maps(model, inputs) -> list[torch.Tensor]:
    """Each block's attention weights written out plainly from what its attention module receives (normalised input,
    segment boundaries `cu_seqlens`, rotary cos/sin): softmax(q k^T / sqrt(d)) within each segment, 0 across
    segments, laid out per image and zero-padded to the largest image."""
    calls = []

    def hook(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append((module, hidden, kwargs["cu_seqlens"], kwargs["position_embeddings"]))

    handles = [block.attn.register_forward_hook(hook, with_kwargs=True) for block in model.visual.blocks]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    sizes = inputs["image_grid_thw"].prod(-1).tolist()
    starts = np.cumsum([0] + sizes)
    maps = []
    for attn, hidden, cu_seqlens, (cos, sin) in calls:
        n = hidden.shape[0]
        q, k, _ = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).unbind(1)
        q, k = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision(q, k, cos, sin)
        full = torch.zeros(attn.num_heads, n, n)
        bounds = cu_seqlens.tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            scores = torch.einsum("ihd,jhd->hij", q[a:b], k[a:b]) / math.sqrt(q.shape[-1])
            full[:, a:b, a:b] = scores.softmax(-1)
        per_image = torch.zeros(len(sizes), attn.num_heads, max(sizes), max(sizes))
        for image, size in enumerate(sizes):
            span = slice(starts[image], starts[image] + size)
            per_image[image, :, :size, :size] = full[:, span, span]
        maps.append(per_image)
    return maps


def test_attention_maps_are_each_image_s_attention_weights(qwen_family):
    """Images of several sizes (Qwen2.5-VL: several windows each): every block's maps equal the plainly computed
    weights, rows of real tokens sum to 1, padding and cross-window pairs are 0; requesting them changes no output,
    also on a model that runs SDPA."""
    family = qwen_family
    model, _ = model_and_reference_tower(family)
    inputs = random_inputs(model.config, [(4, 6), (12, 16), (8, 2)])
    with torch.no_grad():
        plain = model(**inputs)
        out = model(**inputs, output_attentions=True)
    assert model.config._attn_implementation == "sdpa" and model.visual.config._attn_implementation == "sdpa"
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state, rtol=1e-5, atol=1e-6)
    reference = reference_attention_maps(model, inputs)
    assert len(out.attentions) == len(reference) == model.config.num_hidden_layers
    for block, (ours, expected) in enumerate(zip(out.attentions, reference)):
        assert ours.shape == (3, 4, 192, 192), block
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6, msg=f"block {block}")
        torch.testing.assert_close(ours[1].sum(-1), torch.ones(4, 192))
        torch.testing.assert_close(ours[0, :, :24].sum(-1), torch.ones(4, 24))
        assert (ours[0, :, 24:] == 0).all() and (ours[0, :, :, 24:] == 0).all()
    if family == "qwen2_5_vl":  # block 0 attends within 8x8-patch windows: a 12x16 grid has 4 of them
        assert (out.attentions[0][1] > 0).float().mean() < 0.3 < (out.attentions[1][1] > 0).float().mean()


def test_output_flags_reach_every_model_from_config_and_call(tmp_path):
    """`from_pretrained(path, output_hidden_states=True)` and the call's flags return the tower's hidden states and
    attention maps, from the backbone and both task models alike; an index list keeps only those layers."""
    from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation

    torch.manual_seed(0)
    config = tiny_config("qwen2_vl")
    inputs = random_inputs(config, [(4, 4), (4, 4)])
    text = {"text_embeds": torch.randn(2, config.text_embed_dim)}
    VersaViTForReferringSegmentation(config).save_pretrained(tmp_path)  # its backbone weights load into all three
    backbone = VersaViTModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        reference = backbone(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(reference.hidden_states) == config.num_hidden_layers + 1
    cases = ((VersaViTModel, {}), (VersaViTForDepthEstimation, {}), (VersaViTForReferringSegmentation, text))
    for model_class, extra in cases:
        flagged = model_class.from_pretrained(tmp_path, output_hidden_states=True, output_attentions=True).eval()
        with torch.no_grad():
            out = flagged(**inputs, **extra)
            none = flagged(**inputs, **extra, output_hidden_states=False, output_attentions=False)
            picked = flagged(**inputs, **extra, output_hidden_states=[0, -1])
        assert none.hidden_states is None and none.attentions is None, model_class.__name__
        for ours, expected in zip(out.hidden_states + out.attentions, reference.hidden_states + reference.attentions):
            torch.testing.assert_close(ours, expected, msg=model_class.__name__)
        assert picked.hidden_states[1] is None and picked.attentions is not None, model_class.__name__
        torch.testing.assert_close(picked.hidden_states[-1], reference.hidden_states[-1])
        assert flagged.get_input_embeddings() is flagged.visual.patch_embed



def test_every_model_class_reaches_the_tower_through_its_family(family):
    """`get_input_embeddings` of each class is the family's patch embedding (a SigLIP tower has no `patch_embed`)."""
    from modeling_versavit import VersaViTForDepthEstimation, VersaViTForMultiTask

    for model in (VersaViTModel(tiny_config(family)), VersaViTForDepthEstimation(tiny_config(family)),
                  VersaViTForMultiTask(tiny_config(family, tasks=["depth"]))):
        assert model.get_input_embeddings() is model.config.backbone.patch_embedding(model.visual), type(model)


@pytest.mark.parametrize("hidden_state", [1, 2, 3])
def test_unread_modules_are_the_tower_parameters_a_hidden_state_leaves_without_gradient(family, hidden_state):
    """What the idle-parameter term under DDP adds for a head that reads up to `hidden_state`: exactly the tower's
    parameters (its MLLM-owned modules aside) that get no gradient from that state."""
    model = VersaViTModel(tiny_config(family))
    backbone = model.config.backbone
    model(**random_inputs(model.config, [(4, 4)]), output_hidden_states=True).hidden_states[
        hidden_state
    ].sum().backward()
    unread = {id(p) for module in backbone.unread_modules(model.visual, hidden_state) for p in module.parameters()}
    owned = {id(p) for module in backbone.owned_modules(model.visual) for p in module.parameters()}
    without_gradient = {name for name, p in model.visual.named_parameters() if id(p) not in owned and p.grad is None}
    assert without_gradient == {name for name, p in model.visual.named_parameters() if id(p) in unread}
    assert bool(without_gradient) == (hidden_state < 3)

# ------------------------------------------------------------------------------------------------------- SigLIP2
def siglip2_photos():
    """Real photos at sizes SigLIP2's own processor keeps (whole 16-px patches, 24 patches at most): two grids."""
    import PIL.Image
    from conftest import photo

    return [PIL.Image.fromarray(photo("astronaut")).resize((96, 64)),
            PIL.Image.fromarray(photo("chelsea")).resize((64, 64))]


def test_siglip2_matches_transformers_on_its_own_inputs():
    """The SigLIP2 family on VersaViT's packed inputs equals transformers' `Siglip2VisionModel` on the padded NaFlex
    batch of transformers' own `Siglip2ImageProcessor`, per patch in raster order, padding left out: every hidden
    state, the last (post-LayerNorm) one, the pooled head output."""
    from transformers import Siglip2ImageProcessor

    model, tower = model_and_reference_tower("siglip2")
    images = siglip2_photos()
    theirs_in = Siglip2ImageProcessor(max_num_patches=24)(images=images, return_tensors="pt")
    assert theirs_in["spatial_shapes"].tolist() == [[4, 6], [4, 4]]  # the processor kept the sizes: one has padding
    processor = VersaViTImageProcessor(**model.config.backbone.image_processor_kwargs(model.config.vision_config))
    ours_in = processor(images=images, return_tensors="pt")
    assert ours_in["image_grid_thw"].tolist() == [[1, 4, 6], [1, 4, 4]]
    with torch.no_grad():
        theirs = tower(**theirs_in, output_hidden_states=True)
        ours = model(**ours_in, output_hidden_states=True)
        maps = model.get_dense_features(**ours_in, layers=list(range(model.config.num_hidden_layers + 1)), stack=False)
    reference = list(theirs.hidden_states[:-1]) + [theirs.last_hidden_state]  # the last one after post_layernorm
    for layer, (layer_maps, expected) in enumerate(zip(maps, reference, strict=True)):
        for image, ((h, w), feature_map) in enumerate(zip([(4, 6), (4, 4)], layer_maps, strict=True)):
            raster = expected[image, : h * w].reshape(h, w, -1).permute(2, 0, 1)  # SigLIP2's tokens are row-major
            torch.testing.assert_close(feature_map, raster, rtol=1e-5, atol=1e-5, msg=f"layer {layer}")
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=1e-5, atol=1e-5)
    assert ours.hidden_states[-1] is ours.last_hidden_state


def test_siglip2_attention_maps_are_transformers_eager_weights():
    """Per image, the real tokens' attention weights of transformers' eager SigLIP2 on the padded batch, reordered to
    the packed rows' order (2x2 blocks); rows sum to 1; padding is 0."""
    from transformers import Siglip2ImageProcessor

    model, tower = model_and_reference_tower("siglip2")
    images = siglip2_photos()
    processor = VersaViTImageProcessor(**model.config.backbone.image_processor_kwargs(model.config.vision_config))
    tower.config._attn_implementation = "eager"
    with torch.no_grad():
        theirs = tower(**Siglip2ImageProcessor(max_num_patches=24)(images=images, return_tensors="pt"),
                       output_attentions=True).attentions
        ours = model(**processor(images=images, return_tensors="pt"), output_attentions=True).attentions
    for block, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        for image, (h, w) in enumerate([(4, 6), (4, 4)]):
            # packed row k of a 2x2-block layout holds raster patch (row, col): written out from the block structure
            rows = [(2 * (k // 4 // (w // 2)) + k % 4 // 2, 2 * (k // 4 % (w // 2)) + k % 2) for k in range(h * w)]
            raster = torch.tensor([r * w + c for r, c in rows])
            expected = reference[image][:, raster][:, :, raster]
            torch.testing.assert_close(mine[image, :, : h * w, : h * w], expected, rtol=1e-5, atol=1e-6,
                                       msg=f"block {block}")
            torch.testing.assert_close(mine[image, :, : h * w].sum(-1), torch.ones(4, h * w))
            assert (mine[image, :, h * w :] == 0).all() and (mine[image, :, :, h * w :] == 0).all()


def whole_image_processor(family, height, width):
    """transformers' own image processor of a whole-image family (SigLIP, InternVL's GOT-OCR2 processor without
    tiling, AIMv2's CLIP processor), at exactly `height` x `width`, normalised as the family's checkpoints are."""
    from transformers import CLIPImageProcessor, GotOcr2ImageProcessor, SiglipImageProcessor

    size = {"height": height, "width": width}
    if family == "siglip":
        return SiglipImageProcessor(size=size)
    if family == "internvit":  # the InternVL-hf checkpoints' processor config: ImageNet statistics, no tiling
        return GotOcr2ImageProcessor(size=size, crop_to_patches=False, image_mean=[0.485, 0.456, 0.406],
                                     image_std=[0.229, 0.224, 0.225])
    return CLIPImageProcessor(size=size, do_center_crop=False)  # AIMv2: OpenAI CLIP statistics


@pytest.mark.parametrize("size", [64, (64, 96)])
@pytest.mark.parametrize("family", ["siglip", "internvit", "aimv2"])
def test_whole_image_towers_match_transformers_on_their_own_inputs(family, size):
    """The whole-image families equal transformers' tower (`SiglipVisionModel`, `InternVLVisionModel`,
    `Aimv2VisionModel`) on their own processor's images, per patch in raster order (InternViT's CLS token left out):
    at the checkpoint's `image_size`, and at another size (SigLIP: `interpolate_pos_encoding`; InternViT: transformers
    resizes its position grid itself; native AIMv2: its sine-cosine table of that size); every hidden state, the last
    one (after the final norm), the pooled output where the tower has one."""
    import PIL.Image
    from conftest import photo

    model, tower = model_and_reference_tower(family)
    height, width = (size, size) if isinstance(size, int) else size
    images = [PIL.Image.fromarray(photo(name)).resize((width, height)) for name in ("astronaut", "chelsea")]
    theirs_in = whole_image_processor(family, height, width)(images=images, return_tensors="pt")
    processor = VersaViTImageProcessor(**model.config.backbone.image_processor_kwargs(model.config.vision_config))
    ours_in = processor(images=images, return_tensors="pt")
    h, w = height // 16, width // 16
    assert ours_in["image_grid_thw"].tolist() == [[1, h, w]] * 2
    extra = {"interpolate_pos_encoding": size != 64} if family == "siglip" else {}
    with torch.no_grad():
        theirs = tower(pixel_values=theirs_in["pixel_values"], output_hidden_states=True, **extra)
        ours = model(**ours_in, output_hidden_states=True)
        maps = model.get_dense_features(**ours_in, layers=list(range(model.config.num_hidden_layers + 1)))
    reference = list(theirs.hidden_states[:-1]) + [theirs.last_hidden_state]
    cls = 1 if family == "internvit" else 0
    for layer, (grid, expected) in enumerate(zip(maps, reference, strict=True)):
        raster = expected[:, cls:].reshape(2, h, w, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(grid, raster, rtol=1e-5, atol=1e-5, msg=f"layer {layer}")
    if family == "internvit":
        assert ours.pooler_output is None and theirs.pooler_output is None
    else:
        torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=1e-5, atol=1e-5)


def test_aimv2_with_learned_positions_runs_at_its_image_size_only():
    """A non-native AIMv2 tower (a learned position table for `image_size`, which transformers does not resize) equals
    transformers' at that size and refuses any other with the sizes named."""
    model, tower = model_and_reference_tower("aimv2", vision_config={**VISION_CONFIGS["aimv2"], "is_native": False})
    inputs = random_inputs(model.config, [(4, 4), (4, 4)])
    images = torch.randn(2, 3, 64, 64)
    rows = [torch.from_numpy(np.ascontiguousarray(VersaViTImageProcessor().patchify(image.numpy(), 16, 2, 1)[0]))
            for image in images]  # the processor's own patch layout of these very pixels
    ours_in = {"pixel_values": torch.cat(rows), "image_grid_thw": torch.tensor([[1, 4, 4]] * 2)}
    with torch.no_grad():
        theirs = tower(pixel_values=images).last_hidden_state
        ours = model.get_dense_features(**ours_in, layers=[-1])[0]
    torch.testing.assert_close(ours, theirs.reshape(2, 4, 4, -1).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"64x64 images \(vision_config.is_native false\).*got 64x96 pixels"):
        model(**random_inputs(model.config, [(4, 6)]))
    assert model(**inputs).last_hidden_state.shape == (32, 32)
