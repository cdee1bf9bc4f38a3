"""p(x|z): decoder outputs -> a `torch.distributions` object over one example.

A likelihood declares how many parameter maps it needs per data value (`n_params`); the
decoder emits (..., n_params, *shape) and `forward` builds the distribution, whose event
shape is the example's shape, so `log_prob(x)` is one number per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Distribution, Independent, Normal

from .errors import ConfigError


class Bernoulli(nn.Module):
    """Independent Bernoulli per value, from logits: binary (or binarised) data."""

    n_params = 1
    discrete = True  # p(x) is a probability: bits/dim mean what the literature's do

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x  # probabilities in [0, 1] already suit the encoder

    @torch.no_grad()
    def start_output(self, layer: nn.Module | None, mean: torch.Tensor) -> bool:
        """Start the decoder's output `layer` at the log-odds of the training data's mean (*shape),
        per value for a linear layer, per channel for a conv: p(x|z) begins as the average image.
        From zero logits the first steps instead spend the hidden units on that average; a tanh
        decoder saturates doing so and stalls at the independent-pixel loss (~206 nats on MNIST),
        and a ladder's bottom-up estimates collapse meanwhile (benchmarks/output_start.py: the MNIST
        ladder's NLL after 10 epochs 198.8 from zero logits, 106.7 from here).
        Returns whether the layer's shape fitted; a layer that does not fit is left as it is."""
        bias = getattr(layer, "bias", None)
        if bias is None or mean.shape != self.shape:
            return False
        mean = mean.detach().to(torch.float64).cpu()
        if isinstance(layer, nn.Linear) and layer.out_features == mean.numel():
            logits = torch.logit(mean.clamp(1e-3, 1 - 1e-3)).reshape(-1)  # (prod(shape),)
        elif isinstance(layer, nn.Conv2d) and len(self.shape) == 3 and layer.out_channels == self.shape[0]:
            logits = torch.logit(mean.mean((1, 2)).clamp(1e-3, 1 - 1e-3))  # (C,)
        else:
            return False
        bias.copy_(logits.to(bias.dtype))
        return True

    def forward(self, params: torch.Tensor) -> Distribution:
        logits = params.squeeze(-len(self.shape) - 1)  # (..., *shape)
        # validate_args off: soft targets in [0, 1] are allowed when binarisation is off.
        return SummedBernoulli(TorchBernoulli(logits=logits, validate_args=False), len(self.shape), validate_args=False)


