"""Task fine-tuning from a multi-task checkpoint: depth, and referring segmentation with the text encoder online
(LoRA) or offline."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_recipe

from modeling_versavit import (
    SentenceEmbedder,
    VersaViTForDepthEstimation,
    VersaViTForReferringSegmentation,
    VersaViTModel,
)

SMALL = ["--size", "56", "--num_scenes", "40", "--num_eval_scenes", "6", "--batch_size", "4", "--use_cpu", "true",
         "--logging_steps", "50", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
         "--learning_rate", "3e-3", "--backbone_learning_rate", "1e-3", "--warmup_steps", "5"]


def test_depth_finetuning_improves_held_out_depth(tmp_path, dense_checkpoint):
    summary = load_recipe("finetune_depth").main(
        ["--model_name_or_path", str(dense_checkpoint), "--output_dir", str(tmp_path), "--max_steps", "100", *SMALL]
    )
    before, after = summary["held_out"]["before"], summary["held_out"]["after"]
    assert after["abs_rel"] < 0.5 * before["abs_rel"] and after["delta1"] > before["delta1"], (before, after)
    model = VersaViTForDepthEstimation.from_pretrained(summary["final"])
    original = VersaViTModel.from_pretrained(dense_checkpoint)
    assert not torch.equal(model.visual.blocks[0].attn.qkv.weight, original.visual.blocks[0].attn.qkv.weight)


@pytest.mark.e2e  # 20 s: in CI's e2e stage (make test keeps the other fine-tune runs)
def test_refseg_finetuning_with_the_online_lora_text_encoder_improves_masks(tmp_path, dense_checkpoint):
    summary = load_recipe("finetune_refseg").main(
        ["--model_name_or_path", str(dense_checkpoint), "--output_dir", str(tmp_path), "--max_steps", "150", *SMALL]
    )
    before, after = summary["held_out"]["before"], summary["held_out"]["after"]
    assert summary["text_mode"] == "online"
    assert after["miou"] > before["miou"] and after["ciou"] > before["ciou"], (before, after)
    VersaViTForReferringSegmentation.from_pretrained(summary["final"])
    # the merged text encoder is a plain transformers model that embeds as MiniLM does, but adapted
    from versavit_trainer.data.assets import minilm_path

    adapted, original = SentenceEmbedder(Path(summary["final"]) / "text_encoder"), SentenceEmbedder(minilm_path())
    sentences = ["the red sphere", "the small gray box"]
    assert adapted.dim == 384 and adapted.pooling == original.pooling == "mean" and adapted.normalize
    assert not torch.allclose(adapted(sentences), original(sentences))
    # the referring pipeline embeds with the adapted encoder inside final/ (config.text_encoder, relative to it)
    from transformers import pipeline

    assert json.loads((Path(summary["final"]) / "config.json").read_text())["text_encoder"] == "text_encoder"
    segment = pipeline("referring-segmentation", model=summary["final"])
    assert segment.text_encoder.folder == Path(summary["final"]) / "text_encoder"


def test_online_and_offline_text_paths_give_the_same_shapes_and_both_train(dense_checkpoint):
    from modeling_versavit import VersaViTConfig, VersaViTForMultiTask
    from versavit_trainer.core.options import DataArguments
    from versavit_trainer.core.sources import load_data
    from versavit_trainer.data.assets import minilm_path
    from versavit_trainer.objectives.dense import eval_batches
    from versavit_trainer.objectives.online_text import OnlineTextSegmentation

    config = VersaViTConfig.from_pretrained(dense_checkpoint)
    config.tasks = ["segmentation"]
    data_args = DataArguments(tasks=["segmentation"], num_scenes=2, num_eval_scenes=0, segmentation_size=56)
    rows = load_data(data_args, with_eval=False).train["segmentation"]
    offline_batch = next(eval_batches(data_args, "segmentation", rows, batch_size=2))
    online_batch = next(eval_batches(data_args, "segmentation", rows, batch_size=2, online_text=True))
    assert "text_embeds" not in online_batch and len(online_batch["expressions"]) == len(offline_batch["text_embeds"])

    offline = VersaViTForMultiTask.from_pretrained(dense_checkpoint, config=config)
    online = OnlineTextSegmentation(VersaViTForMultiTask.from_pretrained(dense_checkpoint, config=config),
                                    SentenceEmbedder(minilm_path()))
    from versavit_trainer.core.arguments import apply_stage
    from versavit_trainer.parts import training_parts

    apply_stage(online, dict.fromkeys(training_parts(online), 1e-4))
    out_offline = offline(task="segmentation", **offline_batch)
    out_online = online(task="segmentation", **online_batch)
    assert out_offline.pred_masks.shape == out_online.pred_masks.shape
    out_offline.loss.backward()
    out_online.loss.backward()
    lora = [p for n, p in online.text_encoder.named_parameters() if "lora_A" in n]
    base = [p for n, p in online.text_encoder.named_parameters() if "lora_" not in n]
    assert lora and all(p.requires_grad for p in lora) and not any(p.requires_grad for p in base)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in online.text_encoder.named_parameters()
               if "lora_B" in n)
    assert all(p.grad is not None for p in offline.segmentation_head.parameters() if p.requires_grad)


def test_bad_finetuning_inputs_are_named(tmp_path, dense_checkpoint):
    recipe = load_recipe("finetune_depth")
    with pytest.raises(ValueError, match="model_name_or_path: .* is not a folder"):
        recipe.main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "a"), *SMALL])
    VersaViTModel.from_pretrained(dense_checkpoint).save_pretrained(tmp_path / "backbone_only")
    with pytest.raises(ValueError, match=r"has no depth weights \(depth_head\.\*\)"):
        recipe.main(
            ["--model_name_or_path", str(tmp_path / "backbone_only"), "--output_dir", str(tmp_path / "b"), *SMALL]
        )
    from versavit_trainer.config import ConfigError

    with pytest.raises(ConfigError, match=r"text_mode: expected 'online' or 'offline', got 'live'"):
        load_recipe("finetune_refseg").main(["--text_mode", "live", "--output_dir", str(tmp_path / "c")])
    with pytest.raises(ConfigError, match=r"text_lora_rank|backbone_lora_rank: must be a positive integer, got 0"):
        load_recipe("finetune_refseg").main(["--backbone_lora_rank", "0", "--output_dir", str(tmp_path / "d")])
