# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Where a run's datasets come from (dataset folders or generated scenes, per objective and stage), the task streams
of a run, and the training collators and held-out batches of the paper's dense tasks."""

from dataclasses import dataclass

from datasets import Dataset

from .options import DataArguments
from .streams import TaskSpec

# Where held-out scenes start: far from any training seed a config would use.
EVAL_SCENE_SEED_OFFSET = 1_000_000


@dataclass
class RunData:
    train: dict[str, Dataset]
    eval: dict[str, Dataset]
    text_embed_dim: int | None
    depth_label_space: str | None = None  # "depth" / "disparity" when the run has depth data
    text_encoder: str | None = None  # the sentence encoder that embedded the texts (DataSources.text_encoder)


def depth_label_space(data_args: DataArguments, dataset: Dataset | None) -> str:
    """The label space of the run's depth data: `data_args.depth_label_space`, else the dataset's `depth_space`
    column (one value for every row), else "depth" for the generated scenes (`dataset` None); a folder that does not
    say is an error, since Depth Anything pseudo-labels are disparity and a guess would silently flip the meaning."""
    from ..data.schemas import DEPTH_SPACE_COLUMN

    recorded = "depth" if dataset is None else None  # the generated scenes hold depth
    if dataset is not None and DEPTH_SPACE_COLUMN in dataset.column_names:
        values = set(dataset.unique(DEPTH_SPACE_COLUMN))
        if len(values) != 1 or not values <= {"depth", "disparity"}:
            raise ValueError(f"depth data: the {DEPTH_SPACE_COLUMN} column holds {sorted(values)}; expected one of "
                             "'depth' or 'disparity' for every row.")
        recorded = values.pop()
    if data_args.depth_label_space is not None:
        if recorded is not None and recorded != data_args.depth_label_space:
            where = data_args.depth_data or "the generated scenes"
            raise ValueError(f"depth_label_space: {data_args.depth_label_space!r}, but the depth data ({where}) are "
                             f"{recorded!r}.")
        return data_args.depth_label_space
    if recorded is not None:
        return recorded
    raise ValueError(f"depth data: {data_args.depth_data} does not record its label space (no {DEPTH_SPACE_COLUMN} "
                     "column); pass --depth_label_space disparity (Depth Anything pseudo-labels) or depth.")


