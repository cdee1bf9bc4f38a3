"""Stabilisers for deep VAEs, used by the training loop: an exponential moving average of the
weights (--ema; the average is what is validated, kept and saved), and skipping updates whose
gradient norm is a spike (--grad-skip), counted and said, never silent. Both are pure functions
of the step and of state that goes into checkpoints, so a resumed run stays bit-identical.
Polyak & Juditsky 1992 (weight averaging); Child, Very Deep VAEs, 2021 (update skipping).
"""

from __future__ import annotations

import contextlib
import sys

import torch

from .config import Config
from .errors import NonFiniteError


def large_gradient(norm: float, config: Config) -> bool:
    """--grad-skip: a gradient norm above the threshold is a spike (a rare batch, a posterior
    nearly collapsing); one such step can undo many, so it is skipped and counted instead
    (Child, Very Deep VAEs, 2021)."""
    return config.grad_skip > 0 and bool(norm > config.grad_skip)


def ema_start(model: torch.nn.Module, config: Config) -> dict[str, torch.Tensor] | None:
    """--ema: a copy of the weights to average (None when off)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()} if config.ema else None


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor] | None, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * weights, d = min(decay, (1 + t) / (10 + t)): early on the
    average follows the weights instead of holding the random start. A pure function of the
    step, so a resumed run averages exactly as an uninterrupted one."""
    if ema is None:
        return
    d = min(decay, (1 + step) / (10 + step))
    live = model.state_dict()
    keys = [k for k, v in ema.items() if v.is_floating_point()]
    torch._foreach_lerp_([ema[k] for k in keys], [live[k] for k in keys], 1 - d)


@contextlib.contextmanager
def averaged(model: torch.nn.Module, ema: dict[str, torch.Tensor] | None):
    """Run the body with the averaged weights in the model (--ema), then put the live ones back."""
    if ema is None:
        yield
        return
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    try:
        yield
    finally:
        model.load_state_dict(live)


def report_grad_skips(skips: int, steps: int, epoch: int, config: Config, main: bool) -> None:
    """Never silent: a skipped update is said on stderr (progress bar or not)."""
    if skips >= steps:
        raise NonFiniteError(f"every update of epoch {epoch + 1} had a gradient norm above --grad-skip "
                             f"{config.grad_skip:g}; raise it (or pass 0 to turn skipping off)")
    if skips and main:
        print(f"epoch {epoch + 1}: skipped {skips} of {steps} updates with gradient norm > {config.grad_skip:g} "
              "(--grad-skip)", file=sys.stderr, flush=True)
