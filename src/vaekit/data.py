"""Loading data into one float tensor: digits, MNIST IDX files (mnist.py), .npy/.npz arrays, image
folders (images.py).

Everything returns a `Dataset`: `x` of shape (N, *shape) float32, optional integer labels,
and whether it is an image set (C, H, W) with values in [0, 1]. Images are always scaled
to [0, 1] so a Bernoulli likelihood (with binarisation) applies to them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from .errors import DataError

MNIST_TEST_BINARIZE_SEED = 0  # the fixed seed of the once-binarised MNIST test set


class Dataset(NamedTuple):
    x: torch.Tensor  # (N, *shape) float32; a stream.LazyRows when loaded with stream=True
    labels: torch.Tensor | None  # (N,) int64, or None
    image: bool  # True when x is (N, C, H, W) in [0, 1]
    name: str  # where it came from, for reports
    layout: str = "NCHW"  # "NHWC" / "NHW" when the source array held channels last / none (x is always NCHW)
    classes: list[str] | None = None  # names of labels 0..K-1 when they are text (sub-folders, string labels)

    def __repr__(self) -> str:  # shapes, not every value of a 60,000-image tensor
        labels = "None" if self.labels is None else f"({len(self.labels)},)"
        more = "..." if self.classes is not None and len(self.classes) > 10 else ""
        classes = "" if self.classes is None else f", classes={self.classes[:10]}{more}"
        return (f"Dataset(x {tuple(self.x.shape)} {getattr(self.x, 'dtype', '')}, labels {labels}, "
                f"image={self.image}, name={self.name!r}, layout={self.layout!r}{classes})")


def load_data(spec: str, split: str = "train", data_dir: str | os.PathLike | None = None,
              download: bool = False, stream: bool | None = False) -> Dataset:
    """Load `spec`: "digits", "mnist" (IDX files in `data_dir`) or a path to a file or folder.

    `split` is "train", "test" or "all" for the named datasets; a path is always all of it.
    `stream=True` leaves a `.npy` (memory-mapped) or an image folder on disk: `x` is then a
    `vaekit.stream.LazyRows` that `fit` reads batch by batch; None streams a `.npy` or an
    image folder whose float32 copy would exceed 1 GiB.
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"split {split!r} is not train, test or all")
    if stream and spec in ("digits", "mnist"):  # it was ignored without a word
        raise DataError(f"{spec} is always loaded into memory ({'1,797' if spec == 'digits' else '70,000'} small "
                        "images); drop --stream, which is for .npy files and image folders")
    if spec == "digits":
        return load_digits(split)
    if spec == "mnist":
        if data_dir is None:
            raise DataError("mnist needs --data-dir DIR, a folder holding the four *-ubyte.gz files")
        from .mnist import load_mnist

        return load_mnist(data_dir, split, download=download)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder, and not a dataset name; "
                        "use digits, mnist or a path to .npy/.npz or an image folder")
    from . import stream as lazy
    from .images import IMAGE_SUFFIXES, load_image_folder

    if path.is_dir():
        return load_image_folder(path, stream=stream)
    streamed = lazy.should_stream(path) if stream is None else stream
    suffix = path.suffix.lower()
    if streamed and suffix == ".npz":
        raise DataError(f"{spec}: a .npz cannot be memory-mapped; save the array with numpy.save as .npy to stream it")
    if streamed and suffix == ".npy":
        x = lazy.open_npy(path)
        return Dataset(x, None, x.image, path.name, x.layout)
    if suffix in (".npy", ".npz"):
        return load_array(path)
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{spec} is a single image; pass the folder that holds the images")
    raise DataError(f"{spec}: unsupported file type {suffix or '(none)'}; use .npy, .npz or an image folder")


def load_digits(split: str = "train") -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 grey levels), scaled to [0, 1].

    A fixed permutation puts 297 images in `test` and 1,500 in `train`.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    idx = {"train": order[:1500], "test": order[1500:], "all": order}[split]
    return Dataset(x[idx], y[idx], True, f"digits[{split}]")


