"""SAILViT as a method of the library (trainer/methods/sailvit.py): the scenes' staged texts, the cross-modal
contrastive objective against a plainly written reference, the shipped curriculum trained stage by stage (each stage
trains exactly its parts on its own data, resumed in the middle of each stage), and the refined tower attached to
another LLM bit for bit."""

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import load_recipe, tiny_config, tiny_run_config
from safetensors.torch import load_file
from test_curriculum import assert_changed

import versavit_trainer.core.curriculum as curriculum
from modeling_versavit import VersaViTConfig, VersaViTForCaptioning, VersaViTForImageTextRetrieval, VersaViTForMultiTask
from versavit_trainer.config import ConfigError, load_config_file
from versavit_trainer.core.arguments import MultiTaskTrainingArguments
from versavit_trainer.core.curriculum import parse_stages
from versavit_trainer.core.options import DataArguments, check_input_sizes
from versavit_trainer.data.scene_tables import scene_datasets
from versavit_trainer.data.scenes import NUMBERS, SCENE_TEXTS, SHORT_PROMPT, generate_scene
from versavit_trainer.methods.sailvit import SAILVIT_STAGES, sailvit_run_options
from versavit_trainer.objectives import ObjectiveContext, get_objective
from versavit_trainer.objectives.contrastive import ContrastiveCollator

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "recipes" / "configs"


# ------------------------------------------------------------------------------------------------ scene texts
def test_staged_texts_say_what_the_scene_shows_and_leave_the_other_fields_alone():
    for seed in range(6):
        scene = generate_scene(seed, style="cluttered")
        again = generate_scene(seed, style="cluttered")
        assert scene.texts == again.texts and set(scene.texts) == set(SCENE_TEXTS)
        # "default" is what every VersaViT run trained on before: the caption, then the questions
        assert scene.texts["default"] == [("Describe the image.", scene.caption), *scene.qa]
        (prompt, short), = scene.texts["short"]
        assert prompt == SHORT_PROMPT and "checkered floor" in short
        detailed = dict(scene.texts["detailed"][1:])
        count = len(scene.objects)
        assert detailed["How many objects are there?"] == (NUMBERS[count] if count < len(NUMBERS) else str(count))
        height, width = scene.instances.shape
        for text, mask in scene.expressions:
            rows, cols = np.nonzero(mask)
            box = (cols.min() * 1000 // width, rows.min() * 1000 // height, cols.max() * 1000 // width,
                   rows.max() * 1000 // height)
            assert detailed[f"Give the bounding box of {text}."] == "({},{}),({},{})".format(*box)
        for obj in scene.objects:  # every object, with its place, in the detailed caption
            assert f"a {obj.size} {obj.color} {obj.material} {obj.shape} " in scene.texts["detailed"][0][1]
        instructions = dict(scene.texts["instructions"])
        nearest = min(scene.objects, key=lambda o: o.z)
        assert instructions["Which object is closest to the camera?"] == \
            f"the {nearest.size} {nearest.color} {nearest.material} {nearest.shape}"


def test_scene_datasets_hold_the_asked_conversations_and_contrastive_pairs():
    def embed(texts):
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])

    tables = scene_datasets(3, embed, seed=5, texts="detailed", extra_tables=("contrastive",))
    for k in range(3):
        scene = generate_scene(5 + k)
        turns = [(t["user"], t["assistant"]) for t in tables["captioning"][k]["texts"]]
        assert turns == scene.texts["detailed"]
        row = tables["contrastive"][k]
        assert row["caption"] == scene.texts["detailed"][0][1]
        assert row["text_embeds"] == [float(len(row["caption"]))] * 4
    assert "contrastive" not in scene_datasets(1, embed, seed=5)  # only when asked: embedding captions costs
    instructions = scene_datasets(1, embed, seed=5, texts="instructions", extra_tables=("contrastive",))
    assert instructions["contrastive"][0]["caption"] == generate_scene(5).caption  # a caption, not an answer
    with pytest.raises(ValueError, match=r"texts: expected one of \['default', 'short', 'detailed', 'instructions', "
                                         r"'spatial'\], got 'long'"):
        scene_datasets(1, None, texts="long")


