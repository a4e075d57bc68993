# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Running the training stages of a recipe: one `MultiTaskTrainer` per stage in its own folder, resumable, with a
clean stop on Ctrl-C / SIGTERM, and the folders a finished run leaves behind."""

import dataclasses
import logging
import sys
import time
from pathlib import Path

from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME

from modeling_versavit import VersaViTConfig, VersaViTModel

from ..config import ConfigError
from ..data.processors import captioning_processor, image_processor_for
from ..run_folder import incomplete_files
from .arguments import MultiTaskTrainingArguments
from .models import CONFIG_BOOKKEEPING
from .reporting import GracefulStop
from .trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)
INTERRUPTED_EXIT_CODES = {2: 130, 15: 143}  # SIGINT, SIGTERM -> the exit codes a shell reports for them

# What a config of a task model holds that a backbone-only config does not.
_TASK_ONLY_KEYS = CONFIG_BOOKKEEPING | {"text_config", "image_token_id", "mllm_language_model", "tasks", "task_tokens",
                                       "num_task_tokens"}


def stage_arguments(args: MultiTaskTrainingArguments, stage: str, output_dir: Path, **changes):
    """A copy of `args` for one stage, writing to its own folder."""
    return dataclasses.replace(args, stage=stage, output_dir=str(output_dir), **changes)


def last_complete_checkpoint(folder) -> str | None:
    """The newest `checkpoint-N` of `folder` that was written to the end, or None.

    A checkpoint with a file that was not written to the end (`run_folder.incomplete_file`: the process was killed
    while saving, or a file was truncated since) is passed over with a warning naming the file, and the one before
    it is taken."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for checkpoint in candidates:
        damaged = incomplete_files(checkpoint)
        if not (checkpoint / TRAINER_STATE_NAME).is_file():
            damaged.setdefault(TRAINER_STATE_NAME, "missing (written last)")
        if not damaged:
            return str(checkpoint)
        logger.warning("%s is incomplete (%s): passing it over for the checkpoint before it", checkpoint,
                       "; ".join(f"{name}: {problem}" for name, problem in damaged.items()))
    return None


def run_stage(model, args: MultiTaskTrainingArguments, specs, resume: bool, stop: GracefulStop,
              label: str | None = None):
    """Train one stage (`label`: its name in messages; default `args.stage`); with `resume`, from the last complete
    checkpoint in its folder (if any). Returns the trainer (with `resumed_from_step`), the seconds spent and, when a
    signal stopped it, a description of where (else None)."""
    label = label or args.stage
    trainer = MultiTaskTrainer(model, args, specs, callbacks=[stop])
    checkpoint = last_complete_checkpoint(args.output_dir) if resume else None
    if checkpoint:
        logger.info("%s stage: resuming from %s", label, checkpoint)
    trainer.resumed_from_step = 0
    if checkpoint:
        trainer.resumed_from_step = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME)).global_step
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    if trainer.is_deepspeed_enabled:
        # The ZeRO optimizer's gradient hooks stay on the parameters after train(): a later stage's engine would find
        # the stale ones firing as well. Remove them (the module and its trained weights are untouched).
        trainer.model_wrapped.destroy()
    interrupted = None
    if stop.stopped_at is not None:
        saved = last_complete_checkpoint(args.output_dir)
        interrupted = {"interrupted": True, "signal": stop.requested, "stage": label, "step": stop.stopped_at,
                       "checkpoint": saved}
        if trainer.is_world_process_zero():
            print(f"\nInterrupted in the {label} stage at step {stop.stopped_at}; checkpoint saved: {saved}.\n"
                  "Re-run the same command with --resume to continue.", flush=True)
    return trainer, seconds, interrupted


def save_model_folders(model, tokenizer, output_dir: Path, caption_max_pixels: int,
                       whole: dict | None = None) -> tuple[dict[str, Path], object]:
    """`final/`: the model with its tokenizer and processors (loads into every task class with `from_pretrained`);
    `backbone/`: the encoder alone, a `VersaViTModel` with its image processor (`AutoModel.from_pretrained`).

    `whole`: the model's state gathered from the processes' shards (ZeRO-3, FSDP2), when `model` holds only this
    process's; `final/` is written from it and read back as the whole model the rest is made from. Returns the
    folders and the whole model (`model` itself when it was not sharded)."""
    final, backbone_dir = output_dir / "final", output_dir / "backbone"
    image_processor = image_processor_for(model.config)  # the tower's patch and merge sizes
    if whole is not None:  # tied tensors (the LLM's embeddings and head) gathered as copies are one tensor again
        state, first = {}, {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            state[name] = state[first[id(tensor)]] if id(tensor) in first else whole[name]
            first.setdefault(id(tensor), name)
        model.save_pretrained(final, state_dict=state)
        model = type(model).from_pretrained(final)
    else:
        model.save_pretrained(final)
    if tokenizer is not None:  # the captioning processor: tokenizer + the image processor capped at caption_max_pixels
        captioning_processor(tokenizer, caption_max_pixels, model.config).save_pretrained(final)
    else:
        image_processor.save_pretrained(final)
    settings = {k: v for k, v in model.config.to_dict().items() if k not in _TASK_ONLY_KEYS}
    backbone = VersaViTModel(VersaViTConfig(**settings))
    backbone.visual.load_state_dict(model.visual.state_dict())
    backbone.save_pretrained(backbone_dir)
    image_processor.save_pretrained(backbone_dir)
    return {"final": final, "backbone": backbone_dir}, model


def run_as_script(main) -> None:
    """A recipe's `__main__`: a configuration error is one line (no traceback); a run stopped by a signal exits with
    the shell's code for it (130 for SIGINT, 143 for SIGTERM)."""
    script = Path(sys.argv[0]).name
    try:
        result = main()
    except ConfigError as err:
        sys.exit(f"{script}: error: {err}")
    finally:
        release_process_group(wait=sys.exc_info()[0] is None)
    if result.get("interrupted"):
        sys.exit(INTERRUPTED_EXIT_CODES.get(result["signal"], 1))


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_module(name: str):
    """A recipe of this checkout's recipes/ (e.g. "multitask"), imported as a module: the recipes that run another
    one (reproduce.py, pretrain_miniature.py) call its `main(argv)` in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"versavit_recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def release_process_group(wait: bool = True) -> None:
    """Shut this process's `torch.distributed` group down, if there is one, after a run (`wait`: once every rank has
    got here; False after an error, when another rank may never come). Left to the interpreter's exit, the group
    (held by the DDP wrapper's reducer until the garbage collector frees it) can be torn down while its gloo thread
    still runs, and the process aborts ("terminate called without an active exception", SIGABRT) after a run that
    finished, which the launcher reports as failed: 4 of 28 two-process runs of tests/run_multitask.py before, 0 of 50
    with this."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # the run's DDP wrapper and its reducer are freed now, not at interpreter teardown
        if wait:
            dist.barrier()  # every rank has finished its work (the main process's saving included)
        dist.destroy_process_group()


def final_losses(history: list[dict]) -> dict[str, float]:
    """Each task's last logged (unweighted) loss in a Trainer log history."""
    losses = {}
    for entry in history:
        losses.update({k: v for k, v in entry.items() if k.startswith("loss_") and not k.endswith("_weighted")})
    return {k.removeprefix("loss_"): v for k, v in losses.items()}


__all__ = [
    "INTERRUPTED_EXIT_CODES",
    "final_losses",
    "last_complete_checkpoint",
    "recipe_module",
    "release_process_group",
    "run_as_script",
    "run_stage",
    "save_model_folders",
    "stage_arguments",
]
