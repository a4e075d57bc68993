#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Convert an image-caption folder to the captioning task dataset.

    python recipes/data/convert_captions.py --folder captions/ --output_dir captions_ds/

Every image (searched recursively) with a caption file of the same name and `.txt` suffix becomes a row
(image, caption, source). Images without a caption, with an empty caption or that cannot be read are skipped and
counted. Resumable: rerunning with the same settings skips finished shards (other settings are refused).
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Features, Image, Value
from transformers import HfArgumentParser

from modeling_versavit import load_image
from versavit_trainer.data.labelling import Skip, list_images, run_sharded, stored_image

FEATURES = Features({"image": Image(), "caption": Value("string"), "source": Value("string")})


@dataclass
class ConvertCaptionsArguments:
    folder: str = field(metadata={"help": "Folder of images with same-name .txt captions."})
    output_dir: str = field(metadata={"help": "Where the sharded dataset, summary.json included, is written."})
    shard_size: int = field(default=1024, metadata={"help": "Images per saved (and resumable) shard."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ConvertCaptionsArguments).parse_args_into_dataclasses(args=argv)
    root = Path(args.folder)

    def label(paths):
        results = []
        for path in paths:
            caption_file = path.with_suffix(".txt")
            if not caption_file.is_file():
                results.append(Skip("no caption file"))
                continue
            caption = caption_file.read_text(encoding="utf-8", errors="replace").strip()
            if not caption:
                results.append(Skip("empty caption"))
                continue
            try:
                image = load_image(path)
            except (OSError, ValueError) as err:
                results.append(Skip("unreadable image", str(err)))
                continue
            source = str(path.relative_to(root))
            results.append({"image": stored_image(path, image, source), "caption": caption, "source": source})
        return results

    return run_sharded(list_images(root), label, args.output_dir, FEATURES, args.shard_size, 64, "captions",
                       settings=vars(args))


if __name__ == "__main__":
    main(sys.argv[1:])