# ------------------------------------------------------------------------------------------------ contrastive
@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_the_contrastive_objective_equals_a_plainly_written_reference(kind):
    """The objective's loss on a tiny model with random images and texts equals: each image's tokens pooled alone
    by the head's attention (one query, no padding), layer norm, MLP, L2-normalised; texts projected and normalised;
    then SigLIP's -1/B sum_ij log sigmoid(z_ij (t cos_ij + b)) or CLIP's mean of the two cross-entropies."""
    torch.manual_seed(0)
    config = tiny_config(retrieval_loss=kind, retrieval_embed_dim=16, retrieval_pooling_heads=2,
                         retrieval_text_embed_dim=6)
    model = VersaViTForMultiTask(config).eval()
    objective = get_objective("contrastive")
    head = objective.modules(model)["retrieval_head"]
    assert head.logit_scale.item() == pytest.approx(math.log(10.0) if kind == "sigmoid" else math.log(1 / 0.07))
    with torch.no_grad():
        head.probe.normal_()  # away from its small init, so that the pooling weights differ per token
    rows = [{"image": PIL_image(seed), "caption": f"scene {seed}", "text_embeds": torch.randn(6).tolist()}
            for seed in range(4)]
    batch = ContrastiveCollator(56, 6)(rows)
    output = objective.forward(model, {"retrieval_head": head}, batch)

    with torch.no_grad():
        tokens = model.get_last_hidden_state(batch["pixel_values"], batch["image_grid_thw"])
        images = []
        for own in tokens.split(batch["image_grid_thw"].prod(-1).tolist()):
            pooled, _ = head.attention(head.probe, own[None], own[None])
            vector = head.mlp(head.layernorm(pooled[0, 0]))
            images.append(vector / vector.norm())
        texts = [head.text_projection(t) / head.text_projection(t).norm() for t in batch["text_embeds"]]
        scale = head.logit_scale.exp().item()
        cos = [[float(images[i] @ texts[j]) for j in range(4)] for i in range(4)]
        if kind == "sigmoid":
            bias = head.logit_bias.item()
            expected = sum(math.log(1 + math.exp(-(1 if i == j else -1) * (scale * cos[i][j] + bias)))
                           for i in range(4) for j in range(4)) / 4
        else:
            def cross_entropy(scores, target):
                return -(scores[target] - math.log(sum(math.exp(s) for s in scores)))

            rows_ = sum(cross_entropy([scale * c for c in cos[i]], i) for i in range(4)) / 4
            cols_ = sum(cross_entropy([scale * cos[i][j] for i in range(4)], j) for j in range(4)) / 4
            expected = (rows_ + cols_) / 2
    assert output.loss.item() == pytest.approx(expected, rel=1e-4)
    assert set(output.loss_terms) >= {"loss", "logit_scale", "accuracy"}
    output.loss.backward()
    assert head.logit_scale.grad is not None and head.probe.grad.abs().sum() > 0
    assert next(model.visual.blocks[0].parameters()).grad is not None  # the tower learns from it too


def PIL_image(seed: int):
    import PIL.Image

    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8))


def test_repeated_captions_among_the_contrastive_pairs_are_warned_about(caplog):
    from datasets import Dataset

    objective = get_objective("contrastive")
    with caplog.at_level(logging.WARNING):
        objective.prepare_data(Dataset.from_dict({"caption": ["a red cube.", "a blue cone."]}), None)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        objective.prepare_data(Dataset.from_dict({"caption": ["a red cube.", "a blue cone.", "a red cube."]}), None)
    assert "contrastive data: 2 distinct captions among 3 pairs; a repeated caption in a batch is one of its pair's " \
           "negatives" in caplog.text


