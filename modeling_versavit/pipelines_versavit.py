# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""transformers pipelines for the VersaViT task models that no standard pipeline task fits.

Depth (`"depth-estimation"`) and features (`"image-feature-extraction"`) use transformers' own pipelines. The three
here are registered with `transformers.pipelines.PIPELINE_REGISTRY` when `modeling_versavit` is imported, and a
saved folder names them in its config's `custom_pipelines` (`VersaViTPreTrainedModel.save_pretrained`), so that
`pipeline(task, model=folder)` also works as remote code (`trust_remote_code=True`) where the package is not
installed:

- `"referring-segmentation"` ([`VersaViTReferringSegmentationPipeline`]): an image and one or more expressions -> a
  mask and a score per expression, at the image's own size.
- `"versavit-captioning"` ([`VersaViTCaptioningPipeline`]): an image and a prompt -> the generated text (captioning
  and VQA). transformers' `"image-text-to-text"` task needs a `ProcessorMixin` processor with a chat template over
  typed content, which [`VersaViTCaptioningProcessor`] is not.
- `"versavit-zero-shot-image-classification"` ([`VersaViTZeroShotImageClassificationPipeline`]): an image and
  candidate labels -> the labels ranked by the retrieval head's image-text score. transformers'
  `"zero-shot-image-classification"` runs a text tower inside the model; VersaViT's retrieval head reads offline
  sentence embeddings.

The referring and retrieval pipelines embed their texts with the sentence encoder the model was trained with,
`config.text_encoder` (a local folder, one inside the model folder, or a Hub id), or the `text_encoder=` given to
`pipeline(...)` (a folder, a Hub id or a [`SentenceEmbedder`]). Shipped as Hub remote code: imports only torch, PIL,
transformers and sibling files.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import Pipeline
from transformers.image_utils import load_image as fetch_image

from .image_processing_versavit import fixed_size_pixels, to_rgb
from .processing_versavit import VersaViTCaptioningProcessor
from .text_embedding_versavit import SentenceEmbedder


def pipeline_pixels(image_processor, image: PIL.Image.Image, size) -> dict:
    """`pixel_values` and `image_grid_thw` of `image`: at the processor's own (dynamic) resolution when `size` is
    None, else resized (bicubic) to exactly `size` (a side, or `(height, width)`; multiples of the tower's patch x
    merge), as the dense tasks are trained."""
    if size is None:
        return dict(image_processor(images=[image], return_tensors="pt"))
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    multiple = image_processor.patch_size * image_processor.merge_size
    for name, side in (("height", height), ("width", width)):
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0 or side % multiple:
            raise ValueError(f"size: the {name} must be a positive multiple of {multiple} (the tower's patch x "
                             f"merge), got {size!r}.")
    return fixed_size_pixels([image], (height, width), image_processor)


