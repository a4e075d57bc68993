# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""Image loading and the VersaViT image processor.

`VersaViTImageProcessor` is the Qwen2-VL image processor (dynamic resolution, sides rounded to multiples of
28, `pixel_values` + `image_grid_thw`) with safer input handling: every PIL mode is converted to RGB by value
(16-bit and float images are scaled, not clipped to white) and unusable images fail with a message naming the
image. Shipped as Hub remote code: imports only numpy, PIL and transformers.
"""

import io
import os
import warnings

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers.image_transforms import convert_to_rgb as _composite_to_rgb
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Qwen2-VL's `smart_resize` refuses images whose long side is more than this many times the short side.
MAX_ASPECT_RATIO = 200
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB by value.

    Pillow's own `convert("RGB")` clips high-bit-depth data (a 16-bit photo becomes white, a float image in [0, 1]
    black). Here 16-bit modes are scaled by 255/65535; `I` (32-bit, how Pillow opens 16-bit PNGs) is scaled the same
    way when it holds values above 255; `F` is read as [0, 1] when it lies in that range, else as [0, 255] (with a
    warning: a [0, 1] image that overshoots 1.0 would otherwise come out almost black, silently). Values outside
    those ranges (negative, above 65535 for `I`, above 255 for `F`) or NaN / inf are a `ValueError`.
    Transparency is composited onto white, as transformers does.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"image of mode {mode!r} and size {image.size} contains NaN or inf pixel values.")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        limit = 255.0 if mode == "F" else 65535.0
        if low < 0 or high > limit:
            raise ValueError(f"image of mode {mode!r} and size {image.size} has values in [{low:g}, {high:g}], outside "
                             f"the [0, 1] or [0, {limit:g}] a {mode} image is read in; rescale it first.")
        if mode in _SIXTEEN_BIT_MODES or (mode == "I" and high > 255):
            values = values * (255.0 / 65535.0)
        elif mode == "F" and high <= 1.0:
            values = values * 255.0
        elif mode == "F":
            logger.warning_once(
                "A float (mode F) image with values above 1.0 is read as 0-255 levels; if it holds [0, 1] values "
                "that overshoot, clip it to [0, 1] first."
            )
        image = PIL.Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "RGB":
        return image
    try:
        return PIL.Image.fromarray(_composite_to_rgb(image, return_numpy=True))
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot convert an image of mode {mode!r} to RGB: {err}") from err


def load_image(source, max_pixels: int | None = None) -> PIL.Image.Image:
    """Open an image from a path, raw bytes, a file object or a PIL image, as an RGB PIL image.

    The EXIF orientation is applied. Corrupt or truncated data, unknown formats and decompression bombs (more than
    `max_pixels` pixels, default `PIL.Image.MAX_IMAGE_PIXELS`) raise a `ValueError` that names the source.
    """
    if isinstance(source, PIL.Image.Image):
        return to_rgb(source)
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    limit = PIL.Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(stream)
        width, height = image.size
        if limit is not None and width * height > limit:
            raise ValueError(
                f"{name}: image of {width}x{height} = {width * height} pixels exceeds the limit of {limit} pixels "
                "(a possible decompression bomb); pass a larger `max_pixels` if you trust this file."
            )
        image.load()
        image = PIL.ImageOps.exif_transpose(image)
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
        raise ValueError(f"{name}: refused as a possible decompression bomb ({err}).") from err
    except PIL.UnidentifiedImageError as err:
        raise ValueError(f"{name}: not a readable image (unknown format or corrupt header).") from err
    except (OSError, SyntaxError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{name}: corrupt or truncated image data ({err}).") from err
    try:
        return to_rgb(image)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


def _image_size(image) -> tuple[int, int] | None:
    """(height, width) of a PIL image or an (H, W[, C]) / (C, H, W) array, or None if it cannot be told."""
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        return None
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _gray_to_rgb(image):
    """An `(H, W)` array or tensor as the RGB image of the same gray levels (`(H, W, 3)`, or `(3, H, W)` for a
    tensor, as torch lays images out); anything else as it is."""
    if isinstance(image, np.ndarray) and image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    if isinstance(image, torch.Tensor) and image.ndim == 2:
        return image.unsqueeze(0).expand(3, -1, -1).contiguous()
    return image


class VersaViTImageProcessor(Qwen2VLImageProcessorPil):
    r"""
    The Qwen2-VL image processor (same resizing, normalisation and patch layout, so features match the MLLM's) with
    robust input handling:

    - every PIL mode becomes RGB by value (`to_rgb`): grayscale, palette, CMYK, RGBA/LA (composited onto white),
      16-bit and float images; so does a 2-D `(H, W)` array or tensor (gray levels);
    - a 1x1 image is upscaled like any small image (to `min_pixels`), sides always multiples of
      `patch_size * merge_size` (28);
    - an empty image, or one more than 200 times longer than wide, raises a `ValueError` naming its index and size;
    - float arrays / tensors follow transformers' `do_rescale` convention, inferred with a warning: when every image
      of the call is float and lies in [0, 1] and `do_rescale` is not passed, they are taken as already rescaled
      (`do_rescale=False`) instead of being divided by 255 a second time; float images in (1, 255] are rescaled as
      usual; NaN / inf values, values outside [0, 255] or a mix of [0, 1] and [0, 255] floats raise a `ValueError`.

    Returns `pixel_values` of shape `(sum(h * w), 3 * temporal_patch_size * patch_size**2)` and `image_grid_thw`
    `(num_images, 3)`, the inputs of [`VersaViTModel`].
    """

    def to_dict(self) -> dict:
        """The saved settings, without `image_processor_type` and `auto_map`: the folder's config.json maps
        `AutoImageProcessor` to this class (`VersaViTPreTrainedModel.save_pretrained`). transformers' video-processor
        lookup, which every pipeline runs, derives a remote video processor from either key here and would ask about
        remote code even with the package installed."""
        output = super().to_dict()
        output.pop("image_processor_type", None)
        output.pop("auto_map", None)
        return output

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, PIL.Image.Image):
            return np.array(to_rgb(image))
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    def preprocess(self, images, **kwargs):
        flat = images if isinstance(images, (list, tuple)) else [images]
        flat = [im for group in flat for im in (group if isinstance(group, (list, tuple)) else [group])]
        if any(getattr(image, "ndim", None) == 2 for image in flat):  # (H, W): a grayscale image, made RGB by value
            images = flat = [_gray_to_rgb(image) for image in flat]
        self._infer_rescale(flat, kwargs)
        for index, image in enumerate(flat):
            size = _image_size(image)
            if size is None:
                continue
            height, width = size
            if height < 1 or width < 1:
                raise ValueError(f"images[{index}]: empty image of size {width}x{height}.")
            if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
                raise ValueError(
                    f"images[{index}]: size {width}x{height} has an aspect ratio above {MAX_ASPECT_RATIO}, which "
                    "Qwen2-VL's resizing cannot represent; crop or pad the image first."
                )
        return super().preprocess(images, **kwargs)

    def _infer_rescale(self, images: list, kwargs: dict) -> None:
        """transformers' `do_rescale` convention for float arrays, made explicit (see the class docstring)."""
        ranges = {}
        for index, image in enumerate(images):
            if isinstance(image, torch.Tensor) and image.is_floating_point():
                values = image.detach().double().cpu().numpy()
            elif isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
                values = image.astype(np.float64)
            else:
                continue
            if not np.isfinite(values).all():
                raise ValueError(f"images[{index}]: float image with NaN or inf values.")
            low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            if low < 0 or high > 255:
                raise ValueError(f"images[{index}]: float image with values in [{low:g}, {high:g}]; expected [0, 1] "
                                 "or [0, 255].")
            ranges[index] = high <= 1.0
        if not ranges or kwargs.get("do_rescale") is not None or not self.do_rescale:
            return
        if len(ranges) != len(images) or len(set(ranges.values())) != 1:
            if any(ranges.values()):
                raise ValueError(
                    f"images: float images in [0, 1] (indices {[i for i, s in ranges.items() if s]}) mixed with 8-bit "
                    "or [0, 255] images; rescale them alike or pass do_rescale explicitly."
                )
            return
        if all(ranges.values()):
            logger.warning_once("Float images with values in [0, 1] are taken as already rescaled (do_rescale=False); "
                                "pass do_rescale=True to divide them by 255 again.")
            kwargs["do_rescale"] = False

    def post_process_depth_estimation(self, outputs, target_sizes=None) -> list[dict[str, torch.Tensor]]:
        """Per image, the predicted depth resized (bicubic) to `target_sizes[i]` = (height, width), e.g. the original
        image size; what transformers' `depth-estimation` pipeline calls."""
        predicted_depth = outputs.predicted_depth
        if target_sizes is not None and len(target_sizes) != len(predicted_depth):
            raise ValueError(
                f"target_sizes: got {len(target_sizes)} sizes for {len(predicted_depth)} predicted depth maps."
            )
        results = []
        for index, depth in enumerate(predicted_depth):
            if target_sizes is not None:
                size = tuple(int(v) for v in target_sizes[index])
                depth = torch.nn.functional.interpolate(
                    depth[None, None], size=size, mode="bicubic", align_corners=False
                )[0, 0]
            results.append({"predicted_depth": depth})
        return results


def fixed_size_pixels(images: list[PIL.Image.Image], size: int | tuple[int, int],
                      image_processor: VersaViTImageProcessor | None = None, flips: list[bool] | None = None) -> dict:
    """`pixel_values` and `image_grid_thw` of `images`, each made RGB and resized (bicubic) to exactly `size` (a side,
    or `(height, width)`, multiples of 28), mirrored where `flips` says: the dense tasks' input, which the processor
    then only normalises and patchifies (no resizing of its own)."""
    height, width = (size, size) if isinstance(size, int) else size
    resized = []
    for k, image in enumerate(images):
        image = to_rgb(image).resize((width, height), PIL.Image.BICUBIC)
        resized.append(image.transpose(PIL.Image.FLIP_LEFT_RIGHT) if flips and flips[k] else image)
    out = (image_processor or VersaViTImageProcessor())(images=resized, do_resize=False, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


__all__ = ["VersaViTImageProcessor", "fixed_size_pixels", "load_image", "to_rgb"]