def test_bad_contrastive_rows_and_options_fail_by_name():
    collator = ContrastiveCollator(56, 6)
    good = {"image": PIL_image(0), "caption": "a red box", "text_embeds": [0.0] * 6}
    with pytest.raises(ValueError, match=r"contrastive sample \('a red box'\): text_embeds has shape \(5,\), expected "
                                         r"\(6,\)"):
        collator([good, {**good, "text_embeds": [0.0] * 5}])
    with pytest.raises(ValueError, match="text_embeds contains NaN or inf"):
        collator.validate({**good, "text_embeds": [float("nan")] * 6})
    with pytest.raises(ValueError, match="needs at least 2 pairs"):
        collator([good])
    with pytest.raises(ValueError, match="contrastive_batch_size: must be >= 2"):
        DataArguments(contrastive_batch_size=1)
    with pytest.raises(ConfigError, match="contrastive_size: .*28"):
        check_input_sizes(DataArguments(contrastive_size=100), 28)
    training = MultiTaskTrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    bad = [{"name": "a", "objectives": {"captioning": {"data": {"num_scenes": 4, "texts": "long"}}},
            "train": {"projector": 1e-3}}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.objectives\.captioning\.data\.texts: expected one of "
                                          r"\['default', 'short', 'detailed', 'instructions', 'spatial'\], got 'long'"):
        parse_stages(bad, DataArguments(), training)
    one_pair = [{"name": "a", "objectives": {"contrastive": {"batch_size": 1}}, "train": {"retrieval_head": 1e-3}}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.objectives\.contrastive\.batch_size: must be an integer >= 2 "
                                          r"for objective 'contrastive', got 1"):
        parse_stages(one_pair, DataArguments(), training)


# ------------------------------------------------------------------------------------------------ the method
def test_the_shipped_configs_follow_the_method():
    """Both SAILViT configs train, per stage, the parts the method names (and nothing else); the embedded default reads
    the scene texts of each stage, its own seeds, and spends VersaViT's demo budget (15 + 120 steps)."""
    for name in ("sailvit_default.yaml", "sailvit_qwen2vl_7b.yaml"):
        stages = load_config_file(CONFIGS / name)["stages"]
        assert [stage["name"] for stage in stages] == list(SAILVIT_STAGES), name
        for stage in stages:
            parts, texts = SAILVIT_STAGES[stage["name"]]
            assert set(stage["train"]) == set(parts), (name, stage["name"])
            assert list(stage["objectives"]) == ["captioning"]
            data = stage["objectives"]["captioning"]["data"]
            if name == "sailvit_default.yaml":
                assert data["texts"] == texts
    default = load_config_file(CONFIGS / "sailvit_default.yaml")
    assert len({stage["objectives"]["captioning"]["data"]["scene_seed"] for stage in default["stages"]}) == 3
    demo = load_config_file(CONFIGS / "default.yaml")
    assert sum(stage["max_steps"] for stage in default["stages"]) == demo["alignment_max_steps"] + demo["max_steps"]
    assert sailvit_run_options()["stages"] == default["stages"]


@pytest.mark.parametrize(("name", "family", "tower_m"), [("sailvit_qwen2vl_7b.yaml", "qwen2_vl", (670, 680)),
                                                         ("sailvit_internvit_300m.yaml", "internvit", (300, 310))])
