# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""The task streams a `MultiTaskTrainer` interleaves: `TaskSpec` (a dataset, its collator, batch size and λ), the
map-style dataset over every stream that the schedule indexes (`MultiTaskDataset`: a bad sample is skipped, logged
and counted) and the collator that batches each task's samples (`MultiTaskCollator`)."""

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import PIL.Image
from torch.utils.data import DataLoader, Dataset

logger = logging.getLogger(__name__)


# Consecutive samples a task may fail to load before the run stops: one bad file is skipped, a bad dataset is not.
MAX_CONSECUTIVE_FAILURES = 16


# What loading, transforming, validating or collating a bad sample raises (a decompression bomb from `datasets`'
# image decoding is not an OSError).
SAMPLE_ERRORS = (OSError, ValueError, PIL.Image.DecompressionBombError)


@dataclass
class TaskSpec:
    """One task stream of multi-task training.

    Args:
        name: the model task it drives: `"captioning"`, `"depth"` or `"segmentation"` (`config.tasks`).
        dataset: a map-style dataset (`len` and integer indexing), e.g. a `datasets.Dataset`.
        collator: turns a list of samples into the task model's forward arguments (with `labels`).
        batch_size: per-device batch size (paper: 8 for captioning, 32 for depth and segmentation).
        weight: the loss weight λ (paper: 1/3 each).
        transform: optional per-sample function applied after indexing (decoding, augmentation). A sample whose
            indexing, transform or the collator's `validate` raises `OSError`, `ValueError` or a decompression-bomb
            error is skipped, logged (with its index) and counted.
    """

    name: str
    dataset: Dataset
    collator: Callable[[list], dict]
    batch_size: int
    weight: float = 1 / 3
    transform: Callable | None = None

    def __post_init__(self):
        where = f"TaskSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskSpec.name: expected a task name, got {self.name!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"{where}.batch_size: must be a positive integer, got {self.batch_size!r}.")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"{where}.weight: the loss weight λ must be a finite value >= 0, got {self.weight!r}.")
        try:
            size = len(self.dataset)
        except TypeError as err:
            raise ValueError(f"{where}.dataset: needs len() and integer indexing (a map-style dataset).") from err
        if size == 0:
            raise ValueError(f"{where}.dataset: is empty.")


class MultiTaskDataset(Dataset):
    """Samples of several tasks addressed by `(task_index, sample_index[, stream_position])`; failing samples are
    skipped and counted.

    A sample is loaded, transformed and checked by its collator's `validate` (when it has one); if any of these
    raises one of `SAMPLE_ERRORS`, the next index of the same dataset is tried, so batches keep their size. Item:
    `(task_index, sample, skipped, stream_position)`, where `skipped` is the number of samples passed over.
    """

    def __init__(self, tasks: Sequence[TaskSpec]):
        self.tasks = list(tasks)

    def __len__(self) -> int:
        return sum(len(task.dataset) for task in self.tasks)

    def __getitem__(self, key: tuple[int, ...]):
        task_index, index = key[0], key[1]
        stream_position = key[2] if len(key) > 2 else index
        task = self.tasks[task_index]
        size = len(task.dataset)
        validate = getattr(task.collator, "validate", None)
        error = None
        for attempt in range(MAX_CONSECUTIVE_FAILURES):
            position = (index + attempt) % size
            try:
                sample = task.dataset[position]
                if task.transform is not None:
                    sample = task.transform(sample)
                if validate is not None:
                    validate(sample)
                return task_index, sample, attempt, stream_position
            except SAMPLE_ERRORS as err:
                error = err
                logger.warning("task %s: skipping sample %d, which failed to load: %s", task.name, position, err)
        raise RuntimeError(
            f"task {task.name}: {MAX_CONSECUTIVE_FAILURES} consecutive samples from index {index} failed to load; "
            f"last error: {error}"
        ) from error


class MultiTaskCollator:
    """Collates one micro-batch (all of one task) with its task's collator and tags it with the task name.

    The task collator's random decisions are seeded from the stream position of the batch's first sample
    (`at_position`, when it has it). A batch the collator still refuses is collated without the samples that fail
    alone (each skipped, logged and counted); a batch left empty stops the run."""

    def __init__(self, tasks: Sequence[TaskSpec]):
        self.tasks = list(tasks)

    def __call__(self, items: list) -> dict:
        task_indices = {item[0] for item in items}
        if len(task_indices) != 1:
            raise ValueError(f"a multi-task micro-batch must hold one task, got tasks {sorted(task_indices)}.")
        task = self.tasks[task_indices.pop()]
        samples = [item[1] for item in items]
        positions = [item[3] if len(item) > 3 else None for item in items]
        skipped = sum(item[2] for item in items)
        try:
            batch = self._collate(task, samples, positions[0])
        except SAMPLE_ERRORS as err:
            kept = []
            for sample, position in zip(samples, positions):
                try:
                    self._collate(task, [sample], position)
                    kept.append(sample)
                except SAMPLE_ERRORS as single:
                    logger.warning("task %s: skipping the sample at stream position %s, which failed to collate: %s",
                                   task.name, position, single)
            if not kept:
                raise RuntimeError(f"task {task.name}: no sample of the batch at stream position {positions[0]} "
                                   f"could be collated; last error: {err}") from err
            skipped += len(samples) - len(kept)
            batch = self._collate(task, kept, positions[0])
        batch["task"] = task.name
        batch["num_skipped"] = skipped
        batch["stream_positions"] = positions
        return batch

    @staticmethod
    def _collate(task: TaskSpec, samples: list, position: int | None) -> dict:
        if position is not None and hasattr(task.collator, "at_position"):
            task.collator.at_position(position)
        return dict(task.collator(samples))


class ScheduleDataLoader(DataLoader):
    """A DataLoader over a `MultiTaskBatchSampler` that forwards `set_epoch` (the Trainer calls it per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


__all__ = ["MAX_CONSECUTIVE_FAILURES", "MultiTaskCollator", "MultiTaskDataset", "SAMPLE_ERRORS", "TaskSpec"]
