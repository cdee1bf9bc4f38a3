"""Stabilisers for deep VAEs, used by the training loop: the gradient norm and clipping to it
(--grad-clip), an exponential moving average of the weights (--ema; the average is what is
validated, kept and saved), and skipping updates whose gradient norm is a spike (--grad-skip),
counted and said, never silent. Both are pure functions
of the step and of state that goes into checkpoints, so a resumed run stays bit-identical.
Polyak & Juditsky 1992 (weight averaging); Child, Very Deep VAEs, 2021 (update skipping).
"""

from __future__ import annotations

import contextlib
import sys

import torch

from .config import Config
from .errors import NonFiniteError


def gradient_norm(params: torch.nn.Module | list[torch.Tensor]) -> torch.Tensor:
    """The global norm of the gradients of `params` (a module's, or a list the loop built
    once: walking the modules every step cost ~3% of a small-batch step on CPU), as a
    tensor on their device: reading it is the caller's one wait for the device."""
    params = list(params.parameters()) if isinstance(params, torch.nn.Module) else params
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # ()


def clip_gradients(params: torch.nn.Module | list[torch.Tensor], max_norm: float,
                   norm: float | None = None) -> torch.Tensor | float:
    """Scale the gradients down to global norm `max_norm` (0: never) and return the norm
    before clipping (computed unless given), whose finiteness the loop checks. Same result
    as clip_grad_norm_, in three fused calls instead of two per tensor."""
    params = list(params.parameters()) if isinstance(params, torch.nn.Module) else params
    if norm is None:
        norm = gradient_norm(params)
    if max_norm > 0 and norm > max_norm:  # a non-finite norm compares False: the loop stops on it
        torch._foreach_mul_([p.grad for p in params if p.grad is not None], max_norm / (float(norm) + 1e-6))
    return norm


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