def test_the_scale_configs_size_their_run_without_weights(capsys, name, family, tower_m):
    """The scale configs' dry runs: Qwen2-VL-7B's tower or SAILViT's own InternViT-300M (the count of transformers'
    own tower class on the meta device), projector and Qwen3-1.7B, nothing allocated; the same three stages, reading
    dataset folders (no scenes)."""
    from transformers import CONFIG_MAPPING

    result = load_recipe("multitask").main(["--config", str(CONFIGS / name), "--dry_run"])
    parts = {row["part"]: row for row in result["parameters"]}
    assert {"visual", "projector", "language_model"} <= set(parts) and result["allocated_parameters"] == 0
    assert not {"depth_head", "segmentation_head"} & set(parts)
    assert tower_m[0] < parts["visual"]["params_m"] < tower_m[1]
    vision = load_config_file(CONFIGS / name).get("mllm_vision_config")  # (Qwen2-VL-7B's is the recipe's default)
    if vision is not None:
        vision = dict(vision)
        config = CONFIG_MAPPING[vision.pop("model_type")](**vision)
        backbone = VersaViTConfig(vision_config=config.to_dict()).backbone
        with torch.device("meta"):
            expected = sum(p.numel() for p in backbone.tower_class._from_config(config).parameters()) / 1e6
        assert backbone.name == family and parts["visual"]["params_m"] == pytest.approx(expected)
    stages = sailvit_run_options(CONFIGS / name)["stages"]
    assert stages == sailvit_run_options(CONFIGS / "sailvit_qwen2vl_7b.yaml")["stages"]
    assert all(isinstance(stage["objectives"]["captioning"]["data"], str) for stage in stages)


def sailvit_config(folder: Path, llm: Path, **overrides) -> Path:
    """The shipped SAILViT curriculum on the tiny tower and LLM: its stages, parts and per-stage texts, each stage 4
    steps on 6 scenes of its own seeds, a checkpoint every 2 steps."""
    stages = []
    for stage in sailvit_run_options()["stages"]:
        objectives = {name: {**settings, "data": {**settings["data"], "num_scenes": 6}}
                      for name, settings in stage["objectives"].items()}
        stages.append({**stage, "objectives": objectives, "max_steps": 4})
    options = dict(tasks=["captioning"], stages=stages, num_eval_scenes=2, panel_samples=0, report_to="none",
                   save_steps=2, lr_scheduler_type="constant", warmup_steps=0)
    options.update(overrides)
    return tiny_run_config(folder, llm, **options)


@pytest.fixture(scope="module")
def sailvit_run(tmp_path_factory, tiny_llm):
    """The tiny SAILViT run, uninterrupted, with the model's state before it and the data each stage got."""
    folder = tmp_path_factory.mktemp("sailvit")
    recipe = load_recipe("multitask")
    initial, data = {}, {}
    run_curriculum, stage_task_specs = recipe.run_curriculum, curriculum.stage_task_specs

    def remember_the_start(model, *args, **kwargs):
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return run_curriculum(model, *args, **kwargs)

    def remember_the_data(stage, *args, **kwargs):
        specs = stage_task_specs(stage, *args, **kwargs)
        data[stage.name] = {spec.name: spec.dataset for spec in specs}
        return specs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "run_curriculum", remember_the_start)
        patch.setattr(curriculum, "stage_task_specs", remember_the_data)
        summary = recipe.main(["--config", str(sailvit_config(folder, tiny_llm))])
    return {"folder": folder, "out": folder / "run", "initial": initial, "data": data, "summary": summary}


def test_each_stage_trains_exactly_its_parts_on_its_own_data(sailvit_run):
    out, initial = sailvit_run["out"], sailvit_run["initial"]
    states = [load_file(out / stage / "checkpoint-4" / "model.safetensors") for stage in SAILVIT_STAGES]
    states.insert(0, {k: v for k, v in initial.items() if k in states[0]})  # a tied LLM head is saved once
    every = {"visual", "merger", "projector", "language_model"}
    changed = {"coarse_alignment": {"projector"}, "fine_alignment": {"visual", "projector"},
               "knowledge": {"visual", "projector", "language_model"}}
    for (name, (parts, texts)), before, after in zip(SAILVIT_STAGES.items(), states, states[1:]):
        assert_changed(before, after, changed=changed[name], unchanged=every - changed[name])
        record = json.loads((out / name / "stage.json").read_text())
        assert set(record["learning_rates"]) == set(parts), name
        # the stage's own data: its scene seeds and conversations
        rows = sailvit_run["data"][name]["captioning"]
        stage = next(s for s in sailvit_run_options()["stages"] if s["name"] == name)
        seed = stage["objectives"]["captioning"]["data"]["scene_seed"]
        for k in range(len(rows)):
            expected = generate_scene(seed + k).texts[texts]
            assert [(t["user"], t["assistant"]) for t in rows[k]["texts"]] == expected, (name, k)
    summary = sailvit_run["summary"]
    before, after = summary["held_out"]["before"]["captioning"], summary["held_out"]["after"]["captioning"]
    assert after["tokens"] == before["tokens"] > 0 and math.isfinite(after["answer_loss"])


