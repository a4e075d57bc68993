"""VisPer-LM as a method of the library: task tokens in the captioning branch, the embedding predictors and their
loss against plainly written references, what the embedding losses reach, the experts (transformers models and the
library's own), the offline embedding cache, and the two-stage curriculum end to end."""

import json
import math
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from conftest import load_recipe, photo, tiny_run_config
from datasets import Array2D, Dataset, Features, Value
from safetensors.torch import load_file
from test_captioning import tiny_captioner
from transformers import AutoTokenizer

from modeling_versavit import VersaViTCaptioningProcessor, VersaViTConfig, VersaViTForCaptioning
from versavit_trainer.config import ConfigError
from versavit_trainer.core.options import DataArguments
from versavit_trainer.data.assets import smollm2_path
from versavit_trainer.data.experts import EmbeddingExpert, ExpertSpec, parse_experts, pool_tokens
from versavit_trainer.objectives import ObjectiveContext, get_objective
from versavit_trainer.objectives.distillation import (
    EmbeddingPredictor,
    embedding_loss,
    predictor_inputs,
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(smollm2_path())


# ------------------------------------------------------------------------------------- the predictor and its loss
def reference_predictor(predictor: EmbeddingPredictor, hidden, queries, keep):
    """The predictor written out per sample and per head: input projection of the kept hidden states and of the
    queries, then per block layer norms, softmax(q k^T / sqrt(d)) v over [inputs; latents] per head, output
    projection, residual; layer-normed feed-forward with a residual; output projection and layer norm."""
    outputs = []
    for b in range(hidden.shape[0]):
        x = hidden[b][keep[b]] @ predictor.proj_in.weight.T + predictor.proj_in.bias
        latents = queries @ predictor.proj_in.weight.T + predictor.proj_in.bias
        for attention, feed_forward in predictor.blocks:
            norm = lambda t, ln: F.layer_norm(t, t.shape[-1:], ln.weight, ln.bias, ln.eps)  # noqa: E731
            xn, ln = norm(x, attention.norm_inputs), norm(latents, attention.norm_latents)
            inner = attention.heads * attention.dim_head
            q = ln @ attention.to_q.weight.T
            both = torch.cat([xn, ln])
            k, v = both @ attention.to_kv.weight[:inner].T, both @ attention.to_kv.weight[inner:].T
            heads = []
            for h in range(attention.heads):
                cols = slice(h * attention.dim_head, (h + 1) * attention.dim_head)
                weights = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(attention.dim_head), dim=-1)
                heads.append(weights @ v[:, cols])
            latents = torch.cat(heads, dim=-1) @ attention.to_out.weight.T + latents
            ln_ff, up, _, down = feed_forward
            latents = F.gelu(norm(latents, ln_ff) @ up.weight.T) @ down.weight.T + latents
        out = latents @ predictor.proj_out.weight.T + predictor.proj_out.bias
        outputs.append(F.layer_norm(out, out.shape[-1:], predictor.norm_out.weight, predictor.norm_out.bias))
    return torch.stack(outputs)


@pytest.mark.parametrize("depth", [1, 2])
def test_predictor_equals_a_plainly_written_perceiver(depth):
    torch.manual_seed(0)
    predictor = EmbeddingPredictor(hidden=24, width=10, depth=depth, heads=3, dim_head=5, ff_mult=2)
    for parameter in predictor.parameters():  # away from the init's ones and zeros
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    hidden, queries = torch.randn(3, 7, 24), torch.randn(6, 24)
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 5:] = False  # padding
    keep[2, [0, 3]] = False  # another expert's task tokens
    out = predictor(hidden, queries, keep)
    assert out.shape == (3, 6, 10)
    torch.testing.assert_close(out, reference_predictor(predictor, hidden, queries, keep), rtol=1e-5, atol=1e-5)


def test_embedding_loss_equals_smooth_l1_plus_weighted_infonce_written_out():
    torch.manual_seed(1)
    predicted, target, scale = torch.randn(4, 3, 5), torch.randn(4, 3, 5), torch.tensor(1.3)
    total, smooth_l1, contrastive = embedding_loss(predicted, target, scale, 0.3)
    d = (predicted - target).abs()
    expected_l1 = torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    p, t = predicted.flatten(1), target.flatten(1)
    nll = []
    for i in range(4):
        sims = [math.exp(scale.exp().item() * F.cosine_similarity(p[i], t[j], dim=0).item()) for j in range(4)]
        nll.append(-math.log(sims[i] / sum(sims)))
    assert smooth_l1.item() == pytest.approx(expected_l1.item(), rel=1e-5)
    assert contrastive.item() == pytest.approx(sum(nll) / 4, rel=1e-5)
    assert total.item() == pytest.approx(expected_l1.item() + 0.3 * sum(nll) / 4, rel=1e-5)
    # a pooled (one-token) target is compared with the mean of the predicted tokens; the temperature is clamped
    pooled = target[:, :1]
    _, l1_pooled, _ = embedding_loss(predicted, pooled, scale, 0.3)
    assert l1_pooled.item() == pytest.approx(F.smooth_l1_loss(predicted.mean(1, keepdim=True), pooled).item())
    hot = embedding_loss(predicted, target, torch.tensor(10.0), 1.0)[2]
    capped = F.cross_entropy(100 * F.normalize(p, dim=-1) @ F.normalize(t, dim=-1).T, torch.arange(4))
    assert hot.item() == pytest.approx(capped.item(), rel=1e-5)
    # other processes' targets are negatives too: this batch's rows are at `offset`
    others = torch.randn(2, 3, 5)
    gathered = torch.cat([others, target])
    with_others = embedding_loss(predicted, target, scale, 0.3, gathered, offset=2)[2]
    logits = scale.exp() * F.normalize(p, dim=-1) @ F.normalize(gathered.flatten(1), dim=-1).T
    assert with_others.item() == pytest.approx(F.cross_entropy(logits, torch.arange(2, 6)).item(), rel=1e-5)


