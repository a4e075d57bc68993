# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Hub export: a folder exactly as it is uploaded (weights, remote code, processors, a model card) and the upload.

- `export_folder(model, folder, ...)`: safetensors weights and config with `auto_map` plus the model code (loads with
  `trust_remote_code=True` where the package is not installed), the image processor (and tokenizer / captioning
  processor when given), and `README.md`, a model card rendered from `hub_cards/versavit.md` with
  `huggingface_hub.ModelCard`: library_name, pipeline_tag, base_model, datasets, license, tags, usage for the three
  ways VersaViT is used, and `model-index` results when given.
- `push_to_hub(model, repo_id, ...)`: exports to a temporary folder and uploads it in one commit.
"""

import logging
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData

from modeling_versavit import (
    PIPELINES,
    VersaViTForCaptioning,
    VersaViTForDepthEstimation,
    VersaViTForImageTextRetrieval,
    VersaViTForMultiTask,
    VersaViTForReferringSegmentation,
    VersaViTModel,
)

from ..data.processors import image_processor_for
from ..objectives import OBJECTIVES

# The Hub task of each exported class.
PIPELINE_TAGS = {
    VersaViTModel: "image-feature-extraction",
    VersaViTForDepthEstimation: "depth-estimation",
    VersaViTForReferringSegmentation: "image-segmentation",
    VersaViTForCaptioning: "image-text-to-text",
    VersaViTForImageTextRetrieval: "zero-shot-image-classification",
    VersaViTForMultiTask: "image-feature-extraction",
}
TASK_CLASSES = {  # what can be exported: the backbone, each objective's task model, the multi-task model
    "backbone": VersaViTModel,
    **{name: o.task_class for name, o in OBJECTIVES.items() if o.task_class is not None},
    "multitask": VersaViTForMultiTask,
}
logger = logging.getLogger(__name__)
RESULT_FIELDS = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
# One line per pipeline task (transformers' own or VersaViT's registered ones, modeling_versavit.PIPELINES), shown
# in the card for each task the exported model serves (`served_tasks`).
PIPELINE_USAGE = {
    "image-feature-extraction": 'features = pipeline("image-feature-extraction", model="{repo_id}"{trust})'
                                '("photo.jpg")  # tokens x width',
    "depth-estimation": 'depth = pipeline("depth-estimation", model="{repo_id}"{trust})("photo.jpg")["depth"]  '
                        '# relative depth, image size',
    "referring-segmentation": 'masks = pipeline("referring-segmentation", model="{repo_id}"{trust})'
                              '("photo.jpg", ["the dog on the left"])  # mask + score per expression',
    "versavit-captioning": 'text = pipeline("versavit-captioning", model="{repo_id}"{trust})'
                           '("photo.jpg", "Describe the image.")[0]["generated_text"]',
    "versavit-zero-shot-image-classification": 'ranked = pipeline("versavit-zero-shot-image-classification", '
                                               'model="{repo_id}"{trust})("photo.jpg", candidate_labels=["a dog", '
                                               '"a cat"])',
}
# The part of a model each pipeline task runs (transformers' tasks first).
TASK_PARTS = {"image-feature-extraction": "visual", "depth-estimation": "depth_head",
              **{task: head for task, (_, head) in PIPELINES.items()}}

# The tasks whose pipeline embeds texts with `config.text_encoder`.
TEXT_TASKS = {"referring-segmentation", "versavit-zero-shot-image-classification"}


def served_tasks(model) -> list[str]:
    """The pipeline tasks an exported `model` serves: the tower's features always, then those of its heads."""
    return [task for task, part in TASK_PARTS.items() if getattr(model, part, None) is not None]


def task_usage(model, repo_id: str, text_encoder: str | None = None) -> str:
    """The card's "one line per task" block for `model` published as `repo_id` (`text_encoder`: the sentence
    encoder it will record, default `config.text_encoder`)."""
    lines = [PIPELINE_USAGE[task].format(repo_id=repo_id, trust=", trust_remote_code=True")
             for task in served_tasks(model)]
    text = text_encoder or getattr(model.config, "text_encoder", None)
    encoder = ""
    if text and TEXT_TASKS & set(served_tasks(model)):
        encoder = (f"\nThe texts are embedded inside the pipeline with `{text}` (`config.text_encoder`, the encoder "
                   "the heads were trained with); pass `text_encoder=` to use a local copy.\n")
    return ("**One line per task** (transformers pipelines; with the `versavit` package installed, `import "
            "modeling_versavit` and drop `trust_remote_code=True`):\n\n```python\nfrom transformers import "
            "pipeline\n" + "\n".join(lines) + "\n```\n" + encoder)


