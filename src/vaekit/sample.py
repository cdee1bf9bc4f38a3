"""Writing generated data: image grids (.png) and arrays (.npy), always atomically; and the
latent traversals a user asks for by dimension (or the most active ones)."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_file, check_output_path, write_atomic
from .errors import ConfigError, DataError
from .evaluate import ACTIVE, activity, posterior_means
from .model import check_memory

OUTPUT_SUFFIXES = (".png", ".npy")


def check_output_file(path: str | Path, force: bool = True) -> Path:
    """Refuse an unsupported suffix, a missing parent folder or (unless `force`) an existing
    file before any work is done."""
    return check_output_path(path, OUTPUT_SUFFIXES, "output must end in .png (image grid) or .npy (array)",
                             ".png or .npy", force)


def image_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 1, min_cell: int = 28) -> np.ndarray:
    """Tile images x (N, C, H, W) in [0, 1] into one uint8 picture (rows, cols[, 3]).

    Small images are scaled up by an integer factor so an 8x8 digit is still visible. Images
    of 2 or more than 4 channels show each channel as a grey cell (alpha is not shown).
    """
    if x.ndim != 4:
        raise DataError(f"an image grid needs images (N, C, H, W); got shape {tuple(x.shape)}: write .npy instead")
    x = x.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    if c not in (1, 3, 4):  # not grey, RGB or RGBA: each channel its own grey cell, an example's side by side
        nrow = (nrow or math.ceil(math.sqrt(n))) * c
        x, n, c = x.reshape(n * c, 1, h, w), n * c, 1  # (N * C, 1, H, W)
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
    return arr[:3].transpose(1, 2, 0)  # RGB; RGBA's alpha is not shown


def png_bytes(x: torch.Tensor, nrow: int | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image_grid(x, nrow)).save(buf, format="PNG")
    return buf.getvalue()


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x (..., C, H, W) in the training array's layout: channels last for "NHWC", no channel
    axis for "NHW" (greyscale saved as (N, H, W))."""
    if layout == "NHWC" and x.ndim >= 4:
        return x.movedim(-3, -1)  # (..., H, W, C): the user's own layout, not the model's
    if layout == "NHW" and x.ndim >= 4 and x.shape[-3] == 1:
        return x.squeeze(-3)  # (..., H, W)
    return x


def write_output(x: torch.Tensor, path: str | Path, nrow: int | None = None, layout: str = "NCHW") -> Path:
    """Write x (..., C, H, W for images) as an image grid (.png) or the raw array (.npy),
    atomically; a .npy comes back in the training array's layout (`in_layout`)."""
    p = check_output_file(path)
    x = torch.as_tensor(x)  # a numpy array too
    if p.suffix.lower() == ".png":
        write_atomic(p, png_bytes(x, nrow))
        return p
    a = np.ascontiguousarray(in_layout(x.detach(), layout).cpu().numpy())
    with atomic_file(p) as f:  # header and values straight to the file: no second copy in memory
        np.lib.format.write_array(f, a, allow_pickle=False)
    return p


def grid_bytes(n: int, shape: tuple[int, ...], min_cell: int = 28) -> int:
    """Memory `image_grid` takes for n images of shape (C, H, W): its float grid, cells scaled up."""
    c, h, w = shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    return n * c * (h * scale + 1) * (w * scale + 1) * 4


def write_samples(model, path: str | Path, n: int, temperature: float = 1.0, mean: bool = True,
                  generator: torch.Generator | None = None, condition=None, layout: str = "NCHW",
                  nrow: int | None = None) -> Path:
    """`vaekit sample`: n samples to a .png grid or a .npy array, atomically. A .npy larger than
    one decoding chunk is drawn and written a chunk at a time (the generator carrying on), so
    memory stays bounded for any n and only the disk must hold it; a grid must fit in memory.
    `condition`: None, one condition (C,) for all, or a function (start, stop) -> (rows, C).
    `nrow`: images per grid row (default: a square grid)."""
    p = check_output_file(path)
    values = math.prod(model.input_shape)
    rows = max(1, model.sample_chunk_values // max(1, values))
    cond = condition if callable(condition) else (lambda start, stop: condition)
    if p.suffix.lower() == ".png" or n <= rows:
        if p.suffix.lower() == ".png" and len(model.input_shape) == 3:
            check_memory(grid_bytes(n, model.input_shape), torch.device("cpu"), f"a grid of {n} images",
                         "draw fewer (-n), or write .npy, which is written in pieces")
        x = model.sample(n, temperature=temperature, mean=mean, generator=generator, condition=cond(0, n))
        return write_output(x, p, nrow=nrow, layout=layout)
    size = n * values * 4
    free = shutil.disk_usage(p.parent).free
    if size > free:
        raise ConfigError(f"{n} samples of shape {tuple(model.input_shape)} take {size / 2 ** 30:.1f} GiB as .npy, "
                          f"more than the {free / 2 ** 30:.1f} GiB free in {p.parent}; draw fewer (-n) or "
                          "write elsewhere")
    with atomic_file(p) as f:
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            x = model.sample(stop - start, temperature=temperature, mean=mean, generator=generator,
                             condition=cond(start, stop))  # (rows, *shape)
            a = np.ascontiguousarray(in_layout(x, layout).cpu().numpy())  # (rows, ...) in the user's layout
            if start == 0:  # the header names all n rows
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                        "shape": (n, *a.shape[1:])})
            f.write(a.tobytes())
    return p


@torch.no_grad()
def most_active(model, x: torch.Tensor, top: int = 6, c: torch.Tensor | None = None) -> tuple[list[int], int]:
    """The latent dimensions worth walking: the active ones (Burda et al.: spread of the posterior
    means over x above 0.01), most spread first, at most `top`; when none is active, the single
    most spread one. Returns (dims, how many dimensions are active)."""
    spread = activity(posterior_means(model, x, c))  # (d,)
    ranked = spread.argsort(descending=True).tolist()
    active = (spread > ACTIVE).tolist()
    return [d for d in ranked if active[d]][:top] or ranked[:1], sum(active)


@torch.no_grad()
def traversals(model, x: torch.Tensor, dims: list[int] | None = None, top: int = 6, index: int = 0,
               span: float = 3.0, steps: int = 9, c: torch.Tensor | None = None) -> tuple[list[int], torch.Tensor]:
    """Walk latent dimensions one at a time from example `index` of x (N, *shape): each chosen
    coordinate of its posterior mean goes from -span to span in `steps` steps, the others held.
    `dims` picks the dimensions; by default the active ones, most spread first, at most `top`
    (`most_active`: collapsed dimensions would show no change, so there may be fewer than `top`).
    Returns (dims, walks) with walks (len(dims), steps, *shape), the decoded means."""
    if not 0 <= index < len(x):
        raise ConfigError(f"--index {index} is outside the {len(x)} examples given; pick 0..{len(x) - 1}")
    if steps < 2 or not span > 0 or top < 1:
        raise ConfigError(f"need --steps >= 2 (got {steps}), --span > 0 (got {span}) and --top >= 1 (got {top})")
    if dims is not None and not len(dims):
        raise ConfigError("dims is empty; name at least one latent dimension, or pass dims=None for the most active")
    if dims is None:
        dims = most_active(model, x, top, c)[0]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ConfigError(f"latent dimension(s) {bad} out of range: this model has {model.latent_dim} (0.."
                          f"{model.latent_dim - 1})")
    one = None if c is None else c[index]
    walks = torch.stack([model.traverse(x[index], d, span=span, steps=steps, c=one) for d in dims])
    return list(dims), walks  # (len(dims), steps, *shape)