class DataSources:
    """The datasets of a run's objectives, by source, each folder read and each set of scenes generated once.

    A source is a dataset folder, a mapping `{num_scenes, scene_seed, texts}` of generated scenes (`texts`: which
    of the scenes' conversations the captioning data holds, `scenes.SCENE_TEXTS`), or None: the objective's
    `<name>_data` option, else the run's scenes (`num_scenes` from `scene_seed`, default conversations).
    `objectives`: the names the run uses (the text encoder is loaded only when one of them needs its scenes' texts
    embedded)."""

    def __init__(self, data_args: DataArguments, objectives: list[str]):
        from ..objectives import get_objective

        self.data_args = data_args
        self.objectives = [get_objective(name, "tasks") for name in objectives]
        self._scenes: dict[tuple[int, int, str], dict[str, Dataset]] = {}
        self._folders: dict[tuple[str, str], Dataset] = {}
        self._prepared: dict[tuple[str, str], Dataset] = {}
        self.embedder = None

    def _embed(self):
        if self.embedder is None and any(o.needs_text_embeddings for o in self.objectives):
            from modeling_versavit import SentenceEmbedder

            from ..data.assets import minilm_path

            self.embedder = SentenceEmbedder(self.data_args.text_encoder or minilm_path())
        return self.embedder

    def scenes(self, num_scenes: int, seed: int, texts: str = "default") -> dict[str, Dataset]:
        from ..data.scene_tables import scene_datasets

        if num_scenes < 1:
            raise ValueError("num_scenes: an objective without a dataset folder trains on generated scenes; got 0.")
        if (num_scenes, seed, texts) not in self._scenes:
            extra = tuple(dict.fromkeys(t for objective in self.objectives for t in objective.scene_tables))
            self._scenes[num_scenes, seed, texts] = scene_datasets(
                num_scenes, self._embed(), seed=seed, style=self.data_args.scene_style, texts=texts,
                extra_tables=extra, expressions=self.data_args.scene_expressions)
        return self._scenes[num_scenes, seed, texts]

    def train(self, name: str, source: str | dict | None = None) -> Dataset:
        """Objective `name`'s training data from `source`."""
        from ..objectives import get_objective

        objective = get_objective(name, "tasks")
        if source is None:
            source = objective.data_folder(self.data_args)
        key = (name, repr(sorted(source.items())) if isinstance(source, dict) else repr(source))
        if key not in self._prepared:
            self._prepared[key] = objective.prepare_data(self._read(objective, source), self.data_args)
        return self._prepared[key]

    def _read(self, objective, source: str | dict | None) -> Dataset:
        if isinstance(source, str):
            if (objective.name, source) not in self._folders:
                self._folders[objective.name, source] = objective.load_folder(source)
            return self._folders[objective.name, source]
        source = source or {}
        return objective.from_scenes(self.scenes(source.get("num_scenes", self.data_args.num_scenes),
                                                 source.get("scene_seed", self.data_args.scene_seed),
                                                 source.get("texts", "default")))

    def held_out(self, name: str) -> Dataset | None:
        """Objective `name`'s held-out data (its `<name>_eval_data` folder, else `num_eval_scenes` scenes far from
        the training seeds), or None when it has no held-out evaluation or none is asked for."""
        from ..objectives import get_objective

        objective = get_objective(name, "tasks")
        if not objective.has_held_out:
            return None
        folder = objective.held_out_folder(self.data_args)
        if folder:
            return objective.load_folder(folder)
        if not self.data_args.num_eval_scenes:
            return None
        seed = self.data_args.scene_seed + EVAL_SCENE_SEED_OFFSET
        return objective.from_scenes(self.scenes(self.data_args.num_eval_scenes, seed))

    def text_embed_dim(self, datasets: list[Dataset]) -> int | None:
        """The width of the text embeddings: the text encoder's, else that of the first sample of `datasets` (the
        segmentation or contrastive data read from folders: a list of embeddings per row, or one)."""
        if self.embedder is not None:
            return self.embedder.dim
        if not datasets:
            return None
        embeds = datasets[0][0]["text_embeds"]
        return len(embeds[0]) if embeds and isinstance(embeds[0], (list, tuple)) else len(embeds)

    def text_encoder(self) -> str | None:
        """The sentence encoder this run embedded its texts with, as it was loaded (a folder or a Hub id), for
        `VersaViTConfig.text_encoder`; None when no text was embedded here (the embeddings came with the data)."""
        return None if self.embedder is None else self.embedder.source

    def depth_label_space(self, sources: list[str | dict | None]) -> str:
        """The one label space of the run's depth data from `sources` (see `depth_label_space`)."""
        spaces = set()
        for source in sources:
            folder = source if source is not None else self.data_args.depth_data
            spaces.add(depth_label_space(self.data_args, self.train("depth", source) if isinstance(folder, str)
                                         else None))
        if len(spaces) > 1:
            raise ValueError(f"depth data: the stages' depth data mix label spaces {sorted(spaces)}; a depth head "
                             "learns one.")
        return spaces.pop()


def load_data(data_args: DataArguments, with_eval: bool = True) -> RunData:
    """The training datasets of `data_args.curriculum_tasks` and their held-out data (folders or scenes)."""
    sources = DataSources(data_args, data_args.curriculum_tasks)
    train = {task: sources.train(task) for task in data_args.curriculum_tasks}
    held_out = {}
    if with_eval:
        held_out = {task: data for task in data_args.curriculum_tasks if (data := sources.held_out(task)) is not None}
    dim = sources.text_embed_dim([train["segmentation"]]) if "segmentation" in train else None
    space = sources.depth_label_space([None]) if "depth" in train else None
    return RunData(train=train, eval=held_out, text_embed_dim=dim, depth_label_space=space,
                   text_encoder=sources.text_encoder())


def task_specs(data_args: DataArguments, train: dict[str, Dataset], tokenizer, seed: int,
               text_embed_dim: int | None = None) -> list[TaskSpec]:
    """The task streams of `train` (objective name -> dataset), in `data_args.curriculum_tasks` order, with each
    objective's
    collator, batch size and λ from `data_args` (`text_embed_dim`: the width every segmentation sample's text
    embeddings must have, the head's)."""
    from ..objectives import ObjectiveContext, get_objective

    context = ObjectiveContext(data_args, tokenizer, seed, text_embed_dim)
    specs = []
    for name in data_args.curriculum_tasks:
        objective = get_objective(name, "tasks")
        specs.append(TaskSpec(name, train[name], objective.collator(context), objective.batch_size(data_args),
                              objective.weight(data_args)))
    return specs


__all__ = [
    "DataSources",
    "EVAL_SCENE_SEED_OFFSET",
    "RunData",
    "depth_label_space",
    "load_data",
    "task_specs",
]
