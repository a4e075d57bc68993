#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The proving ground: the paper's Table 4 (and, behind --tables, Tables 5 and 6 and the SAILViT comparison) in
miniature on generated scenes.

    make reproduce                                              # Table 4, 3 seeds (this recipe, its default config)
    python recipes/reproduce.py --tables table4 table5          # both tables (Table 5 adds three λ arms per seed)
    python recipes/reproduce.py --tables sailvit                # SAILViT's staged refinement vs VersaViT, same budget
    python recipes/reproduce.py --tables visper                 # VisPer-LM vs NTP only vs VersaViT's tower (MLLMs)
    python recipes/reproduce.py --quick --output_dir /tmp/pg    # every step of the pipeline in a few minutes

1. The baseline towers (the paper's language-trained MLLM tower): the pre-trained miniature (trainer/assets/miniature,
   recipes/pretrain_miniature.py: a small Qwen2-VL-style tower and its projector trained with captioning / QA only,
   through SmolLM2, on 3000 room scenes) continued with captioning with each seed (`baseline:` options); one per seed.
2. The arms: each seed's baseline post-trained by recipes/multitask.py (alignment warm-up, then multi-task training
   of the arm's tasks and λ; `post_training:` options shared by all, same steps and data; the SAILViT arm runs the
   stages of recipes/configs/sailvit_default.yaml instead).
3. The controls, with every table of towers: a random tower of the same shape (every probe's negative control), the
   baseline post-trained on depth alone and on class segmentation alone (masks of every object of a shape class:
   the probes' positive controls); QA's are the baseline's MLLM shown a grey image and the majority-answer floor.
4. Every tower measured frozen on held-out scenes no run trained on: depth and segmentation linear probes (RMSE,
   AbsRel, δ1 within 10 m; mIoU over the object classes, walls and ground apart), and QA accuracy after the paper's
   VQA-evaluation protocol (`qa_protocol:` stages: a fresh projector, then projector + LLM, the tower frozen), exact
   match, with the scenes and with a grey image.
5. Per table: mean ± std over seeds beside the paper's numbers; whether each instrument passed its controls; whether
   each of the paper's claims shows and whether the seeds' spreads separate it (no verdict on a failed instrument).

Writes to output_dir: <table>.md per table (table4.md, ...), <table>.png (bar charts with the seeds' spread),
figure4.png (baseline vs. VersaViT probe predictions on the same held-out scenes, as the paper's Figure 4),
instruments.md (each instrument against its controls), results.json (every number, instrument and claim),
measurements/<arm>-seed<k>.json, and runs/ (each training run's folder, config and log; the LLM copies are pruned).
Finished runs and measurements are reused: an interrupted reproduction continues, a finished one only redraws its
outputs. Every run's config is checked before the first one trains.
"""

import logging
from pathlib import Path

from versavit_trainer.config import ConfigError, DefaultConfig, parse_config
from versavit_trainer.core.stages import recipe_module, run_as_script
from versavit_trainer.evaluation.proving_ground import ReproduceArguments, reproduce

RECIPES = Path(__file__).resolve().parent
DEFAULT_CONFIG = DefaultConfig(RECIPES / "configs" / "reproduce_default.yaml",
                               "Table 4 in miniature by default (--tables: table5, table6, sailvit, visper too), 3 "
                               "seeds with the instruments' controls, about 56 minutes for Table 4 on 2 CPU cores")


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_config((ReproduceArguments,), argv, description=__doc__, default_config=DEFAULT_CONFIG)
    multitask = recipe_module("multitask")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)

    def train(run_argv: list[str]) -> dict:
        summary = multitask.main(run_argv)
        if summary.get("interrupted"):
            raise KeyboardInterrupt(f"a run was interrupted ({summary.get('signal')}); run again to continue")
        return summary

    def check(run_argv: list[str]):
        try:
            return parse_config(multitask.ARGUMENT_TYPES, run_argv)
        except SystemExit as err:  # argparse's own errors
            raise ConfigError(str(err)) from None

    return reproduce(args, train, check)


if __name__ == "__main__":
    run_as_script(main)
