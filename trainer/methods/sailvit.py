# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""SAILViT (arXiv 2507.01643; summary in the project's papers) as a method: gradual feature refinement of an MLLM's
vision tower, coarse to fine, so that it can later serve other LLMs.

Its curriculum is three stages of the captioning objective, each on its own data:

| stage              | trains                              | data (`texts` of the generated scenes)              |
|--------------------|-------------------------------------|-----------------------------------------------------|
| `coarse_alignment` | projector (tower and LLM frozen)    | short captions (`short`)                            |
| `fine_alignment`   | tower + projector (LLM frozen)      | detailed captions + grounding turns (`detailed`)    |
| `knowledge`        | tower + projector + LLM             | instruction turns (`instructions`)                  |

The curriculum is data, shipped as `stages:` lists: `recipes/configs/sailvit_default.yaml` (the embedded default, on
generated scenes, minutes on a CPU) and `recipes/configs/sailvit_qwen2vl_7b.yaml` (Qwen2-VL-7B's tower, dataset
folders, every value the summary does not give stated as a choice). SAILViT's cross-modal contrastive component is
the `contrastive` objective (`objectives/contrastive.py`), off by default: a stage turns it on by naming it and its
`retrieval_head`. The refined tower (`backbone/`) attaches to another LLM with `recipes/configs/sailvit_attach.yaml`
(a fresh projector, the tower frozen), and exports like any VersaViT tower (Hub, MLLM swap).
"""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
DEFAULT_CONFIG = CONFIGS / "sailvit_default.yaml"
# stage name -> (the parts it trains, the scene conversations it reads): the method's definition, which the shipped
# configs follow (tests/test_sailvit.py checks them)
SAILVIT_STAGES = {
    "coarse_alignment": (("projector",), "short"),
    "fine_alignment": (("backbone", "projector"), "detailed"),
    "knowledge": (("backbone", "projector", "language_model"), "instructions"),
}


def sailvit_run_options(config: str | Path = DEFAULT_CONFIG) -> dict:
    """The options a SAILViT config sets over its base (its `stages:` list, `tasks`, the schedule): what a run of
    another base (e.g. the proving ground's) takes to run SAILViT's curriculum instead of its own."""
    from ..config import load_config_file

    options = load_config_file(Path(config))
    keep = ("tasks", "stages", "contrastive_size", "warmup_steps", "lr_scheduler_type")
    if "stages" not in options:
        raise ValueError(f"{config}: not a SAILViT config (no stages: list).")
    return {key: options[key] for key in keep if key in options}


__all__ = ["DEFAULT_CONFIG", "SAILVIT_STAGES", "sailvit_run_options"]
