#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""`torch.compile` (inductor) against eager mode for the dense task models' training step (peer: eager).

Forward + backward with the task loss of `VersaViTForDepthEstimation` and `VersaViTForReferringSegmentation`, the
same model, weights and batch both ways. Prints the one-off compile time and the steady-state ratio compiled / eager.

    python benchmarks/compile.py [--depth 6 --embed_dim 384 --side 224 --batch 2]
"""

import time

import torch
from common import dense_run, measure

from modeling_versavit import VersaViTForDepthEstimation, VersaViTForReferringSegmentation


def main():
    args, config, inputs = dense_run(__doc__)
    tasks = {
        "depth": (VersaViTForDepthEstimation, {"labels": torch.rand(args.batch, args.side, args.side) + 0.1}),
        "segmentation": (VersaViTForReferringSegmentation, {
            "text_embeds": torch.randn(args.batch, 2, 384),
            "labels": (torch.rand(2 * args.batch, args.side, args.side) < 0.3).float()}),
    }
    print(f"tower {args.depth} blocks x {args.embed_dim}, {args.batch} images of {args.side} px, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; training forward + backward")
    for task, (model_class, extra) in tasks.items():
        model = model_class(config).train()
        compiled = torch.compile(model)

        def eager_step():
            model(**inputs, **extra).loss.backward()

        def compiled_step():
            compiled(**inputs, **extra).loss.backward()

        start = time.perf_counter()
        compiled_step()
        compile_seconds = time.perf_counter() - start
        times = measure({"eager": eager_step, "compiled": compiled_step}, args.repeats)
        print(f"  {task:<13} eager {times['eager'] * 1e3:7.1f} ms   compiled {times['compiled'] * 1e3:7.1f} ms   "
              f"ratio {times['compiled'] / times['eager']:.2f}   (first call, compiling: {compile_seconds:.0f} s)")
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
