"""LoRA through peft on the backbone and the captioning LLM: what trains, merging, exact resume, bad settings."""

import pytest
import torch
from multitask_fixtures import (
    captioning_samples,
    collate_captioning,
    collate_depth,
    collate_segmentation,
    depth_samples,
    segmentation_samples,
    task_specs,
    tiny_multitask_model,
)
from test_trainer import training_args

from modeling_versavit import VersaViTModel
from versavit_trainer import MultiTaskTrainer
from versavit_trainer.core.lora import LoraArguments, apply_lora, merge_lora

BOTH = LoraArguments(backbone_lora=True, language_model_lora=True, backbone_lora_rank=4, language_model_lora_rank=4)


def adapted_model(seed=0, lora=BOTH):
    model = tiny_multitask_model(seed=seed)
    apply_lora(model, lora)
    return model


def test_only_adapters_and_the_unadapted_parts_change(tmp_path):
    model = adapted_model()
    names = [name for name, _ in model.named_parameters()]
    assert any(".lora_A." in n for n in names if n.startswith("visual.blocks."))
    assert any(".lora_B." in n for n in names if n.startswith("language_model."))
    assert not any("lora_" in n for n in names if n.startswith(("visual.merger.", "visual.patch_embed.")))
    initial = {name: p.detach().clone() for name, p in model.state_dict().items()}
    MultiTaskTrainer(model, training_args(tmp_path, max_steps=2), task_specs(model.config)).train()
    changed = {name for name, value in model.state_dict().items() if not torch.equal(value, initial[name])}
    for name in initial:
        adapted_part = name.startswith(("visual.", "language_model."))
        if adapted_part and "lora_" not in name:
            assert name not in changed, name  # every base weight of an adapted part is bit-identical
    assert any("lora_B" in name for name in changed if name.startswith("visual."))
    assert any("lora_B" in name for name in changed if name.startswith("language_model."))
    assert any(name.startswith("depth_head.") for name in changed)  # heads and projector still train in full
    assert any(name.startswith("projector.") for name in changed)


def test_merging_keeps_the_outputs_and_leaves_plain_modules(tmp_path):
    model = adapted_model()
    MultiTaskTrainer(model, training_args(tmp_path, max_steps=2, learning_rate=1e-2, backbone_learning_rate=1e-2),
                     task_specs(model.config)).train()
    model.eval()
    batches = {
        "depth": collate_depth(depth_samples(model.config, count=2)),
        "segmentation": collate_segmentation(segmentation_samples(model.config, count=2)),
        "captioning": collate_captioning(captioning_samples(model.config, count=2)),
    }
    with torch.no_grad():
        adapted = {task: model(task=task, **batch).loss for task, batch in batches.items()}
        features = model.get_dense_features(**{k: batches["depth"][k] for k in ("pixel_values", "image_grid_thw")})
    merge_lora(model)
    assert not any("lora_" in n or "base_layer" in n for n in model.state_dict())
    with torch.no_grad():
        for task, batch in batches.items():
            torch.testing.assert_close(model(task=task, **batch).loss, adapted[task], rtol=1e-4, atol=1e-5)
        merged = model.get_dense_features(**{k: batches["depth"][k] for k in ("pixel_values", "image_grid_thw")})
    torch.testing.assert_close(merged[0], features[0], rtol=1e-4, atol=1e-5)
    # the merged backbone saves and loads as a plain VersaViTModel
    model.save_pretrained(tmp_path / "merged")
    backbone = VersaViTModel.from_pretrained(tmp_path / "merged")
    assert torch.equal(backbone.visual.blocks[0].attn.qkv.weight, model.visual.blocks[0].attn.qkv.weight)


def test_resume_with_adapters_continues_exactly(tmp_path):
    def losses(trainer):
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    model = adapted_model()
    straight = MultiTaskTrainer(model, training_args(tmp_path / "a", max_steps=4), task_specs(model.config))
    straight.train()

    model = adapted_model()
    first = MultiTaskTrainer(model, training_args(tmp_path / "b", max_steps=4, save_strategy="steps", save_steps=2),
                             task_specs(model.config))
    first.train()
    model = adapted_model(seed=1)  # different starting weights: everything must come from the checkpoint
    resumed = MultiTaskTrainer(model, training_args(tmp_path / "b", max_steps=4), task_specs(model.config))
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "run" / "checkpoint-2"))
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-6)
    assert len(losses(straight)) == 4


def test_bad_lora_settings_fail_at_start():
    with pytest.raises(ValueError, match=r"backbone_lora_rank: must be a positive integer, got 0"):
        LoraArguments(backbone_lora=True, backbone_lora_rank=0)
    with pytest.raises(ValueError, match=r"language_model_lora_rank: must be a positive integer, got -2"):
        LoraArguments(language_model_lora_rank=-2)
    with pytest.raises(ValueError, match=r"backbone_lora_target_modules: \['nonexistent'\] match no module of visual"):
        apply_lora(
            tiny_multitask_model(), LoraArguments(backbone_lora=True, backbone_lora_target_modules=["nonexistent"])
        )
    with pytest.raises(ValueError, match=r"language_model_lora_target_modules: \['wq'\] match no module"):
        apply_lora(
            tiny_multitask_model(), LoraArguments(language_model_lora=True, language_model_lora_target_modules=["wq"])
        )


def test_a_frozen_language_model_cannot_have_adapters(tmp_path):
    model = adapted_model()
    with pytest.raises(ValueError, match="train_language_model=False freezes the LLM"):
        MultiTaskTrainer(model, training_args(tmp_path, train_language_model=False), task_specs(model.config))


def test_backbone_adapters_sit_in_every_block_of_every_tower_family(family):
    """The default targets adapt the attention and the MLP projections inside each block of every family's tower
    (its own module names), never the patch embedding, the position grid or the parts left to the MLLM."""
    from conftest import tiny_config

    from modeling_versavit import VersaViTForDepthEstimation

    model = VersaViTForDepthEstimation(tiny_config(family))
    prefix = model.config.backbone.blocks_pattern.split("\\")[0]  # blocks / encoder
    linear = {f"visual.{name}" for name, module in model.visual.named_modules()
              if isinstance(module, torch.nn.Linear) and name.startswith(prefix)}
    apply_lora(model, LoraArguments(backbone_lora=True))
    # the family's lora_targets are exactly its blocks' projections: all of them, and nothing outside the blocks
    assert {name.split(".lora_A.")[0] for name, _ in model.named_parameters() if ".lora_A." in name} == linear
    adapted = {name.split(".lora_A.")[0] for name, _ in model.named_parameters() if ".lora_A." in name}
    backbone = model.config.backbone
    names = {module: name for name, module in model.named_modules()}
    for index, block in enumerate(backbone.blocks(model.visual)):
        inside = [name for name in adapted if name.startswith(names[block] + ".")]
        attention = names[backbone.attention(block)] + "."
        # both the attention's projections and the MLP's (everything else in the block)
        assert any(name.startswith(attention) for name in inside), (index, inside)
        assert any(not name.startswith(attention) for name in inside), (index, inside)
    owned = tuple(model.config.backbone.mllm_owned)
    assert not any(part in name for name in adapted for part in owned + ("patch_embed", "embeddings"))
    trainable = {name for name, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
