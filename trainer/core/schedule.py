# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The interleaved batch schedule of multi-task training (paper §4.3, supplement §8.1).

Each optimizer step sees `rounds_per_step` rounds of one batch of every task, in the fixed task order. Each task
reads an endless stream of its sample indices: one seeded permutation of its dataset after another, so a smaller
dataset is resampled (reshuffled and repeated) to run as many steps as the largest. Everything is a pure function
of (seed, position): every rank builds the same task order, the ranks of one global batch read disjoint slices of
it, and resuming at a position needs no saved state.
"""

import hashlib
from collections.abc import Iterator, Sequence

import torch


class MultiTaskBatchSampler:
    """Batch sampler of one rank: yields micro-batches as lists of `(task_index, sample_index, stream_position)`.

    `stream_position` is the sample's place in its task's endless stream (unique per task across ranks and epochs):
    the trainer seeds every random decision of a batch (flips, expression subsets) from it, so they too are a pure
    function of (seed, position).

    Args:
        dataset_sizes: samples per task, in schedule order.
        batch_sizes: per-device batch size of each task.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: base seed of every permutation.
        rounds_per_step: rounds of all tasks per optimizer step.
        steps_per_epoch: optimizer steps per epoch; defaults to one pass over the largest task's dataset (its last
            incomplete global batch dropped, at least one step).
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_sizes: Sequence[int],
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        rounds_per_step: int = 1,
        steps_per_epoch: int | None = None,
    ):
        if len(dataset_sizes) != len(batch_sizes) or not dataset_sizes:
            raise ValueError(f"dataset_sizes {list(dataset_sizes)} and batch_sizes {list(batch_sizes)}: one per task.")
        for index, (size, batch) in enumerate(zip(dataset_sizes, batch_sizes)):
            if size < 1 or batch < 1:
                raise ValueError(f"task {index}: dataset size {size} and batch size {batch} must both be >= 1.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside num_replicas {num_replicas}.")
        if rounds_per_step < 1:
            raise ValueError(f"rounds_per_step must be >= 1, got {rounds_per_step}.")
        self.dataset_sizes = list(dataset_sizes)
        self.batch_sizes = list(batch_sizes)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.rounds_per_step = rounds_per_step
        global_batches = [b * num_replicas for b in self.batch_sizes]
        self.steps_per_epoch = steps_per_epoch or max(
            1, max(n // g for n, g in zip(self.dataset_sizes, global_batches))
        )
        self.epoch = 0
        self._permutations: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def num_tasks(self) -> int:
        return len(self.dataset_sizes)

    def __len__(self) -> int:
        """Micro-batches per epoch on this rank."""
        return self.steps_per_epoch * self.rounds_per_step * self.num_tasks

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, task: int, cycle: int) -> torch.Tensor:
        """The order of task `task`'s samples in its `cycle`-th pass, a function of (seed, task, cycle) only."""
        key = (task, cycle)
        if key not in self._permutations:
            if len(self._permutations) >= 2 * self.num_tasks:  # keep the current and next cycle of each task
                self._permutations.pop(next(iter(self._permutations)))
            digest = hashlib.sha256(f"versavit/{self.seed}/{task}/{cycle}".encode()).hexdigest()
            generator = torch.Generator().manual_seed(int(digest[:15], 16))
            self._permutations[key] = torch.randperm(self.dataset_sizes[task], generator=generator)
        return self._permutations[key]

    def stream(self, task: int, start: int, count: int) -> list[int]:
        """Positions `start .. start + count - 1` of the task's endless stream of sample indices."""
        size = self.dataset_sizes[task]
        return [
            int(self.permutation(task, position // size)[position % size]) for position in range(start, start + count)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rounds = self.steps_per_epoch * self.rounds_per_step
        for local_round in range(rounds):
            batch_number = self.epoch * rounds + local_round  # this task batch's index since training began
            for task in range(self.num_tasks):
                batch = self.batch_sizes[task]
                start = (batch_number * self.num_replicas + self.rank) * batch
                yield [(task, index, start + k) for k, index in enumerate(self.stream(task, start, batch))]


__all__ = ["MultiTaskBatchSampler"]
