"""Task datasets: schemas, depth storage, aligned collators, text embeddings, the generated default data."""

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, Value

from modeling_versavit import SentenceEmbedder, VersaViTImageProcessor
from versavit_trainer.data.assets import minilm_path
from versavit_trainer.data.collators import CaptioningCollator, DepthCollator, SegmentationCollator, resize_depth
from versavit_trainer.data.scene_tables import scene_datasets
from versavit_trainer.data.scenes import generate_scene
from versavit_trainer.data.schemas import check_schema, decode_depth, encode_depth

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder(minilm_path())


@pytest.fixture(scope="module")
def scenes(embedder):
    return scene_datasets(5, embedder, seed=10)


def unpatchify(pixel_values, grid, patch=14, merge=2, temporal=2):
    """Back from the processor's packed patches to one (3, H, W) image in 0..255, the inverse of its patchify."""
    _, gh, gw = grid.tolist()
    x = pixel_values.view(gh // merge, gw // merge, merge, merge, 3, temporal, patch, patch)
    x = x.permute(4, 5, 0, 2, 6, 1, 3, 7).reshape(3, temporal, gh * patch, gw * patch)[:, 0]
    return (x * STD[:, None, None] + MEAN[:, None, None]) * 255


def coded_image(width=90, height=60):
    """Red encodes the column, green the row."""
    cols = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    rows = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return PIL.Image.fromarray(np.stack([cols, rows, np.zeros_like(cols)], -1).round().astype(np.uint8))


def test_depth_storage_round_trip():
    depth = np.random.default_rng(0).uniform(0.5, 20.0, (30, 40)).astype(np.float32)
    depth[3, 4], depth[5, 6], depth[7, 8] = np.nan, np.inf, -1.0
    stored, scale = encode_depth(depth)
    assert stored.mode in ("I;16", "I") and np.asarray(stored).max() == 65535
    back = decode_depth(stored, scale)
    assert np.isnan(back[3, 4]) and np.isnan(back[5, 6]) and np.isnan(back[7, 8])
    valid = np.isfinite(depth) & (depth > 0)
    np.testing.assert_allclose(back[valid], depth[valid], atol=20.0 / 65535)
    with pytest.raises(ValueError, match="depth_scale: must be a finite value > 0"):
        decode_depth(stored, float("nan"))


def test_depth_resize_never_mixes_labelled_and_unlabelled_pixels():
    depth = torch.full((40, 40), 5.0)
    depth[:, :13] = float("nan")
    resized = resize_depth(depth, 28)
    labelled = torch.isfinite(resized)
    torch.testing.assert_close(resized[labelled], torch.full_like(resized[labelled], 5.0))  # no pull towards holes
    # Output column j samples source x = (j + 0.5) * 40 / 28 - 0.5 between floor(x) and floor(x) + 1: labelled
    # exactly when both are >= 13, i.e. j >= 9.
    assert not labelled[:, :9].any() and labelled[:, 9:].all()


def test_depth_collator_keeps_image_and_label_aligned_under_resize_and_flip():
    image = coded_image()
    depth = np.tile(1.0 + np.arange(90, dtype=np.float32), (60, 1))
    depth[:, :10] = np.nan  # a hole at the left edge
    stored, scale = encode_depth(depth)
    batch = DepthCollator(size=56, flip_probability=1.0, seed=0)(
        [{"image": image, "depth": stored, "depth_scale": scale}]
    )
    picture = unpatchify(batch["pixel_values"], batch["image_grid_thw"][0])
    label = batch["labels"][0]
    column_from_image = picture[0] / 255 * 89  # the source column each output pixel shows
    labelled = torch.isfinite(label)
    assert labelled[:, :40].all() and not labelled[:, -5:].any()  # the flipped hole is on the right now
    assert (label[labelled] - (1 + column_from_image[labelled])).abs().max() < 2.0


def test_segmentation_collator_keeps_masks_aligned(scenes):
    image = coded_image()
    mask = np.zeros((60, 90), dtype=bool)
    mask[:, :30] = True  # the left third
    sample = {"image": image, "expressions": ["the first third"], "masks": [PIL.Image.fromarray(mask)],
              "text_embeds": [[0.0] * 384]}
    batch = SegmentationCollator(size=56, flip_probability=1.0, seed=0)([sample])
    picture = unpatchify(batch["pixel_values"], batch["image_grid_thw"][0])
    label = batch["labels"][0].bool()
    source_column = picture[0] / 255 * 89
    assert (source_column[label] < 31).float().mean() > 0.97
    assert (source_column[~label] > 28).float().mean() > 0.97
    assert label[:, -10:].all() and not label[:, :20].any()  # flipped: the mask is on the right


def test_segmentation_collator_errors():
    image = coded_image()
    mask = PIL.Image.fromarray(np.zeros((10, 10), dtype=bool))
    collate = SegmentationCollator(size=56)
    with pytest.raises(ValueError, match=r"masks\[0\]: size 10x10 does not match its image 90x60"):
        collate([{"image": image, "expressions": ["x"], "masks": [mask], "text_embeds": [[0.0]]}])
    with pytest.raises(ValueError, match="expression 0 is empty"):
        collate([{"image": image, "expressions": [" "], "masks": [mask.resize((90, 60))], "text_embeds": [[0.0]]}])
    with pytest.raises(ValueError, match="one mask and one text embedding per expression"):
        collate([{"image": image, "expressions": ["a", "b"], "masks": [mask], "text_embeds": [[0.0]]}])
    with pytest.raises(ValueError, match="size: must be a positive multiple of 28"):
        SegmentationCollator(size=500)


def test_minilm_paraphrases_score_higher_than_unrelated_sentences(embedder):
    emb = embedder(
        ["the red ball on the left", "the crimson sphere at the left side", "quarterly earnings rose sharply"]
    )
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))  # MiniLM prescribes L2 normalisation
    similarity = emb @ emb.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2 and similarity[0, 1] > similarity[1, 2] + 0.2
    assert (embedder.pooling, embedder.normalize) == ("mean", True)
    with pytest.raises(ValueError, match=r"sentences\[1\]: expected a non-empty string"):
        embedder(["fine", ""])


