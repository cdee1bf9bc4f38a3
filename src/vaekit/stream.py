"""Data that stays on disk until a batch needs it: rows of a `.npy` array or image files
decoded per batch, gathered by index.

A `LazyRows` stands in for the (N, *shape) float32 tensor where training needs one:
`len(x)`, `x.shape`, `x[index] -> tensor`. Whole-data facts (range, binary, finite; mean
and std for a Gaussian likelihood) come from one chunked pass, cached. Resident memory is
a few batches, however large the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .data import binarize_fixed, check_float32_range, check_real_dtype, check_shape, unreadable_array
from .errors import DataError
from .images import folder_mode, image_mode, pixels, upright, upright_size

AUTO_STREAM_BYTES = 1 << 30  # load_data(stream=None) streams data whose float32 copy exceeds 1 GiB
CHUNK_BYTES = 4 << 20  # float32 bytes per chunk of a statistics pass


class Summary(NamedTuple):
    lo: float  # smallest finite value
    hi: float  # largest finite value
    nonfinite: int  # how many NaN/Inf values
    binary: bool  # every value is 0 or 1


class LazyRows:
    """(N, *shape) float32 rows read on demand. Subclasses implement `_read(idx)` for sorted
    row indices; `gather` handles any order."""

    dtype = torch.float32
    device = torch.device("cpu")

    def __init__(self, n: int, row_shape: tuple[int, ...], name: str):
        self.n, self.row_shape, self.name = n, tuple(row_shape), name
        self._summary: Summary | None = None

    # ---- the tensor-like surface training uses ---------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n, *self.row_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index) -> torch.Tensor:
        """Rows as a CPU tensor: an int (-> (*shape)), a slice, or integer indices (-> (B, *shape))."""
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self.gather(self._check(np.array([index]))))[0]
        return torch.from_numpy(self.gather(self._indices(index)))

    def min(self) -> torch.Tensor:
        return torch.tensor(self.summary().lo)

    def max(self) -> torch.Tensor:
        return torch.tensor(self.summary().hi)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={tuple(self.shape)})"

    # ---- reading ---------------------------------------------------------------------
    def _indices(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(*index.indices(self.n), dtype=np.int64)
        if isinstance(index, tuple):  # x[i, j] would read rows i and j, not element j of row i
            raise IndexError(f"{type(self).__name__} indexes rows only; take x[rows] first, then index the tensor")
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        index = np.asarray(index)
        if index.dtype == bool:  # a mask: as int64 it would read rows 0 and 1
            if index.shape != (self.n,):
                raise IndexError(f"a boolean mask of shape {index.shape} for {self.n} rows")
            return np.flatnonzero(index)
        return self._check(index.astype(np.int64).reshape(-1))

    def _check(self, idx: np.ndarray) -> np.ndarray:
        idx = np.where(idx < 0, idx + self.n, idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"row index out of range for {self.n} rows")
        return idx

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (B,) -> float32 (B, *shape), read in file order, returned in `idx` order."""
        if len(idx) == 0:  # e.g. a rank's share of a last batch smaller than the world
            return np.empty((0, *self.row_shape), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        rows = self._read(idx[order])
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def _read(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def chunks(self):
        """The whole array in order, a few MB at a time: float32 (rows, *shape) blocks."""
        step = max(1, CHUNK_BYTES // (4 * max(1, int(np.prod(self.row_shape)))))
        for i in range(0, self.n, step):
            yield self._read(np.arange(i, min(self.n, i + step), dtype=np.int64))

    def summary(self) -> Summary:
        """Range, non-finite count and binariness of all values, from one chunked pass (cached)."""
        if self._summary is None:
            lo, hi, bad, binary = np.inf, -np.inf, 0, True
            for c in self.chunks():
                finite = np.isfinite(c)
                n_bad = int(c.size - finite.sum())
                bad += n_bad
                vals = c[finite] if n_bad else c
                if vals.size:
                    lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
                binary = binary and bool(((c == 0) | (c == 1)).all())
            self._summary = Summary(lo, hi, bad, binary)
        return self._summary

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-value mean and (population) std over the rows: (*shape) each. Chunks are merged
        with Chan et al.'s pairwise update in float64 (no cancellation for large means)."""
        n, mean, m2 = 0, np.zeros(self.row_shape), np.zeros(self.row_shape)
        for c in self.chunks():
            c64 = c.astype(np.float64)
            nb, mb = len(c64), c64.mean(0)
            delta = mb - mean
            mean = mean + delta * (nb / (n + nb))
            m2 = m2 + ((c64 - mb) ** 2).sum(0) + delta * delta * (n * nb / (n + nb))
            n += nb
        return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(m2 / n)).float()


class NpyRows(LazyRows):
    """Rows of a `.npy` file, read with positioned reads (runs of neighbouring rows in one
    call). np.load(mmap_mode="r") parses and checks the header; the rows are not read
    through the map, because mapped file pages count as the process's resident memory and
    Linux maps whole page-cache folios around each touched row (measured: 1,024 random
    4 KiB rows mapped 170 MB). uint8-style images are scaled to [0, 1] and (N, H, W, C)
    becomes (N, C, H, W) per batch, as `load_array` does at once."""

    def __init__(self, path: Path):
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise unreadable_array(path, e) from None
        check_real_dtype(header.dtype, path)
        check_shape(header.shape, path)
        if not header.flags.c_contiguous:
            raise DataError(f"{path} is stored in Fortran order; save it with numpy.save(path, "
                            "numpy.ascontiguousarray(a)) to stream it")
        self.path, self.raw_dtype, self.offset = path, header.dtype, header.offset
        self.raw_shape, n = header.shape[1:], header.shape[0]
        del header
        self._row_bytes = self.raw_dtype.itemsize * int(np.prod(self.raw_shape))
        self._fd = os.open(path, os.O_RDONLY)
        if os.fstat(self._fd).st_size < self.offset + n * self._row_bytes:
            raise DataError(f"{path} is shorter than its header says (truncated); save the array again")
        super().__init__(n, self.raw_shape, path.name)
        self.divisor, self.layout, self.image = 1.0, "NCHW", False
        ndim, shape = 1 + len(self.raw_shape), self.raw_shape
        if np.issubdtype(self.raw_dtype, np.integer) and ndim in (3, 4):
            lo, hi = self._raw_range()
            if lo >= 0 and 1 < hi <= 255:  # only 0s and 1s: binary images, kept as bits (as load_array)
                self.divisor, self.image = 255.0, True  # uint8-style images
        if ndim == 3:  # (N, H, W) greyscale images
            shape, self.image, self.layout = (1, *shape), True, "NHW"
        elif ndim == 4 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
            shape, self.layout, self.image = (shape[2], shape[0], shape[1]), "NHWC", True
        elif ndim == 4:
            self.image = True
        self.row_shape = tuple(shape)

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = None

    __del__ = close

    def _raw(self, idx: np.ndarray) -> np.ndarray:
        """Rows `idx` (sorted) as stored: (B, *raw_shape), one read per run of neighbours."""
        out = np.empty((len(idx), *self.raw_shape), dtype=self.raw_dtype)
        flat = out.reshape(len(idx), int(np.prod(self.raw_shape))).view(np.uint8)  # (B, row_bytes)
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(idx)]):
            want = (hi - lo) * self._row_bytes
            got = os.pread(self._fd, want, self.offset + int(idx[lo]) * self._row_bytes)
            if len(got) != want:
                raise DataError(f"{self.path} ended early (truncated?); save the array again")
            flat[lo:hi] = np.frombuffer(got, dtype=np.uint8).reshape(hi - lo, -1)
        return out

    def _raw_range(self) -> tuple[int, int]:
        lo, hi = None, None
        step = max(1, CHUNK_BYTES // self._row_bytes)
        for i in range(0, self.n, step):
            c = self._raw(np.arange(i, min(self.n, i + step)))
            lo = int(c.min()) if lo is None else min(lo, int(c.min()))
            hi = int(c.max()) if hi is None else max(hi, int(c.max()))
        return lo, hi

    def _read(self, idx: np.ndarray) -> np.ndarray:
        raw = self._raw(idx)  # (B, *raw_shape)
        check_float32_range(raw, self.path)
        rows = raw.astype(np.float32, copy=False)  # (B, ...)
        if self.divisor != 1.0:
            rows = rows / np.float32(self.divisor)  # as load_array scales, bit for bit
        if self.layout == "NHWC":
            rows = np.ascontiguousarray(rows.transpose(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)
        return rows.reshape(len(idx), *self.row_shape)


class ImageFiles(LazyRows):
    """Image files decoded per batch; all the same size, greyscale kept as one channel."""

    def __init__(self, files: list[Path], mode: str, size: tuple[int, int], name: str):
        self.files, self.mode = files, mode
        channels = 1 if mode == "L" else 3
        super().__init__(len(files), (channels, size[1], size[0]), name)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        out = np.empty((len(idx), *self.row_shape), dtype=np.float32)
        for j, i in enumerate(idx):
            try:
                with Image.open(self.files[i]) as im:
                    arr = pixels(upright(im), self.mode, self.files[i])  # (H, W[, 3]) in [0, 1]
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{self.files[i]} is not a readable image ({e}); remove or replace it") from None
            if arr.shape[:2] != self.row_shape[1:]:
                raise DataError(f"{self.files[i]} is {arr.shape[1]}x{arr.shape[0]} but the others are "
                                f"{self.row_shape[2]}x{self.row_shape[1]}; resize all images to one size")
            out[j] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
        return out


class DeviceRows(LazyRows):
    """Rows `idx` of a lazy source, delivered on `device`: gathered on the CPU into pinned
    memory and copied without blocking. With `bits_seed`, each value is binarised once as
    Bernoulli(value) by a counter-based hash of (seed, row, position): the same bits for a
    row however the rows are batched."""

    def __init__(self, source: LazyRows, idx: np.ndarray, device: torch.device, bits_seed: int | None = None):
        super().__init__(len(idx), source.row_shape, source.name)
        self.source, self.idx, self.device, self.bits_seed = source, idx, torch.device(device), bits_seed

    def gather(self, idx: np.ndarray) -> np.ndarray:
        rows_idx = self.idx[idx]
        rows = self.source.gather(rows_idx)
        if self.bits_seed is not None and len(rows):
            u = hashed_uniform(self.bits_seed, rows_idx, int(np.prod(self.row_shape)))
            rows = (u < rows.reshape(len(rows), -1)).astype(np.float32).reshape(rows.shape)
        return rows

    def _read(self, idx: np.ndarray) -> np.ndarray:
        return self.gather(idx)

    def __getitem__(self, index) -> torch.Tensor:
        x = super().__getitem__(index)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True)  # the host returns before the copy ends
        return x

    def binarized(self, seed: int) -> "DeviceRows":
        return DeviceRows(self.source, self.idx, self.device, seed)


def hashed_uniform(seed: int, rows: np.ndarray, width: int) -> np.ndarray:
    """Uniform [0, 1) float32 (len(rows), width), a pure function of (seed, row, column):
    the splitmix64 finaliser (Steele et al. 2014) of a counter."""
    with np.errstate(over="ignore"):
        c = rows.astype(np.uint64)[:, None] * np.uint64(width) + np.arange(width, dtype=np.uint64)
        z = c + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)


