"""recipes/multitask.py end to end on a tiny config: every output, 2-process DDP and ZeRO-2, the dry run of the paper
config, config errors, and an interrupted run resumed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
import torch
import yaml
from conftest import TINY_HEADS, VISION_CONFIGS, load_recipe, tiny_config, tiny_run_config
from safetensors.torch import load_file
from transformers import AutoModel

from modeling_versavit import VersaViTConfig, VersaViTForDepthEstimation, VersaViTForMultiTask, VersaViTModel
from versavit_trainer.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "multitask.py"
PAPER_CONFIG = ROOT / "recipes" / "configs" / "versavit_qwen2vl_7b.yaml"
DISTRIBUTED_ENV = {
    "OMP_NUM_THREADS": "1",
    "DS_ACCELERATOR": "cpu",
    "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions"),
    "HF_HUB_OFFLINE": "1",
}


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_small_run_writes_every_output(tmp_path, tiny_llm, capsys):
    recipe = load_recipe("multitask")
    summary = recipe.main(["--config", str(tiny_run_config(tmp_path, tiny_llm))])
    out = tmp_path / "run"
    printed = capsys.readouterr().out
    for name in ("final", "backbone", "predictions", "loss_curves", "config"):
        assert summary[name] in printed and Path(summary[name]).exists(), name

    # the run summary
    saved = json.loads((out / "summary.json").read_text())
    stage = saved["stages"]["multitask"]
    assert stage["steps"] == 4 and saved["stages"]["alignment"]["steps"] == 2
    assert set(stage["final_losses"]) == {"captioning", "depth", "segmentation"}
    assert stage["steps_per_second"] > 0 and set(stage["images_per_second"]) == {"captioning", "depth", "segmentation"}
    for when in ("before", "after"):
        held_out = saved["held_out"][when]
        assert 0 <= held_out["depth"]["delta1"] <= 1 and held_out["depth"]["abs_rel"] >= 0
        assert 0 <= held_out["segmentation"]["miou"] <= 1 and held_out["depth"]["images"] == 3
    drawn = {"expression", "mask_size", "mask_pixels", "mask_sha256", "caption"}
    assert [set(row) for row in saved["panel"]] == [drawn] * 2

    # Trainer checkpoints of both stages, tensorboard events with the per-task losses; what each finished stage
    # trained: the warm-up its projector, the multi-task stage every part
    assert (out / "multitask" / "checkpoint-4" / "trainer_state.json").is_file()
    assert (out / "alignment" / "checkpoint-2").is_dir()
    assert {"train/loss_captioning", "train/loss_depth", "train/loss_segmentation"} <= tensorboard_tags(
        out / "multitask"
    )
    final = load_file(out / "final" / "model.safetensors")
    aligned = load_file(out / "alignment" / "trained_parts.safetensors")
    assert set(aligned) == {k for k in final if k.startswith("projector.")}
    multitask = load_file(out / "multitask" / "trained_parts.safetensors")
    assert {k.split(".")[0] for k in multitask} == {"visual", "projector", "language_model", "depth_head",
                                                         "segmentation_head"}
    for name, value in multitask.items():
        assert torch.equal(value, final[name]), name
    assert json.loads((out / "alignment" / "stage.json").read_text())["learning_rates"] == {"projector": 1e-3}

    # the resolved config re-runs: same keys as the options, and it records the overrides
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["max_steps"] == 4 and resolved["depth_size"] == 56 and "resume" not in resolved

    # PNGs: the panel has a row per sample, the curves are an image
    assert PIL.Image.open(out / "predictions.png").size[1] > 300
    assert PIL.Image.open(out / "loss_curves.png").size[0] > 300

    # the backbone alone: AutoModel gives a VersaViTModel equal to the trained model's tower
    backbone = AutoModel.from_pretrained(out / "backbone")
    assert type(backbone) is VersaViTModel
    final = VersaViTForMultiTask.from_pretrained(out / "final")
    for (name, a), (_, b) in zip(backbone.visual.state_dict().items(), final.visual.state_dict().items()):
        assert torch.equal(a, b), name
    depth = VersaViTForDepthEstimation.from_pretrained(out / "final")
    assert torch.equal(depth.depth_head.head.conv3.weight, final.depth_head.head.conv3.weight)
    assert (out / "final" / "tokenizer.json").is_file() and (out / "final" / "preprocessor_config.json").is_file()

    with pytest.raises(
        SystemExit, match=r"already holds a run of recipes/multitask.py \(alignment, backbone, .*\); pass --resume"
    ):
        recipe.main(["--config", str(tiny_run_config(tmp_path, tiny_llm))])


def test_a_subset_of_tasks_runs_without_the_others(tmp_path, tiny_llm):
    summary = load_recipe("multitask").main(["--config", str(tiny_run_config(
        tmp_path, tiny_llm, tasks=["captioning", "depth"], max_steps=2, save_strategy="no", report_to="none",
    ))])
    final = VersaViTForMultiTask.from_pretrained(tmp_path / "run" / "final")
    assert final.config.tasks == ["captioning", "depth"] and not hasattr(final, "segmentation_head")
    assert set(summary["held_out"]["after"]) == {"captioning", "depth"}
    assert [set(row) for row in summary["panel"]] == [{"caption"}] * 2


def test_lora_run_exports_plain_merged_models(tmp_path, tiny_llm):
    summary = load_recipe("multitask").main(["--config", str(tiny_run_config(
        tmp_path, tiny_llm, max_steps=2, save_strategy="no", report_to="none", panel_samples=1,
    )), "--backbone_lora", "true", "--language_model_lora", "true", "--backbone_lora_rank", "4"])
    assert summary["stages"]["multitask"]["steps"] == 2
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["backbone_lora"] and resolved["backbone_lora_rank"] == 4
    for folder in ("final", "backbone"):
        names = load_file(tmp_path / "run" / folder / "model.safetensors").keys()
        assert not any("lora_" in n or "base_layer" in n for n in names), folder
    assert type(AutoModel.from_pretrained(tmp_path / "run" / "backbone")) is VersaViTModel


@pytest.mark.e2e  # 19 s: in CI's e2e stage
def test_held_out_depth_and_masks_improve(tmp_path):
    """The dense tasks learn for real on the generated scenes (no captioning: no LLM needed)."""
    summary = load_recipe("multitask").main(["--config", str(tiny_run_config(
        tmp_path, Path("unused"), tasks=["depth", "segmentation"], num_scenes=40, num_eval_scenes=6, max_steps=200,
        depth_batch_size=4, segmentation_batch_size=4, learning_rate=3e-3, backbone_learning_rate=1e-3,
        save_strategy="no", logging_steps=50, panel_samples=0, warmup_steps=5,
    ))])
    before, after = summary["held_out"]["before"], summary["held_out"]["after"]
    # measured: AbsRel 1.61 -> 0.07, δ1 0.07 -> 0.95, mask mIoU 0.033 -> 0.11
    assert after["depth"]["abs_rel"] < 0.25 * before["depth"]["abs_rel"], (before, after)
    assert after["depth"]["delta1"] > before["depth"]["delta1"] + 0.5, (before, after)
    assert after["segmentation"]["miou"] > 2 * before["segmentation"]["miou"], (before, after)


TINY_DENSE_HEADS = {k: v for k, v in TINY_HEADS.items() if k != "text_embed_dim"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(accelerate_config: str, config: Path, *extra: str, timeout: int = 900,
           script: Path | None = None) -> subprocess.CompletedProcess:
    """The recipe in two processes under `accelerate launch` with a shipped config (`script`: a wrapper that runs
    the recipe, e.g. tests/fsdp_on_cpu.py)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"recipes/accelerate/{accelerate_config}",
        "--num_processes", "2", "--main_process_port", str(free_port()), *([str(script)] if script else []),
        str(RECIPE), "--config", str(config), *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, **DISTRIBUTED_ENV})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.e2e  # the recipe under accelerate launch; the trainer's 2-process exactness tests stay in make test
