"""The captioning / VQA branch: inputs and labels, the spliced LLM forward, stages, SmolLM2, checkpoints."""

import PIL.Image
import pytest
import torch
from conftest import photo, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from modeling_versavit import (
    IGNORE_INDEX,
    VersaViTCaptioningProcessor,
    VersaViTConfig,
    VersaViTForCaptioning,
    VersaViTForDepthEstimation,
    VersaViTForReferringSegmentation,
    VersaViTImageProcessor,
    VersaViTModel,
)
from versavit_trainer import apply_stage
from versavit_trainer.data.assets import smollm2_path

SMALL_IMAGES = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_path()  # converted from the packaged GGUF once, then cached


@pytest.fixture
def tokenizer(smollm2):
    return AutoTokenizer.from_pretrained(smollm2)


def tiny_captioner(tokenizer, family="qwen2_vl", seed=0, llm_layers=1):
    torch.manual_seed(seed)
    backbone = VersaViTModel(tiny_config(family))
    llm = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=llm_layers,
                    num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    )
    model = VersaViTForCaptioning.from_parts(backbone, llm, tokenizer)
    towers = model.config.backbone.image_processor_kwargs(model.config.vision_config)
    processor = VersaViTCaptioningProcessor(VersaViTImageProcessor(size=SMALL_IMAGES, **towers), tokenizer)
    return model, processor


def sample_batch(processor, answers=("A cat with green eyes.", "Coffee.")):
    images = [PIL.Image.fromarray(photo("chelsea")), PIL.Image.fromarray(photo("coffee"))]
    prompts = ["Describe the image.", "<image>What is in the cup?"]
    return processor(images, prompts, list(answers) if answers is not None else None)


def test_labels_are_masked_token_by_token(tokenizer):
    model, processor = tiny_captioner(tokenizer)
    answers = ["A cat with green eyes.", "Coffee."]
    batch = sample_batch(processor, answers)
    image_id = processor.image_token_id
    for row, (_, h, w) in enumerate(batch["image_grid_thw"].tolist()):
        ids, labels, attention = batch["input_ids"][row], batch["labels"][row], batch["attention_mask"][row]
        length = int(attention.sum())
        assert attention[:length].all() and not attention[length:].any()  # right padding for training
        answer_ids = tokenizer(answers[row] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        start = length - len(answer_ids)
        assert int((ids == image_id).sum()) == h * w // 4
        for position in range(ids.shape[0]):
            if start <= position < length:  # answer tokens, end-of-sequence included, are predicted
                assert labels[position] == ids[position] == answer_ids[position - start]
            else:  # chat template, image tokens, question and padding are not
                assert labels[position] == IGNORE_INDEX
        prompt = tokenizer.decode(ids[:start])
        assert prompt.count("<image>") == h * w // 4 and (
            "Describe the image." in prompt or "What is in the cup?" in prompt
        )


