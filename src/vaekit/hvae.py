"""Convolutional hierarchical VAE for images (arch=hvae), from the Ladder VAE / IAF-VAE / NVAE
family (Sønderby et al. 2016; Kingma et al., Improved Variational Inference with Inverse
Autoregressive Flow, 2016; Vahdat & Kautz, NVAE, 2020; Child, Very Deep VAEs, 2021):

    bottom-up  x -> stem -> per scale: strided conv, residual cells -> a feature map per group
    top-down   h = learned constant; for each group l, coarsest first:
                 p(z_l | z_>l)    = N(mu_p(h), sigma_p(h))                      (a conv head on h)
                 q(z_l | z_>l, x) = N(mu_p + dmu(h, f_l), sigma_p * dsigma(h, f_l))
                 h <- h + conv(z_l), residual cells; upsampling between scales
               the final h, upsampled to the image, gives p(x | z)'s parameters.

The posterior is parameterised relative to the prior (NVAE, section 3.2), so at the start q
and p move together and the KL does not explode. Each z_l is a spatial map (c, h_l, w_l); like
the MLP ladder (ladder.py), the concatenated, flattened z = [z_1 (finest), ..., z_L (top)] is
one latent vector whose q(z|x) and p(z) are joint distributions, so the ELBO, the IWAE bound and
the importance-sampled log-likelihood work on it unchanged (KL by Monte Carlo).

Cost: one top-down pass yields z, log q(z|x), log p(z) and the likelihood parameters together.
The pass is cached (on the prior, keyed by the sample's memory and version), so that decode(z),
q.log_prob(z) and p.log_prob(z) on the z just drawn reuse it: a training step runs the top-down
network once, not four times. Any other z (an interpolation, a clone) gets a fresh pass.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, constraints

from .nets import activation, conv_sizes



def default_groups(scales: int) -> list[int]:
    """One stochastic group per scale and two at the coarsest, finest first."""
    return [1] * (scales - 1) + [2]


def _soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    return bound * torch.tanh(x / bound)  # NVAE's clamp of log-scales: smooth, bounded, no dead gradient


class Cell(nn.Module):
    """A BN-free residual cell, x + conv(act(conv(act(x)))); the last conv starts at a tenth of
    its usual scale, so a deep stack begins near the identity and stays stable."""

    def __init__(self, ch: int, act: str):
        super().__init__()
        self.act = activation(act)
        self.a, self.b = nn.Conv2d(ch, ch, 3, padding=1), nn.Conv2d(ch, ch, 3, padding=1)
        with torch.no_grad():
            self.b.weight.mul_(0.1)
            self.b.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.act(self.a(self.act(x))))


def _cells(ch: int, n: int, act: str) -> nn.Module:
    return nn.Sequential(*(Cell(ch, act) for _ in range(n))) if n else nn.Identity()


class HVAEEncoder(nn.Module):
    """Bottom-up pass: (B, C, H, W) -> the feature maps of every group, finest first, flattened
    and concatenated: (B, sum_l ch_l * h_l * w_l). `HVAEPrior.posterior` splits them again."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], groups: list[int], cells: int, act: str):
        super().__init__()
        c, h, w = shape
        sizes = conv_sizes((h, w), len(channels))  # input size, then one per scale
        self.stem = nn.Conv2d(c, channels[0], 3, padding=1)
        self.down, self.blocks = nn.ModuleList(), nn.ModuleList()
        prev = channels[0]
        for s, ch in enumerate(channels):
            self.down.append(nn.Conv2d(prev, ch, 3, stride=2 if sizes[s + 1] != sizes[s] else 1, padding=1))
            self.blocks.append(nn.ModuleList(_cells(ch, max(cells, 1), act) for _ in range(groups[s])))
            prev = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, feats = self.stem(x), []
        for down, blocks in zip(self.down, self.blocks):
            h = down(h)
            for block in blocks:
                h = block(h)
                feats.append(h.flatten(1))
        return torch.cat(feats, 1)  # (B, F)


