"""Watching training as it runs: the progress bar and its live terms, one line per epoch,
TensorBoard event files.

fit() calls these; they hold no training logic. tensorboard is an optional dependency
(`pip install tensorboard`), imported only when `Config.tensorboard` asks for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch

from .config import Config
from .errors import ConfigError


def second_term(config: Config) -> str:
    """The name of the bound's second term: WAE-MMD's `kl` column carries the MMD."""
    return "mmd" if config.objective == "wae-mmd" else "kl"


def live_terms(means: torch.Tensor, config: Config) -> dict[str, str]:
    """The bar's postfix from the running means (3,) of the loss, recon and second term."""
    loss, recon, second = means.tolist()
    return {"loss": f"{loss:.3f}", "recon": f"{recon:.3f}", second_term(config): f"{second:.3f}"}


def check_tensorboard(target: Path | None) -> None:
    """Fail before training when TensorBoard logging cannot work."""
    if target is None:
        raise ConfigError("tensorboard=True writes event files into the run folder; pass out=... (--out)")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or vaekit[tensorboard])") from None


def tensorboard_writer(run_dir: Path) -> Callable[[dict[str, Any]], None]:
    """A callback writing each epoch's metrics row as TensorBoard scalars to
    <run>/tensorboard; `train_loss` becomes `loss/train`, so train and validation share a
    chart. Call `.close()` on it when training ends."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                split, _, term = key.partition("_")
                tag = f"{term}/{split}" if split in ("train", "val") and term else key
                writer.add_scalar(tag, value, row["epoch"])
        writer.flush()  # a live `tensorboard --logdir` sees each epoch as it ends

    log.close = writer.close
    return log


def report_epoch(row: dict[str, Any], config: Config) -> None:
    """One line per epoch on stderr: the bound, its terms, validation, seconds."""
    val = f", val {row['val_loss']:.4f}" if "val_loss" in row else ""
    print(f"epoch {row['epoch']}/{config.epochs}: loss {row['train_loss']:.4f} (recon {row['train_recon']:.3f}, "
          f"{second_term(config)} {row['train_kl']:.3f}){val} [{row['seconds']:.1f}s]", file=sys.stderr, flush=True)


def work_bar(total: int, desc: str, unit: str = "ex"):
    """A live bar for long work outside training (the importance-sampled evaluation: minutes
    to hours at k = 5000), only on a terminal; None elsewhere."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)


def progress_bar(total: int, epoch: int, config: Config):
    """A live bar with the running loss, only on a terminal (logs get one line per epoch)."""
    if not config.progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr, leave=False,
                dynamic_ncols=True, mininterval=0.5)
