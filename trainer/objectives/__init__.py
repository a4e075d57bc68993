# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Training objectives: one registered unit per objective, read by the trainer, the recipes and the exports.

An [`Objective`] says everything the library needs to train with it:

- `name`: how stages, configs, logs (`loss_<name>`, `<name>/<term>`) and task streams (`TaskSpec.name`) call it;
- `parts`: the parts of the model its loss reaches besides the backbone (`training_parts` names), so that the
  trainer knows what a micro-batch of it does not reach; `modules(model)`: parts it adds to the model itself (a
  head the VersaViT model does not have), trained, grouped and checkpointed like the model's own, after
  `configure(config, context)` has fitted the model's config to the run's data;
- `collator(context)`, `batch_size(data_args)`, `weight(data_args)`: its training batches and its λ;
- `from_scenes(tables)` / `load_folder(path)`, `data_folder` / `held_out_folder`: its data, generated or read, then
  `prepare_data(dataset, data_args)` once per run (e.g. expert embeddings added);
- `forward(model, modules, batch)`: its loss (a `ModelOutput` with `loss` and, for logging, `loss_terms`);
- `layers_read(model)`: how many backbone blocks its forward uses (None: all of them);
- `evaluate(model, dataset, context)`: its held-out metrics (None when it has none); `draw(...)`: its column of the
  run's predictions.png;
- `task_class`, `checkpoint_prefixes`: the task model its trained parts load into (Hub export);
  `input_pixels` / `input_description`: its input size for the run's plan and memory estimate.

The three objectives of the paper (captioning, depth, referring segmentation) are in `captioning.py` and `dense.py`;
the image-text contrastive objective (SAILViT's cross-modal alignment) in `contrastive.py`; VisPer-LM's embedding
distillation in `distillation.py`.
Another one is a subclass plus one line, from any file (a run imports it with `--imports path/to/file.py`; see
tests/toy_objective.py):

    @register_objective
    class PooledFeatureRegression(Objective):
        name = "pooled_l2"
        def modules(self, model):
            return {"pooled_head": torch.nn.Linear(model.config.embed_dim, 3)}
        ...
"""

# The library's objectives register themselves on import.
from . import captioning, contrastive, dense, distillation  # noqa: E402, F401, I001
from .base import OBJECTIVES, Objective, ObjectiveContext, get_objective, register_objective, wrap_text

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "get_objective", "register_objective", "wrap_text"]
