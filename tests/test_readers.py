"""Dataset readers: tiny fixtures written in each standard layout, and malformed ones."""

import numpy as np
import PIL.Image
import pytest

from versavit_trainer.data.readers import ade20k, cityscapes, kitti, nyuv2, pascal_voc, scene_depth, scene_segmentation


def write_image(path, size=(12, 8), mode="RGB", values=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if values is None:
        values = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    PIL.Image.fromarray(values).save(path)
    return path


def test_ade20k_layout(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    write_image(base / "images" / "validation" / "ADE_val_00000001.jpg")
    write_image(base / "annotations" / "validation" / "ADE_val_00000001.png", values=np.full((8, 12), 3, np.uint8))
    source = ade20k(tmp_path, "validation")
    assert (source.num_classes, source.reduce_zero_label, len(source)) == (150, True, 1)
    image, label = source.load(0)
    assert image.size == (12, 8) and label.shape == (8, 12) and (label == 3).all()
    (base / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing label of ADE20k validation"):
        ade20k(tmp_path, "validation")


def test_voc_layout_reads_palette_indices(tmp_path):
    base = tmp_path / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    write_image(base / "JPEGImages" / "2007_000033.jpg")
    label = PIL.Image.fromarray(np.array([[0, 15] * 6] * 8, np.uint8), mode="P")
    label.putpalette([0, 0, 0, *([128, 0, 0] * 255)])
    (base / "SegmentationClass").mkdir()
    label.save(base / "SegmentationClass" / "2007_000033.png")
    source = pascal_voc(tmp_path, "val")
    _, labels = source.load(0)
    assert set(np.unique(labels)) == {0, 15} and source.num_classes == 21  # indices, not palette colours
    with pytest.raises(FileNotFoundError, match="missing VOC train split file"):
        pascal_voc(tmp_path, "train")


def test_cityscapes_layout(tmp_path):
    write_image(tmp_path / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png")
    write_image(tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png",
                values=np.full((8, 12), 255, np.uint8))
    source = cityscapes(tmp_path, "val")
    assert source.num_classes == 19 and source.load(0)[1].max() == 255
    write_image(tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelTrainIds.png",
                values=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"label map of shape \(4, 4\) does not match its image 8x12"):
        source.load(0)


@pytest.mark.parametrize(
    ("reader", "scale", "crop", "max_depth"), [(nyuv2, 1000.0, "eigen", 10.0), (kitti, 256.0, "garg", 80.0)]
)
def test_depth_split_file_layouts(tmp_path, reader, scale, crop, max_depth):
    write_image(tmp_path / "rgb" / "a.png")
    depth = np.zeros((8, 12), np.uint16)
    depth[2:, :] = 2500
    PIL.Image.fromarray(depth).save(tmp_path / "a_depth.png")
    split = tmp_path / "test.txt"
    split.write_text("rgb/a.png a_depth.png 518.8\nrgb/b.png None 518.8\n")
    source = reader(split)
    assert (source.depth_scale, source.crop, source.max_depth, len(source)) == (scale, crop, max_depth, 1)
    _, metres = source.load(0)
    assert np.isnan(metres[:2]).all() and np.allclose(metres[2:], 2500 / scale)
    split.write_text("rgb/a.png\n")
    with pytest.raises(ValueError, match=r"test.txt:1: expected '<image> <depth> \[focal\]'"):
        reader(split)
    split.write_text("rgb/missing.png a_depth.png 1\n")
    with pytest.raises(FileNotFoundError, match="missing image"):
        reader(split)


def test_scene_sources():
    segmentation = scene_segmentation(3, seed=0)
    image, labels = segmentation.load(0)
    assert segmentation.num_classes == 5 and labels.shape == (image.height, image.width)
    assert {0, 1} <= set(np.unique(labels)) and labels.max() >= 2  # sky, ground and at least one primitive
    _, depth = scene_depth(1).load(0)
    assert np.isnan(depth).any() and np.nanmin(depth) > 0  # the sky is unlabelled
