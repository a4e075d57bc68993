#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The pre-trained miniature: the starting tower of the proving ground and the demo, trained once.

    python recipes/pretrain_miniature.py                          # recipes/configs/miniature_pretrain.yaml, ~40 min
    python recipes/pretrain_miniature.py --asset_dir /tmp/mini --max_steps 50 --output_dir /tmp/mini_run

The paper post-trains a tower that language supervision has already made competent (Qwen2-VL's). The miniature's
analog: the demo's tower (4 blocks x 192, Qwen2-VL-style) and its captioning projector, trained from random init with
captioning / QA only, through the real SmolLM2 (frozen), on thousands of generated room scenes. The run is
recipes/multitask.py on the config (every multitask flag works here too); then the tower's and the projector's tensors
(float16, a few MB; the LLM is not shipped) with the tower's config and image processor go to `--asset_dir`
(default: the package's `versavit_trainer/assets/miniature`, committed with the project), with `miniature.json`:
this recipe, its config, the training record and the weights' sha256, which `miniature_path()` checks on every use.

On one machine the same config gives the same weights, byte for byte (the run is seeded and single-process; another
CPU or thread count may change the last bits of the floating-point sums, and so the digest).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from versavit_trainer.core.stages import recipe_module, run_as_script
from versavit_trainer.data.assets import MINIATURE, save_miniature

RECIPES = Path(__file__).resolve().parent
CONFIG = RECIPES / "configs" / "miniature_pretrain.yaml"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("--asset_dir", default=str(MINIATURE), help="Where the asset goes (default: %(default)s).")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if "--config" not in rest:
        rest = ["--config", str(CONFIG)] + rest
    multitask = recipe_module("multitask")
    if "-h" in rest or "--help" in rest:  # this recipe's flag, then every recipes/multitask.py flag (over --config)
        print(parser.format_help() + "\nThe training run's flags (recipes/multitask.py, over --config):\n")
        multitask.main(rest)
    summary = multitask.main(rest)
    if summary.get("interrupted"):
        print("Interrupted: run the same command with --resume to continue; no asset was written.")
        return summary
    output = Path(summary["output_dir"])
    config = yaml.safe_load((output / "config.yaml").read_text())
    stages = summary.get("stages", {})
    record = {
        "recipe": "recipes/pretrain_miniature.py",
        "command": " ".join(["python", "recipes/pretrain_miniature.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": config,
        "training": {name: {key: stage.get(key) for key in ("steps", "seconds", "final_losses") if key in stage}
                     for name, stage in stages.items()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    asset = save_miniature(output / "final", output / "backbone", Path(args.asset_dir), record)
    written = json.loads((asset / "miniature.json").read_text())
    print(f"miniature   {asset} (sha256 {written['sha256']}, {written['parameters']})")
    return {**summary, "asset_dir": str(asset), "sha256": written["sha256"]}


if __name__ == "__main__":
    run_as_script(main)
