# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VersaViT (the paper this library started from) as a method: its curriculum, from the run's flags."""

from ..core.curriculum import Stage, stage_objective


def versavit_stages(data_args, run_args) -> list[Stage]:
    """The VersaViT curriculum of the flags: the captioning-alignment warm-up (when captioning is among `tasks` and
    `alignment_max_steps` is not 0; projector only), then multi-task training of `tasks` (paper §4)."""
    stages = []
    if "captioning" in data_args.curriculum_tasks and run_args.alignment_max_steps != 0:
        stages.append(Stage("alignment", [stage_objective("captioning", {}, data_args)],
                            {"stage": "alignment", "max_steps": run_args.alignment_max_steps,
                             "num_train_epochs": run_args.alignment_num_train_epochs}))
    stages.append(Stage("multitask", [stage_objective(name, {}, data_args) for name in data_args.curriculum_tasks],
                        {"stage": "multitask"}))
    return stages


__all__ = ["versavit_stages"]
