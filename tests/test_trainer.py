"""MultiTaskTrainer: exactness against a hand-written step, stages, logging, bad inputs, resume and 2 processes."""

import copy
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from multitask_fixtures import COLLATORS, depth_samples, task_specs, tiny_multitask_model, training_args
from safetensors.torch import load_file

from versavit_trainer import (
    MultiTaskBatchSampler,
    MultiTaskTrainer,
    TaskSpec,
    apply_stage,
    training_parts,
)

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_multitask.py"
ROOT = HERE.parent


def test_one_step_equals_a_hand_written_reference(tmp_path):
    model = tiny_multitask_model()
    reference = copy.deepcopy(model)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    tasks = task_specs(model.config)
    trainer = MultiTaskTrainer(model, training_args(tmp_path), tasks)
    trainer.train()

    # The reference: one batch of each task in order, λ-scaled losses accumulated, then AdamW with two rates.
    apply_stage(reference, dict.fromkeys(training_parts(reference), 1.0))
    reference.train()
    decay = set(trainer.get_decay_parameter_names(reference))  # the Trainer's weight-decay rule
    groups = {}
    for name, p in reference.named_parameters():
        if p.requires_grad:
            lr = 1e-4 if name.split(".")[0] in ("visual", "projector", "language_model") else 1e-3
            groups.setdefault((lr, 0.01 if name in decay else 0.0), []).append(p)
    optimizer = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()])
    schedule = MultiTaskBatchSampler([len(t.dataset) for t in tasks], [t.batch_size for t in tasks], seed=0)
    for keys in itertools.islice(iter(schedule), len(tasks)):
        task = tasks[keys[0][0]]
        batch = task.collator([task.dataset[index] for _, index, _ in keys])
        (task.weight * reference(task=task.name, **batch).loss).backward()
    optimizer.step()

    trained = dict(model.named_parameters())
    changed = 0
    for name, expected in reference.named_parameters():
        torch.testing.assert_close(trained[name], expected, rtol=1e-5, atol=1e-7, msg=name)
        changed += not torch.equal(trained[name], initial[name])
    assert changed > 0.9 * sum(p.requires_grad for p in reference.parameters())
    for name in ("visual.merger.ln_q.weight", "segmentation_head.positional_embedding.positional_embedding"):
        assert torch.equal(trained[name], initial[name]), name  # frozen by design
    lrs = {group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs == {1e-3, 1e-4}


@pytest.mark.parametrize("rounds_per_step", [1, 2])
def test_per_task_losses_are_logged(tmp_path, rounds_per_step):
    """With several rounds per step the logged total is still Σ λ_τ x (the task's mean loss), not rounds x it."""
    model = tiny_multitask_model()
    args = training_args(tmp_path, max_steps=2, rounds_per_step=rounds_per_step)
    trainer = MultiTaskTrainer(model, args, task_specs(model.config))
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        for task in ("captioning", "depth", "segmentation"):
            assert f"loss_{task}" in entry and f"loss_{task}_weighted" in entry
        for term in ("depth/loss_ssi", "depth/loss_gm", "segmentation/loss_bce", "segmentation/loss_dice"):
            assert term in entry
        assert entry["skipped_samples"] == 0
        # The Trainer's loss of a step is Σ λ_τ L_τ.
        total = sum(entry[f"loss_{task}_weighted"] for task in ("captioning", "depth", "segmentation"))
        assert entry["loss"] == pytest.approx(total, rel=1e-4)


def test_several_rounds_per_step_average_their_gradients(tmp_path):
    """rounds_per_step=2: one optimizer step over 2 rounds of every task, each loss scaled by λ / 2. Plain SGD (its
    update is linear in the gradient, unlike AdamW's first step) against the same step written out by hand."""
    model = tiny_multitask_model()
    reference = copy.deepcopy(model)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    tasks = task_specs(model.config)
    args = training_args(tmp_path, rounds_per_step=2, optim="sgd", learning_rate=0.1, backbone_learning_rate=0.05,
                         weight_decay=0.0)
    trainer = MultiTaskTrainer(model, args, tasks)
    trainer.train()
    assert args.gradient_accumulation_steps == 2 * len(tasks)

    apply_stage(reference, dict.fromkeys(training_parts(reference), 1.0))
    reference.train()
    schedule = MultiTaskBatchSampler([len(t.dataset) for t in tasks], [t.batch_size for t in tasks], seed=0,
                                     rounds_per_step=2)
    for keys in itertools.islice(iter(schedule), 2 * len(tasks)):
        task = tasks[keys[0][0]]
        batch = task.collator([task.dataset[index] for _, index, _ in keys])
        (task.weight / 2 * reference(task=task.name, **batch).loss).backward()
    trained = dict(model.named_parameters())
    moved = 0
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.grad is None:
                continue
            lr = 0.05 if name.split(".")[0] in ("visual", "projector", "language_model") else 0.1
            expected = -lr * p.grad
            torch.testing.assert_close(trained[name] - initial[name], expected, rtol=1e-3, atol=1e-6,
                                       msg=lambda m: f"{name}: {m}")
            moved += bool(expected.abs().max() > 1e-6)
    assert moved > 10


def test_every_epoch_reads_its_own_part_of_the_schedule(tmp_path):
    """Past one epoch the Trainer's set_epoch reaches the batch sampler: epoch 2 reads the next stream positions (the
    next permutation of the data), never a replay of epoch 1's."""
    model = tiny_multitask_model()
    tasks = [TaskSpec("depth", depth_samples(model.config, count=4), COLLATORS["depth"], 2, 1.0)]
    trainer = MultiTaskTrainer(model, training_args(tmp_path, max_steps=6), tasks)
    seen = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        seen.append(list(inputs["stream_positions"]))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    assert trainer.state.epoch == 3  # 2 steps per epoch (4 samples, batch 2)
    assert seen == [[2 * step, 2 * step + 1] for step in range(6)]  # epoch 2 starts at position 4, not 0


def test_a_resumed_run_restores_the_global_random_state(tmp_path, monkeypatch):
    """Dropout (here the LLM's attention dropout) draws from the global RNG: a run resumed from checkpoint-2 equals
    the uninterrupted 4-step run only if the checkpoint's RNG states are restored (not re-seeded at start)."""
    def run(out, max_steps, resume=None):
        model = tiny_multitask_model(attention_dropout=0.5)
        args = training_args(out, max_steps=max_steps, save_strategy="steps", save_steps=2)
        trainer = MultiTaskTrainer(model, args, task_specs(model.config))
        trainer.train(resume_from_checkpoint=resume)
        return dict(model.named_parameters()), [e["loss"] for e in trainer.state.log_history if "loss" in e
                                                 and e["step"] > 2]

    straight, straight_losses = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed, resumed_losses = run(tmp_path / "b", 4, resume=str(tmp_path / "b" / "run" / "checkpoint-2"))
    assert len(straight_losses) == 2 and resumed_losses == straight_losses
    for name, value in straight.items():
        assert torch.equal(resumed[name], value), name
    # the control: the dropout masks matter, so a resume that re-seeds instead of restoring ends elsewhere
    monkeypatch.setattr(MultiTaskTrainer, "_load_rng_state", lambda self, checkpoint: None)
    reseeded, reseeded_losses = run(tmp_path / "b", 4, resume=str(tmp_path / "b" / "run" / "checkpoint-2"))
    assert reseeded_losses != straight_losses


def test_bf16_mixed_precision_and_gradient_checkpointing_train(tmp_path):
    model = tiny_multitask_model()
    before = model.depth_head.head.conv2.weight.detach().clone()
    args = training_args(tmp_path, max_steps=2, bf16=True, activation_checkpointing=True)
    trainer = MultiTaskTrainer(model, args, task_specs(model.config))
    trainer.train()
    assert model.is_activation_checkpointing
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    assert not torch.equal(model.depth_head.head.conv2.weight, before)


def test_alignment_stage_trains_only_the_projector(tmp_path):
    model = tiny_multitask_model()
    initial = {name: p.detach().clone() for name, p in model.state_dict().items()}
    tasks = [t for t in task_specs(model.config) if t.name == "captioning"]
    trainer = MultiTaskTrainer(model, training_args(tmp_path, max_steps=2, stage="alignment"), tasks)
    trainer.train()
    assert {group["lr"] for group in trainer.optimizer.param_groups} == {1e-3}  # alignment_learning_rate
    for name, value in model.state_dict().items():
        if name.startswith("projector."):
            assert not torch.equal(value, initial[name]), name
        else:
            assert torch.equal(value, initial[name]), name
    with pytest.raises(ValueError, match="stage 'alignment' is the captioning warm-up"):
        MultiTaskTrainer(model, training_args(tmp_path, stage="alignment"), task_specs(model.config))


def test_a_frozen_language_model_stays_unchanged_and_still_passes_gradients(tmp_path):
    model = tiny_multitask_model()
    initial = {name: p.detach().clone() for name, p in model.state_dict().items()}
    args = training_args(tmp_path, max_steps=2, train_language_model=False)
    trainer = MultiTaskTrainer(model, args, task_specs(model.config))
    trainer.train()
    trained = {name for name, value in model.state_dict().items() if not torch.equal(value, initial[name])}
    assert not any(name.startswith("language_model.") for name in trained)
    assert any(name.startswith("projector.") for name in trained)  # the captioning loss reaches it through the LLM
    assert any(name.startswith("visual.blocks.") for name in trained)
    assert not any(p.requires_grad for p in model.language_model.parameters())


def test_bad_task_settings_fail_at_start(tmp_path):
    model = tiny_multitask_model()
    data = depth_samples(model.config, count=2)
    with pytest.raises(ValueError, match=r"TaskSpec\('depth'\).dataset: is empty"):
        TaskSpec("depth", [], COLLATORS["depth"], 2)
    with pytest.raises(
        ValueError, match=r"TaskSpec\('depth'\).weight: the loss weight λ must be a finite value >= 0, got -0.1"
    ):
        TaskSpec("depth", data, COLLATORS["depth"], 2, weight=-0.1)
    with pytest.raises(ValueError, match=r"TaskSpec\('depth'\).batch_size: must be a positive integer, got 0"):
        TaskSpec("depth", data, COLLATORS["depth"], 0)
    with pytest.raises(ValueError, match=r"tasks: unknown objective 'normals'"):
        MultiTaskTrainer(model, training_args(tmp_path), [TaskSpec("normals", data, COLLATORS["depth"], 2)])
    with pytest.raises(ValueError, match="tasks: one TaskSpec per task"):
        MultiTaskTrainer(model, training_args(tmp_path), [TaskSpec("depth", data, COLLATORS["depth"], 2)] * 2)
    with pytest.raises(ValueError, match="gradient_accumulation_steps: set by the schedule"):
        MultiTaskTrainer(model, training_args(tmp_path, gradient_accumulation_steps=2), task_specs(model.config))
    with pytest.raises(ValueError, match="stage: expected one of"):
        training_args(tmp_path, stage="pretraining")


class Flaky(torch.utils.data.Dataset):
    """A dataset whose listed indices fail to decode, as a corrupt image file would."""

    def __init__(self, samples, bad):
        self.samples, self.bad = samples, set(bad)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        if index in self.bad:
            raise OSError(f"image file is truncated (sample {index})")
        return self.samples[index]


def test_samples_that_fail_to_decode_are_skipped_and_counted(tmp_path):
    model = tiny_multitask_model()
    tasks = task_specs(model.config)
    depth = tasks[1]
    depth.dataset = Flaky(depth.dataset, bad=range(0, 12, 2))  # half of the depth samples are corrupt
    trainer = MultiTaskTrainer(model, training_args(tmp_path, max_steps=3), tasks)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs[-1]["skipped_samples"] > 0 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    depth.dataset = Flaky(depth.dataset.samples, bad=range(12))
    with pytest.raises(RuntimeError, match="task depth: 16 consecutive samples from index"):
        MultiTaskTrainer(tiny_multitask_model(), training_args(tmp_path, max_steps=1), tasks).train()


def run(args, env=None, timeout=600):
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def read_losses(path):
    return {entry["step"]: entry for entry in map(json.loads, path.read_text().splitlines())}


@pytest.mark.e2e  # 20 s; make test keeps the same check on a whole recipe run (test_bad_data.py, one process)
def test_sigkill_and_resume_continue_the_same_loss_sequence(tmp_path):
    steps = 6
    run([sys.executable, str(RUNNER), str(tmp_path / "straight"), "--max_steps", str(steps)])
    straight = read_losses(tmp_path / "straight" / "losses.jsonl")

    out = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            str(RUNNER),
            str(out),
            "--max_steps",
            str(steps),
            "--save_steps",
            "3",
            "--slow_after_save",
            "3",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while not (out / "saved-3").exists():
        assert process.poll() is None, process.stderr.read().decode()[-4000:]
        assert time.time() < deadline, "no checkpoint was written"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = read_losses(out / "losses.jsonl")
    assert max(killed) < steps  # it really died mid-run

    (out / "losses.jsonl").unlink()
    run(
        [
            sys.executable,
            str(RUNNER),
            str(out),
            "--max_steps",
            str(steps),
            "--resume",
            str(out / "run" / "checkpoint-3"),
        ]
    )
    resumed = read_losses(out / "losses.jsonl")
    assert sorted(resumed) == list(range(4, steps + 1))
    keys = [f"loss_{task}" for task in ("captioning", "depth", "segmentation")] + ["loss"]
    for step in range(1, steps + 1):
        source = killed if step <= 3 else resumed
        for key in keys:
            assert source[step][key] == pytest.approx(straight[step][key], rel=1e-6, abs=1e-9), (step, key)


def two_process_command(out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(RUNNER), str(out), "--batch_size", "1", *extra]


@pytest.fixture(scope="module")
def single_process_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, str(RUNNER), str(out), "--max_steps", "3", "--batch_size", "2"])
    return load_file(out / "final.safetensors")