@pytest.mark.parametrize("stage", list(SAILVIT_STAGES))
def test_a_run_resumed_in_the_middle_of_a_stage_equals_the_uninterrupted_one(sailvit_run, tiny_llm, tmp_path, stage):
    """Killed after checkpoint-2 of `stage` (its later stages never started): --resume loads the finished stages,
    continues `stage` from its checkpoint and runs the rest; every weight and logged loss as uninterrupted."""
    out = sailvit_run["out"]
    names = list(SAILVIT_STAGES)
    interrupted = tmp_path / "run"
    shutil.copytree(out, interrupted)
    shutil.rmtree(interrupted / stage / "checkpoint-4")
    for name in ("trained_parts.safetensors", "stage.json", "log_history.json"):
        (interrupted / stage / name).unlink()
    for later in names[names.index(stage) + 1:]:
        shutil.rmtree(interrupted / later)
    for name in ("final", "backbone", "summary.json"):
        path = interrupted / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = load_recipe("multitask").main(["--config", str(sailvit_config(tmp_path, tiny_llm)), "--resume"])
    assert resumed["stages"][stage]["steps_this_run"] == 2
    last = names[-1]
    expected = load_file(out / last / "checkpoint-4" / "model.safetensors")
    again = load_file(interrupted / last / "checkpoint-4" / "model.safetensors")
    assert set(again) == set(expected)
    for key, value in expected.items():
        assert torch.equal(value, again[key]), key

    def losses(folder):
        history = json.loads((folder / "log_history.json").read_text())
        return [{k: v for k, v in e.items() if k.startswith("loss")} for e in history if "loss" in e]

    for name in names:
        assert losses(interrupted / name) == losses(out / name), name


