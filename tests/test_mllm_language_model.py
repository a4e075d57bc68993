"""Captioning through the MLLM's own LLM (`VersaViTConfig.mllm_language_model`, `--mllm_language_model`): the branch
runs as the MLLM does (its mergers, DeepStack included, its multimodal positions, its LLM), so its loss is the MLLM's
own; the connector trains as the `projector` part; the runs, their plans and their folders."""

import json

import pytest
import torch
from conftest import random_inputs, tiny_config
from huggingface_hub.errors import StrictDataclassError
from mllm_fixtures import IMAGE_TOKENS, QWEN_MLLMS, save_tiny_mllm, save_tiny_mllm_with_tokenizer

from modeling_versavit import (
    VersaViTCaptioningProcessor,
    VersaViTConfig,
    VersaViTForCaptioning,
    VersaViTForMultiTask,
    VersaViTImageProcessor,
    VersaViTModel,
)
from versavit_trainer import apply_stage
from versavit_trainer.parts import training_parts

IMAGE, START, END = (IMAGE_TOKENS[key] for key in ("image_token_id", "vision_start_token_id", "vision_end_token_id"))
# Qwen3-VL's DeepStack features enter the LLM after its first layers: with 3 of them, both of the tiny tower's
# DeepStack mergers reach the loss (Qwen3.5's hybrid LLM keeps its 2 layers).
LLM_LAYERS = {"qwen3_vl": {"num_hidden_layers": 3}}


def captioner_and_mllm(tmp_path, family):
    mllm = save_tiny_mllm(family, tmp_path, **LLM_LAYERS.get(family, {}))
    model = VersaViTForCaptioning.from_parts(VersaViTModel.from_mllm(tmp_path), mllm, tokenizer=None)
    return model, mllm


def two_prompts():
    """Two samples, each an image (2x2 and 2x3 merged tokens) between the vision start / end tokens, then text; the
    last tokens are the answers."""
    rows = [[5, START] + [IMAGE] * 4 + [END, 6, 7, 8, 9, 10], [5, START] + [IMAGE] * 6 + [END, 11, 12, 13]]
    input_ids = torch.tensor(rows)
    labels = input_ids.clone()
    labels[:, :9] = -100
    return input_ids, labels


@pytest.mark.parametrize("family", QWEN_MLLMS)
def test_the_loss_is_the_mllm_own_forward_loss_and_its_mergers_train(tmp_path, family):
    """On the same batch, VersaViT's branch gives the MLLM's own forward loss (float rounding: VersaViT's patch
    embedding is a matmul), every merger of the connector (Qwen3-VL's DeepStack mergers too) gets gradient, and
    greedy generation gives the MLLM's tokens."""
    model, mllm = captioner_and_mllm(tmp_path, family)
    assert model.config.mllm_language_model and model.projector is None
    inputs = random_inputs(model.config, [(4, 4), (4, 6)], seed=1)
    input_ids, labels = two_prompts()
    theirs = mllm.train()(input_ids=input_ids, labels=labels, mm_token_type_ids=(input_ids == IMAGE).int(), **inputs)
    ours = model.train()(input_ids=input_ids, labels=labels, **inputs)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-5, atol=1e-5)
    ours.loss.backward()
    connector = model.config.backbone.owned_modules(model.visual)
    assert len(connector) == (1 + len(model.config.vision_config.deepstack_visual_indexes) if family == "qwen3_vl"
                              else 1)
    for module in connector:
        assert all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    prompt = torch.tensor([[5, START] + [IMAGE] * 4 + [END, 6]])
    one = random_inputs(model.config, [(4, 4)], seed=2)
    with torch.no_grad():
        generated = model.eval().generate(prompt, one["pixel_values"], one["image_grid_thw"], max_new_tokens=4,
                                          do_sample=False)
        reference = mllm.eval().generate(input_ids=prompt, mm_token_type_ids=(prompt == IMAGE).int(), max_new_tokens=4,
                                         do_sample=False, **one)
    assert generated.tolist() == reference[:, prompt.shape[1]:].tolist()


def test_without_the_deepstack_features_the_loss_differs(tmp_path):
    """The check above can tell: the same branch with the DeepStack features withheld from the LLM gives another
    loss (so they do reach it)."""
    model, _ = captioner_and_mllm(tmp_path, "qwen3_vl")
    inputs = random_inputs(model.config, [(4, 4), (4, 6)], seed=1)
    input_ids, labels = two_prompts()
    with torch.no_grad():
        llm_inputs, _ = model._llm_inputs(input_ids, inputs["pixel_values"], inputs["image_grid_thw"], labels)
        full = model.language_model(**llm_inputs, labels=labels).loss
        llm_inputs["mm_encoder_outputs"]["image"].deepstack_features = [
            tuple(torch.zeros_like(part) for part in feature)
            for feature in llm_inputs["mm_encoder_outputs"]["image"].deepstack_features]
        without = model.language_model(**llm_inputs, labels=labels).loss
    assert abs(float(full) - float(without)) > 1e-4


