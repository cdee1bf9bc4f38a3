"""Writing generated data: image grids (.png) and arrays (.npy), always atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import check_output_path, write_atomic
from .errors import DataError

OUTPUT_SUFFIXES = (".png", ".npy")


def check_output_file(path: str | Path, force: bool = True) -> Path:
    """Refuse an unsupported suffix, a missing parent folder or (unless `force`) an existing
    file before any work is done."""
    return check_output_path(path, OUTPUT_SUFFIXES, "output must end in .png (image grid) or .npy (array)",
                             ".png or .npy", force)


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1, min_cell: int = 28) -> np.ndarray:
    """Tile images x (N, C, H, W) in [0, 1] into one uint8 picture (rows, cols[, 3]).

    Small images are scaled up by an integer factor so an 8x8 digit is still visible.
    """
    if x.ndim != 4:
        raise DataError(f"an image grid needs images (N, C, H, W); got shape {tuple(x.shape)}: write .npy instead")
    x = x.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # (N, C, sH, sW)
        h, w = h * scale, w * scale
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = x[i]
    arr = (grid * 255).round().byte().numpy()
    if c == 1:
        return arr[0]
    return arr[:3].transpose(1, 2, 0) if c >= 3 else np.repeat(arr[:1], 3, 0).transpose(1, 2, 0)


def png_bytes(x: torch.Tensor, nrow: int | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_grid(x, nrow)).save(buf, format="PNG")
    return buf.getvalue()


def write_output(x: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write x as an image grid (.png) or the raw array (.npy), atomically."""
    p = check_output_file(path)
    if p.suffix.lower() == ".png":
        data = png_bytes(x, nrow)
    else:
        buf = io.BytesIO()
        np.save(buf, x.detach().cpu().numpy(), allow_pickle=False)
        data = buf.getvalue()
    write_atomic(p, data)
    return p