class Walk(NamedTuple):
    """What one top-down pass yields; lists are in top-down order (coarsest group first)."""

    z: torch.Tensor  # (*lead, D) the flat sample (or the z it was given)
    h: torch.Tensor | None  # the bottom-up features the pass used (None: the prior alone)
    log_q: list[torch.Tensor] | None  # per group (rows,): log q(z_l | z_>l, x)
    log_p: list[torch.Tensor]  # per group (rows,): log p(z_l | z_>l)
    params: torch.Tensor | None  # (rows, P, C, H, W) the likelihood's parameters


class _Cache:
    """The last top-down pass. Not deep-copied (it may hold an autograd graph)."""

    def __init__(self):
        self.walk: Walk | None = None
        self.version = -1  # the sample's version counter when cached: an in-place change invalidates it

    def __deepcopy__(self, memo) -> "_Cache":
        return _Cache()


class HVAEPrior(nn.Module):
    """The top-down network, shared by p(z) and q(z|x) (as in ladder.LadderPrior); it also
    computes p(x|z)'s parameters, which `HVAEDecoder` reads."""

    def __init__(self, shape: tuple[int, int, int], channels: list[int], groups: list[int], latent_channels: int,
                 cells: int, act: str, n_params: int):
        super().__init__()
        c, h, w = shape
        self.image, self.n_params, self.groups, self.lc = (c, h, w), n_params, list(groups), latent_channels
        self.sizes = conv_sizes((h, w), len(channels))
        self.scale_of = [s for s in reversed(range(len(channels))) for _ in range(groups[s])]  # top-down order
        self.feat_shapes = [(channels[s], *self.sizes[s + 1]) for s in range(len(channels)) for _ in range(groups[s])]
        self.dims = [latent_channels * self.sizes[s + 1][0] * self.sizes[s + 1][1] for s in reversed(self.scale_of)]
        top = len(channels) - 1
        self.top = nn.Parameter(torch.zeros(channels[top], *self.sizes[top + 1]))  # the learned start state
        self.up = nn.ModuleList(nn.Conv2d(channels[s + 1], channels[s], 3, padding=1) for s in range(top))
        self.pre, self.p_head, self.q_state, self.q_feat, self.merge = (nn.ModuleList() for _ in range(5))
        for g, s in enumerate(self.scale_of):
            ch = channels[s]
            self.pre.append(_cells(ch, cells if g else 0, act))
            self.p_head.append(nn.Conv2d(ch, 2 * latent_channels, 3, padding=1))
            # q's head on concat(h, f), written as two convs so the features' half runs once per
            # example, not once per importance sample
            self.q_state.append(nn.Conv2d(ch, 2 * latent_channels, 3, padding=1))
            self.q_feat.append(nn.Conv2d(ch, 2 * latent_channels, 3, padding=1, bias=False))
            self.merge.append(nn.Conv2d(latent_channels, ch, 1))
        self.out = nn.Sequential(nn.Conv2d(channels[0], channels[0], 3, padding=1), activation(act),
                                 nn.Conv2d(channels[0], n_params * c, 3, padding=1))
        self._cache = _Cache()

    @property
    def dim(self) -> int:
        return sum(self.dims)

    # ---- the pass ------------------------------------------------------------------------
    def walk(self, h: torch.Tensor | None, rows: int, z: torch.Tensor | None = None, mean: bool = False,
             temperature: float = 1.0, generator: torch.Generator | None = None, params: bool = True,
             per_dim: bool = False) -> Walk:
        """One top-down pass over `rows` rows; h (B, F) bottom-up features (rows = k * B: the
        k samples of an example share its features) or None for the prior. With z (rows, D) it
        scores that z; otherwise it draws one (the mean path if `mean`). `per_dim` keeps the
        log-densities per latent value (rows, D_l) instead of summed per group."""
        feats = None if h is None else self._split_feats(h)
        if z is not None:  # rows from z's shape, not a Python int: an exported graph keeps a free batch size
            z = z.reshape(-1, z.shape[-1])  # (rows, D)
            rows = z.shape[0]
        parts = None if z is None else self._split(z)
        state = self.top.expand(rows, *self.top.shape)  # (rows, ch, h, w)
        zs, log_q, log_p, scale = [], [], [], len(self.up)
        for g, s in enumerate(self.scale_of):
            state, scale = self._upsample(state, scale, s), s
            state = self.pre[g](state)
            p_mu, p_raw = self.p_head[g](state).float().chunk(2, 1)  # each (rows, lc, h, w)
            # log-scales soft-clamped to [-5, 5] (NVAE): a prior scale near 0 would make log p's
            # gradient explode (measured with softplus + 1e-4: norms of 1e6 in the first steps)
            p = Normal(p_mu, torch.exp(_soft_clamp(p_raw)), validate_args=False)
            q = None
            if feats is not None:
                f = self.q_feat[g](feats[g])  # (B, 2 lc, h, w)
                d = self.q_state[g](state).float()  # (rows, 2 lc, h, w)
                dmu, draw = (d.view(-1, *f.shape) + f).view_as(d).chunk(2, 1)
                q = Normal(p.loc + dmu, p.scale * torch.exp(_soft_clamp(draw)), validate_args=False)
            dist = q if q is not None else p
            if parts is not None:
                zg = parts[g]
            elif mean:
                zg = dist.loc
            else:
                eps = torch.randn_like(dist.loc) if generator is None else \
                    torch.randn(dist.loc.shape, generator=generator).to(dist.loc.device)  # a seeded CPU draw
                zg = dist.loc + temperature * dist.scale * eps
            lp = p.log_prob(zg).flatten(1)  # (rows, D_l)
            log_p.append(lp if per_dim else lp.sum(1))  # (rows,) unless per_dim
            if q is not None:
                lq = q.log_prob(zg).flatten(1)
                log_q.append(lq if per_dim else lq.sum(1))
            zs.append(zg)
            state = state + self.merge[g](zg.to(state.dtype))
        out = None
        if params:
            state = self._upsample(state, scale, 0)
            state = F.interpolate(state, size=self.sizes[0], mode="nearest")  # the image's size
            out = self.out(state).reshape(-1, self.n_params, *self.image)  # (rows, P, C, H, W)
        flat = z if z is not None else torch.cat([t.flatten(1) for t in reversed(zs)], 1)  # (rows, D) finest first
        return Walk(flat, h, log_q if feats is not None else None, log_p, out)

    def _upsample(self, state: torch.Tensor, scale: int, to: int) -> torch.Tensor:
        """From scale `scale` down to the finer scale `to`: resize to the recorded size (so odd
        sizes come out exact), then a conv to that scale's width."""
        for s in range(scale - 1, to - 1, -1):
            state = self.up[s](F.interpolate(state, size=self.sizes[s + 1], mode="nearest"))
        return state

    def _split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(rows, D) finest first -> per group (rows, lc, h, w), top-down order."""
        chunks = torch.split(z, self.dims, -1)[::-1]
        return [t.reshape(-1, self.lc, *self.sizes[s + 1]) for t, s in zip(chunks, self.scale_of)]

    def _split_feats(self, h: torch.Tensor) -> list[torch.Tensor]:
        """(B, F) bottom-up features -> per group (B, ch, h, w), top-down order."""
        sizes = [math.prod(s) for s in self.feat_shapes]
        chunks = [t.reshape(-1, *s) for t, s in zip(torch.split(h, sizes, -1), self.feat_shapes)]
        return chunks[::-1]

    def run(self, h: torch.Tensor | None, lead: torch.Size, remember: bool = False, **kw) -> Walk:
        """walk() over leading shape `lead`, remembered for the scoring and decoding that follow
        (always a draw; a pass over a given z only with `remember`)."""
        w = self.walk(h, max(1, math.prod(lead)), **kw)
        given = kw.get("z")
        w = w._replace(z=w.z.reshape(*lead, -1) if given is None else given)
        if (given is None or remember) and not torch.compiler.is_compiling():
            self._cache.walk, self._cache.version = w, w.z._version  # compiled: no Python-side cache
        return w

    def recall(self, z: torch.Tensor, h: torch.Tensor | None = None) -> Walk | None:
        """The cached pass if z is the sample it drew (the same memory, unmodified) and, when h
        is given, it ran on those features; else None."""
        w = self._cache.walk
        if w is None or torch.compiler.is_compiling():
            return None
        c = w.z
        same = (z.data_ptr() == c.data_ptr() and z.numel() == c.numel() and z.dtype == c.dtype
                and z.device == c.device and z.is_contiguous() and z._version == self._cache.version)
        return w if same and (h is None or w.h is h) else None

    # ---- the distributions -----------------------------------------------------------------
    def forward(self, encode=None) -> Distribution:
        return HierarchicalNormal(self, torch.Size())

    def posterior(self, h: torch.Tensor) -> Distribution:
        """q(z|x) from the encoder's output h (B, F)."""
        return HierarchicalNormal(self, h.shape[:-1], h)

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0, generator=None, encode=None) -> torch.Tensor:
        return self.run(None, torch.Size([n]), temperature=temperature, generator=generator).z  # (n, D)


