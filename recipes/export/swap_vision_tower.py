#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Swap the vision tower of an MLLM folder (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, LFM2-VL) for a VersaViT encoder.

    python recipes/export/swap_vision_tower.py --mllm models/Qwen2-VL-7B-Instruct --encoder outputs/demo/backbone \\
        --out models/Qwen2-VL-7B-Instruct-VersaViT

Writes a complete MLLM folder (loads with AutoModelForImageTextToText / Qwen2VLForConditionalGeneration): the
encoder's tower weights (in the MLLM's dtype), every other tensor exactly the MLLM's, the same shards and index, and
the MLLM's config, tokenizer and processor files. It streams one shard at a time; the LLM is never loaded. The
encoder is any VersaViT folder (backbone, task or multi-task checkpoint). Compatibility is checked first; every
difference is listed and nothing is written.
"""

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from versavit_trainer.export.mllm import swap_vision_tower
from versavit_trainer.run_folder import claim_export_folder


@dataclass
class SwapArguments:
    mllm: str = field(metadata={"help": "The MLLM folder, of the encoder's tower family (safetensors, sharded or "
                                        "not)."})
    encoder: str = field(metadata={"help": "The VersaViT folder whose tower goes in (e.g. a run's backbone/)."})
    out: str = field(metadata={"help": "The new MLLM folder (must not exist, or be empty)."})
    overwrite: bool = field(default=False, metadata={"help": "Delete what --out holds first (without it, a folder that "
                                                             "is not empty is refused)."})
    use_projector: bool = field(
        default=False,
        metadata={"help": "Replace the MLLM's PatchMerger by the encoder's captioning projector (its output width must "
                          "be the MLLM's LLM width). Default: keep the MLLM's merger."},
    )


def main(argv: list[str] | None = None):
    (args,) = HfArgumentParser(SwapArguments).parse_args_into_dataclasses(args=argv)
    try:
        claim_export_folder(args.out, "swap_vision_tower.py", args.overwrite)
        out = swap_vision_tower(args.mllm, args.encoder, args.out, use_projector=args.use_projector)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        sys.exit(f"swap_vision_tower.py: error: {err}")
    print(f"Wrote {out}: load it with AutoModelForImageTextToText.from_pretrained({str(out)!r}).")
    return out


if __name__ == "__main__":
    main()
