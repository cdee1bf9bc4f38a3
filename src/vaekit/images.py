"""Image folders: every image file under a folder read into one (N, C, H, W) float32 array in
[0, 1] (or left on disk, decoded per batch: stream.open_image_folder), sub-folders as class labels.

Sizes and modes come from the headers, before any decoding: a folder of greyscale images stays
one channel, 16-bit images are scaled by 65535, and a photo tagged with an EXIF orientation is
turned upright first, as a viewer shows it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .data import Dataset
from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # PIL modes of 16-bit and float greyscale pixels
GREY_MODES = {"1", "L", "LA", "La"} | DEEP_MODES  # LA: grey with alpha (the alpha is dropped, as for RGBA)


def load_image_folder(path: Path, stream: bool | None = False) -> Dataset:
    """Every image file under `path` (sorted), same size required; greyscale stays 1 channel.

    Sub-folder names become integer labels (in sorted order) when images sit in sub-folders.
    The headers are read first (sizes and modes, checked before any decoding). `stream=True`
    stops there: pixels are decoded per batch; None streams a folder whose float32 copy would
    exceed 1 GiB. Otherwise every image is decoded straight into one (N, C, H, W) array.
    """
    from .stream import AUTO_STREAM_BYTES, open_image_folder

    files = image_files(path)
    labels, names = _folder_labels(path, files)
    lazy = open_image_folder(files, path.name)
    if stream is None:
        stream = 4 * math.prod(lazy.shape) > AUTO_STREAM_BYTES
    if stream:
        return Dataset(lazy, labels, True, path.name, classes=names)
    # filled chunk by chunk: the float32 copy is the only one held (a list of decoded images,
    # stacked, then made channels-first, held it three times and the PIL images besides)
    x = np.empty(tuple(lazy.shape), dtype=np.float32)  # (N, C, H, W)
    done = 0
    for chunk in lazy.chunks():
        x[done:done + len(chunk)] = chunk
        done += len(chunk)
    return Dataset(torch.from_numpy(x), labels, True, path.name, classes=names)


def image_files(path: Path) -> list[Path]:
    """The image files under `path`, sorted. Symlinked sub-folders are followed (a class folder
    linked in from elsewhere is a class; a link back up is walked once); hidden names are
    skipped: `.ipynb_checkpoints`, `.thumbnails`, and macOS's `._x.png` AppleDouble files,
    which carry an image suffix but hold no image. Images directly in `path` beside class
    sub-folders are refused: they belong to no class."""
    files = []
    for folder, dirs, names in os.walk(path, followlinks=True):
        parts = Path(folder).relative_to(path).parts
        above = {os.path.realpath(path.joinpath(*parts[:i])) for i in range(len(parts) + 1)}  # this folder and up
        # a link back to this folder or one above it would be walked for ever
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(folder, d)) not in above]
        for n in names:
            if n.startswith(".") or Path(n).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            f = Path(folder, n)
            if f.is_symlink() and not f.exists():  # skipping it would drop an image without a word
                raise DataError(f"{f} is a broken symbolic link (to {os.readlink(f)}); fix its target or remove it")
            if f.is_file():
                files.append(f)
    files.sort()
    if not files:
        raise DataError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point at a folder of images")
    loose = [f for f in files if f.parent == path]
    if loose and len(loose) < len(files):
        classes = sorted({f.relative_to(path).parts[0] for f in files if f.parent != path})
        raise DataError(f"{path} holds {len(loose)} image(s) of its own, such as {loose[0].name}, beside the class "
                        f"sub-folder(s) {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}: they belong to "
                        "no class; move them into a sub-folder (their class), or point at a folder holding only "
                        "images or only sub-folders")
    return files


def upright(im):
    """A copy of `im` as it is meant to be seen: turned by its EXIF orientation tag, which
    cameras and phones set instead of rotating the pixels (a viewer shows the turned image)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(im)


def upright_size(im) -> tuple[int, int]:
    """(width, height) of `im` once turned by its EXIF orientation, from the header alone."""
    turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # the orientations that swap the axes
    return (im.size[1], im.size[0]) if turned else im.size


def image_mode(im) -> str:
    """The PIL mode an image counts as: a palette image (GIF, 8-bit PNG) whose colours are all
    grey counts as greyscale "L", so a folder of grey GIFs is one channel, not three equal ones
    (whose three bits per pixel would also triple the likelihood's count)."""
    if im.mode in ("P", "PA"):
        palette = im.getpalette() or []  # [r, g, b, r, g, b, ...], from the header
        if palette and palette[0::3] == palette[1::3] == palette[2::3]:
            return "L"
    return im.mode


def folder_mode(modes: set[str]) -> str:
    """One decoding mode for a folder: "L" (one channel) if every image is greyscale, else "RGB"."""
    return "L" if modes <= GREY_MODES else "RGB"


def pixels(im, mode: str, path: Path) -> np.ndarray:
    """Image `im` as float32 in [0, 1]: (H, W) for mode "L", (H, W, 3) for "RGB". 8-bit images are
    divided by 255; 16-bit ones (PNG/TIFF, PIL modes I;16 and I) by 65535, since converting them
    to 8 bits would clip every value above 255 to white; float ones (F) must be in [0, 1] already."""
    if im.mode not in DEEP_MODES:
        return np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    a = np.asarray(im).astype(np.float64)  # (H, W)
    if im.mode != "F":
        a = a / 65535.0
    if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
        what = "float pixels outside [0, 1]" if im.mode == "F" else "pixel values outside 0..65535"
        raise DataError(f"{path} has {what} (PIL mode {im.mode}); rescale the images to [0, 1], "
                        "or save the pixels as a .npy array")
    a = a.astype(np.float32)
    return a if mode == "L" else np.repeat(a[..., None], 3, axis=-1)  # greyscale among colour images


def _folder_labels(path: Path, files: list[Path]) -> tuple[torch.Tensor | None, list[str] | None]:
    """Labels (N,) from the sub-folders, and the sub-folder names in label order."""
    groups = [f.parent.relative_to(path).as_posix() for f in files]
    if set(groups) == {"."}:  # all in the folder itself: no classes (one sub-folder is one class)
        return None, None
    names = sorted(set(groups))
    return torch.tensor([names.index(g) for g in groups]), names
