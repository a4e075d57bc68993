"""The labelling and conversion recipes, end to end on real photos with tiny random checkpoints saved locally."""

import json
import pickle
import shutil

import numpy as np
import PIL.Image
import pytest
from conftest import load_recipe, photo

from versavit_trainer.data.labelling import load_labelled
from versavit_trainer.data.schemas import check_schema, decode_depth


def test_depth_labelling_resumes_without_redoing_work(tmp_path, photos, tiny_depth_checkpoint):
    out = tmp_path / "depth"
    args = ["--model", str(tiny_depth_checkpoint), "--images", str(photos), "--output_dir", str(out),
            "--shard_size", "2", "--batch_size", "2"]
    summary = load_recipe("label_depth").main(args)
    assert summary["labelled"] == 3 and summary["skipped: unreadable image"] == 1 and summary["shards"] == 2
    dataset = load_labelled(out)
    check_schema(dataset, "depth")
    assert sorted(dataset["source"]) == ["astronaut.png", "chelsea.jpg", "kitchen/coffee.png"]
    for row in dataset:
        depth = decode_depth(row["depth"], row["depth_scale"])
        assert depth.shape == (row["image"].height, row["image"].width) and np.isfinite(depth).mean() > 0.5
    chelsea = next(row for row in dataset if row["source"] == "chelsea.jpg")
    assert chelsea["image"].format == "JPEG"  # the original file's bytes are kept
    assert set(dataset["depth_space"]) == {"disparity"}  # Depth Anything's relative output: the run's label space

    # A run interrupted in shard 1: its half-written folder is redone, shard 0 is not touched.
    marker = out / "shard-00000" / "DONE"
    stamp = marker.stat().st_mtime_ns
    shutil.rmtree(out / "shard-00001")
    (out / ".staging-00001").mkdir()
    summary = load_recipe("label_depth").main(args)
    assert summary["shards_resumed"] == 1 and marker.stat().st_mtime_ns == stamp
    assert summary["labelled"] == 3 and not (out / ".staging-00001").exists()
    assert len(load_labelled(out)) == 3


def test_mask_labelling_then_text_embeddings_give_the_segmentation_schema(tmp_path, photos, tiny_sam_checkpoint):
    annotations = tmp_path / "boxes.jsonl"
    rows = [
        {
            "image": "astronaut.png",
            "objects": [
                {"box": [10, 10, 90, 120], "text": "the astronaut"},
                {"box": [300, 300, 400, 400], "text": "outside the picture"},
                {"box": [0, 0, 50, 50], "text": "  "},
            ],
        },
        {
            "image": "kitchen/coffee.png",
            "objects": [{"box": [-20, 30, 200, 380], "text": "the cup, box partly outside"}],
        },
        {"image": "missing.png", "objects": [{"box": [0, 0, 10, 10], "text": "nothing"}]},
    ]
    annotations.write_text("\n".join(json.dumps(r) for r in rows))
    masks_out = tmp_path / "masks"
    summary = load_recipe("label_masks").main(["--sam", str(tiny_sam_checkpoint), "--annotations", str(annotations),
                                          "--images", str(photos), "--output_dir", str(masks_out)])
    assert summary["skipped: missing or unreadable image"] == 1
    assert summary["objects skipped: box outside the image"] == 1 and summary["objects skipped: empty text"] == 1
    labelled = load_labelled(masks_out)
    for row in labelled:
        assert len(row["expressions"]) == len(row["masks"]) >= 1
        assert all(mask.size == row["image"].size for mask in row["masks"])

    embedded = tmp_path / "embedded"
    load_recipe("embed_texts").main(["--input_dir", str(masks_out), "--output_dir", str(embedded)])
    dataset = load_labelled(embedded)
    check_schema(dataset, "segmentation")
    assert len(dataset) == len(labelled)
    for row, source in zip(dataset, labelled):
        assert row["expressions"] == source["expressions"] and len(row["text_embeds"]) == len(row["expressions"])
        assert len(row["text_embeds"][0]) == 384 and abs(np.linalg.norm(row["text_embeds"][0]) - 1) < 1e-5
        assert np.array_equal(np.asarray(row["masks"][0]), np.asarray(source["masks"][0]))