@pytest.mark.parametrize("accelerate_config", ["ddp.yaml", "zero2.yaml"])
def test_two_process_runs_save_loadable_checkpoints(tmp_path, tiny_llm, accelerate_config):
    config = tiny_run_config(tmp_path, tiny_llm, panel_samples=0, report_to="none")
    launch(accelerate_config, config)
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["multitask"]["steps"] == 4 and summary["stages"]["multitask"]["world_size"] == 2
    # DeepSpeed keeps its own (ZeRO-partitioned) optimizer state in the Trainer checkpoint
    assert (out / "multitask" / "checkpoint-4" / "global_step4").is_dir() == (accelerate_config == "zero2.yaml")
    state = json.loads((out / "multitask" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert all("loss_depth" in entry for entry in state["log_history"] if "loss" in entry)
    final = VersaViTForMultiTask.from_pretrained(out / "final")
    checkpoint = VersaViTForMultiTask.from_pretrained(out / "multitask" / "checkpoint-4")
    for (name, a), (_, b) in zip(final.state_dict().items(), checkpoint.state_dict().items()):
        assert torch.equal(a, b), name
    assert type(AutoModel.from_pretrained(out / "backbone")) is VersaViTModel



@pytest.mark.e2e
@pytest.mark.parametrize("family", sorted(VISION_CONFIGS))
def test_a_two_process_dense_stage_runs_on_every_tower_family(tmp_path, family):
    """DDP adds the idle-parameter term (the blocks after the last one the depth head reads) through the family's
    `blocks()`: a SigLIP tower has `encoder.layers`, not `blocks`."""
    tower = tiny_config(family)
    size = 2 * tower.patch_size * tower.spatial_merge_size
    config = tiny_run_config(tmp_path, Path("unused"), vision_config=VISION_CONFIGS[family], tasks=["depth"],
                             depth_size=size, segmentation_size=size,
                             head_config={**TINY_DENSE_HEADS, "depth_layer_indices": [0, 1, 2]},
                             alignment_max_steps=0, max_steps=2, panel_samples=0, num_eval_scenes=0,
                             save_strategy="no", report_to="none")
    launch("ddp.yaml", config)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stages"]["multitask"]["steps"] == 2 and summary["stages"]["multitask"]["world_size"] == 2

def test_dry_run_of_the_paper_config_prints_counts_without_weights(capsys):
    report = load_recipe("multitask").main(["--config", str(PAPER_CONFIG), "--dry_run"])
    printed = capsys.readouterr().out
    sizes = {row["part"]: row["params_m"] for row in report["parameters"]}
    assert 670 < sizes["visual"] < 680          # Qwen2-VL-7B's tower, PatchMerger included
    assert sizes["depth_head"] == pytest.approx(38.4, abs=0.1)
    assert sizes["segmentation_head"] == pytest.approx(5.7, abs=0.1)
    assert sizes["projector"] == pytest.approx(36.7, abs=0.1)
    assert 1700 < sizes["language_model"] < 2100  # Qwen3-1.7B
    assert report["allocated_parameters"] == 0
    assert report["memory"]["total_gib"] > report["memory"]["weights_gib"] > 0
    for part in ("visual", "depth_head", "segmentation_head", "projector", "language_model", "37.0M", "GiB"):
        assert part in printed


@pytest.mark.parametrize(("name", "tower_m"), [("versavit_qwen2_5vl_7b.yaml", (670, 680)),
                                               ("versavit_qwen3vl_8b.yaml", (570, 580)),
                                               ("versavit_siglip2_so400m.yaml", (425, 432))])
def test_dry_runs_of_the_other_towers_size_their_published_architecture(capsys, name, tower_m):
    """The Qwen2.5-VL-7B, Qwen3-VL-8B and SigLIP2-so400m configs size their tower from `mllm_vision_config` when the
    model folder is absent: the same count as transformers' own tower class built on the meta device."""
    from transformers import CONFIG_MAPPING

    path = ROOT / "recipes" / "configs" / name
    report = load_recipe("multitask").main(["--config", str(path), "--dry_run"])
    printed = capsys.readouterr().out
    vision = dict(yaml.safe_load(path.read_text())["mllm_vision_config"])
    config = CONFIG_MAPPING[vision.pop("model_type")](**vision)
    tower_class = VersaViTConfig(vision_config=config.to_dict()).backbone.tower_class
    with torch.device("meta"):
        expected = sum(p.numel() for p in tower_class._from_config(config).parameters()) / 1e6
    sizes = {row["part"]: row for row in report["parameters"]}
    assert sizes["visual"]["params_m"] == pytest.approx(expected) and tower_m[0] < expected < tower_m[1]
    assert sizes["visual"]["trainable_m"] < expected and sizes["visual"]["paper_m"] is None  # Table 13 is Qwen2-VL's
    assert report["allocated_parameters"] == 0 and "parts left to the MLLM" in printed


def test_mllm_vision_config_is_checked_by_name():
    with pytest.raises(ConfigError, match=r"mllm_vision_config.num_layerz: unknown key"):
        load_recipe("multitask").main(["--mllm", "absent", "--mllm_vision_config",
                                       '{"model_type": "siglip_vision_model", "num_layerz": 2}', "--dry_run"])
    with pytest.raises(ConfigError, match=r"mllm_vision_config.model_type: expected one of"):
        load_recipe("multitask").main(["--mllm", "absent", "--mllm_vision_config", '{"model_type": "vit"}',
                                       "--dry_run"])


def test_config_errors_on_the_command_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stesp: 3\n")
    result = subprocess.run([sys.executable, str(RECIPE), "--config", str(bad)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert "unknown key 'max_stesp' (did you mean 'max_steps'?)" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match=r"argument --num_scenes/--num-scenes: invalid int value: 'ten'"):
        load_recipe("multitask").main(["--num_scenes", "ten"])


@pytest.mark.e2e  # 19 s: in CI's e2e stage (make test keeps the killed-and-resumed run of test_bad_data)
def test_interrupted_run_stops_cleanly_and_resumes(tmp_path, tiny_llm):
    config = tiny_run_config(tmp_path, tiny_llm, max_steps=500, save_steps=1000, panel_samples=0, report_to="none",
                             num_eval_scenes=0)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(RECIPE), "--config", str(config)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **DISTRIBUTED_ENV})
    deadline = time.monotonic() + 300
    while not (out / "alignment" / "stage.json").exists():  # the warm-up is done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(3)  # into the multi-task stage
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    assert "Interrupted in the multitask stage" in stdout and "--resume" in stdout
    checkpoints = sorted((out / "multitask").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 1, checkpoints
    stopped = int(checkpoints[0].name.split("-")[1])
    assert 0 < stopped < 500
    assert not (out / "final").exists()

    result = subprocess.run(
        [sys.executable, str(RECIPE), "--config", str(config), "--resume", "--max_steps", str(stopped + 2)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, **DISTRIBUTED_ENV},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "alignment stage: finished earlier" in result.stderr
    assert f"multitask stage: resuming from {checkpoints[0]}" in result.stderr
    state = json.loads((out / "multitask" / f"checkpoint-{stopped + 2}" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == list(range(1, stopped + 3))  # the first run's steps, then the resumed ones, none repeated
    assert (out / "final" / "model.safetensors").is_file()


def test_help_documents_every_option(capsys):
    """In-process (the recipes' `--help` as a script: tests/test_recipes.py runs one as a subprocess)."""
    from versavit_trainer.core.options import DataArguments, ModelArguments, RunArguments

    for recipe in ("multitask", "align"):
        with pytest.raises(SystemExit) as exit_info:
            load_recipe(recipe).main(["--help"])
        assert exit_info.value.code == 0
        printed = capsys.readouterr().out
        for options in (ModelArguments, DataArguments, RunArguments):
            for name in options.__dataclass_fields__:
                assert f"--{name}" in printed, (recipe, name)
        for name in ("--backbone_learning_rate", "--alignment_learning_rate", "--train_language_model", "--max_steps"):
            assert name in printed


def test_align_recipe_then_multitask_from_the_aligned_model(tmp_path, tiny_llm):
    from modeling_versavit import VersaViTForCaptioning
    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import ModelArguments

    config = tiny_run_config(tmp_path, tiny_llm, alignment_max_steps=3, save_strategy="no", report_to="none")
    summary = load_recipe("align").main(["--config", str(config)])
    assert summary["steps"] == 3 and "captioning" in summary["final_losses"]
    aligned = VersaViTForCaptioning.from_pretrained(tmp_path / "run" / "final")
    projector = load_file(tmp_path / "run" / "alignment" / "trained_parts.safetensors")
    for name, value in aligned.projector.state_dict().items():
        assert torch.equal(value, projector[f"projector.{name}"]), name

    # a multi-task run started from it reuses the projector, the LLM and the tokenizer; the dense heads start fresh
    model, tokenizer = build_model(ModelArguments(model_name_or_path=str(tmp_path / "run" / "final")),
                                   ["captioning", "depth", "segmentation"], text_embed_dim=384)
    for name, value in aligned.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.config.text_embed_dim == 384 and model.segmentation_head is not None
    assert tokenizer.convert_tokens_to_ids("<image>") == aligned.config.image_token_id


def test_a_dense_checkpoint_keeps_its_heads_when_training_continues(dense_checkpoint, tiny_llm):
    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import ModelArguments

    model, _ = build_model(ModelArguments(model_name_or_path=str(dense_checkpoint), language_model=str(tiny_llm)),
                           ["captioning", "depth", "segmentation"], text_embed_dim=384)
    trained = VersaViTForMultiTask.from_pretrained(dense_checkpoint)
    for name in ("visual", "depth_head", "segmentation_head"):
        for key, value in getattr(trained, name).state_dict().items():
            assert torch.equal(getattr(model, name).state_dict()[key], value), (name, key)
    with pytest.raises(ValueError, match="head_config: the depth_head of .* does not fit the configured head"):
        build_model(ModelArguments(model_name_or_path=str(dense_checkpoint), language_model=str(tiny_llm),
                                   head_config={"depth_fusion_hidden_size": 24}), ["depth"], text_embed_dim=384)


@pytest.mark.e2e  # in make test, tests/test_recipes.py runs the embedded default in-process
def test_a_bare_accelerate_launch_runs_the_embedded_default(tmp_path, tiny_llm):
    """`accelerate launch recipes/multitask.py --output_dir X`, no other flag: the embedded default config runs and
    says so first, then the run's scale. $VERSAVIT_CONFIG_OVERRIDES shrinks it to test size (and a 1-layer LLM); the
    default's logging_steps (5) is longer than the run, which then ends without loss curves instead of failing."""
    shrink = {
        "language_model": str(tiny_llm), "alignment_max_steps": 1, "max_steps": 2, "num_scenes": 4,
        "num_eval_scenes": 2, "depth_size": 56, "segmentation_size": 56, "caption_max_pixels": 56 * 56,
        "captioning_batch_size": 2, "depth_batch_size": 2, "segmentation_batch_size": 2, "max_expressions": 2,
        "save_strategy": "no", "report_to": "none", "panel_samples": 1, "caption_max_new_tokens": 2,
    }
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "recipes/multitask.py", "--output_dir", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**os.environ, **DISTRIBUTED_ENV, "VERSAVIT_CONFIG_OVERRIDES": json.dumps(shrink)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Config: recipes/configs/default.yaml, the embedded default (no --config given): the "
                               "same run as `make demo`"), lines[:3]
    assert "versavit_qwen2vl_7b.yaml" in lines[0]  # how to run the paper's setting
    plan = "\n".join(lines[:12])
    for expected in ("overridden by $VERSAVIT_CONFIG_OVERRIDES: language_model=", "VersaViT multi-task run: what this",
                     "tower qwen2_vl_vision 4 blocks x 192", "stage 1   alignment: 1 step, projector only",
                     "stage 2   multitask: 2 steps", "4 generated scenes", "device    cpu, 1 process; fp32",
                     "GiB available RAM"):
        assert expected in plan, (expected, plan)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    default = yaml.safe_load((ROOT / "recipes" / "configs" / "default.yaml").read_text())
    assert resolved["vision_config"] == default["vision_config"] and resolved["head_config"] == default["head_config"]
    assert resolved["max_steps"] == 2 and resolved["output_dir"] == str(out) and "check_memory" not in resolved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["multitask"]["steps"] == 2 and "loss_curves" not in summary
    assert "loss_curves.png is not drawn" in result.stderr


def test_a_run_that_does_not_fit_the_machine_is_refused_before_anything_is_written(tmp_path, tiny_llm, monkeypatch):
    import versavit_trainer.core.plan

    monkeypatch.setattr(versavit_trainer.core.plan, "available_memory", lambda device: (0.001, "available RAM"))
    config = tiny_run_config(tmp_path, tiny_llm, alignment_max_steps=1, max_steps=1, save_strategy="no",
                             report_to="none", panel_samples=0, num_eval_scenes=0)
    recipe = load_recipe("multitask")
    with pytest.raises(
        ConfigError,
        match=r"memory: this run needs about \d+\.\d GiB \(per process\), more than the 0\.0 "
        r"GiB available RAM\. .* pass --check_memory false to start anyway",
    ):
        recipe.main(["--config", str(config)])
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="--check_memory false"):
        load_recipe("align").main(["--config", str(config)])
    summary = recipe.main(["--config", str(config), "--check_memory", "false"])
    assert summary["stages"]["multitask"]["steps"] == 1


SHARDED_CONFIGS = {"zero3": "zero3.yaml", "fsdp2": "fsdp2.yaml"}


@pytest.mark.e2e  # one in-process run and a two-process launch per engine, ~2 min each
@pytest.mark.parametrize("engine", sorted(SHARDED_CONFIGS))
def test_a_sharded_curriculum_equals_one_process_and_writes_plain_folders(tmp_path, tiny_llm, engine):
    """The alignment warm-up, then multi-task training with the LLM frozen, in two processes under ZeRO-3 / FSDP2
    (batches of 1 per process) and in one process (batches of 1, two rounds per step: the same samples, each loss
    normalised over its own sample as in two processes): the same per-task losses and weights to float rounding;
    the frozen LLM bit for bit the initial one; each stage's trained parts and `final/` / `backbone/` gathered from
    the shards into ordinary folders that `from_pretrained` loads in a plain process."""
    # adam_epsilon above the float noise of near-zero gradients (see tests/run_multitask.py)
    common = dict(panel_samples=0, report_to="none", save_strategy="no", num_eval_scenes=2, adam_epsilon=1e-2,
                  lr_scheduler_type="constant", warmup_steps=0, train_language_model=False, max_steps=3)
    per_process = dict(captioning_batch_size=1, depth_batch_size=1, segmentation_batch_size=1)
    single = tmp_path / "single"
    single.mkdir()
    load_recipe("multitask").main(["--config", str(tiny_run_config(single, tiny_llm, **common, **per_process,
                                                                   rounds_per_step=2))])
    sharded = tmp_path / engine
    sharded.mkdir()
    config = tiny_run_config(sharded, tiny_llm, **common, **per_process)
    if engine == "fsdp2":  # accelerate shards on the CPU only through the tests' shim (see fsdp_on_cpu.py)
        launch(SHARDED_CONFIGS[engine], config, script=ROOT / "tests" / "fsdp_on_cpu.py")
    else:
        launch(SHARDED_CONFIGS[engine], config)

    a, b = single / "run", sharded / "run"
    for stage in ("alignment", "multitask"):
        history = [e for e in json.loads((b / stage / "log_history.json").read_text()) if "loss" in e]
        reference = [e for e in json.loads((a / stage / "log_history.json").read_text()) if "loss" in e]
        assert len(history) == len(reference) > 0, stage
        for mine, theirs in zip(history, reference):
            for key in [k for k in theirs if k.startswith("loss")]:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5), (stage, key)
        trained, expected = load_file(b / stage / "trained_parts.safetensors"), load_file(a / stage /
                                                                                          "trained_parts.safetensors")
        assert trained.keys() == expected.keys(), stage
        for name, value in expected.items():
            torch.testing.assert_close(trained[name], value, rtol=2e-5, atol=2e-6, msg=name)
    final, expected = load_file(b / "final" / "model.safetensors"), load_file(a / "final" / "model.safetensors")
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        if name.startswith("language_model."):
            assert torch.equal(final[name], value), name  # frozen in both, never given optimizer state
        else:
            torch.testing.assert_close(final[name], value, rtol=2e-5, atol=2e-6, msg=name)
    summary = json.loads((b / "summary.json").read_text())
    assert summary["stages"]["multitask"]["world_size"] == 2 and "held_out" in summary
    loaded = VersaViTForMultiTask.from_pretrained(b / "final")
    assert torch.equal(loaded.depth_head.head.conv3.weight, final["depth_head.head.conv3.weight"])
    assert type(AutoModel.from_pretrained(b / "backbone")) is VersaViTModel


def test_the_72b_dry_run_fits_sharded_and_is_refused_under_zero2(capsys):
    """Qwen2.5-VL-72B's tower with its frozen 72B LLM on one node of 8 x 80 GB (meta device): ZeRO-3 and FSDP2 shard
    the LLM's weights and fit; ZeRO-2 gives every GPU the whole bf16 LLM and is refused with the fix named."""
    config = ROOT / "recipes" / "configs" / "versavit_qwen2_5vl_72b.yaml"
    result = load_recipe("multitask").main(["--config", str(config), "--dry_run"])
    assert result["allocated_parameters"] == 0
    rows = {row["part"]: row for row in result["parameters"]}
    assert rows["language_model"]["params_m"] > 70_000 and rows["language_model"]["trainable_m"] == 0
    per_gpu = result["per_sharding_gib"]
    assert per_gpu["zero3"] < 80 and per_gpu["fsdp2"] < 80 < 2 * 72_706e6 / 1024**3 < per_gpu["zero2"]
    assert "per GPU under ZeRO-2" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"under ZeRO-2 each of the 8 GPUs needs about .* launch with "
                                          r"recipes/accelerate/zero3\.yaml or recipes/accelerate/fsdp2\.yaml"):
        load_recipe("multitask").main(["--config", str(config), "--dry_run", "--dry_run_sharding", "zero2"])


@pytest.mark.e2e  # three two-process runs of the tiny curriculum, ~1.5 min
def test_two_nodes_on_this_machine_equal_one_node_with_two_processes(tmp_path, tiny_llm):
    """Two `accelerate launch` commands with --num_machines 2 (one process each, 127.0.0.1, gloo) against one
    launch of two processes on one machine: the same ranks, the same global batches, the same collectives, so the
    per-task losses of every logged step and every weight of final/ are bit for bit equal."""
    common = dict(panel_samples=0, report_to="none", save_strategy="no", num_eval_scenes=0, max_steps=3,
                  captioning_batch_size=1, depth_batch_size=1, segmentation_batch_size=1)
    one = tmp_path / "one_node"
    one.mkdir()
    launch("ddp.yaml", tiny_run_config(one, tiny_llm, **common))
    two = tmp_path / "two_nodes"
    two.mkdir()
    config, port = tiny_run_config(two, tiny_llm, **common), free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/ddp.yaml",
         "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip",
         "127.0.0.1", "--main_process_port", str(port), str(RECIPE), "--config", str(config)],
        cwd=ROOT, env={**os.environ, **DISTRIBUTED_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    for node in nodes:
        out, err = node.communicate(timeout=900)
        assert node.returncode == 0, out[-2000:] + err[-4000:]
    a, b = one / "run", two / "run"
    assert json.loads((b / "summary.json").read_text())["stages"]["multitask"]["world_size"] == 2
    for stage in ("alignment", "multitask"):
        logged = [[{k: v for k, v in e.items() if k.startswith("loss")} for e in
                   json.loads((run / stage / "log_history.json").read_text()) if "loss" in e] for run in (a, b)]
        assert logged[0] == logged[1] and len(logged[0]) > 0, stage
    final, expected = load_file(b / "final" / "model.safetensors"), load_file(a / "final" / "model.safetensors")
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value), name