def test_loss_is_the_per_token_mean_over_answer_tokens(tokenizer):
    model, processor = tiny_captioner(tokenizer)
    batch = sample_batch(processor)
    out = model(**batch)
    unlabelled = {key: value for key, value in batch.items() if key != "labels"}
    full_logits = model(**unlabelled).logits  # without labels: every position's logits
    logits, labels = full_logits[:, :-1].double(), batch["labels"][:, 1:]
    picked = labels != IGNORE_INDEX
    log_probs = logits.log_softmax(-1)[picked].gather(-1, labels[picked][:, None])
    assert out.loss.item() == pytest.approx(-log_probs.mean().item(), rel=1e-5)
    assert out.image_features.shape == (int(batch["image_grid_thw"].prod(-1).sum()) // 4, 32)
    # With labels, the LM head ran only at the positions that predict one: the same logits, in row-major order.
    assert out.logits.shape == (int(picked.sum()), full_logits.shape[-1])
    torch.testing.assert_close(out.logits, full_logits[:, :-1][picked])

# every part trains (what a multitask stage does), but what the model freezes by design
MULTITASK = {"backbone": 1.0, "projector": 1.0, "language_model": 1.0}


def test_selected_logits_give_the_llm_own_loss_and_gradients(tokenizer):
    """The loss on the answer positions' logits against the LLM computing every logit and its own loss (the
    fallback for an LLM without `logits_to_keep`, here forced by hiding the argument)."""
    model, processor = tiny_captioner(tokenizer)
    apply_stage(model, MULTITASK)
    batch = sample_batch(processor)

    def loss_and_gradients():
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    selected, selected_grads = loss_and_gradients()
    llm_forward = model.language_model.forward
    model.language_model.forward = lambda **kwargs: llm_forward(**kwargs)  # a signature without logits_to_keep
    try:
        assert model(**batch).logits.ndim == 3  # the fallback: every position
        reference, reference_grads = loss_and_gradients()
    finally:
        del model.language_model.forward
    torch.testing.assert_close(selected, reference)
    assert selected_grads.keys() == reference_grads.keys() and "projector.mlp.0.weight" in selected_grads
    for name, grad in selected_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_without_answer_tokens_has_zero_loss(tokenizer):
    model, processor = tiny_captioner(tokenizer)
    batch = sample_batch(processor)
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    out = model(**batch)
    assert out.loss.item() == 0 and out.loss.requires_grad and out.logits.shape[0] == 0


def test_gradients_and_stages(tokenizer, family):
    model, processor = tiny_captioner(tokenizer, family)
    batch = sample_batch(processor)

    def trained_parts():
        model.zero_grad()
        model(**batch).loss.backward()
        blocks = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters())
                  for b in model.config.backbone.blocks(model.visual)]
        grad = lambda module: any(p.grad is not None for p in module.parameters())  # noqa: E731
        owned = model.config.backbone.owned_modules(model.visual)  # the PatchMerger (SigLIP2: its pooling head)
        return blocks, grad(model.projector), grad(model.language_model), any(grad(m) for m in owned)

    apply_stage(model, MULTITASK)
    assert trained_parts() == ([True, True, True], True, True, False)
    apply_stage(model, {"projector": 1.0})  # the warm-up: only the projector trains
    assert trained_parts() == ([False, False, False], True, False, False)


def test_image_features_follow_the_merge_block_order(tokenizer, qwen_family):
    """With a projector equal to the tower's merger, the captioning features equal the tower's own merged tokens (for
    Qwen2.5-VL: the window permutation is undone as the tower's merger output has it undone)."""
    model, _ = tiny_captioner(tokenizer, qwen_family)
    model.projector = model.config.backbone.build_projector(model.config.vision_config, model.config.merged_dim)
    model.projector.load_state_dict(model.visual.merger.state_dict())
    grid = torch.tensor([[1, 12, 16]])
    pixel_values = torch.randn(192, model.config.patch_dim)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_image_features(pixel_values, grid), model.visual(pixel_values, grid_thw=grid).pooler_output
        )