def test_the_connector_is_the_projector_part_and_trains_alone(tmp_path):
    """`training_parts`: the projector part is the tower's mergers (no separate projector); a projector-only stage
    trains exactly those, and they are not frozen by design as in the other task models."""
    model, _ = captioner_and_mllm(tmp_path, "qwen3_vl")
    parts = training_parts(model)
    connector = {id(p) for module in model.config.backbone.owned_modules(model.visual) for p in module.parameters()}
    assert {id(p) for p in parts["projector"].parameters()} == connector
    assert not connector & {id(p) for p in model.frozen_by_design()}
    apply_stage(model, {"backbone": None, "projector": 1e-3, "language_model": None})
    assert {id(p) for p in model.parameters() if p.requires_grad} == connector
    apply_stage(model, {"backbone": 1e-5, "projector": None, "language_model": None})
    trained = {id(p) for p in model.visual.parameters() if p.requires_grad}
    assert trained and not trained & connector  # the later part (projector) decides for the modules it shares


def test_the_folder_round_trips_and_its_processor_wraps_images_as_the_mllm(tmp_path):
    """`save_pretrained` / `from_pretrained` (the multi-task class too) keep the branch, the loss and the MLLM's
    config; the captioning processor for that config uses the MLLM's image token between its vision start / end."""
    mllm, tokenizer = save_tiny_mllm_with_tokenizer("qwen3_vl", tmp_path / "mllm", num_hidden_layers=3)
    model = VersaViTForCaptioning.from_parts(VersaViTModel.from_mllm(tmp_path / "mllm"), mllm, tokenizer).eval()
    processor = VersaViTCaptioningProcessor.for_model(
        VersaViTImageProcessor(**model.config.backbone.image_processor_kwargs(model.config.vision_config)),
        tokenizer, model.config)
    import PIL.Image
    from conftest import photo

    batch = processor([PIL.Image.fromarray(photo("chelsea")).resize((64, 64))], ["What is it?"], ["A cat."])
    ids = batch["input_ids"][0].tolist()
    first = ids.index(mllm.config.image_token_id)
    assert ids[first - 1] == mllm.config.vision_start_token_id and ids[first + 4] == mllm.config.vision_end_token_id
    assert ids.count(mllm.config.image_token_id) == 4
    pixels = {key: batch[key] for key in ("pixel_values", "image_grid_thw")}
    theirs = mllm(input_ids=batch["input_ids"], labels=batch["labels"],
                  mm_token_type_ids=(batch["input_ids"] == mllm.config.image_token_id).int(), **pixels).loss
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], labels=batch["labels"], **pixels).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["mllm_language_model"] and config["text_config"]["model_type"] == "qwen3_vl"
    for cls in (VersaViTForCaptioning, VersaViTForMultiTask):
        again = cls.from_pretrained(tmp_path / "saved").eval()
        assert again.config.mllm_language_model and again.projector is None
        with torch.no_grad():
            torch.testing.assert_close(again(task="captioning", input_ids=batch["input_ids"], labels=batch["labels"],
                                             **pixels).loss if cls is VersaViTForMultiTask else
                                       again(input_ids=batch["input_ids"], labels=batch["labels"], **pixels).loss,
                                       ours)
    reloaded = VersaViTCaptioningProcessor.from_pretrained(tmp_path / "saved")
    assert (reloaded.image_token, reloaded.image_start, reloaded.image_end) == (
        processor.image_token, "<|vision_start|>", "<|vision_end|>")


def test_settings_that_cannot_work_are_refused_by_name():
    base = tiny_config("qwen3_vl").to_dict()
    mllm = {"model_type": "qwen3_vl", "vision_config": base["vision_config"], "text_config": {"vocab_size": 128}}
    with pytest.raises(StrictDataclassError, match="mllm_language_model"):
        VersaViTConfig(**{**base, "mllm_language_model": "yes"})
    with pytest.raises(ValueError, match="the siglip2 family's MLLMs keep their connector outside the tower"):
        VersaViTConfig(**{**tiny_config("siglip2").to_dict(), "mllm_language_model": True,
                          "text_config": {"model_type": "lfm2_vl"}, "image_token_id": 1})
    with pytest.raises(ValueError, match="text_config must be the config of a qwen3_vl / qwen3_vl_moe MLLM.*'qwen3'"):
        VersaViTConfig(**{**base, "mllm_language_model": True, "text_config": {"model_type": "qwen3"},
                          "image_token_id": 1})
    with pytest.raises(ValueError, match="task_tokens need the separate projector branch"):
        VersaViTConfig(**{**base, "mllm_language_model": True, "text_config": mllm, "image_token_id": 1,
                          "task_tokens": {"depth": 8}})


