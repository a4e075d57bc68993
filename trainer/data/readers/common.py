# Copyright 2026 The VersaViT authors. Licensed under the Apache License, Version 2.0.
"""What every reader shares: paths taken from input files stay inside their folder, a missing file is named, image
suffixes, the generated scenes' names."""

import os
from pathlib import Path


def scenes_name(style: str) -> str:
    return "scenes" if style == "simple" else f"scenes-{style}"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


def inside(root, name, what: str) -> Path:
    """`root / name` for a path `name` read from an input file (an annotation's image, a CSV's folder), which must be
    relative and stay inside `root`: an absolute path or one that climbs out with `..` is a `ValueError` naming
    `what` and the value, never read. The check is on the name itself, so a folder of symlinks the user made (images
    linked from a shared store) still reads."""
    root = Path(root)
    if not isinstance(name, (str, Path)) or not str(name).strip():
        raise ValueError(f"{what}: expected a file name relative to {root}, got {name!r}.")
    path, normal = root / name, os.path.normpath(str(name))
    if Path(name).is_absolute() or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise ValueError(f"{what}: {str(name)!r} is not a path inside {root}; paths in input files are read relative "
                         "to their folder and may not leave it.")
    return path


def require_path(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing {what}.")
    return path


def check_pairs(pairs: list[tuple[Path, Path]], name: str) -> list[tuple[Path, Path]]:
    if not pairs:
        raise ValueError(f"{name}: no samples found.")
    for image, label in pairs:
        require_path(image, f"image of {name}")
        require_path(label, f"label of {name} (for {image.name})")
    return pairs


__all__ = ["IMAGE_SUFFIXES", "check_pairs", "inside", "require_path", "scenes_name"]
