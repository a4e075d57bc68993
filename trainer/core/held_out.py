# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The held-out evaluation of a run: each objective's own metrics on its held-out data."""

from datasets import Dataset

from .options import DataArguments


def evaluate_held_out(model, data_args: DataArguments, held_out: dict[str, Dataset], online_text: bool = False,
                      tokenizer=None) -> dict:
    """Held-out metrics of each objective in `held_out` (name -> dataset) that has them (`Objective.evaluate`:
    "depth": AbsRel / δ1 after scale-and-shift alignment, "segmentation": mIoU / cIoU, on `eval_batches`;
    "captioning", given the run's `tokenizer`: teacher-forced answer loss and token accuracy). The model runs in eval
    mode; its training mode is restored."""
    from ..objectives import ObjectiveContext, get_objective

    was_training = model.training
    model.eval()
    results = {}
    from ..parts import unwrap_versavit
    context = ObjectiveContext(data_args, tokenizer, online_text=online_text, config=unwrap_versavit(model).config)
    for name, dataset in held_out.items():
        scores = get_objective(name, "held_out").evaluate(model, dataset, context)
        if scores is not None:
            results[name] = scores
    model.train(was_training)
    return results


__all__ = [
    "evaluate_held_out",
]
