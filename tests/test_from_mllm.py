"""VersaViTModel.from_mllm: the vision tower out of an MLLM checkpoint folder of every tower family."""

import json
import shutil

import pytest
import safetensors
import torch
from conftest import random_inputs
from mllm_fixtures import MLLMS, QWEN_MLLMS, lfm2_vl_inputs, other_naming, rename_keys, save_tiny_mllm
from safetensors.torch import load_file, save_file

from modeling_versavit import VersaViTModel


def record_safetensors(monkeypatch) -> tuple[list[str], list[str]]:
    """Patch `safetensors.safe_open` to record the shard files opened and the tensor keys read (in that order)."""
    opened, read = [], []
    real_safe_open = safetensors.safe_open

    class RecordingHandle:
        def __init__(self, path, *args, **kwargs):
            opened.append(str(path).rsplit("/", 1)[-1])
            self._handle = real_safe_open(path, *args, **kwargs)

        def __enter__(self):
            self._inner = self._handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self._handle.__exit__(*exc)

        def keys(self):
            return self._inner.keys()

        def metadata(self):
            return self._inner.metadata()

        def get_tensor(self, key):
            read.append(key)
            return self._inner.get_tensor(key)

    from modeling_versavit import checkpoint_files

    monkeypatch.setattr(safetensors, "safe_open", RecordingHandle)
    monkeypatch.setattr(checkpoint_files, "safe_open", RecordingHandle)  # where the checkpoint reader looks it up
    return opened, read


@pytest.mark.parametrize("naming", ["as_saved", "other"])
@pytest.mark.parametrize("shard_size", ["100KB", "50MB"])
@pytest.mark.parametrize("family", QWEN_MLLMS)
def test_features_equal_the_mllm_own_tower(tmp_path, family, naming, shard_size):
    mllm = save_tiny_mllm(family, tmp_path, shard_size)
    sharded = (tmp_path / "model.safetensors.index.json").exists()
    assert sharded == (shard_size == "100KB")
    if naming == "other":
        rename_keys(tmp_path, other_naming)

    model = VersaViTModel.from_mllm(tmp_path).eval()
    assert model.config.backbone_family == family
    inputs = random_inputs(model.config, [(8, 12), (4, 4), (16, 18)])
    with torch.no_grad():
        ours = model(**inputs, output_hidden_states=True)
        theirs = mllm.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"], output_hidden_states=True)
    # Equal up to float32 rounding: the patch embedding runs as a matmul, the MLLM's as a Conv3d.
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state)
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, reference)
    if family == "qwen3_vl":  # the DeepStack mergers are read too, and left as the MLLM has them
        for mine, reference in zip(ours.deepstack_features, theirs.deepstack_features, strict=True):
            torch.testing.assert_close(mine, reference)


@pytest.mark.parametrize("naming", ["as_saved", "other"])
def test_siglip2_tower_out_of_lfm2_vl(tmp_path, naming):
    """LFM2-VL's SigLIP2 tower (keys `model.vision_tower.*`, or with SigLIP2's inner `vision_model.`): every patch
    token equals the MLLM's own tower on LFM2-VL's own processor output, in raster order."""
    mllm = save_tiny_mllm("siglip2", tmp_path, "100KB")
    if naming == "other":
        rename_keys(tmp_path, other_naming)
    model = VersaViTModel.from_mllm(tmp_path).eval()
    assert model.config.backbone_family == "siglip2" and not model.config.vision_config.vision_use_head
    theirs_in, ours_in = lfm2_vl_inputs(model.config)
    with torch.no_grad():
        theirs = mllm.model.vision_tower(theirs_in["pixel_values"], theirs_in["pixel_attention_mask"],
                                         theirs_in["spatial_shapes"]).last_hidden_state
        (maps,) = model.get_dense_features(**ours_in, layers=[-1], stack=False)
    for image, ((h, w), feature_map) in enumerate(zip([(4, 6), (4, 4)], maps, strict=True)):
        torch.testing.assert_close(feature_map, theirs[image, : h * w].reshape(h, w, -1).permute(2, 0, 1))


@pytest.mark.parametrize("family", sorted(MLLMS))
def test_only_vision_tensors_are_read(tmp_path, monkeypatch, family):
    """Every family's MLLM, its tower under the prefix transformers saves it with (`visual.`, `model.visual.`, LFM2-VL's
    `model.vision_tower.`): only the shards with tower tensors are opened, only those tensors read."""
    save_tiny_mllm(family, tmp_path, shard_size="30KB")  # shards small enough that some hold no tower tensor
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    candidates = ("model.vision_tower.", "vision_tower.", "model.visual.", "visual.")
    prefix = next(p for p in candidates if any(key.startswith(p) for key in weight_map))
    vision_shards = {shard for key, shard in weight_map.items() if key.startswith(prefix)}
    assert set(weight_map.values()) - vision_shards, "the tiny MLLM must have a shard without vision tensors"

    opened, read = record_safetensors(monkeypatch)
    VersaViTModel.from_mllm(tmp_path)
    assert read and all(key.startswith(prefix) for key in read)
    assert len(read) == sum(key.startswith(prefix) for key in weight_map)
    assert set(opened) == vision_shards


