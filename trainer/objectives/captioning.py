# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The captioning / VQA objective (paper §4.2.1)."""

from modeling_versavit import VersaViTForCaptioning

from .base import Objective, register_objective, wrap_text


@register_objective
class CaptioningObjective(Objective):
    """Captioning / VQA through the LLM (paper §4.2.1): next-token loss on the answers."""

    name = "captioning"
    parts = ("projector", "language_model")
    model_task = "captioning"
    task_class = VersaViTForCaptioning
    checkpoint_prefixes = ("projector.", "language_model.")

    def input_pixels(self, data_args):
        return data_args.caption_max_pixels

    def input_description(self, data_args):
        return f" x <= {int(data_args.caption_max_pixels ** 0.5)}^2 px"

    def layers_read(self, model):
        return model.captioning_layers_read()

    def collator(self, context):
        from ..data.collators import CaptioningCollator
        from ..data.processors import captioning_processor

        data_args = context.data_args
        processor = captioning_processor(context.tokenizer, data_args.caption_max_pixels, context.config)
        return CaptioningCollator(processor, max_turns=data_args.max_turns, seed=context.seed,
                                  max_length=data_args.caption_max_length)

    has_held_out = True
    draws_predictions = True

    def held_out_folder(self, data_args):
        return data_args.captioning_eval_data

    def evaluate(self, model, dataset, context):
        """Teacher-forced answer quality on held-out conversations (every turn): the mean cross-entropy per answer
        token and the fraction of answer tokens the LLM's argmax gets right. None without a tokenizer."""
        if context.tokenizer is None:
            return None
        from ..metrics import evaluate_answers

        collator = self.collator(context)
        collator.max_turns = None  # every turn, in order
        return evaluate_answers(model, (collator([dataset[i] for i in range(start, min(start + 4, len(dataset)))])
                                        for start in range(0, len(dataset), 4)))

    def draw(self, axis, model, image, row, context):
        from ..data.processors import captioning_processor
        from ..data.scenes import CAPTION_PROMPT

        tokenizer = context.tokenizer
        processor = captioning_processor(tokenizer, context.data_args.caption_max_pixels, model.config)
        inputs = processor([image], prompts=[CAPTION_PROMPT])
        tokens = model.generate(**inputs, max_new_tokens=context.caption_max_new_tokens, do_sample=False,
                                no_repeat_ngram_size=3)
        caption = tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
        axis.text(0.0, 0.5, wrap_text(caption, 34), fontsize=8, va="center", wrap=True)
        axis.set_title("generated caption", fontsize=9)
        return {"caption": caption}

