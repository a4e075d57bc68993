# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Inputs and labels of the captioning / VQA branch. Shipped as Hub remote code: torch and transformers only."""

from pathlib import Path

import torch
from transformers import AutoTokenizer, BatchFeature

from .image_processing_versavit import VersaViTImageProcessor

IGNORE_INDEX = -100


class VersaViTCaptioningProcessor:
    r"""
    Makes [`VersaViTForCaptioning`] inputs from images, prompts and (for training) answers.

    Each prompt goes through the tokenizer's chat template as one user turn. It carries one image placeholder
    (`image_token`, put first when the prompt has none), expanded to as many image tokens as the image has visual
    tokens after 2x2 merging. The answer follows, closed by the tokenizer's end-of-sequence token; labels are the
    answer tokens, with -100 on every prompt and image position. Training batches pad on the right, generation
    prompts (no answers) on the left.

    Args:
        image_processor ([`VersaViTImageProcessor`]): makes `pixel_values` and `image_grid_thw`.
        tokenizer: the LLM's tokenizer, holding `image_token` as a special token.
        image_token (`str`, defaults to `"<image>"`): the image placeholder.
    """

    def __init__(self, image_processor: VersaViTImageProcessor, tokenizer, image_token: str = "<image>"):
        if image_token not in tokenizer.get_vocab():
            raise ValueError(
                f"image_token: {image_token!r} is not in the tokenizer's vocabulary; add it as a special token (as "
                "VersaViTForCaptioning.from_parts does)."
            )
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _prompt_text(self, prompt: str, index: int) -> str:
        count = prompt.count(self.image_token)
        if count > 1:
            raise ValueError(f"prompts[{index}]: holds {count} image placeholders {self.image_token!r}; one image, one placeholder.")
        if count == 0:
            prompt = f"{self.image_token}\n{prompt}"
        messages = [{"role": "user", "content": prompt}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{prompt}\n"

    def __call__(self, images, prompts: list[str], answers: list[str] | None = None) -> BatchFeature:
        if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
            raise ValueError(
                f"images, prompts and answers must have one entry per sample, got {len(images)}, {len(prompts)} and "
                f"{'no answers' if answers is None else len(answers)}."
            )
        vision = self.image_processor(images=list(images), return_tensors="pt")
        merge = self.image_processor.merge_size**2
        sequences, label_rows = [], []
        for index, (prompt, (_, h, w)) in enumerate(zip(prompts, vision["image_grid_thw"].tolist())):
            visual_tokens = h * w // merge
            text = self._prompt_text(prompt, index).replace(self.image_token, self.image_token * visual_tokens)
            prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            found = prompt_ids.count(self.image_token_id)
            if found != visual_tokens:
                raise ValueError(
                    f"prompts[{index}]: the tokenizer made {found} image tokens of the {visual_tokens} placeholders; "
                    f"{self.image_token!r} must be a special token of the tokenizer."
                )
            if answers is None:
                sequences.append(prompt_ids)
                continue
            answer_ids = self.tokenizer(answers[index] + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            if self.image_token_id in answer_ids:
                raise ValueError(f"answers[{index}]: contains the image placeholder {self.image_token!r}.")
            sequences.append(prompt_ids + answer_ids)
            label_rows.append([IGNORE_INDEX] * len(prompt_ids) + answer_ids)

        length = max(len(ids) for ids in sequences)
        left = answers is None  # generation continues after the last prompt token
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(length - len(ids), length) if left else slice(0, len(ids))
            input_ids[row, span] = torch.tensor(ids)
            attention_mask[row, span] = 1
            if answers is not None:
                labels[row, span] = torch.tensor(label_rows[row])
        data = {**vision, "input_ids": input_ids, "attention_mask": attention_mask}
        if answers is not None:
            data["labels"] = labels
        return BatchFeature(data=data)

    def batch_decode(self, token_ids, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True, **kwargs)

    def save_pretrained(self, folder) -> None:
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder, image_token: str = "<image>", **kwargs) -> "VersaViTCaptioningProcessor":
        folder = Path(folder)
        return cls(VersaViTImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder, **kwargs), image_token)


__all__ = ["IGNORE_INDEX", "VersaViTCaptioningProcessor"]
