"""The labelling and conversion recipes, end to end on real photos with tiny random checkpoints saved locally."""

import json
import pickle
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import load_recipe, photo

from versavit_trainer.data import check_schema, decode_depth
from versavit_trainer.labelling import load_labelled


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
        {"image": "astronaut.png", "objects": [{"box": [10, 10, 90, 120], "text": "the astronaut"},
                                               {"box": [300, 300, 400, 400], "text": "outside the picture"},
                                               {"box": [0, 0, 50, 50], "text": "  "}]},
        {"image": "kitchen/coffee.png", "objects": [{"box": [-20, 30, 200, 380], "text": "the cup, box partly outside"}]},
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
        {"ref_id": 1, "ann_id": 11, "image_id": 1, "split": "train", "sentences": [{"sent": "the big square"}, {"sent": "left block"}]},
        {"ref_id": 2, "ann_id": 12, "image_id": 1, "split": "train", "sentences": [{"sent": "small square top right"}]},
        {"ref_id": 3, "ann_id": 21, "image_id": 2, "split": "train", "sentences": [{"sent": "the strip"}, {"sent": ""}]},
        {"ref_id": 4, "ann_id": 11, "image_id": 1, "split": "val", "sentences": [{"sent": "held out"}]},
    ]
    with open(tmp_path / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle)
    out = tmp_path / "out"
    load_recipe("convert_refcoco").main(["--refs", str(tmp_path / "refs(unc).p"), "--instances", str(tmp_path / "instances.json"),
                                    "--images", str(images), "--output_dir", str(out)])
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
    assert summary["labelled"] == 1 and summary["skipped: empty caption"] == 1 and summary["skipped: no caption file"] == 2
    dataset = load_labelled(tmp_path / "out")
    check_schema(dataset, "captioning")
    assert dataset[0]["caption"] == "An astronaut in a white suit." and dataset[0]["source"] == "astronaut.png"


def test_load_labelled_needs_finished_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished labelling shards"):
        load_labelled(tmp_path)
