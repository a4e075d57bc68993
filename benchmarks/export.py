#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Exported and compiled inference against eager mode (peer: eager), for the backbone and the depth model.

The same model, weights and images each way: eager PyTorch; the `torch.export` program (transformers'
`DynamoExporter`, dynamic image sizes) run as a module; the ONNX graph (transformers' `OnnxExporter`) in
onnxruntime on the CPU; and `torch.compile` (inductor). Inference (no gradients). Prints each one's time per call,
its ratio to eager and the largest difference from eager's output; the one-off export / compile time apart.

    python benchmarks/export.py [--depth 6 --embed_dim 384 --side 224 --batch 2 --repeats 5 --models both|backbone]
"""

import tempfile
import time

import torch
from common import dense_run, measure

from modeling_versavit import VersaViTForDepthEstimation, VersaViTModel
from versavit_trainer.export.graph import OUTPUT_KEYS, export_graph


def main():
    args, config, inputs = dense_run(__doc__, models=True)
    print(f"tower {args.depth} blocks x {args.embed_dim}, {args.batch} images of {args.side} px, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; inference")
    for model_class in [VersaViTModel, VersaViTForDepthEstimation][: 2 if args.models == "both" else 1]:
        model = model_class(config).eval()
        key = OUTPUT_KEYS[model_class.__name__][0]
        runners, setup = {}, {}
        start = time.perf_counter()
        program = export_graph(model, inputs, format="dynamo").program.module()
        setup["torch.export"] = time.perf_counter() - start
        runners["torch.export"] = lambda: program(**inputs)
        with tempfile.TemporaryDirectory() as folder:
            from transformers.exporters import ExportedModel

            start = time.perf_counter()
            export_graph(model, inputs, format="onnx").save_pretrained(folder)
            onnx = ExportedModel.from_pretrained(folder)
            setup["onnxruntime"] = time.perf_counter() - start
            runners["onnxruntime"] = lambda: onnx(**inputs)
            compiled = torch.compile(model)
            start = time.perf_counter()
            with torch.no_grad():
                compiled(**inputs)
            setup["torch.compile"] = time.perf_counter() - start
            runners["torch.compile"] = lambda: compiled(**inputs)

            def eager():
                return model(**inputs)

            with torch.no_grad():
                reference = eager()[key]
                differences = {name: float((run()[key] - reference).abs().max()) for name, run in runners.items()}
                times = measure({"eager (peer)": eager, **runners}, args.repeats)
        print(f"  {model_class.__name__}")
        for name, seconds in times.items():
            extra = "" if name not in setup else (
                f"   ratio {seconds / times['eager (peer)']:.2f}   max |diff| {differences[name]:.1e}   "
                f"(export/compile once: {setup[name]:.0f} s)"
            )
            print(f"    {name:<14} {seconds * 1e3:8.1f} ms{extra}")
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