def take(x, idx: torch.Tensor, device: torch.device):
    """x[idx] on `device`: a tensor for in-memory data, a lazy `DeviceRows` view otherwise."""
    if isinstance(x, torch.Tensor):
        return x[idx].to(device)
    base, rows = (x.source, x.idx[idx.numpy()]) if isinstance(x, DeviceRows) else (x, idx.numpy())
    return DeviceRows(base, rows.astype(np.int64), device)


def rows(x, idx: torch.Tensor):
    """The batch x[idx]. For a tensor through index_select, which on CPU gathers 128 MNIST
    rows in about 11 us against 29-63 us for x[idx] (benchmarks/step_parts.py, 2 cores)."""
    return x.index_select(0, idx) if isinstance(x, torch.Tensor) else x[idx]


def binarize_once(x, seed: int):
    """Bernoulli(x) drawn once with a fixed seed: the validation bits every epoch scores,
    the same bits on every device (drawn on the CPU, as the test bits are)."""
    if isinstance(x, torch.Tensor):
        return binarize_fixed(x, seed)
    return x.binarized(seed)


def open_npy(path: Path) -> NpyRows:
    x = NpyRows(path)
    s = x.summary()
    if s.nonfinite:
        raise DataError(f"{path} contains {s.nonfinite} NaN/Inf values; remove or impute them first")
    if x.image and (s.lo < 0 or s.hi > 1):
        x.image = False  # real-valued arrays that merely look like images: treat as plain arrays
    return x


def open_image_folder(files: list[Path], name: str) -> ImageFiles:
    """Read only the headers now (size, mode); pixels are decoded per batch."""
    from PIL import Image, UnidentifiedImageError

    modes, sizes = set(), {}
    for f in files:
        try:
            with Image.open(f) as im:
                modes.add(image_mode(im))
                sizes.setdefault(upright_size(im), f)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"{f} is not a readable image ({e}); remove or replace it") from None
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise DataError(f"{fb} is {b[0]}x{b[1]} but {fa} is {a[0]}x{a[1]}; resize all images to one size")
    return ImageFiles(files, folder_mode(modes), next(iter(sizes)), name)


def should_stream(path: Path) -> bool:
    """stream=None: stream a .npy when its float32 copy would exceed AUTO_STREAM_BYTES (image
    folders decide in images.load_image_folder, from their headers)."""
    if path.suffix.lower() != ".npy":
        return False
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return False  # load_array reports the problem
    return header.size * 4 > AUTO_STREAM_BYTES