def test_predictor_inputs_leave_out_padding_and_the_other_experts_task_tokens():
    image_id = 9
    # row 0: 2 text, 4 visual (grid 1x4x4 / 4), 2 experts x 2 task tokens, 1 text, 1 pad
    row0 = [1, 2] + [image_id] * 4 + [image_id] * 4 + [3, 0]
    row1 = [1] + [image_id] * 4 + [image_id] * 4 + [3, 4, 5]
    ids = torch.tensor([row0, row1])
    mask = torch.tensor([[1] * 11 + [0], [1] * 12])
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])
    first = predictor_inputs(ids, mask, grid, image_id, 4, 2, 0)
    second = predictor_inputs(ids, mask, grid, image_id, 4, 2, 1)
    assert first[0].tolist() == [True] * 8 + [False, False, True, False]  # expert 1's tokens at 8, 9; pad at 11
    assert second[0].tolist() == [True] * 6 + [False, False] + [True] * 3 + [False]
    assert first[1].tolist() == [True] * 7 + [False, False] + [True] * 3
    with pytest.raises(ValueError, match="one image per sequence"):
        predictor_inputs(ids, mask, grid[:1], image_id, 4, 2, 0)


# ------------------------------------------------------------------------------------- task tokens in the model
def test_task_tokens_follow_every_image_and_survive_save_and_load(tmp_path, tokenizer):
    model, processor = tiny_captioner(tokenizer)
    tokens = model.add_task_tokens({"depth": 8, "seg": 4}, num_task_tokens=2)
    assert model.num_sequence_task_tokens == 4
    expected = torch.cat([tokens.queries["depth"].view(2, 4, -1).mean(1), tokens.queries["seg"].view(2, 2, -1).mean(1)])
    torch.testing.assert_close(tokens.sequence(), expected)
    assert tokens.span("seg") == (2, 4)
    processor = VersaViTCaptioningProcessor(processor.image_processor, tokenizer, num_task_tokens=4)
    images = [PIL.Image.fromarray(photo("chelsea")), PIL.Image.fromarray(photo("coffee"))]
    batch = processor(images, ["Describe the image.", "What is it?"], ["A cat.", "Coffee."])
    spliced, _ = model._splice(batch["input_ids"], batch["pixel_values"], batch["image_grid_thw"], batch["labels"])
    for row, (_, h, w) in enumerate(batch["image_grid_thw"].tolist()):
        positions = (batch["input_ids"][row] == processor.image_token_id).nonzero()[:, 0]
        assert len(positions) == h * w // 4 + 4
        torch.testing.assert_close(spliced[row, positions[-4:]], expected)  # the task tokens close the image
    with pytest.raises(ValueError, match="followed by 4 task tokens"):  # a processor that leaves no room for them
        plain = VersaViTCaptioningProcessor(processor.image_processor, tokenizer)
        model(**plain(images, ["Describe the image.", "What is it?"], ["A cat.", "Coffee."]))
    with pytest.raises(ValueError, match="asked for"):
        model.add_task_tokens({"depth": 8}, num_task_tokens=2)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = VersaViTForCaptioning.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.task_tokens.sequence(), expected)
    reloaded_processor = VersaViTCaptioningProcessor.from_pretrained(tmp_path)
    assert reloaded_processor.num_task_tokens == 4
    prompts = reloaded_processor(images, prompts=["Describe the image.", "What is it?"])
    assert reloaded.generate(**prompts, max_new_tokens=2, do_sample=False).shape == (2, 2)


@pytest.mark.parametrize(("settings", "match"), [
    ({"task_tokens": {"depth": 6}, "num_task_tokens": 4}, "task_tokens.depth: the number of queries"),
    ({"task_tokens": {"2d": 8}}, "identifiers"),
    ({"num_task_tokens": 0}, "num_task_tokens: must be a positive integer"),
])
def test_bad_task_token_settings_name_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        VersaViTConfig(**settings)


# ------------------------------------------------------------------------------------- options
EXPERT = {"llm_layers": [1], "queries": 16, "grid": 4, "model": "/nowhere"}


