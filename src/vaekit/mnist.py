"""MNIST from the original IDX files (LeCun, Cortes, Burges): the four *-ubyte.gz files, each
checked by size and sha256 before it is read, and a download that moves a file into place only
once its sha256 matches.

The protocol's binarisation stays in data.py, where training, evaluation and streaming import
it: fresh Bernoulli bits for each training batch (binarize_dynamic), and the test set binarised
once with the fixed seed MNIST_TEST_BINARIZE_SEED (binarize_fixed).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .data import Dataset
from .errors import DataError

# The four original MNIST files (LeCun, Cortes, Burges): (name, bytes, sha256, count).
MNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz", 9912422,
                          "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 60000),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz", 28881,
                          "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 60000),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz", 1648877,
                         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 10000),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", 4542,
                         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 10000),
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_mnist_file(path: Path, size: int, sha: str) -> None:
    if not path.is_file():
        raise DataError(f"{path} is missing; put the original MNIST *-ubyte.gz files there "
                        "or pass --download")
    if path.stat().st_size != size or _sha256(path) != sha:
        raise DataError(f"{path} is not the original MNIST file (size or sha256 differs); "
                        "replace it with the original or pass --download")


def download_mnist(data_dir: str | os.PathLike, base_url: str = MNIST_MIRROR) -> None:
    """Fetch the four MNIST files into `data_dir`, each checked against its sha256 before it
    is moved into place, so a failed or tampered download never lands."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    for name, size, sha, _ in MNIST_FILES.values():
        target = root / name
        if target.is_file() and target.stat().st_size == size and _sha256(target) == sha:
            continue
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base_url + name, timeout=60) as r:
                shutil.copyfileobj(r, out)
            if _sha256(Path(tmp)) != sha:
                raise DataError(f"downloaded {name} from {base_url} fails its sha256 check; try another mirror")
            os.replace(tmp, target)
        except OSError as e:
            raise DataError(f"could not download {name} from {base_url}: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = magic & 0xFF
    got_magic, = struct.unpack(">i", raw[:4])
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    if got_magic != magic or dims[0] != count:
        raise DataError(f"{path}: IDX header says magic {got_magic}, count {dims[0]}; expected {magic}, {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(data_dir: str | os.PathLike, split: str = "train", download: bool = False) -> Dataset:
    """MNIST from the original IDX files, verified by size and sha256, scaled to [0, 1]."""
    root = Path(data_dir)
    if download:
        download_mnist(root)
    parts = ["train", "test"] if split == "all" else [split]
    xs, ys = [], []
    for part in parts:
        img_name, img_size, img_sha, n = MNIST_FILES[(part, "images")]
        lab_name, lab_size, lab_sha, _ = MNIST_FILES[(part, "labels")]
        check_mnist_file(root / img_name, img_size, img_sha)
        check_mnist_file(root / lab_name, lab_size, lab_sha)
        xs.append(torch.from_numpy(_read_idx(root / img_name, 2051, n).copy()))
        ys.append(torch.from_numpy(_read_idx(root / lab_name, 2049, n).astype(np.int64)))
    x = torch.cat(xs).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return Dataset(x, torch.cat(ys), True, f"mnist[{split}]")