def test_scene_datasets_follow_the_schemas_and_keep_exact_labels(scenes):
    for task, dataset in scenes.items():
        assert check_schema(dataset, task) is dataset
    row = scenes["depth"][2]
    scene = generate_scene(12)
    depth = decode_depth(row["depth"], row["depth_scale"])
    finite = np.isfinite(scene.depth)
    assert (np.isnan(depth) == ~finite).all()
    np.testing.assert_allclose(
        depth[finite], scene.depth[finite], rtol=1e-4, atol=float(scene.depth[finite].max()) / 65535
    )
    segmentation = scenes["segmentation"][0]
    first = generate_scene(10)
    assert segmentation["expressions"] == [text for text, _ in first.expressions]
    for mask, (_, expected) in zip(segmentation["masks"], first.expressions):
        assert np.array_equal(np.asarray(mask) > 0, expected)
    assert len(segmentation["text_embeds"][0]) == 384
    turns = scenes["captioning"][0]["texts"]
    assert turns[0] == {"user": "Describe the image.", "assistant": first.caption}


def test_schema_errors_name_the_column(scenes):
    with pytest.raises(ValueError, match=r"depth dataset: missing column 'depth_scale'"):
        check_schema(scenes["depth"].remove_columns("depth_scale"), "depth")
    wrong = scenes["depth"].cast_column("depth_scale", Value("string"))
    with pytest.raises(ValueError, match=r"depth dataset: column 'depth_scale' is Value\('string'"):
        check_schema(wrong, "depth")
    captions = Dataset.from_dict({"image": [PIL.Image.new("RGB", (8, 8))], "caption": ["a gray square"]})
    captions = captions.cast_column("image", scenes["depth"].features["image"])
    assert check_schema(captions, "captioning") is captions
    with pytest.raises(ValueError, match="task: expected one of"):
        check_schema(captions, "normals")