def test_refcoco_converter_on_a_hand_written_fixture(tmp_path):
    images = tmp_path / "train2014"
    images.mkdir()
    PIL.Image.fromarray(photo("coffee")).resize((80, 60)).save(images / "COCO_1.jpg")
    PIL.Image.fromarray(photo("chelsea")).resize((40, 30)).save(images / "COCO_2.jpg")
    rle = np.zeros((30, 40), dtype=np.uint8)
    rle[5:10, 20:30] = 1  # column-major run lengths, as COCO stores uncompressed RLE
    flat = rle.flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    instances = {
        "images": [{"id": 1, "file_name": "COCO_1.jpg", "height": 60, "width": 80},
                   {"id": 2, "file_name": "COCO_2.jpg", "height": 30, "width": 40}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 600, "bbox": [10, 20, 30, 20],
             "segmentation": [[10, 20, 40, 20, 40, 40, 10, 40]]},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [50, 5, 10, 10],
             "segmentation": [[50, 5, 60, 5, 60, 15, 50, 15]]},
            {"id": 21, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 50, "bbox": [20, 5, 10, 5],
             "segmentation": {"counts": counts, "size": [30, 40]}},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    refs = [
        {
            "ref_id": 1,
            "ann_id": 11,
            "image_id": 1,
            "split": "train",
            "sentences": [{"sent": "the big square"}, {"sent": "left block"}],
        },
        {"ref_id": 2, "ann_id": 12, "image_id": 1, "split": "train", "sentences": [{"sent": "small square top right"}]},
        {
            "ref_id": 3,
            "ann_id": 21,
            "image_id": 2,
            "split": "train",
            "sentences": [{"sent": "the strip"}, {"sent": ""}],
        },
        {"ref_id": 4, "ann_id": 11, "image_id": 1, "split": "val", "sentences": [{"sent": "held out"}]},
    ]
    with open(tmp_path / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle)
    out = tmp_path / "out"
    load_recipe("convert_refcoco").main(
        [
            "--refs",
            str(tmp_path / "refs(unc).p"),
            "--instances",
            str(tmp_path / "instances.json"),
            "--images",
            str(images),
            "--output_dir",
            str(out),
        ]
    )
    rows = {row["source"]: row for row in load_labelled(out)}
    first = rows["COCO_1.jpg"]
    assert first["expressions"] == ["the big square", "left block", "small square top right"]
    big = np.asarray(first["masks"][0]) > 0
    assert big[21:39, 11:39].all() and not big[:19].any() and not big[41:].any() and not big[:, :9].any()
    assert not big[:, 41:].any()
    assert np.array_equal(np.asarray(first["masks"][1]) > 0, big)  # both sentences of the ref share its mask
    assert rows["COCO_2.jpg"]["expressions"] == ["the strip"]
    assert np.array_equal(np.asarray(rows["COCO_2.jpg"]["masks"][0]) > 0, rle.astype(bool))  # RLE decoded exactly
    with open(tmp_path / "bad.p", "wb") as handle:
        pickle.dump([refs[0], {"ref_id": 9, "image_id": 1, "split": "train"}], handle)
    with pytest.raises(ValueError, match=r"refs: entry 1 of .*bad.p lacks \['ann_id', 'sentences'\]"):
        load_recipe("convert_refcoco").main(["--refs", str(tmp_path / "bad.p"), "--instances",
                                             str(tmp_path / "instances.json"), "--images", str(images),
                                             "--output_dir", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="split: no ref in 'testB'"):
        load_recipe("convert_refcoco").main(["--refs", str(tmp_path / "refs(unc).p"), "--instances",
                                        str(tmp_path / "instances.json"), "--images", str(images),
                                        "--output_dir", str(tmp_path / "x"), "--split", "testB"])


def test_caption_folder_converter(tmp_path, photos):
    folder = tmp_path / "captions"
    shutil.copytree(photos, folder)
    (folder / "astronaut.txt").write_text("An astronaut in a white suit.\n")
    (folder / "kitchen" / "coffee.txt").write_text("   ")
    summary = load_recipe("convert_captions").main(["--folder", str(folder), "--output_dir", str(tmp_path / "out")])
    assert (
        summary["labelled"] == 1 and summary["skipped: empty caption"] == 1 and summary["skipped: no caption file"] == 2
    )
    dataset = load_labelled(tmp_path / "out")
    check_schema(dataset, "captioning")
    assert dataset[0]["caption"] == "An astronaut in a white suit." and dataset[0]["source"] == "astronaut.png"


def test_load_labelled_needs_finished_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished labelling shards"):
        load_labelled(tmp_path)


def test_llava_and_sharegpt_conversations_convert_to_the_captioning_schema(tmp_path, photos):
    samples = [
        {"id": "a", "image": "astronaut.png", "conversations": [
            {"from": "human", "value": "<image>\nWho is this?"}, {"from": "gpt", "value": "An astronaut."},
            {"from": "human", "value": "What is behind?"}, {"from": "gpt", "value": "A flag."}]},
        {"id": "b", "image": ["chelsea.jpg"], "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image> What animal?"},
            {"role": "assistant", "content": "A cat."}]},
        {"id": "c", "image": ["astronaut.png", "chelsea.jpg"], "conversations": [
            {"from": "human", "value": "<image><image> Same?"}, {"from": "gpt", "value": "No."}]},
        {"id": "d", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "e", "image": "astronaut.png", "conversations": [{"from": "gpt", "value": "Answer first"}]},
        {"id": "f", "image": "broken.jpg", "conversations": [
            {"from": "human", "value": "<image> ?"}, {"from": "gpt", "value": "!"}]},
    ]
    (tmp_path / "llava.json").write_text(json.dumps(samples))
    summary = load_recipe("convert_conversations").main([
        "--format", "llava", "--input", str(tmp_path / "llava.json"), "--images", str(photos),
        "--output_dir", str(tmp_path / "out")])
    assert summary["labelled"] == 2 and summary["skipped: multi-image"] == 1 and summary["skipped: no image"] == 1
    assert summary["skipped: turns do not alternate"] == 1 and summary["skipped: unreadable image"] == 1
    rows = {row["source"]: row for row in load_labelled(tmp_path / "out")}
    check_schema(load_labelled(tmp_path / "out"), "captioning")
    assert rows["astronaut.png"]["texts"] == [{"user": "Who is this?", "assistant": "An astronaut."},
                                              {"user": "What is behind?", "assistant": "A flag."}]
    assert rows["chelsea.jpg"]["texts"] == [{"user": "What animal?", "assistant": "A cat."}]