def mask_logits_at_size(mask_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Mask logits `(P, h, w)` at the model's input size resized (bilinear) to the image's own `(height, width)`."""
    return F.interpolate(mask_logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def masks_at_size(mask_logits: torch.Tensor, height: int, width: int, threshold: float = 0.0) -> torch.Tensor:
    """Boolean masks `(P, height, width)` from mask logits `(P, h, w)` at the model's input size: the logits are
    resized (bilinear) to the image's own size, then thresholded. What the pipeline, the prediction panel and the
    held-out scores compute."""
    return mask_logits_at_size(mask_logits, height, width) > threshold


def resolve_text_encoder(text_encoder, config, task: str, device=None) -> SentenceEmbedder:
    """The sentence encoder of a referring or retrieval pipeline: `text_encoder` (a [`SentenceEmbedder`], a folder
    or a Hub id) else `config.text_encoder`, loaded on `device`; a clear error when neither names one that loads
    here."""
    if isinstance(text_encoder, SentenceEmbedder):
        return text_encoder
    source = text_encoder if text_encoder is not None else getattr(config, "text_encoder", None)
    where = "text_encoder" if text_encoder is not None else "config.text_encoder"
    model_folder = Path(getattr(config, "_name_or_path", None) or ".")
    if text_encoder is None and source is not None and (model_folder / source).is_dir():
        source = model_folder / source  # saved inside the model folder (an online fine-tune's adapted encoder)
    if source is None:
        raise ValueError(
            f"{task}: the model's config records no text encoder (config.text_encoder is None: its text embeddings "
            "were read from a dataset folder); pass the sentence encoder that made them, "
            "pipeline(..., text_encoder='path/to/encoder')."
        )
    try:
        return SentenceEmbedder(source, device=device or "cpu")
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{task}: {where} {str(source)!r} does not load here ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "pass a local copy of that sentence encoder, pipeline(..., text_encoder='path/to/encoder')."
        ) from err


def _texts(values, name: str) -> list[str]:
    texts = [values] if isinstance(values, str) else list(values or [])
    if not texts:
        raise ValueError(f"{name}: expected a string or a non-empty list of strings, got {values!r}.")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name}[{index}]: expected a non-empty string, got {text!r}.")
    return texts


def _given(**parameters) -> dict:
    """The parameters that are not None."""
    return {name: value for name, value in parameters.items() if value is not None}


def _require(model, task: str) -> None:
    head = PIPELINES[task][1] if task in PIPELINES else None
    if head is not None and getattr(model, head, None) is None:
        raise ValueError(f"{task}: {type(model).__name__} has no `{head}`, which this task runs; load a folder whose "
                         f"model has it (config.json's `architectures` and `tasks` say what a folder holds).")


class _TextEmbeddingPipeline(Pipeline):
    """A VersaViT pipeline over one image at a time whose texts are embedded by the model's sentence encoder, which
    must give `config.<width_field>`-wide embeddings."""

    width_field = "text_embed_dim"
    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, *args, text_encoder=None, **kwargs):
        super().__init__(*args, **kwargs)
        _require(self.model, self.task)
        if self.image_processor is None:
            raise ValueError(f"{self.task}: no image processor; save one beside the model or pass image_processor=.")
        self.text_encoder = resolve_text_encoder(text_encoder, self.model.config, self.task, self.device)
        width = getattr(self.model.config, self.width_field)
        if self.text_encoder.dim != width:
            raise ValueError(
                f"{self.task}: the text encoder {self.text_encoder.source!r} gives {self.text_encoder.dim}-d "
                f"embeddings, the model reads {width}-d (config.{self.width_field}); use the encoder the model was "
                "trained with."
            )

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return self.text_encoder(texts).to(device=self.device, dtype=self.model.dtype)


class VersaViTReferringSegmentationPipeline(_TextEmbeddingPipeline):
    r"""
    Referring segmentation with a VersaViT model that has the segmentation head ([`VersaViTForReferringSegmentation`]
    or the multi-task model): an image and referring expressions in, one mask per expression out.

    ```python
    >>> import modeling_versavit  # registers the task (without the package: trust_remote_code=True)
    >>> from transformers import pipeline
    >>> segment = pipeline("referring-segmentation", model="outputs/demo/final")
    >>> segment("scene.png", ["the red sphere", "the cube on the left"])
    [{"expression": "the red sphere", "score": 0.91, "mask": <PIL.Image mode=L>}, ...]
    ```

    Call arguments: `image` (a PIL image, a path or a URL), `expressions` (a string or a list), `size` (None: the
    image processor's own dynamic resolution; a side or `(height, width)`: the image resized to exactly that, as the
    dense tasks train), `threshold` (on the mask logits, default 0: probability 0.5). Each result has the
    `expression`, the boolean `mask` as a PIL image (mode `L`, 255 inside) at the image's own size, and `score`, the
    mean probability of the pixels inside the mask (0 for an empty mask). The masks are the model's logits resized
    (bilinear) to the image's size and thresholded ([`masks_at_size`]).
    """

    def __call__(self, image, expressions=None, **kwargs):
        if expressions is None:
            raise ValueError(f"{self.task}: pass the referring expressions, e.g. pipe(image, ['the red sphere']).")
        return super().__call__({"image": image, "expressions": expressions}, **kwargs)

    def _sanitize_parameters(self, size=None, threshold=None, timeout=None):
        # only what is given: a call's parameters are merged over those given to pipeline(...)
        preprocess = _given(size=size, timeout=timeout)
        return preprocess, {}, _given(threshold=None if threshold is None else float(threshold))

    def preprocess(self, inputs, size=None, timeout=None):
        image = to_rgb(fetch_image(inputs["image"], timeout=timeout))
        expressions = _texts(inputs["expressions"], "expressions")
        model_inputs = pipeline_pixels(self.image_processor, image, size)
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.model.dtype)
        model_inputs["text_embeds"] = self._embed(expressions)
        model_inputs["expression_image_index"] = torch.zeros(len(expressions), dtype=torch.long)
        return {**model_inputs, "expressions": expressions, "image_size": (image.height, image.width)}

    def _forward(self, model_inputs):
        expressions, image_size = model_inputs.pop("expressions"), model_inputs.pop("image_size")
        logits = self.model.forward_segmentation(**model_inputs).pred_masks
        return {"pred_masks": logits, "expressions": expressions, "image_size": image_size}

    def postprocess(self, model_outputs, threshold=0.0):
        logits = mask_logits_at_size(model_outputs["pred_masks"], *model_outputs["image_size"])
        results = []
        for expression, mask, probability in zip(model_outputs["expressions"], logits > threshold, logits.sigmoid()):
            score = float(probability[mask].mean()) if mask.any() else 0.0
            pixels = mask.cpu().numpy().astype(np.uint8) * 255
            results.append({"expression": expression, "score": score, "mask": PIL.Image.fromarray(pixels, mode="L")})
        return results


class VersaViTZeroShotImageClassificationPipeline(_TextEmbeddingPipeline):
    r"""
    Zero-shot classification / retrieval with [`VersaViTForImageTextRetrieval`]: an image and candidate labels in,
    the labels ranked by the retrieval head's score out (`[{"label", "score"}]`, best first).

    ```python
    >>> classify = pipeline("versavit-zero-shot-image-classification", model="outputs/retrieval/final")
    >>> classify("scene.png", candidate_labels=["a red sphere", "a blue cube"])
    ```

    `score` is the head's own probability of each pair: the sigmoid of the pair's logit for a SigLIP-trained head
    (`config.retrieval_loss="sigmoid"`: independent, they need not sum to 1), a softmax over the labels for a
    CLIP-trained one. `hypothesis_template` (default `"{}"`) wraps each label before it is embedded.
    """

    width_field = "retrieval_text_embed_dim"

    def __call__(self, image, candidate_labels=None, **kwargs):
        if candidate_labels is None:
            raise ValueError(f"{self.task}: pass candidate_labels, e.g. pipe(image, candidate_labels=['a cat']).")
        return super().__call__({"image": image, "candidate_labels": candidate_labels}, **kwargs)

    def _sanitize_parameters(self, hypothesis_template=None, timeout=None):
        return _given(hypothesis_template=hypothesis_template, timeout=timeout), {}, {}

    def preprocess(self, inputs, hypothesis_template="{}", timeout=None):
        image = to_rgb(fetch_image(inputs["image"], timeout=timeout))
        labels = _texts(inputs["candidate_labels"], "candidate_labels")
        model_inputs = pipeline_pixels(self.image_processor, image, None)
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.model.dtype)
        texts = [hypothesis_template.format(label) for label in labels]
        model_inputs["text_embeds"] = self._embed(texts)
        return {**model_inputs, "candidate_labels": labels}

    def _forward(self, model_inputs):
        labels = model_inputs.pop("candidate_labels")
        outputs = self.model(**model_inputs, return_loss=False)
        return {"logits": outputs.logits_per_image[0], "candidate_labels": labels}

    def postprocess(self, model_outputs):
        logits = model_outputs["logits"].float()
        sigmoid = self.model.config.retrieval_loss == "sigmoid"
        scores = logits.sigmoid() if sigmoid else logits.softmax(-1)
        ranked = sorted(zip(scores.tolist(), model_outputs["candidate_labels"]), key=lambda pair: -pair[0])
        return [{"label": label, "score": score} for score, label in ranked]


class VersaViTCaptioningPipeline(Pipeline):
    r"""
    Captioning and VQA with a VersaViT model that has the captioning branch ([`VersaViTForCaptioning`] or the
    multi-task model): an image and a prompt in, the generated text out (`[{"generated_text"}]`).

    ```python
    >>> caption = pipeline("versavit-captioning", model="outputs/demo/final")
    >>> caption("scene.png", prompt="How many spheres are there?", max_new_tokens=20)
    [{"generated_text": "two"}]
    ```

    `prompt` defaults to `"Describe the image."`; `generate_kwargs` (or `max_new_tokens`) go to `generate()`
    (greedy unless they say otherwise). The inputs are made by [`VersaViTCaptioningProcessor`] from the folder's
    image processor and tokenizer.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _require(self.model, self.task)
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError(f"{self.task}: needs the LLM's tokenizer and the image processor saved beside the model "
                             "(or passed as tokenizer= / image_processor=).")
        config = self.model.config
        count = len(config.task_tokens) * config.num_task_tokens if config.task_tokens else 0
        image_token = self.tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.captioning_processor = VersaViTCaptioningProcessor(self.image_processor, self.tokenizer, image_token,
                                                                num_task_tokens=count)

    def __call__(self, image, prompt=None, **kwargs):
        return super().__call__({"image": image, "prompt": prompt}, **kwargs)

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, timeout=None):
        generate = {**(generate_kwargs or {}), **_given(max_new_tokens=max_new_tokens)}
        return _given(timeout=timeout), _given(generate_kwargs=generate or None), {}

    def preprocess(self, inputs, timeout=None):
        image = to_rgb(fetch_image(inputs["image"], timeout=timeout))
        prompt = _texts(inputs["prompt"] or "Describe the image.", "prompt")
        if len(prompt) != 1:
            raise ValueError(f"prompt: one prompt per image, got {len(prompt)}.")
        model_inputs = dict(self.captioning_processor([image], prompts=prompt))
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.model.dtype)
        return model_inputs

    def _forward(self, model_inputs, generate_kwargs=None):
        generate_kwargs = {"do_sample": False, **(generate_kwargs or {})}
        return {"tokens": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        text = self.tokenizer.decode(model_outputs["tokens"][0], skip_special_tokens=True).strip()
        return [{"generated_text": text}]


# The registered tasks: task -> (pipeline class, the model part it runs). `pt` in a saved folder's `custom_pipelines`
# is the folder's own AutoModel class (its auto_map), which has that part when the folder serves the task.
PIPELINES = {
    "referring-segmentation": (VersaViTReferringSegmentationPipeline, "segmentation_head"),
    "versavit-captioning": (VersaViTCaptioningPipeline, "language_model"),
    "versavit-zero-shot-image-classification": (VersaViTZeroShotImageClassificationPipeline, "retrieval_head"),
}


def custom_pipelines_of(model) -> dict:
    """The `custom_pipelines` entry of a saved `model`'s config: the registered tasks it serves."""
    return {
        task: {"impl": f"{pipeline_class.__module__.split('.')[-1]}.{pipeline_class.__name__}", "pt": ["AutoModel"],
               "type": "multimodal"}
        for task, (pipeline_class, head) in PIPELINES.items() if getattr(model, head, None) is not None
    }


__all__ = [
    "PIPELINES",
    "VersaViTCaptioningPipeline",
    "VersaViTReferringSegmentationPipeline",
    "VersaViTZeroShotImageClassificationPipeline",
    "custom_pipelines_of",
    "mask_logits_at_size",
    "pipeline_pixels",
    "masks_at_size",
    "resolve_text_encoder",
]