def test_captioning_collator_uses_turns_or_captions(scenes):
    from transformers import AutoTokenizer

    from modeling_versavit import VersaViTCaptioningProcessor, VersaViTImageProcessor
    from versavit_trainer.data.assets import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = VersaViTCaptioningProcessor(
        VersaViTImageProcessor(size={"shortest_edge": 3136, "longest_edge": 112 * 112}), tokenizer
    )
    collate = CaptioningCollator(processor)
    batch = collate([scenes["captioning"][0], {"image": PIL.Image.new("RGB", (64, 48)), "caption": "A gray card."}])
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"] != -100).any(dim=1).all()
    answer = tokenizer.decode(batch["labels"][1][batch["labels"][1] != -100], skip_special_tokens=True)
    assert answer == "A gray card."
    with pytest.raises(ValueError, match="neither conversation turns"):
        collate([{"image": PIL.Image.new("RGB", (64, 48))}])

    # max_turns: a random subset of the turns, in their order, every kept answer labelled
    sample = scenes["captioning"][0]
    assert len(sample["texts"]) >= 3
    subset = CaptioningCollator(processor, max_turns=2, seed=0)
    seen = set()
    answers = [turn["assistant"] for turn in sample["texts"]]
    for _ in range(8):
        labels = subset([sample])["labels"][0].tolist()
        runs, run = [], []  # contiguous labelled spans: one per kept answer
        for token in labels + [-100]:
            if token != -100:
                run.append(token)
            elif run:
                runs.append(tokenizer.decode(run, skip_special_tokens=True).strip())
                run = []
        assert len(runs) == 2 and all(text in answers for text in runs), runs
        positions = [answers.index(text) for text in runs]
        assert positions == sorted(positions)
        seen.add(tuple(positions))
    assert len(seen) > 1  # not always the same two
    with pytest.raises(ValueError, match="max_turns: must be >= 1 or None, got 0"):
        CaptioningCollator(processor, max_turns=0)


def test_multitask_trainer_runs_on_the_generated_scenes(tmp_path, scenes):
    """The three collators feed MultiTaskTrainer end to end on the embedded default data: each task's batches carry
    that task's scenes (answers from the scenes' texts, depth labels, masks at the drawn non-square sizes), every part
    trains, and the logged total is Σ λ x the task losses."""
    from conftest import tiny_config
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from modeling_versavit import (
        IGNORE_INDEX,
        VersaViTCaptioningProcessor,
        VersaViTForMultiTask,
        VersaViTImageProcessor,
        captioning_config,
    )
    from versavit_trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
    from versavit_trainer.data.assets import smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    config = captioning_config(tiny_config(text_embed_dim=384), llm, tokenizer)
    model = VersaViTForMultiTask(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    processor = VersaViTCaptioningProcessor(
        VersaViTImageProcessor(size={"shortest_edge": 3136, "longest_edge": 112 * 112}), tokenizer
    )
    resolutions = {(56, 112), (112, 56)}
    tasks = [
        TaskSpec("captioning", scenes["captioning"], CaptioningCollator(processor), 2),
        TaskSpec("depth", scenes["depth"], DepthCollator(size=56, seed=0), 2),
        # dynamic resolution: every batch non-square, the heads take any grid
        TaskSpec("segmentation", scenes["segmentation"],
                 SegmentationCollator(size=56, seed=0, resolutions=[f"{h}x{w}" for h, w in resolutions]), 2),
    ]
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), max_steps=2, logging_steps=1, save_strategy="no",
                                      report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = MultiTaskTrainer(model, args, tasks)
    batches = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        batches.append(dict(inputs))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()

    assert [b["task"] for b in batches] == ["captioning", "depth", "segmentation"] * 2
    answers = {turn["assistant"] for row in scenes["captioning"] for turn in row["texts"]}
    for batch in batches:
        grid = batch["image_grid_thw"]
        assert len(grid) == 2
        if batch["task"] == "captioning":
            for labels in batch["labels"]:
                text = tokenizer.decode(labels[labels != IGNORE_INDEX], skip_special_tokens=True)
                assert any(answer in text for answer in answers), text
        elif batch["task"] == "depth":
            assert batch["labels"].shape == (2, 56, 56) and (grid[:, 1:] == 4).all()
            assert torch.isfinite(batch["labels"]).float().mean() > 0.5 and batch["labels"].nanmean() > 0
        else:
            height, width = (int(v) * 14 for v in grid[0, 1:])
            assert (height, width) in resolutions and (grid[:, 1:] == grid[0, 1:]).all()
            assert batch["labels"].shape[1:] == (height, width) and set(batch["labels"].unique().tolist()) == {0, 1}
            assert len(batch["text_embeds"]) == len(batch["labels"]) == len(batch["expression_image_index"])
    for part in ("visual.", "projector.", "language_model.", "depth_head.", "segmentation_head."):
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith(part)), part
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["loss"] == pytest.approx(sum(entry[f"loss_{t}_weighted"] for t in ("captioning", "depth",
                                                                                          "segmentation")), rel=1e-4)
    assert tasks[2].collator.positions_per_batch == 2  # the global batch: 2 per device x 1 process