class SummedBernoulli(Independent):
    """Independent Bernoulli over an example, with log_prob(x) = sum x * l - sum softplus(l).

    The same value as torch's Bernoulli (log sigmoid(l) = l - softplus(l), log(1 - sigmoid(l))
    = -softplus(l), so x log p + (1 - x) log(1 - p) = x l - softplus(l), soft x included), in
    fewer passes: forward and backward of a 128-image MNIST batch run 1.1-1.2x faster than
    through binary_cross_entropy_with_logits (benchmarks/step_parts.py, 2 CPU cores)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits  # (..., *event)
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        return (logits * value).sum(dims) - F.softplus(logits).sum(dims)  # (...,)


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
        if isinstance(x, torch.Tensor):  # float64 sums: the variance of values near 1e20 overflows float32
            mean = x.mean(0, dtype=torch.float64)  # (*shape)
            m2 = sum(((rows.double() - mean) ** 2).sum(0) for rows in x.split(4096))  # (*shape), chunked
            std = (m2 / len(x)).sqrt() if len(x) > 1 else torch.ones_like(self.scale)
        else:
            mean, std = x.moments()
        self.shift.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def has_data_stats(self) -> bool:
        """Whether set_data_stats ran (or a trained model's were loaded): the buffers moved from
        their start (shift 0, scale 1; data whose stats are exactly those gets the same again)."""
        return bool((self.shift != 0).any() or (self.scale != 1).any())

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, raw = params.unbind(-len(self.shape) - 1)  # each (..., *shape)
        sd = F.softplus(raw) + self.min_scale
        return Independent(StandardisedNormal(self.shift + self.scale * loc, self.scale * sd, validate_args=False),
                           len(self.shape), validate_args=False)


class StandardisedNormal(Normal):
    """A Normal whose log-density standardises before it squares: Normal.log_prob squares x - loc
    and the scale, which overflow float32 for data in units near 1e19 and above (a per-value scale
    of 1e20 is fine after standardising). The same density: log N(x; m, s) = log N((x - m) / s; 0, 1) - log s."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        u = (value - self.loc) / self.scale  # standard units
        return Normal(u.new_zeros(()), u.new_ones(()), validate_args=False).log_prob(u) - self.scale.log()


class DiscretizedLogistic(nn.Module):
    """8-bit data (values k/255 in [0, 1], e.g. PNG pixels): a logistic per value, discretised to
    the 256 levels as in PixelCNN++ (Salimans et al. 2017, one component). log p(x|z) is the log
    of the probability of x's bin, the two end bins taking the tails, so p(x) is a probability of
    the 8-bit data and its bits/dim compare with the literature's (CIFAR-10, ImageNet). The
    networks emit a location in [-1, 1] units and a log-scale (clamped at -7) per value."""

    n_params = 2
    discrete = True
    levels = 256
    min_log_scale = -7.0  # a bin is 2/255 = e^-4.8 wide: a narrower logistic adds nothing but overflow

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = params.unbind(-len(self.shape) - 1)  # each (..., *shape)
        base = DiscretizedLogisticValue(loc, log_scale.clamp(min=self.min_log_scale), self.levels)
        return DiscretizedLogisticImage(base, len(self.shape), validate_args=False)


class DiscretizedLogisticValue(Distribution):
    """One discretised logistic per value: location `loc` and `log_scale` in [-1, 1] units,
    values on the grid k / (levels - 1) in [0, 1]."""

    arg_constraints: dict = {}
    support = torch.distributions.constraints.unit_interval

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int = 256):
        self.loc, self.log_scale, self.levels = loc, log_scale, levels
        super().__init__(loc.shape, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        """The logistic's centre, clipped to the range and mapped to [0, 1]: its mean before
        discretising (the tails folded into the end bins shift the true mean slightly near 0 and 1;
        summing over the 256 levels exactly would take 256x the memory of a decode)."""
        return (self.loc.clamp(-1, 1) + 1) / 2

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half = 1.0 / (self.levels - 1)  # half a bin in [-1, 1] units
        centred = 2 * value - 1 - self.loc  # (..., *shape)
        inv = torch.exp(-self.log_scale)
        plus, minus = inv * (centred + half), inv * (centred - half)
        log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the bottom bin takes the lower tail
        log_sf_minus = -F.softplus(minus)  # log(1 - sigmoid(minus)): the top bin takes the upper tail
        delta = torch.sigmoid(plus) - torch.sigmoid(minus)
        mid = inv * centred
        log_pdf_mid = mid - self.log_scale - 2 * F.softplus(mid)  # log density at the bin's centre
        # an inner bin: the CDF difference, or (where it underflows float32) density x bin width
        inner = torch.where(delta > 1e-5, torch.log(delta.clamp(min=1e-12)), log_pdf_mid + math.log(2 * half))
        return torch.where(value < 0.5 * half, log_cdf_plus, torch.where(value > 1 - 0.5 * half, log_sf_minus, inner))

    def draw(self, generator: torch.Generator | None = None, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))  # (*sample_shape, ..., *shape)
        u = torch.rand(shape, generator=generator, device="cpu").to(self.loc.device).clamp(1e-6, 1 - 1e-6)
        y = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))  # a logistic draw
        return torch.round((y.clamp(-1, 1) + 1) / 2 * (self.levels - 1)) / (self.levels - 1)  # its bin

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.draw(None, sample_shape)


class DiscretizedLogisticImage(Independent):
    """The per-value discretised logistics as one distribution over an example."""

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base_dist.draw(generator)