def assert_same_parameters(trained, reference):
    assert trained.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, rtol=2e-5, atol=2e-6, msg=name)


@pytest.mark.parametrize("checkpointing", [False, pytest.param(True, marks=pytest.mark.e2e)],
                         ids=["plain", "gradient-checkpointing"])  # the second: the same exactness, in CI's e2e
def test_two_ddp_processes_match_one_process(tmp_path, single_process_reference, checkpointing):
    out = tmp_path / "ddp"
    extra = ["--gradient_checkpointing"] if checkpointing else []
    run(two_process_command(out, "--max_steps", "3", *extra), env={"OMP_NUM_THREADS": "1"})
    assert_same_parameters(load_file(out / "final.safetensors"), single_process_reference)


def test_two_deepspeed_zero2_processes_match_one_process(tmp_path, single_process_reference):
    out = tmp_path / "zero2"
    config = ROOT / "recipes" / "deepspeed" / "zero2.json"
    env = {
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions"),
    }
    run(two_process_command(out, "--max_steps", "3", "--deepspeed", str(config)), env=env)
    assert_same_parameters(load_file(out / "final.safetensors"), single_process_reference)
    assert json.loads((out / "learning_rates.json").read_text()) == [1e-4, 1e-3]  # our groups, not DeepSpeed's


