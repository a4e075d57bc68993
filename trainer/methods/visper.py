# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""VisPer-LM (arXiv 2412.09585; summary in the project's papers; code: SHI-Labs/VisPer-LM) as a method: the LLM's
hidden states learn to predict frozen experts' embeddings while the MLLM is pre-trained, so dense perception enters
the MLLM from the LLM's side (VersaViT and SAILViT change the vision tower; VisPer-LM leaves it frozen).

Its curriculum is two stages:

| stage                | trains                                             | objectives                             |
|----------------------|----------------------------------------------------|----------------------------------------|
| `pretrain`           | projector, embedding predictors, task tokens       | `distillation` (next-token + embedding)|
| `instruction_tuning` | projector + LLM (task tokens frozen, kept in input) | `captioning` (next-token only)         |

The vision tower is frozen throughout; at inference there is one vision encoder, no expert and no predictor, and the
task tokens still follow every image. Shipped as `stages:` lists: `recipes/configs/visper_default.yaml` (the
embedded default: the demo's tower, its depth and referring models as experts, minutes on a CPU) and
`recipes/configs/visper_llava15.yaml` (the paper's LLaVA-1.5 setting, every value it does not state marked as a
choice). Experts: `data.experts` (any transformers vision model folder, or the library's own depth / referring
models); offline targets: `recipes/data/embed_experts.py`. Layer probing: `recipes/evaluation/probe_llm_layers.py`.
"""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
DEFAULT_CONFIG = CONFIGS / "visper_default.yaml"
# stage name -> (the parts it trains, its objectives): the method's definition, which the shipped configs follow
# (tests/test_visper.py checks them)
VISPER_STAGES = {
    "pretrain": (("projector", "embedding_predictors", "task_tokens"), ("distillation",)),
    "instruction_tuning": (("projector", "language_model"), ("captioning",)),
}


def visper_run_options(config: str | Path = DEFAULT_CONFIG) -> dict:
    """The options a VisPer-LM config sets over its base (`stages:`, `tasks`, the experts and distillation
    settings, the schedule): what a run of another base (the proving ground's) takes to run VisPer-LM's curriculum."""
    from ..config import load_config_file

    options = load_config_file(Path(config))
    if "stages" not in options or "distillation_experts" not in options:
        raise ValueError(f"{config}: not a VisPer-LM config (no stages: list or distillation_experts).")
    keep = ("tasks", "stages", "warmup_steps", "lr_scheduler_type")
    return {key: value for key, value in options.items() if key in keep or key.startswith("distillation_")}


__all__ = ["DEFAULT_CONFIG", "VISPER_STAGES", "visper_run_options"]