def test_caption_image_processor_caps_at_896_squared():
    from versavit_trainer.data.processors import caption_image_processor

    big = PIL.Image.new("RGB", (2000, 2000))
    (_, h, w), = caption_image_processor()(images=[big], return_tensors="np")["image_grid_thw"].tolist()
    assert (h * 14) * (w * 14) <= 896 * 896 and h * 14 == 896


def test_collator_random_streams_differ_between_dataloader_workers(monkeypatch):
    import copy
    import random
    from types import SimpleNamespace

    collate = DepthCollator(size=56, flip_probability=0.5, seed=3)
    draws = {}
    for worker in (0, 1):
        copied = copy.deepcopy(collate)  # what each DataLoader worker receives
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda worker=worker: SimpleNamespace(id=worker))
        draws[worker] = [copied.random.random() for _ in range(5)]
    assert draws[0] != draws[1]
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    expected = random.Random(3)
    assert [collate.random.random() for _ in range(5)] == [expected.random() for _ in range(5)]  # main process


def test_flips_never_contradict_left_and_right():
    """A scene with a left / right pair, checked mask by mask: with precomputed embeddings a sample that mentions a
    side is not flipped; with online text the words are swapped; a sample without one is flipped as before."""
    from versavit_trainer.data.collators import mentions_direction, mirror_directions

    assert mirror_directions("The LEFT cube, left-hand of the leftmost Right ball") == \
        "The RIGHT cube, right-hand of the rightmost Left ball"
    assert not mentions_direction("the bright upright leftover cube") and mentions_direction("leftmost one")
    side = 28
    image = np.zeros((side, side, 3), np.uint8)
    image[:, : side // 2] = 200  # the left half is bright
    left, right = np.zeros((side, side), np.uint8), np.zeros((side, side), np.uint8)
    left[10:18, 2:8], right[10:18, 20:26] = 1, 1
    sample = {"image": PIL.Image.fromarray(image), "expressions": ["the cube on the left", "the cube on the right"],
              "masks": [PIL.Image.fromarray(left), PIL.Image.fromarray(right)], "text_embeds": [[0.0] * 4] * 2}

    def side_of(mask):  # which half holds the mask
        columns = np.nonzero(mask.numpy())[1]
        return "left" if columns.mean() < side / 2 else "right"

    unflipped = SegmentationCollator(size=side, flip_probability=0.0)([sample])
    offline = SegmentationCollator(size=side, flip_probability=1.0)([sample])
    assert [side_of(m) for m in offline["labels"]] == ["left", "right"]  # not flipped: the masks ...
    assert torch.equal(offline["pixel_values"], unflipped["pixel_values"])  # ... nor the image
    image_of = lambda batch: unpatchify(batch["pixel_values"], batch["image_grid_thw"][0])  # noqa: E731
    assert image_of(unflipped)[:, :, : side // 2].mean() > image_of(unflipped)[:, :, side // 2 :].mean() + 100
    online = SegmentationCollator(size=side, flip_probability=1.0, online_text=True)([sample])
    for text, mask in zip(online["expressions"], online["labels"]):  # flipped, and the words follow the masks
        assert side_of(mask) == ("left" if "left" in text else "right"), text
    assert online["expressions"] == ["the cube on the right", "the cube on the left"]
    neutral = {**sample, "expressions": ["the first cube", "the second cube"]}
    flipped = SegmentationCollator(size=side, flip_probability=1.0)([neutral])
    assert [side_of(m) for m in flipped["labels"]] == ["right", "left"]
    torch.testing.assert_close(image_of(flipped), image_of(unflipped).flip(-1), rtol=0, atol=1e-3)  # the image too


def test_a_batch_s_random_draws_depend_on_its_stream_position_alone():
    """In training every random decision of a batch (the flip, the subset of expressions) is a function of the
    collator's seed and the batch's stream position only: the same position gives the same batch whatever the
    collator drew before (as after a resume, or on another DataLoader worker), and other positions draw otherwise."""
    from versavit_trainer import TaskSpec
    from versavit_trainer.core.streams import MultiTaskCollator

    side = 28
    masks = []
    for k in range(3):  # three expressions, each mask a block of its own in the left half: a flip moves every one
        mask = np.zeros((side, side), np.uint8)
        mask[4 + 8 * k : 10 + 8 * k, 2 + 3 * k : 8 + 3 * k] = 1
        masks.append(PIL.Image.fromarray(mask))
    sample = {"image": coded_image(side, side), "expressions": ["the first", "the second", "the third"],
              "masks": masks, "text_embeds": [[float(k)] * 4 for k in range(3)]}

    def collate(position, history=()):
        collator = SegmentationCollator(size=side, flip_probability=0.5, max_expressions=1, seed=3)
        multi = MultiTaskCollator([TaskSpec("segmentation", [sample], collator, 1)])
        for earlier in history:
            multi([(0, sample, 0, earlier)])
        return multi([(0, sample, 0, position)])

    def draws(batch):  # (which expression, flipped)
        chosen = int(batch["text_embeds"][0, 0])
        expected = torch.from_numpy(np.array(masks[chosen])).float()
        flipped = torch.equal(batch["labels"][0], expected.flip(-1))
        assert flipped or torch.equal(batch["labels"][0], expected)
        return chosen, flipped

    for position in (0, 5, 17):
        alone = collate(position)
        after = collate(position, history=(3, 9, position, 40))
        assert draws(alone) == draws(after), position
        assert torch.equal(alone["pixel_values"], after["pixel_values"])
    drawn = [draws(collate(position)) for position in range(24)]
    assert {flip for _, flip in drawn} == {False, True}
    assert {chosen for chosen, _ in drawn} == {0, 1, 2}


def test_disparity_zero_is_the_sky_and_stays_a_label():
    """Depth Anything's relative output is disparity after a ReLU: the sky is exactly 0. Stored as disparity it stays
    a label (one storage step), where the depth reading drops it as a hole."""
    disparity = np.random.default_rng(1).uniform(0.5, 8.0, (20, 30)).astype(np.float32)
    disparity[:6] = 0.0  # sky
    disparity[10, 10] = np.nan  # a real hole
    stored, scale = encode_depth(disparity, space="disparity")
    back = decode_depth(stored, scale)
    assert np.isfinite(back[:6]).all() and (back[:6] <= 8.0 / 65535 * 1.01).all()
    assert np.isnan(back[10, 10])
    np.testing.assert_allclose(back[6:][np.isfinite(back[6:])], disparity[6:][np.isfinite(disparity[6:])],
                               atol=8.0 / 65535)
    as_depth, depth_scale = encode_depth(disparity)  # read as depth, 0 is a hole
    assert np.isnan(decode_depth(as_depth, depth_scale)[:6]).all()
    with pytest.raises(ValueError, match="space: expected 'depth' or 'disparity'"):
        encode_depth(disparity, space="inverse")


def test_the_depth_label_space_comes_from_the_data(tmp_path):
    from datasets import Dataset, Features, Value

    from versavit_trainer.core.options import DataArguments
    from versavit_trainer.core.sources import depth_label_space
    from versavit_trainer.data.schemas import DEPTH_FEATURES

    rows = {"image": [PIL.Image.new("RGB", (4, 4))], "depth": [PIL.Image.new("I;16", (4, 4))], "depth_scale": [1.0]}
    legacy = Dataset.from_dict(rows, features=DEPTH_FEATURES)
    labelled = Dataset.from_dict({**rows, "depth_space": ["disparity"]},
                                 features=Features({**DEPTH_FEATURES, "depth_space": Value("string")}))
    args = DataArguments(tasks=["depth"], depth_data="data/depth")
    assert depth_label_space(args, labelled) == "disparity"
    assert depth_label_space(DataArguments(tasks=["depth"]), None) == "depth"  # the generated scenes
    with pytest.raises(ValueError, match="does not record its label space .* pass --depth_label_space disparity"):
        depth_label_space(args, legacy)
    assert depth_label_space(DataArguments(tasks=["depth"], depth_data="d", depth_label_space="disparity"), legacy) == \
        "disparity"
    with pytest.raises(ValueError, match=r"depth_label_space: 'disparity', but the depth data \(the generated scenes\) "
                                         r"are 'depth'"):
        depth_label_space(DataArguments(tasks=["depth"], depth_label_space="disparity"), None)


# ------------------------------------------------------------------------------ dynamic resolution (paper §12)
RESOLUTIONS = ["56x56", "56x112", "84x28"]


def test_resolution_sets_are_parsed_and_bad_ones_named():
    from versavit_trainer.core.options import DataArguments, check_input_sizes
    from versavit_trainer.data.processors import parse_resolutions

    assert parse_resolutions(["448x644", "532", 560, [28, 56]], "r") == [(448, 644), (532, 532), (560, 560), (28, 56)]
    assert parse_resolutions(None, "r") is None and parse_resolutions([], "r") is None
    for bad in ("448x", "0x28", "axb", "28x28x28"):  # not a resolution at all: refused when the options are read
        with pytest.raises(ValueError) as info:
            DataArguments(depth_resolutions=["532x532", bad])
        assert str(info.value) == (f"depth_resolutions: '{bad}' is not a resolution: expected HEIGHTxWIDTH (or "
                                   "[HEIGHT, WIDTH], or one side for a square) of positive integers, e.g. 448x644.")
    # not in whole merge blocks of the tower (Qwen2-VL's 28 px): refused once the tower is known
    with pytest.raises(ValueError, match=r"depth_resolutions: '450x644' has a side that is not a multiple of 28 \(the "
                                         r"tower's patch x merge\), e.g. 448x644"):
        check_input_sizes(DataArguments(depth_resolutions=["532x532", "450x644"]), 28)
    with pytest.raises(ValueError, match="segmentation_resolutions: '100x100'"):
        check_input_sizes(DataArguments(segmentation_resolutions=["100x100"]), 28)
    with pytest.raises(ValueError, match=r"depth_resolutions: '56x56' .* multiple of 16 .*e.g. 256x368"):  # SigLIP
        check_input_sizes(DataArguments(depth_resolutions=["56x56"], depth_size=512, segmentation_size=512,
                                        contrastive_size=512), 16)
    with pytest.raises(ValueError, match="resolutions: '56x56' .* multiple of 32"):  # a patch-16 tower's collator
        DepthCollator(VersaViTImageProcessor(patch_size=16), size=64, resolutions=["56x56"])


def test_resolutions_written_as_pairs_in_yaml_are_read(tmp_path):
    from versavit_trainer.config import parse_config
    from versavit_trainer.core.options import DataArguments

    config = tmp_path / "run.yaml"
    config.write_text("depth_resolutions: [[448, 644], 532, '560x560']\nsegmentation_resolutions: [[56, 112]]\n")
    (args,) = parse_config((DataArguments,), ["--config", str(config)])
    assert args.depth_resolutions == ["448x644", "532", "560x560"] and args.segmentation_resolutions == ["56x112"]


def test_dynamic_resolution_resizes_each_batch_and_its_labels_together(scenes):
    image = coded_image()
    depth = np.tile(1.0 + np.arange(90, dtype=np.float32), (60, 1))
    depth[:, :10] = np.nan
    stored, scale = encode_depth(depth)
    collator = DepthCollator(size=56, flip_probability=0.0, seed=0, resolutions=RESOLUTIONS, positions_per_batch=2)
    mask = np.zeros((60, 90), dtype=bool)
    mask[10:40, 20:50] = True
    sample = {
        "image": image,
        "expressions": ["a box"],
        "masks": [PIL.Image.fromarray(mask)],
        "text_embeds": [[0.0] * 4],
    }
    segmentation = SegmentationCollator(size=56, flip_probability=0.0, seed=0, resolutions=RESOLUTIONS,
                                        positions_per_batch=2)
    seen = set()
    for position in range(0, 40, 2):
        collator.at_position(position)
        batch = collator([{"image": image, "depth": stored, "depth_scale": scale}] * 2)
        height, width = batch["labels"].shape[1:]
        seen.add((height, width))
        assert batch["image_grid_thw"].tolist() == [[1, height // 14, width // 14]] * 2
        # the reference: the hole-preserving resize of the label to the drawn size, and the image's columns
        torch.testing.assert_close(batch["labels"][0], resize_depth(torch.from_numpy(decode_depth(stored, scale)),
                                                                    (height, width)), equal_nan=True)
        picture = unpatchify(batch["pixel_values"][: height * width // 196], batch["image_grid_thw"][0])
        labelled = torch.isfinite(batch["labels"][0])
        assert (batch["labels"][0][labelled] - (1 + picture[0][labelled] / 255 * 89)).abs().max() < 90 / width + 1.5
        segmentation.at_position(position)
        masks = segmentation([sample])["labels"]
        expected = np.array(PIL.Image.fromarray(mask).resize((width, height), PIL.Image.NEAREST))
        assert masks.shape == (1, height, width) and np.array_equal(masks[0].numpy(), expected)  # nearest, same size
    assert seen == {(56, 56), (56, 112), (84, 28)}


def test_every_rank_of_a_step_and_a_resumed_run_draw_the_same_resolution():
    from versavit_trainer.core.schedule import MultiTaskBatchSampler

    def sizes(rank):
        sampler = MultiTaskBatchSampler([50], [3], num_replicas=2, rank=rank, seed=0, steps_per_epoch=12)
        collator = DepthCollator(size=56, seed=7, resolutions=RESOLUTIONS, positions_per_batch=3 * 2)
        drawn = []
        for batch in sampler:
            for _, _, position in batch:  # any sample of the batch (one collated alone after a failure too)
                collator.at_position(position)
                drawn.append(collator.batch_resolution())
        return drawn

    rank0, rank1 = sizes(0), sizes(1)
    assert rank0 == rank1 and len(set(rank0)) == 3
    assert [rank0[k : k + 3] for k in range(0, 36, 3)] == [[s] * 3 for s in rank0[::3]]  # one size per batch
    fixed = DepthCollator(size=56, seed=7)
    fixed.at_position(5)
    assert fixed.batch_resolution() == (56, 56)
