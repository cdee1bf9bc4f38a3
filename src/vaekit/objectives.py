"""Training objectives as pure functions of (model, x): each returns the bound itself,
per example, and its terms, so the loss you see is the quantity it is named after.

    ELBO  log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z))           Kingma & Welling 2014
    IWAE  log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)]           Burda et al. 2016
          (its gradient optionally by the doubly reparameterised estimator, Tucker et al. 2019)
    WAE-MMD  E[log p(x|z)] - lambda MMD(q(z), p(z)), z from the encoder  Tolstikhin et al. 2018
             (not a bound on log p(x): its `kl` field carries the MMD)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import Independent, Normal, kl_divergence


class Bound(NamedTuple):
    bound: torch.Tensor  # (B,) the objective's value per example (higher is better)
    recon: torch.Tensor  # (B,) E_q[log p(x|z)], one-sample estimate
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)), closed form where it exists


def kl_term(q, p, z: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per example: closed form if torch knows it, else the one-sample estimate
    log q(z) - log p(z) at the reparameterised z (unbiased, and its gradient flows)."""
    try:
        return kl_divergence(q, p)  # (B,)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)


def elbo(model, x: torch.Tensor, beta: float = 1.0, free_bits: float = 0.0, c: torch.Tensor | None = None) -> Bound:
    """ELBO with KL weight `beta` (beta = 1: the evidence lower bound; otherwise a beta-VAE
    objective, Higgins et al. 2017). x: (B, *shape) -> per-example terms (B,).

    `free_bits` > 0 (nats per latent dim, Kingma et al. 2016): a dimension whose batch-mean
    KL is below it is not penalised below it, against posterior collapse. A hierarchy (ladder,
    hvae) is grouped by stochastic layer: a layer of d_l dims is allowed free_bits x d_l nats
    of its (one-sample) KL. The returned `kl` stays the true KL; only `bound` changes.
    `c` (B, C): the condition of a conditional model (None otherwise), as in every objective.
    """
    x = x.to(model.device)  # the caller's data may live elsewhere (no-op in training)
    q = model.encode(x, c)
    z = q.rsample()  # (B, d), reparameterised: gradients reach the encoder
    recon = model.decode(z, c).log_prob(x)  # (B,)
    p = model.prior_dist()
    if free_bits <= 0:
        kl = kl_term(q, p, z)  # (B,)
        return Bound(recon - beta * kl, recon, kl)
    per, sizes = kl_groups(q, p, z)  # (B, G), latent dims per group
    kl = per.sum(-1)  # (B,) the true KL, reported as is
    # a group under its allowance (free_bits x its dims) costs the constant allowance: no
    # gradient pushes it lower
    floor = (free_bits * per.new_tensor(sizes)).expand_as(per)  # (B, G)
    low = per.mean(0, keepdim=True) < floor[:1]  # (1, G)
    return Bound(recon - beta * torch.where(low, floor, per).sum(-1), recon, kl)


def resolve_kl(model, x: torch.Tensor, c: torch.Tensor | None = None) -> None:
    """Look up, once and eagerly, torch's closed-form KL for this model's q(z|x) and p(z) (and
    for their per-dimension parts, as free bits use). torch memoises the lookup, but its first,
    uncached run cannot be traced (a `min` over a generator) and split a compiled training step
    into several graphs, each with its own call overhead; cached, the step compiles whole.
    x (B, *shape) and c (B, C) or None: a few training examples, only encoded."""
    was = model.training
    model.eval()  # no batch statistics touched
    try:
        with torch.no_grad():
            q, p = model.encode(x, c), model.prior_dist()
        for a, b in ((q, p), (getattr(q, "base_dist", None), getattr(p, "base_dist", None))):
            if a is not None and b is not None:
                try:
                    kl_divergence(a, b)
                except NotImplementedError:  # no closed form: the objective estimates it
                    pass
    finally:
        model.train(was)


