#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Publish a VersaViT checkpoint on the Hub: the backbone and / or each task model, with a model card.

    python recipes/export/push_to_hub.py --model outputs/demo/final --repo_id org/versavit \\
        --tasks backbone depth segmentation --base_model Qwen/Qwen2-VL-7B-Instruct --results probes.json
    python recipes/export/push_to_hub.py --model outputs/demo/final --repo_id org/versavit --local_dir out/  # no upload

One repository per task: the first task goes to `repo_id`, the others to `repo_id-<task>`. Each holds safetensors
weights, the config with `auto_map` and the model code (loads with trust_remote_code=True), the image processor
(plus the tokenizer and captioning processor for captioning), and a README.md model card rendered from
hub_cards/versavit.md (pipeline tag, base model, datasets, license, one line of `pipeline(...)` per task the model
serves, and `model-index` from --results: a JSON list of {"task_type", "dataset_type", "dataset_name",
"metric_type", "metric_value"}). The config names the VersaViT pipelines in `custom_pipelines` and the sentence
encoder they embed texts with in `text_encoder` (`--text_encoder` sets its Hub id). `--local_dir` writes the exact
folders that would be uploaded (`local_dir/<task>` for several tasks) and uploads nothing.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, HfArgumentParser

from modeling_versavit import VersaViTConfig, VersaViTImageProcessor
from versavit_trainer.core.models import TASK_WEIGHTS, require_task_weights
from versavit_trainer.export.hub import TASK_CLASSES, export_folder, push_to_hub
from versavit_trainer.run_folder import claim_export_folder


@dataclass
class PushArguments:
    model: str = field(
        metadata={"help": "A VersaViT folder: a run's final/ (multi-task) or backbone/, or any task model."}
    )
    repo_id: str = field(metadata={"help": "Hub repository of the first task (the others get '-<task>')."})
    tasks: list[str] = field(
        default_factory=lambda: ["backbone"], metadata={"help": f"What to publish, among {sorted(TASK_WEIGHTS)}."}
    )
    local_dir: str | None = field(
        default=None, metadata={"help": "Write the upload folders here instead of uploading."}
    )
    base_model: str | None = field(default=None, metadata={"help": "The model it was post-trained from (Hub id)."})
    datasets: list[str] = field(default_factory=list, metadata={"help": "Training datasets (Hub ids) for the card."})
    license: str = field(default="apache-2.0", metadata={"help": "License identifier for the card."})
    results: str | None = field(
        default=None, metadata={"help": "JSON file: a list of evaluation results (model-index)."}
    )
    text_encoder: str | None = field(default=None, metadata={
        "help": "Hub id of the sentence encoder the model's texts were embedded with, recorded as config.text_encoder "
                "in the upload (the referring and retrieval pipelines embed with it). Default: the recorded one; "
                "a run records the local folder it loaded, e.g. the packaged MiniLM, whose Hub id is "
                "sentence-transformers/all-MiniLM-L6-v2."})
    private: bool = field(default=False, metadata={"help": "Create the repositories as private."})
    overwrite: bool = field(default=False, metadata={"help": "Delete what --local_dir holds first (without it, a "
                                                             "folder that is not empty is refused)."})


def main(argv: list[str] | None = None) -> dict[str, str]:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    unknown = [task for task in args.tasks if task not in TASK_WEIGHTS]
    if unknown or not args.tasks:
        raise SystemExit(
            f"push_to_hub.py: error: tasks: {unknown or args.tasks} (choose among {sorted(TASK_WEIGHTS)})."
        )
    folder = Path(args.model)
    VersaViTConfig.from_pretrained(folder)  # a clear error for a folder that is not a VersaViT checkpoint
    for task in args.tasks:
        try:
            require_task_weights(folder, task)
        except ValueError as err:
            raise SystemExit(f"push_to_hub.py: error: {err} It cannot publish task {task!r}.") from None
    if args.local_dir:
        claim_export_folder(args.local_dir, "push_to_hub.py", args.overwrite)
    results = json.loads(Path(args.results).read_text()) if args.results else None
    card = {
        "base_model": args.base_model,
        "datasets": args.datasets or None,
        "license": args.license,
        "results": results,
        "text_encoder": args.text_encoder,
    }
    published = {}
    for position, task in enumerate(args.tasks):
        repo_id = args.repo_id if position == 0 else f"{args.repo_id}-{task}"
        model = TASK_CLASSES[task].from_pretrained(folder)
        extras = {}
        if (folder / "preprocessor_config.json").is_file():
            extras["image_processor"] = VersaViTImageProcessor.from_pretrained(folder)
        if task in ("captioning", "multitask") and (folder / "tokenizer_config.json").is_file():
            extras["tokenizer"] = AutoTokenizer.from_pretrained(folder)
        if args.local_dir:
            target = Path(args.local_dir) / task if len(args.tasks) > 1 else Path(args.local_dir)
            published[task] = str(export_folder(model, target, repo_id, **extras, **card))
            print(f"{task:<13} {published[task]}  (would be {repo_id})")
        else:
            commit = push_to_hub(model, repo_id, private=args.private, **extras, **card)
            published[task] = str(getattr(commit, "commit_url", commit))
            print(f"{task:<13} https://huggingface.co/{repo_id}")
    return published


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