def test_a_run_captions_through_the_mllm_own_llm_and_its_final_folder_swaps_back(tmp_path, capsys):
    """`--mllm_language_model true`: the plan names the connector, both stages train it (DeepStack mergers
    included), `final/` and its processor keep the MLLM's branch, `backbone/` is a plain encoder, and swapping from
    `final/` puts the tower with its trained mergers into the MLLM, whose LLM stays the source's."""
    from pathlib import Path

    from conftest import load_recipe, tiny_run_config
    from transformers import AutoModelForImageTextToText

    from versavit_trainer.export.mllm import swap_vision_tower

    mllm, _ = save_tiny_mllm_with_tokenizer("qwen3_vl", tmp_path / "mllm", num_hidden_layers=3)
    config = tiny_run_config(tmp_path, Path("unused"), vision_config=None, language_model=None,
                             mllm=str(tmp_path / "mllm"), mllm_language_model=True, tasks=["captioning", "depth"],
                             depth_size=64, segmentation_size=64, caption_max_pixels=64 * 64, num_eval_scenes=2,
                             panel_samples=1, report_to="none", save_strategy="no")
    summary = load_recipe("multitask").main(["--config", str(config)])
    printed = capsys.readouterr().out
    assert ("connector the MLLM's own (merger + deepstack_merger_list, trained as the projector part) into "
            "Qwen3VLForConditionalGeneration's LLM") in printed
    final = VersaViTForCaptioning.from_pretrained(summary["final"])
    assert final.config.mllm_language_model
    source = mllm.state_dict()
    connector = {name: tensor for name, tensor in final.visual.state_dict().items()
                 if name.startswith(("merger.", "deepstack_merger_list."))}
    assert any(name.startswith("deepstack_merger_list.") for name in connector)
    assert all(not torch.equal(tensor, source["model.visual." + name]) for name, tensor in connector.items())
    assert VersaViTCaptioningProcessor.from_pretrained(summary["final"]).image_start == "<|vision_start|>"
    assert not json.loads((Path(summary["backbone"]) / "config.json").read_text())["mllm_language_model"]
    VersaViTModel.from_pretrained(summary["backbone"])

    swapped = AutoModelForImageTextToText.from_pretrained(swap_vision_tower(tmp_path / "mllm", summary["final"],
                                                                            tmp_path / "swapped")).state_dict()
    for name, tensor in final.visual.state_dict().items():
        assert torch.equal(swapped["model.visual." + name], tensor), name
    for name, tensor in source.items():
        if not name.startswith("model.visual."):
            assert torch.equal(swapped[name], tensor), name


@pytest.mark.parametrize(("name", "deepstack"), [("versavit_qwen3vl_8b.yaml", True),
                                                 ("versavit_qwen2vl_7b.yaml", False)])
def test_the_dry_run_says_what_happens_to_the_deepstack_mergers(capsys, name, deepstack):
    """With a separate captioning LLM, a Qwen3-VL run's plan says its DeepStack mergers neither run nor train (and
    how to feed them); a tower without them gets no such line."""
    from pathlib import Path

    from conftest import load_recipe

    config = Path(__file__).resolve().parent.parent / "recipes" / "configs" / name
    load_recipe("multitask").main(["--config", str(config), "--dry_run"])
    printed = capsys.readouterr().out
    line = "DeepStack mergers stay frozen and unused"
    assert (line in printed) == deepstack and ("--mllm_language_model true" in printed) == deepstack


def test_a_dense_model_of_such_a_folder_keeps_the_mergers_frozen(tmp_path):
    """Loaded as a depth model (no captioning branch), a folder that captioned through the MLLM's LLM freezes the
    mergers as every task model does, and its parts have no projector."""
    from modeling_versavit import VersaViTForDepthEstimation

    model, _ = captioner_and_mllm(tmp_path, "qwen3_vl")
    model.save_pretrained(tmp_path / "saved")
    depth = VersaViTForDepthEstimation.from_pretrained(tmp_path / "saved")
    connector = [p for module in depth.config.backbone.owned_modules(depth.visual) for p in module.parameters()]
    assert connector and not any(p.requires_grad for p in connector)
    assert "projector" not in training_parts(depth)