def template_path() -> Path:
    """`hub_cards/versavit.md`: installed beside the package, or in the repository checkout."""
    package = Path(__file__).resolve().parent.parent  # versavit_trainer (trainer/ in the repository checkout)
    for candidate in (package / "hub_cards", package.parent / "hub_cards"):
        if (candidate / "versavit.md").is_file():
            return candidate / "versavit.md"
    raise FileNotFoundError("hub_cards/versavit.md: the model-card template is missing from the installation.")


def _eval_results(results: list[dict] | None) -> list[EvalResult] | None:
    if not results:
        return None
    parsed = []
    for position, result in enumerate(results):
        missing = [name for name in RESULT_FIELDS if name not in result]
        if missing:
            raise ValueError(f"results[{position}]: missing {missing} (needs {list(RESULT_FIELDS)}).")
        parsed.append(EvalResult(**result))
    return parsed


def model_card(
    model,
    repo_id: str,
    base_model: str | list[str] | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    results: list[dict] | None = None,
    training: str | None = None,
    text_encoder: str | None = None,
) -> ModelCard:
    """The model card of `model` as published under `repo_id`. `results`: dicts with `task_type`, `dataset_type`,
    `dataset_name`, `metric_type`, `metric_value` (and optionally `metric_name`, `dataset_split`, ...)."""
    model_class = type(model)
    if model_class not in PIPELINE_TAGS:
        raise ValueError(f"model: expected a VersaViT model, got {model_class.__name__}.")
    config = model.config
    width = config.embed_dim
    heads = [
        name for name in ("depth_head", "segmentation_head", "projector") if getattr(model, name, None) is not None
    ]
    eval_results = _eval_results(results)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAGS[model_class],
        base_model=base_model,
        datasets=datasets,
        license=license,
        tags=["versavit", "vision", "multimodal", config.backbone_family, "custom_code"],
        model_name=repo_id if eval_results else None,
        eval_results=eval_results,
    )
    table = None
    if eval_results:
        rows = [f"| {r.task_type} | {r.dataset_name} | {r.metric_name or r.metric_type} | {r.metric_value} |"
                for r in eval_results]
        table = "| task | dataset | metric | value |\n|---|---|---|---|\n" + "\n".join(rows)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        repo_id=repo_id,
        description=f"`{model_class.__name__}` ({PIPELINE_TAGS[model_class]}).",
        model_class=model_class.__name__,
        base_model=base_model if isinstance(base_model, str) else None,
        tower=f"{config.backbone_family} vision tower, {config.num_hidden_layers} blocks x {width}",
        parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        heads=", ".join(f"`{name}`" for name in heads),
        task_usage=task_usage(model, repo_id, text_encoder),
        results_table=table,
        training=training,
    )


def export_folder(model, folder, repo_id: str, image_processor=None, tokenizer=None, text_encoder: str | None = None,
                  **card) -> Path:
    """Write the folder that `push_to_hub` uploads: weights + config + remote code (the pipelines included), the
    image processor (default the tower's, `data.processors.image_processor_for`), the tokenizer when given
    (captioning), README.md (`model_card(**card)`). `text_encoder` (a Hub id) replaces `config.text_encoder` in the
    upload, for a model trained with a local copy of its sentence encoder."""
    card = model_card(model, repo_id, text_encoder=text_encoder, **card)  # checks the model and the results first
    if text_encoder is not None:
        model.config.text_encoder = text_encoder
    recorded = getattr(model.config, "text_encoder", None)
    if recorded and Path(recorded).is_absolute() and TEXT_TASKS & set(served_tasks(model)):
        logger.warning("config.text_encoder is the local folder %s, which the Hub's users do not have; pass the "
                       "encoder's Hub id (push_to_hub.py --text_encoder) so that the pipelines find it.", recorded)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (image_processor or image_processor_for(model.config)).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    card.save(folder / "README.md")
    return folder


def push_to_hub(model, repo_id: str, *, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload VersaViT model", **export_kwargs):
    """Export `model` (see `export_folder`) and upload it to `repo_id` in one commit; returns the commit info."""
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        folder = export_folder(model, staging, repo_id, **export_kwargs)
        operations = [CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
                      for path in sorted(folder.rglob("*")) if path.is_file()]
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)


__all__ = ["PIPELINE_TAGS", "PIPELINE_USAGE", "TASK_CLASSES", "export_folder", "model_card", "push_to_hub",
           "served_tasks", "task_usage", "template_path"]