def test_placeholder_errors(tokenizer):
    model, processor = tiny_captioner(tokenizer)
    image = PIL.Image.fromarray(photo("coffee"))
    with pytest.raises(ValueError, match=r"conversations\[0\]: holds 2 image placeholders"):
        processor([image], ["<image> and <image>"], ["x"])
    batch = sample_batch(processor)
    without = batch["input_ids"].masked_fill(batch["input_ids"] == processor.image_token_id, tokenizer.eos_token_id)
    with pytest.raises(ValueError, match=r"input_ids\[0\] has 0 image tokens .* its image has \d+ visual tokens"):
        model(input_ids=without, pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"])
    bad_labels = batch["labels"].clone()
    bad_labels[batch["input_ids"] == processor.image_token_id] = 5
    with pytest.raises(ValueError, match="labels: image token positions must carry -100"):
        model(**{**batch, "labels": bad_labels})
    with pytest.raises(ValueError, match="needs config.text_config"):
        VersaViTForCaptioning(tiny_config())


def test_smollm2_learns_a_fixed_batch_and_generates_text(smollm2, tokenizer):
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_pretrained(smollm2)
    model = VersaViTForCaptioning.from_parts(VersaViTModel(tiny_config()), llm, tokenizer)
    processor = VersaViTCaptioningProcessor(VersaViTImageProcessor(size=SMALL_IMAGES), tokenizer)
    batch = sample_batch(processor, ["A tabby cat.", "A cup of coffee."])
    apply_stage(model, MULTITASK)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(4):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses

    model.eval()
    prompts = processor([PIL.Image.fromarray(photo("coffee"))], ["What is in the cup?"])
    assert prompts["attention_mask"][0, -1] == 1  # generation prompts are left-padded
    generated = model.generate(**prompts, max_new_tokens=8, do_sample=False)
    text = processor.batch_decode(generated)[0]
    assert generated.shape[1] > 0 and len(text.strip()) > 0


def test_captioning_round_trip_and_processor_save(tmp_path, tokenizer):
    model, processor = tiny_captioner(tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, info = VersaViTForCaptioning.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.config.image_token_id == processor.image_token_id
    batch = sample_batch(processor)
    reloaded_batch = sample_batch(VersaViTCaptioningProcessor.from_pretrained(tmp_path))
    for key in ("input_ids", "labels", "pixel_values", "image_grid_thw"):
        assert torch.equal(reloaded_batch[key], batch[key])
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, reloaded.eval()(**batch).logits)


def test_a_checkpoint_with_every_head_loads_into_each_task_class(tmp_path, tokenizer):
    captioner, _ = tiny_captioner(tokenizer)
    config = captioner.config
    depth, segmentation = VersaViTForDepthEstimation(config), VersaViTForReferringSegmentation(config)
    depth.visual.load_state_dict(captioner.visual.state_dict())
    segmentation.visual.load_state_dict(captioner.visual.state_dict())
    captioner.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    for model in (depth, segmentation):
        tensors.update({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("visual.")})
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})

    for model_class, reference in (
        (VersaViTForDepthEstimation, depth),
        (VersaViTForReferringSegmentation, segmentation),
        (VersaViTForCaptioning, captioner),
        (VersaViTModel, depth),
    ):
        loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"], model_class.__name__
        expected = reference.state_dict()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, expected[key]), (model_class.__name__, key)


def test_projector_parameter_count_at_paper_scale():
    config = VersaViTConfig(text_config={"model_type": "qwen3", "hidden_size": 2048}, image_token_id=151655)
    with torch.device("meta"):
        projector = config.backbone.build_projector(config.vision_config, config.text_config.hidden_size)
    count = sum(p.numel() for p in projector.parameters())
    print(
        f"Captioning projector, 1280-d tower into a 2048-d LLM: {count / 1e6:.1f}M parameters (paper Table 13: 35.0M)"
    )
    assert 30e6 < count < 40e6


def test_multi_turn_conversations_label_every_answer(tokenizer):
    _, processor = tiny_captioner(tokenizer)
    turns = [{"user": "Describe the image.", "assistant": "A cup of coffee."},
             {"user": "How many cups are there?", "assistant": "one"}]
    batch = processor([PIL.Image.fromarray(photo("coffee"))], conversations=[turns])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    labelled = labels != IGNORE_INDEX
    # The labelled tokens are exactly the two answers, each closed by the end-of-sequence token, in order.
    expected = sum(
        (tokenizer(t["assistant"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for t in turns), []
    )
    assert labels[labelled].tolist() == expected and ids[labelled].tolist() == expected
    # Everything else is the chat template's rendering of the conversation (image placeholder expanded).
    text = tokenizer.decode(ids, skip_special_tokens=False)
    reference = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "<image>\nDescribe the image."},
            {"role": "assistant", "content": "A cup of coffee."},
            {"role": "user", "content": "How many cups are there?"},
            {"role": "assistant", "content": "one"},
        ],
        tokenize=False,
    )
    (_, h, w), = batch["image_grid_thw"].tolist()
    assert text == reference.replace("<image>", "<image>" * (h * w // 4)).rstrip("\n")
    with pytest.raises(ValueError, match=r"conversations\[0\]\[0\]: only the last turn may lack an answer"):
        processor(
            [PIL.Image.fromarray(photo("coffee"))], conversations=[[{"user": "a"}, {"user": "b", "assistant": "c"}]]
        )
