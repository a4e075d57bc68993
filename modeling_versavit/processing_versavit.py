# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Inputs and labels of the captioning / VQA branch. Shipped as Hub remote code: torch and transformers only."""

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, BatchFeature

from .image_processing_versavit import VersaViTImageProcessor

IGNORE_INDEX = -100


class VersaViTCaptioningProcessor:
    r"""
    Makes [`VersaViTForCaptioning`] inputs from images, prompts and (for training) answers.

    Each conversation (or prompt) goes through the tokenizer's chat template. It carries one image placeholder
    (`image_token`, put at the start of the first user turn when there is none), expanded to as many image tokens as
    the image has visual tokens after 2x2 merging. Every answer is closed by the tokenizer's end-of-sequence token;
    labels are the answer tokens, with -100 on every template, question and image position. Training batches pad on
    the right, generation prompts (no answers) on the left.

    Args:
        image_processor ([`VersaViTImageProcessor`]): makes `pixel_values` and `image_grid_thw`.
        tokenizer: the LLM's tokenizer, holding `image_token` as a special token.
        image_token (`str`, defaults to `"<image>"`): the image placeholder.
        num_task_tokens (`int`, defaults to 0): positions after each image's visual tokens that the model fills with
            its task tokens (VisPer-LM; the model's `num_sequence_task_tokens`); they are image placeholders too.
        image_start, image_end (`str`, default empty): text put around each image's tokens (a Qwen MLLM's own
            `<|vision_start|>` / `<|vision_end|>`, when the model captions through that MLLM's LLM).

    [`VersaViTCaptioningProcessor.for_model`] makes the processor a model config implies.
    """

    def __init__(self, image_processor: VersaViTImageProcessor, tokenizer, image_token: str = "<image>",
                 num_task_tokens: int = 0, image_start: str = "", image_end: str = ""):
        if isinstance(num_task_tokens, bool) or not isinstance(num_task_tokens, int) or num_task_tokens < 0:
            raise ValueError(f"num_task_tokens: must be an integer >= 0, got {num_task_tokens!r}.")
        self.num_task_tokens = num_task_tokens
        if image_token not in tokenizer.get_vocab():
            raise ValueError(
                f"image_token: {image_token!r} is not in the tokenizer's vocabulary; add it as a special token (as "
                "VersaViTForCaptioning.from_parts does)."
            )
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_start, self.image_end = image_start, image_end
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        turns = [m["content"] + ("\n" if m["role"] == "user" else self.tokenizer.eos_token + "\n") for m in messages]
        return "".join(turns)

    def _encode(self, turns: list[dict], index: int, visual_tokens: int) -> tuple[list[int], list[int]]:
        """Token ids and labels of one conversation: the chat template's text, unlabelled, with every assistant
        answer (and its end-of-sequence token) labelled. A final turn without an answer ends in a generation prompt."""
        users = [str(turn.get("user") or "") for turn in turns]
        placeholders = sum(user.count(self.image_token) for user in users)
        if placeholders > 1:
            raise ValueError(
                f"conversations[{index}]: holds {placeholders} image placeholders {self.image_token!r}; one image, one "
                "placeholder."
            )
        if placeholders == 0:
            users[0] = f"{self.image_token}\n{users[0]}"
        messages, ids, labels, rendered = [], [], [], ""
        for k, (user, turn) in enumerate(zip(users, turns)):
            if not user.strip():
                raise ValueError(f"conversations[{index}][{k}]: empty user turn.")
            messages.append({"role": "user", "content": user})
            prompt = self._render(messages, add_generation_prompt=True)
            if not prompt.startswith(rendered):
                raise ValueError("the tokenizer's chat template does not render a conversation as a growing prefix.")
            image = self.image_start + self.image_token * visual_tokens + self.image_end
            segment = prompt[len(rendered) :].replace(self.image_token, image)
            segment_ids = self.tokenizer(segment, add_special_tokens=False)["input_ids"]
            ids += segment_ids
            labels += [IGNORE_INDEX] * len(segment_ids)
            answer = turn.get("assistant")
            if answer is None:
                if k != len(turns) - 1:
                    raise ValueError(f"conversations[{index}][{k}]: only the last turn may lack an answer.")
                break
            answer = str(answer)
            if not answer.strip():
                raise ValueError(f"conversations[{index}][{k}]: empty answer.")
            answer_ids = self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            if self.image_token_id in answer_ids:
                raise ValueError(f"conversations[{index}][{k}]: the answer contains the image placeholder.")
            ids += answer_ids
            labels += answer_ids
            messages.append({"role": "assistant", "content": answer})
            rendered = prompt + answer + self.tokenizer.eos_token
            if not self._render(messages, add_generation_prompt=False).startswith(rendered):
                raise ValueError(
                    "the tokenizer's chat template does not close an assistant turn with its end-of-sequence token; "
                    "answer-only labels cannot be placed."
                )
        found = ids.count(self.image_token_id)
        if found != visual_tokens:
            raise ValueError(
                f"conversations[{index}]: the tokenizer made {found} image tokens of the {visual_tokens} placeholders; "
                f"{self.image_token!r} must be a special token of the tokenizer."
            )
        return ids, labels

    def __call__(self, images, prompts: list[str] | None = None, answers: list[str] | None = None,
                 conversations: list[list[dict]] | None = None, max_length: int | None = None,
                 return_num_truncated: bool = False) -> BatchFeature:
        """Inputs for one image per sample, from `prompts` (and, to train, `answers`), or from `conversations`: per
        sample a list of `{"user": ..., "assistant": ...}` turns (FineVision's `texts`), every answer labelled.

        Returns `pixel_values`, `image_grid_thw`, `input_ids`, `attention_mask` and, when answers are given,
        `labels`. Without answers the prompts end in a generation prompt and are left-padded for `generate()`.
        `max_length` cuts a longer sequence's tail (answer tokens and their labels; the image tokens are never cut:
        a prompt whose image tokens reach past it is a `ValueError`); `return_num_truncated` adds `num_truncated`,
        the number of samples cut (pop it before calling the model)."""
        if max_length is not None and (isinstance(max_length, bool) or max_length < 1):
            raise ValueError(f"max_length: must be a positive number of tokens or None, got {max_length!r}.")
        if conversations is None:
            if prompts is None:
                raise ValueError("pass prompts (with or without answers) or conversations.")
            if answers is not None and len(answers) != len(prompts):
                raise ValueError(f"prompts and answers: one per sample, got {len(prompts)} and {len(answers)}.")
            conversations = [
                [{"user": prompt, "assistant": None if answers is None else answers[i]}]
                for i, prompt in enumerate(prompts)
            ]
        if len(images) != len(conversations):
            raise ValueError(
                f"images and prompts/conversations: one per sample, got {len(images)} and {len(conversations)}."
            )
        if not all(conversations):
            raise ValueError("conversations: every sample needs at least one turn.")
        training = all(turns[-1].get("assistant") is not None for turns in conversations)
        if not training and any(turns[-1].get("assistant") is not None for turns in conversations):
            raise ValueError(
                "conversations: either every sample ends with an answer (training) or none does (generation)."
            )
        vision = self.image_processor(images=list(images), return_tensors="pt")
        merge = self.image_processor.merge_size**2
        encoded = [
            self._encode(turns, index, h * w // merge + self.num_task_tokens)
            for index, (turns, (_, h, w)) in enumerate(zip(conversations, vision["image_grid_thw"].tolist()))
        ]
        truncated = 0
        if max_length is not None:
            for index, (ids, row_labels) in enumerate(encoded):
                if len(ids) <= max_length:
                    continue
                last_image = len(ids) - 1 - ids[::-1].index(self.image_token_id)
                if last_image >= max_length:
                    raise ValueError(f"conversations[{index}]: its image tokens end at token {last_image + 1}, past "
                                     f"max_length {max_length}; raise max_length or lower the image's max_pixels.")
                encoded[index] = (ids[:max_length], row_labels[:max_length])
                truncated += 1
        length = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, row_labels) in enumerate(encoded):
            span = slice(0, len(ids)) if training else slice(length - len(ids), length)  # generation: left padding
            input_ids[row, span] = torch.tensor(ids)
            attention_mask[row, span] = 1
            labels[row, span] = torch.tensor(row_labels)
        data = {**vision, "input_ids": input_ids, "attention_mask": attention_mask}
        if training:
            data["labels"] = labels
        if return_num_truncated:
            data["num_truncated"] = truncated
        return BatchFeature(data=data)

    def batch_decode(self, token_ids, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True, **kwargs)

    def save_pretrained(self, folder) -> None:
        self.image_processor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def for_model(cls, image_processor: VersaViTImageProcessor, tokenizer, config: dict | None = None):
        """The processor of a model whose config (a `VersaViTConfig` or its dict; None: a plain captioner) is
        `config`: as many task-token positions after each image as the model fills (VisPer-LM's `task_tokens`), and,
        for a model that captions through its MLLM's own LLM (`mllm_language_model`), that MLLM's image token and
        the tokens it puts around an image."""
        config = config.to_dict() if hasattr(config, "to_dict") else (config or {})
        settings = {}
        if config.get("task_tokens"):
            settings["num_task_tokens"] = len(config["task_tokens"]) * int(config.get("num_task_tokens", 8))
        if config.get("mllm_language_model"):
            mllm = config["text_config"]
            settings["image_token"] = tokenizer.convert_ids_to_tokens(config["image_token_id"])
            if mllm.get("vision_start_token_id") is not None and mllm.get("vision_end_token_id") is not None:
                settings["image_start"] = tokenizer.convert_ids_to_tokens(mllm["vision_start_token_id"])
                settings["image_end"] = tokenizer.convert_ids_to_tokens(mllm["vision_end_token_id"])
        return cls(image_processor, tokenizer, **settings)

    @classmethod
    def from_pretrained(cls, folder, **kwargs) -> "VersaViTCaptioningProcessor":
        """The processor saved in `folder`, set for the model config there (if any; see `for_model`)."""
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        return cls.for_model(VersaViTImageProcessor.from_pretrained(folder), tokenizer, config)


__all__ = ["IGNORE_INDEX", "VersaViTCaptioningProcessor"]