class HierarchicalNormal(Distribution):
    """p(z) (h None) or q(z|x) over the flat z = [z_1 (finest), ..., z_L (top)], defined
    top-down group by group; event shape (D,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, net: HVAEPrior, batch_shape: torch.Size, h: torch.Tensor | None = None):
        self.net, self.h = net, h
        self.layer_sizes = list(net.dims)  # values per group, finest first (free bits per group)
        super().__init__(batch_shape, torch.Size([net.dim]), validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.net.run(self.h, torch.Size(sample_shape) + self.batch_shape).z  # (*sample, *batch, D)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    @property
    def mean(self) -> torch.Tensor:
        """Top-down pass taking each group's conditional mean (the mode path, not E[z])."""
        return self.net.run(self.h, self.batch_shape, mean=True).z

    def remember(self, z: torch.Tensor) -> None:
        """One pass over the given z (*lead, D), kept for the decoder, the prior and this
        distribution to read instead of each running its own (DReG scores a copy of the drawn z)."""
        self.net.run(self.h, z.shape[:-1], remember=True, z=z)

    def layer_log_probs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log q(z_l | z_>l, x) (or log p) per group, each (*lead,), finest first."""
        lead = z.shape[:-1]
        w = self.net.recall(z, self.h)
        if w is None or (self.h is not None and w.log_q is None):
            w = self.net.walk(self.h, max(1, math.prod(lead)), z=z, params=False)
        terms = w.log_q if self.h is not None else w.log_p
        return [t.reshape(lead) for t in reversed(terms)]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.layer_log_probs(z)).sum(0)  # (*lead,)

    def dim_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z_i | z_>l, x) (or log p) per latent value (*lead, D), in z's order (finest
        group first); each group's conditional factorises, so these sum to log_prob."""
        lead = z.shape[:-1]
        w = self.net.walk(self.h, max(1, math.prod(lead)), z=z, params=False, per_dim=True)
        terms = w.log_q if self.h is not None else w.log_p
        return torch.cat(list(reversed(terms)), -1).reshape(*lead, -1)


class HVAEDecoder(nn.Module):
    """z (N, D) -> p(x|z)'s parameters (N, P, C, H, W): the end of the top-down pass. The
    network belongs to the prior (held here unregistered, so its weights are saved once)."""

    def __init__(self, net: HVAEPrior):
        super().__init__()
        self._net = [net]

    @property
    def output_layer(self) -> nn.Module:
        return self._net[0].out[-1]  # the conv giving p(x|z)'s parameters

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        net = self._net[0]
        w = net.recall(z)
        if w is not None and w.params is not None:
            return w.params
        return net.walk(None, len(z), z=z).params