# ---------------------------------------------------------------------------------------------- sharded engines
SHARDED_ENV = {"OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
               "TORCH_EXTENSIONS_DIR": str(ROOT / ".cache" / "torch_extensions")}


def sharded_command(engine, out, *extra):
    """Two processes of the runner under ZeRO-3 (`--deepspeed`, as the Trainer takes it) or FSDP2 (accelerate's
    launcher with the shipped config; `fsdp_on_cpu.py` lets accelerate shard on a machine without a GPU)."""
    if engine == "zero3":
        return two_process_command(out, "--deepspeed", str(ROOT / "recipes" / "deepspeed" / "zero3.json"), *extra)
    from test_multitask_recipe import free_port

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "recipes" / "accelerate" / "fsdp2.yaml"), "--num_processes", "2", "--main_process_port",
            str(free_port()), str(HERE / "fsdp_on_cpu.py"), str(RUNNER), str(out), "--batch_size", "1", *extra]


@pytest.fixture(scope="module")
def frozen_llm_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen")
    run([sys.executable, str(RUNNER), str(out), "--max_steps", "3", "--batch_size", "2", "--frozen_language_model"])
    return load_file(out / "final.safetensors"), read_losses(out / "losses.jsonl")


@pytest.mark.e2e  # ~20 s each: make test keeps DDP's and ZeRO-2's exactness, CI's e2e the sharding engines'
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
@pytest.mark.parametrize("engine", ["zero3", "fsdp2"])
def test_two_sharded_processes_match_one_process(tmp_path, frozen_llm_reference, engine, checkpointing):
    """ZeRO-3 / FSDP2 over two processes, the LLM frozen (with and without the trainer's activation checkpointing):
    each process held half the parameters (FSDP2: one unit per tower block and LLM layer), and the per-step losses
    and gathered weights are the one-process run's to float rounding (the two processes sum the same gradients in
    another order); the frozen LLM and the parts frozen by design are bit for bit the initial ones."""
    reference, reference_losses = frozen_llm_reference
    out = tmp_path / engine
    extra = ["--gradient_checkpointing"] if checkpointing else []
    run(sharded_command(engine, out, "--max_steps", "3", "--frozen_language_model", *extra), env=SHARDED_ENV)
    trained = load_file(out / "final.safetensors")
    assert_same_parameters(trained, reference)
    losses = read_losses(out / "losses.jsonl")
    for step, entry in reference_losses.items():
        for key in ("loss", "loss_captioning", "loss_depth", "loss_segmentation", "grad_norm"):
            assert losses[step][key] == pytest.approx(entry[key], rel=1e-5), (step, key)
    initial = dict(tiny_multitask_model(seed=0).named_parameters())
    for name, value in trained.items():
        if name.startswith("language_model.") or name.startswith("visual.merger."):
            assert torch.equal(value, initial[name].detach()), name
    engine_record = json.loads((out / "engine.json").read_text())
    assert engine_record["shards_parameters"] and engine_record["held"] < 0.55 * engine_record["parameters"]
    if engine == "fsdp2":
        assert engine_record["fsdp_units"].count("FSDPQwen2VLVisionBlock") == 3
        assert "FSDPLlamaDecoderLayer" in engine_record["fsdp_units"]
    assert json.loads((out / "learning_rates.json").read_text()) == [1e-4, 1e-3]