def test_the_refined_tower_attaches_to_another_llm_bit_for_bit(sailvit_run, tmp_path):
    """sailvit_attach.yaml with a different LLM (a tiny Qwen2, not the Llama the tower was refined with): a fresh
    projector, the tower frozen; backbone/ and the new MLLM's tower equal the refined tower bit for bit."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from versavit_trainer.data.assets import smollm2_path

    other = tmp_path / "other_llm"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(1)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)).save_pretrained(other)
    tokenizer.save_pretrained(other)
    refined = sailvit_run["out"] / "backbone"
    attach = load_config_file(CONFIGS / "sailvit_attach.yaml")
    stages = [{**stage, "max_steps": 2, "objectives": {"captioning": {
        **stage["objectives"]["captioning"], "data": {**stage["objectives"]["captioning"]["data"], "num_scenes": 4}}}}
        for stage in attach["stages"]]
    config = tmp_path / "attach.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(CONFIGS / "sailvit_attach.yaml"), "output_dir": str(tmp_path / "attached"),
        "model_name_or_path": str(refined), "language_model": str(other), "stages": stages, "num_eval_scenes": 2,
        "caption_max_pixels": 56 * 56, "max_turns": 1, "use_cpu": True, "report_to": "none", "save_strategy": "no",
        "disable_tqdm": True,
    }))
    summary = load_recipe("multitask").main(["--config", str(config)])
    assert summary["stages"]["projector_llm"]["steps"] == 2
    tower = load_file(refined / "model.safetensors")
    for folder in ("backbone", "final"):
        saved = load_file(tmp_path / "attached" / folder / "model.safetensors")
        for key, value in tower.items():
            assert torch.equal(saved[key], value), (folder, key)
    mllm = VersaViTForCaptioning.from_pretrained(tmp_path / "attached" / "final")
    assert mllm.config.text_config.model_type == "qwen2" and mllm.config.text_config.hidden_size == 48
    assert "captioning" in summary["held_out"]["after"]


def test_the_refined_tower_exports_like_any_versavit_tower(sailvit_run, tmp_path):
    """backbone/ loads with AutoModel; the Hub export of the run's tower and captioning MLLM reload equal; the swap
    into a Qwen2-VL checkpoint puts the refined tower in (its PatchMerger stays the MLLM's)."""
    from mllm_fixtures import save_tiny_mllm
    from safetensors import safe_open
    from transformers import AutoModel

    from modeling_versavit import VersaViTModel, safetensors_weight_map

    out = sailvit_run["out"]
    backbone = AutoModel.from_pretrained(out / "backbone")
    assert type(backbone) is VersaViTModel
    published = load_recipe("push_to_hub").main([
        "--model", str(out / "final"), "--repo_id", "org/sailvit", "--tasks", "backbone", "captioning",
        "--local_dir", str(tmp_path / "hub")])
    captioning = VersaViTForCaptioning.from_pretrained(published["captioning"])
    source = VersaViTForCaptioning.from_pretrained(out / "final")
    for name, value in captioning.state_dict().items():
        assert torch.equal(value, source.state_dict()[name]), name
    assert torch.equal(VersaViTModel.from_pretrained(published["backbone"]).visual.blocks[0].attn.qkv.weight,
                       backbone.visual.blocks[0].attn.qkv.weight)

    mllm = tmp_path / "qwen2_vl"
    save_tiny_mllm("qwen2_vl", mllm)
    load_recipe("swap_vision_tower").main(["--mllm", str(mllm), "--encoder", str(out / "backbone"), "--out",
                                           str(tmp_path / "swapped")])
    refined = backbone.state_dict()
    weights = safetensors_weight_map(tmp_path / "swapped")
    prefix = backbone.config.backbone.tower_prefix(weights)  # "model.visual." or "visual."
    blocks = [name for name in weights if name.startswith(prefix + "blocks.")]
    assert blocks
    for name in blocks:
        with safe_open(tmp_path / "swapped" / weights[name], framework="pt") as handle:
            assert torch.equal(handle.get_tensor(name), refined["visual." + name.removeprefix(prefix)]), name


# ------------------------------------------------------------------------------------------------ contrastive in a run
def test_the_contrastive_objective_trains_in_any_stage_and_exports_its_head(tmp_path, tiny_llm):
    """A stage of captioning + contrastive (the switch SAILViT's configs document): the retrieval head and the tower
    train, the projector too, the LLM not; its terms are logged; the head loads into VersaViTForImageTextRetrieval."""
    stages = [{"name": "aligned", "objectives": {
        "captioning": {"data": {"num_scenes": 6, "scene_seed": 3, "texts": "short"}},
        "contrastive": {"batch_size": 3, "weight": 0.5, "data": {"num_scenes": 6, "scene_seed": 3, "texts": "short"}}},
        "train": {"backbone": 1e-3, "projector": 1e-3, "retrieval_head": 1e-3}, "max_steps": 2}]
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["captioning"], stages=stages, num_eval_scenes=0,
                             panel_samples=0, report_to="none", save_steps=2, contrastive_size=56,
                             head_config={"retrieval_embed_dim": 16, "retrieval_pooling_heads": 2})
    load_recipe("multitask").main(["--config", str(config)])
    out = tmp_path / "run" / "aligned"
    state = load_file(out / "checkpoint-2" / "model.safetensors")
    assert any(k.startswith("retrieval_head.") for k in state)
    history = json.loads((out / "log_history.json").read_text())
    logged = [e for e in history if "loss" in e]
    assert logged and all({"loss_contrastive", "contrastive/logit_scale", "contrastive/accuracy"} <= set(e)
                          for e in logged)
    retrieval = VersaViTForImageTextRetrieval.from_pretrained(out / "checkpoint-2")
    assert retrieval.config.retrieval_text_embed_dim == 384  # MiniLM's width, from the run's text encoder
    for key in ("retrieval_head.probe", "retrieval_head.logit_scale", "visual.blocks.0.attn.qkv.weight"):
        assert torch.equal(retrieval.state_dict()[key], state[key]), key
    context = ObjectiveContext(DataArguments(), config=retrieval.config)
    assert get_objective("contrastive").collator(context).width == 384