def test_finevision_keeps_single_image_samples_only(tmp_path):
    from datasets import Dataset, Features, Image, List, Value

    image = PIL.Image.fromarray(np.full((32, 32, 3), 90, np.uint8))
    features = Features(
        {
            "images": List(Image()),
            "texts": List({"user": Value("string"), "assistant": Value("string")}),
            "source": Value("string"),
        }
    )
    Dataset.from_dict({
        "images": [[image], [image, image], [image]],
        "texts": [[{"user": "What colour?", "assistant": "Grey."}], [{"user": "Compare", "assistant": "Same."}],
                  [{"user": "", "assistant": "x"}]],
        "source": ["one", "two", "empty"],
    }, features=features).save_to_disk(str(tmp_path / "finevision"))
    summary = load_recipe("convert_conversations").main([
        "--format", "finevision", "--input", str(tmp_path / "finevision"), "--output_dir", str(tmp_path / "out")])
    assert summary["labelled"] == 1 and summary["skipped: multi-image"] == 1 and summary["skipped: empty turn"] == 1
    (row,) = load_labelled(tmp_path / "out")
    assert row["source"] == "one" and row["texts"] == [{"user": "What colour?", "assistant": "Grey."}]


def test_grit_rows_become_box_annotations_that_label_masks_reads(tmp_path, photos, tiny_sam_checkpoint):
    """GRIT's normalised spans -> pixel boxes with their caption text, in label_masks.py's input format."""
    from datasets import Dataset

    images = tmp_path / "images" / "00000"
    images.mkdir(parents=True)
    shutil.copy(photos / "astronaut.png", images / "000000001.png")  # 128 x 128
    caption = "an astronaut holding a flag"
    rows = [
        {"key": "000000001", "caption": caption, "width": 128, "height": 128,
         "ref_exps": [[0, 12, 0.1, 0.2, 0.5, 0.9, 0.8], [20, 26, 0.6, 0.0, 1.0, 0.4, 0.3],
                      [3, 3, 0.1, 0.1, 0.2, 0.2, 0.9], [0, 2, 0.5, 0.5, 0.5, 0.9, 0.9]]},
        {"key": "000000002", "caption": "missing", "width": 10, "height": 10, "ref_exps": [[0, 7, 0, 0, 1, 1, 1.0]]},
    ]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "grit.parquet"))
    summary = load_recipe("convert_grit").main(["--input", str(tmp_path / "grit.parquet"), "--images",
                                                str(tmp_path / "images"), "--output", str(tmp_path / "boxes.jsonl"),
                                                "--min_score", "0.5"])
    assert summary["images"] == 1 and summary["objects"] == 1 and summary["skipped images: not downloaded"] == 1
    assert summary["skipped spans: low score"] == 1 and summary["skipped spans: empty text"] == 1
    assert summary["skipped spans: degenerate box"] == 1
    (line,) = [json.loads(text) for text in (tmp_path / "boxes.jsonl").read_text().splitlines()]
    assert line == {"image": "00000/000000001.png",
                    "objects": [{"box": [12.8, 25.6, 64.0, 115.2], "text": "an astronaut"}]}
    masks = load_recipe("label_masks").main(["--sam", str(tiny_sam_checkpoint), "--annotations",
                                             str(tmp_path / "boxes.jsonl"), "--images", str(tmp_path / "images"),
                                             "--output_dir", str(tmp_path / "refs")])
    assert masks["labelled"] + sum(v for k, v in masks.items() if k.startswith("skipped")) == 1


