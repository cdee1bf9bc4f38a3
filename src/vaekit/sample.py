"""Writing generated data: image grids (.png) and arrays (.npy), always atomically; and the
latent traversals a user asks for by dimension (or the most active ones)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import check_output_path, write_atomic
from .errors import ConfigError, DataError
from .evaluate import ACTIVE, activity, posterior_means

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


def write_output(x: torch.Tensor, path: str | Path, nrow: int | None = None, layout: str = "NCHW") -> Path:
    """Write x (..., C, H, W for images) as an image grid (.png) or the raw array (.npy),
    atomically; a .npy comes back in the training array's layout: channels last for "NHWC",
    no channel axis for "NHW" (greyscale saved as (N, H, W))."""
    p = check_output_file(path)
    if p.suffix.lower() == ".png":
        data = png_bytes(x, nrow)
    else:
        if layout == "NHWC" and x.ndim >= 4:
            x = x.movedim(-3, -1)  # (..., H, W, C): the user's own layout, not the model's
        elif layout == "NHW" and x.ndim >= 4 and x.shape[-3] == 1:
            x = x.squeeze(-3)  # (..., H, W)
        buf = io.BytesIO()
        np.save(buf, x.detach().cpu().numpy(), allow_pickle=False)
        data = buf.getvalue()
    write_atomic(p, data)
    return p


@torch.no_grad()
def traversals(model, x: torch.Tensor, dims: list[int] | None = None, top: int = 6, index: int = 0,
               span: float = 3.0, steps: int = 9, c: torch.Tensor | None = None) -> tuple[list[int], torch.Tensor]:
    """Walk latent dimensions one at a time from example `index` of x (N, *shape): each chosen
    coordinate of its posterior mean goes from -span to span in `steps` steps, the others held.
    `dims` picks the dimensions; by default the `top` most active ones, ranked by the spread
    of the posterior means over x (collapsed dimensions would show no change).
    Returns (dims, walks) with walks (len(dims), steps, *shape), the decoded means."""
    if not 0 <= index < len(x):
        raise ConfigError(f"--index {index} is outside the {len(x)} examples given; pick 0..{len(x) - 1}")
    if steps < 2 or not span > 0 or top < 1:
        raise ConfigError(f"need --steps >= 2 (got {steps}), --span > 0 (got {span}) and --top >= 1 (got {top})")
    if dims is None:
        spread = activity(posterior_means(model, x, c))  # (d,)
        ranked = spread.argsort(descending=True).tolist()
        active = (spread > ACTIVE).tolist()
        dims = [d for d in ranked if active[d]][:top] or ranked[:1]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ConfigError(f"latent dimension(s) {bad} out of range: this model has {model.latent_dim} (0.."
                          f"{model.latent_dim - 1})")
    one = None if c is None else c[index]
    walks = torch.stack([model.traverse(x[index], d, span=span, steps=steps, c=one) for d in dims])
    return list(dims), walks  # (len(dims), steps, *shape)
