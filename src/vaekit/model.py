"""The VAE: an encoder net, a decoder net, a prior and a likelihood, composed.

    q(z|x) = N(mu(x), diag sigma(x)^2)    encode(x)
    p(x|z) = likelihood(decoder(z))       decode(z)
    p(z)   = prior()
Kingma & Welling, Auto-Encoding Variational Bayes, 2014.

A conditional VAE (Sohn et al., Learning Structured Output Representation using Deep
Conditional Generative Models, 2015) gives both nets a condition vector c: q(z|x, c), p(x|z, c),
with p(z) unchanged; then sampling with a chosen c generates that class or that kind of row.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from .config import Config
from .errors import ConfigError, IncompatibleError, NonFiniteError
from .hvae import HVAEDecoder, HVAEEncoder, HVAEPrior
from .ladder import LadderEncoder, LadderPrior, TakeBottom
from .likelihoods import make_likelihood
from .nets import MLP, ConvDecoder, ConvEncoder
from .priors import make_prior


# where Linux keeps a cgroup's memory limit: (folder, limit, usage, reclaimable cache in memory.stat); v2, then v1
CGROUP_MEMORY = (("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
                 ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))


def available_memory(device: torch.device) -> int:
    """Bytes a new allocation can take on `device` without the machine swapping or the kernel's
    OOM killer stepping in: free CUDA memory, or Linux's MemAvailable (free plus reclaimable cache),
    capped by the process's cgroup limit (a container's or a batch job's, which MemAvailable ignores)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = 1 << 62  # unknown: let the allocator answer
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        try:  # other Unixes: free physical pages
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    for folder, limit, used, cache in CGROUP_MEMORY:
        try:
            text = Path(folder, limit).read_text().strip()
            if text == "max":
                break
            stat = dict(line.split() for line in Path(folder, "memory.stat").read_text().splitlines())
            # the usage counts page cache, which the kernel drops before it kills anything
            free = min(free, int(text) - int(Path(folder, used).read_text()) + int(stat.get(cache, 0)))
            break
        except (OSError, ValueError):
            continue
    return max(0, free)


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.1f} GiB" if nbytes >= 2 ** 30 else f"{nbytes / 2 ** 20:.0f} MiB"