@pytest.mark.e2e  # 2 x 2 two-process runs, ~50 s
@pytest.mark.parametrize("engine", ["zero3", "fsdp2"])
def test_a_sharded_run_resumed_mid_stage_equals_the_uninterrupted_one(tmp_path, frozen_llm_reference, engine):
    """Stopped after its step-2 checkpoint (ZeRO-3: DeepSpeed's partitioned state; FSDP2: accelerate's sharded
    state dict) and resumed in two processes: the uninterrupted run's losses and weights."""
    reference, reference_losses = frozen_llm_reference
    out = tmp_path / engine
    run(sharded_command(engine, out, "--max_steps", "2", "--save_steps", "2", "--frozen_language_model"),
        env=SHARDED_ENV)
    (out / "losses.jsonl").unlink()
    run(sharded_command(engine, out, "--max_steps", "3", "--frozen_language_model", "--resume",
                        str(out / "run" / "checkpoint-2")), env=SHARDED_ENV)
    assert_same_parameters(load_file(out / "final.safetensors"), reference)
    resumed = read_losses(out / "losses.jsonl")
    assert sorted(resumed) == [3]
    assert resumed[3]["loss"] == pytest.approx(reference_losses[3]["loss"], rel=1e-5)


@pytest.mark.e2e  # two two-process runs, ~25 s
@pytest.mark.parametrize("engine", ["zero3", "fsdp2"])
def test_sharded_steps_with_non_finite_losses_are_skipped_whole(tmp_path, engine):
    """Every step has a NaN segmentation loss: under ZeRO-3 (whose optimizer steps parameter sub-groups one by one,
    and skips non-finite gradients itself before our guard runs) and FSDP2 no weight moves, each step is counted
    once as skipped, and the step after a skipped one is judged on its own losses."""
    out = tmp_path / engine
    run(sharded_command(engine, out, "--max_steps", "2", "--nan_segmentation"), env=SHARDED_ENV)
    initial = dict(tiny_multitask_model(seed=0).named_parameters())
    for name, value in load_file(out / "final.safetensors").items():
        assert torch.equal(value, initial[name].detach()), name
    losses = read_losses(out / "losses.jsonl")
    assert [losses[step]["skipped_steps"] for step in (1, 2)] == [1, 2]


