"""p(z): the prior over the latent space, returned as a `torch.distributions` object.

A prior is an `nn.Module` called as `prior(encode)`, where `encode` is the model's x -> q(z|x)
(the VampPrior needs it; the others ignore it). It returns a distribution with event shape
(d,), and `draw(n, temperature, generator, encode)` gives n latent points for generation.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal


def _noise(shape, generator, device) -> torch.Tensor:
    # drawn on the CPU so the same generator gives the same samples on any device
    return torch.randn(shape, generator=generator).to(device)


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over d dimensions; buffers so it follows the model's device."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, encode=None) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1, validate_args=False)  # event (d,)

    def draw(self, n: int, temperature: float = 1.0, generator=None, encode=None) -> torch.Tensor:
        return self.loc + temperature * self.scale * _noise((n, len(self.loc)), generator, self.loc.device)


class GaussianMixture(MixtureSameFamily):
    """A mixture of K diagonal Gaussians whose log-density is one matrix product.

    torch's `MixtureSameFamily.log_prob` broadcasts every z against every component, an
    (N, K, d) tensor and a dozen of them in the backward pass: with K = 500 that made a
    VampPrior ELBO step 4x slower than this, an IWAE k = 50 step (N = k x batch) 36x
    (benchmarks/prior_speed.py). Expanding the square, sum_d ((z - m)/s)^2 = z^2 . s^-2 - 2 z . m s^-2
    + m^2 . s^-2, needs only an (N, 2d + 1) x (2d + 1, K) product. The expansion cancels: z
    and m of a few units over scales of 0.01 give terms of 1e5 per dimension that cancel to
    about 1, which float32 gets wrong by nats (measured: 2 nats on a 12-dimensional test). So
    it runs in float64, in training too, and never in bf16, even under autocast (float32 on
    MPS, which has no float64). Each component's normaliser is its own log-density at its
    mean, from `torch.distributions`.
    """

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # z: (..., d) -> (...)
        with torch.autocast(z.device.type, enabled=False):
            return self._log_prob(z, torch.float32 if z.device.type == "mps" else torch.float64)

    def _log_prob(self, z: torch.Tensor, wide: torch.dtype) -> torch.Tensor:
        comp = self.component_distribution  # batch (K,), event (d,)
        loc, w = comp.base_dist.loc.to(wide), comp.base_dist.scale.to(wide).pow(-2)  # (K, d) each
        # per component: log pi_k + log N(m_k; m_k, s_k) - 1/2 m_k^2 . s_k^-2, folded into the
        # product as the weight of a column of ones, so the only (N, K) work is the logsumexp
        const = (torch.log_softmax(self.mixture_distribution.logits.to(wide), -1) + comp.log_prob(comp.base_dist.loc)
                 .to(wide) - 0.5 * (loc * loc * w).sum(-1))  # (K,)
        weights = torch.cat([-0.5 * w, loc * w, const[:, None]], -1)  # (K, 2d + 1)
        zz = z.reshape(-1, z.shape[-1]).to(wide)  # (N, d)
        feats = torch.cat([zz * zz, zz, torch.ones_like(zz[:, :1])], -1)  # (N, 2d + 1)
        logits = feats @ weights.T  # (N, K)
        top = logits.detach().amax(-1, keepdim=True)  # (N, 1)
        # terms under e^-80 of the largest change the sum by < K e^-80; flooring them keeps exp
        # and its gradient out of subnormal numbers, which x86 computes up to 60x slower
        lse = top.squeeze(-1) + (logits - top).clamp_min(-80.0).exp().sum(-1).log()  # (N,)
        return lse.to(z.dtype).reshape(z.shape[:-1])


class _Mixture(nn.Module):
    """Shared by the mixture priors: sample a component, then its Normal scaled by temperature."""

    def components(self, encode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, encode=None) -> Distribution:
        logits, loc, scale = self.components(encode)  # (K,), (K, d), (K, d)
        return GaussianMixture(Categorical(logits=logits, validate_args=False),
                               Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False),
                               validate_args=False)

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0, generator=None, encode=None) -> torch.Tensor:
        logits, loc, scale = self.components(encode)
        probs = torch.softmax(logits.double(), 0).cpu()
        k = torch.multinomial(probs, n, replacement=True, generator=generator).to(loc.device)  # (n,)
        return loc[k] + temperature * scale[k] * _noise(loc[k].shape, generator, loc.device)  # (n, d)


class MixturePrior(_Mixture):
    """A learned mixture of K diagonal Gaussians: p(z) = sum_k pi_k N(m_k, diag s_k^2)."""

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__()
        # spread the means so the components do not start identical (they would stay so)
        self.loc = nn.Parameter(torch.randn(components, latent_dim, generator=torch.Generator().manual_seed(0)))
        self.raw_scale = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def components(self, encode):
        return self.logits, self.loc, nn.functional.softplus(self.raw_scale) + 1e-4


class VampPrior(_Mixture):
    """The VampPrior: p(z) = 1/K sum_k q(z | u_k), a mixture of the encoder's posteriors at K
    learned pseudo-inputs u_k (Tomczak & Welling, VAE with a VampPrior, 2018)."""

    def __init__(self, input_shape: tuple[int, ...], components: int = 500):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.rand(components, *input_shape) * 0.1 + 0.45)  # (K, *shape)
        self.register_buffer("logits", torch.zeros(components), persistent=False)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start the pseudo-inputs at random training examples (plus a little noise)."""
        idx = torch.randint(len(x), (len(self.pseudo_inputs),), generator=generator).to(x.device)
        self.pseudo_inputs.copy_(x[idx] + 0.01 * torch.randn_like(x[idx]))

    def components(self, encode):
        if encode is None:
            raise ValueError("the VampPrior needs the model's encoder: use model.prior_dist()")
        q = encode(self.pseudo_inputs)  # batch (K,), event (d,)
        return self.logits, q.mean, q.stddev


def make_prior(name: str, latent_dim: int, input_shape: tuple[int, ...], components: int) -> nn.Module:
    match name:
        case "normal":
            return StandardNormal(latent_dim)
        case "mog":
            return MixturePrior(latent_dim, components)
        case "vamp":
            return VampPrior(input_shape, components)
    raise ValueError(f"unknown prior {name!r}")