def binarize_dynamic(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fresh Bernoulli(intensity) bits for a training batch, as 1[u < x] with u ~ U[0, 1):
    the same distribution as torch.bernoulli, whose CPU kernel is about 3.7-3.9x slower (1.45 ms
    against 0.38 ms for a 128-image MNIST batch on 2 cores, benchmarks/step_parts.py), which
    was a quarter of a training step.
    Evaluation bits stay torch.bernoulli with a fixed seed (binarize_fixed): they are recorded."""
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).lt_(x)


def binarize_fixed(x: torch.Tensor, seed: int = MNIST_TEST_BINARIZE_SEED) -> torch.Tensor:
    """Draw each pixel once as Bernoulli(intensity) with a fixed seed: the evaluation bits,
    the same on any device (returned on x's)."""
    # drawn on the CPU: a CUDA generator with the same seed gives other bits, and a model scored
    # on a GPU would be scored on another test set than the same model on a CPU
    return torch.bernoulli(x.cpu(), generator=torch.Generator().manual_seed(seed)).to(x.device)


def load_array(path: Path) -> Dataset:
    """A .npy array (N, ...) or a .npz with `x` (or its only array) and optional `labels`/`y`."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                data_keys = [k for k in keys if k not in ("labels", "y")]
                key = "x" if "x" in keys else (data_keys[0] if len(data_keys) == 1 else None)
                if key is None:
                    xk = next((k for k in data_keys if k.startswith("x")), data_keys[0])
                    yk = "y" + xk[1:] if xk.startswith("x") and "y" + xk[1:] in keys else None
                    pair = f"x=z[{xk!r}]" + (f", labels=z[{yk!r}]" if yk else "")
                    raise DataError(f"{path} holds {keys}; name the data array 'x' (labels as 'labels' or 'y'), "
                                    f"e.g. with z = numpy.load(...): numpy.savez('train.npz', {pair})")
                arr = z[key]
                lab_key = next((k for k in ("labels", "y") if k in keys), None)
                labels = z[lab_key] if lab_key else None
        else:
            arr, labels = np.load(path, allow_pickle=False, mmap_mode="r"), None
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise unreadable_array(path, e) from None
    return array_dataset(arr, path, labels)


def check_real_dtype(dtype: np.dtype, path: Path | str) -> None:
    """Refuse what is not real numbers: objects (never unpickled), strings, complex values."""
    if dtype == object or np.issubdtype(dtype, np.complexfloating) or dtype.kind in "mM" \
            or not (np.issubdtype(dtype, np.number) or dtype == bool):  # timedelta64 counts as an integer
        raise DataError(f"{path} has dtype {dtype}; it must be real numbers (float, int or bool)")


F32_MAX = float(np.finfo(np.float32).max)


def check_float32_range(a: np.ndarray, path: Path | str) -> None:
    """Models compute in float32: finite values beyond its range (float64 above 3.4e38) would turn
    into Inf on the way in, and be reported as Inf the file does not hold."""
    if not (np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize > 4):
        return
    with np.errstate(invalid="ignore"):
        big = np.count_nonzero(np.isfinite(a) & (np.abs(a) > F32_MAX))
    if big:
        raise DataError(f"{path} has {big} values beyond float32's range (|x| > 3.4e38), which vaekit computes in; "
                        "rescale the data (e.g. divide by a power of ten) first")


def array_dataset(arr, path: Path | str, labels: np.ndarray | None = None) -> Dataset:
    """A numpy array or torch tensor (N, ...) read as `vaekit train file.npy` reads it: integer
    0..255 arrays of 3 or 4 dims are images scaled to [0, 1], (N, H, W) gains a channel axis,
    (N, H, W, C) is made channels first (the layout is recorded for outputs). `path` names it
    in errors. A tensor stays on its device."""
    if isinstance(arr, torch.Tensor):
        x, scaled = _tensor_values(arr.detach(), path)
    else:
        x, scaled = _numpy_values(arr, path)
    image, layout = scaled, "NCHW"
    if x.ndim == 3:  # (N, H, W) greyscale images
        x, image, layout = x.unsqueeze(1), True, "NHW"
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x, image, layout = x.permute(0, 3, 1, 2).contiguous(), True, "NHWC"  # (N, H, W, C) -> (N, C, H, W)
    elif x.ndim == 4:
        image = True
    classes = None
    if labels is not None:
        labels, classes = class_labels(labels, len(x), str(path))
    check_finite(x, str(path))
    if image and (x.min() < 0 or x.max() > 1):
        image = False  # real-valued arrays that merely look like images: treat as plain arrays
    return Dataset(x, labels, image, Path(path).name, layout, classes)


def check_shape(shape: tuple[int, ...], path: Path | str) -> None:
    if len(shape) < 2 or shape[0] == 0 or 0 in shape:
        empty = " (empty)" if 0 in shape else ""
        raise DataError(f"{path} has shape {shape}{empty}; need (N, features...): a leading example axis, "
                        "N >= 1 examples"
                        + (" (one value per example: save a.reshape(-1, 1))" if len(shape) == 1 else ""))


def _numpy_values(arr: np.ndarray, path: Path | str) -> tuple[torch.Tensor, bool]:
    """float32 (N, ...) from a numpy array, and whether it held 0..255 integer images (scaled)."""
    check_real_dtype(arr.dtype, path)
    check_shape(arr.shape, path)
    if isinstance(arr, np.ma.MaskedArray) and np.ma.count_masked(arr):  # np.array would read what lies under
        raise DataError(f"{path} has {np.ma.count_masked(arr)} masked values; fill or drop them first "
                        "(a.filled(value), or keep the complete rows)")
    scaled = bool(np.issubdtype(arr.dtype, np.integer) and arr.ndim in (3, 4) and arr.min() >= 0
                  and 1 < arr.max() <= 255)  # only 0s and 1s: binary images (masks, binarised MNIST), kept
    if scaled:
        arr = arr.astype(np.float32) / 255.0  # uint8-style images
    check_float32_range(arr, path)
    return torch.from_numpy(np.array(arr, dtype=np.float32)), scaled  # a copy: the file may be memory-mapped


def _tensor_values(t: torch.Tensor, path: Path | str) -> tuple[torch.Tensor, bool]:
    """The same for a tensor (any real dtype, any device): float32, and whether it was scaled."""
    ints = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if t.is_complex() or not (t.is_floating_point() or t.dtype in ints):
        raise DataError(f"{path} has dtype {t.dtype}; it must be real numbers (float, int or bool)")
    check_shape(tuple(t.shape), path)
    integer = not t.is_floating_point() and t.dtype != torch.bool
    scaled = integer and t.ndim in (3, 4) and bool(t.min() >= 0) and 1 < int(t.max()) <= 255  # 0/1 stay bits
    if t.dtype == torch.float64:
        big = int((torch.isfinite(t) & (t.abs() > F32_MAX)).sum())
        if big:
            raise DataError(f"{path} has {big} values beyond float32's range (|x| > 3.4e38), which vaekit computes "
                            "in; rescale the data (e.g. divide by a power of ten) first")
    x = t.float()
    return (x / 255.0 if scaled else x), scaled


def as_dataset(data) -> Dataset:
    """What `fit` trains on: a Dataset (x made float32), or a tensor or numpy array, read as
    `vaekit train` reads the array saved as .npy (`array_dataset`); validated."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return array_dataset(data, "array")  # checked for NaN/Inf there
    if isinstance(data, Dataset):
        x = data.x
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.array(x, dtype=np.float32))
        elif isinstance(x, torch.Tensor) and x.dtype != torch.float32:
            x = x.detach().float()  # the nets compute in float32
        ds = data._replace(x=x)
        if isinstance(x, torch.Tensor):
            check_shape(tuple(x.shape), ds.name)
        check_finite(ds.x, ds.name)
        return ds
    name, hint = type(data).__name__, ""
    if isinstance(data, (str, os.PathLike)):
        hint = f": load it first, vaekit.fit(vaekit.load_data({str(data)!r}))"
    elif name == "DataFrame":
        hint = ": for a table use vaekit.fit_table(df)"
    elif isinstance(data, (list, tuple)):
        hint = ": stack the examples into one, numpy.stack(items) or torch.stack(items)"
    elif name == "DataLoader" or isinstance(data, TorchDataset):
        hint = (": fit batches the data itself; pass the examples as one tensor (a TensorDataset's "
                "dataset.tensors[0]; labels as a Dataset's labels or condition=)")
    raise DataError(f"cannot train on {name}; pass a Dataset, tensor or numpy array{hint}")


def class_labels(values: np.ndarray, n: int, what: str) -> tuple[torch.Tensor, list[str] | None]:
    """One class label per example as int64 (N,), and the class names when the labels are text:
    integers (or whole-number floats) are kept; strings become positions in their sorted set."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:  # a column vector (N, 1), as MATLAB and sklearn's y often are
        values = values[:, 0]
    if values.ndim != 1 or len(values) != n:
        raise DataError(f"{what}: labels have shape {values.shape} for {n} examples; give one class per "
                        f"example, shape ({n},) (one-hot rows: labels.argmax(1))")
    if values.dtype.kind in "US":  # text: the names themselves
        names, index = np.unique(values.astype(str), return_inverse=True)
        return torch.from_numpy(index.astype(np.int64)), [str(v) for v in names]
    if values.dtype.kind == "u" and len(values) and values.max() > np.iinfo(np.int64).max:
        raise DataError(f"{what}: labels up to {values.max()} do not fit int64; renumber the classes 0..K-1")
    whole = values.dtype.kind in "biu" or (values.dtype.kind == "f" and bool(np.isfinite(values).all())
                                           and bool((values == np.round(values)).all())
                                           and bool((np.abs(values) < 2.0 ** 63).all()))  # else int64 wraps
    if not whole:
        raise DataError(f"{what}: labels of dtype {values.dtype} must be whole numbers or strings (class ids or "
                        "names); these have fractions, NaN or values beyond int64: a regression target is not a class")
    return torch.from_numpy(values.astype(np.int64)), None


def unreadable_array(path: Path, e: Exception) -> DataError:
    """The error for a .npy/.npz numpy cannot read without unpickling, or at all."""
    if "object" in str(e).lower() or "pickle" in str(e).lower():
        return DataError(f"{path} holds Python objects (dtype=object), which vaekit never unpickles (loading a file "
                         "must not run code); save a numeric array: numpy.save(path, a.astype(float))")
    if "mmap length is greater than file size" in str(e):
        return DataError(f"{path} is shorter than its header says (truncated, e.g. a copy cut short); save the "
                         "array again with numpy.save")
    return DataError(f"{path} is not a readable numpy array ({e}); save it with numpy.save")


def check_finite(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):  # a lazy source: one chunked pass, cached
        bad = x.summary().nonfinite
        if bad:
            raise DataError(f"{what} contains {bad} NaN/Inf values; remove or impute them first")
        return
    if x.numel() == 0:
        raise DataError(f"{what} is empty; it needs at least one example")
    if not x.is_floating_point():
        return  # integers are finite
    # min and max propagate NaN and are +-inf when any value is: one pass, no (N, ...) mask
    lo, hi = torch.aminmax(x.detach().reshape(-1))
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{what} contains {bad} NaN/Inf values; remove or impute them first")


def on_8bit_grid(x, rows: int = 4096) -> bool:
    """Whether the values are k/255 (8-bit pixels scaled to [0, 1]): all of a tensor, chunk by
    chunk, or the first `rows` rows of a streamed source."""
    if not isinstance(x, torch.Tensor):
        x = x[np.arange(min(len(x), rows))]
    return all(bool(((c * 255 - torch.round(c * 255)).abs() < 1e-3).all()) for c in x.reshape(-1).split(1 << 20))


def is_binary(x: torch.Tensor) -> bool:
    if not isinstance(x, torch.Tensor):
        return x.summary().binary
    flat = x.reshape(-1)
    step = 1 << 20  # chunk by chunk: grey-level data answers False at the first chunk
    for i in range(0, flat.numel(), step):
        c = flat[i:i + step]
        if not bool(((c == 0) | (c == 1)).all()):
            return False
    return True