@pytest.mark.parametrize(("experts", "match"), [
    ({"depth": {**EXPERT, "qeuries": 16}}, r"distillation_experts\.depth\.qeuries: unknown key \(did you mean "
                                            r"distillation_experts\.depth\.queries\?\)"),
    ({"depth": {**EXPERT, "llm_layers": [0]}}, r"distillation_experts\.depth\.llm_layers"),
    ({"depth": {**EXPERT, "queries": 12}}, r"distillation_experts\.depth\.queries: must be a positive multiple"),
    ({"depth": {**EXPERT, "queries": 8, "grid": 4}}, r"distillation_experts\.depth\.queries: .* set queries to 16"),
    ({"depth": {**EXPERT, "output": "2 layers"}}, r"distillation_experts\.depth\.output: expected the name of a "
                                                  "field"),
    ({"depth": {**EXPERT, "weight": float("nan")}}, r"distillation_experts\.depth\.weight"),
    ({"depth": {k: v for k, v in EXPERT.items() if k != "llm_layers"}}, r"distillation_experts\.depth\.llm_layers: "
                                                                          "missing"),
    ("[1, 2]", r"distillation_experts: expected a YAML / JSON mapping"),
])
def test_bad_expert_settings_name_the_full_path(experts, match):
    with pytest.raises(ConfigError, match=match):
        DataArguments(tasks=["captioning"], distillation_experts=experts)


def test_a_missing_expert_folder_is_named_only_when_the_expert_must_run():
    (spec,) = parse_experts({"depth": EXPERT}, 8)  # offline data do not need the expert's model
    with pytest.raises(FileNotFoundError, match=r"distillation_experts\.depth\.model: /nowhere is not a folder"):
        EmbeddingExpert(spec)


# ------------------------------------------------------------------------------------- gradients
def configured_objective(model, experts: dict, num_task_tokens: int = 2, shapes: dict | None = None):
    data_args = DataArguments(tasks=["captioning"], distillation_experts=experts,
                              distillation_num_task_tokens=num_task_tokens, caption_max_pixels=56 * 56)
    features = Features({f"{name}_embeds": Array2D(shape=shape, dtype="float32") for name, shape in shapes.items()}
                        | {"id": Value("int32")})
    data = Dataset.from_dict({"id": [0]} | {f"{n}_embeds": [np.zeros(s, np.float32)] for n, s in shapes.items()},
                             features=features)
    objective = get_objective("distillation")
    context = ObjectiveContext(data_args, config=model.config, datasets={"distillation": [data]})
    objective.configure(model.config, context)
    modules = torch.nn.ModuleDict(objective.modules(model))
    return objective, modules


def test_embedding_losses_reach_exactly_the_layers_up_to_the_deepest_distilled_one(tokenizer):
    """With 3 LLM layers and experts distilled at layers 1 and 2, the embedding losses' gradients reach the tower,
    projector, task tokens, input embeddings, LLM layers 1-2, the predictors and temperatures, and nothing after
    layer 2 (the third layer, the final norm)."""
    model, processor = tiny_captioner(tokenizer, llm_layers=3)
    experts = {"depth": {"llm_layers": [1], "queries": 4, "grid": 2}, "seg": {"llm_layers": [1, 2], "queries": 4,
                                                                            "grid": 2}}
    objective, modules = configured_objective(model, experts, shapes={"depth": (4, 6), "seg": (4, 5)})
    processor = VersaViTCaptioningProcessor(processor.image_processor, tokenizer, num_task_tokens=4)
    images = [PIL.Image.fromarray(photo("chelsea")), PIL.Image.fromarray(photo("coffee"))]
    batch = dict(processor(images, ["Describe the image.", "What is it?"], ["A cat.", "Coffee."]))
    batch["expert_embeds"] = {"depth": torch.randn(2, 4, 6), "seg": torch.randn(2, 4, 5)}
    out = objective.forward(model, modules, batch)
    assert set(out.predictions) == {"depth_layer1", "seg_layer1", "seg_layer2"}
    assert out.predictions["seg_layer2"].shape == (2, 4, 5)
    assert out.loss.item() == pytest.approx(out.loss_terms["ntp"].item() + out.embedding_loss.item(), rel=1e-6)
    named = {**{f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad},
             **{f"modules.{n}": p for n, p in modules.named_parameters()}}
    grads = torch.autograd.grad(out.embedding_loss, list(named.values()), allow_unused=True)
    reached = {name for (name, _), g in zip(named.items(), grads) if g is not None and g.abs().sum() > 0}
    llm = "model.language_model.model."
    assert {n for n in reached if n.startswith(llm + "layers.")} == {
        n for n in named if n.startswith((llm + "layers.0.", llm + "layers.1."))}
    assert not any(n.startswith((llm + "layers.2.", llm + "norm")) for n in reached)
    for prefix in ("model.task_tokens.queries.depth", "model.task_tokens.queries.seg", "model.projector.",
                   "model.visual.", llm + "embed_tokens", "modules.embedding_predictors.predictors.depth_layer1.",
                   "modules.embedding_predictors.predictors.seg_layer2.", "modules.embedding_predictors.logit_scale"):
        assert any(n.startswith(prefix) for n in reached), prefix


