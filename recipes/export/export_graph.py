#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Export a trained backbone or task model as a graph for deployment: ONNX (runs in onnxruntime) or `torch.export`.

    python recipes/export/export_graph.py --model outputs/demo/backbone --task backbone --format onnx \
        --output_dir exported/backbone
    python recipes/export/export_graph.py --model outputs/demo/final --task depth --format dynamo \
        --output_dir exported/depth

Traces the model with transformers' exporter (`transformers.exporters.OnnxExporter` / `DynamoExporter`) on processor
inputs at `--size`, with dynamic image sizes, writes the `ExportedModel` folder (program, metadata, config) and then
checks it: the folder is loaded back and run on inputs of `--check_size`, and each output must equal the eager model's
within `--atol`. Every tower family exports; the number of images per call is `--num_images` for the Qwen towers and
any for the SigLIP, SigLIP2, InternViT and AIMv2 towers (see `versavit_trainer.export.graph`). Load the result with

    from transformers.exporters import ExportedModel
    exported = ExportedModel.from_pretrained("exported/backbone")   # trust_remote_code=True for a .pt2 program
    outputs = exported(**VersaViTImageProcessor()(images=[image], return_tensors="pt"))
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from modeling_versavit import VersaViTConfig
from versavit_trainer.core.models import require_task_weights
from versavit_trainer.export.graph import FORMATS, compare_outputs, export_graph, sample_inputs
from versavit_trainer.export.hub import TASK_CLASSES
from versavit_trainer.run_folder import claim_export_folder

TASKS = ("backbone", "depth", "segmentation")


@dataclass
class ExportGraphArguments:
    model: str = field(metadata={"help": "A VersaViT folder: a run's final/ or backbone/, or a task model."})
    output_dir: str = field(metadata={"help": "Where the ExportedModel folder is written."})
    task: str = field(default="backbone", metadata={"help": f"What to export, among {TASKS}."})
    format: str = field(default="onnx", metadata={"help": f"Graph format, among {FORMATS}."})
    size: int = field(default=448, metadata={"help": "Side of the square images it is traced on (multiple of 28)."})
    check_size: int = field(default=336, metadata={"help": "Side of the images the exported graph is checked on."})
    num_images: int = field(default=1, metadata={"help": "Images per call it is traced with (fixed by the export for "
                                                            "the Qwen towers, any for the others)."})
    atol: float = field(default=1e-3, metadata={"help": "Largest absolute difference from eager the check accepts."})
    overwrite: bool = field(default=False, metadata={"help": "Delete what --output_dir holds first (without it, a "
                                                             "folder that is not empty is refused)."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ExportGraphArguments).parse_args_into_dataclasses(args=argv)
    if args.task not in TASKS or args.format not in FORMATS or args.num_images < 1:
        raise SystemExit(
            f"export_graph.py: error: task {args.task!r} (choose among {TASKS}), format {args.format!r} (among "
            f"{FORMATS}), num_images {args.num_images} (at least 1)."
        )
    folder = Path(args.model)
    VersaViTConfig.from_pretrained(folder)  # a clear error for a folder that is not a VersaViT checkpoint
    claim_export_folder(args.output_dir, "export_graph.py", args.overwrite)  # before the (long) export
    try:
        require_task_weights(folder, args.task)
        model = TASK_CLASSES[args.task].from_pretrained(folder).eval()
        inputs = sample_inputs(model, (args.size, args.size), args.num_images)
        check = sample_inputs(model, (args.check_size, args.check_size), args.num_images, seed=1)
        exported = export_graph(model, inputs, args.format, dynamic=True)
    except ValueError as err:
        raise SystemExit(f"export_graph.py: error: {err}") from None
    output_dir = Path(args.output_dir)
    exported.save_pretrained(output_dir)

    from transformers.exporters import ExportedModel

    loaded = ExportedModel.from_pretrained(output_dir, trust_remote_code=args.format == "dynamo")
    differences = compare_outputs(loaded, model, check)
    report = {
        "model": str(folder), "task": args.task, "format": args.format, "traced_size": args.size,
        "checked_size": args.check_size, "num_images": args.num_images, "max_abs_difference": differences,
        "files": sorted(p.name for p in output_dir.iterdir()),
    }
    (output_dir / "export_check.json").write_text(json.dumps(report, indent=2) + "\n")
    for key, difference in differences.items():
        print(f"{key:<18} max |exported - eager| = {difference:.2e} at {args.check_size}x{args.check_size}")
    worst = max(differences.values())
    if not worst <= args.atol:
        raise SystemExit(
            f"export_graph.py: error: the exported graph differs from eager by {worst:.3g} > atol {args.atol}."
        )
    print(f"{args.format} export of {type(model).__name__} written to {output_dir}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
