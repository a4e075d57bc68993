#!/usr/bin/env python
# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Memory of a training step at the embedded default config: with and without activation checkpointing, and the
alignment stage (backbone and LLM frozen, only the projector trains) against the multi-task stage.

Each case runs in its own process and reports two figures:
  saved for backward  bytes of the activations autograd keeps from the forward to the backward of each task
                      (`torch.autograd.graph.saved_tensors_hooks`; parameters and repeats not counted): exact and
                      independent of the allocator;
  step peak RSS       the process's peak resident memory during its first multi-task step (every task's forward
                      and backward, gradients accumulated) above its resident memory before it (Linux VmHWM, reset
                      first); it includes the gradients and the allocator's one-time growth.
Peer for each case: the multi-task stage without checkpointing. Frozen parts should keep nothing: in the alignment
stage the tower's forward saves no activation, and the captioning step saves only what the projector's gradient
needs (the LLM's activations, through which it flows).

    python benchmarks/memory.py                  # the three cases; recipe flags after the options override the config
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CASES = {
    "multitask": "multi-task stage (peer)",
    "multitask_checkpointing": "multi-task stage, activation checkpointing",
    "alignment": "alignment stage (projector only)",
}


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class SavedTensors:
    """Bytes of distinct non-parameter tensors autograd saves for backward inside the context, split into those
    saved during the tower's (`model.visual`) forward and the rest."""

    def __init__(self, model):
        self.parameters = {p.data_ptr() for p in model.parameters()}
        self.seen, self.bytes, self.in_tower = set(), {"tower": 0, "rest": 0}, False
        self.handles = [
            model.visual.register_forward_pre_hook(lambda *_: setattr(self, "in_tower", True)),
            model.visual.register_forward_hook(lambda *_: setattr(self, "in_tower", False)),
        ]

    def pack(self, tensor):
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if key[0] not in self.parameters and key not in self.seen:
            self.seen.add(key)
            self.bytes["tower" if self.in_tower else "rest"] += key[1]
        return tensor

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()


def run_case(case: str, recipe_flags: list[str]) -> dict:
    from common import default_run, first_batch

    from versavit_trainer import MultiTaskTrainer

    with tempfile.TemporaryDirectory() as out:
        flags = ["--output_dir", out, "--report_to", "none", *recipe_flags]
        model, _, specs, _, training_args = default_run(flags)
        if case == "alignment":
            specs = [spec for spec in specs if spec.name == "captioning"]
            training_args.stage = "alignment"
        MultiTaskTrainer(model, training_args, specs)  # sets the stage and freezes what the run freezes
        if case == "multitask_checkpointing":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        batches = {spec.name: first_batch(spec) for spec in specs}
        saved = {}
        before = status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        for task, batch in batches.items():  # one multi-task step, task after task; the counter allocates nothing
            with SavedTensors(model) as counter:
                loss = model(task=task, **batch).loss
            loss.backward()
            saved[task] = counter.bytes
        peak = status_kb("VmHWM")
    return {"saved": saved, "step_peak_kb": peak - before}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # one case, in this process
    args, recipe_flags = parser.parse_known_args()
    if args.case:
        print(json.dumps(run_case(args.case, recipe_flags)))
        return
    results = {}
    for case in CASES:
        command = [sys.executable, __file__, "--case", case, *recipe_flags]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[case] = json.loads(output.strip().splitlines()[-1])
    peer = results["multitask"]
    print(f"default config, torch {torch.__version__}; MB saved for backward per task (tower + rest) and the step's "
          "peak RSS, each with its ratio to the multi-task stage without checkpointing")
    tasks = list(peer["saved"])
    print(f"{'case':<44}" + "".join(f"{t:>22}" for t in tasks) + f"{'step peak RSS':>18}")
    for case, label in CASES.items():
        row = results[case]
        cells = ""
        for task in tasks:
            if task not in row["saved"]:
                cells += f"{'-':>22}"
                continue
            tower, rest = row["saved"][task]["tower"] / 2**20, row["saved"][task]["rest"] / 2**20
            ratio = (tower + rest) / (sum(peer["saved"][task].values()) / 2**20)
            cells += f"{tower:>7.1f} +{rest:>6.1f} {ratio:>5.2f}"
        peak = row["step_peak_kb"] / 1024
        print(f"{label:<44}{cells}{peak:>11.0f} {peak / (peer['step_peak_kb'] / 1024):>5.2f}")

if __name__ == "__main__":
    main()