# ------------------------------------------------------------------------------------- experts
def test_transformers_experts_give_their_models_own_outputs(tmp_path):
    """A CLIP-style encoder's `image_embeds` (one token), and a DINOv2's mean of two hidden layers with its CLS token
    dropped, pooled to 2x2 — the same values as the models' own outputs, reduced by hand."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, image_size=32, patch_size=8,
                                                          projection_dim=12))
    dino = Dinov2Model(Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                    image_size=32, patch_size=8))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    for name, model in (("clip", clip), ("dino", dino)):
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    images = [PIL.Image.fromarray(photo("astronaut")), PIL.Image.fromarray(photo("rocket"))]
    pixels = processor(images=images, return_tensors="pt")
    gen = EmbeddingExpert(ExpertSpec("gen", [1], queries=8, model=str(tmp_path / "clip"), output="image_embeds",
                                     grid=None))
    with torch.no_grad():
        torch.testing.assert_close(gen(images), clip(**pixels).image_embeds[:, None])
        hidden = dino(**pixels, output_hidden_states=True).hidden_states
    spec = ExpertSpec("depth", [1], queries=4, model=str(tmp_path / "dino"), output="hidden_states",
                      output_layers=[-2, -1], prefix_tokens=1, grid=2)
    expected = ((hidden[-2] + hidden[-1]) / 2)[:, 1:].reshape(2, 4, 4, 16)  # 4x4 patches
    expected = expected.view(2, 2, 2, 2, 2, 16).mean((2, 4)).reshape(2, 4, 16)  # 2x2 average pooling
    out = EmbeddingExpert(spec)(images)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in EmbeddingExpert(spec).model.parameters())


def test_in_run_expert_targets_are_cached_on_the_expert_s_weights_not_its_path(tmp_path):
    """A dataset read from disk caches `add_expert_embeddings`' map: replacing the expert folder (same path, other
    weights) must give the new expert's targets, not the cached ones of the old expert."""
    from datasets import load_from_disk
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from versavit_trainer.data.experts import add_expert_embeddings

    images = [PIL.Image.fromarray(photo("astronaut")), PIL.Image.fromarray(photo("rocket"))]
    Dataset.from_dict({"image": images}).save_to_disk(str(tmp_path / "rows"))
    folder = tmp_path / "expert"
    spec = ExpertSpec("gen", [1], queries=8, model=str(folder), output="image_embeds", grid=None)
    targets = []
    for seed in (0, 1):  # the same folder, written twice with other weights
        torch.manual_seed(seed)
        CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, image_size=32, patch_size=8,
                                                       projection_dim=12)).save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
        rows = add_expert_embeddings(load_from_disk(str(tmp_path / "rows")), [spec])
        targets.append(torch.tensor(np.asarray(rows["gen_embeds"]), dtype=torch.float32))
        torch.testing.assert_close(targets[-1], EmbeddingExpert(spec)(images))  # this expert's own targets
    assert not torch.allclose(targets[0], targets[1])


def test_a_depth_anything_expert_gives_the_layers_its_dpt_head_reads(tmp_path):
    """VisPer-LM's depth target: the mean of the DINOv2 layers a Depth Anything's DPT head reads, CLS dropped."""
    from transformers import CLIPImageProcessor, DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2,
                            image_size=28, patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone.to_dict(), reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8, head_hidden_size=8))
    processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    images = [PIL.Image.fromarray(photo("coffee")), PIL.Image.fromarray(photo("chelsea"))]
    spec = ExpertSpec("depth", [1], queries=4, model=str(tmp_path), output="hidden_states", output_layers=[2, 4],
                      prefix_tokens=1, grid=2)
    with torch.no_grad():
        hidden = model(**processor(images=images, return_tensors="pt"), output_hidden_states=True).hidden_states
    torch.testing.assert_close(EmbeddingExpert(spec)(images), ((hidden[2] + hidden[4]) / 2)[:, 1:])
    with pytest.raises(ConfigError, match="returns no 'image_embeds'"):
        EmbeddingExpert(ExpertSpec("depth", [1], queries=8, model=str(tmp_path), output="image_embeds"))(images)