def test_two_labelling_processes_write_disjoint_shards_equal_to_one_process(tmp_path, photos, tiny_depth_checkpoint):
    """`torchrun --nproc_per_node 2 recipes/data/label_depth.py`: process r labels shards r, r + 2, ...; together they
    are the 1-process run's dataset, row for row, and a rerun resumes every shard."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    args = ["--model", str(tiny_depth_checkpoint), "--images", str(photos), "--shard_size", "1", "--batch_size", "1"]
    single = load_recipe("label_depth").main([*args, "--output_dir", str(tmp_path / "one")])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(root / "recipes" / "data" / "label_depth.py"), *args, "--output_dir", str(tmp_path / "two")]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k != "shards_resumed"} == \
        {k: v for k, v in single.items() if k != "shards_resumed"}
    one, two = load_labelled(tmp_path / "one"), load_labelled(tmp_path / "two")
    assert one["source"] == two["source"] and len(one) == 3
    for a, b in zip(one, two):
        assert np.array_equal(decode_depth(a["depth"], a["depth_scale"]), decode_depth(b["depth"], b["depth_scale"]),
                              equal_nan=True)
    again = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("shards_resumed 2") == 2, again.stdout[-2000:]  # each process resumed its two shards


# ------------------------------------------------------------ describing masks (paper §4.2.3, strategies ii and iii)
def test_region_views_show_the_mask_as_documented():
    from versavit_trainer.data.labelling import clean_description, mask_box, region_view

    image = PIL.Image.fromarray(photo("astronaut")).resize((200, 100))
    mask = np.zeros((100, 200), dtype=bool)
    mask[20:60, 40:120] = True  # a box 80 wide, 40 high
    pixels = np.asarray(image, dtype=np.float32)
    darkened = np.where(mask[..., None], pixels, pixels * 0.5).round().astype(np.uint8)
    assert mask_box(mask) == (40, 20, 120, 60) and mask_box(np.zeros((3, 3), bool)) is None
    crop = region_view(image, mask, "crop", context=0.25, dim=0.5, min_side=10)
    # the box widened by 20 px (x) and 10 px (y) on each side, outside pixels at half brightness
    assert np.array_equal(np.asarray(crop), darkened[10:70, 20:140])
    assert region_view(image, mask, "crop", context=0.25, dim=0.5, min_side=120).size == (240, 120)  # scaled up
    full = np.asarray(region_view(image, mask, "highlight", dim=1.0))
    red = np.all(full == (255, 0, 0), axis=-1)
    assert red.any() and not red[mask_edge_free(mask)].any()  # the outline lies on the mask's border only
    assert (full[~mask & ~red] == 0).all()  # dim 1: everything outside the region is black
    with pytest.raises(ValueError, match="mask: empty"):
        region_view(image, np.zeros((100, 200), bool))
    with pytest.raises(ValueError, match=r"mask: shape \(10, 10\) does not match the image \(100x200\)"):
        region_view(image, np.ones((10, 10), bool))
    assert clean_description('  "The red cube on the left."\nIt is shiny.') == "The red cube on the left"
    assert clean_description("\n \n") == ""


def mask_edge_free(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels farther than `width` from the mask's border (inside or outside)."""
    from scipy.ndimage import binary_dilation, binary_erosion

    return ~(binary_dilation(mask, iterations=width + 1) & ~binary_erosion(mask, iterations=width + 1))