def test_the_launch_s_sharding_is_read_and_what_cannot_gather_is_refused(monkeypatch):
    from types import SimpleNamespace

    from accelerate.commands.config.config_args import ClusterConfig

    from versavit_trainer.core.plan import refuse_sharding, sharding

    for path in sorted((ROOT / "recipes" / "accelerate").glob("*.yaml")):  # every shipped config is accelerate's
        ClusterConfig.from_yaml_file(path)
    zero3 = SimpleNamespace(fsdp=None, deepspeed=str(ROOT / "recipes" / "deepspeed" / "zero3.json"))
    assert sharding(zero3) == "zero3"
    assert sharding(SimpleNamespace(fsdp=None, deepspeed=str(ROOT / "recipes" / "deepspeed" / "zero2.json"))) == "zero2"
    assert sharding(SimpleNamespace(fsdp=None, deepspeed=None)) == "ddp"
    with pytest.raises(ConfigError, match=r"LoRA .* is not supported under ZeRO-3 .*: launch it with ddp.yaml"):
        refuse_sharding(zero3, "LoRA (backbone_lora / language_model_lora)")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets from fsdp2.yaml
    plain = SimpleNamespace(fsdp=None, deepspeed=None)
    assert sharding(plain) == "fsdp2"
    with pytest.raises(ConfigError, match=r"recipes/finetune_depth.py is not supported under FSDP2"):
        refuse_sharding(plain, "recipes/finetune_depth.py")