def test_versavit_experts_read_their_heads(dense_checkpoint):
    """The library's own depth and referring models as experts: the DPT neck's finest fused map (pooled) and the
    SAM neck's image embeddings — equal to the heads' own intermediate results."""
    from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation, fixed_size_pixels

    images = [PIL.Image.fromarray(photo("astronaut")), PIL.Image.fromarray(photo("coffee"))]
    seg = EmbeddingExpert(ExpertSpec("seg", [1], queries=4, model=str(dense_checkpoint),
                                     output="segmentation_embeddings", grid=2, size=56))
    depth = EmbeddingExpert(ExpertSpec("depth", [1], queries=4, model=str(dense_checkpoint), output="depth_features",
                                       grid=2, size=56))
    segmenter = VersaViTForReferringSegmentation.from_pretrained(dense_checkpoint).eval()
    estimator = VersaViTForDepthEstimation.from_pretrained(dense_checkpoint).eval()
    inputs = fixed_size_pixels(images, 56, seg.processor)
    with torch.no_grad():
        embeddings = segmenter(**inputs, text_embeds=torch.zeros(2, segmenter.config.text_embed_dim)).image_embeddings
        maps = estimator.get_dense_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                            estimator.config.depth_layer_indices)
        fused = estimator.depth_head.fused_features(maps)
        # the fused map is what the depth head decodes: its output from it equals the model's prediction
        decoded = estimator.depth_head.head(estimator.depth_head._neck(maps), 4, 4)
        torch.testing.assert_close(decoded, estimator(**inputs).predicted_depth)
    flat = lambda m: m.flatten(2).transpose(1, 2)  # noqa: E731
    torch.testing.assert_close(seg(images), pool_tokens(flat(embeddings), 2))
    torch.testing.assert_close(depth(images), pool_tokens(flat(fused), 2))
    # a tower without the head (the run's backbone/ folder) is not a depth expert, rather than a random one
    with pytest.raises(ValueError, match="has no depth weights"):
        EmbeddingExpert(ExpertSpec("x", [1], queries=4, model=str(dense_checkpoint.parent / "backbone"),
                                   output="depth_features", grid=2))


# ------------------------------------------------------------------------------------- the curriculum, end to end
def tiny_experts(expert: Path) -> dict:
    common = {"model": str(expert), "llm_layers": [1], "queries": 4, "grid": 2, "size": 56}
    return {"depth": {**common, "output": "depth_features"}, "seg": {**common, "output": "segmentation_embeddings"}}


def visper_config(folder: Path, tiny_llm: Path, expert: Path, **overrides) -> Path:
    """VisPer-LM's two stages on the tiny fixtures: pre-training (projector, predictors and task tokens, with the
    coupled loss), then instruction tuning (projector and LLM, next-token loss only)."""
    stages = [
        {"name": "pretrain", "objectives": {"distillation": {}}, "max_steps": 3,
         "train": {"projector": 1e-3, "embedding_predictors": 1e-3, "task_tokens": 1e-3}},
        {"name": "ift", "objectives": {"captioning": {}}, "max_steps": 2,
         "train": {"projector": 1e-4, "language_model": 1e-4}},
    ]
    settings = dict(tasks=["captioning"], stages=stages, distillation_experts=tiny_experts(expert),
                    distillation_num_task_tokens=2, distillation_batch_size=2, num_scenes=6, num_eval_scenes=2,
                    save_steps=1, panel_samples=0)
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_run_config(folder, tiny_llm, **{**settings, **overrides})


def logged(run: Path, stage: str) -> list[dict]:
    return [entry for entry in json.loads((run / stage / "log_history.json").read_text()) if "loss" in entry]


@pytest.fixture(scope="module")
def in_run(tmp_path_factory, tiny_llm, dense_checkpoint):
    folder = tmp_path_factory.mktemp("visper")
    summary = load_recipe("multitask").main(["--config", str(visper_config(folder, tiny_llm, dense_checkpoint))])
    return folder / "run", summary


def test_the_curriculum_trains_what_each_stage_says_and_freezes_the_task_tokens(in_run, tiny_llm):
    run, summary = in_run
    assert summary["stages"]["pretrain"]["steps"] == 3 and summary["stages"]["ift"]["steps"] == 2
    pretrain = load_file(run / "pretrain" / "trained_parts.safetensors")
    ift = load_file(run / "ift" / "trained_parts.safetensors")
    assert {key.split(".")[0] for key in pretrain} == {"projector", "task_tokens", "embedding_predictors"}
    assert {key.split(".")[0] for key in ift} == {"projector", "language_model"}
    final = load_file(run / "final" / "model.safetensors")
    tokens = [key for key in final if key.startswith("task_tokens.")]
    assert sorted(tokens) == ["task_tokens.queries.depth", "task_tokens.queries.seg"]
    for key in tokens:  # trained in pre-training, bit-identical through instruction tuning
        assert torch.equal(final[key], pretrain[key]), key
    assert not any(key.startswith("embedding_predictors.") for key in final)  # training-only parts stay out
    llm = load_file(tiny_llm / "model.safetensors")
    assert not torch.equal(final["language_model.model.layers.0.mlp.up_proj.weight"],
                           llm["model.layers.0.mlp.up_proj.weight"])  # instruction tuning trained the LLM
    first = logged(run, "pretrain")[0]
    for expert in ("depth", "seg"):
        for term in ("smooth_l1", "contrastive"):
            assert math.isfinite(first[f"distillation/{expert}/layer1/{term}"])
        assert first[f"distillation/{expert}/logit_scale"] == pytest.approx(math.exp(2.0))
    assert first["loss_distillation"] == pytest.approx(first["distillation/ntp"] + first["distillation/embedding"],
                                                       rel=1e-5)
    assert "distillation/ntp" not in logged(run, "ift")[0] and "loss_captioning" in logged(run, "ift")[0]
    # the exported MLLM keeps its task tokens after every image, without experts or predictors
    model = VersaViTForCaptioning.from_pretrained(run / "final")
    processor = VersaViTCaptioningProcessor.from_pretrained(run / "final")
    assert processor.num_task_tokens == 4 and model.num_sequence_task_tokens == 4
    prompt = processor([PIL.Image.fromarray(photo("coffee"))], prompts=["What is it?"])
    assert model.generate(**prompt, max_new_tokens=2, do_sample=False).shape == (1, 2)
    assert set(summary["held_out"]["after"]) == {"captioning"}


