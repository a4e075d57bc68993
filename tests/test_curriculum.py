"""Stage curricula and objectives from outside the package: a toy objective (tests/toy_objective.py) and a two-stage
curriculum in YAML, trained in one process and under ZeRO-2, resumed in the middle of its second stage; the paper's
VQA-evaluation curriculum from its shipped config; and the errors a bad `stages:` list gets."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QWEN2_VISION, load_recipe, tiny_run_config
from safetensors.torch import load_file
from test_multitask_recipe import launch

from modeling_versavit import VersaViTModel
from versavit_trainer.config import ConfigError
from versavit_trainer.core.arguments import MultiTaskTrainingArguments
from versavit_trainer.core.curriculum import parse_stages
from versavit_trainer.core.options import DataArguments
from versavit_trainer.methods.versavit import versavit_stages

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "tests" / "toy_objective.py"
STAGES = [
    {"name": "head_only", "objectives": {"pooled_l2": {"batch_size": 2}, "depth": None},
     "train": {"pooled_head": 1e-2, "depth_head": 1e-3}, "max_steps": 2},
    {"name": "with_backbone", "objectives": ["pooled_l2", "depth"],
     "train": {"backbone": 1e-4, "pooled_head": 3e-3, "depth_head": 1e-3}, "max_steps": 4},
]
RATES = [{"pooled_head": 1e-2, "depth_head": 1e-3}, {"backbone": 1e-4, "pooled_head": 3e-3, "depth_head": 1e-3}]


def curriculum_config(folder: Path) -> Path:
    return tiny_run_config(folder, Path("unused"), stages=STAGES,
                           num_eval_scenes=0, panel_samples=0, report_to="none", save_steps=2,
                           lr_scheduler_type="constant", warmup_steps=0)


def by_part(state: dict) -> dict[str, dict]:
    parts = {}
    for name, value in state.items():
        part = "merger" if name.startswith("visual.merger.") else name.split(".")[0]
        parts.setdefault(part, {})[name] = value
    return parts


def assert_changed(before: dict, after: dict, changed: set[str], unchanged: set[str]) -> None:
    """Bit for bit: every tensor of the `unchanged` parts equal, every parameter of the `changed` parts different."""
    old, new = by_part(before), by_part(after)
    for part in unchanged:
        for name, value in old[part].items():
            assert torch.equal(value, new[part][name]), name
    for part in changed:
        for name, value in old[part].items():
            if value.is_floating_point() and "running_" not in name:
                assert not torch.equal(value, new[part][name]), name


def test_a_toy_objective_trains_through_a_two_stage_curriculum(tmp_path, monkeypatch):
    recipe = load_recipe("multitask")
    initial = {}
    run_curriculum = recipe.run_curriculum

    def remember_the_start(model, *args, **kwargs):
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return run_curriculum(model, *args, **kwargs)

    monkeypatch.setattr(recipe, "run_curriculum", remember_the_start)
    summary = recipe.main(["--config", str(curriculum_config(tmp_path)), "--imports", str(TOY)])
    out = tmp_path / "run"
    assert {"visual.blocks.0.attn.qkv.weight", "pooled_head.weight", "depth_head.head.conv3.weight"} <= set(initial)

    # stage 1 trains the two heads only; stage 2 the backbone too (its PatchMerger stays as the MLLM had it)
    after_one = load_file(out / "head_only" / "checkpoint-2" / "model.safetensors")
    after_two = load_file(out / "with_backbone" / "checkpoint-4" / "model.safetensors")
    assert_changed(initial, after_one, changed={"pooled_head", "depth_head"}, unchanged={"visual", "merger"})
    assert_changed(after_one, after_two, changed={"visual", "pooled_head", "depth_head"}, unchanged={"merger"})
    assert set(load_file(out / "head_only" / "trained_parts.safetensors")) == {
        k for k in initial if k.startswith(("pooled_head.", "depth_head."))}

    # the learning rates that ran in each optimizer group, per stage
    for stage, rates in zip(("head_only", "with_backbone"), RATES):
        record = json.loads((out / stage / "stage.json").read_text())
        assert record["learning_rates"] == rates and record["optimizer_learning_rates"] == rates, stage
    assert summary["stages"]["with_backbone"]["steps"] == 4 and summary["stages"]["head_only"]["steps"] == 2
    history = json.loads((out / "with_backbone" / "log_history.json").read_text())
    assert all("pooled_l2/mse" in entry and "loss_depth" in entry for entry in history if "loss" in entry)
    assert type(VersaViTModel.from_pretrained(out / "backbone")) is VersaViTModel
    assert json.loads((out / "final" / "config.json").read_text())["tasks"] == ["depth"]  # the stages' heads
    assert set(load_file(out / "final" / "objective_parts.safetensors")) == {"pooled_head.weight", "pooled_head.bias"}

    # killed in the middle of stage 2 (after its checkpoint-2), resumed: the uninterrupted run's weights and losses
    interrupted = tmp_path / "interrupted"
    shutil.copytree(out, interrupted / "run")
    stage_two = interrupted / "run" / "with_backbone"
    shutil.rmtree(stage_two / "checkpoint-4")
    for name in ("trained_parts.safetensors", "stage.json", "log_history.json"):
        (stage_two / name).unlink()
    for name in ("final", "backbone"):
        shutil.rmtree(interrupted / "run" / name)
    resumed = load_recipe("multitask").main(["--config", str(curriculum_config(interrupted)), "--resume",
                                             "--imports", str(TOY)])
    assert (
        resumed["stages"]["head_only"]["steps_this_run"] == 0
        and resumed["stages"]["with_backbone"]["steps_this_run"] == 2
    )
    again = load_file(stage_two / "checkpoint-4" / "model.safetensors")
    assert set(again) == set(after_two)
    for name, value in after_two.items():
        assert torch.equal(value, again[name]), name
    losses = [{k: v for k, v in e.items() if k.startswith(("loss", "pooled_l2/"))} for e in history if "loss" in e]
    resumed_history = json.loads((stage_two / "log_history.json").read_text())
    assert [{k: v for k, v in e.items() if k.startswith(("loss", "pooled_l2/"))} for e in resumed_history
            if "loss" in e] == losses

    # the same curriculum in two processes under DeepSpeed ZeRO-2: the same parts train, at the same rates
    zero = tmp_path / "zero2"
    zero.mkdir()
    launch("zero2.yaml", curriculum_config(zero), "--imports", str(TOY))
    for stage, rates in zip(("head_only", "with_backbone"), RATES):
        record = json.loads((zero / "run" / stage / "stage.json").read_text())
        assert record["world_size"] == 2 and record["optimizer_learning_rates"] == rates, stage
    zero_one = load_file(zero / "run" / "head_only" / "checkpoint-2" / "model.safetensors")
    zero_two = load_file(zero / "run" / "with_backbone" / "checkpoint-4" / "model.safetensors")
    assert_changed(initial, zero_one, changed={"pooled_head", "depth_head"}, unchanged={"visual", "merger"})
    assert_changed(zero_one, zero_two, changed={"visual", "pooled_head", "depth_head"}, unchanged={"merger"})



def test_a_curriculum_of_a_users_objective_alone_builds_no_head_and_its_head_loads_from_final(tmp_path):
    """`tasks` unset: the model's heads are those of the stages' objectives, here none; the objective's own head is
    in `final/` beside the tower and loads back into the model the run trained."""
    from modeling_versavit import VersaViTForMultiTask
    from versavit_trainer.core.objectives_model import ObjectivesModel
    from versavit_trainer.objectives import get_objective

    stages = [{"name": "only", "objectives": ["pooled_l2"], "train": {"backbone": 1e-4, "pooled_head": 1e-2},
               "max_steps": 2}]
    config = tiny_run_config(tmp_path, Path("unused"), stages=stages, num_eval_scenes=0, panel_samples=0,
                             report_to="none", save_strategy="no")
    recipe = load_recipe("multitask")
    recipe.main(["--config", str(config), "--imports", str(TOY)])
    final = tmp_path / "run" / "final"
    assert json.loads((final / "config.json").read_text())["tasks"] == []
    assert {name.split(".")[0] for name in load_file(final / "model.safetensors")} == {"visual"}  # no unused head
    model = ObjectivesModel(VersaViTForMultiTask.from_pretrained(final), [get_objective("pooled_l2")])
    model.load_objective_parts(final)
    trained = load_file(tmp_path / "run" / "only" / "trained_parts.safetensors")
    for name, value in model.objective_modules["pooled_head"].state_dict().items():
        assert torch.equal(value, trained[f"pooled_head.{name}"]), name
    with pytest.raises(ValueError, match=r"holds the parts \{'pooled_head': 'pooled_l2'\} \(part: objective\), "
                                         r"but this model's objectives add \{\}"):
        ObjectivesModel(VersaViTForMultiTask.from_pretrained(final), []).load_objective_parts(final)

    # `tasks` names the heads of VersaViT's curriculum: with `stages:` it may only repeat what the stages train
    with pytest.raises(ConfigError, match=r"tasks: \['depth'\], but with `stages:` the model's heads are those of "
                                          r"the stages' objectives \(none: objectives of your own add their parts\); "
                                          r"leave tasks out"):
        recipe.main(["--config", str(config), "--imports", str(TOY), "--tasks", "depth"])
    with pytest.raises(ConfigError, match=r"tasks: expected distinct names among .*, got \[\]\. It names the heads "
                                          r"of VersaViT's curriculum; a run with `stages:` builds the heads of its "
                                          r"stages' objectives"):
        (tmp_path / "empty").mkdir()
        empty = tiny_run_config(tmp_path / "empty", Path("unused"), stages=stages, tasks=[])
        recipe.main(["--config", str(empty), "--imports", str(TOY)])

def test_the_vqa_evaluation_curriculum_keeps_the_encoder_frozen(tmp_path, tiny_llm):
    """recipes/configs/vqa_eval.yaml on a trained encoder: the projector alone, then projector + LLM, the encoder
    bit-identical throughout (paper §5.1(i), supplement §9.1)."""
    encoder = tmp_path / "encoder"
    torch.manual_seed(0)
    from modeling_versavit import VersaViTConfig

    VersaViTModel(VersaViTConfig(vision_config=QWEN2_VISION)).save_pretrained(encoder)
    out = tmp_path / "vqa"
    summary = load_recipe("multitask").main([
        "--config", str(ROOT / "recipes" / "configs" / "vqa_eval.yaml"), "--model_name_or_path", str(encoder),
        "--language_model", str(tiny_llm), "--output_dir", str(out), "--num_scenes", "6", "--caption_max_pixels",
        str(56 * 56), "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
    ])
    assert list(summary["stages"]) == ["projector", "projector_llm"]
    assert summary["stages"]["projector"]["optimizer_learning_rates"] == {"projector": 5e-4}
    assert summary["stages"]["projector_llm"]["learning_rates"] == {"projector": 2e-5, "language_model": 2e-5}
    final = load_file(out / "final" / "model.safetensors")
    start = load_file(encoder / "model.safetensors")
    for name, value in start.items():
        assert torch.equal(value, final[name]), name
    projector = load_file(out / "projector" / "trained_parts.safetensors")
    assert {k.split(".")[0] for k in projector} == {"projector"}
    assert all(not torch.equal(value, final[name]) for name, value in projector.items())  # stage 2 moved it
    llm = load_file(tiny_llm / "model.safetensors")
    layer = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(llm[layer], final[f"language_model.{layer}"])


def test_stage_lists_are_checked_key_by_key(tmp_path):
    data_args = DataArguments(tasks=["depth"])
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    good = {"name": "a", "objectives": ["depth"], "train": {"depth_head": 1e-3}}
    cases = [
        ([{**good, "max_stesp": 3}], r"stages\[0\]\.max_stesp: unknown key \(did you mean stages\[0\]\.max_steps\?\)"),
        (
            [{**good, "objectives": ["depht"]}],
            r"stages\[0\]\.objectives: unknown objective 'depht' \(did you mean "
            r"'depth'\?\)",
        ),
        ([{**good, "objectives": {"depth": {"wieght": 1}}}], r"stages\[0\]\.objectives\.depth\.wieght: unknown key"),
        ([{**good, "objectives": {"depth": {"weight": float("nan")}}}], r"stages\[0\]\.objectives\.depth\.weight: "),
        ([{**good, "objectives": {"depth": {"batch_size": 0}}}], r"stages\[0\]\.objectives\.depth\.batch_size: must"),
        (
            [{**good, "objectives": {"depth": {"data": {"num_scene": 3}}}}],
            r"stages\[0\]\.objectives\.depth\.data\."
            r"num_scene: unknown key",
        ),
        (
            [{**good, "train": {"depth_head": "fast"}}],
            r"stages\[0\]: part_learning_rates\.depth_head: expected a finite "
            r"rate >= 0 or 'frozen', got 'fast'",
        ),
        ([{**good, "max_steps": "ten"}], r"stages\[0\]\.max_steps: expected a int, got 'ten'"),
        ([{"name": "a", "objectives": ["depth"]}], r"stages\[0\]: say what trains"),
        ([good, good], r"stages\[1\]\.name: 'a' names two stages"),
        ([{**good, "name": "final"}], r"stages\[0\]\.name: expected a folder name"),
        ([{**good, "output_dir": "x"}], r"stages\[0\]\.output_dir: unknown key"),
    ]
    for stages, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_stages(stages, data_args, args)
    stage, = parse_stages([good], data_args, args)
    assert stage.arguments(args, tmp_path).part_learning_rates == {"depth_head": 1e-3}
    assert stage.arguments(args, tmp_path).output_dir == str(tmp_path / "a")


def test_an_objective_without_a_collator_is_refused_at_registration():
    from versavit_trainer.objectives import OBJECTIVES, Objective, register_objective

    class NoCollator(Objective):
        name = "no_collator"

    with pytest.raises(ValueError, match="objective 'no_collator' defines no collator"):
        register_objective(NoCollator)
    assert "no_collator" not in OBJECTIVES


def test_a_part_no_model_has_is_refused_before_training(tmp_path):
    stages = [{"name": "a", "objectives": ["depth"], "train": {"depth_head": 1e-3, "pooled_head": 1e-2}}]
    config = tiny_run_config(tmp_path, Path("unused"), tasks=["depth"], stages=stages, report_to="none")
    with pytest.raises(ConfigError, match=r"stage a: part_learning_rates: 'pooled_head' is not a part of this model"):
        load_recipe("multitask").main(["--config", str(config)])
    assert not (tmp_path / "run").exists()


def test_the_flags_are_the_versavit_curriculum():
    class Run:
        alignment_max_steps, alignment_num_train_epochs = 15, 1.0

    stages = versavit_stages(DataArguments(), Run())
    assert [(s.name, s.objective_names, s.training) for s in stages] == [
        ("alignment", ["captioning"], {"stage": "alignment", "max_steps": 15, "num_train_epochs": 1.0}),
        ("multitask", ["captioning", "depth", "segmentation"], {"stage": "multitask"}),
    ]
    assert [item.weight for item in stages[1].objectives] == [1 / 3] * 3


def test_input_sizes_follow_the_towers_patch_and_merge(tmp_path, tiny_llm):
    """A patch-16 tower takes inputs in multiples of 32 (patch x merge), from its config: 56 px is refused before
    anything is built; at 64 px all three objectives train, and the saved processors have the tower's patch."""
    vision = {**QWEN2_VISION, "patch_size": 16}
    settings = dict(vision_config=vision, alignment_max_steps=1, max_steps=1, num_scenes=4, num_eval_scenes=2,
                    save_strategy="no", report_to="none", panel_samples=1, caption_max_pixels=64 * 64)
    config = tiny_run_config(tmp_path, tiny_llm, **settings)
    with pytest.raises(ConfigError, match=r"depth_size: must be a positive multiple of 32 \(the tower's patch x "
                                          r"merge\), got 56"):
        load_recipe("multitask").main(["--config", str(config)])
    assert not (tmp_path / "run").exists()
    config = tiny_run_config(tmp_path, tiny_llm, depth_size=64, segmentation_size=64, **settings)
    summary = load_recipe("multitask").main(["--config", str(config)])
    assert summary["stages"]["multitask"]["steps"] == 1 and summary["held_out"]["after"]["depth"]["images"] == 2
    assert set(summary["stages"]["multitask"]["final_losses"]) == {"captioning", "depth", "segmentation"}
    for folder in ("final", "backbone"):
        saved = json.loads((tmp_path / "run" / folder / "preprocessor_config.json").read_text())
        assert saved["patch_size"] == 16 and saved["merge_size"] == 2, folder