def test_region_describer_generates_what_the_model_says_for_the_view(tiny_describer_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from versavit_trainer.data.labelling import RegionDescriber, clean_description, region_view

    image = PIL.Image.fromarray(photo("astronaut")).resize((96, 96))
    masks = [np.zeros((96, 96), bool) for _ in range(3)]
    masks[0][10:50, 10:50] = masks[1][40:90, 30:80] = masks[2][5:20, 60:90] = True
    describer = RegionDescriber(tiny_describer_checkpoint, view="crop", max_new_tokens=5, batch_size=2)
    texts = describer(image, masks)
    # the reference, written out: the documented view and prompt through the model's own chat template, one at a time
    processor = AutoProcessor.from_pretrained(tiny_describer_checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(tiny_describer_checkpoint).eval()
    prompt = processor.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Describe the highlighted object in a short referring phrase."}]}],
        add_generation_prompt=True)
    for mask, text in zip(masks, texts):
        inputs = processor(text=[prompt], images=[region_view(image, mask, "crop")], return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        expected = processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        assert text == clean_description(expected)
    with pytest.raises(FileNotFoundError, match="describer: .* is not a folder"):
        RegionDescriber("no/such/model")


def sa1b_folder(root, masks_per_image: dict) -> None:
    """An SA-1B layout: <name>.jpg and <name>.json of COCO RLE masks."""
    from pycocotools import mask as mask_utils

    root.mkdir()
    for name, (picture, masks) in masks_per_image.items():
        PIL.Image.fromarray(picture).save(root / f"{name}.jpg", quality=95)
        annotations = []
        for k, mask in enumerate(masks):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": k, "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
                                "bbox": [0, 0, 1, 1], "area": int(mask.sum())})
        (root / f"{name}.json").write_text(
            json.dumps({"image": {"file_name": f"{name}.jpg"}, "annotations": annotations})
        )


