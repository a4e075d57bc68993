"""Multi-task training of the tiny fixtures, run as its own process by the trainer tests (1 or 2 processes).

    python tests/run_multitask.py OUT [--max_steps N] [--batch_size B] [--save_steps S] [--resume CKPT]
                                      [--deepspeed CONFIG] [--slow_after_save SECONDS] [--frozen_language_model]
    torchrun --nproc_per_node 2 tests/run_multitask.py OUT --batch_size 1 ...

Writes OUT/losses.jsonl (one line per logged step, from the main process), OUT/final.safetensors (the trained
parameters, gathered from every process's shard under ZeRO-3 / FSDP2; main process) and OUT/engine.json (whether
the engine sharded the parameters, its FSDP units, the parameter elements the main process held).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from multitask_fixtures import task_specs, tiny_multitask_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from versavit_trainer import MultiTaskTrainer, MultiTaskTrainingArguments  # noqa: E402
from versavit_trainer.core.stages import release_process_group


class Recorder(TrainerCallback):
    def __init__(self, out: Path, slow_after_save: float):
        self.out, self.slow_after_save, self.saved = out, slow_after_save, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            with open(self.out / "losses.jsonl", "a") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            (self.out / f"saved-{state.global_step}").touch()
        self.saved = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.saved and self.slow_after_save:
            time.sleep(self.slow_after_save)  # gives the test time to kill the process between steps


def held(parameter) -> int:
    """Elements of `parameter` this process holds: its FSDP2 shard, its ZeRO-3 partition, or all of it."""
    if hasattr(parameter, "to_local"):
        return parameter.to_local().numel()
    return parameter.ds_tensor.numel() if hasattr(parameter, "ds_tensor") else parameter.numel()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--save_steps", type=int, default=0)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--deepspeed", default=None)
    parser.add_argument("--slow_after_save", type=float, default=0.0)
    parser.add_argument("--adam_epsilon", type=float, default=1e-2)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--frozen_language_model", action="store_true")
    parser.add_argument("--nan_segmentation", action="store_true", help="NaN text embeddings: every step is skipped")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)

    model = tiny_multitask_model(seed=0)
    sizes = dict.fromkeys(("captioning", "depth", "segmentation"), options.batch_size)
    args = MultiTaskTrainingArguments(
        output_dir=str(out / "run"),
        max_steps=options.max_steps,
        learning_rate=1e-3,
        backbone_learning_rate=1e-4,
        weight_decay=0.01,
        # Adam's first steps move each weight by ~lr x sign(gradient): an element whose gradient is zero up to float
        # noise (the depth head's last bias: the scale-and-shift-invariant loss ignores it) would step +lr or -lr
        # depending on summation order (one process vs two). With epsilon above those gradients, steps stay
        # proportional to gradients, so runs agree to float tolerance and a gradient-sync error stays visible.
        adam_epsilon=options.adam_epsilon,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="steps" if options.save_steps else "no",
        save_steps=options.save_steps or 500,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        deepspeed=options.deepspeed,
        activation_checkpointing=options.gradient_checkpointing,
        train_language_model=not options.frozen_language_model,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    specs = task_specs(model.config, sizes)
    if options.nan_segmentation:
        for sample in specs[2].dataset:
            sample["text_embeds"][0, 0] = float("nan")
    trainer = MultiTaskTrainer(model, args, specs, callbacks=[Recorder(out, options.slow_after_save)])
    trainer.train(resume_from_checkpoint=options.resume)
    state = trainer.full_state_dict()  # (gathered from the shards under ZeRO-3 / FSDP2)
    if trainer.is_world_process_zero():
        names = dict(trainer.trained_model.named_parameters())
        state = {name: value.detach().float().contiguous() for name, value in state.items() if name in names}
        save_file(state, out / "final.safetensors")
        lrs = sorted({group["lr"] for group in trainer.optimizer.param_groups})
        (out / "learning_rates.json").write_text(json.dumps(lrs))
        from torch.distributed.fsdp import FSDPModule

        units = sorted(type(m).__name__ for m in trainer.model.modules() if isinstance(m, FSDPModule))
        local = {name: held(p) for name, p in trainer.model.named_parameters()}  # what this process holds
        (out / "engine.json").write_text(json.dumps({"shards_parameters": trainer.shards_parameters,
                                                     "fsdp_units": units, "held": sum(local.values()),
                                                     "parameters": sum(v.numel() for v in state.values())}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
    release_process_group()  # as the recipes do (run_as_script): no abort at exit