class MixedDistribution(Distribution):
    """p(x|z) over an encoded table row (event shape (D_enc,)): one independent head per block.

    normal       N(loc, sd) for a (transformed) numeric value; its term is dropped when the
                 column's missingness indicator is 1 (a missing value has no value to score)
    categorical  Categorical over a one-hot block: labels, boolean, mixture modes
    bernoulli    Bernoulli for a missingness indicator
    log_prob sums the heads' terms, so it is one number per row, like the other likelihoods.
    """

    arg_constraints: dict = {}

    def __init__(self, params: torch.Tensor, likelihood: "MixedLikelihood"):
        self.params, self.lk = params, likelihood  # params (..., P)
        super().__init__(params.shape[:-1], torch.Size([likelihood.dim]), validate_args=False)

    def _normal(self) -> Normal:
        loc = self.params[..., self.lk.normal_params]  # (..., n_normal)
        return Normal(loc, self.lk.scale().expand_as(loc), validate_args=False)

    def _logits(self, i: int) -> torch.Tensor:
        a, b = self.lk.cat_params[i]
        return self.params[..., a:b]  # (..., k)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lk = self.lk
        total = torch.zeros(torch.broadcast_shapes(self.batch_shape, x.shape[:-1]), device=x.device)
        if len(lk.normal_idx):
            lp = self._normal().log_prob(x[..., lk.normal_idx])  # (..., n_normal)
            keep = torch.where(lk.normal_mask >= 0, 1 - x[..., lk.normal_mask.clamp(min=0)], torch.ones_like(lp))
            total = total + (lp * keep).sum(-1)
        if lk.cat_idx:
            # all categorical blocks at once, padded to the widest: (..., n_cat, k_max); padding
            # has logit -1e4 (probability 0) and target 0, so it adds nothing
            pad = self.params.new_full((*self.params.shape[:-1], 1), -1e4)
            logits = torch.cat([self.params, pad], -1)[..., lk.cat_param_grid]
            targets = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], -1)[..., lk.cat_x_grid]
            # a one-hot target picks its label's log-probability
            total = total + (targets * F.log_softmax(logits, -1)).sum((-2, -1))
        if len(lk.bern_idx):
            logits = self.params[..., lk.bern_params]  # (..., n_bern)
            total = total - F.binary_cross_entropy_with_logits(
                logits.expand(*total.shape, -1), x[..., lk.bern_idx].expand(*total.shape, -1), reduction="none").sum(-1)
        return total

    def _assemble(self, normal: torch.Tensor, cats: list[torch.Tensor], bern: torch.Tensor) -> torch.Tensor:
        # one gather, not assignments into a zero row: ONNX export traces a gather cleanly
        blank = self.params.new_zeros(*self.batch_shape, 1)  # for encoded positions no head covers
        parts = torch.cat([normal, *cats, bern, blank], -1)  # (..., n_normal + sum k + n_bern + 1), head order
        return parts[..., self.lk.assemble_idx]  # (..., D_enc)

    @property
    def mean(self) -> torch.Tensor:
        """Per block: the normal's mean, the label probabilities, the probability of missing."""
        return self._assemble(self._normal().mean, [F.softmax(self._logits(i), -1) for i in range(len(self.lk.cat_idx))],
                              torch.sigmoid(self.params[..., self.lk.bern_params]))

    @property
    def mode(self) -> torch.Tensor:
        cats = [F.one_hot(self._logits(i).argmax(-1), b - a).float() for i, (a, b) in enumerate(self.lk.cat_idx)]
        return self._assemble(self._normal().mean, cats, (self.params[..., self.lk.bern_params] > 0).float())

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One row per batch element from p(x|z): normal draws, one-hot labels, 0/1 indicators."""
        def noise(shape, fn=torch.randn):
            return fn(shape, generator=generator, device="cpu").to(self.params.device)

        normal = self._normal()
        values = normal.mean + normal.stddev * noise(normal.mean.shape)
        cats = []
        for i, (a, b) in enumerate(self.lk.cat_idx):
            logits = self._logits(i)
            gumbel = -torch.log(-torch.log(noise(logits.shape, torch.rand).clamp(1e-20, 1 - 1e-7)))
            cats.append(F.one_hot((logits + gumbel).argmax(-1), b - a).float())  # Gumbel-max: a categorical draw
        probs = torch.sigmoid(self.params[..., self.lk.bern_params])
        return self._assemble(values, cats, (noise(probs.shape, torch.rand) < probs).float())

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise ValueError("MixedDistribution.sample draws one row per batch element; expand the parameters instead")
        return self.draw()


class MixedLikelihood(nn.Module):
    """One head per table column block (see tables.Schema.heads): normal values,
    categorical one-hot blocks, Bernoulli missingness indicators. The decoder emits a flat
    parameter vector (B, P): a mean per normal head, k logits per categorical, 1 logit per
    Bernoulli.

    The normal heads' standard deviations are learned per column, shared by all rows, and
    start small (0.1, as TVAE's): a per-row scale lets the decoder explain a column by
    widening it instead of reading z, and the latent code collapses (measured on a toy table
    with a two-mode column: the modes were mixed up between categories).
    """

    n_params = 1
    min_scale, max_scale = 1e-2, 1.0  # in encoded units (the values are ~N(0, 1) or in [-1, 1])

    def __init__(self, heads: list[list]):
        super().__init__()
        self.heads = [list(h) for h in heads]
        normal_idx, normal_mask, normal_params, bern_idx, bern_params = [], [], [], [], []
        self.cat_idx, self.cat_params = [], []
        p = 0
        for kind, start, width, mask in self.heads:
            match kind:
                case "normal":
                    normal_idx.append(start), normal_mask.append(mask), normal_params.append(p)
                    p += 1
                case "categorical":
                    self.cat_idx.append((start, start + width)), self.cat_params.append((p, p + width))
                    p += width
                case "bernoulli":
                    bern_idx.append(start), bern_params.append(p)
                    p += 1
                case _:
                    raise ValueError(f"unknown head kind {kind!r}")
        self.dim = max((s + w for _, s, w, _ in self.heads), default=0)
        self.param_shape = (p,)
        self.shape = (self.dim,)
        for name, v in [("normal_idx", normal_idx), ("normal_mask", normal_mask), ("bern_idx", bern_idx),
                        ("bern_params", bern_params)]:
            self.register_buffer(name, torch.tensor(v, dtype=torch.long), persistent=False)
        self.register_buffer("normal_params", torch.tensor(normal_params, dtype=torch.long), persistent=False)
        order = normal_idx + [i for a, b in self.cat_idx for i in range(a, b)] + bern_idx  # head order -> row position
        assemble = [len(order)] * self.dim
        for j, i in enumerate(order):
            assemble[i] = j
        self.register_buffer("assemble_idx", torch.tensor(assemble, dtype=torch.long), persistent=False)
        k_max = max((b - a for a, b in self.cat_idx), default=0)
        # index grids (n_cat, k_max) into the params / the row; padding points one past the end
        grid = [[list(range(a, b)) + [p] * (k_max - b + a) for a, b in self.cat_params],
                [list(range(a, b)) + [self.dim] * (k_max - b + a) for a, b in self.cat_idx]]
        self.register_buffer("cat_param_grid", torch.tensor(grid[0], dtype=torch.long).reshape(len(grid[0]), k_max),
                             persistent=False)
        self.register_buffer("cat_x_grid", torch.tensor(grid[1], dtype=torch.long).reshape(len(grid[1]), k_max),
                             persistent=False)
        self.log_scale = nn.Parameter(torch.full((len(normal_idx),), math.log(0.1)))  # (n_normal,)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(self.min_scale, self.max_scale)  # (n_normal,)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the table encoding is already on a unit scale

    def forward(self, params: torch.Tensor) -> Distribution:
        return MixedDistribution(params, self)


def make_likelihood(name: str, shape: tuple[int, ...]) -> nn.Module:
    match name:
        case "bernoulli":
            return Bernoulli(shape)
        case "gaussian":
            return Gaussian(shape)
        case "discretized-logistic":
            return DiscretizedLogistic(shape)
        case "mixed":
            raise ConfigError("likelihood=mixed is built from a table schema (train on a .csv/.parquet table); "
                              "for arrays and images pick auto, bernoulli, gaussian or discretized-logistic")
    raise ValueError(f"likelihood {name!r} must be resolved to bernoulli, gaussian or discretized-logistic first")