def test_dtype_follows_the_checkpoint_unless_overridden(tmp_path):
    save_tiny_mllm("qwen2_vl", tmp_path, "50MB")
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(tmp_path / "model.safetensors").items()},
              tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert VersaViTModel.from_mllm(tmp_path).dtype == torch.bfloat16
    assert VersaViTModel.from_mllm(tmp_path, dtype=torch.float32).dtype == torch.float32


def test_folder_without_vision_weights_is_a_clear_error(tmp_path):
    save_tiny_mllm("qwen2_vl", tmp_path, "50MB")
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("visual.")}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="no vision tower weights"):
        VersaViTModel.from_mllm(tmp_path)


def test_incomplete_vision_weights_are_a_clear_error(tmp_path):
    save_tiny_mllm("qwen2_vl", tmp_path, "50MB")
    tensors = load_file(tmp_path / "model.safetensors")
    tensors.pop("visual.blocks.1.attn.qkv.weight")
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"incomplete, 1 tensors missing.*visual\.blocks\.1\.attn\.qkv\.weight"):
        VersaViTModel.from_mllm(tmp_path)


def test_missing_weights_or_config_are_clear_errors(tmp_path):
    save_tiny_mllm("qwen2_vl", tmp_path, "50MB")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        VersaViTModel.from_mllm(tmp_path)
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VersaViTModel.from_mllm(tmp_path)


def dual_encoder(family):
    """A tiny SigLIP or AIMv2 dual encoder (`vision_model.*` and `text_model.*`), as those towers ship."""
    from conftest import AIMV2_VISION, SIGLIP_VISION
    from transformers import Aimv2Config, Aimv2Model, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    text = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4, "max_position_embeddings": 16}
    if family == "siglip":
        vision = {k: v for k, v in SIGLIP_VISION.items() if k != "model_type"}
        return SiglipModel(SiglipConfig(vision_config=vision, text_config={**text, "projection_size": 32})).eval()
    vision = {k: v for k, v in AIMV2_VISION.items() if k != "model_type"}
    return Aimv2Model(Aimv2Config(vision_config=vision, text_config=text, projection_dim=32)).eval()


@pytest.mark.parametrize("family", ["siglip", "aimv2"])
def test_whole_image_tower_out_of_a_dual_encoder_folder(tmp_path, monkeypatch, family):
    """A SigLIP / SigLIP2 or AIMv2 dual encoder's folder (`vision_model.*` and `text_model.*`, e.g.
    SigLIP2-so400m-patch16-512, the paper's Table 6 tower, or AIMv2-Huge, SAILViT's): only the vision tensors are
    read, and the tower is the folder's own."""
    dual = dual_encoder(family)
    dual.save_pretrained(tmp_path)
    _, read = record_safetensors(monkeypatch)
    model = VersaViTModel.from_mllm(tmp_path).eval()
    monkeypatch.undo()
    assert model.config.backbone_family == family and read and all(k.startswith("vision_model.") for k in read)
    inputs = random_inputs(model.config, [(4, 4)])
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        images = inputs["pixel_values"].view(2, 2, 2, 2, 3, 16, 16).permute(4, 0, 2, 5, 1, 3, 6).reshape(1, 3, 64, 64)
        theirs = dual.vision_model(images).last_hidden_state[0]
    # packed rows come in 2x2 blocks: row-major block (R, C), then cell (r, c) within it
    raster = torch.tensor([(2 * R + r) * 4 + 2 * C + c for R in range(2) for C in range(2) for r in range(2)
                           for c in range(2)])
    torch.testing.assert_close(ours, theirs[raster])


def test_internvit_tower_out_of_internvl(tmp_path):
    """InternVL's tower (`model.vision_tower.*`): the InternViT family, every hidden state equal to the MLLM's own
    tower on the same image, CLS token left out, raster order."""
    mllm = save_tiny_mllm("internvit", tmp_path)
    model = VersaViTModel.from_mllm(tmp_path).eval()
    assert model.config.backbone_family == "internvit" and model.config.merged_dim is None
    inputs = random_inputs(model.config, [(4, 6)])
    images = inputs["pixel_values"].view(2, 3, 2, 2, 3, 16, 16).permute(4, 0, 2, 5, 1, 3, 6).reshape(1, 3, 64, 96)
    with torch.no_grad():
        theirs = mllm.model.vision_tower(images, output_hidden_states=True)
        maps = model.get_dense_features(**inputs, layers=list(range(model.config.num_hidden_layers + 1)))
    reference = list(theirs.hidden_states[:-1]) + [theirs.last_hidden_state]
    for layer, (grid, expected) in enumerate(zip(maps, reference, strict=True)):
        torch.testing.assert_close(grid[0], expected[0, 1:].reshape(4, 6, -1).permute(2, 0, 1), msg=f"layer {layer}")
