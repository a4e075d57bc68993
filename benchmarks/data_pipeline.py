#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Is the data the bottleneck? Each task's input stream against the model's consumption rate, at the embedded
default config (`recipes/configs/default.yaml`).

Data (ours): images/s of each task's stream as `MultiTaskTrainer` builds it (`get_train_dataloader`: the schedule
sampler, per-sample decoding and skip logic, the task's collator) with the config's `dataloader_num_workers`.
Peer: the model's consumption, images/s of one training forward + backward of the same task on such a batch.
A ratio data / model above 1 means the data keeps up; with 0 workers loading runs in series with the step, so the
share of the step spent loading is model / (data + model).

    python benchmarks/data_pipeline.py [--batches 8]
    python benchmarks/data_pipeline.py --dataloader_num_workers 2    # recipe flags override the config
"""

import argparse
import itertools
import tempfile
import time

import torch
from common import batch_images, default_run, first_batch, measure

from versavit_trainer import MultiTaskTrainer


def data_rate(model, spec, training_args, batches: int) -> float:
    trainer = MultiTaskTrainer(model, training_args, [spec])
    loader = iter(trainer.get_train_dataloader())
    next(loader)  # workers started, first batch out of the way
    start, images = time.perf_counter(), 0
    for batch in itertools.islice(loader, batches):
        images += batch_images(batch)
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8, help="batches read per task")
    parser.add_argument("--repeats", type=int, default=3, help="timed training passes per task")
    args, recipe_flags = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        model, _, specs, _, training_args = default_run(["--output_dir", out, "--report_to", "none", *recipe_flags])
        model.train()
        workers = training_args.dataloader_num_workers
        threads = torch.get_num_threads()
        print(f"default config, {workers} dataloader workers, torch {torch.__version__}, {threads} threads")
        print(f"{'task':<14}{'batch':>6}{'data img/s':>12}{'model img/s':>13}{'data / model':>14}{'loading share':>15}")
        for spec in specs:
            data = data_rate(model, spec, training_args, args.batches)  # its trainer freezes what the run freezes
            batch = first_batch(spec)

            def step():
                model(task=spec.name, **batch).loss.backward()

            seconds = measure({"step": step}, args.repeats)["step"]
            model.zero_grad(set_to_none=True)
            consumed = batch_images(batch) / seconds
            print(f"{spec.name:<14}{spec.batch_size:>6}{data:>12.1f}{consumed:>13.1f}{data / consumed:>14.2f}"
                  f"{consumed / (data + consumed):>15.1%}")


if __name__ == "__main__":
    main()