def test_multitask_checkpoint_round_trips_and_feeds_every_task_class(tmp_path):
    from modeling_versavit import (
        VersaViTForCaptioning,
        VersaViTForDepthEstimation,
        VersaViTForMultiTask,
        VersaViTForReferringSegmentation,
        VersaViTModel,
    )

    model = tiny_multitask_model()
    model.save_pretrained(tmp_path)
    reloaded, info = VersaViTForMultiTask.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items())
    for model_class in (
        VersaViTForCaptioning,
        VersaViTForDepthEstimation,
        VersaViTForReferringSegmentation,
        VersaViTModel,
    ):
        task_model, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"], model_class.__name__
        assert all(torch.equal(v, expected[k]) for k, v in task_model.state_dict().items()), model_class.__name__


def test_parts_train_at_their_own_rates_or_stay_frozen(tmp_path):
    """Parameter groups come from the part that owns each parameter: a frozen part does not change (bit for bit),
    and each trained part ran at its own learning rate."""
    model = tiny_multitask_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = training_args(tmp_path, max_steps=2, part_learning_rates={"backbone": "frozen", "depth_head": 3e-3},
                         train_language_model=False)
    trainer = MultiTaskTrainer(model, args, task_specs(model.config))
    trainer.train()
    rates = {group["part"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert rates == {"projector": 1e-4, "depth_head": 3e-3, "segmentation_head": 1e-3}  # constant schedule
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        if name.startswith(("visual.", "language_model.")):
            assert not changed, name  # frozen: the backbone by part_learning_rates, the LLM by train_language_model
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("depth_head."))
    assert {part: trainer.learning_rate_of(name) for name, part in (("visual.patch_embed.proj.weight", "backbone"),
                                                                  ("depth_head.head.conv1.weight", "depth_head"))
            } == {"backbone": None, "depth_head": 3e-3}
    with pytest.raises(ValueError, match=r"part_learning_rates: 'tower' is not a part of this model"):
        MultiTaskTrainer(tiny_multitask_model(), training_args(tmp_path, part_learning_rates={"tower": 1e-4}),
                         task_specs(model.config))
    with pytest.raises(ValueError, match=r"part_learning_rates.backbone: expected a finite rate >= 0 or 'frozen'"):
        training_args(tmp_path, part_learning_rates={"backbone": "fast"})
    alignment = MultiTaskTrainer(tiny_multitask_model(), training_args(tmp_path, stage="alignment"),
                                 [t for t in task_specs(model.config) if t.name == "captioning"])
    assert alignment.part_rates == {"backbone": None, "projector": 1e-3, "language_model": None,
                                    "depth_head": None, "segmentation_head": None}
