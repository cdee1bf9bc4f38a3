"""The VAE: an encoder net, a decoder net, a prior and a likelihood, composed.

    q(z|x) = N(mu(x), diag sigma(x)^2)    encode(x)
    p(x|z) = likelihood(decoder(z))       decode(z)
    p(z)   = prior()
Kingma & Welling, Auto-Encoding Variational Bayes, 2014.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from .config import Config
from .ladder import LadderEncoder, LadderPrior, TakeBottom
from .likelihoods import make_likelihood
from .nets import MLP, ConvDecoder, ConvEncoder
from .priors import make_prior


class VAE(nn.Module):
    min_sigma = 1e-4  # floor on the posterior std: log q(z|x) stays finite

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: nn.Module,
                 latent_dim: int, input_shape: tuple[int, ...], config: Config | None = None):
        super().__init__()
        self.encoder, self.decoder, self.prior, self.likelihood = encoder, decoder, prior, likelihood
        self.latent_dim, self.input_shape = latent_dim, tuple(input_shape)
        self.config = config

    @classmethod
    def from_config(cls, config: Config, likelihood: nn.Module | None = None) -> "VAE":
        """Build the model a Config describes; `config.input_shape` and a resolved likelihood needed.
        `likelihood`, if given, replaces the config's (tables: a MixedLikelihood from the schema)."""
        if config.input_shape is None or config.likelihood == "auto":
            raise ValueError("from_config needs input_shape and a concrete likelihood; fit() records both")
        shape, d = tuple(config.input_shape), config.latent_dim
        if likelihood is None:
            likelihood = make_likelihood(config.likelihood, shape)
        # a likelihood with a flat parameter vector (mixed heads) says its size itself
        out_shape = getattr(likelihood, "param_shape", None) or (likelihood.n_params, *shape)
        if config.arch == "ladder":
            dims, act = config.latent_dims, config.activation
            encoder = LadderEncoder(shape, config.hidden, config.ladder_hidden, dims, act)
            decoder = TakeBottom(dims[0], MLP((dims[0],), config.hidden[::-1], out_shape, act))
            return cls(encoder, decoder, LadderPrior(dims, config.ladder_hidden, act), likelihood, sum(dims), shape, config)
        if config.arch == "conv":
            if len(shape) != 3:
                raise ValueError(f"arch=conv needs images (C, H, W); this data has shape {shape}")
            encoder = ConvEncoder(shape, config.channels, 2 * d, config.activation)
            decoder = ConvDecoder(d, config.channels, out_shape, config.activation)
        else:
            encoder = MLP(shape, config.hidden, (2 * d,), config.activation)
            decoder = MLP((d,), config.hidden[::-1], out_shape, config.activation)
        prior = make_prior(config.prior, d, shape, config.prior_components or (500 if config.prior == "vamp" else 10))
        return cls(encoder, decoder, prior, likelihood, d, shape, config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for x (B, *shape): a distribution with batch (B,) and event (d,)."""
        h = self.encoder(self.likelihood.standardize(x))  # (B, 2d)
        if hasattr(self.prior, "posterior"):  # hierarchical: top-down inference shares the prior's nets
            return self.prior.posterior(h)
        mu, raw = h.chunk(2, dim=-1)  # each (B, d)
        # softplus, not exp(logvar/2): no overflow for large pre-activations, floor keeps log q finite
        sigma = F.softplus(raw) + self.min_sigma
        # validation off: the scales are positive by construction, and checking costs a sync per call
        return Independent(Normal(mu, sigma, validate_args=False), 1, validate_args=False)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z (*lead, d): batch shape `lead`, event shape the example's shape."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, self.latent_dim))  # (prod(lead), P, *shape)
        return self.likelihood(params.reshape(*lead, *params.shape[1:]))

    def prior_dist(self) -> Distribution:
        """p(z), event shape (d,). Learned priors (VampPrior) depend on the encoder."""
        return self.prior(self.encode)

    # ---- generation -----------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, mean: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n new examples (n, *shape): z ~ p(z) (scaled by `temperature` around the prior's
        mean), decoded; the likelihood's mean by default, or a draw from p(x|z)."""
        if n < 1:
            raise ValueError(f"n={n} must be >= 1")
        z = self.prior.draw(n, temperature, generator, self.encode)  # (n, d)
        return self._output(self.decode(z), mean, generator)

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
    def reconstruct(self, x: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """Decode the posterior mean of x (B, *shape); returns (B, *shape)."""
        return self._output(self.decode(self.encode(x).mean), mean, None)

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode points on the line between the posterior means of x1 and x2 (each (*shape)
        or (B, *shape)); returns (steps, B, *shape) of likelihood means."""
        if steps < 2:
            raise ValueError(f"steps={steps} must be >= 2")
        one = x1.dim() == len(self.input_shape)
        x1, x2 = (x1.unsqueeze(0), x2.unsqueeze(0)) if one else (x1, x2)
        z1, z2 = self.encode(x1).mean, self.encode(x2).mean  # (B, d)
        t = torch.linspace(0, 1, steps, device=z1.device).view(steps, 1, 1)
        out = self.decode((1 - t) * z1 + t * z2).mean  # (steps, B, *shape)
        return out[:, 0] if one else out

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, dim: int, span: float = 3.0, steps: int = 9) -> torch.Tensor:
        """Vary latent `dim` of x's posterior mean over [-span, span]; returns (steps, *shape)."""
        z = self.encode(x.unsqueeze(0)).mean.repeat(steps, 1)  # (steps, d)
        z[:, dim] = torch.linspace(-span, span, steps, device=z.device)
        return self.decode(z).mean

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, input_shape={self.input_shape}, params={self.num_parameters()}"


def bits_per_dim(nll_nats: float, shape: tuple[int, ...]) -> float:
    return nll_nats / (math.prod(shape) * math.log(2))