def test_a_run_resumed_in_pretraining_equals_the_uninterrupted_one(in_run, tiny_llm, dense_checkpoint, tmp_path):
    """Killed after checkpoint-2 of pre-training: --resume continues it (predictors, task tokens, optimizer) and runs
    instruction tuning; every weight and logged loss as uninterrupted."""
    import shutil

    out, _ = in_run
    interrupted = tmp_path / "run"
    shutil.copytree(out, interrupted)
    shutil.rmtree(interrupted / "pretrain" / "checkpoint-3")
    for name in ("trained_parts.safetensors", "stage.json", "log_history.json"):
        (interrupted / "pretrain" / name).unlink()
    for name in ("ift", "final", "backbone", "summary.json"):
        path = interrupted / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = load_recipe("multitask").main(["--config", str(visper_config(tmp_path, tiny_llm, dense_checkpoint)),
                                             "--resume"])
    assert resumed["stages"]["pretrain"]["steps_this_run"] == 1
    expected = load_file(out / "ift" / "checkpoint-2" / "model.safetensors")
    again = load_file(interrupted / "ift" / "checkpoint-2" / "model.safetensors")
    assert set(again) == set(expected) and any(key.startswith("embedding_predictors.") for key in expected)
    for key, value in expected.items():
        assert torch.equal(value, again[key]), key
    for stage in ("pretrain", "ift"):
        assert logged(interrupted, stage) == logged(out, stage), stage


def embed_offline(folder: Path, experts_file: Path, *extra) -> dict:
    return load_recipe("embed_experts").main(["--experts", str(experts_file), "--output_dir", str(folder),
                                              "--num_scenes", "6", "--shard_size", "2", "--num_task_tokens", "2",
                                              *extra])


