"""Hierarchical VAE with L stochastic layers z_1 (bottom) ... z_L (top) and top-down
inference, as in the Ladder VAE (Sønderby et al., Ladder Variational Autoencoders, 2016):

    generative  p(z_L) = N(0, I),  p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), sigma_l(z_{l+1})),  p(x | z_1)
    inference   a bottom-up pass gives estimates (mu^_l, sigma^_l) for every layer; going down,
                q(z_l | z_{l+1}, x) merges mu^_l, sigma^_l with p(z_l | z_{l+1}) by precision weighting.

The top-down networks are shared by p and q, so they live in `LadderPrior`, which also builds
the posterior from the encoder's bottom-up output. Both are joint distributions over the
concatenated latent vector z = [z_1, ..., z_L] (event (sum d_l,)), so the ELBO, the IWAE bound
and the importance-sampled log-likelihood work on them unchanged (the KL goes by Monte Carlo).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, constraints

from .nets import MLP, activation

MIN_SIGMA = 1e-4


def _gauss(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, raw = h.chunk(2, dim=-1)
    return mu, F.softplus(raw) + MIN_SIGMA


class LadderEncoder(nn.Module):
    """Bottom-up pass: x -> MLP trunk -> estimate for z_1 -> [MLP -> estimate for z_{l+1}] ...
    Returns (B, 2 * sum d_l): the (mu^, raw sigma^) of every layer, bottom first."""

    def __init__(self, in_shape: tuple[int, ...], hidden: list[int], ladder_hidden: list[int],
                 dims: list[int], act: str = "tanh"):
        super().__init__()
        self.trunk = nn.Sequential(MLP(in_shape, hidden[:-1], (hidden[-1],), act), activation(act))
        self.heads = nn.ModuleList([nn.Linear(hidden[-1], 2 * dims[0])])
        self.steps = nn.ModuleList()
        width = hidden[-1]
        for d in dims[1:]:
            self.steps.append(nn.Sequential(MLP((width,), ladder_hidden[:-1], (ladder_hidden[-1],), act), activation(act)))
            width = ladder_hidden[-1]
            self.heads.append(nn.Linear(width, 2 * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        out = [self.heads[0](h)]
        for step, head in zip(self.steps, self.heads[1:]):
            h = step(h)
            out.append(head(h))
        return torch.cat(out, -1)  # (B, 2 * sum d_l)


class _Joint(Distribution):
    """A distribution over z = [z_1, ..., z_L] defined top-down, layer by layer."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, prior: "LadderPrior", batch_shape: torch.Size, estimates=None, temperature: float = 1.0):
        self.prior, self.estimates, self.temperature = prior, estimates, temperature
        self.layer_sizes = list(prior.dims)  # d_l per stochastic layer, bottom first (free bits per layer)
        super().__init__(batch_shape, torch.Size([sum(prior.dims)]), validate_args=False)

    def _layer(self, l: int, above: torch.Tensor | None) -> Normal:
        """The conditional of layer l given the sample of layer l + 1 (None at the top)."""
        p_mu, p_sigma = self.prior.conditional(l, above, self.batch_shape)
        if self.estimates is None:
            return Normal(p_mu, p_sigma, validate_args=False)
        e_mu, e_sigma = self.estimates[l]
        if above is None:  # the top layer: the bottom-up estimate is the posterior
            return Normal(e_mu.expand_as(p_mu), e_sigma.expand_as(p_sigma), validate_args=False)
        prec_e, prec_p = e_sigma.pow(-2), p_sigma.pow(-2)
        var = 1.0 / (prec_e + prec_p)  # precision weighting (Sønderby et al. 2016, eq. 18-19)
        return Normal((e_mu * prec_e + p_mu * prec_p) * var, var.sqrt(), validate_args=False)

    def _walk(self, pick) -> tuple[torch.Tensor, list[torch.Tensor]]:
        zs: list[torch.Tensor | None] = [None] * len(self.prior.dims)
        for l in reversed(range(len(self.prior.dims))):
            zs[l] = pick(l, self._layer(l, zs[l + 1] if l + 1 < len(zs) else None))
        return torch.cat(zs, -1), zs

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        top = len(self.prior.dims) - 1

        def pick(l: int, d: Normal) -> torch.Tensor:
            # the top layer adds the sample dims; the layers below inherit them from z_{l+1}
            loc = d.loc.expand(*sample_shape, *d.loc.shape) if l == top else d.loc
            return loc + self.temperature * d.scale * torch.randn(loc.shape, device=loc.device)
        return self._walk(pick)[0]

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        """Top-down pass taking each layer's conditional mean (the mode path, not E[z])."""
        return self._walk(lambda l, d: d.loc)[0]

    def walk(self, dim: int, values: torch.Tensor) -> torch.Tensor:
        """The mode path (`mean`) of a batch of one with coordinate `dim` of z set to each of
        `values` (S,): (S, sum d_l). The layers below the walked one follow it, each its
        conditional mean given the layer above: the decoder reads only z_1, so a walk in an
        upper layer held apart from z_1 would decode to the same picture at every step."""
        layer = sum(dim >= end for end in itertools.accumulate(self.prior.dims))  # the layer dim is in
        z = self.mean.expand(len(values), -1).clone()  # (S, D)
        z[:, dim] = values
        parts = list(torch.split(z, self.prior.dims, -1))  # bottom first, (S, d_l) each
        for l in reversed(range(layer)):
            parts[l] = self._layer(l, parts[l + 1]).loc  # (S, d_l)
        return torch.cat(parts, -1)

    def dim_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_i | z_{l+1}, x) (or log p) per dimension (*sample, *batch, D), bottom first:
        each layer's conditional factorises, so these sum to log_prob."""
        parts = list(torch.split(z, self.prior.dims, -1))
        return torch.cat([self._layer(l, parts[l + 1] if l + 1 < len(parts) else None).log_prob(parts[l])
                          for l in range(len(parts))], -1)

    def layer_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log q(z_l | z_{l+1}, x) (or log p) per layer, each (*sample, *batch), bottom first."""
        return [t.sum(-1) for t in torch.split(self.dim_log_probs(z), self.prior.dims, -1)]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.layer_log_probs(z)).sum(0)


class LadderPrior(nn.Module):
    """p(z) = p(z_L) prod_l p(z_l | z_{l+1}); also builds q(z|x) from bottom-up estimates."""

    def __init__(self, dims: list[int], ladder_hidden: list[int], act: str = "tanh"):
        super().__init__()
        self.dims = list(dims)
        self.nets = nn.ModuleList(MLP((dims[l + 1],), ladder_hidden, (2 * dims[l],), act) for l in range(len(dims) - 1))

    def conditional(self, l: int, above: torch.Tensor | None, batch_shape) -> tuple[torch.Tensor, torch.Tensor]:
        if above is None:
            zeros = torch.zeros(*batch_shape, self.dims[l], device=self.nets[0].net[0].weight.device)
            return zeros, torch.ones_like(zeros)
        lead = above.shape[:-1]
        mu, sigma = _gauss(self.nets[l](above.reshape(-1, above.shape[-1])))  # (prod(lead), 2 d_l)
        return mu.reshape(*lead, -1), sigma.reshape(*lead, -1)

    def forward(self, encode=None) -> Distribution:
        return _Joint(self, torch.Size())

    def posterior(self, h: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder's output h (B, 2 * sum d_l)."""
        chunks = torch.split(h, [2 * d for d in self.dims], -1)
        return _Joint(self, h.shape[:-1], estimates=[_gauss(c) for c in chunks])

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0, generator=None, encode=None) -> torch.Tensor:
        zs: list[torch.Tensor | None] = [None] * len(self.dims)
        for l in reversed(range(len(self.dims))):
            mu, sigma = self.conditional(l, zs[l + 1] if l + 1 < len(zs) else None, torch.Size([n]))
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)
            zs[l] = mu + temperature * sigma * eps
        return torch.cat(zs, -1)  # (n, sum d_l)


class TakeBottom(nn.Module):
    """The decoder sees only z_1, the first d_1 entries of the concatenated latent vector."""

    def __init__(self, d1: int, net: nn.Module):
        super().__init__()
        self.d1, self.net = d1, net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[..., :self.d1])