def test_describe_masks_turns_sa1b_masks_into_referring_data(tmp_path, tiny_describer_checkpoint):
    from versavit_trainer.data import readers
    from versavit_trainer.data.labelling import RegionDescriber

    picture = np.asarray(PIL.Image.fromarray(photo("astronaut")).resize((96, 80)))
    big, small, other = (np.zeros((80, 96), bool) for _ in range(3))
    big[10:60, 10:70], small[0:3, 0:3], other[50:78, 60:94] = True, True, True
    sa1b_folder(tmp_path / "sa1b", {"a": (picture, [small, big, other]), "b": (picture[::-1].copy(), [big]),
                                    "c": (picture, [np.zeros((40, 40), bool) | True]), "d": (picture, [small])})
    (tmp_path / "sa1b" / "e.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "sa1b" / "e.json").write_text("{}")
    shutil.copy(tmp_path / "sa1b" / "a.jpg", tmp_path / "sa1b" / "f.jpg")  # a negative RLE size (pycocotools overflows)
    (tmp_path / "sa1b" / "f.json").write_text(json.dumps({"annotations": [{"segmentation": {"size": [-48, 64],
                                                                                            "counts": "0"}}]}))
    with pytest.raises(ValueError, match=r"f.json: annotation 0 has the size \[-48, 64\]"):
        readers.sa1b_masks(tmp_path / "sa1b" / "f.json")
    assert [m.sum() for m in readers.sa1b_masks(tmp_path / "sa1b" / "a.json", min_area=0.01)] == [3000, 952]
    out = tmp_path / "described"
    args = ["--describer", str(tiny_describer_checkpoint), "--images", str(tmp_path / "sa1b"), "--output_dir", str(out),
            "--max_new_tokens", "4", "--shard_size", "2", "--device", "cpu"]
    summary = load_recipe("describe_masks").main(args)
    # the reference: the describer on the same masks, empty and repeated descriptions dropped
    describer = RegionDescriber(tiny_describer_checkpoint, max_new_tokens=4)
    expected = {}
    for name in ("a", "b"):
        image = PIL.Image.open(tmp_path / "sa1b" / f"{name}.jpg").convert("RGB")
        masks = readers.sa1b_masks(tmp_path / "sa1b" / f"{name}.json", min_area=0.01, max_masks=8)
        texts = describer(image, masks)
        expected[name] = [(t, m) for t, m in zip(texts, masks) if t and texts.count(t) == 1]
    rows = {row["source"]: row for row in load_labelled(out)} if any(expected.values()) else {}
    assert sorted(rows) == sorted(f"{name}.jpg" for name, kept in expected.items() if kept)
    for name, kept in expected.items():
        if kept:
            row = rows[f"{name}.jpg"]
            assert row["expressions"] == [t for t, _ in kept]
            assert all(np.array_equal(np.asarray(m) > 0, k) for m, (_, k) in zip(row["masks"], kept))
    assert summary["skipped: masks do not match the image size"] == 1  # c: a 40x40 mask on an 80x96 image
    assert summary["skipped: no mask large enough"] == 1  # d: only a 3x3 mask
    assert summary["skipped: unreadable image or masks"] == 2  # e, f
    described = sum(len(kept) for kept in expected.values())
    assert summary.get("regions: described", 0) == described
    dropped = {k: v for k, v in summary.items() if k.startswith("regions dropped")}
    assert sum(dropped.values()) == 3 - described  # a: big + other, b: big
    again = load_recipe("describe_masks").main(args)  # resumed: every shard done, the counts kept
    assert again["shards_resumed"] == again["shards"] == 3 and again.get("regions: described", 0) == described
    with pytest.raises(SystemExit, match="describer: give the folder"):
        load_recipe("describe_masks").main(["--images", str(tmp_path / "sa1b"), "--output_dir", str(out)])


def test_label_masks_describes_the_objects_without_text(
    tmp_path, photos, tiny_sam_checkpoint, tiny_describer_checkpoint
):
    annotations = tmp_path / "boxes.jsonl"
    rows = [{"image": "astronaut.png", "objects": [{"box": [10, 10, 90, 120], "text": "the astronaut"},
                                                   {"box": [0, 0, 60, 60]}]}]
    annotations.write_text("\n".join(json.dumps(r) for r in rows))
    common = ["--sam", str(tiny_sam_checkpoint), "--annotations", str(annotations), "--images", str(photos),
              "--max_new_tokens", "4"]
    plain = load_recipe("label_masks").main([*common, "--output_dir", str(tmp_path / "plain")])
    assert plain["objects skipped: empty text"] == 1
    auto = load_recipe("label_masks").main([*common, "--output_dir", str(tmp_path / "auto"),
                                            "--describer", str(tiny_describer_checkpoint)])
    assert "objects skipped: empty text" not in auto
    (row,) = load_labelled(tmp_path / "auto")
    from versavit_trainer.data.labelling import RegionDescriber

    (text,) = RegionDescriber(tiny_describer_checkpoint, max_new_tokens=4)(row["image"].convert("RGB"),
                                                                           [np.asarray(row["masks"][-1]) > 0])
    if text:  # the random describer may say nothing: then the object is dropped and counted
        assert row["expressions"] == ["the astronaut", text] and auto["objects described"] == 1
    else:
        assert row["expressions"] == ["the astronaut"] and auto["regions dropped: empty description"] == 1
    with pytest.raises(SystemExit, match="--text describer needs"):
        load_recipe("label_masks").main([*common, "--output_dir", str(tmp_path / "x"), "--text", "describer"])


def test_empty_and_repeated_descriptions_are_dropped_and_counted():
    from collections import Counter

    from versavit_trainer.data.labelling import describe_regions

    counts = Counter()
    texts = describe_regions(lambda image, masks: ["a dog", "", "a tree", "a dog"], None, [None] * 4, counts)
    assert texts == [None, None, "a tree", None]  # "a dog" names two regions: ambiguous, both dropped
    assert counts == {"regions dropped: empty description": 1, "regions dropped: same description as another region": 2}
