"""Image loading and VersaViTImageProcessor: odd modes by value, odd sizes, corrupt data, with clear errors."""

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import photo
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from modeling_versavit import VersaViTImageProcessor, load_image, to_rgb


def constant(mode: str, value, size=(40, 30)) -> PIL.Image.Image:
    return PIL.Image.new(mode, size, value)


def gray(value: int, size=(40, 30)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, dtype=np.uint8)


@pytest.mark.parametrize(
    "image,expected",
    [
        (constant("L", 100), gray(100)),
        (constant("1", 1), gray(255)),
        (constant("I;16", 40000), gray(156)),  # 40000 * 255 / 65535 = 155.6; Pillow's own convert gives 255
        (constant("I;16", 65535), gray(255)),
        (constant("I", 40000), gray(156)),  # how Pillow opens 16-bit PNGs
        (constant("I", 100), gray(100)),  # an 8-bit range held in a 32-bit mode stays as it is
        (constant("F", 0.5), gray(128)),  # [0, 1] floats; Pillow's own convert gives 0
        (constant("F", 200.0), gray(200)),
        (constant("RGBA", (10, 20, 30, 0)), gray(255)),  # fully transparent: the white background
        (constant("RGBA", (10, 20, 30, 255)), np.broadcast_to(np.array([10, 20, 30], np.uint8), (30, 40, 3))),
        (constant("LA", (0, 0)), gray(255)),
        (constant("CMYK", (0, 0, 0, 0)), gray(255)),
        (constant("YCbCr", (128, 128, 128)), gray(128)),
    ],
    ids=lambda v: getattr(v, "mode", ""),
)
def test_modes_convert_to_rgb_by_value(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    np.testing.assert_allclose(np.asarray(rgb, dtype=int), expected.astype(int), atol=1)


def test_palette_image_with_transparency():
    image = PIL.Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    assert tuple(np.asarray(to_rgb(image))[0, 0]) == (200, 10, 10)
    image.info["transparency"] = 1
    assert tuple(np.asarray(to_rgb(image))[0, 0]) == (255, 255, 255)


def test_a_two_dimensional_array_or_tensor_is_a_grayscale_image():
    gray = (np.arange(56 * 84).reshape(56, 84) % 251).astype(np.uint8)
    expected = VersaViTImageProcessor()(images=PIL.Image.fromarray(gray), return_tensors="pt")
    for given in (gray, [gray], torch.from_numpy(gray), [PIL.Image.fromarray(gray), gray]):
        out = VersaViTImageProcessor()(images=given, return_tensors="pt")
        count = len(given) if isinstance(given, list) else 1
        assert torch.equal(out["pixel_values"], expected["pixel_values"].repeat(count, 1))
        assert out["image_grid_thw"].tolist() == expected["image_grid_thw"].tolist() * count


def test_non_finite_float_image_is_an_error():
    values = np.full((4, 4), 0.5, dtype=np.float32)
    values[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        to_rgb(PIL.Image.fromarray(values, mode="F"))


def test_rgb_photo_is_processed_exactly_as_qwen2_vl():
    image = PIL.Image.fromarray(photo("chelsea"))
    ours = VersaViTImageProcessor()(images=[image], return_tensors="pt")
    theirs = Qwen2VLImageProcessorPil()(images=[image], return_tensors="pt")
    assert ours["image_grid_thw"].tolist() == theirs["image_grid_thw"].tolist()
    assert np.array_equal(ours["pixel_values"].numpy(), theirs["pixel_values"].numpy())


def test_processor_converts_sixteen_bit_images_by_value():
    processor = VersaViTImageProcessor()
    sixteen = processor(images=[constant("I;16", 40000)], return_tensors="np")
    eight = processor(images=[PIL.Image.fromarray(gray(156))], return_tensors="np")
    np.testing.assert_array_equal(sixteen["pixel_values"], eight["pixel_values"])


@pytest.mark.parametrize("size", [(1, 1), (27, 29), (1000, 31), (33, 700), (640, 480)])
def test_sizes_become_multiples_of_28(size):
    processor = VersaViTImageProcessor()
    out = processor(images=[PIL.Image.fromarray(gray(90, size))], return_tensors="np")
    (t, h, w), = out["image_grid_thw"].tolist()
    assert t == 1 and h % 2 == 0 and w % 2 == 0  # patches of 14 px, merged 2x2: sides are multiples of 28
    assert out["pixel_values"].shape == (h * w, 3 * 2 * 14 * 14)
    if size == (1, 1):
        assert (h, w) == (4, 4)  # upscaled to the 56x56 minimum


def test_extreme_aspect_ratio_names_the_image():
    images = [PIL.Image.fromarray(gray(1, (40, 30))), PIL.Image.fromarray(gray(1, (300, 1)))]
    with pytest.raises(ValueError, match=r"images\[1\]: size 300x1 has an aspect ratio above 200"):
        VersaViTImageProcessor()(images=images)


def test_empty_image_names_the_image():
    with pytest.raises(ValueError, match=r"images\[0\]: empty image of size 5x0"):
        VersaViTImageProcessor()(images=[np.zeros((0, 5, 3), dtype=np.uint8)])


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data: a decompression-bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def test_load_image_from_path_bytes_and_file(tmp_path):
    image = PIL.Image.fromarray(photo("astronaut"))
    path = tmp_path / "astronaut.png"
    image.save(path)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), np.asarray(image))


def test_load_sixteen_bit_png_by_value(tmp_path):
    path = tmp_path / "depth16.png"
    PIL.Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [156, 156, 156]


def test_load_image_applies_exif_orientation(tmp_path):
    image = PIL.Image.fromarray(gray(50, (40, 20)))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_corrupt_and_truncated_data_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="<bytes>: not a readable image"):
        load_image(b"definitely not an image")
    data = png_bytes(PIL.Image.fromarray(photo("coffee")))
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png: corrupt or truncated image data"):
        load_image(path)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused():
    with pytest.raises(ValueError, match="decompression bomb"):
        load_image(png_header_only(100_000, 100_000))  # 10^10 pixels, far above Pillow's limit
    with pytest.raises(ValueError, match=r"100x100 = 10000 pixels exceeds the limit of 5000"):
        load_image(png_bytes(PIL.Image.fromarray(gray(3, (100, 100)))), max_pixels=5000)