def kl_groups(q, p, z: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """KL(q || p) per example in groups (B, G), and the latent dims of each group: per dim in
    closed form for factorised Normals; per stochastic layer for a hierarchy (so free bits keep
    each layer in use on its own; one allowance for all let a layer collapse while the others
    paid for it); else one group, the one-sample estimate at z."""
    try:
        per = kl_divergence(q.base_dist, p.base_dist)  # (B, d)
        return per, [1] * per.shape[-1]
    except (NotImplementedError, AttributeError):
        pass
    if hasattr(q, "layer_log_probs"):
        per = torch.stack([a - b for a, b in zip(q.layer_log_probs(z), p.layer_log_probs(z))], -1)  # (B, L)
        return per, list(q.layer_sizes)
    return kl_term(q, p, z).unsqueeze(-1), [z.shape[-1]]


def log_weights(model, x: torch.Tensor, k: int, eps: torch.Tensor | None = None, q=None,
                c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance log-weights log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..k.

    `eps` (k, B, d), if given, is the standard-normal noise to use (z = mu + sigma * eps);
    `q`, if given, is q(z|x) already computed (evaluation reuses it across chunks of k).
    Returns (log_w, log_px_z, log_ratio), each (k, B); log_ratio = log q(z_i|x) - log p(z_i).
    """
    x = x.to(model.device)  # the caller's data may live elsewhere (no-op in training)
    q = model.encode(x, c) if q is None else q
    if eps is None:
        z = q.rsample((k,))  # (k, B, d)
    elif isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        z = q.mean + q.stddev * eps
    else:
        raise ValueError("eps can be given only for a factorised Normal q(z|x)")
    log_px_z = model.decode(z, c).log_prob(x)  # (k, B): x broadcasts over the k samples
    log_ratio = q.log_prob(z) - model.prior_dist().log_prob(z)  # (k, B)
    return log_px_z - log_ratio, log_px_z, log_ratio


def iwae(model, x: torch.Tensor, k: int = 5, beta: float = 1.0, c: torch.Tensor | None = None,
         dreg: bool = False) -> Bound:
    """The importance-weighted bound with k samples; k = 1 is the ELBO (single-sample).

    `beta` != 1 weights log p(z) - log q(z|x) inside each log-weight, log p(x|z_i) - beta log
    q(z_i|x) / p(z_i), as a KL warm-up does for the ELBO (Sønderby et al. 2016 warm up their
    importance-weighted ladder so); with k = 1 it is the beta-ELBO's one-sample estimate. Only
    beta = 1 is a bound on log p(x). x (B, *shape) -> per-example terms (B,).

    `dreg`: the same bound, its gradient by the doubly reparameterised estimator (DReG, Tucker
    et al. 2019). IWAE's own gradient for q's parameters carries a score term whose noise grows
    with k, so the encoder learns less the tighter the bound (Rainforth et al. 2018). DReG
    rewrites that term by reparameterisation: with normalised weights w_i, the encoder's
    gradient is sum_i w_i^2 d log w_i / dz_i dz_i / dphi, log q held at fixed parameters; the
    decoder's and the prior's gradients are IWAE's, sum_i w_i d log w_i / dtheta. Unbiased for
    the same gradient. With beta != 1 the path's weight is w_i ((1 - beta) + beta w_i), the same
    identity applied to beta log q: w_i^2 at beta = 1, IWAE's w_i at beta = 0 (log q gone)."""
    if not dreg:
        _, log_px_z, log_ratio = log_weights(model, x, k, c=c)  # (k, B) each
    else:
        x = x.to(model.device)  # the caller's data may live elsewhere (no-op in training)
        q = model.encode(x, c)
        # a fresh copy of the sample: nothing below may reuse the pass that drew it (hvae caches
        # that pass), so every gradient to z goes through this tensor and its hook
        z = q.rsample((k,)).clone()  # (k, B, d): the path to the encoder's parameters
        if hasattr(q, "remember"):  # hvae: one pass over the copy, read by decoder, prior and q alike
            q.remember(z)
        log_px_z = model.decode(z, c).log_prob(x)  # (k, B)
        log_ratio = stopped_log_prob(q, z) - model.prior_dist().log_prob(z)  # (k, B)
    # no branch on beta: a compiled step keeps one graph through a warm-up (x * 1.0 is exact)
    log_w = log_px_z - beta * log_ratio  # (k, B)
    if dreg and z.requires_grad:  # training: scale each sample's gradient on its path by (1 - beta) + beta w_i
        w = torch.softmax(log_w.detach().float(), dim=0)  # (k, B) the normalised weights
        path = ((1.0 - beta) + beta * w).unsqueeze(-1).to(z.dtype)  # (k, B, 1)
        # a hook set after z's uses still fires in the backward pass, and knows the weights
        z.register_hook(lambda g: g * path)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,) its gradient to log_w_i is w_i
    return Bound(bound, log_px_z.mean(0), log_ratio.mean(0))


def stopped_log_prob(q, z: torch.Tensor) -> torch.Tensor:
    """log q(z|x) (*lead,) with no gradient to q's parameters while z keeps its own: the density
    DReG needs. A factorised Normal is rebuilt from its detached mean and scale. A hierarchy
    (ladder, hvae), whose lower layers' parameters are networks of the upper layers' samples, is
    scored twice: at z (gradients along z's path and to the parameters) minus at a detached
    copy of z (to the parameters only, the score), which leaves the path; the value is log q(z)."""
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        base = q.base_dist
        return Independent(Normal(base.loc.detach(), base.scale.detach(), validate_args=False),
                           q.reinterpreted_batch_ndims).log_prob(z)
    if not torch.is_grad_enabled():  # validation, scoring: no gradient to keep apart
        return q.log_prob(z)
    # clone: a fresh tensor, so a hierarchy's cache of the pass that drew z is not reused for it
    score = q.log_prob(z.detach().clone())  # (*lead,)
    return q.log_prob(z) - score + score.detach()


def _kernel(a: torch.Tensor, b: torch.Tensor, kernel: str) -> torch.Tensor:
    """Sum over scales of k(a_i, b_j): (n, d), (m, d) -> (n, m). Scales follow the WAE paper:
    C = 2 d sigma^2 (sigma^2 = 1, the prior's variance) times 0.1 ... 10."""
    d2 = torch.cdist(a, b).pow(2)  # (n, m)
    base = 2.0 * a.shape[-1]
    out = torch.zeros_like(d2)
    for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
        c = base * s
        out = out + (c / (c + d2) if kernel == "imq" else torch.exp(-d2 / c))
    return out


def mmd(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", unbiased: bool = True) -> torch.Tensor:
    """Maximum mean discrepancy between samples a (n, d) and b (m, d). The unbiased
    U-statistic drops the i = j terms; the biased V-statistic is exactly 0 when a == b."""
    kaa, kbb, kab = _kernel(a, a, kernel), _kernel(b, b, kernel), _kernel(a, b, kernel)
    n, m = len(a), len(b)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least 2 samples on each side")
        return ((kaa.sum() - kaa.diagonal().sum()) / (n * (n - 1))
                + (kbb.sum() - kbb.diagonal().sum()) / (m * (m - 1)) - 2 * kab.mean())
    return kaa.mean() + kbb.mean() - 2 * kab.mean()


def wae_mmd(model, x: torch.Tensor, weight: float = 10.0, kernel: str = "imq",
            deterministic: bool = True, c: torch.Tensor | None = None) -> Bound:
    """WAE-MMD: reconstruct through the encoder's code and match the aggregate of codes to
    the prior with an MMD penalty. `bound` is the per-example objective (B,)."""
    x = x.to(model.device)  # the caller's data may live elsewhere (no-op in training)
    q = model.encode(x, c)
    z = q.mean if deterministic else q.rsample()  # (B, d)
    recon = model.decode(z, c).log_prob(x)  # (B,)
    z_prior = model.prior.draw(len(x), encode=model.encode).to(z.dtype)  # (B, d)
    penalty = mmd(z, z_prior, kernel) if len(x) > 1 else z.new_zeros(())
    return Bound(recon - weight * penalty, recon, penalty.expand_as(recon))