def test_held_out_answer_metrics_are_the_token_loss_and_the_argmax_accuracy():
    """`evaluate_answers` (the before / after numbers of a SAILViT run) on one batch: the captioning loss the model
    itself returns, and the argmax accuracy counted by hand from the full logits of an unlabelled forward (the real
    SmolLM2, which gets some answer tokens right even from a random tower)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modeling_versavit import VersaViTModel
    from versavit_trainer.data.assets import smollm2_path
    from versavit_trainer.metrics import evaluate_answers

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_pretrained(smollm2_path(), dtype=torch.float32)
    model = VersaViTForCaptioning.from_parts(VersaViTModel(tiny_config()), llm, tokenizer).eval()
    rows = scene_datasets(3, None, seed=7, texts="instructions")["captioning"]
    context = ObjectiveContext(DataArguments(caption_max_pixels=56 * 56), tokenizer, config=model.config)
    batch = get_objective("captioning").collator(context)([rows[i] for i in range(3)])
    scores = evaluate_answers(model, [batch])
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    hits = total = 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] != -100:
                hits += int(logits[b, t].argmax() == labels[b, t + 1])
                total += 1
    assert scores["tokens"] == total > 0 and 0 < hits < total
    assert scores["answer_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert scores["token_accuracy"] == pytest.approx(hits / total)


def test_a_contrastive_folder_sets_the_head_s_text_width(tmp_path):
    """Contrastive pairs from a dataset folder (12-d embeddings, no text encoder in the run): the head is built for
    their width and trains with the tower; NaN embeddings in a row are skipped and counted."""
    from datasets import Dataset

    from versavit_trainer.data.schemas import CONTRASTIVE_FEATURES

    torch.manual_seed(0)
    rows = [{"image": PIL_image(k), "caption": f"scene {k}", "text_embeds": torch.randn(12).tolist()} for k in range(6)]
    rows[2]["text_embeds"] = [float("nan")] * 12
    Dataset.from_list(rows, features=CONTRASTIVE_FEATURES).save_to_disk(str(tmp_path / "pairs"))
    stages = [{"name": "contrastive", "objectives": {"contrastive": {"batch_size": 2, "data": str(tmp_path / "pairs")}},
               "train": {"backbone": 1e-3, "retrieval_head": 1e-3}, "max_steps": 3}]
    config = tiny_run_config(tmp_path, Path("unused"), stages=stages, num_eval_scenes=0,
                             panel_samples=0, report_to="none", save_steps=3, contrastive_size=56,
                             head_config={"retrieval_embed_dim": 16, "retrieval_pooling_heads": 2})
    summary = load_recipe("multitask").main(["--config", str(config)])
    assert summary["stages"]["contrastive"]["steps"] == 3
    retrieval = VersaViTForImageTextRetrieval.from_pretrained(tmp_path / "run" / "contrastive" / "checkpoint-3")
    assert retrieval.config.retrieval_text_embed_dim == 12
    history = json.loads((tmp_path / "run" / "contrastive" / "log_history.json").read_text())
    assert max(e.get("skipped_samples", 0) for e in history) >= 1