def check_memory(nbytes: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse up front a result that cannot fit: Linux overcommits, so a huge tensor is often
    granted and the process is killed while filling it, with no message and nothing written."""
    free = available_memory(torch.device(device))
    if nbytes > free:
        raise ConfigError(f"{what}: {gib(nbytes)} of memory needed, more than the {gib(free)} available "
                          f"on {torch.device(device).type}; {fix}")


def as_float(x) -> torch.Tensor:
    """x as a float32 tensor, where it lives: numpy arrays and nested lists are read as they are,
    float64, integer and bool tensors cast (the nets compute in float32)."""
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(x, dtype=np.float32))
    return x if x.dtype == torch.float32 else x.float()


class VAE(nn.Module):
    min_sigma = 1e-4  # floor on the posterior std: log q(z|x) stays finite
    sample_chunk_values = 1 << 24  # generation decodes about this many values at a time (64 MB of float32)

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: nn.Module,
                 latent_dim: int, input_shape: tuple[int, ...], config: Config | None = None,
                 condition_dim: int = 0):
        super().__init__()
        self.encoder, self.decoder, self.prior, self.likelihood = encoder, decoder, prior, likelihood
        self.latent_dim, self.input_shape = latent_dim, tuple(input_shape)
        self.config = config
        self.condition_dim = condition_dim  # size of c; 0: unconditional

    @classmethod
    def from_config(cls, config: Config, likelihood: nn.Module | None = None) -> "VAE":
        """Build the model a Config describes; `config.input_shape` and a resolved likelihood needed.
        `likelihood`, if given, replaces the config's (tables: a MixedLikelihood from the schema)."""
        if config.input_shape is None or config.likelihood == "auto":
            raise ValueError("from_config needs input_shape and a concrete likelihood; fit() records both")
        shape, d, cd = tuple(config.input_shape), config.latent_dim, config.condition_dim
        if likelihood is None:
            likelihood = make_likelihood(config.likelihood, shape)
        # a likelihood with a flat parameter vector (mixed heads) says its size itself
        out_shape = getattr(likelihood, "param_shape", None) or (likelihood.n_params, *shape)
        if config.arch == "ladder":
            dims, act = config.latent_dims, config.activation
            encoder = LadderEncoder(shape, config.hidden, config.ladder_hidden, dims, act)
            decoder = TakeBottom(dims[0], MLP((dims[0],), config.hidden[::-1], out_shape, act))
            return cls(encoder, decoder, LadderPrior(dims, config.ladder_hidden, act), likelihood, sum(dims), shape, config)
        if config.arch == "hvae":
            if len(shape) != 3:
                raise ValueError(f"arch=hvae needs images (C, H, W); this data has shape {shape}")
            args = (config.channels, config.groups)
            encoder = HVAEEncoder(shape, *args, config.cells, config.activation)
            prior = HVAEPrior(shape, *args, config.latent_channels, config.cells, config.activation, out_shape[0])
            return cls(encoder, HVAEDecoder(prior), prior, likelihood, prior.dim, shape, config)
        if config.arch == "conv":
            if len(shape) != 3:
                raise ValueError(f"arch=conv needs images (C, H, W); this data has shape {shape}")
            # the condition enters the conv encoder as constant extra input planes
            encoder = ConvEncoder((shape[0] + cd, *shape[1:]), config.channels, 2 * d, config.activation)
            decoder = ConvDecoder(d + cd, config.channels, out_shape, config.activation)
        else:
            encoder = MLP((math.prod(shape) + cd,) if cd else shape, config.hidden, (2 * d,), config.activation)
            decoder = MLP((d + cd,), config.hidden[::-1], out_shape, config.activation)
        prior = make_prior(config.prior, d, shape, config.prior_components or (500 if config.prior == "vamp" else 10))
        return cls(encoder, decoder, prior, likelihood, d, shape, config, cd)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_condition(self, c: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """c as a float tensor (n, condition_dim) on the model's device; (condition_dim,) is
        broadcast to n rows. Raises IncompatibleError when c is missing, extra or mis-shaped."""
        if not self.condition_dim:
            if c is not None:
                raise IncompatibleError("this model is unconditional; do not pass a condition")
            return None
        if c is None:
            raise IncompatibleError(f"this conditional model needs a condition c of shape (B, {self.condition_dim}): "
                                    "pass c= (condition= to sample), e.g. model.label_condition(7) for one class")
        c = torch.as_tensor(c, dtype=torch.float32, device=self.device)
        if c.dim() == 1:
            c = c.expand(n, -1)
        if c.shape != (n, self.condition_dim):
            raise IncompatibleError(f"condition has shape {tuple(c.shape)}; expected ({n}, {self.condition_dim}), "
                                    "one row per example")
        return c

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """q(z|x[, c]) for x (B, *shape), c (B, C): a distribution with batch (B,) and event (d,)."""
        x = as_float(x)  # a no-op in training
        if tuple(x.shape[1:]) != self.input_shape:  # a clear message, not a matmul error deep inside
            one = " (one example: pass x[None], a batch of one)" if tuple(x.shape) == self.input_shape else ""
            raise IncompatibleError(f"x has shape {tuple(x.shape)} but this model takes (B, *{self.input_shape}){one}; "
                                    "pass data shaped like its training data")
        if len(x) == 0:
            raise IncompatibleError(f"x has shape {tuple(x.shape)}: no examples; pass at least one")
        x = x.to(self.device)  # data may live anywhere (a CPU tensor for a CUDA model); a no-op in training
        xs = self.likelihood.standardize(x)
        c = self.check_condition(c, len(x))
        if c is not None and isinstance(self.encoder, ConvEncoder):
            xs = torch.cat([xs, c[:, :, None, None].expand(-1, -1, *xs.shape[2:])], 1)  # (B, C_img + C, H, W)
        elif c is not None:
            xs = torch.cat([xs.flatten(1), c], 1)  # (B, D + C)
        h = self.encoder(xs)  # (B, 2d)
        if hasattr(self.prior, "posterior"):  # hierarchical: top-down inference shares the prior's nets
            return self.prior.posterior(h)
        mu, raw = h.chunk(2, dim=-1)  # each (B, d)
        # softplus, not exp(logvar/2): no overflow for large pre-activations, floor keeps log q finite
        sigma = F.softplus(raw) + self.min_sigma
        # validation off: the scales are positive by construction, and checking costs a sync per call
        return Independent(Normal(mu, sigma, validate_args=False), 1, validate_args=False)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> Distribution:
        """p(x|z[, c]) for z (*lead, d) and c (B, C) with lead ending in B: batch shape `lead`,
        event shape the example's shape."""
        z = as_float(z).to(self.device)  # a latent from anywhere (no-op in training)
        if z.ndim == 0 or z.shape[-1] != self.latent_dim:  # a clear message, not a matmul error inside
            raise IncompatibleError(f"z has shape {tuple(z.shape)} but this model's latents have {self.latent_dim} "
                                    f"dims: pass z (..., {self.latent_dim})")
        lead = z.shape[:-1]
        if self.condition_dim:
            c = self.check_condition(c, lead[-1] if lead else 1)
            z = torch.cat([z, c.expand(*lead, -1)], -1)  # (*lead, d + C): the k samples share c
        elif c is not None:
            raise ValueError("this model is unconditional; do not pass a condition")
        params = self.decoder(z.reshape(-1, z.shape[-1]))  # (prod(lead), P, *shape)
        return self.likelihood(params.reshape(*lead, *params.shape[1:]))

    def prior_dist(self) -> Distribution:
        """p(z), event shape (d,). Learned priors (VampPrior) depend on the encoder."""
        return self.prior(self.encode)

    # ---- generation -----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, mean: bool = True,
               generator: torch.Generator | None = None, condition: torch.Tensor | None = None) -> torch.Tensor:
        """n new examples (n, *shape): z ~ p(z) (scaled by `temperature` around the prior's
        mean), decoded; the likelihood's mean by default, or a draw from p(x|z). A conditional
        model takes `condition` (n, C) or (C,), e.g. `model.label_condition(7)`."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ConfigError(f"n={n!r} must be an integer >= 1 (how many samples)")
        n = int(n)  # numpy's integers too
        if not 0 <= temperature < math.inf:  # 0: the prior's mean decoded n times
            raise ConfigError(f"temperature={temperature} must be a finite number >= 0, e.g. 1")
        check_memory(n * (math.prod(self.input_shape) + self.latent_dim) * 4, self.device,
                     f"n={n} samples of shape {self.input_shape} (and their latents)",
                     "draw fewer at a time, or write them with `vaekit sample -o FILE.npy`, which writes in pieces")
        c = self.check_condition(condition, n)
        z = self.prior.draw(n, temperature, generator, self.encode)  # (n, d)
        # decoded in chunks, so the decoder's activations never outgrow the output itself:
        # a million MNIST samples need their 3.1 GB, not three times that
        rows = max(1, self.sample_chunk_values // max(1, math.prod(self.input_shape)))
        out = None
        for i in range(0, n, rows):
            part = self._output(self.decode(z[i:i + rows], None if c is None else c[i:i + rows]), mean, generator)
            if out is None:
                out = part if len(part) == n else part.new_empty((n, *part.shape[1:]))  # (n, *shape)
            if out is not part:
                out[i:i + rows] = part
        if not torch.isfinite(out).all():  # a huge temperature overflows z, and that reaches every output
            if temperature > 1:
                raise ConfigError(f"temperature={temperature:g} makes non-finite samples; nothing was written: "
                                  "use a smaller temperature, e.g. 1")
            raise NonFiniteError(f"the model makes non-finite samples at temperature={temperature:g}; nothing was "
                                 "written: its weights hold NaN or Inf (check them with torch.isfinite), train again")
        return out

    def label_condition(self, label) -> torch.Tensor:
        """The one-hot condition (C,) for a class label of a model trained with condition_on=labels."""
        names = (self.config.condition_names if self.config is not None else None) or []
        if str(label) not in names:
            raise ConfigError(f"label {label!r} was not seen in training; the model knows {', '.join(names) or 'none'}")
        return F.one_hot(torch.tensor(names.index(str(label))), len(names)).float().to(self.device)

    def class_conditions(self, n: int, start: int = 0) -> torch.Tensor | None:
        """Conditions (n, C) taking a label-conditioned model's classes in turn (None for an
        unconditional model): what `sample` and the report draw when no class is asked for.
        `start`: where in the cycle the rows begin (a later chunk of a long run of samples)."""
        if not self.condition_dim:
            return None
        names = self.config.condition_names if self.config is not None else None
        if not names:
            raise ConfigError("this model is conditioned on the caller's own vectors, not on class labels: "
                              "pass condition=C (n, C) yourself")
        return torch.eye(len(names), device=self.device)[torch.arange(start, start + n) % len(names)]  # (n, C)

    def _output(self, px: Distribution, mean: bool, generator: torch.Generator | None) -> torch.Tensor:
        if mean:
            return px.mean
        if hasattr(px, "draw"):  # e.g. the mixed table likelihood draws its own heads
            return px.draw(generator)
        if isinstance(px.base_dist, torch.distributions.Bernoulli):
            u = torch.rand(px.mean.shape, generator=generator, device="cpu").to(px.mean.device)
            return (u < px.mean).float()
        eps = torch.randn(px.mean.shape, generator=generator, device="cpu").to(px.mean.device)
        return px.mean + px.stddev * eps

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mean: bool = True, c: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean of x (B, *shape) (with its condition c (B, C)); returns (B, *shape)
        on x's device."""
        return self._output(self.decode(self.encode(x, c).mean, c), mean, None).to(x.device)

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 8,
                    c1: torch.Tensor | None = None, c2: torch.Tensor | None = None) -> torch.Tensor:
        """Decode points on the line between the posterior means of x1 and x2 (each (*shape)
        or (B, *shape)); returns (steps, B, *shape) of likelihood means, on x1's device. A
        conditional model interpolates the conditions c1 -> c2 along with z."""
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
            raise ConfigError(f"steps={steps!r} must be an integer >= 2")
        x1, x2 = as_float(x1), as_float(x2)
        one = x1.dim() == len(self.input_shape)
        x1, x2 = (x1.unsqueeze(0), x2.unsqueeze(0)) if one else (x1, x2)
        if x1.shape != x2.shape:
            raise IncompatibleError(f"x1 has shape {tuple(x1.shape)} and x2 {tuple(x2.shape)}; give them the same "
                                    "shape: two examples, or two batches of pairs")
        steps, b = int(steps), len(x1)
        check_memory(steps * b * (math.prod(self.input_shape) + 2 * self.latent_dim + self.condition_dim) * 4,
                     self.device, f"{steps} steps x {b} pairs", "use fewer --steps or fewer pairs")
        c1, c2 = self.check_condition(c1, b), self.check_condition(c2, b)
        z1, z2 = self.encode(x1, c1).mean, self.encode(x2, c2).mean  # (B, d)
        t = torch.linspace(0, 1, steps, device=z1.device).view(steps, 1, 1)
        z = ((1 - t) * z1 + t * z2).reshape(steps * b, -1)  # (steps * B, d)
        c = None if c1 is None else ((1 - t) * c1 + t * c2).reshape(steps * b, -1)  # (steps * B, C)
        out = self._decode_means(z, c).reshape(steps, b, *self.input_shape).to(x1.device)  # (steps, B, *shape)
        return out[:, 0] if one else out

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dim: int, span: float = 3.0, steps: int = 9,
                 c: torch.Tensor | None = None) -> torch.Tensor:
        """Vary latent `dim` of x's posterior mean over [-span, span], the others held (a ladder's
        layers below `dim` follow it: `_Joint.walk`); returns (steps, *shape) on x's device."""
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
            raise ConfigError(f"steps={steps!r} must be an integer >= 2")
        if not 0 <= dim < self.latent_dim:
            raise ConfigError(f"latent dimension {dim} out of range: this model has {self.latent_dim} "
                              f"(0..{self.latent_dim - 1})")
        if not 0 < span < math.inf:
            raise ConfigError(f"span={span} must be a finite number > 0 (the walk goes from -span to span)")
        x = as_float(x)
        steps = int(steps)
        check_memory(steps * (math.prod(self.input_shape) + self.latent_dim) * 4, self.device,
                     f"{steps} steps", "use fewer --steps")
        c = self.check_condition(c, 1)  # (1, C): x's condition, (C,) or (1, C)
        q = self.encode(x.unsqueeze(0), c)
        values = torch.linspace(-span, span, steps, device=self.device)  # (steps,)
        if hasattr(q, "walk"):  # a ladder: the layers below the walked one follow it down to the decoder's z_1
            z = q.walk(dim, values)  # (steps, d)
        else:
            z = q.mean.repeat(steps, 1)  # (steps, d)
            z[:, dim] = values
        return self._decode_means(z, None if c is None else c.expand(steps, -1)).to(x.device)

    def _decode_means(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Likelihood means of z (M, d) with conditions c (M, C): (M, *shape), decoded a chunk
        at a time as in `sample`, so the decoder's activations never outgrow the output."""
        rows = max(1, self.sample_chunk_values // max(1, math.prod(self.input_shape)))
        out = None
        for i in range(0, len(z), rows):
            part = self.decode(z[i:i + rows], None if c is None else c[i:i + rows]).mean
            if out is None:  # filled in place: a concatenation would hold the output twice
                out = part if len(part) == len(z) else part.new_empty((len(z), *part.shape[1:]))  # (M, *shape)
            if out is not part:
                out[i:i + rows] = part
        return out

    def output_layer(self) -> nn.Module | None:
        """The decoder's last linear or conv layer, whose bias offsets p(x|z)'s parameters (for
        hvae the top-down network's, which its decoder reads but does not hold); None if none."""
        own = getattr(self.decoder, "output_layer", None)
        if isinstance(own, nn.Module):
            return own
        layers = [m for m in self.decoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        return layers[-1] if layers else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, input_shape={self.input_shape}, params={self.num_parameters()}"


def memory_format(config: Config) -> torch.memory_format:
    """The layout a model's weights (and so its activations) live in: channels-last (NHWC)
    for conv models, the layout the convolutions want (on CPU a conv-model epoch ran 1.70x
    faster and its evaluation 1.76x, the hvae 1.06-1.12x and 1.10-1.19x: docs/benchmarks.md),
    unless `config.channels_last` is off. Saved weights are always plain contiguous tensors."""
    conv = config.channels_last and config.arch in ("conv", "hvae")
    return torch.channels_last if conv else torch.contiguous_format
