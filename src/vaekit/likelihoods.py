"""p(x|z): decoder outputs -> a `torch.distributions` object over one example.

A likelihood declares how many parameter maps it needs per data value (`n_params`); the
decoder emits (..., n_params, *shape) and `forward` builds the distribution, whose event
shape is the example's shape, so `log_prob(x)` is one number per example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Distribution, Independent, Normal


class Bernoulli(nn.Module):
    """Independent Bernoulli per value, from logits: binary (or binarised) data."""

    n_params = 1

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x  # probabilities in [0, 1] already suit the encoder

    def forward(self, params: torch.Tensor) -> Distribution:
        logits = params.squeeze(-len(self.shape) - 1)  # (..., *shape)
        # validate_args off: soft targets in [0, 1] are allowed when binarisation is off.
        return Independent(TorchBernoulli(logits=logits, validate_args=False), len(self.shape), validate_args=False)


class Gaussian(nn.Module):
    """Independent Normal per value with a learned, per-example scale.

    The networks work on standardised data; `shift`/`scale` (per value, set from the
    training data by `fit`) map the distribution back to data units, so `log_prob` is a
    density of the data as given (the Jacobian is in the Normal's scale).
    """

    n_params = 2
    min_scale = 1e-3  # in standardised units: keeps log-densities finite on constant values

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("shift", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))

    @torch.no_grad()
    def set_data_stats(self, x: torch.Tensor) -> None:
        """Record the per-value mean and std of training data x (N, *shape), a tensor or a
        lazy source (streamed data: one chunked pass)."""
        if isinstance(x, torch.Tensor):
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(self.scale)
        else:
            mean, std = x.moments()
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, raw = params.unbind(-len(self.shape) - 1)  # each (..., *shape)
        sd = F.softplus(raw) + self.min_scale
        return Independent(Normal(self.shift + self.scale * loc, self.scale * sd, validate_args=False), len(self.shape),
                           validate_args=False)


def make_likelihood(name: str, shape: tuple[int, ...]) -> nn.Module:
    match name:
        case "bernoulli":
            return Bernoulli(shape)
        case "gaussian":
            return Gaussian(shape)
    raise ValueError(f"likelihood {name!r} must be resolved to bernoulli or gaussian first")