def test_the_offline_cache_resumes_and_trains_as_the_in_run_mode(tmp_path, tiny_llm, dense_checkpoint, in_run,
                                                                   monkeypatch):
    import yaml

    experts_file = tmp_path / "experts.yaml"
    experts_file.write_text(yaml.safe_dump({"distillation_experts": tiny_experts(dense_checkpoint)}))
    straight = embed_offline(tmp_path / "straight", experts_file)
    assert straight["labelled"] == 6 and straight["shards"] == 3
    calls, real = [0], EmbeddingExpert.__call__

    def dies_in_the_second_shard(self, images):
        calls[0] += 1
        if calls[0] > 4:  # two experts: two calls size the columns, two embed shard 0; shard 1 dies
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(EmbeddingExpert, "__call__", dies_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        embed_offline(tmp_path / "cache", experts_file)
    monkeypatch.setattr(EmbeddingExpert, "__call__", real)
    resumed = embed_offline(tmp_path / "cache", experts_file)
    assert resumed["shards_resumed"] == 1 and resumed["labelled"] == 6
    from versavit_trainer.data.labelling import load_labelled

    cached, reference = load_labelled(tmp_path / "cache"), load_labelled(tmp_path / "straight")
    for column in ("depth_embeds", "seg_embeds"):
        assert np.array_equal(np.asarray(cached[column]), np.asarray(reference[column]))
    # training from the cache: the same losses as embedding in the run (the same scenes, the same experts)
    run = tmp_path / "offline"
    load_recipe("multitask").main(["--config", str(visper_config(run, tiny_llm, Path("/unused"),
                                                                 distillation_data=str(tmp_path / "cache")))])
    in_run_dir, _ = in_run
    for online, offline in zip(logged(in_run_dir, "pretrain"), logged(run / "run", "pretrain"), strict=True):
        assert offline["loss"] == pytest.approx(online["loss"], rel=1e-5)


def test_rows_with_non_finite_targets_are_skipped_and_counted(tmp_path, tiny_llm, dense_checkpoint):
    import yaml

    from versavit_trainer.data.labelling import load_labelled

    experts_file = tmp_path / "experts.yaml"
    experts_file.write_text(yaml.safe_dump(tiny_experts(dense_checkpoint)))  # the mapping itself
    embed_offline(tmp_path / "cache", experts_file)
    data = load_labelled(tmp_path / "cache")
    rows = data.to_list()
    rows[1]["seg_embeds"] = np.full((4, 32), np.nan, np.float32).tolist()
    Dataset.from_list(rows, features=data.features).save_to_disk(str(tmp_path / "bad"))
    stages = [{"name": "pretrain", "objectives": {"distillation": {}}, "max_steps": 3,
               "train": {"projector": 1e-3, "embedding_predictors": 1e-3, "task_tokens": 1e-3}}]
    load_recipe("multitask").main(["--config", str(visper_config(tmp_path / "run", tiny_llm, Path("/unused"),
                                                                 stages=stages, distillation_data=str(tmp_path / "bad"),
                                                                 num_eval_scenes=0))])
    entries = logged(tmp_path / "run" / "run", "pretrain")
    assert sum(entry["skipped_samples"] for entry in entries) >= 1
    assert all(math.isfinite(entry["loss"]) for entry in entries)


@pytest.mark.e2e
def test_two_ddp_processes_match_one_process(tmp_path, tiny_llm, dense_checkpoint):
    """Pre-training with the coupled objective on 2 CPU processes (1 sample each) gives the weights of 1 process
    with batches of 2: the contrastive term's negatives are every process's targets (gathered), and every caption has
    the same length, so the per-process next-token means average to the one-process mean."""
    import test_multitask_recipe as recipe_tests

    from versavit_trainer.data.experts import add_expert_embeddings
    from versavit_trainer.data.scene_tables import scene_datasets
    from versavit_trainer.data.scenes import CAPTION_PROMPT

    rows = scene_datasets(4, None)["captioning"]
    rows = rows.map(lambda _: {"texts": [{"user": CAPTION_PROMPT, "assistant": "A checkered floor."}]},
                    features=rows.features)
    specs = parse_experts(tiny_experts(dense_checkpoint), 2)
    add_expert_embeddings(rows, specs).save_to_disk(str(tmp_path / "data"))
    stages = [{"name": "pretrain", "objectives": {"distillation": {"data": str(tmp_path / "data")}}, "max_steps": 2,
               "train": {"projector": 1e-3, "embedding_predictors": 1e-3, "task_tokens": 1e-3}}]
    settings = dict(stages=stages, num_eval_scenes=0, save_strategy="no", report_to="none", adam_epsilon=1e-2,
                    max_grad_norm=0.0, lr_scheduler_type="constant", warmup_steps=0)
    one = visper_config(tmp_path / "one", tiny_llm, dense_checkpoint, distillation_batch_size=2, **settings)
    load_recipe("multitask").main(["--config", str(one)])
    two = visper_config(tmp_path / "two", tiny_llm, dense_checkpoint, distillation_batch_size=1, **settings)
    recipe_tests.launch("ddp.yaml", two)
    single = load_file(tmp_path / "one" / "run" / "pretrain" / "trained_parts.safetensors")
    double = load_file(tmp_path / "two" / "run" / "pretrain" / "trained_parts.safetensors")
    assert single.keys() == double.keys() and any(key.startswith("embedding_predictors.") for key in single)
    for key, value in single.items():
        torch.testing.assert_close(double[key], value, rtol=2e-5, atol=2e-6, msg=key)
    summary = json.loads((tmp_path / "two" / "run" / "summary.json").read_text())
    assert summary["stages"]["pretrain"]["world_size"] == 2


# ------------------------------------------------------------------------------------- method, configs, questions
def test_the_shipped_configs_follow_the_method(capsys):
    """Both VisPer-LM configs: pre-training trains the projector, predictors and task tokens on the coupled
    objective, instruction tuning the projector and LLM on next-token prediction; the tower never trains. The paper
    config sizes its run on the meta device."""
    from versavit_trainer.config import load_config_file
    from versavit_trainer.methods.visper import CONFIGS, VISPER_STAGES, visper_run_options

    for name in ("visper_default.yaml", "visper_llava15.yaml"):
        config = load_config_file(CONFIGS / name)
        assert [stage["name"] for stage in config["stages"]] == list(VISPER_STAGES), name
        for stage in config["stages"]:
            parts, objectives = VISPER_STAGES[stage["name"]]
            assert set(stage["train"]) == set(parts) and tuple(stage["objectives"]) == objectives, name
        experts = parse_experts(config["distillation_experts"], config["distillation_num_task_tokens"])
        assert all(spec.weight == 0.5 for spec in experts) and config["distillation_contrastive_weight"] == 0.3
    assert visper_run_options()["stages"] == load_config_file(CONFIGS / "visper_default.yaml")["stages"]
    report = load_recipe("multitask").main(["--config", str(CONFIGS / "visper_llava15.yaml"), "--dry_run"])
    sizes = {row["part"]: row["params_m"] for row in report["parameters"]}
    assert 7900 < sizes["language_model"] < 8100 and report["allocated_parameters"] == 0  # Llama-3-8B


def test_spatial_questions_have_the_answers_the_rendered_scene_gives():
    """Depth order from the rendered depth of each object's pixels, left / right from their mean column, counts
    from the objects: every answer of 20 cluttered scenes, and both answers of each kind occur."""
    from versavit_trainer.data.scenes import (
        NUMBERS,
        PLURALS,
        SPATIAL_COUNT,
        SPATIAL_DEPTH,
        SPATIAL_RELATION,
        generate_scene,
    )

    answers = {SPATIAL_DEPTH: set(), SPATIAL_RELATION: set()}
    for seed in range(20):
        scene = generate_scene(seed, style="cluttered")
        masks = dict(scene.expressions)
        for question, answer in scene.texts["spatial"]:
            if question.startswith(SPATIAL_DEPTH):
                first, second = re.fullmatch(r".*: (.+) or (.+)\? Answer first or second\.", question).groups()
                near = [float(np.median(scene.depth[masks[text]])) for text in (first, second)]
                assert abs(near[0] - near[1]) >= 0.5
                assert answer == ("first" if near[0] < near[1] else "second")
                answers[SPATIAL_DEPTH].add(answer)
            elif question.startswith(SPATIAL_RELATION):
                first, second = re.fullmatch(r".*: where is (.+) compared to (.+)\?", question).groups()
                cols = [np.nonzero(masks[text])[1].mean() for text in (first, second)]
                assert answer == ("left" if cols[0] < cols[1] else "right")
                answers[SPATIAL_RELATION].add(answer)
            else:
                assert question.startswith(SPATIAL_COUNT)
                shape = next(s for s, plural in PLURALS.items() if f" {plural} " in question)
                assert answer == NUMBERS[sum(o.shape == shape for o in scene.objects)]
    assert answers == {SPATIAL_DEPTH: {"first", "second"}, SPATIAL_RELATION: {"left", "right"}}


def test_layer_probes_rank_a_layer_that_holds_the_target_above_one_that_does_not():
    """The probe of a layer whose states hold a linear map of the target tokens (with each position's code, as an
    LLM's hidden states carry their position) scores near 1; one of a layer of noise scores far lower (on held-out
    images)."""
    from versavit_trainer.evaluation.llm_probes import LayerProbeSettings, train_probe

    torch.manual_seed(0)
    targets = torch.randn(80, 4, 6)
    mix, positions = torch.randn(6, 16), 3 * torch.randn(7, 16)
    informative = [torch.cat([t @ mix, torch.randn(3, 16)]) + positions for t in targets]  # 4 target tokens + 3
    noise = [torch.randn(7, 16) + positions for _ in targets]
    settings = LayerProbeSettings(steps=300, batch_size=16, learning_rate=3e-3)
    good = train_probe(informative[:60], targets[:60], informative[60:], targets[60:], settings)
    bad = train_probe(noise[:60], targets[:60], noise[60:], targets[60:], settings)
    assert good > 0.8 and bad < 0.3, (good, bad)


def test_the_probe_recipe_plots_every_layer_of_each_model(tmp_path, tokenizer, dense_checkpoint):
    import yaml

    folders = {}
    for name, seed in (("a", 0), ("b", 1)):
        model, processor = tiny_captioner(tokenizer, seed=seed, llm_layers=2)
        model.save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
        folders[name] = tmp_path / name
    experts = tmp_path / "experts.yaml"
    experts.write_text(yaml.safe_dump(tiny_experts(dense_checkpoint)))
    results = load_recipe("probe_llm_layers").main([
        "--experts", str(experts), "--models", *(f"{k}={v}" for k, v in folders.items()), "--train_scenes", "8",
        "--eval_scenes", "4", "--steps", "3", "--output_dir", str(tmp_path / "out")])
    assert set(results) == {"a", "b"} and set(results["a"]) == {"depth", "seg"}
    assert set(results["a"]["depth"]) == {1, 2} and all(-1 <= v <= 1 for v in results["b"]["seg"].values())
    assert (tmp_path / "out" / "layer_probes.png").is_file()
    assert json.loads((tmp_path / "out" / "probes.json").read_text())["a"]["seg"].keys() == {"1", "2"}
    with pytest.raises(ValueError, match="NAME=FOLDER"):
        load_recipe("probe_llm_layers").main(["--experts", str(experts), "--models", str(folders["a"])])


def test_pruned_runs_keep_their_tower_and_dense_heads_as_an_expert(tmp_path, dense_checkpoint):
    import shutil

    from versavit_trainer.evaluation.ground_runs import prune

    run = tmp_path / "run"
    shutil.copytree(dense_checkpoint, run / "final")
    prune(run)
    assert not (run / "final").exists()
    images = [PIL.Image.fromarray(photo("astronaut"))]
    for output in ("depth_features", "segmentation_embeddings"):
        kept = EmbeddingExpert(ExpertSpec("x", [1], queries=4, model=str(run / "dense"), output=output, grid=2,
                                          size=56))
        original = EmbeddingExpert(ExpertSpec("x", [1], queries=4, model=str(dense_checkpoint), output=output,
                                              grid=2, size=56))
        torch.testing.assert_close(kept(images), original(images))
