"""Runs that survive bad data and restart exactly: each class of bad input gets a named error, a counted skip or a
documented conversion (README's table), and a resumed run equals an uninterrupted one."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from conftest import load_recipe, tiny_run_config
from multitask_fixtures import task_specs, tiny_multitask_model, training_args

import versavit_trainer.core.trainer as multitask_module
from modeling_versavit import VersaViTCaptioningProcessor, VersaViTImageProcessor, VersaViTModel
from versavit_trainer import MultiTaskTrainer, TaskSpec
from versavit_trainer.config import ConfigError
from versavit_trainer.core.stages import last_complete_checkpoint
from versavit_trainer.core.streams import MultiTaskCollator, MultiTaskDataset
from versavit_trainer.data.collators import CaptioningCollator, DepthCollator, SegmentationCollator, binary_mask
from versavit_trainer.data.processors import caption_image_processor
from versavit_trainer.data.schemas import encode_depth
from versavit_trainer.run_folder import folder_contents

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "multitask.py"


# ---------------------------------------------------------------------------------------------------- samples
def depth_row(size=(28, 28), scale=None, depth_size=None):
    image = PIL.Image.fromarray(np.full((*size[::-1], 3), 120, np.uint8))
    stored, stored_scale = encode_depth(
        np.linspace(1, 5, np.prod(depth_size or size)).reshape((depth_size or size)[::-1])
    )
    return {"image": image, "depth": stored, "depth_scale": stored_scale if scale is None else scale}


def referring_row(mask=None, embeds=None, expressions=("the left cube",)):
    image = PIL.Image.fromarray(np.full((28, 28, 3), 90, np.uint8))
    if mask is None:
        array = np.zeros((28, 28), np.uint8)
        array[4:12, 4:12] = 255
        mask = PIL.Image.fromarray(array)
    return {"image": image, "expressions": list(expressions), "masks": [mask] * len(expressions),
            "text_embeds": embeds if embeds is not None else [[0.1] * 8] * len(expressions)}


def test_non_binary_masks_are_refused_naming_the_mask():
    ok = np.zeros((6, 6), np.uint8)
    ok[2:4, 2:4] = 1
    for accepted in (ok, ok * 255, ok.astype(bool)):
        assert binary_mask(PIL.Image.fromarray(accepted), (6, 6)).sum() == 4
    assert binary_mask(PIL.Image.fromarray(np.zeros((6, 6), np.uint8)), (6, 6)).sum() == 0  # empty masks are valid
    soft = np.tile(np.arange(6, dtype=np.uint8) * 40, (6, 1))
    instances = ok.copy()
    instances[0, 0] = 2
    with pytest.raises(ValueError, match=r"masks\[0\]: not a binary mask: values \{0, 40, 80, 120, 160, 200\}"):
        binary_mask(PIL.Image.fromarray(soft), (6, 6), "masks[0]")
    with pytest.raises(ValueError, match=r"not a binary mask: values \{0, 1, 2\} \(3 levels\)"):
        binary_mask(PIL.Image.fromarray(instances), (6, 6))
    with pytest.raises(ValueError, match="not a binary mask: values \\{1, 2\\}"):
        binary_mask(PIL.Image.fromarray(ok + 1), (6, 6))
    with pytest.raises(ValueError, match="mode 'RGB' is not a binary mask"):
        binary_mask(PIL.Image.fromarray(np.stack([ok * 255] * 3, -1)), (6, 6))
    # the collator checks every mask of a sample, and today's ">0" reading of a gradient image is gone
    collator = SegmentationCollator(size=28, flip_probability=0.0)
    with pytest.raises(ValueError, match=r"masks\[0\]: not a binary mask"):
        collator([referring_row(mask=PIL.Image.fromarray(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))))])


def test_non_finite_or_mismatched_text_embeddings_are_refused():
    collator = SegmentationCollator(size=28, text_embed_dim=8)
    collator.validate(referring_row())
    nan = [[0.1] * 8, [0.1] * 7 + [float("nan")]]
    with pytest.raises(ValueError, match=r"text_embeds: NaN or inf values in the embeddings of expressions \[1\]"):
        collator.validate(referring_row(embeds=nan, expressions=("a", "b")))
    with pytest.raises(ValueError, match=r"text_embeds: widths \[8, 9\], expected \[8\]"):
        collator.validate(referring_row(embeds=[[0.1] * 8, [0.1] * 9], expressions=("a", "b")))
    with pytest.raises(ValueError, match=r"text_embeds: widths \[4\], expected \[8\]"):
        collator.validate(referring_row(embeds=[[0.1] * 4]))
    with pytest.raises(ValueError, match="expression 0 is empty"):
        collator.validate(referring_row(expressions=(" ",)))


def test_bad_samples_are_skipped_and_counted_wherever_their_error_arises(caplog):
    """Load (a decompression bomb from `datasets`), validation (wrong-size depth, zero depth_scale) and collation
    errors are all counted skips; a dataset that keeps failing stops the run."""

    class Bombs(list):
        def __getitem__(self, index):
            row = super().__getitem__(index)
            if row is None:
                raise PIL.Image.DecompressionBombError("image of 10^10 pixels")
            return row

    rows = Bombs([None, depth_row(depth_size=(14, 14)), depth_row(scale=0.0), depth_row(), depth_row()])
    spec = TaskSpec("depth", rows, DepthCollator(size=28, seed=0), batch_size=2)
    dataset = MultiTaskDataset([spec])
    with caplog.at_level(logging.WARNING):
        task, sample, skipped, position = dataset[(0, 0, 7)]
    assert (task, skipped, position) == (0, 3, 7) and sample is rows[3]
    assert "skipping sample 0" in caplog.text and "skipping sample 2" in caplog.text and "depth_scale" in caplog.text
    with pytest.raises(RuntimeError, match="task depth: 16 consecutive samples from index 0 failed"):
        MultiTaskDataset([TaskSpec("depth", Bombs([None] * 20), DepthCollator(size=28), 1)])[(0, 0, 0)]

    # a batch the collator refuses as a whole (an error only collation finds) keeps its good samples
    class Picky:
        def __call__(self, samples):
            if any(s == "bad" for s in samples):
                raise ValueError("bad sample")
            return {"n": len(samples)}

    collate = MultiTaskCollator([TaskSpec("depth", ["ok", "bad", "ok"], Picky(), batch_size=3)])
    batch = collate([(0, "ok", 0, 3), (0, "bad", 1, 4), (0, "ok", 0, 5)])
    assert batch["n"] == 2 and batch["num_skipped"] == 2 and batch["stream_positions"] == [3, 4, 5]
    with pytest.raises(RuntimeError, match="no sample of the batch at stream position 4 could be collated"):
        collate([(0, "bad", 0, 4)])


def test_captioning_without_answers_or_with_huge_answers(tiny_llm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = VersaViTCaptioningProcessor(caption_image_processor(56 * 56), tokenizer)
    collator = CaptioningCollator(processor, max_length=120, seed=0)
    image = PIL.Image.fromarray(np.full((56, 56, 3), 30, np.uint8))
    with pytest.raises(ValueError, match="turn 0 has no assistant text"):
        collator.validate({"image": image, "texts": [{"user": "What is it?", "assistant": None}]})
    huge = " ".join(["cube"] * 20000)
    batch = collator([{"image": image, "caption": huge}, {"image": image, "caption": "A red cube."}])
    assert batch["input_ids"].shape[1] == 120 and batch["num_truncated"] == 1
    assert (batch["labels"][0] != -100).sum() > 50  # the cut answer still trains
    assert (batch["input_ids"][0] == processor.image_token_id).sum() == 4  # the image tokens are whole
    with pytest.raises(ValueError, match="image tokens end at token .* past max_length 10"):
        processor([image], conversations=[[{"user": "Hi", "assistant": huge}]], max_length=10)


def test_float_images_follow_the_do_rescale_convention(caplog):
    photo = np.random.default_rng(0).integers(0, 256, (56, 56, 3)).astype(np.uint8)
    processor = VersaViTImageProcessor()
    reference = processor(images=[photo], return_tensors="pt")["pixel_values"]
    scaled = processor(images=[photo.astype(np.float32) / 255], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(scaled, reference, atol=1e-5, rtol=0)  # not divided by 255 a second time
    assert reference.std() > 0.5
    twice = processor(images=[photo.astype(np.float32) / 255], do_rescale=True, return_tensors="pt")["pixel_values"]
    assert twice.std() < 0.2  # asked for explicitly
    with pytest.raises(ValueError, match=r"images\[0\]: float image with NaN or inf values"):
        processor(images=[np.full((56, 56, 3), np.nan, np.float32)])
    with pytest.raises(ValueError, match=r"images\[1\]: float image with values in \[300, 300\]"):
        processor(images=[photo, np.full((56, 56, 3), 300.0, np.float32)])
    with pytest.raises(ValueError, match=r"float images in \[0, 1\] \(indices \[1\]\) mixed with 8-bit"):
        processor(images=[photo, photo.astype(np.float32) / 255])
    # PIL float (mode F) images: [0, 1] is scaled; above 1 is read as 0-255 with a warning; out of range refused
    from modeling_versavit import to_rgb

    gray = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert np.asarray(to_rgb(PIL.Image.fromarray(gray, mode="F"))).max() == 255
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        to_rgb(PIL.Image.fromarray(gray * 2 - 1, mode="F"))


def test_nested_config_typos_and_types_name_the_full_key(tmp_path):
    from versavit_trainer import MultiTaskTrainingArguments
    from versavit_trainer.config import parse_config
    from versavit_trainer.core.lora import LoraArguments
    from versavit_trainer.core.options import DataArguments, ModelArguments, RunArguments

    types = (ModelArguments, LoraArguments, DataArguments, RunArguments, MultiTaskTrainingArguments)

    def write(folder, data):
        (folder / "run.yaml").write_text(yaml.safe_dump(data))
        return str(folder / "run.yaml")

    base = {"output_dir": str(tmp_path), "vision_config": {"model_type": "qwen2_vl_vision", "depth": 2}}
    with pytest.raises(ConfigError, match=r"head_config\.depth_fusion_hiden_size: unknown key \(did you mean "
                                          r"head_config\.depth_fusion_hidden_size\?\)"):
        parse_config(types, ["--config", write(tmp_path, {**base, "head_config": {"depth_fusion_hiden_size": 16}})])
    with pytest.raises(
        ConfigError, match=r"vision_config\.embed_dimm: unknown key \(did you mean vision_config\.embed_dim"
    ):
        parse_config(types, ["--config", write(tmp_path, {"vision_config": {"model_type": "qwen2_vl_vision",
                                                                            "embed_dimm": 8}})])
    with pytest.raises(ConfigError, match=r"vision_config\.depth: TypeError: Field 'depth' expected int, got str"):
        parse_config(types, ["--config", write(tmp_path, {"vision_config": {"model_type": "qwen2_vl_vision",
                                                                            "depth": "two"}})])
    with pytest.raises(ConfigError, match=r"head_config\.depth_fusion_hidden_size: TypeError"):
        parse_config(types, ["--config", write(tmp_path, {**base, "head_config": {"depth_fusion_hidden_size": "x"}})])
    with pytest.raises(ConfigError, match=r"vision_config\.model_type: expected one of"):
        parse_config(types, ["--config", write(tmp_path, {"vision_config": {"model_type": "clip_vision_model"}})])
    with pytest.raises(ConfigError, match="depth_batch_size: must be >= 1, got 0"):
        parse_config(types, ["--config", write(tmp_path, {**base, "depth_batch_size": 0})])


def test_missing_or_corrupt_inputs_have_clear_messages(tmp_path, tiny_llm):
    from versavit_trainer.core.models import build_model
    from versavit_trainer.core.options import DataArguments, ModelArguments
    from versavit_trainer.core.sources import load_data

    with pytest.raises(FileNotFoundError, match=r"depth data: .*nowhere does not exist"):
        load_data(DataArguments(tasks=["depth"], depth_data=str(tmp_path / "nowhere"), num_eval_scenes=0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither a labelling output .* it holds nothing"):
        load_data(DataArguments(tasks=["depth"], depth_data=str(tmp_path / "empty"), num_eval_scenes=0))
    from datasets import Dataset

    from versavit_trainer.data.schemas import DEPTH_FEATURES

    Dataset.from_dict({column: [] for column in DEPTH_FEATURES}, features=DEPTH_FEATURES).save_to_disk(
        str(tmp_path / "rows")
    )
    with pytest.raises(ValueError, match=r"depth data: .*rows is not a readable saved dataset, or holds no rows"):
        load_data(DataArguments(tasks=["depth"], depth_data=str(tmp_path / "rows"), num_eval_scenes=0))
    with pytest.raises(FileNotFoundError, match=r"model_name_or_path: .*missing/model is not a folder"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "missing" / "model")), ["depth"])
    folder = tmp_path / "model"
    VersaViTModel(VersaViTModel.config_class(vision_config={"model_type": "qwen2_vl_vision", "depth": 1,
                                                            "embed_dim": 16, "num_heads": 2})).save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(OSError, match=r"model\.safetensors: corrupt or truncated safetensors data"):
        VersaViTModel.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------- trainer
def test_non_finite_losses_never_reach_the_weights(tmp_path, monkeypatch):
    """A NaN text embedding (not validated by the fixture collators) makes the segmentation loss NaN: the step is
    skipped, the weights stay bit-identical, the logged task means stay finite; repeated, the run stops."""
    model = tiny_multitask_model()
    tasks = task_specs(model.config)
    for sample in tasks[2].dataset:
        sample["text_embeds"][0, 0] = float("nan")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = MultiTaskTrainer(model, training_args(tmp_path, max_steps=2), tasks)
    trainer.train()
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["skipped_steps"] for entry in logs] == [1, 2]
    assert "loss_segmentation" not in logs[-1] and np.isfinite(logs[-1]["loss_depth"])

    monkeypatch.setattr(multitask_module, "MAX_CONSECUTIVE_NONFINITE_STEPS", 3)
    with pytest.raises(RuntimeError, match="3 consecutive optimizer steps had non-finite losses or gradients"):
        MultiTaskTrainer(tiny_multitask_model(), training_args(tmp_path / "b", max_steps=5), tasks).train()

    # a finite step after skipped ones trains as usual
    clean = task_specs(model.config)
    trainer = MultiTaskTrainer(model, training_args(tmp_path / "c", max_steps=1), clean)
    trainer.train()
    assert any(not torch.equal(value, before[name]) for name, value in model.named_parameters())


def test_a_finite_loss_with_non_finite_gradients_never_reaches_the_weights(tmp_path, caplog):
    """The gradient half of the guard: every loss is finite, but a hook turns one head's gradient into inf (as an
    overflow in a backward would). The step is skipped and counted, no weight moves (AdamW would write NaN)."""
    model = tiny_multitask_model()
    tasks = task_specs(model.config)
    model.depth_head.head.conv2.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = MultiTaskTrainer(model, training_args(tmp_path, max_steps=2), tasks)
    with caplog.at_level(logging.WARNING, logger=multitask_module.logger.name):
        trainer.train()
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(np.isfinite(entry["loss"]) and np.isfinite(entry["loss_depth"]) for entry in logs)
    assert [entry["skipped_steps"] for entry in logs] == [1, 2]
    assert "non-finite gradients (on this or another rank)" in caplog.text


def test_the_last_complete_checkpoint_is_resumed(tmp_path, caplog):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')  # killed while writing
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-6 is incomplete" in caplog.text
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()  # killed before writing it
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_a_checkpoint_with_a_truncated_file_is_passed_over_naming_the_file(tmp_path, caplog, damaged):
    from safetensors.torch import save_file

    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        save_file({"w": torch.ones(256)}, folder / "model.safetensors")
        torch.save({"state": torch.ones(256)}, folder / "optimizer.pt")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    path = tmp_path / "checkpoint-4" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert f"checkpoint-4 is incomplete ({damaged}: " in caplog.text


@pytest.mark.parametrize("damaged", ["stage.json", "trained_parts.safetensors"])
def test_a_finished_stage_with_a_truncated_record_resumes_from_its_checkpoint(tmp_path, tiny_llm, caplog, damaged):
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["depth"], alignment_max_steps=0, max_steps=2,
                             num_eval_scenes=0, panel_samples=0, report_to="none")
    recipe = load_recipe("multitask")
    first = recipe.main(["--config", str(config)])
    path = tmp_path / "run" / "multitask" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.INFO):
        again = recipe.main(["--config", str(config), "--resume"])
    assert f"the finished stage's {damaged} is not complete" in caplog.text
    assert "resuming from " in caplog.text and "checkpoint-2" in caplog.text
    assert again["stages"]["multitask"]["steps"] == first["stages"]["multitask"]["steps"] == 2
    assert json.loads((tmp_path / "run" / "multitask" / "stage.json").read_text())["steps"] == 2  # written again


# ---------------------------------------------------------------------------------------------------- recipes
def test_resuming_with_a_changed_config_is_refused_and_the_record_kept(tmp_path, tiny_llm):
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["depth"], alignment_max_steps=0, max_steps=2,
                             num_eval_scenes=0, panel_samples=0, report_to="none")
    recipe = load_recipe("multitask")
    recipe.main(["--config", str(config)])
    saved = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"--resume: the settings differ from .*config\.yaml \(learning_rate: "
                                          r"0\.001 -> 0\.002; lr_scheduler_type: 'linear' -> 'constant'\)"):
        recipe.main(
            ["--config", str(config), "--resume", "--learning_rate", "0.002", "--lr_scheduler_type", "constant"]
        )
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    # how it logs may change; the change is recorded beside the original
    recipe.main(["--config", str(config), "--resume", "--logging_steps", "2"])
    assert yaml.safe_load((tmp_path / "run" / "config.resume-1.yaml").read_text())["logging_steps"] == 2
    # more steps for a stage that has finished would be recorded and never trained: refused, nothing recorded
    with pytest.raises(ConfigError, match=r"--resume: stage 'multitask' asks for max_steps 8, but it finished at 2 "
                                          r"steps in the run being resumed \(.*multitask/stage.json\)"):
        recipe.main(["--config", str(config), "--resume", "--max_steps", "8"])
    assert not (tmp_path / "run" / "config.resume-2.yaml").exists()
    # a new learning rate would be printed and recorded, yet the resumed optimizer keeps the checkpoint's: refused
    # even with --allow_config_change
    with pytest.raises(ConfigError, match=r"--allow_config_change: learning_rate: 0\.001 -> 0\.002 cannot apply to a "
                                          r"resumed run: the optimizer and its schedule resume from the checkpoint"):
        recipe.main(["--config", str(config), "--resume", "--learning_rate", "0.002", "--allow_config_change", "true"])
    assert not (tmp_path / "run" / "config.resume-2.yaml").exists()
    recipe.main(["--config", str(config), "--resume", "--max_grad_norm", "0.5",
                 "--allow_config_change", "true"])  # clipping applies step by step: it may change
    assert yaml.safe_load((tmp_path / "run" / "config.resume-2.yaml").read_text())["max_grad_norm"] == 0.5
    assert (tmp_path / "run" / "config.yaml").read_text() == saved


def test_nothing_is_written_before_the_run_is_validated(tmp_path, tiny_llm):
    recipe = load_recipe("multitask")
    config = tiny_run_config(tmp_path, tiny_llm, tasks=["depth", "segmentation"], num_eval_scenes=0,
                             head_config={"text_embed_dim": 24})
    with pytest.raises(ValueError, match=r"head_config.text_embed_dim: 24, but the text encoder gives 384-d"):
        recipe.main(["--config", str(config)])
    assert not (tmp_path / "run" / "config.yaml").exists()
    with pytest.raises(ConfigError, match="segmentation_batch_size: must be >= 1"):
        recipe.main(["--config", str(config), "--segmentation_batch_size", "0"])
    assert not folder_contents(tmp_path / "run")  # only the run's own lock and record: not "a run" to resume


def kill_and_resume(tmp_path, config: Path, launcher: list[str], env: dict) -> tuple[dict, dict]:
    """Per-step logs of an uninterrupted run and of one SIGKILLed after its first checkpoint and resumed."""
    def logged(out):
        state = json.loads((out / "multitask" / "checkpoint-8" / "trainer_state.json").read_text())
        return {entry["step"]: entry for entry in state["log_history"] if "loss" in entry}

    straight = tmp_path / "straight"
    subprocess.run([*launcher, str(RECIPE), "--config", str(config), "--output_dir", str(straight)], check=True,
                   cwd=ROOT, env=env, capture_output=True, timeout=900)
    out = tmp_path / "killed"
    process = subprocess.Popen([*launcher, str(RECIPE), "--config", str(config), "--output_dir", str(out)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (out / "multitask" / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    import psutil

    processes = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for victim in processes:  # the launcher and every worker, at once
        victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=60)
    process.wait()
    assert not (out / "multitask" / "checkpoint-8").exists(), "the run finished before it was killed"
    result = subprocess.run([*launcher, str(RECIPE), "--config", str(config), "--output_dir", str(out), "--resume"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "multitask stage: resuming from" in result.stderr
    return logged(straight), logged(out)


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.e2e)])  # 2 processes: 30 s, in CI's e2e
def test_a_killed_and_resumed_run_logs_the_losses_of_an_uninterrupted_one(tmp_path, tiny_llm, processes):
    """Every logged per-task loss and loss term of every step, bit for bit, for all three tasks: the random flips,
    expression subsets and turn subsets are a function of the schedule position, not of a stream a restart
    resets."""
    config = tiny_run_config(tmp_path, tiny_llm, max_steps=8, save_steps=2, num_eval_scenes=0, panel_samples=0,
                             report_to="none", max_turns=1, max_expressions=1, lr_scheduler_type="constant")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable]
    if processes == 2:  # with dynamic resolution for the dense tasks: the size of each batch is resumed too
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        env["VERSAVIT_CONFIG_OVERRIDES"] = json.dumps({"ddp_backend": "gloo", "depth_resolutions": ["56x56", "56x84"],
                                                       "segmentation_resolutions": ["84x56", "56x56"]})
    straight, resumed = kill_and_resume(tmp_path, config, launcher, env)
    assert sorted(straight) == sorted(resumed) == list(range(1, 9))
    keys = [key for key in straight[8] if key.startswith(("loss", "depth/", "segmentation/"))]
    assert {"loss_captioning", "loss_depth", "loss_segmentation", "segmentation/loss_dice"} <= set(keys)
    for step in range(1, 9):
        assert {k: resumed[step][k] for k in keys} == {k: straight[step][k] for k in keys}, step
